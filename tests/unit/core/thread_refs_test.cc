// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "core/thread_refs.h"

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "absl/synchronization/notification.h"
#include "common/test_memory.h"
#include "gtest/gtest.h"
#include "runtime/asymmetric_fence.h"

namespace dmareg::internal {
namespace {

TEST(ThreadRefsTest, DisabledTablesAreNeverCreated) {
  ThreadRefTables tables(false);
  EXPECT_EQ(tables.CreateMine(), nullptr);
  EXPECT_EQ(tables.Mine(), nullptr);
  EXPECT_FALSE(tables.OthersMayHold());
  EXPECT_EQ(tables.Sum(7), 0);
}

// Counts are per thread and may be negative; only the sum means anything.
TEST(ThreadRefsTest, SumsAcrossThreadsIncludingNegativeEntries) {
  ThreadRefTables tables(true);
  ThreadRefs* mine = tables.CreateMine();
  ASSERT_NE(mine, nullptr);
  EXPECT_EQ(tables.Mine(), mine);
  EXPECT_FALSE(tables.OthersMayHold());  // only this thread's own writes
  ThreadRefs::Add(mine->Counter(5), 1);
  ThreadRefs::Add(mine->Counter(ThreadRefs::kMaxIndex - 1), 2);  // far end
  EXPECT_EQ(tables.Sum(5), 1);
  std::thread([&] {
    ThreadRefs* other = tables.CreateMine();
    ASSERT_NE(other, nullptr);
    ASSERT_NE(other, mine);
    ThreadRefs::Add(other->Counter(5), -1);  // released on another thread
    other->CountHit();
  }).join();
  EXPECT_TRUE(tables.OthersMayHold());
  EXPECT_EQ(tables.Sum(5), 0);
  EXPECT_EQ(tables.Sum(ThreadRefs::kMaxIndex - 1), 2);
  EXPECT_EQ(tables.Hits(), 1u);
  EXPECT_EQ(tables.size(), 2u);
}

TEST(ThreadRefsTest, AwaitReleasesWaitsForBusyThreads) {
  ThreadRefTables tables(true);
  std::atomic<bool> set{false}, done{false};
  std::thread t([&] {
    ThreadRefs* r = tables.CreateMine();
    r->busy.store(ThreadRefs::BusyMark());
    set = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    done = true;
    r->busy.store(0, std::memory_order_release);
  });
  while (!set) std::this_thread::yield();
  tables.AwaitReleases();
  EXPECT_TRUE(done.load());
  t.join();
}

// A child of a fork has only the forking thread: a release another thread
// of the parent was in the middle of will never end there, and waiting for
// it would hang the child's cache teardown.
TEST(ThreadRefsTest, ForkedChildDoesNotWaitForTheParentsReleases) {
  WatchForks();  // as every cache does: the child's generation moves on
  ThreadRefTables tables(true);
  absl::Notification marked, forked;
  std::thread t([&] {
    ThreadRefs* r = tables.CreateMine();
    r->busy.store(ThreadRefs::BusyMark());
    marked.Notify();
    forked.WaitForNotification();
    r->busy.store(0, std::memory_order_release);
  });
  marked.WaitForNotification();
  const pid_t child = fork();
  ASSERT_NE(child, -1);
  if (child == 0) {
    alarm(10);  // a hang fails the test (SIGALRM) rather than the suite
    tables.AwaitReleases();
    _exit(0);
  }
  forked.Notify();
  EXPECT_EQ(test::ChildExitCode(child), 0)
      << "the child waited for a release no thread of it was making";
  t.join();
}

TEST(AsymmetricFenceTest, HeavyFenceRunsWhereAvailable) {
  if (!HeavyFenceAvailable()) GTEST_SKIP() << "no membarrier here (or TSan)";
  HeavyFence();
  HeavyFence();
}

}  // namespace
}  // namespace dmareg::internal
