// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "base/mutex.h"

#include <atomic>
#include <cerrno>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace dmareg::internal {
namespace {

// Threads that contend all the time: every increment lands (TSan checks the
// ordering too), and a thread's errno survives the lock's sleeps and wakes.
TEST(MutexTest, ExcludesAndKeepsErrnoUnderContention) {
  Mutex mu;
  long count = 0;  // guarded by mu
  std::atomic<int> errno_lost{0};
  constexpr int kThreads = 4;
  constexpr int kRounds = 50000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const int mine = EBADF + t;
      for (int i = 0; i < kRounds; ++i) {
        errno = mine;
        MutexLock lock(&mu);
        if (errno != mine) errno_lost.fetch_add(1, std::memory_order_relaxed);
        ++count;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  MutexLock lock(&mu);
  EXPECT_EQ(count, long{kThreads} * kRounds);
  EXPECT_EQ(errno_lost.load(), 0);
}

TEST(MutexTest, TryLockFailsWhileHeldAndSucceedsOnceFree) {
  Mutex mu;
  bool taken = false;
  auto try_from_another_thread = [&] {
    taken = false;
    std::thread([&] {
      if (mu.TryLock()) {
        taken = true;
        mu.Unlock();
      }
    }).join();
  };
  mu.Lock();
  try_from_another_thread();
  EXPECT_FALSE(taken) << "held by this thread";
  mu.Unlock();
  try_from_another_thread();
  EXPECT_TRUE(taken);
}

}  // namespace
}  // namespace dmareg::internal
