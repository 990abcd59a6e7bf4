// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// RangeIndex: finds the cached regions that cover an address.
//
// Two views of the same set of regions:
//
// - A hash table readable without a lock (the hit path). A region of length
//   L is filed at the smallest level whose buckets (2^(12+4*level) bytes) are
//   at least L/8, under every bucket it touches: at most 9 entries, however
//   large the region. A lookup probes, for each level that has regions, the
//   one bucket holding the address. A slot is one 64-bit word: 40 bits of
//   the bucket key's hash and the region's 24-bit pool index, so a probe
//   reads one word and hands out an index from which the caller finds the
//   Region and its per-thread counters at once, with no further dependent
//   load. A reader may see a slot mid-update and get a wrong index, a hash
//   may collide, or it may miss an entry. All harmless: the reader validates
//   a candidate on the Region itself (reference, then coverage), and a miss
//   falls back to the locked path. Tables only grow. An outgrown table
//   stays mapped until the index dies, so a reader never touches freed
//   memory, but a large one gives its pages back (MADV_DONTNEED): a reader
//   still on it reads empty slots, that is, a miss.
//
// - Per-level B-trees keyed by start address (writers, under the cache's
//   mutex): exact covering/overlap queries for misses and Invalidate. A level
//   bounds its regions' length, which bounds how far back a query scans.
//
// Writers (Insert/Remove and the B-tree queries) must be serialised by the
// caller; Probe may run concurrently with them.

#ifndef DMAREG_SRC_CORE_RANGE_INDEX_H_
#define DMAREG_SRC_CORE_RANGE_INDEX_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/container/btree_map.h"
#include "base/aligned_mapping.h"
#include "core/region.h"

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

  RangeIndex();
  ~RangeIndex();
  RangeIndex(const RangeIndex&) = delete;
  RangeIndex& operator=(const RangeIndex&) = delete;

  // --- writers (externally serialised) ---
  void Insert(Region* r);  // sets r->level
  void Remove(Region* r);

  // Calls f(Region*) for each region overlapping `r`.
  template <typename F>
  void ForEachOverlapping(Range r, F&& f) const;
  // The first region holding all of `r` for which pred(region) holds.
  template <typename Pred>
  Region* FindCovering(Range r, Pred&& pred) const;
  // Every indexed region, in address order per level.
  template <typename F>
  void ForEach(F&& f) const;

  size_t size() const { return size_; }
  size_t hash_entries() const { return entries_; }
  // Bytes of index memory (hash tables including outgrown ones, B-tree nodes
  // estimated).
  size_t MemoryBytes() const;

  // --- readers (any thread, no lock) ---
  static constexpr uint32_t kNoIndex = UINT32_MAX;
  // Calls take(index) for the pool indexes of candidates filed under the
  // bucket of `a` at each level in use, until one returns true; returns that
  // index or kNoIndex.
  template <typename Take>
  uint32_t Probe(uintptr_t a, Take&& take) const;

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
    AlignedMapping mapping;        // large tables: their own mmap
    bool dropped = false;
  };

  static uint64_t Key(int level, uintptr_t a) {
    return (uint64_t{static_cast<uint32_t>(level) + 1} << 56) | (a >> Shift(level));
  }
  // The high 40 bits of the key's hash, never zero (bit 24 forced, below
  // every table's home bits).
  static uint64_t Tag(uint64_t key) {
    return ((key * 0x9E3779B97F4A7C15ull) | (kIndexMask + 1)) & ~kIndexMask;
  }
  // A slot word or tag's home slot (tables stay below 2^39 slots).
  static size_t Home(const Table& t, uint64_t tag) {
    return static_cast<size_t>(tag >> (64 - t.bits));
  }
  void HashInsert(Table& t, uint64_t word);
  void HashErase(Table& t, uint64_t word);
  void GrowIfNeeded(size_t more);
  template <typename F>
  static void ForEachKey(const Region* r, F&& f);

  // Keyed by start address alone (a multimap: regions may share a start):
  // an integer compare per step.
  using Tree = absl::btree_multimap<uintptr_t, Region*>;
  Tree trees_[kLevels];
  size_t level_count_[kLevels] = {};
  size_t size_ = 0;
  size_t entries_ = 0;
  std::atomic<uint32_t> level_mask_{0};
  std::atomic<Table*> table_{nullptr};
  std::vector<std::unique_ptr<Table>> tables_;  // current one last
};

// ---- inline implementation -------------------------------------------------

template <typename Take>
inline uint32_t RangeIndex::Probe(uintptr_t a, Take&& take) const {
  uint32_t mask = level_mask_.load(std::memory_order_acquire);
  if (mask == 0) return kNoIndex;
  const Table* t = table_.load(std::memory_order_acquire);
  while (mask != 0) {
    const int level = __builtin_ctz(mask);
    mask &= mask - 1;
    const uint64_t tag = Tag(Key(level, a));
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
void RangeIndex::ForEachOverlapping(Range q, F&& f) const {
  for (int level = 0; level < kLevels; ++level) {
    if (level_count_[level] == 0) continue;
    const uint64_t max = MaxLength(level);
    const uintptr_t from = q.begin() > max ? q.begin() - max : 0;
    for (auto it = trees_[level].lower_bound(from);
         it != trees_[level].end() && it->first < q.end(); ++it) {
      Region* r = it->second;
      if (r->end() > q.begin()) f(r);
    }
  }
}

template <typename Pred>
Region* RangeIndex::FindCovering(Range q, Pred&& pred) const {
  for (int level = 0; level < kLevels; ++level) {
    if (level_count_[level] == 0) continue;
    const uint64_t max = MaxLength(level);
    const uintptr_t from = q.end() > max ? q.end() - max : 0;
    for (auto it = trees_[level].lower_bound(from);
         it != trees_[level].end() && it->first <= q.begin(); ++it) {
      Region* r = it->second;
      if (r->end() >= q.end() && pred(r)) return r;
    }
  }
  return nullptr;
}

template <typename F>
void RangeIndex::ForEach(F&& f) const {
  for (const Tree& tree : trees_) {
    for (const auto& [start, r] : tree) f(r);
  }
}

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_CORE_RANGE_INDEX_H_
