// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "core/recent_invalidations.h"

#include "gtest/gtest.h"

namespace dmareg::internal {
namespace {

Range R(uint64_t b, uint64_t e) { return *Range::FromBounds(b, e); }

TEST(RecentInvalidationsTest, SeesOverlapsRecordedWhileOpenOnly) {
  RecentInvalidations recent;
  recent.Record(R(0x1000, 0x2000));
  const uint64_t epoch = recent.Open();
  EXPECT_FALSE(recent.InvalidatedSince(epoch, R(0x1000, 0x2000))) << "recorded before";
  recent.Record(R(0x5000, 0x6000));
  recent.Close();
  recent.Record(R(0x1000, 0x2000));
  EXPECT_FALSE(recent.InvalidatedSince(epoch, R(0x1000, 0x5000)))
      << "touching, not overlapping; and nothing kept after Close";
  EXPECT_TRUE(recent.InvalidatedSince(epoch, R(0x4000, 0x5001)));
}

TEST(RecentInvalidationsTest, KeepsRecordingWhileAnyMissHasItOpen) {
  RecentInvalidations recent;
  const uint64_t first = recent.Open();
  const uint64_t second = recent.Open();
  recent.Close();  // the first miss is done
  recent.Record(R(0x3000, 0x4000));
  EXPECT_TRUE(recent.InvalidatedSince(second, R(0x3000, 0x3001)));
  EXPECT_TRUE(recent.InvalidatedSince(first, R(0x3000, 0x3001)));
  recent.Close();
  const uint64_t later = recent.Open();
  EXPECT_FALSE(recent.InvalidatedSince(later, R(0x3000, 0x4000))) << "recorded before it opened";
  recent.Close();
}

TEST(RecentInvalidationsTest, AnEpochOutOfTheLogIsAssumedInvalidated) {
  RecentInvalidations recent;
  const uint64_t epoch = recent.Open();
  for (size_t i = 0; i < RecentInvalidations::kCapacity - 1; ++i) {
    recent.Record(R(0x100000 + i * 0x1000, 0x101000 + i * 0x1000));
  }
  EXPECT_FALSE(recent.InvalidatedSince(epoch, R(0x1000, 0x2000))) << "all still in the log";
  recent.Record(R(0x900000, 0x901000));
  EXPECT_TRUE(recent.InvalidatedSince(epoch, R(0x1000, 0x2000)))
      << "records past the epoch were overwritten: it can no longer tell";
}

}  // namespace
}  // namespace dmareg::internal
