// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "core/range_index.h"

#include <sys/mman.h>

#include <new>

namespace dmareg::internal {

namespace {
constexpr int kMinBits = 6;
constexpr size_t kHugePage = size_t{2} << 20;
}  // namespace

int RangeIndex::LevelFor(uint64_t length) {
  int level = 0;
  while (level < kLevels - 1 && length > MaxLength(level)) ++level;
  return level;
}

RangeIndex::Table::Table(int b) : bits(b), mask((size_t{1} << b) - 1) {
  const size_t bytes = (mask + 1) * sizeof(Slot);
  const bool huge = bytes >= kHugePage;
  void* mem = ::operator new(bytes, std::align_val_t{huge ? kHugePage : alignof(Slot)});
  if (huge) madvise(mem, bytes, MADV_HUGEPAGE);
  slots = static_cast<Slot*>(mem);
  for (size_t i = 0; i <= mask; ++i) new (&slots[i]) Slot();
}

RangeIndex::Table::~Table() {
  const size_t bytes = (mask + 1) * sizeof(Slot);
  for (size_t i = 0; i <= mask; ++i) slots[i].~Slot();
  ::operator delete(slots, std::align_val_t{bytes >= kHugePage ? kHugePage : alignof(Slot)});
}

RangeIndex::RangeIndex() {
  tables_.push_back(std::make_unique<Table>(kMinBits));
  table_.store(tables_.back().get(), std::memory_order_release);
}

RangeIndex::~RangeIndex() = default;

template <typename F>
void RangeIndex::ForEachKey(const Region* r, F&& f) {
  const int s = Shift(r->level);
  const uintptr_t first = r->addr >> s;
  const uintptr_t last = (r->end() - 1) >> s;
  for (uintptr_t bucket = first;; ++bucket) {
    f(Key(r->level, bucket << s));
    if (bucket == last) break;
  }
}

void RangeIndex::HashInsert(Table& t, uint64_t key, Region* r) {
  size_t i = Home(t, key);
  while (t.slots[i].key.load(std::memory_order_relaxed) != 0) i = (i + 1) & t.mask;
  // Region first, then the key that makes the slot visible.
  t.slots[i].region.store(r, std::memory_order_relaxed);
  t.slots[i].key.store(key, std::memory_order_release);
}

// Linear probing with backward-shift deletion: no tombstones. A concurrent
// reader may miss an entry while it moves; it then takes the locked path.
void RangeIndex::HashErase(Table& t, uint64_t key, Region* r) {
  size_t i = Home(t, key);
  for (;;) {
    const uint64_t k = t.slots[i].key.load(std::memory_order_relaxed);
    if (k == 0) return;  // not present (cannot happen for indexed regions)
    if (k == key && t.slots[i].region.load(std::memory_order_relaxed) == r) break;
    i = (i + 1) & t.mask;
  }
  size_t hole = i;
  for (size_t j = (hole + 1) & t.mask;; j = (j + 1) & t.mask) {
    const uint64_t k = t.slots[j].key.load(std::memory_order_relaxed);
    if (k == 0) break;
    const size_t home = Home(t, k);
    // Move j into the hole unless its home lies cyclically in (hole, j].
    const bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
    if (stays) continue;
    t.slots[hole].region.store(t.slots[j].region.load(std::memory_order_relaxed),
                               std::memory_order_relaxed);
    t.slots[hole].key.store(k, std::memory_order_release);
    hole = j;
  }
  t.slots[hole].key.store(0, std::memory_order_release);
  t.slots[hole].region.store(nullptr, std::memory_order_relaxed);
}

void RangeIndex::GrowIfNeeded(size_t more) {
  Table* t = tables_.back().get();
  const size_t want = entries_ + more;
  if (want * 2 <= t->mask + 1) return;  // load factor stays <= 1/2
  int bits = t->bits;
  while ((size_t{1} << bits) < want * 4) ++bits;
  auto next = std::make_unique<Table>(bits);
  for (size_t i = 0; i <= t->mask; ++i) {
    const uint64_t k = t->slots[i].key.load(std::memory_order_relaxed);
    if (k != 0) HashInsert(*next, k, t->slots[i].region.load(std::memory_order_relaxed));
  }
  table_.store(next.get(), std::memory_order_release);
  tables_.push_back(std::move(next));
}

void RangeIndex::Insert(Region* r) {
  r->level = static_cast<uint8_t>(LevelFor(r->length));
  size_t n = 0;
  ForEachKey(r, [&](uint64_t) { ++n; });
  GrowIfNeeded(n);
  Table& t = *tables_.back();
  ForEachKey(r, [&](uint64_t key) { HashInsert(t, key, r); });
  entries_ += n;
  trees_[r->level].insert({r->addr, r});
  if (level_count_[r->level]++ == 0) {
    level_mask_.fetch_or(1u << r->level, std::memory_order_release);
  }
  ++size_;
}

void RangeIndex::Remove(Region* r) {
  Table& t = *tables_.back();
  ForEachKey(r, [&](uint64_t key) {
    HashErase(t, key, r);
    --entries_;
  });
  Tree& tree = trees_[r->level];
  for (auto it = tree.lower_bound(r->addr); it != tree.end() && it->first == r->addr; ++it) {
    if (it->second == r) {
      tree.erase(it);
      break;
    }
  }
  if (--level_count_[r->level] == 0) {
    level_mask_.fetch_and(~(1u << r->level), std::memory_order_release);
  }
  --size_;
}

size_t RangeIndex::MemoryBytes() const {
  size_t bytes = 0;
  for (const auto& t : tables_) bytes += (t->mask + 1) * sizeof(Slot);
  // absl::btree nodes hold up to ~256 bytes of values; count ~1.5x payload.
  bytes += size_ * sizeof(std::pair<uintptr_t, Region*>) * 3 / 2;
  return bytes;
}

}  // namespace dmareg::internal
