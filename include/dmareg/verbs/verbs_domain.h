// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// verbs/verbs_domain.h: a Domain over one RDMA device (libibverbs) and a protection
// domain on it.
//
// `VerbsDomain` opens the device, allocates a PD and probes what the device
// can do (dma-buf MRs, on-demand paging, MR limits) into `capabilities()`,
// and the verbs-only detail (ODP transport bits, fork protection, firmware)
// into `device_info()`. Host memory is registered with `ibv_reg_mr_iova2`
// (at the caller's IOVA if `HostMemory::iova` names one, else IOVA = virtual
// address), dma-buf slices with `ibv_reg_dmabuf_mr`. Put a
// `RegistrationCache` in front of it and create QPs/CQs on the same PD:
//
//   auto domain = dmareg::VerbsDomain::Open("rxe0");   // "" = first device
//   if (!domain.ok()) return domain.status();
//   auto cache = dmareg::RegistrationCache::Create(*domain).value();
//   ibv_cq* cq = ibv_create_cq((*domain)->context(), 64, nullptr, nullptr, 0);
//   ... ibv_create_qp((*domain)->pd(), &init_attr) ...
//   auto reg = cache->Acquire(buf, len, dmareg::Access::kRemoteWrite);
//   // reg->lkey(), reg->rkey(), reg->IovaFor(buf)
//
// An application that already has a PD (rdma_cm, UCX, its own set-up)
// wraps it instead; dmareg then owns neither the PD nor its context:
//
//   ibv_pd* pd = ibv_alloc_pd(id->verbs);              // the application's
//   auto domain = dmareg::VerbsDomain::Wrap(pd).value();
//   ... caches over `domain`, QPs on `pd` ...
//   cache.reset(); domain.reset();                     // every MR deregistered
//   ibv_dealloc_pd(pd);                                // the application's again
//
// On-demand paging is how the registration asks for it (the cache passes
// CacheOptions::paging): RegisterHost(memory, access, Paging::kOnDemand)
// adds IBV_ACCESS_ON_DEMAND; over the whole address space it is the
// implicit ODP MR:
//
//   auto mr = domain->RegisterHost(dmareg::VerbsDomain::WholeAddressSpace(),
//                                  dmareg::Access::kLocalWrite, dmareg::Paging::kOnDemand);
//
// The verbs calls go through a `VerbsOps` (verbs/verbs_ops.h): libibverbs
// unless `VerbsDomainOptions::ops` names another (a test's fake device).
//
// Every failure is a status naming the verbs call, the device and the errno,
// e.g. "ibv_reg_mr_iova2 on rxe0: Bad address (EFAULT)". A capability the
// device lacks (dma-buf MRs on rxe) is answered with Unimplemented without
// calling the driver.
//
// Thread safety: every method may be called from several threads at once
// (libibverbs' registration calls are thread-safe; the counters are atomic).

#ifndef DMAREG_VERBS_VERBS_DOMAIN_H_
#define DMAREG_VERBS_VERBS_DOMAIN_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dmareg/access.h"
#include "dmareg/domain.h"
#include "dmareg/memory.h"

#pragma GCC visibility push(default)

struct ibv_context;
struct ibv_mr;
struct ibv_pd;

namespace dmareg {

namespace internal {
class DeviceWatch;
}  // namespace internal

class VerbsOps;  // the seam over libibverbs: dmareg/verbs/verbs_ops.h

struct VerbsDomainOptions {
  // The verbs calls' implementation; null: LibibverbsOps() (libibverbs).
  std::shared_ptr<VerbsOps> ops;
};

// Verbs-specific facts probed at open, beyond `DomainCapabilities`.
struct VerbsDeviceInfo {
  enum class ForkStatus { kDisabled, kEnabled, kUnneeded };

  std::string fw_ver{};
  uint32_t vendor_id = 0;
  uint32_t vendor_part_id = 0;
  uint64_t node_guid = 0;  // network byte order, as the device reports it
  uint32_t phys_port_cnt = 0;
  uint32_t max_mr = 0;            // MRs the device can hold
  uint64_t max_mr_size = 0;       // longest MR
  uint64_t page_size_cap = 0;     // bit N set: pages of 2^N bytes
  uint64_t odp_general_caps = 0;  // IBV_ODP_SUPPORT* bits
  uint32_t odp_rc_caps = 0;       // IBV_ODP_SUPPORT_* bits for RC, as reported
  uint32_t odp_ud_caps = 0;
  // errno of the dma-buf probe (ibv_reg_dmabuf_mr with fd -1): EBADF when
  // the driver implements dma-buf MRs, EOPNOTSUPP when it does not.
  int dmabuf_probe_errno = 0;
  ForkStatus fork_status = ForkStatus::kDisabled;

  // ibv_fork_init was in effect at open, or the kernel makes it unneeded.
  bool fork_protected() const { return fork_status != ForkStatus::kDisabled; }
};

// The IBV_ACCESS_* bits for `access`: its own bits (Access is IBV_ACCESS_*
// bit for bit), normalized (remote write/atomic add local write), plus
// IBV_ACCESS_ON_DEMAND when `on_demand`.
unsigned int ToIbvAccessFlags(AccessFlags access, bool on_demand = false);

class VerbsDomain final : public Domain {
 public:
  // Names of the RDMA devices present; empty (not an error) when there are
  // none or the kernel has no RDMA support. Through `options.ops`.
  static absl::StatusOr<std::vector<std::string>> ListDevices(VerbsDomainOptions options = {});

  // Opens `device_name` ("" = the first device). NotFound when there is no
  // such device (the message lists those present).
  static absl::StatusOr<std::shared_ptr<VerbsDomain>> Open(std::string_view device_name = "",
                                                           VerbsDomainOptions options = {});

  // A domain over the application's `pd` and its context (pd->context),
  // probed as Open probes (dma-buf, ODP, MR limits). Not owned: dmareg
  // never deallocates the PD nor closes the context. Lifetime rule: the PD
  // and its context must outlive the domain and every cache over it; when
  // the last of them goes, every MR registered through the domain has been
  // deregistered (the destructor deregisters any the caller left), so the
  // application's ibv_dealloc_pd then succeeds. InvalidArgument for a null
  // PD or a PD with no context. With `options.ops`, `pd` is one allocated
  // through those ops.
  static absl::StatusOr<std::shared_ptr<VerbsDomain>> Wrap(ibv_pd* pd,
                                                           VerbsDomainOptions options = {});

  // Deregisters every MR still registered through it; then, when Open made
  // the domain, deallocates the PD and closes the device (a wrapped domain
  // leaves both to the application). A RegistrationCache holds the domain
  // until its last mapping is gone.
  ~VerbsDomain() override;
  VerbsDomain(const VerbsDomain&) = delete;
  VerbsDomain& operator=(const VerbsDomain&) = delete;

  const std::string& name() const override { return name_; }
  const DomainCapabilities& capabilities() const override { return caps_; }
  const VerbsDeviceInfo& device_info() const { return info_; }
  const VerbsDomainOptions& options() const { return options_; }

  using Domain::RegisterHost;
  // `DeviceMapping::handle` is the `ibv_mr*`. A caller's IOVA obeys
  // CheckIovaPlacement (any byte range; VA and IOVA agree in their offset
  // within the smallest page). Paging::kOnDemand adds IBV_ACCESS_ON_DEMAND;
  // the driver is asked even where the probe found no ODP for RC (the
  // error then says so): rxe on 6.1 answers EINVAL, newer kernels
  // EOPNOTSUPP. On demand over WholeAddressSpace() it is the implicit ODP
  // MR (ibv_reg_mr(pd, NULL, SIZE_MAX, ...|IBV_ACCESS_ON_DEMAND); IOVAs are
  // addresses; the mapping's iova 0, length SIZE_MAX): Unimplemented, with
  // nothing asked, where the probe found no IBV_ODP_SUPPORT_IMPLICIT. Any
  // other null address is InvalidArgument.
  absl::StatusOr<DeviceMapping> RegisterHost(const HostMemory& memory, AccessFlags access,
                                             Paging paging) override;
  // Every address: {nullptr, SIZE_MAX}, no IOVA (on demand only, above).
  static HostMemory WholeAddressSpace() { return HostMemory{nullptr, SIZE_MAX}; }
  absl::StatusOr<DeviceMapping> RegisterDmaBuf(const DmaBufMemory& memory,
                                               AccessFlags access) override;
  absl::Status Deregister(const DeviceMapping& mapping) override;
  // Set when the kernel reports the device removed (IBV_EVENT_DEVICE_FATAL,
  // read from the context's asynchronous events by a thread of the domain's
  // own, for a domain that Open made; a wrapped context's events are the
  // application's, and its domain's flag is nullptr). From then on every
  // registration is refused with LostStatus() without a kernel call;
  // deregistration still succeeds (the kernel destroyed the MRs).
  const std::atomic<bool>* lost_flag() const override;
  absl::Status LostStatus(std::string_view call) const override;

  // ibv_advise_mr: prefetch [iova, iova + length) of an on-demand mapping
  // (IBV_ADVISE_MR_ADVICE_PREFETCH_WRITE when `write`), waiting for the
  // pages (IBV_ADVISE_MR_FLAG_FLUSH). Unimplemented where the provider has
  // no advise_mr (EOPNOTSUPP; rxe through rdma-core 44).
  absl::Status Prefetch(const DeviceMapping& mapping, uint64_t iova, uint64_t length, bool write);

  // For creating QPs, CQs, AHs on the same device and PD. Owned by the
  // domain when Open made it, by the application when wrapped.
  ibv_context* context() const { return context_; }
  ibv_pd* pd() const { return pd_; }
  // False for a domain made by Wrap (the PD and context are the caller's).
  bool owns_pd() const { return owns_pd_; }

  // MRs registered through this domain and not yet deregistered.
  int64_t live_mrs() const { return live_.load(std::memory_order_relaxed); }
  int64_t total_registrations() const { return total_reg_.load(std::memory_order_relaxed); }
  int64_t total_deregistrations() const { return total_dereg_.load(std::memory_order_relaxed); }

 private:
  // Records a new MR (for the destructor) and counts it.
  DeviceMapping Track(ibv_mr* mr, uint64_t iova, uint64_t length);

  // The implicit ODP MR (RegisterHost over WholeAddressSpace(), on demand).
  absl::StatusOr<DeviceMapping> RegisterImplicitOnDemand(AccessFlags access);
  VerbsDomain(std::string name, VerbsDomainOptions options, ibv_context* context, ibv_pd* pd,
              bool owns_pd);
  absl::Status Probe();  // fills caps_ and info_; called once by Open
  absl::Status CheckLength(const char* call, size_t length) const;

  const std::string name_;
  const VerbsDomainOptions options_;  // options_.ops is never null
  VerbsOps& ops_;                     // *options_.ops
  ibv_context* const context_;
  ibv_pd* const pd_;
  const bool owns_pd_;
  // The MRs registered and not yet deregistered (the destructor
  // deregisters them): src/verbs/verbs_domain.cc.
  struct LiveMrs;
  const std::unique_ptr<LiveMrs> mrs_;
  // The device's removal, watched for a domain that opened its context
  // (src/verbs/device_watch.h); null otherwise. Started by Open.
  std::unique_ptr<internal::DeviceWatch> watch_;
  // Written by Probe() before the domain is published, read-only after.
  DomainCapabilities caps_;
  VerbsDeviceInfo info_;
  std::atomic<int64_t> live_{0};
  std::atomic<int64_t> total_reg_{0};
  std::atomic<int64_t> total_dereg_{0};
};

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_VERBS_VERBS_DOMAIN_H_
