// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "core/range_index.h"

#include <sys/mman.h>

#include <cstdint>
#include <new>

namespace dmareg::internal {

namespace {
constexpr int kMinBits = 6;
// Tables from this size on are mappings of their own, given back when
// outgrown; smaller ones (the first few, a page or so) stay on the heap.
constexpr size_t kOwnMappingBytes = 64 << 10;
}  // namespace

int RangeIndex::LevelFor(uint64_t length) {
  int level = 0;
  while (level < kLevels - 1 && length > MaxLength(level)) ++level;
  return level;
}

RangeIndex::Table::Table(int b) : bits(b), mask((size_t{1} << b) - 1) {
  void* mem = nullptr;
  if (bytes() >= kOwnMappingBytes) {
    // Its own mapping (huge-page aligned when large: lookups land at
    // random), so that an outgrown table can give its pages back without
    // being unmapped.
    if (!mapping.Map(bytes(), PROT_READ | PROT_WRITE, bytes() >= kHugePage ? kHugePage : 4096)) {
      throw std::bad_alloc();
    }
    mem = mapping.data();
    if (bytes() >= kHugePage) madvise(mem, bytes(), MADV_HUGEPAGE);
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

RangeIndex::RangeIndex(const RegionPool* pool) : pool_(pool) {
  tables_.push_back(std::make_unique<Table>(kMinBits));
  table_.store(tables_.back().get(), std::memory_order_release);
}

RangeIndex::~RangeIndex() = default;

namespace {
// Calls f(bucket) for each bucket of `level` the region touches.
template <typename F>
void ForEachBucket(const Region* r, F&& f) {
  const int s = RangeIndex::Shift(r->level);
  const uintptr_t first = r->addr >> s;
  const uintptr_t last = (r->end() - 1) >> s;
  for (uintptr_t bucket = first;; ++bucket) {
    f(bucket);
    if (bucket == last) break;
  }
}
}  // namespace
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

void RangeIndex::Insert(Region* r, uint64_t space) {
  r->level = static_cast<uint8_t>(LevelFor(r->length));
  const int s = Shift(r->level);
  const size_t n = ((r->end() - 1) >> s) - (r->addr >> s) + 1;  // <= 9
  Table* t = table_.load(std::memory_order_relaxed);
  if ((entries_ + n) * 2 > t->mask + 1) [[unlikely]] {
    GrowIfNeeded(n);
    t = tables_.back().get();
  }
  ForEachBucket(r, [&](uintptr_t b) { HashInsert(*t, Tag(r->level, space, b) | r->index); });
  entries_ += n;
  r->indexed = true;
  if (level_count_[r->level]++ == 0) {
    level_mask_.fetch_or(1u << r->level, std::memory_order_release);
  }
  ++size_;
}

void RangeIndex::Remove(Region* r, uint64_t space) {
  Table& t = *tables_.back();
  ForEachBucket(r, [&](uintptr_t b) {
    HashErase(t, Tag(r->level, space, b) | r->index);
    --entries_;
  });
  r->indexed = false;
  if (--level_count_[r->level] == 0) {
    level_mask_.fetch_and(~(1u << r->level), std::memory_order_release);
  }
  --size_;
}

size_t RangeIndex::MemoryBytes() const {
  size_t bytes = 0;
  for (const auto& t : tables_) bytes += t->dropped ? 0 : t->bytes();
  return bytes;
}

}  // namespace dmareg::internal
