// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// VfioContainer's private state and the helpers its files share
// (vfio_container.cc: the lifecycle and the groups; container_mappings.cc:
// the table; container_kernel.cc: the type1 calls). Not installed.
#ifndef DMAREG_SRC_VFIO_CONTAINER_STATE_H_
#define DMAREG_SRC_VFIO_CONTAINER_STATE_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/mutex.h"
#include "dmareg/domain.h"
#include "dmareg/range.h"
#include "dmareg/vfio/vfio_domain.h"
#include "dmareg/vfio/vfio_ops.h"
#include "vfio/iova_allocator.h"

namespace dmareg {

namespace internal {

// One row of the table (keyed by IOVA): the one record of a mapping in this
// IOMMU space, with its one reference count.
struct VfioTableEntry {
  uint64_t va = 0;
  uint64_t length = 0;
  bool writable = false;
  // Who holds each reference (the count is the size): the VfioDomain that
  // mapped it, or null for VfioContainer::Map's callers. A domain's
  // Deregister drops one of its own, and a domain that goes drops all of
  // its own (ReleaseHolder), so a shared container keeps the others'.
  std::vector<const void*> taken_by;
  // What this entry holds in the allocator: reserved when an allocator pick
  // first lands on it (or made by the pick), emptied when the allocator is
  // rebuilt, freed with the entry.
  std::vector<Range> held;
};

}  // namespace internal

struct VfioContainer::State {
  struct Group {
    int fd = -1;
    bool joined_here = true;  // false: joined by a primary process (not ours to unset)
  };
  const int preferred_type;  // type1v2 where the kernel has it
  const bool adopted;        // the IOMMU type was set by another process

  // Lock order (see VfioContainer::state_): after the registry's and
  // VfioDomain's; before the allocator's (a leaf).
  mutable internal::Mutex mu;
  std::map<uint64_t, internal::VfioTableEntry> table ABSL_GUARDED_BY(mu);  // by IOVA; disjoint
  std::map<int, Group> groups ABSL_GUARDED_BY(mu);                         // group number -> fd
  VfioContainerInfo info ABSL_GUARDED_BY(mu);                              // iommu_type 0: not set
  int narrowest_bits ABSL_GUARDED_BY(mu) = 64;
  std::unique_ptr<internal::IovaAllocator> allocator ABSL_GUARDED_BY(mu);
  // ReserveIova's ranges (begin -> end): held in the allocator (reserved
  // again when it is rebuilt) and avoided by IOVA = VA picks.
  std::map<uint64_t, uint64_t> reserved ABSL_GUARDED_BY(mu);

  State(int type, bool adopted_type) : preferred_type(type), adopted(adopted_type) {}
};

namespace internal {

// "{va 0x.., iova [0x.., 0x..), rw}"
std::string DescribeMapping(uint64_t va, uint64_t iova, uint64_t length, bool writable);
// "[a, b), [c, d)", or "(none)".
std::string RangesString(const std::vector<Range>& ranges);
// `r` lies inside one of `ranges` (none given: anywhere).
bool InsideOne(const std::vector<Range>& ranges, Range r);
// The parts of `r` inside the allocator's usable space.
std::vector<Range> PartsInside(const IovaAllocator& a, Range r);
// The container as CheckIovaPlacement sees it: its IOMMU's ranges and
// pages once the IOMMU is `set` (before, any IOVA and 4 KiB pages: what the
// first attach finds is checked then), and no DMA mask (a device's own is
// its domain's). Map's rules, and those a pending mapping meets at the first
// attach.
DomainCapabilities PlacementCaps(const VfioContainerInfo& info, bool set, int fd);
// VFIO_IOMMU_MAP_DMA (populating a read-only range for write first), errno
// as a status naming the mapping; `table_size` goes into the ENOSPC message.
absl::Status KernelMap(VfioOps& ops, int fd, const VfioContainerInfo& info, size_t table_size,
                       uint64_t va, uint64_t iova, uint64_t length, bool writable);
// VFIO_IOMMU_UNMAP_DMA; the bytes the kernel says it unmapped.
absl::StatusOr<uint64_t> KernelUnmap(VfioOps& ops, int fd, uint64_t iova, uint64_t length);

}  // namespace internal
}  // namespace dmareg

#endif  // DMAREG_SRC_VFIO_CONTAINER_STATE_H_
