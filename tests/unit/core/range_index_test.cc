// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "core/range_index.h"

#include <algorithm>
#include <random>
#include <set>
#include <vector>

#include "core/region_pool.h"
#include "gtest/gtest.h"

namespace dmareg::internal {
namespace {

class RangeIndexTest : public ::testing::Test {
 protected:
  Region* Make(uintptr_t addr, size_t length) {
    Region* r = pool_.Allocate();
    r->addr = addr;
    r->length = length;
    r->state.store(0, std::memory_order_release);
    return r;
  }
  // The candidates Probe offers for `a` that contain it. (Probe offers
  // every region filed under a's bucket; the caller validates.)
  std::set<Region*> Candidates(uintptr_t a, uint64_t space = RangeIndex::kHostSpace) {
    std::set<Region*> out;
    index_.Probe(space, a, [&](uint32_t i) {
      Region* r = pool_.At(i);
      const int s = RangeIndex::Shift(r->level);
      EXPECT_TRUE((r->addr >> s) <= (a >> s) && (a >> s) <= ((r->end() - 1) >> s))
          << "offered a region not filed under a's bucket";
      if (r->addr <= a && a < r->end()) out.insert(r);
      return false;
    });
    return out;
  }
  std::set<Region*> Overlapping(Range q, uint64_t space = RangeIndex::kHostSpace) {
    std::set<Region*> out;
    index_.ForEachOverlapping(
        space, q, [](const Region*) { return true; },
        [&](Region* r) { EXPECT_TRUE(out.insert(r).second) << "reported twice"; });
    return out;
  }
  int owner_ = 0;
  RegionPool pool_{&owner_};
  RangeIndex index_{&pool_};
};

TEST_F(RangeIndexTest, LevelsBoundEntriesPerRegion) {
  EXPECT_EQ(RangeIndex::LevelFor(4096), 0);
  EXPECT_EQ(RangeIndex::LevelFor(32 << 10), 0);
  EXPECT_EQ(RangeIndex::LevelFor((32 << 10) + 4096), 1);
  EXPECT_EQ(RangeIndex::LevelFor(uint64_t{1} << 30), 4);
  EXPECT_EQ(RangeIndex::LevelFor(UINT64_MAX), RangeIndex::kLevels - 1);
  // A 1 GiB region costs a handful of hash entries, not 262144.
  Region* big = Make(uintptr_t{1} << 40, uintptr_t{1} << 30);
  index_.Insert(big, RangeIndex::kHostSpace);
  EXPECT_LE(index_.hash_entries(), 9u);
  EXPECT_EQ(Candidates((uintptr_t{1} << 40) + 12345), std::set<Region*>{big});
  EXPECT_TRUE(Candidates((uintptr_t{1} << 40) - 1).empty());
}

TEST_F(RangeIndexTest, ProbeFindsEveryRegionContainingTheAddress) {
  Region* a = Make(0x100000, 0x2000);
  Region* b = Make(0x101000, 0x100000);  // overlaps a, other level
  index_.Insert(a, RangeIndex::kHostSpace);
  index_.Insert(b, RangeIndex::kHostSpace);
  EXPECT_EQ(Candidates(0x101800), (std::set<Region*>{a, b}));
  EXPECT_EQ(Candidates(0x100000), std::set<Region*>{a});
  index_.Remove(a, RangeIndex::kHostSpace);
  EXPECT_EQ(Candidates(0x101800), std::set<Region*>{b});
  index_.Remove(b, RangeIndex::kHostSpace);
  EXPECT_TRUE(Candidates(0x101800).empty());
  EXPECT_EQ(index_.size(), 0u);
  EXPECT_EQ(index_.hash_entries(), 0u);
}

// Randomised against brute force: inserts, removes, and every query kind.
TEST_F(RangeIndexTest, MatchesBruteForce) {
  std::mt19937_64 rng(42);
  std::vector<Region*> live;
  auto rand_len = [&] {
    static const size_t kLens[] = {4096, 8192, 65536, 1 << 20, 3 << 20, 1 << 26};
    return kLens[rng() % 6] + (rng() % 4) * 4096;
  };
  for (int step = 0; step < 20000; ++step) {
    if (live.empty() || rng() % 3 != 0) {
      Region* r = Make((rng() % (1 << 16)) * 4096, rand_len());
      index_.Insert(r, RangeIndex::kHostSpace);
      live.push_back(r);
    } else {
      const size_t i = rng() % live.size();
      index_.Remove(live[i], RangeIndex::kHostSpace);
      pool_.Free(live[i]);
      live[i] = live.back();
      live.pop_back();
    }
    if (step % 16 != 0) continue;
    const uintptr_t a = (rng() % (1 << 16)) * 4096 + rng() % 4096;
    // Mostly short ranges (bucket walks); now and then one past the number
    // of regions a level has (the scan).
    const uintptr_t b = a + 1 + (step % 64 == 0 ? rng() % (uint64_t{1} << 30) : rng() % (1 << 22));
    std::set<Region*> want_probe, want_overlap, got_overlap;
    for (Region* r : live) {
      if (r->addr <= a && a < r->end()) want_probe.insert(r);
      if (r->addr < b && a < r->end()) want_overlap.insert(r);
    }
    ASSERT_EQ(Candidates(a), want_probe) << "step " << step;
    got_overlap = Overlapping(*Range::FromBounds(a, b));
    ASSERT_EQ(got_overlap, want_overlap) << "step " << step;
    Region* cover = index_.FindCovering(RangeIndex::kHostSpace, *Range::FromBounds(a, b),
                                        [](Region*) { return true; });
    const bool any = std::any_of(live.begin(), live.end(),
                                 [&](Region* r) { return r->addr <= a && r->end() >= b; });
    ASSERT_EQ(cover != nullptr, any) << "step " << step;
    if (cover) {
      ASSERT_TRUE(cover->addr <= a && cover->end() >= b);
    }
  }
  EXPECT_EQ(index_.size(), live.size());
  for (Region* r : live) index_.Remove(r, RangeIndex::kHostSpace);
  EXPECT_EQ(index_.hash_entries(), 0u);
}

// A dma-buf's offsets are a space of their own: a region filed there is no
// candidate for a host address, nor for another buffer's offsets.
TEST_F(RangeIndexTest, SpacesAreApart) {
  const uint64_t buf1 = RangeIndex::SpaceOf(DmaBufId{.dev = 14, .ino = 1});
  const uint64_t buf2 = RangeIndex::SpaceOf(DmaBufId{.dev = 14, .ino = 2});
  ASSERT_NE(buf1, RangeIndex::kHostSpace);
  ASSERT_NE(buf1, buf2);
  Region* host = Make(0x200000, 0x4000);
  Region* dma = Make(0x200000, 0x4000);
  index_.Insert(host, RangeIndex::kHostSpace);
  index_.Insert(dma, buf1);
  EXPECT_EQ(Candidates(0x201000), std::set<Region*>{host});
  EXPECT_EQ(Candidates(0x201000, buf1), std::set<Region*>{dma});
  EXPECT_TRUE(Candidates(0x201000, buf2).empty());
  EXPECT_EQ(Overlapping(*Range::FromBounds(0x1ff000, 0x201000), buf1), std::set<Region*>{dma});
  EXPECT_EQ(index_.FindCovering(buf1, *Range::FromBounds(0x200000, 0x204000),
                                [](Region*) { return true; }),
            dma);
  EXPECT_EQ(index_.FindCovering(buf2, *Range::FromBounds(0x200000, 0x204000),
                                [](Region*) { return true; }),
            nullptr);
  index_.Remove(dma, buf1);
  index_.Remove(host, RangeIndex::kHostSpace);
  EXPECT_EQ(index_.hash_entries(), 0u);
}

// The regions' owner is found from a Region's address alone.
TEST(RegionPoolTest, OwnerOfEveryRegion) {
  int owner = 0;
  RegionPool pool(&owner);
  for (int i = 0; i < 3000; ++i) {
    Region* r = pool.Allocate();
    ASSERT_NE(r, nullptr);
    ASSERT_EQ(RegionPool::OwnerOf(r), &owner);
  }
}

// Past 64 KiB a table is its own mapping; growing gives the outgrown one's
// pages back, and lookups still find every region.
TEST_F(RangeIndexTest, LargeTablesGrowAndDropTheOldOne) {
  constexpr size_t kCount = 150000;  // > 2^18 slots at load 1/4
  std::vector<Region*> regions;
  for (size_t i = 0; i < kCount; ++i) {
    regions.push_back(Make((uintptr_t{1} << 32) + i * 8192, 4096));
    index_.Insert(regions.back(), RangeIndex::kHostSpace);
  }
  EXPECT_EQ(index_.hash_entries(), kCount);
  // Live table only (load between 1/4 and 1/2: 8-byte slots), the outgrown
  // ones dropped (but the first, heap-held ones of a few KiB).
  EXPECT_LE(index_.MemoryBytes(), kCount * 4 * 8 + (64 << 10));
  for (size_t i = 0; i < kCount; i += 997) {
    EXPECT_EQ(Candidates(regions[i]->addr + 100), std::set<Region*>{regions[i]}) << i;
    EXPECT_TRUE(Candidates(regions[i]->addr + 4096).empty()) << i;
  }
  for (Region* r : regions) index_.Remove(r, RangeIndex::kHostSpace);
  EXPECT_EQ(index_.hash_entries(), 0u);
}

TEST(RegionPoolTest, IndexesAreDenseAndAddressable) {
  int owner = 0;
  RegionPool pool(&owner);
  std::vector<Region*> got;
  for (int i = 0; i < 1000; ++i) got.push_back(pool.Allocate());
  std::set<uint32_t> indexes;
  for (Region* r : got) {
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(pool.At(r->index), r);
    EXPECT_EQ(r->state.load(), kFree);
    indexes.insert(r->index);
  }
  EXPECT_EQ(indexes.size(), 1000u);
  EXPECT_LT(*indexes.rbegin(), pool.capacity());
  // A freed Region is reused before the pool grows.
  const size_t capacity = pool.capacity();
  Region* r = got.back();
  r->state.store(kDead);
  pool.Free(r);
  EXPECT_EQ(pool.Allocate(), r);
  EXPECT_EQ(pool.capacity(), capacity);
}

TEST(RegionPoolTest, FullPoolReturnsNull) {
  int owner = 0;
  RegionPool pool(&owner, 100);
  ASSERT_EQ(pool.max_regions(), 100u);
  std::vector<Region*> got;
  while (Region* r = pool.Allocate()) got.push_back(r);
  EXPECT_EQ(got.size(), 100u);
  EXPECT_EQ(pool.Allocate(), nullptr);
  got.back()->state.store(kDead);
  pool.Free(got.back());
  EXPECT_EQ(pool.Allocate(), got.back());
}

}  // namespace
}  // namespace dmareg::internal
