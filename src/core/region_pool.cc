// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "core/region_pool.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <new>

namespace dmareg::internal {

namespace {
constexpr size_t kRegionsPerHugePage = kHugePage / sizeof(Region);
}  // namespace

RegionPool::RegionPool(size_t max_regions) {
  // PROT_NONE commits nothing, even under strict overcommit; a smaller
  // reservation is tried where the address space is limited (RLIMIT_AS).
  for (size_t regions = std::min(max_regions, kMaxRegions); regions > 0; regions /= 2) {
    if (!reservation_.Map(regions * sizeof(Region), PROT_NONE)) continue;
    base_ = static_cast<Region*>(reservation_.data());
    max_regions_ = regions;
    return;
  }
  // No address space at all: every Allocate says the pool is full.
}

RegionPool::~RegionPool() {
  for (size_t i = 0; i < capacity_; ++i) base_[i].~Region();
}

bool RegionPool::Grow(size_t count) {
  char* from = reinterpret_cast<char*>(base_ + capacity_);
  const size_t bytes = count * sizeof(Region);
  if (mprotect(from, bytes, PROT_READ | PROT_WRITE) != 0) return false;
  // Large caches touch regions at random: huge pages spare the TLB. The
  // first 2 MiB stay on small pages, so a small cache stays small.
  if (capacity_ >= kRegionsPerHugePage) madvise(from, bytes, MADV_HUGEPAGE);
  for (size_t c = capacity_ >> kLinkChunkBits; c <= (capacity_ + count - 1) >> kLinkChunkBits;
       ++c) {
    if (link_chunks_[c] == nullptr) link_chunks_[c] = std::make_unique<Links[]>(kLinkChunk);
  }
  for (size_t i = capacity_ + count; i-- > capacity_;) {
    Region* r = new (&base_[i]) Region();
    r->index = static_cast<uint32_t>(i);
    links(r).next = free_;
    free_ = r;
  }
  capacity_ += count;
  return true;
}

Region* RegionPool::Allocate() {
  if (free_ == nullptr) {
    // One page of Regions first, doubling up to a huge page at a time; the
    // steps stay aligned, so each huge page is one step.
    const size_t page_regions = static_cast<size_t>(sysconf(_SC_PAGESIZE)) / sizeof(Region);
    const size_t count = std::min(
        {std::max(capacity_, page_regions), kRegionsPerHugePage, max_regions_ - capacity_});
    if (count == 0 || !Grow(count)) return nullptr;  // the cache says why
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
