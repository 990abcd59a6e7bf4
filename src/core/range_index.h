// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// RangeIndex: finds the cached regions that cover an address of a space
// (host memory, or one dma-buf's offsets): one hash table, read without a
// lock by hits and walked under the cache's mutex by misses and
// invalidations. There is no second structure: a region costs the index its
// slots and nothing else.
//
// A region of length L is filed at the smallest level whose buckets
// (2^(12+4*level) bytes) are at least L/8, under every bucket it touches: at
// most 9 entries, however large the region. The key of a bucket is (level,
// space, bucket number); a slot is one 64-bit word, 40 bits of the key's hash
// and the region's 24-bit pool index, so a probe reads one word and hands out
// an index from which the caller finds the Region and its per-thread
// counters at once, with no further dependent load.
//
// Readers (Probe) may see a slot mid-update and get a wrong index, a hash
// may collide (within a space or across spaces), or they may miss an entry.
// All harmless: the reader validates a candidate on the Region itself
// (reference, then space and coverage), and a miss falls back to the locked
// path. Tables only grow. An outgrown table stays mapped until the index
// dies, so a reader never touches freed memory, but gives its pages back
// (MADV_DONTNEED): a reader still on it reads empty slots, that is, a miss.
//
// Writers (Insert, Remove, and the queries below, all under the cache's
// mutex) see the table exactly. A query walks, for each level in use, the
// buckets the queried range touches; a range with more buckets at a level
// than that level has regions is answered by a scan of the pool instead, so
// an invalidation of a huge range costs at most one pass over the regions.

#ifndef DMAREG_SRC_CORE_RANGE_INDEX_H_
#define DMAREG_SRC_CORE_RANGE_INDEX_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

#include "base/aligned_mapping.h"
#include "core/region.h"
#include "core/region_pool.h"
#include "dmareg/dmabuf_id.h"

namespace dmareg::internal {

class RangeIndex {
 public:
  static constexpr int kLevels = 9;
  static constexpr int Shift(int level) { return 12 + 4 * level; }
  // Longest region filed at `level` (the last level takes everything).
  static constexpr uint64_t MaxLength(int level) {
    return level == kLevels - 1 ? UINT64_MAX : uint64_t{8} << Shift(level);
  }
  static int LevelFor(uint64_t length);

  // The space of host memory, and of a dma-buf (never 0; equal for one
  // buffer, rarely equal for two: candidates are validated on the Region).
  static constexpr uint64_t kHostSpace = 0;
  static uint64_t SpaceOf(const DmaBufId& id) {
    return ((id.dev * 0x9E3779B97F4A7C15ull) ^ (id.ino * 0xC2B2AE3D27D4EB4Full)) | 1;
  }

  // Regions are `pool`'s (its base() + index).
  explicit RangeIndex(const RegionPool* pool);
  ~RangeIndex();
  RangeIndex(const RangeIndex&) = delete;
  RangeIndex& operator=(const RangeIndex&) = delete;

  // --- writers (externally serialised) ---
  // Files `r` under `space` (sets r->level and r->indexed).
  void Insert(Region* r, uint64_t space);
  void Remove(Region* r, uint64_t space);

  // Calls f(Region*) once for each region of `space` whose span overlaps
  // `q` and for which is(region) says it is of that space. An f that
  // returns bool stops the walk by returning true; so does this, then.
  template <typename Is, typename F>
  bool ForEachOverlapping(uint64_t space, const Range& q, Is&& is, F&& f) const;
  // The first region of `space` holding all of `q` for which pred(region)
  // holds (pred also tells the space apart).
  template <typename Pred>
  Region* FindCovering(uint64_t space, const Range& q, Pred&& pred) const;

  size_t size() const { return size_; }
  size_t hash_entries() const { return entries_; }
  // Bytes of index memory (the tables not yet given back).
  size_t MemoryBytes() const;

  // --- readers (any thread, no lock) ---
  static constexpr uint32_t kNoIndex = UINT32_MAX;
  // Calls take(index) for the pool indexes of candidates filed under the
  // bucket of `a` in `space` at each level in use, until one returns true;
  // returns that index or kNoIndex.
  // Always inlined: the hit path then keeps `take`'s captures in registers.
  template <typename Take>
  [[gnu::always_inline]] uint32_t Probe(uint64_t space, uintptr_t a, Take&& take) const;

 private:
  static constexpr int kIndexBits = 24;
  static constexpr uint64_t kIndexMask = (uint64_t{1} << kIndexBits) - 1;
  struct Table {
    explicit Table(int bits);
    ~Table();
    Table(const Table&) = delete;
    Table& operator=(const Table&) = delete;
    size_t bytes() const { return (mask + 1) * sizeof(uint64_t); }
    // Gives the slots' memory back; they then read as empty.
    void Drop();
    int bits;
    size_t mask;
    std::atomic<uint64_t>* slots;  // 0: empty; else Tag(key) | index
    AlignedMapping mapping;        // tables past a few pages: their own mmap
    bool dropped = false;
  };

  // The high 40 bits of the key's hash, never zero (bit 24 forced, below
  // every table's home bits). For the host space this is the hash of
  // ((level + 1) << 56 | bucket).
  static uint64_t Tag(int level, uint64_t space, uintptr_t bucket) {
    const uint64_t key = ((uint64_t{static_cast<uint32_t>(level)} + 1) << 56 | bucket) ^ space;
    return ((key * 0x9E3779B97F4A7C15ull) | (kIndexMask + 1)) & ~kIndexMask;
  }
  // A slot word or tag's home slot (tables stay below 2^39 slots).
  static size_t Home(const Table& t, uint64_t tag) {
    return static_cast<size_t>(tag >> (64 - t.bits));
  }
  void HashInsert(Table& t, uint64_t word);
  void HashErase(Table& t, uint64_t word);
  void GrowIfNeeded(size_t more);
  // Calls f(index) for each entry filed under `tag` (writers).
  template <typename F>
  void ForEachUnder(uint64_t tag, F&& f) const;

  const RegionPool* const pool_;
  size_t level_count_[kLevels] = {};
  size_t size_ = 0;
  size_t entries_ = 0;
  std::atomic<uint32_t> level_mask_{0};
  std::atomic<Table*> table_{nullptr};
  std::vector<std::unique_ptr<Table>> tables_;  // current one last
};

// ---- inline implementation -------------------------------------------------

template <typename Take>
[[gnu::always_inline]] inline uint32_t RangeIndex::Probe(uint64_t space, uintptr_t a,
                                                         Take&& take) const {
  uint32_t mask = level_mask_.load(std::memory_order_acquire);
  if (mask == 0) return kNoIndex;
  const Table* t = table_.load(std::memory_order_acquire);
  while (mask != 0) {
    const int level = __builtin_ctz(mask);
    mask &= mask - 1;
    const uint64_t tag = Tag(level, space, a >> Shift(level));
    size_t i = Home(*t, tag);
    for (size_t n = 0; n <= t->mask; ++n, i = (i + 1) & t->mask) {
      // acquire: the Region's fields were written before its index was filed.
      const uint64_t w = t->slots[i].load(std::memory_order_acquire);
      if (w == 0) break;
      if ((w & ~kIndexMask) != tag) continue;
      const auto index = static_cast<uint32_t>(w & kIndexMask);
      if (take(index)) return index;
    }
  }
  return kNoIndex;
}

template <typename F>
void RangeIndex::ForEachUnder(uint64_t tag, F&& f) const {
  const Table& t = *tables_.back();
  size_t i = Home(t, tag);
  for (size_t n = 0; n <= t.mask; ++n, i = (i + 1) & t.mask) {
    const uint64_t w = t.slots[i].load(std::memory_order_relaxed);
    if (w == 0) return;
    if ((w & ~kIndexMask) == tag) f(static_cast<uint32_t>(w & kIndexMask));
  }
}

template <typename Is, typename F>
bool RangeIndex::ForEachOverlapping(uint64_t space, const Range& q, Is&& is, F&& f) const {
  if (q.empty()) return false;
  // f's answer: stop, or (for an f returning nothing) go on.
  auto call = [&](Region* r) -> bool {
    if constexpr (std::is_same_v<decltype(f(r)), bool>) {
      return f(r);
    } else {
      f(r);
      return false;
    }
  };
  Region* const base = pool_->base();
  uint32_t scan = 0;  // levels answered by a pass over the pool
  for (uint32_t mask = level_mask_.load(std::memory_order_relaxed); mask != 0; mask &= mask - 1) {
    const int level = __builtin_ctz(mask);
    const int s = Shift(level);
    const uintptr_t first = q.begin() >> s;
    const uintptr_t last = (q.end() - 1) >> s;
    if (last - first >= level_count_[level]) {
      // More buckets than regions: one pass over the pool is cheaper.
      scan |= 1u << level;
      continue;
    }
    for (uintptr_t b = first;; ++b) {
      bool stop = false;
      ForEachUnder(Tag(level, space, b), [&](uint32_t i) {
        Region* r = base + i;
        // Filed under every bucket it touches: reported from the first
        // bucket it shares with `q`.
        if (stop || r->level != level || !r->indexed || !is(r) || !r->span().Overlaps(q)) return;
        const uintptr_t own = r->addr >> s;
        if (b == (own > first ? own : first)) stop = call(r);
      });
      if (stop) return true;
      if (b == last) break;
    }
  }
  if (scan == 0) return false;
  for (size_t i = 1; i < pool_->capacity(); ++i) {
    Region* r = base + i;
    if (r->indexed && (scan & (1u << r->level)) && is(r) && r->span().Overlaps(q) && call(r)) {
      return true;
    }
  }
  return false;
}

template <typename Pred>
Region* RangeIndex::FindCovering(uint64_t space, const Range& q, Pred&& pred) const {
  Region* const base = pool_->base();
  for (uint32_t mask = level_mask_.load(std::memory_order_relaxed); mask != 0; mask &= mask - 1) {
    const int level = __builtin_ctz(mask);
    Region* found = nullptr;
    ForEachUnder(Tag(level, space, q.begin() >> Shift(level)), [&](uint32_t i) {
      Region* r = base + i;
      if (found == nullptr && r->indexed && r->level == level && r->addr <= q.begin() &&
          r->end() >= q.end() && pred(r)) {
        found = r;
      }
    });
    if (found != nullptr) return found;
  }
  return nullptr;
}

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_CORE_RANGE_INDEX_H_
