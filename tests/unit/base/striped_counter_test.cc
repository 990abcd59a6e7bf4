// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "base/striped_counter.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace dmareg::internal {
namespace {

// More threads than owned stripes: owners and sharers must both count exactly.
TEST(StripedCounterTest, ExactUnderConcurrencyBeyondTheOwnedStripes) {
  StripedCounter counter;
  constexpr int kThreads = StripedCounter::kStripes + 8;
  constexpr int kAdds = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kAdds; ++i) counter.Add();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(counter.Sum(), uint64_t{kThreads} * kAdds);
}

}  // namespace
}  // namespace dmareg::internal
