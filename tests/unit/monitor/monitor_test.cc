// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// Memory monitors feeding the cache: the log on its own, explicit
// notification (C++ and C), and the userfaultfd monitor on this machine's
// kernel with real munmap / mremap / madvise / free().
#include "dmareg/monitor.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "common/sanitizers.h"
#include "common/test_memory.h"
#include "dmareg/c/dmareg.h"
#include "dmareg/cache.h"
#include "dmareg/testing/fake_domain.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "monitor/invalidation_log.h"

extern "C" int dmareg_test_notify_from_c(struct dmareg_monitor* m, const void* addr, size_t length);

namespace dmareg {
namespace {

using testing::FakeDomain;
using ::testing::HasSubstr;

const size_t kPage = static_cast<size_t>(sysconf(_SC_PAGESIZE));

// Anonymous memory the test owns, unmapped at scope exit unless released.
struct Anon {
  explicit Anon(size_t pages, int flags = MAP_PRIVATE | MAP_ANONYMOUS)
      : len(pages * kPage),
        p(static_cast<char*>(mmap(nullptr, len, PROT_READ | PROT_WRITE, flags, -1, 0))) {}
  ~Anon() {
    if (p != MAP_FAILED) munmap(p, len);
  }
  bool ok() const { return p != MAP_FAILED; }
  size_t len;
  char* p;
};

TEST(InvalidationLogTest, PublishReadAndOverrun) {
  internal::InvalidationLog log;
  EXPECT_FALSE(log.Pending(0));
  log.Publish(*Range::FromBounds(0x1000, 0x3000));
  log.Publish(*Range::FromBounds(0x8000, 0x9000));
  EXPECT_TRUE(log.Pending(0));
  std::vector<Range> out;
  bool overrun = true;
  EXPECT_EQ(log.ReadSince(0, &out, &overrun), 2u);
  EXPECT_FALSE(overrun);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[1], *Range::FromBounds(0x8000, 0x9000));
  EXPECT_FALSE(log.Pending(2));

  for (size_t i = 0; i < internal::InvalidationLog::kCapacity; ++i)
    log.Publish(*Range::FromLength(i, 1));
  out.clear();
  EXPECT_EQ(log.ReadSince(1, &out, &overrun), internal::InvalidationLog::kCapacity + 2);
  EXPECT_TRUE(overrun) << "a reader that fell a whole ring behind must be told";
  EXPECT_TRUE(out.empty());
}

TEST(InvalidationLogTest, AnOpenBracketIsPendingUntilClosed) {
  internal::InvalidationLog log;
  log.BeginEvents();
  EXPECT_TRUE(log.Pending(0)) << "an event may be on its way";
  std::atomic<bool> published{false};
  std::thread producer([&] {
    log.Publish(*Range::FromBounds(0x1000, 0x2000));
    published = true;
    log.EndEvents();
  });
  log.WaitQuiet();
  EXPECT_TRUE(published.load()) << "WaitQuiet returned before the bracket closed";
  EXPECT_TRUE(log.Pending(0));
  producer.join();
}

// ---- Explicit notification ----------------------------------------------

class ExplicitMonitorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(mem_.ok());
    monitor_ = ExplicitMonitor::Create();
    cache_ = RegistrationCache::Create(fake_, {.monitor = monitor_}).value();
  }
  void TearDown() override {
    cache_.reset();
    EXPECT_EQ(fake_->live_registrations(), 0) << "registrations leaked";
  }
  std::shared_ptr<FakeDomain> fake_ = std::make_shared<FakeDomain>();
  std::shared_ptr<ExplicitMonitor> monitor_;
  std::unique_ptr<RegistrationCache> cache_;
  Anon mem_{16};
};

TEST_F(ExplicitMonitorTest, NotifiedRangeIsNeverServedAgain) {
  auto first = cache_->Acquire(mem_.p, 4 * kPage, Access::kLocalWrite);
  ASSERT_TRUE(first.ok()) << first.status();
  const uint32_t old_lkey = first->lkey();
  first->Reset();
  // A byte in the middle: the whole page (and the mapping over it) goes.
  ASSERT_TRUE(monitor_->Notify(mem_.p + kPage + 10, 1).ok());
  auto second = cache_->Acquire(mem_.p, 4 * kPage, Access::kLocalWrite);
  ASSERT_TRUE(second.ok());
  EXPECT_NE(second->lkey(), old_lkey) << "served a mapping of notified memory";
  FakeDomain::LiveMapping gone;
  EXPECT_FALSE(fake_->Lookup(old_lkey, &gone)) << "the unreferenced old mapping must go";
  const CacheStats s = cache_->stats();
  EXPECT_EQ(s.monitor_events, 1u);
  EXPECT_EQ(s.misses, 2u);
}

TEST_F(ExplicitMonitorTest, HeldMappingStaysValidForItsHolder) {
  auto held = cache_->Acquire(mem_.p, kPage, Access::kLocalWrite);
  ASSERT_TRUE(held.ok());
  ASSERT_TRUE(monitor_->Notify(mem_.p, kPage).ok());
  auto fresh = cache_->Acquire(mem_.p, kPage, Access::kLocalWrite);
  ASSERT_TRUE(fresh.ok());
  EXPECT_FALSE(fresh->SameMapping(*held));
  FakeDomain::LiveMapping m;
  const uint32_t held_lkey = held->lkey();
  EXPECT_TRUE(fake_->Lookup(held_lkey, &m)) << "deregistered under its holder";
  held->Reset();
  EXPECT_FALSE(fake_->Lookup(held_lkey, &m)) << "the last handle should deregister it";
  EXPECT_EQ(fake_->live_registrations(), 1);
}

TEST_F(ExplicitMonitorTest, OneMonitorFeedsEveryCache) {
  auto fake2 = std::make_shared<FakeDomain>("fake2");
  auto cache2 = RegistrationCache::Create(fake2, {.monitor = monitor_}).value();
  auto a = cache_->Acquire(mem_.p, kPage, Access::kLocalWrite);
  auto b = cache2->Acquire(mem_.p, kPage, Access::kLocalWrite);
  ASSERT_TRUE(a.ok() && b.ok());
  a->Reset();
  b->Reset();
  ASSERT_TRUE(monitor_->Notify(mem_.p, kPage).ok());
  cache_->ApplyMonitorEvents();
  cache2->ApplyMonitorEvents();
  EXPECT_EQ(fake_->live_registrations(), 0);
  EXPECT_EQ(fake2->live_registrations(), 0);
}

TEST_F(ExplicitMonitorTest, BadRangesAreRejected) {
  EXPECT_EQ(monitor_->Notify(mem_.p, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      std::string(monitor_->Notify(reinterpret_cast<void*>(~uintptr_t{0} - 10), 100).message()),
      HasSubstr("wraps"));
  EXPECT_EQ(monitor_->events(), 0u) << "a rejected range must publish nothing";
  // The last page of the address space is a valid (if odd) range.
  EXPECT_TRUE(monitor_->Notify(reinterpret_cast<void*>(~uintptr_t{0} - 9), 10).ok());
}

TEST_F(ExplicitMonitorTest, CApiNotifies) {
  auto first = cache_->Acquire(mem_.p, kPage, Access::kLocalWrite);
  ASSERT_TRUE(first.ok());
  const uint32_t old_lkey = first->lkey();
  first->Reset();
  EXPECT_EQ(dmareg_test_notify_from_c(monitor_->c_handle(), mem_.p, kPage), 0);
  EXPECT_EQ(dmareg_test_notify_from_c(nullptr, mem_.p, kPage), -EINVAL);
  EXPECT_EQ(dmareg_test_notify_from_c(monitor_->c_handle(), mem_.p, 0), -EINVAL);
  auto second = cache_->Acquire(mem_.p, kPage, Access::kLocalWrite);
  ASSERT_TRUE(second.ok());
  EXPECT_NE(second->lkey(), old_lkey);
}

TEST_F(ExplicitMonitorTest, FallingBehindTheLogDropsEverything) {
  auto held = cache_->Acquire(mem_.p, kPage, Access::kLocalWrite);
  auto idle = cache_->Acquire(mem_.p + 8 * kPage, kPage, Access::kLocalWrite);
  ASSERT_TRUE(held.ok() && idle.ok());
  const uint32_t idle_lkey = idle->lkey();
  idle->Reset();
  // Events about other memory, more than the log holds.
  Anon other(1);
  for (size_t i = 0; i <= internal::InvalidationLog::kCapacity; ++i) {
    ASSERT_TRUE(monitor_->Notify(other.p, kPage).ok());
  }
  auto again = cache_->Acquire(mem_.p + 8 * kPage, kPage, Access::kLocalWrite);
  ASSERT_TRUE(again.ok());
  EXPECT_NE(again->lkey(), idle_lkey) << "after an overrun nothing cached may be trusted";
  EXPECT_EQ(cache_->stats().monitor_overruns, 1u);
  FakeDomain::LiveMapping m;
  EXPECT_TRUE(fake_->Lookup(held->lkey(), &m)) << "held mappings stay with their holders";
}

TEST_F(ExplicitMonitorTest, MemoryUnmappedDuringEveryRegistrationGivesUp) {
  // The range is "unmapped" while each registration is in flight.
  fake_->SetRegisterHook([&](uintptr_t, size_t) { (void)monitor_->Notify(mem_.p, kPage); });
  auto r = cache_->Acquire(mem_.p, kPage, Access::kLocalWrite);
  fake_->SetRegisterHook(nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted) << r.status();
  EXPECT_EQ(fake_->live_registrations(), 0) << "every discarded attempt must be deregistered";
  EXPECT_GE(cache_->stats().retried_registrations, 7u);
}

// Acquires mem_'s first page while, during its first registration, 200
// events about other memory arrive (more than the cache's record of recent
// invalidations holds), then one about that page if `also_the_span`.
absl::StatusOr<Registration> AcquireDuringEventStorm(ExplicitMonitor& monitor, FakeDomain& fake,
                                                     RegistrationCache& cache, char* span,
                                                     bool also_the_span) {
  Anon other(1);
  bool fired = false;
  fake.SetRegisterHook([&](uintptr_t, size_t) {
    if (std::exchange(fired, true)) return;
    for (int i = 0; i < 200; ++i) (void)monitor.Notify(other.p, kPage);
    if (also_the_span) (void)monitor.Notify(span, kPage);
  });
  absl::StatusOr<Registration> r = cache.Acquire(span, kPage, Access::kLocalWrite);
  fake.SetRegisterHook(nullptr);
  return r;
}

TEST_F(ExplicitMonitorTest, EventStormElsewhereDoesNotForceARetry) {
  auto r = AcquireDuringEventStorm(*monitor_, *fake_, *cache_, mem_.p, false);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(cache_->stats().retried_registrations, 0u) << "none of the events touched the span";
  EXPECT_EQ(cache_->stats().monitor_events, 200u);
}

TEST_F(ExplicitMonitorTest, EventStormOverlappingTheSpanForcesARetry) {
  auto r = AcquireDuringEventStorm(*monitor_, *fake_, *cache_, mem_.p, true);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(cache_->stats().retried_registrations, 1u) << "the span was unmapped mid-registration";
  EXPECT_EQ(fake_->live_registrations(), 1) << "the discarded attempt must be deregistered";
}

// ---- userfaultfd ---------------------------------------------------------

class UserfaultfdMonitorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto monitor = UserfaultfdMonitor::Create();
    if (!monitor.ok()) {
      GTEST_SKIP() << "this kernel gives this process no userfaultfd: " << monitor.status();
    }
    monitor_ = *monitor;
    cache_ = RegistrationCache::Create(fake_, {.monitor = monitor_}).value();
  }
  void TearDown() override {
    cache_.reset();
    EXPECT_EQ(fake_->live_registrations(), 0) << "registrations leaked";
  }
  // Acquires [p, p + len) and returns its lkey (0 on failure, reported).
  uint32_t AcquireKey(const void* p, size_t len) {
    auto r = cache_->Acquire(p, len, Access::kLocalWrite);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->lkey() : 0;
  }

  std::shared_ptr<FakeDomain> fake_ = std::make_shared<FakeDomain>();
  std::shared_ptr<UserfaultfdMonitor> monitor_;
  std::unique_ptr<RegistrationCache> cache_;
};

TEST_F(UserfaultfdMonitorTest, MunmapIsSeenBeforeItReturns) {
  Anon mem(8);
  ASSERT_TRUE(mem.ok());
  const uint32_t k1 = AcquireKey(mem.p, 8 * kPage);
  EXPECT_EQ(AcquireKey(mem.p + kPage, kPage), k1) << "a sub-range is a hit";
  // Replace two pages in the middle with new memory at the same address.
  ASSERT_TRUE(test::ReplacePages(mem.p + 2 * kPage, 2 * kPage));
  EXPECT_NE(AcquireKey(mem.p + 2 * kPage, kPage), k1) << "stale mapping served after munmap";
  EXPECT_GE(cache_->stats().monitor_events, 1u);
}

TEST_F(UserfaultfdMonitorTest, MapFixedOverARangeIsSeen) {
  Anon mem(4);
  ASSERT_TRUE(mem.ok());
  const uint32_t k1 = AcquireKey(mem.p, 4 * kPage);
  // No munmap call: MAP_FIXED replaces the pages in place.
  ASSERT_EQ(mmap(mem.p, 4 * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                 -1, 0),
            mem.p);
  EXPECT_NE(AcquireKey(mem.p, 4 * kPage), k1);
}

TEST_F(UserfaultfdMonitorTest, MremapAwayIsSeen) {
  Anon mem(4);
  Anon dest(4);
  ASSERT_TRUE(mem.ok() && dest.ok());
  const uint32_t k1 = AcquireKey(mem.p, 4 * kPage);
  ASSERT_EQ(mremap(mem.p, 4 * kPage, 4 * kPage, MREMAP_MAYMOVE | MREMAP_FIXED, dest.p), dest.p);
  ASSERT_EQ(mmap(mem.p, 4 * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                 -1, 0),
            mem.p);
  EXPECT_NE(AcquireKey(mem.p, 4 * kPage), k1) << "the old range kept its mapping";
}

TEST_F(UserfaultfdMonitorTest, MadviseDontneedIsSeen) {
  Anon mem(4);
  ASSERT_TRUE(mem.ok());
  memset(mem.p, 1, mem.len);
  const uint32_t k1 = AcquireKey(mem.p, 4 * kPage);
  ASSERT_EQ(madvise(mem.p + kPage, kPage, MADV_DONTNEED), 0);
  EXPECT_NE(AcquireKey(mem.p, 4 * kPage), k1);
}

TEST_F(UserfaultfdMonitorTest, SharedMemoryIsWatched) {
  Anon shm(4, MAP_SHARED | MAP_ANONYMOUS);
  ASSERT_TRUE(shm.ok());
  const uint32_t k1 = AcquireKey(shm.p, 4 * kPage);
  EXPECT_EQ(AcquireKey(shm.p, kPage), k1) << "shmem should be cached";
  EXPECT_EQ(cache_->stats().uncached_registrations, 0u);
  ASSERT_EQ(munmap(shm.p, shm.len), 0);
  shm.p = static_cast<char*>(MAP_FAILED);
  cache_->ApplyMonitorEvents();
  EXPECT_EQ(fake_->live_registrations(), 0) << "the unmapped range's mapping should be gone";
}

TEST_F(UserfaultfdMonitorTest, GlibcFreeOfALargeBlockIsSeen) {
  if (!::dmareg::testing::kGlibcMalloc) {
    GTEST_SKIP() << "the sanitizer's malloc replaces glibc's (free() keeps the block)";
  }
  const size_t big = 1 << 20;  // above glibc's mmap threshold
  char* block = static_cast<char*>(malloc(big));
  ASSERT_NE(block, nullptr);
  memset(block, 1, big);
  AcquireKey(block, big);
  const uint64_t before = cache_->stats().invalidated_regions;
  free(block);  // glibc munmaps it, inside free()
  cache_->ApplyMonitorEvents();
  EXPECT_EQ(cache_->stats().invalidated_regions, before + 1);
  EXPECT_EQ(fake_->live_registrations(), 0);
}

TEST_F(UserfaultfdMonitorTest, UnwatchableMemoryIsRegisteredButNotCached) {
  // A regular file's page cache cannot be watched by a userfaultfd.
  const int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  void* file = mmap(nullptr, kPage, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  ASSERT_NE(file, MAP_FAILED);
  auto r1 = cache_->Acquire(file, kPage, Access{});
  ASSERT_TRUE(r1.ok()) << r1.status();
  auto r2 = cache_->Acquire(file, kPage, Access{});
  ASSERT_TRUE(r2.ok());
  EXPECT_FALSE(r2->SameMapping(*r1)) << "an unwatchable range must not be served from cache";
  EXPECT_EQ(cache_->stats().uncached_registrations, 2u);
  r1->Reset();
  r2->Reset();
  EXPECT_EQ(fake_->live_registrations(), 0) << "uncached mappings go with their handle";
  munmap(file, kPage);
}

TEST_F(UserfaultfdMonitorTest, SecondMonitorOnTheSameMemoryDoesNotCache) {
  Anon mem(2);
  ASSERT_TRUE(mem.ok());
  AcquireKey(mem.p, 2 * kPage);
  auto other = UserfaultfdMonitor::Create();
  ASSERT_TRUE(other.ok());
  absl::Status watch = (*other)->Watch(mem.p, 2 * kPage);
  EXPECT_EQ(watch.code(), absl::StatusCode::kFailedPrecondition) << watch;
  EXPECT_THAT(std::string(watch.message()), HasSubstr("share one monitor"));
  auto fake2 = std::make_shared<FakeDomain>();
  auto cache2 = RegistrationCache::Create(fake2, {.monitor = *other}).value();
  auto r = cache2->Acquire(mem.p, kPage, Access::kLocalWrite);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(cache2->stats().uncached_registrations, 1u);
}

TEST_F(UserfaultfdMonitorTest, MunmapInsideARegistrationDoesNotDeadlock) {
  // A thread inside a miss (between our locks, in the domain) unmaps watched
  // memory: munmap waits for the reader, which must not wait for the miss.
  Anon watched(2);
  Anon target(2);
  ASSERT_TRUE(watched.ok() && target.ok());
  AcquireKey(watched.p, 2 * kPage);
  bool unmapped = false;
  fake_->SetRegisterHook([&](uintptr_t, size_t) {
    if (!unmapped) unmapped = munmap(watched.p, watched.len) == 0;
  });
  AcquireKey(target.p, 2 * kPage);
  fake_->SetRegisterHook(nullptr);
  EXPECT_TRUE(unmapped);
  watched.p = static_cast<char*>(MAP_FAILED);
  cache_->ApplyMonitorEvents();
  EXPECT_EQ(fake_->live_registrations(), 1) << "only target's mapping should remain";
}

TEST_F(UserfaultfdMonitorTest, ApplicationTouchesTakeNoFault) {
  Anon mem(64);
  ASSERT_TRUE(mem.ok());
  AcquireKey(mem.p, mem.len);
  // Writing every page of watched, never-touched memory must not wait on
  // the reader: with MISSING mode each first touch would be our fault.
  memset(mem.p, 7, mem.len);
  EXPECT_EQ(mem.p[mem.len - 1], 7);
  EXPECT_EQ(monitor_->events(), 0u) << "touching memory is not an event";
}

// Fork: the child must never use its parent's mappings, and dropping them in
// the child must not reach the device (shared descriptors).
TEST_F(UserfaultfdMonitorTest, ForkedChildRefusesAndParentIsUnaffected) {
  Anon mem(4);
  ASSERT_TRUE(mem.ok());
  auto held = cache_->Acquire(mem.p, 4 * kPage, Access::kLocalWrite);
  ASSERT_TRUE(held.ok());
  const int64_t deregs_before = fake_->total_deregistrations();
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int code = 0;
    auto r = cache_->Acquire(mem.p, kPage, Access::kLocalWrite);
    if (r.ok() || r.status().code() != absl::StatusCode::kFailedPrecondition) code |= 1;
    if (!r.ok() && std::string(r.status().message()).find("forked child") == std::string::npos) {
      code |= 2;
    }
    held->Reset();
    (void)cache_->Invalidate(mem.p, mem.len);
    cache_.reset();
    monitor_.reset();
    if (fake_->total_deregistrations() != deregs_before) code |= 4;
    _exit(code);
  }
  const int code = test::ChildExitCode(pid);
  ASSERT_GE(code, 0) << "the child died";
  EXPECT_EQ(code & 1, 0) << "the child was served its parent's mapping";
  EXPECT_EQ(code & 2, 0) << "the child's error should say why";
  EXPECT_EQ(code & 4, 0) << "the child deregistered its parent's mappings";
  auto again = cache_->Acquire(mem.p, kPage, Access::kLocalWrite);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->SameMapping(*held)) << "the parent keeps its cache across a fork";
  // The parent's monitor still works after the fork.
  ASSERT_EQ(munmap(mem.p, mem.len), 0);
  mem.p = static_cast<char*>(MAP_FAILED);
  again->Reset();
  held->Reset();
  cache_->ApplyMonitorEvents();
  EXPECT_EQ(fake_->live_registrations(), 0);
}

TEST(DefaultMonitoringTest, AutomaticIsUserfaultfdOrAClearError) {
  auto cache = RegistrationCache::Create(std::make_shared<FakeDomain>());
  if (!cache.ok()) {
    EXPECT_EQ(cache.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(cache.status().message()), HasSubstr("kExplicitOnly"));
    return;
  }
  EXPECT_EQ((*cache)->monitor().name(), "userfaultfd");
  auto explicit_only = RegistrationCache::Create(std::make_shared<FakeDomain>(),
                                                 {.monitoring = Monitoring::kExplicitOnly});
  ASSERT_TRUE(explicit_only.ok());
  EXPECT_EQ((*explicit_only)->monitor().name(), "explicit");
}

}  // namespace
}  // namespace dmareg
