// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/range.h"

#include <cstdint>
#include <optional>

#include "gtest/gtest.h"

namespace dmareg {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kMax = UINT64_MAX;
constexpr uint64_t kLastPage = kMax - (kPage - 1);  // 0xfffffffffffff000

TEST(RangeTest, FromLengthRefusesAnEndPastTheTop) {
  EXPECT_EQ(Range::FromLength(0x1000, 0x2000)->end(), 0x3000u);
  EXPECT_EQ(Range::FromLength(kMax, 0)->length(), 0u);
  EXPECT_EQ(Range::FromLength(kMax - 1, 1)->end(), kMax);
  EXPECT_FALSE(Range::FromLength(kMax, 1));
  EXPECT_FALSE(Range::FromLength(kLastPage, kPage));  // would end at 2^64
  EXPECT_FALSE(Range::FromLength(1, kMax));
}

TEST(RangeTest, FromBoundsRefusesAnEndBeforeTheBegin) {
  EXPECT_TRUE(Range::FromBounds(5, 5)->empty());
  EXPECT_FALSE(Range::FromBounds(6, 5));
}

TEST(RangeTest, PagesHoldingRoundsOutAndRefusesTheLastPage) {
  std::optional<Range> r = Range::PagesHolding(0x1001, 0x1000, kPage);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, *Range::FromBounds(0x1000, 0x3000));
  EXPECT_FALSE(Range::PagesHolding(0x1000, 0, kPage));     // empty
  EXPECT_FALSE(Range::PagesHolding(0x2000, kMax, kPage));  // wraps
  EXPECT_FALSE(Range::PagesHolding(kLastPage, 1, kPage));  // the last page
  EXPECT_FALSE(Range::PagesHolding(kLastPage - kPage, kPage + 1, kPage));
  // The page before the last one is fine, and its rounded end is nonzero.
  r = Range::PagesHolding(kLastPage - kPage, kPage, kPage);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->end(), kLastPage);
  r = Range::PagesHolding(kLastPage - 1, 1, kPage);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->begin(), kLastPage - kPage);
  EXPECT_EQ(r->end(), kLastPage);
}

TEST(RangeTest, RoundOutAgreesWithPagesHolding) {
  for (uint64_t begin : {uint64_t{0}, uint64_t{1}, kPage - 1, kLastPage - 4 * kPage + 7}) {
    for (uint64_t length : {uint64_t{1}, kPage, kPage + 1, 3 * kPage - 1}) {
      const std::optional<Range> r = Range::FromLength(begin, length);
      ASSERT_TRUE(r);
      EXPECT_EQ(r->RoundOut(kPage), Range::PagesHolding(begin, length, kPage))
          << begin << " " << length;
    }
  }
  EXPECT_FALSE(Range::FromLength(kLastPage, 1)->RoundOut(kPage));
}

TEST(RangeTest, RoundOutBelowLastPageClampsInsteadOfWrapping) {
  // Touching the last page: everything below it, never an end of 0.
  Range r = Range::FromLength(kLastPage - kPage, kPage + 1)->RoundOutBelowLastPage(kPage);
  EXPECT_EQ(r, *Range::FromBounds(kLastPage - kPage, kLastPage));
  r = Range::FromBounds(kLastPage, kMax)->RoundOutBelowLastPage(kPage);
  EXPECT_TRUE(r.empty());
  EXPECT_EQ(Range::FromBounds(0x1001, 0x1002)->RoundOutBelowLastPage(kPage),
            *Range::FromBounds(0x1000, 0x2000));
}

TEST(RangeTest, OverlapContainIntersectHull) {
  const Range a = *Range::FromBounds(0x1000, 0x3000);
  const Range b = *Range::FromBounds(0x2000, 0x4000);
  const Range c = *Range::FromBounds(0x3000, 0x4000);
  EXPECT_TRUE(a.Overlaps(b));
  EXPECT_FALSE(a.Overlaps(c));  // half-open: they touch
  EXPECT_FALSE(a.Overlaps(*Range::FromBounds(0x2000, 0x2000)));
  EXPECT_TRUE(a.Contains(0x1000));
  EXPECT_FALSE(a.Contains(0x3000));
  EXPECT_TRUE(a.Contains(*Range::FromBounds(0x1000, 0x3000)));
  EXPECT_FALSE(a.Contains(b));
  EXPECT_EQ(a.Intersect(b), *Range::FromBounds(0x2000, 0x3000));
  EXPECT_TRUE(a.Intersect(c).empty());
  EXPECT_EQ(a.Hull(c), *Range::FromBounds(0x1000, 0x4000));
  EXPECT_TRUE(a.PageAligned(kPage));
  EXPECT_FALSE(Range::FromBounds(0x1000, 0x1001)->PageAligned(kPage));
  EXPECT_EQ(a.ToString(), "[0x1000, 0x3000)");
}

}  // namespace
}  // namespace dmareg
