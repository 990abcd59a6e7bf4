// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "core/region_pool.h"

#include <sys/mman.h>

#include <new>

namespace dmareg::internal {

namespace {
constexpr size_t kHugePage = size_t{2} << 20;
}

RegionPool::~RegionPool() {
  for (const Slab& s : slabs_) {
    for (size_t i = 0; i < s.count; ++i) s.regions[i].~Region();
    const size_t bytes = s.count * sizeof(Region);
    ::operator delete(s.regions, std::align_val_t{bytes >= kHugePage ? kHugePage : alignof(Region)});
  }
}

Region* RegionPool::Allocate() {
  if (free_ == nullptr) {
    size_t count = slabs_.empty() ? kFirstSlab : slabs_.back().count * 2;
    if (count * sizeof(Region) > kSlabBytesMax) count = kSlabBytesMax / sizeof(Region);
    const size_t bytes = count * sizeof(Region);
    const bool huge = bytes >= kHugePage;
    void* mem = ::operator new(bytes, std::align_val_t{huge ? kHugePage : alignof(Region)});
    // Large caches touch regions at random: huge pages spare the TLB.
    if (huge) madvise(mem, bytes, MADV_HUGEPAGE);
    Region* slab = static_cast<Region*>(mem);
    for (size_t i = 0; i < count; ++i) new (&slab[i]) Region();
    slabs_.push_back(Slab{slab, count});
    capacity_ += count;
    for (size_t i = count; i-- > 0;) {
      slab[i].free_next = free_;
      free_ = &slab[i];
    }
  }
  Region* r = free_;
  free_ = r->free_next;
  r->free_next = nullptr;
  ++allocated_;
  return r;
}

void RegionPool::Free(Region* r) {
  // Plain fields are rewritten only here and in the caller's fill, both while
  // the state says kFree: no reader dereferences them then (TryRef fails).
  r->state.store(kFree, std::memory_order_release);
  r->lru_prev = r->lru_next = nullptr;
  r->indexed = false;
  r->free_next = free_;
  free_ = r;
  --allocated_;
}

}  // namespace dmareg::internal
