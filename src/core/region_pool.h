// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// RegionPool: type-stable storage for Regions (see region.h for why).
// Regions are carved from slabs that are freed only with the pool; freed
// Regions go to a free list and are reused. Each Region gets a dense index
// at carving, which keys the side data kept here for the cache's writers
// (CLOCK ring links, the backend's handle) so the Region itself stays one
// cache line. Not thread-safe: the cache's mutex serialises every call.

#ifndef DMAREG_SRC_CORE_REGION_POOL_H_
#define DMAREG_SRC_CORE_REGION_POOL_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/region.h"

namespace dmareg::internal {

class RegionPool {
 public:
  // As many mappings as the largest RDMA devices hold; past that Allocate
  // returns null and the cache reports ResourceExhausted.
  static constexpr size_t kMaxRegions = size_t{1} << 24;

  struct Links {
    Region* prev = nullptr;  // CLOCK ring; `next` also links the free list
    Region* next = nullptr;
    uint64_t handle = 0;  // DeviceMapping::handle
  };

  RegionPool() = default;
  RegionPool(const RegionPool&) = delete;
  RegionPool& operator=(const RegionPool&) = delete;
  ~RegionPool();

  // A Region with kFree set; the caller fills it and publishes it by setting
  // its flags (release).
  Region* Allocate();
  // `r` must be unreachable for new references (kDead, no references).
  void Free(Region* r);

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
  size_t bytes() const { return capacity_ * (sizeof(Region) + sizeof(Links)); }

 private:
  // Slabs double from 64 Regions up to 2 MiB, so a small cache stays small
  // and a large one gets huge-page-backed slabs.
  static constexpr size_t kFirstSlab = 64;
  static constexpr size_t kSlabBytesMax = size_t{2} << 20;
  struct Slab {
    Region* regions;
    size_t count;
  };
  static constexpr int kLinkChunkBits = 12;
  static constexpr size_t kLinkChunk = size_t{1} << kLinkChunkBits;
  static constexpr size_t kLinkChunks = kMaxRegions / kLinkChunk;
  std::vector<Slab> slabs_;
  std::unique_ptr<Links[]> link_chunks_[kLinkChunks];  // by Region::index
  size_t capacity_ = 0;
  Region* free_ = nullptr;
  size_t allocated_ = 0;
};

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_CORE_REGION_POOL_H_
