// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// RegionPool: type-stable storage for Regions (see region.h for why).
// Regions are carved from slabs that are freed only with the pool; freed
// Regions go to a free list and are reused. Not thread-safe: the cache's
// mutex serialises Allocate/Free.

#ifndef DMAREG_SRC_CORE_REGION_POOL_H_
#define DMAREG_SRC_CORE_REGION_POOL_H_

#include <cstddef>
#include <memory>
#include <vector>

#include "core/region.h"

namespace dmareg::internal {

class RegionPool {
 public:
  RegionPool() = default;
  RegionPool(const RegionPool&) = delete;
  RegionPool& operator=(const RegionPool&) = delete;
  ~RegionPool();

  // A Region in state kFree with its fields reset; the caller fills it and
  // publishes it with a release store of `state`.
  Region* Allocate();
  // `r` must be unreachable for new references (kDead, count 0).
  void Free(Region* r);

  size_t allocated() const { return allocated_; }
  size_t capacity() const { return capacity_; }
  size_t bytes() const { return capacity_ * sizeof(Region); }

 private:
  // Slabs double from 64 Regions up to 2 MiB, so a small cache stays small
  // and a large one gets huge-page-backed slabs.
  static constexpr size_t kFirstSlab = 64;
  static constexpr size_t kSlabBytesMax = size_t{2} << 20;
  struct Slab {
    Region* regions;
    size_t count;
  };
  std::vector<Slab> slabs_;
  size_t capacity_ = 0;
  Region* free_ = nullptr;
  size_t allocated_ = 0;
};

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_CORE_REGION_POOL_H_
