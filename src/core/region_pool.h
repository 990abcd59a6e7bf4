// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// RegionPool: type-stable storage for Regions (see region.h for why).
// Regions live in one address-space reservation, in index order, so that
// Region i is at base() + i: the hit path turns an index read from the hash
// index into a Region with no lookup. The reservation is aligned to its own
// (power-of-two) size and its first slot holds the owner, so a Region's cache
// is found from the Region's address alone (OwnerOf), and no Region carries a
// pointer to it. The reservation is made readable and writable as the pool
// grows (doubling from one page of Regions, then 2 MiB at a time on huge
// pages) and is released only with the pool. Freed Regions go to a free list
// and are reused.
//
// Side data that only the cache's writers use is kept here by index, so the
// Region itself stays one cache line: the CLOCK ring's links (two 32-bit
// indexes) and, only in chunks that hold a dma-buf region, the buffer's
// identity (read by hits too, under a reference). Not thread-safe but for
// base(), At(), OwnerOf() and DmaBufIdOf(): the cache's mutex serialises
// every other call.

#ifndef DMAREG_SRC_CORE_REGION_POOL_H_
#define DMAREG_SRC_CORE_REGION_POOL_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "base/aligned_mapping.h"
#include "core/region.h"
#include "dmareg/dmabuf_id.h"

namespace dmareg::internal {

class RegionPool {
 public:
  // Slots, the first one the owner's: as many mappings as the largest RDMA
  // devices hold; past that Allocate returns null and the cache reports
  // ResourceExhausted. Indexes fit the hash index's 24-bit field.
  static constexpr size_t kMaxRegions = size_t{1} << 24;
  static constexpr uint32_t kNone = 0;  // no Region: slot 0 is the header

  struct Links {
    uint32_t prev = kNone;  // CLOCK ring; `next` also links the free list
    uint32_t next = kNone;
  };

  // Reserves address space for kMaxRegions slots (1 GiB, nothing committed)
  // aligned to its size; where the system refuses that much, for fewer:
  // max_regions() says how many. `owner` is what OwnerOf returns.
  explicit RegionPool(void* owner) : RegionPool(owner, kMaxRegions) {}
  // At most `max_regions` slots (tests of a full pool).
  RegionPool(void* owner, size_t max_regions);
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
  // Any thread: the owner of the pool that holds `r`.
  static void* OwnerOf(const Region* r) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(r) & ~((uintptr_t{1} << r->pool_shift) - 1);
    return reinterpret_cast<const Header*>(a)->owner;
  }

  Links& links(const Region* r) { return links(r->index); }
  Links& links(uint32_t i) { return link_chunks_[i >> kChunkBits][i & kChunkMask]; }
  const Links& links(uint32_t i) const { return link_chunks_[i >> kChunkBits][i & kChunkMask]; }

  // The buffer of a dma-buf region: set before the region is published,
  // read by a thread holding a reference (or the mutex).
  void SetDmaBufId(const Region* r, DmaBufId id);
  const DmaBufId& DmaBufIdOf(const Region* r) const {
    return dmabuf_chunks_[r->index >> kChunkBits].load(
        std::memory_order_acquire)[r->index & kChunkMask];
  }

  size_t allocated() const { return allocated_; }
  // Slots committed, the header's included: indexes below it are Regions.
  size_t capacity() const { return capacity_; }
  size_t max_regions() const { return max_regions_ == 0 ? 0 : max_regions_ - 1; }
  size_t bytes() const;

 private:
  struct alignas(64) Header {
    void* owner;
  };
  static_assert(sizeof(Header) == sizeof(Region));
  // Commits `count` more Regions; false if the system refuses.
  bool Grow(size_t count);

  static constexpr int kChunkBits = 12;
  static constexpr uint32_t kChunkMask = (uint32_t{1} << kChunkBits) - 1;
  static constexpr size_t kChunks = kMaxRegions >> kChunkBits;
  Region* base_ = nullptr;  // slot 0 is the Header
  AlignedMapping reservation_;
  uint8_t shift_ = 0;       // log2 of the reservation's size and alignment
  size_t max_regions_ = 0;  // slots
  std::unique_ptr<Links[]> link_chunks_[kChunks];
  // Allocated on the first dma-buf region of a chunk, freed with the pool.
  std::atomic<DmaBufId*> dmabuf_chunks_[kChunks] = {};
  size_t capacity_ = 0;    // slots committed, header included
  uint32_t free_ = kNone;  // head of the free list
  size_t allocated_ = 0;
  size_t dmabuf_chunk_count_ = 0;
};

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_CORE_REGION_POOL_H_
