// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// RegionPool: type-stable storage for Regions (see region.h for why).
// Regions live in one address-space reservation, in index order, so that
// Region i is at base() + i: the hit path turns an index read from the hash
// index into a Region with no lookup. The reservation is made readable and
// writable as the pool grows (doubling from one page of Regions, then 2 MiB
// at a time on huge pages) and is released only with the pool. Freed
// Regions go to a free list and are reused. Side data that only the
// cache's writers use (CLOCK ring links, the backend's handle) is kept here
// by index, so the Region itself stays one cache line. Not thread-safe but
// for base() and At(): the cache's mutex serialises every other call.

#ifndef DMAREG_SRC_CORE_REGION_POOL_H_
#define DMAREG_SRC_CORE_REGION_POOL_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "base/aligned_mapping.h"
#include "core/region.h"
#include "dmareg/dmabuf_id.h"

namespace dmareg::internal {

class RegionPool {
 public:
  // As many mappings as the largest RDMA devices hold; past that Allocate
  // returns null and the cache reports ResourceExhausted. Indexes fit the
  // hash index's 24-bit field.
  static constexpr size_t kMaxRegions = size_t{1} << 24;

  struct Links {
    Region* prev = nullptr;  // CLOCK ring; `next` also links the free list
    Region* next = nullptr;
    uint64_t handle = 0;  // DeviceMapping::handle
    DmaBufId dmabuf;      // the buffer of a dma-buf region
  };

  // Reserves address space for kMaxRegions Regions (1 GiB, nothing
  // committed). Where the system refuses that much, for fewer: max_regions()
  // says how many.
  RegionPool() : RegionPool(kMaxRegions) {}
  // At most `max_regions` (tests of a full pool).
  explicit RegionPool(size_t max_regions);
  RegionPool(const RegionPool&) = delete;
  RegionPool& operator=(const RegionPool&) = delete;
  ~RegionPool();

  // A Region with kFree set, or null when the pool is full; the caller fills
  // it and publishes it by setting its flags (release).
  Region* Allocate();
  // `r` must be unreachable for new references (kDead, no references).
  void Free(Region* r);

  // Any thread: Region `index`, for an index this pool handed out.
  Region* base() const { return base_; }
  Region* At(uint32_t index) const { return base_ + index; }

  // Stable storage (chunks never move), so a thread may read the handle of
  // a region it claimed under the mutex after letting go of the mutex.
  Links& links(const Region* r) {
    return link_chunks_[r->index >> kLinkChunkBits][r->index & (kLinkChunk - 1)];
  }
  const Links& links(const Region* r) const {
    return link_chunks_[r->index >> kLinkChunkBits][r->index & (kLinkChunk - 1)];
  }

  size_t allocated() const { return allocated_; }
  size_t capacity() const { return capacity_; }
  size_t max_regions() const { return max_regions_; }
  size_t bytes() const { return capacity_ * (sizeof(Region) + sizeof(Links)); }

 private:
  // Commits `count` more Regions; false if the system refuses.
  bool Grow(size_t count);

  static constexpr int kLinkChunkBits = 12;
  static constexpr size_t kLinkChunk = size_t{1} << kLinkChunkBits;
  static constexpr size_t kLinkChunks = kMaxRegions / kLinkChunk;
  Region* base_ = nullptr;  // 2 MiB-aligned, inside the reservation
  AlignedMapping reservation_;
  size_t max_regions_ = 0;
  std::unique_ptr<Links[]> link_chunks_[kLinkChunks];  // by Region::index
  size_t capacity_ = 0;                                // Regions committed and constructed
  Region* free_ = nullptr;
  size_t allocated_ = 0;
};

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_CORE_REGION_POOL_H_
