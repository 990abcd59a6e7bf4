// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "vfio/iova_allocator.h"

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dmareg::internal {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr uint64_t kPage = 0x1000;
constexpr uint64_t k2M = uint64_t{2} << 20;
constexpr uint64_t k1G = uint64_t{1} << 30;
// qemu's virtual Intel IOMMU: IOVAs 0x0-0xfedfffff and 0xfef00000-0x7fffffffff
// (inclusive), the MSI window between them.
constexpr uint64_t kMsiBegin = 0xfee00000;
constexpr uint64_t kMsiEnd = 0xfef00000;
constexpr uint64_t kVfioTop = 0x8000000000;
constexpr uint64_t kVfioPageSizes = 0x40201000;  // 4 KiB | 2 MiB | 1 GiB

Range R(uint64_t begin, uint64_t end) { return *Range::FromBounds(begin, end); }

IovaAllocator::Options VfioOptions() {
  IovaAllocator::Options o;
  o.ranges = {R(0, kMsiBegin), R(kMsiEnd, kVfioTop)};
  o.page_size = kVfioPageSizes & -kVfioPageSizes;  // the smallest page
  return o;
}

std::unique_ptr<IovaAllocator> MakeOrDie(IovaAllocator::Options o) {
  absl::StatusOr<std::unique_ptr<IovaAllocator>> a = IovaAllocator::Create(std::move(o));
  EXPECT_TRUE(a.ok()) << a.status();
  return a.ok() ? *std::move(a) : nullptr;
}

// One page-granular space [0x1000, 0x1000 + pages * kPage).
std::unique_ptr<IovaAllocator> MakePages(uint64_t pages) {
  IovaAllocator::Options o;
  o.ranges = {R(kPage, kPage + pages * kPage)};
  return MakeOrDie(o);
}

// Everything a failed call must leave as it was.
struct Snapshot {
  std::vector<Range> free;
  uint64_t free_bytes, allocated_bytes;
  size_t allocations;
  bool operator==(const Snapshot&) const = default;
};
Snapshot Snap(const IovaAllocator& a) {
  return {a.FreeExtents(), a.free_bytes(), a.allocated_bytes(), a.allocations()};
}

// --- Create: the usable space ---

TEST(IovaAllocatorCreateTest, TheWholeSpaceLessTheFirstAndLastPages) {
  auto a = MakeOrDie({});
  ASSERT_TRUE(a);
  EXPECT_THAT(a->usable(), ElementsAre(R(kPage, ~(kPage - 1))));
  EXPECT_EQ(a->free_bytes(), ~(kPage - 1) - kPage);
  EXPECT_EQ(a->allocated_bytes(), 0u);
  EXPECT_EQ(a->allocations(), 0u);
  EXPECT_THAT(a->FreeExtents(), ElementsAre(R(kPage, ~(kPage - 1))));
}

TEST(IovaAllocatorCreateTest, VfioRangesKeepTheMsiWindowOut) {
  auto a = MakeOrDie(VfioOptions());
  ASSERT_TRUE(a);
  EXPECT_EQ(a->page_size(), kPage);
  EXPECT_THAT(a->usable(), ElementsAre(R(kPage, kMsiBegin), R(kMsiEnd, kVfioTop)));
  EXPECT_THAT(a->FreeExtents(), ElementsAre(R(kPage, kMsiBegin), R(kMsiEnd, kVfioTop)));
  EXPECT_FALSE(a->Usable(R(kMsiBegin, kMsiBegin + 1)));
  EXPECT_FALSE(a->Usable(R(kMsiBegin - kPage, kMsiBegin + kPage)));  // straddles
  EXPECT_FALSE(a->Usable(R(kMsiBegin - kPage, kMsiEnd + kPage)));    // spans it
  EXPECT_TRUE(a->Usable(R(kMsiBegin - 1, kMsiBegin)));
  EXPECT_TRUE(a->Usable(R(kMsiEnd, kMsiEnd + 1)));
  EXPECT_FALSE(a->Usable(R(kVfioTop - kPage, kVfioTop + 1)));
  EXPECT_FALSE(a->Usable(R(0x2000, 0x2000)));  // empty
}

TEST(IovaAllocatorCreateTest, MergesSortsAndTrimsInwardToPages) {
  IovaAllocator::Options o;
  o.ranges = {R(0x5800, 0x9000), R(0x20000, 0x20fff), R(0x1234, 0x5800),
              R(0x3000, 0x4000), R(0x30000, 0x30000), R(0x40001, 0x43000)};
  auto a = MakeOrDie(o);
  ASSERT_TRUE(a);
  // [0x1234, 0x9000) as one (the seam at 0x5800 loses nothing); a range
  // holding no whole page is dropped; one starting mid-page loses that page.
  EXPECT_THAT(a->usable(), ElementsAre(R(0x2000, 0x9000), R(0x41000, 0x43000)));
  // Touching device ranges become one extent.
  o.ranges = {R(0x10000, 0x20000), R(0x20000, 0x30000)};
  a = MakeOrDie(o);
  ASSERT_TRUE(a);
  EXPECT_THAT(a->usable(), ElementsAre(R(0x10000, 0x30000)));
}

TEST(IovaAllocatorCreateTest, ClipsToTheAddressMask) {
  IovaAllocator::Options o = VfioOptions();
  o.address_bits = 28;  // the edu device
  auto a = MakeOrDie(o);
  ASSERT_TRUE(a);
  EXPECT_THAT(a->usable(), ElementsAre(R(kPage, 0x10000000)));
  o.address_bits = 39;  // exactly the VFIO top
  a = MakeOrDie(o);
  ASSERT_TRUE(a);
  EXPECT_THAT(a->usable(), ElementsAre(R(kPage, kMsiBegin), R(kMsiEnd, kVfioTop)));
  o.address_bits = 32;  // the MSI window is below 4 GiB
  a = MakeOrDie(o);
  ASSERT_TRUE(a);
  EXPECT_THAT(a->usable(), ElementsAre(R(kPage, kMsiBegin), R(kMsiEnd, uint64_t{1} << 32)));
}

TEST(IovaAllocatorCreateTest, LargerPagesTrimMoreAndDropALargerFirstPage) {
  IovaAllocator::Options o = VfioOptions();
  o.page_size = k2M;
  auto a = MakeOrDie(o);
  ASSERT_TRUE(a);
  EXPECT_THAT(a->usable(), ElementsAre(R(k2M, kMsiBegin), R(0xff000000, kVfioTop)));
  absl::StatusOr<Range> r = a->Allocate(1);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, R(k2M, 2 * k2M));
  EXPECT_EQ(a->Reserve(R(kPage, 2 * kPage)).code(), absl::StatusCode::kInvalidArgument);
}

TEST(IovaAllocatorCreateTest, RejectsBadOptionsNamingWhatItGot) {
  for (uint64_t page : {uint64_t{0}, uint64_t{1}, uint64_t{2048}, uint64_t{3000}, uint64_t{0x3000},
                        kVfioPageSizes}) {
    IovaAllocator::Options o;
    o.page_size = page;
    absl::StatusOr<std::unique_ptr<IovaAllocator>> a = IovaAllocator::Create(o);
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument) << page;
    EXPECT_THAT(a.status().message(), HasSubstr(absl::StrFormat("page_size %#x", page)));
  }
  for (int bits : {0, -1, 65, 128}) {
    IovaAllocator::Options o;
    o.address_bits = bits;
    absl::StatusOr<std::unique_ptr<IovaAllocator>> a = IovaAllocator::Create(o);
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument) << bits;
    EXPECT_THAT(a.status().message(), HasSubstr(absl::StrFormat("address_bits %d", bits)));
  }
  // Nothing usable left: only the first page; above the mask; no whole page;
  // a mask narrower than the first page.
  struct Case {
    std::vector<Range> ranges;
    int bits;
  };
  for (const Case& c : {Case{{R(0, kPage)}, 64}, Case{{R(0x10000000, 0x20000000)}, 28},
                        Case{{R(0x1001, 0x1fff)}, 64}, Case{{}, 12}, Case{{R(0, 0)}, 64}}) {
    IovaAllocator::Options o;
    o.ranges = c.ranges;
    o.address_bits = c.bits;
    absl::StatusOr<std::unique_ptr<IovaAllocator>> a = IovaAllocator::Create(o);
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument) << c.bits;
    EXPECT_THAT(a.status().message(), HasSubstr("no usable IOVA space"));
    if (!c.ranges.empty()) {
      EXPECT_THAT(a.status().message(), HasSubstr(c.ranges[0].ToString()));
    }
  }
}

// --- the ends of the space ---

TEST(IovaAllocatorTest, NeverHandsOutIovaZero) {
  auto a = MakeOrDie({});
  ASSERT_TRUE(a);
  absl::StatusOr<Range> r = a->Allocate(1);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, R(kPage, 2 * kPage));
  EXPECT_FALSE(a->Usable(R(0, 1)));
  EXPECT_FALSE(a->Usable(R(0, 2 * kPage)));
  absl::Status s = a->Reserve(R(0, kPage));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("outside the usable IOVA space"));
  EXPECT_EQ(a->Free(R(0, kPage)).code(), absl::StatusCode::kNotFound);
}

TEST(IovaAllocatorTest, RangesTouchingTheTopOfThe64BitSpace) {
  constexpr uint64_t kLastPage = ~(kPage - 1);  // in no page-rounded Range
  IovaAllocator::Options o;
  o.ranges = {R(kLastPage - 4 * kPage, UINT64_MAX)};
  auto a = MakeOrDie(o);
  ASSERT_TRUE(a);
  EXPECT_THAT(a->usable(), ElementsAre(R(kLastPage - 4 * kPage, kLastPage)));
  EXPECT_TRUE(a->Usable(R(kLastPage - 1, kLastPage)));
  EXPECT_FALSE(a->Usable(R(kLastPage, UINT64_MAX)));
  ASSERT_TRUE(a->Reserve(R(kLastPage - kPage, kLastPage)).ok());
  absl::StatusOr<Range> r = a->Allocate(3 * kPage);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, R(kLastPage - 4 * kPage, kLastPage - kPage));
  const Snapshot full = Snap(*a);
  EXPECT_EQ(a->Allocate(1).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(a->Allocate(1).status().message(), HasSubstr("no free space left"));
  EXPECT_EQ(Snap(*a), full);
  ASSERT_TRUE(a->Free(*r).ok());
  ASSERT_TRUE(a->Free(R(kLastPage - kPage, kLastPage)).ok());
  EXPECT_THAT(a->FreeExtents(), ElementsAre(R(kLastPage - 4 * kPage, kLastPage)));

  // Only the last page: nothing usable.
  o.ranges = {R(kLastPage, UINT64_MAX)};
  EXPECT_EQ(IovaAllocator::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(IovaAllocatorTest, LengthsAndAlignmentsNearTwoTo64) {
  auto a = MakeOrDie({});
  ASSERT_TRUE(a);
  const Snapshot empty = Snap(*a);
  constexpr uint64_t k2To63 = uint64_t{1} << 63;
  for (uint64_t length : {UINT64_MAX, ~(kPage - 1), ~(kPage - 1) - kPage + 1}) {
    absl::StatusOr<Range> r = a->Allocate(length);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << length;
    EXPECT_THAT(r.status().message(), HasSubstr("the largest 0xffffffffffffe000 bytes"));
  }
  // 2^63 aligned at 2^63 would end at 2^64.
  EXPECT_EQ(a->Allocate(k2To63, k2To63).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(Snap(*a), empty);
  // The whole space in one window.
  absl::StatusOr<Range> all = a->Allocate(~(kPage - 1) - kPage);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(*all, R(kPage, ~(kPage - 1)));
  EXPECT_EQ(a->free_bytes(), 0u);
  ASSERT_TRUE(a->Free(*all).ok());
  absl::StatusOr<Range> half = a->Allocate(k2To63 >> 1, k2To63);
  ASSERT_TRUE(half.ok()) << half.status();
  EXPECT_EQ(*half, R(k2To63, k2To63 + (k2To63 >> 1)));
  EXPECT_THAT(a->FreeExtents(), ElementsAre(R(kPage, k2To63), R(half->end(), ~(kPage - 1))));
}

// --- Allocate ---

TEST(IovaAllocatorTest, AllocatesLowestFirstInWholePages) {
  auto a = MakePages(16);
  ASSERT_TRUE(a);
  EXPECT_EQ(*a->Allocate(1), R(0x1000, 0x2000));
  EXPECT_EQ(*a->Allocate(kPage + 1), R(0x2000, 0x4000));
  EXPECT_EQ(*a->Allocate(kPage), R(0x4000, 0x5000));
  EXPECT_EQ(a->allocated_bytes(), 4 * kPage);
  EXPECT_EQ(a->free_bytes(), 12 * kPage);
  EXPECT_EQ(a->allocations(), 3u);
  ASSERT_TRUE(a->Free(R(0x2000, 0x4000)).ok());
  EXPECT_EQ(*a->Allocate(kPage), R(0x2000, 0x3000));  // the lowest hole again
}

TEST(IovaAllocatorTest, RejectsZeroLengthAndBadAlignments) {
  auto a = MakePages(16);
  ASSERT_TRUE(a);
  const Snapshot before = Snap(*a);
  EXPECT_EQ(a->Allocate(0).status().code(), absl::StatusCode::kInvalidArgument);
  for (uint64_t alignment : {uint64_t{1}, uint64_t{0x800}, uint64_t{0x3000}, uint64_t{0x1001}}) {
    absl::StatusOr<Range> r = a->Allocate(kPage, alignment);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << alignment;
    EXPECT_THAT(r.status().message(), HasSubstr(absl::StrFormat("alignment %#x", alignment)));
  }
  EXPECT_EQ(Snap(*a), before);
}

TEST(IovaAllocatorTest, FragmentationSkipsHolesThenReportsTheLargestExtent) {
  // 512 pages: 64 windows of 4 pages fill the first half.
  auto a = MakePages(512);
  ASSERT_TRUE(a);
  const std::vector<Range> original = a->FreeExtents();
  std::vector<Range> windows;
  for (int i = 0; i < 64; ++i) {
    absl::StatusOr<Range> r = a->Allocate(4 * kPage);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->begin(), kPage + i * 4 * kPage);
    windows.push_back(*r);
  }
  for (size_t i = 0; i < windows.size(); i += 2) ASSERT_TRUE(a->Free(windows[i]).ok());
  EXPECT_EQ(a->FreeExtents().size(), 33u);  // 32 holes and the tail
  // Five pages fit in no hole: the request goes to the tail.
  const uint64_t tail = kPage + 256 * kPage;
  absl::StatusOr<Range> big = a->Allocate(5 * kPage);
  ASSERT_TRUE(big.ok()) << big.status();
  EXPECT_EQ(big->begin(), tail);
  // Four pages still take the lowest hole.
  absl::StatusOr<Range> small = a->Allocate(4 * kPage);
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(*small, windows[0]);
  ASSERT_TRUE(a->Free(*small).ok());
  // Fill the tail: 128 free pages remain, in 4-page holes.
  absl::StatusOr<Range> rest = a->Allocate(251 * kPage);
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_EQ(rest->end(), kPage + 512 * kPage);
  const Snapshot fragmented = Snap(*a);
  absl::StatusOr<Range> r = a->Allocate(5 * kPage);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(r.status().message(), HasSubstr("length 0x5000"));
  EXPECT_THAT(r.status().message(),
              HasSubstr("free 0x80000 bytes in 32 extents, the largest 0x4000 bytes at [0x1000, "
                        "0x5000)"));
  EXPECT_EQ(Snap(*a), fragmented);
  // Two neighbouring holes and the window between them coalesce.
  ASSERT_TRUE(a->Free(windows[5]).ok());
  r = a->Allocate(12 * kPage);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, R(windows[4].begin(), windows[6].end()));
  ASSERT_TRUE(a->Free(*r).ok());
  // Freeing everything gives back the original extents.
  ASSERT_TRUE(a->Free(*big).ok());
  ASSERT_TRUE(a->Free(*rest).ok());
  for (size_t i = 1; i < windows.size(); i += 2) {
    if (i == 5) continue;  // freed above
    ASSERT_TRUE(a->Free(windows[i]).ok()) << i;
  }
  EXPECT_EQ(a->FreeExtents(), original);
  EXPECT_EQ(a->allocated_bytes(), 0u);
  EXPECT_EQ(a->allocations(), 0u);
}

TEST(IovaAllocatorTest, HugeAlignmentsHonouredAndPaddingStaysFree) {
  auto a = MakeOrDie(VfioOptions());
  ASSERT_TRUE(a);
  const uint64_t total = a->free_bytes();
  EXPECT_EQ(*a->Allocate(kPage), R(kPage, 2 * kPage));
  absl::StatusOr<Range> m2 = a->Allocate(kPage, k2M);
  ASSERT_TRUE(m2.ok()) << m2.status();
  EXPECT_EQ(*m2, R(k2M, k2M + kPage));
  absl::StatusOr<Range> g1 = a->Allocate(k1G, k1G);
  ASSERT_TRUE(g1.ok()) << g1.status();
  EXPECT_EQ(*g1, R(k1G, 2 * k1G));
  absl::StatusOr<Range> m4 = a->Allocate(3 * k2M, k2M);
  ASSERT_TRUE(m4.ok()) << m4.status();
  EXPECT_EQ(*m4, R(2 * k2M, 5 * k2M));
  // Padding is free, not leaked: the bytes add up, and small requests use it.
  EXPECT_EQ(a->free_bytes() + a->allocated_bytes(), total);
  EXPECT_EQ(a->allocated_bytes(), 2 * kPage + k1G + 3 * k2M);
  EXPECT_EQ(*a->Allocate(kPage), R(2 * kPage, 3 * kPage));
  EXPECT_THAT(a->FreeExtents(),
              ElementsAre(R(3 * kPage, k2M), R(k2M + kPage, 2 * k2M), R(5 * k2M, k1G),
                          R(2 * k1G, kMsiBegin), R(kMsiEnd, kVfioTop)));
  // The next 1 GiB-aligned gigabytes: [2G, 3G); [3G, 4G) would hold the MSI
  // window, so the one after lands at 4 GiB.
  absl::StatusOr<Range> g2 = a->Allocate(k1G, k1G);
  absl::StatusOr<Range> g3 = a->Allocate(k1G, k1G);
  ASSERT_TRUE(g2.ok() && g3.ok());
  EXPECT_EQ(*g2, R(2 * k1G, 3 * k1G));
  EXPECT_EQ(*g3, R(4 * k1G, 5 * k1G));
  for (Range r : {*g3, *g2, *m4, *g1, *m2, R(kPage, 2 * kPage), R(2 * kPage, 3 * kPage)}) {
    ASSERT_TRUE(a->Free(r).ok()) << r.ToString();
  }
  EXPECT_EQ(a->FreeExtents(), a->usable());
  EXPECT_EQ(a->free_bytes(), total);
}

TEST(IovaAllocatorTest, AlignedRequestSkipsALongEnoughButMisalignedHole) {
  auto a = MakePages(64);
  ASSERT_TRUE(a);
  // Free [0x5000, 0x9000): four pages, but only [0x8000, 0x9000) is 16 KiB
  // aligned. [0x10000, 0x14000) is aligned.
  ASSERT_TRUE(a->Reserve(R(0x1000, 0x5000)).ok());
  ASSERT_TRUE(a->Reserve(R(0x9000, 0x10000)).ok());
  ASSERT_TRUE(a->Reserve(R(0x14000, 0x41000)).ok());
  absl::StatusOr<Range> r = a->Allocate(2 * kPage, 0x4000);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, R(0x10000, 0x12000));
  r = a->Allocate(kPage, 0x4000);  // this one fits the misaligned hole's tail
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, R(0x8000, 0x9000));
  EXPECT_THAT(a->FreeExtents(), ElementsAre(R(0x5000, 0x8000), R(0x12000, 0x14000)));
}

TEST(IovaAllocatorTest, NothingLandsInTheMsiWindow) {
  auto a = MakeOrDie(VfioOptions());
  ASSERT_TRUE(a);
  // Leave exactly 1 MiB free below the window.
  absl::StatusOr<Range> low = a->Allocate(0xfed00000 - kPage);
  ASSERT_TRUE(low.ok()) << low.status();
  EXPECT_EQ(*low, R(kPage, 0xfed00000));
  // 2 MiB would straddle the window: it goes above.
  absl::StatusOr<Range> straddle = a->Allocate(k2M);
  ASSERT_TRUE(straddle.ok()) << straddle.status();
  EXPECT_EQ(*straddle, R(kMsiEnd, kMsiEnd + k2M));
  // 1 MiB fits exactly below it.
  absl::StatusOr<Range> below = a->Allocate(1 << 20);
  ASSERT_TRUE(below.ok()) << below.status();
  EXPECT_EQ(*below, R(0xfed00000, kMsiBegin));
  absl::Status s = a->Reserve(R(kMsiBegin, kMsiBegin + kPage));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("[0xfef00000, 0x8000000000)"));
  EXPECT_THAT(s.message(), HasSubstr("[0x1000, 0xfee00000)"));
  // Many windows of assorted sizes around the window, none in it.
  ASSERT_TRUE(a->Free(*low).ok());
  ASSERT_TRUE(a->Free(*below).ok());
  ASSERT_TRUE(a->Reserve(R(kPage, 0xfe000000)).ok());
  std::mt19937_64 rng(7);
  const Range msi = R(kMsiBegin, kMsiEnd);
  for (int i = 0; i < 500; ++i) {
    const uint64_t length = (rng() % 64 + 1) * kPage;
    const uint64_t alignment = kPage << (rng() % 10);
    absl::StatusOr<Range> r = a->Allocate(length, alignment);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_FALSE(r->Overlaps(msi)) << r->ToString();
    EXPECT_EQ(r->begin() % alignment, 0u);
    EXPECT_TRUE(a->Usable(*r));
  }
}

TEST(IovaAllocatorTest, EduDeviceMaskExhaustsBelow256MiB) {
  IovaAllocator::Options o = VfioOptions();
  o.address_bits = 28;
  auto a = MakeOrDie(o);
  ASSERT_TRUE(a);
  constexpr uint64_t kMiB = 1 << 20;
  int windows = 0;
  for (;;) {
    absl::StatusOr<Range> r = a->Allocate(kMiB);
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
      EXPECT_THAT(r.status().message(), HasSubstr("the largest 0xff000 bytes"));
      break;
    }
    EXPECT_LE(r->end(), uint64_t{1} << 28) << r->ToString();
    ++windows;
  }
  EXPECT_EQ(windows, 255);  // 256 MiB less the first page
  EXPECT_EQ(a->free_bytes(), kMiB - kPage);
  absl::Status s = a->Reserve(R(0x10000000, 0x10001000));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("28-bit address mask"));
}

TEST(IovaAllocatorTest, ExhaustionChangesNothing) {
  auto a = MakePages(8);
  ASSERT_TRUE(a);
  ASSERT_TRUE(a->Allocate(3 * kPage).ok());
  ASSERT_TRUE(a->Allocate(2 * kPage, 4 * kPage).ok());  // [0x4000, 0x6000)
  const Snapshot before = Snap(*a);
  for (uint64_t length : {4 * kPage, 8 * kPage, uint64_t{1} << 40}) {
    absl::StatusOr<Range> r = a->Allocate(length);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << length;
    EXPECT_THAT(r.status().message(),
                HasSubstr(absl::StrFormat("free %#x bytes in", before.free_bytes)));
    EXPECT_EQ(Snap(*a), before);
  }
  // A page fits, but not at a 64 KiB boundary.
  EXPECT_EQ(a->Allocate(kPage, 16 * kPage).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(Snap(*a), before);
}

// --- Reserve ---

TEST(IovaAllocatorTest, ReserveInsideOutsideAndOverlapping) {
  auto a = MakeOrDie(VfioOptions());
  ASSERT_TRUE(a);
  ASSERT_TRUE(a->Reserve(R(0x10000, 0x20000)).ok());
  EXPECT_THAT(a->FreeExtents(),
              ElementsAre(R(kPage, 0x10000), R(0x20000, kMsiBegin), R(kMsiEnd, kVfioTop)));
  ASSERT_TRUE(a->Reserve(R(kMsiEnd, kMsiEnd + k2M)).ok());  // touching the window
  const Snapshot before = Snap(*a);
  struct Case {
    Range r;
    absl::StatusCode code;
    std::string names;
  };
  for (const Case& c : std::vector<Case>{
           {R(0x20000, 0x20000), absl::StatusCode::kInvalidArgument, "whole 0x1000-byte pages"},
           {R(0x20800, 0x21000), absl::StatusCode::kInvalidArgument, "whole 0x1000-byte pages"},
           {R(0x20000, 0x20800), absl::StatusCode::kInvalidArgument, "whole 0x1000-byte pages"},
           {R(kMsiBegin - kPage, kMsiBegin + kPage), absl::StatusCode::kInvalidArgument,
            "outside the usable IOVA space {[0x1000, 0xfee00000), [0xfef00000, 0x8000000000)}"},
           {R(kVfioTop, kVfioTop + kPage), absl::StatusCode::kInvalidArgument, "no address mask"},
           {R(0x10000, 0x20000), absl::StatusCode::kAlreadyExists, "overlaps [0x10000, 0x20000)"},
           {R(0xf000, 0x11000), absl::StatusCode::kAlreadyExists, "overlaps [0x10000, 0x20000)"},
           {R(0x1f000, 0x30000), absl::StatusCode::kAlreadyExists, "overlaps [0x10000, 0x20000)"},
           {R(0x12000, 0x13000), absl::StatusCode::kAlreadyExists, "overlaps [0x10000, 0x20000)"},
           {R(0x8000, 0x40000), absl::StatusCode::kAlreadyExists, "overlaps [0x10000, 0x20000)"},
           {R(kMsiEnd + kPage, kMsiEnd + 2 * k2M), absl::StatusCode::kAlreadyExists,
            "overlaps [0xfef00000, 0xff100000)"},
       }) {
    absl::Status s = a->Reserve(c.r);
    EXPECT_EQ(s.code(), c.code) << c.r.ToString() << ": " << s;
    EXPECT_THAT(s.message(), HasSubstr(c.names));
    EXPECT_THAT(s.message(), HasSubstr(c.r.ToString()));
    EXPECT_EQ(Snap(*a), before);
  }
  // Allocate works around reservations; a reservation frees like a window.
  absl::StatusOr<Range> r = a->Allocate(0x10000);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, R(0x20000, 0x30000));  // [0x1000, 0x10000) is one page short
  ASSERT_TRUE(a->Free(R(0x10000, 0x20000)).ok());
  ASSERT_TRUE(a->Free(*r).ok());
  ASSERT_TRUE(a->Free(R(kMsiEnd, kMsiEnd + k2M)).ok());
  EXPECT_EQ(a->FreeExtents(), a->usable());
}

// --- Free ---

TEST(IovaAllocatorTest, FreeRefusesWhatWasNotHandedOut) {
  auto a = MakePages(64);
  ASSERT_TRUE(a);
  const Range w1 = *a->Allocate(4 * kPage);  // [0x1000, 0x5000)
  const Range w2 = *a->Allocate(4 * kPage);  // [0x5000, 0x9000)
  const Snapshot before = Snap(*a);
  struct Case {
    Range r;
    absl::StatusCode code;
    std::string names;
  };
  for (const Case& c : std::vector<Case>{
           {R(0x20000, 0x21000), absl::StatusCode::kNotFound, "not allocated"},
           {R(0x100000, 0x200000), absl::StatusCode::kNotFound, "not allocated"},
           {R(0x1000, 0x1000), absl::StatusCode::kInvalidArgument, "empty"},
           {R(0x1000, 0x2000), absl::StatusCode::kInvalidArgument, "overlaps [0x1000, 0x5000)"},
           {R(0x2000, 0x5000), absl::StatusCode::kInvalidArgument, "overlaps [0x1000, 0x5000)"},
           {R(0x1000, 0x9000), absl::StatusCode::kInvalidArgument, "overlaps [0x1000, 0x5000)"},
           {R(0x4000, 0x6000), absl::StatusCode::kInvalidArgument, "overlaps [0x1000, 0x5000)"},
           {R(0x5000, 0xa000), absl::StatusCode::kInvalidArgument, "overlaps [0x5000, 0x9000)"},
           {R(0x1800, 0x4800), absl::StatusCode::kInvalidArgument, "overlaps [0x1000, 0x5000)"},
       }) {
    absl::Status s = a->Free(c.r);
    EXPECT_EQ(s.code(), c.code) << c.r.ToString() << ": " << s;
    EXPECT_THAT(s.message(), HasSubstr(c.names));
    EXPECT_THAT(s.message(), HasSubstr(c.r.ToString()));
    EXPECT_EQ(Snap(*a), before);
  }
  ASSERT_TRUE(a->Free(w1).ok());
  const Snapshot after = Snap(*a);
  absl::Status twice = a->Free(w1);
  EXPECT_EQ(twice.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(twice.message(), HasSubstr("already freed"));
  EXPECT_EQ(Snap(*a), after);
  ASSERT_TRUE(a->Free(w2).ok());
  EXPECT_EQ(a->FreeExtents(), a->usable());
}

}  // namespace
}  // namespace dmareg::internal
