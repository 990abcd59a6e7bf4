// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// Region: one cached device mapping, and the lock-free protocol on its state.
//
// Regions live in type-stable memory (RegionPool): a Region object is never
// returned to the allocator while its cache lives, only recycled. That is
// what lets the hit path read a Region pointer out of the lock-free index and
// touch it without a lock: a stale pointer still points at a Region, and the
// state word says whether it may be referenced.
//
// State word (64 bits):
//   bits  0..31  reference count (handles out)
//   bit  32      kAccessed: a hit since the last CLOCK sweep
//   bit  33      kDead: retired (invalidated, evicted, replaced, or a dma-buf
//                pass-through); no new reference may be taken
//   bit  34      kFree: the object is in the pool's free list
// A reference is taken only by CAS from a state with neither kDead nor kFree.
// Whoever observes "kDead and count 0" first (the retirer, if no handle was
// out; else the last releaser) frees the mapping: exactly one party does.

#ifndef DMAREG_SRC_CORE_REGION_H_
#define DMAREG_SRC_CORE_REGION_H_

#include <atomic>
#include <cstdint>

#include "dmareg/domain.h"
#include "dmareg/registration.h"

namespace dmareg::internal {

class CacheCore;

inline constexpr uint64_t kCountMask = 0xffffffffull;
inline constexpr uint64_t kAccessed = 1ull << 32;
inline constexpr uint64_t kDead = 1ull << 33;
inline constexpr uint64_t kFree = 1ull << 34;

struct alignas(64) Region : RegistrationInfo {
  std::atomic<uint64_t> state{kFree};
  CacheCore* cache = nullptr;
  DeviceMapping mapping;  // what the domain returned; handed back on free

  // Below: owned by the cache's mutex (writers only; the hit path never
  // reads them).
  Region* lru_prev = nullptr;  // CLOCK ring of indexed regions
  Region* lru_next = nullptr;
  Region* free_next = nullptr;  // pool free list
  uint8_t level = 0;            // RangeIndex level
  bool indexed = false;         // in the RangeIndex and the CLOCK ring

  uintptr_t end() const { return addr + length; }

  // Hit path: take a reference unless retired. Marks the region accessed.
  bool TryRef() {
    uint64_t s = state.load(std::memory_order_relaxed);
    do {
      if (s & (kDead | kFree)) return false;
    } while (!state.compare_exchange_weak(s, (s + 1) | kAccessed,
                                          std::memory_order_acquire,
                                          std::memory_order_relaxed));
    return true;
  }

  // Drops a reference; true if the caller must free the region (it was the
  // last reference of a dead region).
  bool Unref() {
    const uint64_t old = state.fetch_sub(1, std::memory_order_acq_rel);
    return (old & kCountMask) == 1 && (old & kDead);
  }

  // Retires the region (no new references); true if the caller must free it
  // (no reference was out). Idempotent: false if already dead.
  bool MarkDead() {
    const uint64_t old = state.fetch_or(kDead, std::memory_order_acq_rel);
    return !(old & kDead) && (old & kCountMask) == 0;
  }

  // Eviction: retire only if unreferenced and not used since the last sweep;
  // clears kAccessed otherwise (second chance). True if retired.
  bool TryEvict() {
    uint64_t s = state.load(std::memory_order_relaxed);
    for (;;) {
      if ((s & kCountMask) != 0 || (s & (kDead | kFree))) return false;
      const uint64_t next = (s & kAccessed) ? (s & ~kAccessed) : (s | kDead);
      if (state.compare_exchange_weak(s, next, std::memory_order_acq_rel,
                                      std::memory_order_relaxed)) {
        return (next & kDead) != 0;
      }
    }
  }

  uint32_t refs() const {
    return static_cast<uint32_t>(state.load(std::memory_order_relaxed) & kCountMask);
  }
};

static_assert(sizeof(Region) <= 128, "a Region should stay within two cache lines");

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_CORE_REGION_H_
