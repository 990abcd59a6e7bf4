// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/verbs/verbs_domain.h"

#include <infiniband/verbs.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/mutex.h"
#include "dmareg/errno_status.h"
#include "dmareg/memlock.h"
#include "dmareg/verbs/verbs_ops.h"
#include "verbs/device_watch.h"

namespace dmareg {

struct VerbsDomain::LiveMrs {
  internal::Mutex mu;
  absl::flat_hash_set<ibv_mr*> mrs ABSL_GUARDED_BY(mu);
};

namespace {

bool IsLost(const internal::DeviceWatch* watch) {
  return watch != nullptr && watch->lost().load(std::memory_order_acquire);
}

// What an ENOMEM from ibv_reg_mr* may have met: the device's MR table, and
// (pinned only) the pages charged to the process's memlock limit.
std::string ExhaustionNote(int64_t live_mrs, uint32_t max_mr, bool pinned) {
  std::string note =
      absl::StrFormat("; this domain holds %d MRs of the device's max_mr %u", live_mrs, max_mr);
  if (pinned)
    absl::StrAppend(&note, "; an MR pins its pages against the process's ", MemlockNote());
  return note;
}

// The dma-buf probe registers one page of a non-existent fd.
constexpr size_t kProbeLength = 4096;

// Owns a device list from VerbsOps::GetDeviceList.
class DeviceList {
 public:
  explicit DeviceList(VerbsOps& ops) : ops_(ops) {
    errno = 0;
    list_ = ops_.GetDeviceList(&count_);
    err_ = errno;
    if (list_ == nullptr) count_ = 0;
  }
  ~DeviceList() {
    if (list_ != nullptr) ops_.FreeDeviceList(list_);
  }
  DeviceList(const DeviceList&) = delete;
  DeviceList& operator=(const DeviceList&) = delete;

  bool ok() const { return list_ != nullptr; }
  int error() const { return err_; }
  int size() const { return count_; }
  ibv_device* at(int i) const { return list_[i]; }
  std::string name(int i) const {
    const char* n = ops_.GetDeviceName(list_[i]);
    return n == nullptr ? std::string() : std::string(n);
  }

 private:
  VerbsOps& ops_;
  ibv_device** list_ = nullptr;
  int count_ = 0;
  int err_ = 0;
};

// ibv_get_device_list fails (instead of returning an empty list) when the
// kernel has no RDMA support at all; for a caller that is "no devices".
bool MeansNoDevices(int err) {
  return err == 0 || err == ENOSYS || err == ENOENT || err == ENODEV || err == ENXIO;
}

// The options with their ops filled in: libibverbs unless the caller named
// other ops.
VerbsDomainOptions WithOps(VerbsDomainOptions options) {
  if (options.ops == nullptr) options.ops = LibibverbsOps();
  return options;
}

}  // namespace

// dmareg::Access is IBV_ACCESS_* bit for bit (access.h), so the mapping is
// the identity on the bits dmareg knows.
static_assert(static_cast<unsigned>(Access::kLocalWrite) == IBV_ACCESS_LOCAL_WRITE);
static_assert(static_cast<unsigned>(Access::kRemoteWrite) == IBV_ACCESS_REMOTE_WRITE);
static_assert(static_cast<unsigned>(Access::kRemoteRead) == IBV_ACCESS_REMOTE_READ);
static_assert(static_cast<unsigned>(Access::kRemoteAtomic) == IBV_ACCESS_REMOTE_ATOMIC);
// An optional flag in rdma-core: kernels that do not know it drop it
// instead of failing the registration.
static_assert(static_cast<unsigned>(Access::kRelaxedOrdering) == IBV_ACCESS_RELAXED_ORDERING);
static_assert((kAllAccess.bits() & IBV_ACCESS_ON_DEMAND) == 0);

unsigned int ToIbvAccessFlags(AccessFlags access, bool on_demand) {
  unsigned int flags = NormalizeAccess(access).bits() & kAllAccess.bits();
  if (on_demand) flags |= IBV_ACCESS_ON_DEMAND;
  return flags;
}

absl::StatusOr<std::vector<std::string>> VerbsDomain::ListDevices(VerbsDomainOptions options) {
  options = WithOps(std::move(options));
  DeviceList list(*options.ops);
  std::vector<std::string> names;
  if (!list.ok()) {
    if (MeansNoDevices(list.error())) return names;
    return ErrnoStatus(list.error(), "ibv_get_device_list", "(all devices)");
  }
  for (int i = 0; i < list.size(); ++i) names.push_back(list.name(i));
  return names;
}

absl::StatusOr<std::shared_ptr<VerbsDomain>> VerbsDomain::Open(std::string_view device_name,
                                                               VerbsDomainOptions options) {
  options = WithOps(std::move(options));
  // Outlives `list` below even when the domain, which shares it, is gone.
  const std::shared_ptr<VerbsOps> ops = options.ops;
  const std::string wanted = device_name.empty() ? "(first device)" : std::string(device_name);

  DeviceList list(*ops);
  if (!list.ok() && !MeansNoDevices(list.error())) {
    return ErrnoStatus(list.error(), "ibv_get_device_list", wanted);
  }
  if (list.size() == 0) {
    return absl::NotFoundError(absl::StrCat(
        "no RDMA device found", device_name.empty() ? "" : absl::StrCat(" (wanted ", wanted, ")"),
        ": load a driver or add a soft-RoCE link (rdma link add rxe0 type rxe netdev IFACE)"));
  }
  int index = -1;
  std::vector<std::string> present;
  for (int i = 0; i < list.size(); ++i) {
    present.push_back(list.name(i));
    if (index < 0 && (device_name.empty() || present.back() == device_name)) index = i;
  }
  if (index < 0) {
    return absl::NotFoundError(absl::StrCat("no RDMA device named ", std::string(device_name),
                                            "; present: ", absl::StrJoin(present, ", ")));
  }
  std::string name = present[index];

  errno = 0;
  ibv_context* context = ops->OpenDevice(list.at(index));
  if (context == nullptr) return ErrnoStatus(errno, "ibv_open_device", name);
  errno = 0;
  ibv_pd* pd = ops->AllocPd(context);
  if (pd == nullptr) {
    const int err = errno;
    ops->CloseDevice(context);
    return ErrnoStatus(err, "ibv_alloc_pd", name);
  }

  // From here on the domain owns the context and the PD.
  std::shared_ptr<VerbsDomain> domain(
      new VerbsDomain(std::move(name), std::move(options), context, pd, /*owns_pd=*/true));
  if (absl::Status probed = domain->Probe(); !probed.ok()) return probed;
  domain->watch_ = internal::DeviceWatch::Start(domain->ops_, context, domain->name_);
  return domain;
}

absl::StatusOr<std::shared_ptr<VerbsDomain>> VerbsDomain::Wrap(ibv_pd* pd,
                                                               VerbsDomainOptions options) {
  if (pd == nullptr) {
    return absl::InvalidArgumentError(
        "VerbsDomain::Wrap: null ibv_pd (allocate one with ibv_alloc_pd, or use "
        "VerbsDomain::Open to let dmareg open the device and allocate it)");
  }
  if (pd->context == nullptr || pd->context->device == nullptr) {
    return absl::InvalidArgumentError(
        "VerbsDomain::Wrap: the ibv_pd has no context (not one ibv_alloc_pd returned?)");
  }
  options = WithOps(std::move(options));
  const char* n = options.ops->GetDeviceName(pd->context->device);
  std::string name = n != nullptr ? std::string(n) : std::string("(unnamed device)");
  // Neither the PD nor the context is ours: the destructor leaves them.
  std::shared_ptr<VerbsDomain> domain(
      new VerbsDomain(std::move(name), std::move(options), pd->context, pd, /*owns_pd=*/false));
  if (absl::Status probed = domain->Probe(); !probed.ok()) return probed;
  return domain;
}

VerbsDomain::VerbsDomain(std::string name, VerbsDomainOptions options, ibv_context* context,
                         ibv_pd* pd, bool owns_pd)
    : name_(std::move(name)),
      options_(std::move(options)),
      ops_(*options_.ops),
      context_(context),
      pd_(pd),
      owns_pd_(owns_pd),
      mrs_(std::make_unique<LiveMrs>()) {
  caps_.device_name = name_;
  caps_.kind = DeviceKind::kRdma;
}

absl::Status VerbsDomain::Probe() {
  ibv_device_attr_ex attr;
  std::memset(&attr, 0, sizeof(attr));
  if (const int err = ops_.QueryDeviceEx(context_, &attr); err != 0) {
    return ErrnoStatus(err, "ibv_query_device_ex", name_);
  }
  const ibv_device_attr& a = attr.orig_attr;
  info_.fw_ver = std::string(a.fw_ver, strnlen(a.fw_ver, sizeof(a.fw_ver)));
  info_.vendor_id = a.vendor_id;
  info_.vendor_part_id = a.vendor_part_id;
  info_.node_guid = a.node_guid;
  info_.phys_port_cnt = a.phys_port_cnt;
  info_.max_mr = static_cast<uint32_t>(a.max_mr);
  info_.max_mr_size = a.max_mr_size;
  info_.page_size_cap = a.page_size_cap;
  info_.odp_general_caps = attr.odp_caps.general_caps;
  info_.odp_rc_caps = attr.odp_caps.per_transport_caps.rc_odp_caps;
  info_.odp_ud_caps = attr.odp_caps.per_transport_caps.ud_odp_caps;

  // ibv_reg_mr_iova2 / ibv_reg_dmabuf_mr take an IOVA of the caller's; an MR
  // covers any byte range (the kernel pins the pages around it); every MR
  // has its own keys, so IOVAs of two MRs may overlap.
  caps_.caller_iova = true;
  caps_.byte_granular = true;
  caps_.one_iova_space = false;
  caps_.max_mapping_bytes = a.max_mr_size;
  caps_.page_sizes = a.page_size_cap;
  caps_.max_mappings = static_cast<uint64_t>(a.max_mr);
  // Per-transport bits mean nothing unless the device supports ODP at all.
  const bool odp_general = (info_.odp_general_caps & IBV_ODP_SUPPORT) != 0;
  constexpr uint32_t kRcDataCaps =
      IBV_ODP_SUPPORT_SEND | IBV_ODP_SUPPORT_RECV | IBV_ODP_SUPPORT_WRITE | IBV_ODP_SUPPORT_READ;
  caps_.on_demand_paging = odp_general && (info_.odp_rc_caps & kRcDataCaps) != 0;

  // A driver that implements dma-buf MRs looks the fd up first and answers
  // EBADF for -1; the library's default op answers EOPNOTSUPP.
  errno = 0;
  ibv_mr* mr = ops_.RegDmaBufMr(pd_, 0, kProbeLength, 0, -1, IBV_ACCESS_LOCAL_WRITE);
  if (mr != nullptr) {  // no driver should accept fd -1; do not keep it
    ops_.DeregMr(mr);
    info_.dmabuf_probe_errno = 0;
    caps_.dmabuf_import = true;
  } else {
    info_.dmabuf_probe_errno = errno;
    caps_.dmabuf_import = errno == EBADF;
  }

  switch (ops_.IsForkInitialized()) {
    case IBV_FORK_ENABLED:
      info_.fork_status = VerbsDeviceInfo::ForkStatus::kEnabled;
      break;
    case IBV_FORK_UNNEEDED:
      info_.fork_status = VerbsDeviceInfo::ForkStatus::kUnneeded;
      break;
    default:
      info_.fork_status = VerbsDeviceInfo::ForkStatus::kDisabled;
      break;
  }
  return absl::OkStatus();
}

absl::Status VerbsDomain::CheckLength(const char* call, size_t length) const {
  if (length > info_.max_mr_size) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s on %s: length %#x exceeds the device's max_mr_size %#x", call, name_,
                        length, info_.max_mr_size));
  }
  return absl::OkStatus();
}

absl::StatusOr<DeviceMapping> VerbsDomain::RegisterHost(const HostMemory& memory,
                                                        AccessFlags access, Paging paging) {
  static constexpr const char* kCall = "ibv_reg_mr_iova2";
  if (IsLost(watch_.get())) [[unlikely]]
    return LostStatus(kCall);
  if (paging == Paging::kAutomatic) {
    return absl::InvalidArgumentError(
        absl::StrCat("RegisterHost on ", name_, ": paging is kPinned or kOnDemand"));
  }
  const bool on_demand = paging == Paging::kOnDemand;
  if (memory.addr == nullptr) {
    if (on_demand && memory.length == SIZE_MAX && !memory.iova) {
      return RegisterImplicitOnDemand(access);
    }
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s on %s: a null address (length %#x%s, %s): only an on-demand registration of the "
        "whole address space (length SIZE_MAX, no IOVA) may have one",
        kCall, name_, memory.length, memory.iova ? ", a caller's IOVA" : "", PagingName(paging)));
  }
  const uint64_t iova = memory.iova.value_or(reinterpret_cast<uintptr_t>(memory.addr));
  if (memory.iova) {
    absl::Status placed = CheckIovaPlacement(caps_, reinterpret_cast<uintptr_t>(memory.addr), iova,
                                             memory.length, absl::StrCat(kCall, " on ", name_));
    if (!placed.ok()) return placed;
  }
  if (absl::Status s = CheckLength(kCall, memory.length); !s.ok()) return s;
  // A pinned MR may not reach what the program cannot (an on-demand one
  // faults as the program would).
  if (!on_demand) {
    if (absl::Status s =
            CheckHostAccess(memory.addr, memory.length, access, absl::StrCat(kCall, " on ", name_));
        !s.ok()) {
      return s;
    }
  }
  const unsigned int flags = ToIbvAccessFlags(access, on_demand);
  errno = 0;
  ibv_mr* mr = ops_.RegMrIova2(pd_, const_cast<void*>(memory.addr), memory.length, iova, flags);
  if (mr == nullptr) {
    const int err = errno;
    std::string detail = absl::StrFormat("[%p, +%#x) access %s", memory.addr, memory.length,
                                         AccessToString(NormalizeAccess(access)));
    if (memory.iova) absl::StrAppend(&detail, absl::StrFormat(" at IOVA %#x", iova));
    if (on_demand) {
      absl::StrAppend(&detail, " with IBV_ACCESS_ON_DEMAND",
                      caps_.on_demand_paging ? " (the probe found ODP support for RC)"
                                             : " (the device reports no ODP support for RC)");
    }
    if (err == ENOMEM)
      absl::StrAppend(&detail, ExhaustionNote(live_mrs(), info_.max_mr, !on_demand));
    return ErrnoStatus(err, kCall, name_, detail);
  }
  return Track(mr, iova, memory.length);
}

absl::StatusOr<DeviceMapping> VerbsDomain::RegisterDmaBuf(const DmaBufMemory& memory,
                                                          AccessFlags access) {
  static constexpr const char* kCall = "ibv_reg_dmabuf_mr";
  if (IsLost(watch_.get())) [[unlikely]]
    return LostStatus(kCall);
  if (!caps_.dmabuf_import) {
    // Known from the probe: answer without asking the driver again.
    const int err = info_.dmabuf_probe_errno != 0 ? info_.dmabuf_probe_errno : EOPNOTSUPP;
    absl::Status s =
        ErrnoStatus(err, kCall, name_,
                    "the driver does not implement dma-buf MRs (probed when the domain opened); "
                    "nothing was registered");
    return absl::UnimplementedError(s.message());
  }
  const uint64_t iova = memory.iova.value_or(memory.offset);
  if (memory.iova) {
    absl::Status placed = CheckIovaPlacement(caps_, memory.offset, iova, memory.length,
                                             absl::StrCat(kCall, " on ", name_));
    if (!placed.ok()) return placed;
  }
  if (absl::Status s = CheckLength(kCall, memory.length); !s.ok()) return s;
  const int flags = static_cast<int>(ToIbvAccessFlags(access));
  errno = 0;
  ibv_mr* mr = ops_.RegDmaBufMr(pd_, memory.offset, memory.length, iova, memory.fd, flags);
  if (mr == nullptr) {
    const int err = errno;
    return ErrnoStatus(
        err, kCall, name_,
        absl::StrFormat("fd %d offset %#x length %#x access %s", memory.fd, memory.offset,
                        memory.length, AccessToString(NormalizeAccess(access))));
  }
  return Track(mr, iova, memory.length);
}

absl::StatusOr<DeviceMapping> VerbsDomain::RegisterImplicitOnDemand(AccessFlags access) {
  static constexpr const char* kCall = "ibv_reg_mr (implicit ODP)";
  if ((info_.odp_general_caps & IBV_ODP_SUPPORT_IMPLICIT) == 0) {
    return absl::UnimplementedError(absl::StrCat(
        kCall, " on ", name_, ": the device reports no IBV_ODP_SUPPORT_IMPLICIT; nothing asked"));
  }
  errno = 0;
  ibv_mr* mr = ops_.RegMrIova2(pd_, nullptr, SIZE_MAX, 0, ToIbvAccessFlags(access, true));
  if (mr == nullptr) {
    const int err = errno;
    return ErrnoStatus(err, kCall, name_,
                       absl::StrCat("access ", AccessToString(NormalizeAccess(access))));
  }
  return Track(mr, 0, SIZE_MAX);
}

absl::Status VerbsDomain::Prefetch(const DeviceMapping& mapping, uint64_t iova, uint64_t length,
                                   bool write) {
  static constexpr const char* kCall = "ibv_advise_mr";
  const auto advice = write ? IBV_ADVISE_MR_ADVICE_PREFETCH_WRITE : IBV_ADVISE_MR_ADVICE_PREFETCH;
  // An SGE holds at most 4 GiB - 1: prefetch in pieces of 1 GiB.
  constexpr uint64_t kPiece = uint64_t{1} << 30;
  for (uint64_t done = 0; done < length; done += kPiece) {
    ibv_sge sge{.addr = iova + done,
                .length = static_cast<uint32_t>(std::min(kPiece, length - done)),
                .lkey = mapping.lkey};
    if (const int err = ops_.AdviseMr(pd_, advice, IBV_ADVISE_MR_FLAG_FLUSH, &sge, 1); err != 0) {
      absl::Status s = ErrnoStatus(
          err, kCall, name_,
          absl::StrFormat("%s of IOVA [%#x, +%#x) lkey %#x", write ? "PREFETCH_WRITE" : "PREFETCH",
                          sge.addr, sge.length, mapping.lkey));
      if (err == EOPNOTSUPP) return absl::UnimplementedError(s.message());
      return s;
    }
  }
  return absl::OkStatus();
}

DeviceMapping VerbsDomain::Track(ibv_mr* mr, uint64_t iova, uint64_t length) {
  {
    internal::MutexLock lock(&mrs_->mu);
    mrs_->mrs.insert(mr);
  }
  live_.fetch_add(1, std::memory_order_relaxed);
  total_reg_.fetch_add(1, std::memory_order_relaxed);
  return DeviceMapping{mr->lkey, mr->rkey, iova, length, reinterpret_cast<uintptr_t>(mr)};
}

const std::atomic<bool>* VerbsDomain::lost_flag() const {
  return watch_ != nullptr ? &watch_->lost() : nullptr;
}

absl::Status VerbsDomain::LostStatus(std::string_view call) const {
  if (watch_ != nullptr) return watch_->LostStatus(call);
  return Domain::LostStatus(call);
}

absl::Status VerbsDomain::Deregister(const DeviceMapping& mapping) {
  auto* mr = reinterpret_cast<ibv_mr*>(static_cast<uintptr_t>(mapping.handle));
  if (mr == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("ibv_dereg_mr on ", name_, ": mapping has no ibv_mr handle"));
  }
  {
    // Out of the set before the call: once freed, the same address may come
    // back from another thread's registration.
    internal::MutexLock lock(&mrs_->mu);
    if (mrs_->mrs.erase(mr) == 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "ibv_dereg_mr on %s: lkey %#x is not an MR registered through this domain (or it was "
          "deregistered already)",
          name_, mapping.lkey));
    }
  }
  if (const int err = ops_.DeregMr(mr); err != 0) {
    // The MR is still registered; it stays counted as live.
    {
      internal::MutexLock lock(&mrs_->mu);
      mrs_->mrs.insert(mr);
    }
    return ErrnoStatus(err, "ibv_dereg_mr", name_, absl::StrFormat("lkey %#x", mapping.lkey));
  }
  live_.fetch_sub(1, std::memory_order_relaxed);
  total_dereg_.fetch_add(1, std::memory_order_relaxed);
  return absl::OkStatus();
}

VerbsDomain::~VerbsDomain() {
  watch_.reset();  // its thread polls the context closed below
  // MRs the caller registered through the domain and never deregistered
  // (a cache deregisters its own first): a wrapped PD's owner could not
  // deallocate it while they live. Failures have no caller to go to.
  absl::flat_hash_set<ibv_mr*> left;
  {
    internal::MutexLock lock(&mrs_->mu);
    left.swap(mrs_->mrs);
  }
  for (ibv_mr* mr : left) {
    if (ops_.DeregMr(mr) == 0) {
      live_.fetch_sub(1, std::memory_order_relaxed);
      total_dereg_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  if (!owns_pd_) return;  // the application's PD and context
  // Closing the device releases whatever the kernel still holds for it.
  ops_.DeallocPd(pd_);
  ops_.CloseDevice(context_);
}

}  // namespace dmareg
