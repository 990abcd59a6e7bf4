// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// domain.h: the backend interface: one device and its protection domain (or
// one VFIO container) that can make memory usable for DMA.
//
// A `Domain` does the expensive, uncached work: turn a span of host memory or
// a dma-buf slice into a device mapping (verbs MR: lkey/rkey/IOVA; VFIO: an
// IOMMU mapping at an IOVA), and undo it. The `RegistrationCache` in front of
// it does the validation and the caching, so a Domain may assume its
// arguments are valid (non-empty host spans that do not wrap, known access
// bits, an IOVA only where `caller_iova` says it is honoured).
//
// The two registration calls are symmetric: each takes a memory descriptor
// that may name the IOVA of its first byte (`HostMemory::iova`,
// `DmaBufMemory::iova`); empty, the domain picks one. A named IOVA obeys one
// set of rules on every device, `CheckIovaPlacement` below, which every
// Domain applies (once) before it asks its kernel. Every mapping comes back
// with its extent (`DeviceMapping::iova`, `length`), which is what
// `Deregister` undoes. How the mapping holds its pages is the `Paging`
// argument (the cache chooses it from CacheOptions::paging; nothing else
// switches it).
//
// Implementations: `VerbsDomain` (libibverbs), the VFIO domain, and
// `testing::FakeDomain` for tests. What a device can do is data, probed once
// when the domain opens (`DomainCapabilities`); what it cannot do is answered
// with a status (`Unimplemented`, `FailedPrecondition`), never a crash.
//
// Thread safety: every method may be called from several threads at once.
//
//   class MyDomain : public dmareg::Domain {
//    public:
//     using Domain::RegisterHost;  // keeps the pinned shorthand visible
//     absl::StatusOr<dmareg::DeviceMapping> RegisterHost(const dmareg::HostMemory& memory,
//                                                        dmareg::AccessFlags access,
//                                                        dmareg::Paging paging) override;
//     absl::Status Deregister(const dmareg::DeviceMapping& m) override;
//     ...
//   };

#ifndef DMAREG_DOMAIN_H_
#define DMAREG_DOMAIN_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dmareg/access.h"
#include "dmareg/memory.h"
#include "dmareg/range.h"

#pragma GCC visibility push(default)

namespace dmareg {

// How a mapping holds its pages.
enum class Paging {
  // Pinned registrations: the pages of the moment stay with the device, and
  // the memory monitor keeps the cache from handing out stale ones.
  kPinned,
  // On-demand paging (verbs ODP, IBV_ACCESS_ON_DEMAND): the device follows
  // the process's page tables, so a mapping never goes stale. A domain
  // without it answers Unimplemented (or the driver's own errno).
  kOnDemand,
  // The cache's choice only (CacheOptions::paging): on-demand while the
  // domain accepts it, pinned for good after its first refusal. A domain
  // asked for it answers InvalidArgument.
  kAutomatic,
};
// "pinned", "on-demand", "automatic".
const char* PagingName(Paging paging);

// What kind of device a domain maps memory for.
enum class DeviceKind {
  kFake,  // no device (tests, benchmarks)
  kRdma,  // an RDMA NIC through libibverbs: MRs with keys
  kVfio,  // a device behind an IOMMU through VFIO: IOVA mappings, no keys
};
// "fake", "rdma", "vfio".
std::string_view DeviceKindName(DeviceKind kind);

// What a domain can do, probed once when it opens. Every backend fills
// every field; backend-only detail lives with the backend (VerbsDeviceInfo).
struct DomainCapabilities {
  std::string device_name{};
  DeviceKind kind = DeviceKind::kFake;
  // IOVAs the device may use; empty: any IOVA below 2^dma_address_bits.
  std::vector<Range> iova_ranges{};
  // Width of the device's DMA addresses: IOVAs must lie below 2^bits.
  int dma_address_bits = 64;
  uint64_t max_mappings = 0;                // 0: no known limit
  uint64_t max_mapping_bytes = UINT64_MAX;  // longest single mapping
  uint64_t page_sizes = 4096;               // bit N set: pages of 2^N bytes
  bool caller_iova = false;                 // Register* honour a caller-chosen IOVA
  bool dmabuf_import = false;               // RegisterDmaBuf is implemented by the driver
  bool on_demand_paging = false;            // Paging::kOnDemand works (verbs ODP)
  // Every mapping lives in one IOVA space (an IOMMU's): IOVAs of two
  // mappings never overlap, the domain itself refuses an overlap
  // (AlreadyExists) and counts an identical mapping again (each needs its
  // Deregister). False: each mapping is reached through its own keys and
  // IOVAs may repeat (verbs MRs).
  bool one_iova_space = false;
  // A mapping may start and end anywhere in a page (verbs MRs pin the whole
  // pages behind any byte range). False: va, IOVA and length must be whole
  // pages of the smallest page size (an IOMMU maps pages).
  bool byte_granular = true;
  // Registrations make no system call and return within a few hundred
  // nanoseconds (a no-op or test domain). A cache then registers and
  // deregisters under its lock, one critical section per miss instead of
  // two; such a domain must not call back into a cache over it.
  bool fast_registration = false;
};

// The rules a mapping at a caller's IOVA obeys on a device, one function
// applied once per request by every Domain (and by nothing else), each
// violation with one status code everywhere:
//   InvalidArgument     zero length; the VA or IOVA range wraps; VA and IOVA
//                       differ in their offset within the smallest page; not
//                       whole pages where the device maps pages
//                       (!byte_granular)
//   FailedPrecondition  the device cannot place a mapping at a caller's
//                       IOVA (!caller_iova)
//   OutOfRange          the IOVAs are beyond the device's reach: past its
//                       DMA mask, or outside its IOVA ranges
// `where` starts every message ("DmaMap on vfio:0000:00:03.0").
absl::Status CheckIovaPlacement(const DomainCapabilities& caps, uint64_t va, uint64_t iova,
                                uint64_t length, std::string_view where);

// What a Domain calls before it pins host memory: the process itself must
// be able to access [addr, addr + length) as `access` asks (readable, and
// writable where NormalizeAccess(access) has kLocalWrite), else
// PermissionDenied naming the protection. Kernels disagree here (Linux 6.1
// pins a read-only MR over PROT_NONE memory, 7.x refuses), so the rule is
// dmareg's: the device may not touch what the program may not. Asked of the
// kernel with MADV_POPULATE_READ / _WRITE (Linux 5.14+), which fault the
// pages in as the pin would have (so it costs the registration little); a
// kernel without them, memory those do not handle (VM_IO, VM_PFNMAP) and
// memory not mapped at all are left to the registration to refuse.
// `where` starts the message ("ibv_reg_mr_iova2 on rxe0").
absl::Status CheckHostAccess(const void* addr, uint64_t length, AccessFlags access,
                             std::string_view where);

// The result of one registration.
struct DeviceMapping {
  uint32_t lkey = 0;  // verbs keys; 0 where the device has none (VFIO)
  uint32_t rkey = 0;
  uint64_t iova = 0;    // device address of the first byte
  uint64_t length = 0;  // bytes mapped from `iova` on
  uint64_t handle = 0;  // the backend's own (ibv_mr*, mapping id)
};

class Domain {
 public:
  virtual ~Domain() = default;

  // "rxe0", "vfio:0000:00:03.0", "fake".
  virtual const std::string& name() const = 0;
  // Fixed for the domain's life: a cache reads them once, when it is made.
  virtual const DomainCapabilities& capabilities() const = 0;

  // Maps [memory.addr, memory.addr + memory.length), at `memory.iova` if
  // given (CheckIovaPlacement first), holding its pages as `paging` says
  // (kPinned or kOnDemand). The cache passes page-aligned spans and no IOVA.
  virtual absl::StatusOr<DeviceMapping> RegisterHost(const HostMemory& memory, AccessFlags access,
                                                     Paging paging) = 0;
  // The same, pinned.
  absl::StatusOr<DeviceMapping> RegisterHost(const HostMemory& memory, AccessFlags access) {
    return RegisterHost(memory, access, Paging::kPinned);
  }

  // Maps a dma-buf slice. Default: Unimplemented, naming the domain.
  virtual absl::StatusOr<DeviceMapping> RegisterDmaBuf(const DmaBufMemory& memory,
                                                       AccessFlags access);

  // Undoes a mapping returned by this domain. Called exactly once per mapping.
  virtual absl::Status Deregister(const DeviceMapping& mapping) = 0;

  // Where the device can go away for good (an RDMA device deleted or
  // unplugged): a flag the domain sets, once, when it has, which a cache
  // reads on every request (one load) to refuse from then on with
  // LostStatus(). Default: nullptr, a device that cannot go away.
  virtual const std::atomic<bool>* lost_flag() const { return nullptr; }
  // Once lost_flag() is set: Unavailable naming `call` and the device.
  virtual absl::Status LostStatus(std::string_view call) const;
};

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_DOMAIN_H_
