// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "core/region_pool.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <new>

namespace dmareg::internal {

namespace {
constexpr size_t kRegionsPerHugePage = kHugePage / sizeof(Region);

int Log2Ceil(size_t n) {
  int s = 0;
  while ((size_t{1} << s) < n) ++s;
  return s;
}
}  // namespace

RegionPool::RegionPool(void* owner, size_t max_regions) {
  // PROT_NONE commits nothing, even under strict overcommit; a smaller
  // reservation is tried where the address space is limited (RLIMIT_AS).
  // Aligned to its own size, so that OwnerOf finds the header from any slot.
  for (size_t slots = std::min(max_regions + 1, kMaxRegions); slots > 1; slots /= 2) {
    const int shift = Log2Ceil(slots * sizeof(Region));
    const size_t bytes = size_t{1} << shift;
    if (!reservation_.Map(bytes, PROT_NONE, std::max(bytes, kHugePage))) continue;
    base_ = static_cast<Region*>(reservation_.data());
    shift_ = static_cast<uint8_t>(shift);
    max_regions_ = slots;
    // The header's page.
    if (!Grow(std::min(slots, static_cast<size_t>(sysconf(_SC_PAGESIZE)) / sizeof(Region)))) {
      base_ = nullptr;
      max_regions_ = 0;
      return;
    }
    reinterpret_cast<Header*>(base_)->owner = owner;
    return;
  }
  // No address space at all: every Allocate says the pool is full.
}

RegionPool::~RegionPool() {
  for (size_t i = 1; i < capacity_; ++i) base_[i].~Region();
  for (auto& c : dmabuf_chunks_) delete[] c.load(std::memory_order_relaxed);
}

size_t RegionPool::bytes() const {
  return capacity_ * (sizeof(Region) + sizeof(Links)) +
         dmabuf_chunk_count_ * (sizeof(DmaBufId) << kChunkBits);
}

bool RegionPool::Grow(size_t count) {
  char* from = reinterpret_cast<char*>(base_ + capacity_);
  const size_t bytes = count * sizeof(Region);
  if (mprotect(from, bytes, PROT_READ | PROT_WRITE) != 0) return false;
  // Large caches touch regions at random: huge pages spare the TLB. The
  // first 2 MiB stay on small pages, so a small cache stays small.
  if (capacity_ >= kRegionsPerHugePage) madvise(from, bytes, MADV_HUGEPAGE);
  for (size_t c = capacity_ >> kChunkBits; c <= (capacity_ + count - 1) >> kChunkBits; ++c) {
    if (link_chunks_[c] == nullptr)
      link_chunks_[c] = std::make_unique<Links[]>(size_t{1} << kChunkBits);
  }
  // Slot 0 is the header, constructed by the caller; Regions from 1 on, the
  // lowest index first on the free list.
  const size_t first = std::max<size_t>(capacity_, 1);
  for (size_t i = capacity_ + count; i-- > first;) {
    Region* r = new (&base_[i]) Region();
    r->index = static_cast<uint32_t>(i);
    r->pool_shift = shift_;
    links(r->index).next = free_;
    free_ = r->index;
  }
  capacity_ += count;
  return true;
}

Region* RegionPool::Allocate() {
  if (free_ == kNone) {
    // One page of Regions first, doubling up to a huge page at a time; the
    // steps stay aligned, so each huge page is one step.
    const size_t page_regions = static_cast<size_t>(sysconf(_SC_PAGESIZE)) / sizeof(Region);
    const size_t count = std::min(
        {std::max(capacity_, page_regions), kRegionsPerHugePage, max_regions_ - capacity_});
    if (count == 0 || base_ == nullptr || !Grow(count)) return nullptr;  // the cache says why
  }
  Region* r = At(free_);
  free_ = links(r).next;
  links(r) = Links{};
  ++allocated_;
  return r;
}

void RegionPool::Free(Region* r) {
  // Plain fields are rewritten only here and in the caller's fill, both while
  // kFree is set: no reader relies on them then (a hit backs out on kFree).
  // `r` was claimed: nobody else writes its state.
  r->SetFlagsOfFree(kFree, std::memory_order_release);
  r->accessed.store(0, std::memory_order_relaxed);
  r->indexed = false;
  links(r) = Links{};
  links(r).next = free_;
  free_ = r->index;
  --allocated_;
}

void RegionPool::SetDmaBufId(const Region* r, DmaBufId id) {
  std::atomic<DmaBufId*>& chunk = dmabuf_chunks_[r->index >> kChunkBits];
  DmaBufId* ids = chunk.load(std::memory_order_relaxed);
  if (ids == nullptr) {
    ids = new DmaBufId[size_t{1} << kChunkBits]();
    ++dmabuf_chunk_count_;
    // release: a reader that finds the chunk finds it zeroed, then filled
    // before the region it names is published (its state, release).
    chunk.store(ids, std::memory_order_release);
  }
  ids[r->index & kChunkMask] = id;
}

}  // namespace dmareg::internal
