// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// domain.h: the backend interface: one device and its protection domain (or
// one VFIO container) that can make memory usable for DMA.
//
// A `Domain` does the expensive, uncached work: turn a span of host memory or
// a dma-buf slice into a device mapping (verbs MR: lkey/rkey/IOVA; VFIO: an
// IOMMU mapping at an IOVA), and undo it. The `RegistrationCache` in front of
// it does the validation and the caching, so a Domain may assume its
// arguments are valid (non-empty, page-aligned host spans, known access bits).
//
// Implementations: `VerbsDomain` (libibverbs), the VFIO domain, and
// `testing::FakeDomain` for tests. A capability a device lacks is reported in
// `DomainCapabilities` and answered with a status (`Unimplemented`,
// `FailedPrecondition`), never a crash.
//
// Thread safety: every method may be called from several threads at once.
//
//   class MyDomain : public dmareg::Domain {
//     absl::StatusOr<dmareg::DeviceMapping> RegisterHost(
//         const void* addr, size_t len, dmareg::AccessFlags access) override;
//     absl::Status Deregister(const dmareg::DeviceMapping& m) override;
//     ...
//   };

#ifndef DMAREG_DOMAIN_H_
#define DMAREG_DOMAIN_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dmareg/access.h"
#include "dmareg/memory.h"

namespace dmareg {

// An inclusive range of IOVAs a device may use.
struct IovaRange {
  uint64_t first = 0;
  uint64_t last = 0;
};

// What a domain can do, probed once when it opens.
struct DomainCapabilities {
  std::string device_name;
  // ibv_reg_dmabuf_mr (or its VFIO equivalent) is implemented by the driver.
  bool dmabuf_mr = false;
  // On-demand paging for RC transport (any of send/recv/write/read).
  bool odp = false;
  uint32_t odp_rc_caps = 0;  // IBV_ODP_SUPPORT_* bits for RC, 0 if none
  uint64_t max_mr_size = UINT64_MAX;
  uint64_t page_size_cap = 4096;  // bit N set: pages of 2^N bytes supported
  std::vector<IovaRange> iova_ranges;  // empty: any IOVA (verbs: IOVA = VA)
  uint64_t max_mappings = 0;           // 0: no known limit
  bool fork_protected = false;         // ibv_fork_init was in effect at open
};

// The result of one registration.
struct DeviceMapping {
  uint32_t lkey = 0;
  uint32_t rkey = 0;
  uint64_t iova = 0;    // device address of the first byte
  uint64_t handle = 0;  // the backend's own (ibv_mr*, mapping id)
};

class Domain {
 public:
  virtual ~Domain() = default;

  // "rxe0", "vfio:0000:00:03.0", "fake".
  virtual const std::string& name() const = 0;
  virtual const DomainCapabilities& capabilities() const = 0;

  // Maps [addr, addr + length). The cache passes page-aligned spans.
  virtual absl::StatusOr<DeviceMapping> RegisterHost(const void* addr,
                                                     size_t length,
                                                     AccessFlags access) = 0;

  // Maps a dma-buf slice. Default: Unimplemented, naming the domain.
  virtual absl::StatusOr<DeviceMapping> RegisterDmaBuf(const DmaBufMemory& memory,
                                                       AccessFlags access);

  // Undoes a mapping returned by this domain. Called exactly once per mapping.
  virtual absl::Status Deregister(const DeviceMapping& mapping) = 0;
};

}  // namespace dmareg

#endif  // DMAREG_DOMAIN_H_
