// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "runtime/thread_slot.h"

#include <set>
#include <thread>
#include <vector>

#include "base/striped_counter.h"
#include "gtest/gtest.h"

namespace dmareg::internal {
namespace {

TEST(ThreadSlotTest, StableForTheThreadAndUniqueAmongLiveThreads) {
  const size_t mine = ThreadSlot();
  EXPECT_EQ(ThreadSlot(), mine);
  size_t other = kNoSlot;
  std::thread([&] { other = ThreadSlot(); }).join();
  EXPECT_NE(other, mine);
}

// Slots of exited threads are reused: far more threads than slots, one after
// another, all get a slot.
TEST(ThreadSlotTest, RecycledWhenThreadsExit) {
  for (size_t i = 0; i < 4 * kThreadSlots; ++i) {
    size_t slot = kNoSlot;
    std::thread([&] { slot = ThreadSlot(); }).join();
    EXPECT_LT(slot, kThreadSlots) << "thread " << i;
  }
}

// More threads alive at once than slots: the rest get kNoSlot, and a counter
// stays exact across owners, sharers and recycled slots.
TEST(ThreadSlotTest, StripedCounterExactAcrossRecycling) {
  StripedCounter counter;
  constexpr int kAdds = 5000;
  size_t threads_run = 0;
  for (int round = 0; round < 3; ++round) {
    std::vector<std::thread> threads;
    const size_t n = kThreadSlots + 8;
    for (size_t t = 0; t < n; ++t) {
      threads.emplace_back([&] {
        for (int i = 0; i < kAdds; ++i) counter.Add();
      });
    }
    for (auto& t : threads) t.join();
    threads_run += n;
  }
  EXPECT_EQ(counter.Sum(), threads_run * kAdds);
}

}  // namespace
}  // namespace dmareg::internal
