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
    if (capacity_ + count > kLinkChunks * kLinkChunk) return nullptr;  // the cache says why
    const size_t bytes = count * sizeof(Region);
    const bool huge = bytes >= kHugePage;
    void* mem = ::operator new(bytes, std::align_val_t{huge ? kHugePage : alignof(Region)});
    // Large caches touch regions at random: huge pages spare the TLB.
    if (huge) madvise(mem, bytes, MADV_HUGEPAGE);
    Region* slab = static_cast<Region*>(mem);
    for (size_t i = 0; i < count; ++i) {
      new (&slab[i]) Region();
      slab[i].index = static_cast<uint32_t>(capacity_ + i);
    }
    slabs_.push_back(Slab{slab, count});
    for (size_t c = capacity_ >> kLinkChunkBits; c <= (capacity_ + count - 1) >> kLinkChunkBits;
         ++c) {
      if (link_chunks_[c] == nullptr) link_chunks_[c] = std::make_unique<Links[]>(kLinkChunk);
    }
    capacity_ += count;
    for (size_t i = count; i-- > 0;) {
      links(&slab[i]).next = free_;
      free_ = &slab[i];
    }
  }
  Region* r = free_;
  free_ = links(r).next;
  links(r) = Links{};
  ++allocated_;
  return r;
}

void RegionPool::Free(Region* r) {
  // Plain fields are rewritten only here and in the caller's fill, both while
  // kFree is set: no reader relies on them then (a hit backs out on kFree).
  r->SetFlags(kFree, std::memory_order_release);
  r->accessed.store(0, std::memory_order_relaxed);
  r->indexed = false;
  links(r) = Links{};
  links(r).next = free_;
  free_ = r;
  --allocated_;
}

}  // namespace dmareg::internal
