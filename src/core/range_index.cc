// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "core/range_index.h"

#include <sys/mman.h>

#include <cstdint>
#include <new>

namespace dmareg::internal {

namespace {
constexpr int kMinBits = 6;
}  // namespace

int RangeIndex::LevelFor(uint64_t length) {
  int level = 0;
  while (level < kLevels - 1 && length > MaxLength(level)) ++level;
  return level;
}

RangeIndex::Table::Table(int b) : bits(b), mask((size_t{1} << b) - 1) {
  void* mem = nullptr;
  if (bytes() >= kHugePage) {
    // Its own mapping, huge-page aligned: lookups land at random, and an
    // outgrown table can give its pages back without being unmapped.
    if (!mapping.Map(bytes(), PROT_READ | PROT_WRITE)) throw std::bad_alloc();
    mem = mapping.data();
    madvise(mem, bytes(), MADV_HUGEPAGE);
  } else {
    mem = ::operator new(bytes());
  }
  slots = static_cast<std::atomic<uint64_t>*>(mem);
  for (size_t i = 0; i <= mask; ++i) new (&slots[i]) std::atomic<uint64_t>(0);
}

RangeIndex::Table::~Table() {
  if (mapping.data() == nullptr) ::operator delete(slots);
}

void RangeIndex::Table::Drop() {
  // Anonymous private pages read as zero (empty slots) once dropped.
  if (mapping.data() != nullptr && !dropped) {
    madvise(slots, bytes(), MADV_DONTNEED);
    dropped = true;
  }
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

void RangeIndex::HashInsert(Table& t, uint64_t word) {
  size_t i = Home(t, word);
  while (t.slots[i].load(std::memory_order_relaxed) != 0) i = (i + 1) & t.mask;
  // release: a reader that sees the index sees the Region it names filled.
  t.slots[i].store(word, std::memory_order_release);
}

// Linear probing with backward-shift deletion: no tombstones. A concurrent
// reader may miss an entry while it moves; it then takes the locked path.
void RangeIndex::HashErase(Table& t, uint64_t word) {
  size_t i = Home(t, word);
  for (;;) {
    const uint64_t w = t.slots[i].load(std::memory_order_relaxed);
    if (w == 0) return;  // not present (cannot happen for indexed regions)
    if (w == word) break;
    i = (i + 1) & t.mask;
  }
  size_t hole = i;
  for (size_t j = (hole + 1) & t.mask;; j = (j + 1) & t.mask) {
    const uint64_t w = t.slots[j].load(std::memory_order_relaxed);
    if (w == 0) break;
    const size_t home = Home(t, w);
    // Move j into the hole unless its home lies cyclically in (hole, j].
    const bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
    if (stays) continue;
    t.slots[hole].store(w, std::memory_order_release);
    hole = j;
  }
  t.slots[hole].store(0, std::memory_order_release);
}

void RangeIndex::GrowIfNeeded(size_t more) {
  Table* t = tables_.back().get();
  const size_t want = entries_ + more;
  if (want * 2 <= t->mask + 1) return;  // load factor stays <= 1/2
  // At least double, so the load after growing is about 1/4.
  int bits = t->bits + 1;
  while ((size_t{1} << bits) < want * 2) ++bits;
  auto next = std::make_unique<Table>(bits);
  for (size_t i = 0; i <= t->mask; ++i) {
    const uint64_t w = t->slots[i].load(std::memory_order_relaxed);
    if (w != 0) HashInsert(*next, w);
  }
  table_.store(next.get(), std::memory_order_release);
  t->Drop();
  tables_.push_back(std::move(next));
}

void RangeIndex::Insert(Region* r) {
  r->level = static_cast<uint8_t>(LevelFor(r->length));
  size_t n = 0;
  ForEachKey(r, [&](uint64_t) { ++n; });
  GrowIfNeeded(n);
  Table& t = *tables_.back();
  ForEachKey(r, [&](uint64_t key) { HashInsert(t, Tag(key) | r->index); });
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
    HashErase(t, Tag(key) | r->index);
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
  for (const auto& t : tables_) bytes += t->dropped ? 0 : t->bytes();
  // absl::btree nodes hold up to ~256 bytes of values; count ~1.5x payload.
  bytes += size_ * sizeof(std::pair<uintptr_t, Region*>) * 3 / 2;
  return bytes;
}

}  // namespace dmareg::internal
