// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// HooksMonitor over the linked libdmareg_hooks: creation and names, a cache
// fed by it, its span filter, fork while threads unmap, and the lock-free
// InvalidationLog it publishes into, under concurrent producers.
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "common/sanitizers.h"
#include "common/test_memory.h"
#include "dmareg/cache.h"
#include "dmareg/monitor.h"
#include "dmareg/testing/fake_domain.h"
#include "gtest/gtest.h"
#include "monitor/invalidation_log.h"

namespace dmareg {
namespace {

using testing::FakeDomain;

const size_t kPage = static_cast<size_t>(sysconf(_SC_PAGESIZE));

bool UserfaultfdAvailable() { return UserfaultfdMonitor::Create().ok(); }

TEST(HooksMonitorTest, CreateAndNames) {
  auto alone = HooksMonitor::Create({.userfaultfd = HooksUserfaultfd::kNever});
  ASSERT_TRUE(alone.ok()) << alone.status();
  EXPECT_EQ((*alone)->name(), "hooks");
  EXPECT_EQ((*alone)->userfaultfd(), nullptr);
  EXPECT_TRUE((*alone)->coverage().munmap);
  EXPECT_EQ((*alone)->hook_events(), 0u) << "nothing watched yet: nothing published";

  const bool uffd = UserfaultfdAvailable();
  auto composed = HooksMonitor::Create();
  ASSERT_TRUE(composed.ok()) << composed.status();
  EXPECT_EQ((*composed)->name(), uffd ? "hooks+userfaultfd" : "hooks");
  EXPECT_EQ((*composed)->userfaultfd() != nullptr, uffd);
  auto required = HooksMonitor::Create({.userfaultfd = HooksUserfaultfd::kRequired});
  EXPECT_EQ(required.ok(), uffd) << required.status();
  if (!uffd) {
    EXPECT_EQ(required.status().code(), absl::StatusCode::kFailedPrecondition);
  }
}

TEST(HooksMonitorTest, InvalidWatchArguments) {
  auto monitor = HooksMonitor::Create({.userfaultfd = HooksUserfaultfd::kNever}).value();
  test::Mapping mem(kPage);
  ASSERT_TRUE(mem.ok());
  EXPECT_EQ(monitor->Watch(mem.data(), 0).code(), absl::StatusCode::kInvalidArgument);
  const void* top = reinterpret_cast<const void*>(UINTPTR_MAX - kPage + 1);
  EXPECT_EQ(monitor->Watch(top, 2 * kPage).code(), absl::StatusCode::kInvalidArgument)
      << "a wrapping range";
  EXPECT_TRUE(monitor->Watch(mem.data(), kPage).ok());
}

TEST(HooksMonitorTest, CacheWithMonitoringHooks) {
  auto fake = std::make_shared<FakeDomain>();
  auto cache = RegistrationCache::Create(fake, {.monitoring = Monitoring::kHooks});
  ASSERT_TRUE(cache.ok()) << cache.status();
  test::Mapping mem(4 * kPage);
  ASSERT_TRUE(mem.ok());
  uint32_t k1 = 0;
  {
    auto r = (*cache)->Acquire(mem.data(), 4 * kPage, Access::kLocalWrite);
    ASSERT_TRUE(r.ok()) << r.status();
    k1 = r->lkey();
  }
  EXPECT_EQ(fake->live_registrations(), 1);
  ASSERT_TRUE(test::ReplacePages(mem.data() + kPage, kPage));
  auto r = (*cache)->Acquire(mem.data(), 4 * kPage, Access::kLocalWrite);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NE(r->lkey(), k1) << "a stale mapping was served after munmap";
  EXPECT_GE((*cache)->stats().monitor_events, 1u);
  r->Reset();
  cache->reset();
  EXPECT_EQ(fake->live_registrations(), 0);
}

TEST(HooksMonitorTest, UnmapsOutsideTheWatchedSpanAreNotPublished) {
  auto monitor = HooksMonitor::Create({.userfaultfd = HooksUserfaultfd::kNever}).value();
  auto fake = std::make_shared<FakeDomain>();
  auto cache = RegistrationCache::Create(fake, {.monitor = monitor}).value();
  // The watched memory sits in the middle of a reservation of its own, 4 MiB
  // from either end, so any other mapping lies in another 2 MiB granule
  // (the monitor's filter works by granule).
  const size_t reserve = size_t{8} << 20;
  char* res = static_cast<char*>(
      mmap(nullptr, reserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  ASSERT_NE(res, MAP_FAILED);
  char* mem = res + (size_t{4} << 20);
  ASSERT_EQ(
      mmap(mem, 4 * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0),
      mem);
  uint32_t k1 = 0;
  {
    auto r = cache->Acquire(mem, 4 * kPage, Access::kLocalWrite);
    ASSERT_TRUE(r.ok()) << r.status();
    k1 = r->lkey();
  }
  const uint64_t published = monitor->hook_events();
  test::Mapping elsewhere(4 * kPage);
  ASSERT_TRUE(elsewhere.ok());
  ASSERT_TRUE(test::ReplacePages(elsewhere.data(), 2 * kPage));
  EXPECT_EQ(monitor->hook_events(), published) << "an unmap far from any watched range";
  EXPECT_EQ(cache->stats().monitor_events, 0u);

  const uint64_t misses = cache->stats().misses;
  ASSERT_TRUE(test::ReplacePages(mem + kPage, kPage));
  EXPECT_GT(monitor->hook_events(), published) << "an unmap inside the watched range";
  auto r = cache->Acquire(mem, 4 * kPage, Access::kLocalWrite);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NE(r->lkey(), k1);
  EXPECT_EQ(cache->stats().misses, misses + 1) << "the cache should miss after the unmap";
  r->Reset();
  cache.reset();
  EXPECT_EQ(fake->live_registrations(), 0);
  munmap(res, reserve);
}

// ---- fork ---------------------------------------------------------------

// What a child does after fork: unmap, free, map, and leave without running
// the parent's destructors. malloc only where it is glibc's (whose fork
// handlers leave its locks usable in the child).
[[noreturn]] void ChildUnmaps() {
  void* p = mmap(nullptr, 4 * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED || munmap(p, 4 * kPage) != 0) _exit(2);
  if (::dmareg::testing::kGlibcMalloc) {
    void* block = malloc(1 << 20);
    if (block == nullptr) _exit(3);
    memset(block, 1, 1 << 20);
    free(block);
  }
  p = mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  _exit(p == MAP_FAILED ? 4 : 0);
}

TEST(HooksMonitorTest, ForkWhileThreadsUnmapAndFree) {
  auto monitor = HooksMonitor::Create().value();
  auto fake = std::make_shared<FakeDomain>();
  auto cache = RegistrationCache::Create(fake, {.monitor = monitor}).value();
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < 3; ++t) {
    workers.emplace_back([&] {
      while (!stop.load()) {
        void* p =
            mmap(nullptr, 16 * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
          ++failures;
          return;
        }
        if (!cache->Acquire(p, 16 * kPage, Access::kLocalWrite).ok()) ++failures;
        munmap(p, 16 * kPage);
        char* block = static_cast<char*>(malloc(1 << 20));
        if (block == nullptr) {
          ++failures;
          return;
        }
        block[0] = 1;
        if (!cache->Acquire(block, 1 << 20, Access::kLocalWrite).ok()) ++failures;
        free(block);
      }
    });
  }
  constexpr int kForks = 40;
  int exited_ok = 0;
  for (int i = 0; i < kForks; ++i) {
    const pid_t pid = fork();
    if (pid == 0) ChildUnmaps();
    if (pid < 0) {
      ADD_FAILURE() << "fork: " << strerror(errno);
      break;
    }
    const int code = test::ChildExitCode(pid);
    EXPECT_EQ(code, 0) << "child " << i;
    exited_ok += code == 0;
  }
  stop = true;
  for (auto& w : workers) w.join();
  EXPECT_EQ(exited_ok, kForks);
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GT(monitor->hook_events(), 0u) << "the workers' unmaps of watched memory";
  cache.reset();
  EXPECT_EQ(fake->live_registrations(), 0);
}

// ---- InvalidationLog under concurrent producers ---------------------------

// Producer p's i-th range: distinct across producers and indices.
Range RangeOf(uint64_t p, uint64_t i) {
  const uintptr_t b = ((p + 1) << 40) + i * kPage;
  return *Range::FromBounds(b, b + kPage);
}

TEST(InvalidationLogConcurrencyTest, EveryRangeReadOnceInClaimOrderPerProducer) {
  internal::InvalidationLog log;
  constexpr int kProducers = 4;
  constexpr uint64_t kEach = 20000;  // far more than kCapacity in all
  std::atomic<uint64_t> consumed{0};
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (uint64_t i = 0; i < kEach; ++i) {
        // Stay within half a ring of the reader, so it never overruns.
        while (log.head() - consumed.load() > internal::InvalidationLog::kCapacity / 2) {
          sched_yield();
        }
        log.Publish(RangeOf(p, i));
      }
    });
  }
  std::vector<uint64_t> next(kProducers, 0);
  uint64_t cursor = 0, read = 0, misplaced = 0;
  std::vector<Range> out;
  while (read < kProducers * kEach) {
    out.clear();
    bool overrun = false;
    cursor = log.ReadSince(cursor, &out, &overrun);
    ASSERT_FALSE(overrun) << "after " << read << " ranges";
    for (const Range& r : out) {
      const uint64_t p = (r.begin() >> 40) - 1;
      ASSERT_LT(p, uint64_t{kProducers});
      const uint64_t i = (r.begin() - ((p + 1) << 40)) / kPage;
      misplaced += i != next[p];  // a repeat, a gap or out of order
      next[p] = i + 1;
    }
    read += out.size();
    consumed = cursor;
    if (out.empty()) sched_yield();
  }
  for (auto& t : producers) t.join();
  EXPECT_EQ(misplaced, 0u);
  for (int p = 0; p < kProducers; ++p) EXPECT_EQ(next[p], kEach) << "producer " << p;
  EXPECT_EQ(log.head(), cursor);
  EXPECT_FALSE(log.Pending(cursor));
}

TEST(InvalidationLogConcurrencyTest, FallingACapacityBehindIsAnOverrun) {
  internal::InvalidationLog log;
  constexpr uint64_t kCap = internal::InvalidationLog::kCapacity;
  std::vector<std::thread> producers;
  for (int p = 0; p < 4; ++p) {
    producers.emplace_back([&, p] {
      for (uint64_t i = 0; i < kCap / 4; ++i) log.Publish(RangeOf(p, i));
    });
  }
  for (auto& t : producers) t.join();
  std::vector<Range> out;
  bool overrun = true;
  EXPECT_EQ(log.ReadSince(0, &out, &overrun), kCap);
  EXPECT_FALSE(overrun) << "exactly kCapacity behind is still readable";
  EXPECT_EQ(out.size(), kCap);

  log.Publish(RangeOf(0, kCap));
  out.clear();
  EXPECT_EQ(log.ReadSince(0, &out, &overrun), kCap + 1);
  EXPECT_TRUE(overrun) << "kCapacity + 1 behind: the first was overwritten";
  EXPECT_TRUE(out.empty()) << "an overrun appends nothing";
  EXPECT_EQ(log.ReadSince(kCap + 1, &out, &overrun), kCap + 1);
  EXPECT_FALSE(overrun);
  EXPECT_TRUE(out.empty());
}

}  // namespace
}  // namespace dmareg
