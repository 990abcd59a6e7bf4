// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// Region: one cached device mapping, as the hit path sees it: one cache line,
// and everything a cached mapping costs but for its entries in the hash index
// (range_index.h), its CLOCK links and its per-thread reference counts.
//
// Regions live in type-stable memory (RegionPool): a Region object is never
// returned to the allocator while its cache lives, only recycled. That is
// what lets the hit path read a Region index out of the lock-free index and
// touch that Region without a lock: a stale index still names a Region, and
// the state word says whether it may be referenced. Each Region has a fixed
// dense `index` (its slot in the pool) that keys the per-thread reference
// counts (thread_refs.h) and the pool's writer-only side arrays (CLOCK ring
// links, dma-buf identities). The cache a Region belongs to is found from its
// address (the pool's reservation is aligned to its size, with the owner in
// its first slot), so no Region spends a word on it.
//
// A Region is a mapping of one space: host memory (addresses), or one
// dma-buf (offsets into it, `dmabuf` set; the buffer's identity in the pool's
// side array). The index keys both alike (RangeIndex::SpaceOf).
//
// State word (64 bits):
//   bit  0       kDead: retired (invalidated, evicted, replaced, or an
//                uncached registration); no new reference may be taken
//   bit  1       kFree: in the pool's free list, or claimed for freeing
//   bits 32..63  shared reference count, two's complement: references taken
//                by compare-and-swap (threads without a reference table, and
//                every thread when the cache uses no tables)
// Flags change only under the cache's mutex. A region's references are the
// shared count plus its entries in every thread's table; neither part alone
// means anything. CacheCore documents the protocol.

#ifndef DMAREG_SRC_CORE_REGION_H_
#define DMAREG_SRC_CORE_REGION_H_

#include <atomic>
#include <cstdint>

#include "dmareg/domain.h"
#include "dmareg/range.h"
#include "dmareg/registration.h"

namespace dmareg::internal {

inline constexpr uint64_t kDead = 1;
inline constexpr uint64_t kFree = 2;
inline constexpr uint64_t kFlags = kDead | kFree;
inline constexpr uint64_t kOneRef = uint64_t{1} << 32;

struct alignas(64) Region : RegistrationInfo {
  std::atomic<uint64_t> state{kFree};
  // DeviceMapping::handle. Written when the region is filled (kFree set, no
  // reader relies on it) and read by whoever frees it: writers only.
  uint64_t handle = 0;
  uint32_t index = 0;                // fixed when the pool carves the Region
  std::atomic<uint8_t> accessed{0};  // CLOCK: a hit since the hand passed
  uint8_t pool_shift = 0;            // log2 of the pool's alignment (RegionPool::OwnerOf)
  // Owned by the cache's mutex (writers only).
  uint8_t level = 0;     // RangeIndex level
  bool indexed = false;  // in the RangeIndex (and, for the cache, the CLOCK ring)

  uintptr_t end() const { return addr + length; }
  // [addr, end()): never wraps, the front door saw to that.
  Range span() const { return Range::FromLength(addr, length).value_or(Range()); }
  // Serves a request for `r` with `want` (fields stable: hold a reference,
  // or the cache's mutex).
  bool Covers(Range r, AccessFlags want) const {
    return addr <= r.begin() && end() >= r.end() && AccessSatisfies(access, want);
  }

  // Marks the region used, without dirtying its line when it already is.
  void Touch() {
    if (accessed.load(std::memory_order_relaxed) == 0) {
      accessed.store(1, std::memory_order_relaxed);
    }
  }

  // Shared count (signed) from a state word.
  static int64_t SharedRefs(uint64_t s) { return static_cast<int32_t>(s >> 32); }

  // Takes a reference on the shared count unless retired or free.
  bool TryRefShared() {
    uint64_t s = state.load(std::memory_order_relaxed);
    do {
      if (s & kFlags) return false;
    } while (!state.compare_exchange_weak(s, s + kOneRef, std::memory_order_acquire,
                                          std::memory_order_relaxed));
    return true;
  }

  // Drops a shared reference unless the region is dead; false if it was dead
  // (the caller must then release under the cache's mutex).
  bool TryUnrefShared() {
    uint64_t s = state.load(std::memory_order_relaxed);
    do {
      if (s & kDead) return false;
    } while (!state.compare_exchange_weak(s, s - kOneRef, std::memory_order_release,
                                          std::memory_order_relaxed));
    return true;
  }

  // Replaces the flags, keeping the shared count (whose net value carries
  // over across incarnations, like the per-thread counts).
  void SetFlags(uint64_t flags, std::memory_order order) {
    uint64_t s = state.load(std::memory_order_relaxed);
    while (
        !state.compare_exchange_weak(s, (s & ~kFlags) | flags, order, std::memory_order_relaxed)) {
    }
  }
  // Marks a live region (flags 0, under the cache's mutex) dead: one locked
  // OR, no CAS loop. A read-modify-write still, because threads without a
  // table may be changing the shared count (TryRefShared) meanwhile.
  void MarkDead() { state.fetch_or(kDead, std::memory_order_seq_cst); }
  // Claims a dead region that no one holds (its reference sum is 0): a plain
  // store, because from kDead on no compare-and-swap can succeed on the word
  // (TryRefShared wants no flags, TryUnrefShared no kDead) and only a holder
  // would try one.
  void Claim() { SetFlagsOfFree(kDead | kFree, std::memory_order_relaxed); }
  // The same for a region nobody else may write: kFree is set, so no
  // compare-and-swap can succeed on it (a claimed region being recycled, a
  // filled one being published).
  void SetFlagsOfFree(uint64_t flags, std::memory_order order) {
    state.store((state.load(std::memory_order_relaxed) & ~kFlags) | flags, order);
  }
};

static_assert(sizeof(Region) == 64, "a Region is one cache line");

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_CORE_REGION_H_
