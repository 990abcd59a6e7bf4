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
// `DmaBufMemory::iova`); empty, the domain picks one. Every mapping comes
// back with its extent (`DeviceMapping::iova`, `length`), which is what
// `Deregister` undoes.
//
// Implementations: `VerbsDomain` (libibverbs), the VFIO domain, and
// `testing::FakeDomain` for tests. What a device can do is data, probed once
// when the domain opens (`DomainCapabilities`); what it cannot do is answered
// with a status (`Unimplemented`, `FailedPrecondition`), never a crash.
//
// Thread safety: every method may be called from several threads at once.
//
//   class MyDomain : public dmareg::Domain {
//     absl::StatusOr<dmareg::DeviceMapping> RegisterHost(
//         const dmareg::HostMemory& memory, dmareg::AccessFlags access) override;
//     absl::Status Deregister(const dmareg::DeviceMapping& m) override;
//     ...
//   };

#ifndef DMAREG_DOMAIN_H_
#define DMAREG_DOMAIN_H_

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

namespace dmareg {

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
  std::string device_name;
  DeviceKind kind = DeviceKind::kFake;
  // IOVAs the device may use; empty: any IOVA below 2^dma_address_bits.
  std::vector<Range> iova_ranges;
  // Width of the device's DMA addresses: IOVAs must lie below 2^bits.
  int dma_address_bits = 64;
  uint64_t max_mappings = 0;                // 0: no known limit
  uint64_t max_mapping_bytes = UINT64_MAX;  // longest single mapping
  uint64_t page_sizes = 4096;               // bit N set: pages of 2^N bytes
  bool caller_iova = false;                 // Register* honour a caller-chosen IOVA
  bool dmabuf_import = false;               // RegisterDmaBuf is implemented by the driver
  bool on_demand_paging = false;            // mappings need no pinning (verbs ODP)
};

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
  virtual const DomainCapabilities& capabilities() const = 0;

  // Maps [memory.addr, memory.addr + memory.length), at `memory.iova` if
  // given. The cache passes page-aligned spans and no IOVA.
  virtual absl::StatusOr<DeviceMapping> RegisterHost(const HostMemory& memory,
                                                     AccessFlags access) = 0;

  // Like RegisterHost, with on-demand paging (verbs IBV_ACCESS_ON_DEMAND):
  // the mapping follows the process's page tables instead of pinning.
  // Default: Unimplemented, naming the domain.
  virtual absl::StatusOr<DeviceMapping> RegisterHostOnDemand(const HostMemory& memory,
                                                             AccessFlags access);

  // Maps a dma-buf slice. Default: Unimplemented, naming the domain.
  virtual absl::StatusOr<DeviceMapping> RegisterDmaBuf(const DmaBufMemory& memory,
                                                       AccessFlags access);

  // Undoes a mapping returned by this domain. Called exactly once per mapping.
  virtual absl::Status Deregister(const DeviceMapping& mapping) = 0;
};

}  // namespace dmareg

#endif  // DMAREG_DOMAIN_H_
