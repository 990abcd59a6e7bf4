// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The warnings the cache logs, each provoked over the fake domain with a sink
// installed: a monitor overrun, an uncached registration, a stale PFN, the
// automatic-paging fallback and a failed deregistration. Each names the
// device and the range, comes once per event where that is the design, and
// reaches the sink with no lock of the cache held: at every message the sink
// has another thread read the cache's counters, which takes its lock.

#include <sys/mman.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "common/test_memory.h"
#include "dmareg/cache.h"
#include "dmareg/errno_status.h"
#include "dmareg/log.h"
#include "dmareg/monitor.h"
#include "dmareg/testing/fake_domain.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "monitor/invalidation_log.h"

namespace dmareg {
namespace {

using ::dmareg::testing::FakeDomain;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

constexpr size_t kPage = 4096;
constexpr size_t kPages = 16;

// What the sink saw, and whether the cache's lock was free at each message.
struct Seen {
  std::mutex mu;
  std::vector<std::string> lines;
  std::atomic<RegistrationCache*> cache{nullptr};  // probed while set
  std::atomic<int> locked{0};                      // messages under its lock
};

// Reads the cache's counters on another thread and waits for it. Were the
// logging thread holding the cache's lock, that read could never finish;
// the generous bound only turns such a hang into a failure that says why.
void ProbeAndCollect(void* context, LogLevel level, std::string_view text) {
  auto* seen = static_cast<Seen*>(context);
  if (RegistrationCache* cache = seen->cache.load()) {
    auto done = std::make_shared<std::promise<void>>();
    std::future<void> read = done->get_future();
    std::thread probe([cache, done] {
      (void)cache->stats();
      done->set_value();
    });
    if (read.wait_for(std::chrono::seconds(30)) == std::future_status::ready) {
      probe.join();
    } else {
      seen->locked.fetch_add(1);
      probe.detach();  // ends once the logger lets go of the lock
    }
  }
  std::lock_guard<std::mutex> lock(seen->mu);
  seen->lines.push_back(absl::StrFormat("%s: %s", LogLevelName(level), std::string(text)));
}

// Refuses to watch anything, as a userfaultfd monitor refuses a file's pages.
class RefusingMonitor final : public MemoryMonitor {
 public:
  absl::string_view name() const override { return "refusing"; }
  MonitorCoverage coverage() const override { return {}; }
  absl::Status Watch(const void*, size_t) override {
    return absl::FailedPreconditionError("cannot watch this range");
  }
};

std::string Span(const void* p, size_t len) {
  return absl::StrFormat("[%p, %p)", p, static_cast<const char*>(p) + len);
}

class LogEventsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    unsetenv("DMAREG_LOG_LEVEL");
    ResetLogging();
    SetLogSink(&ProbeAndCollect, &seen_);
    // Shared memory: a replaced page never gets its old frame back (PFN test).
    ASSERT_TRUE(mem_.ok()) << std::strerror(errno);
    for (size_t i = 0; i < kPages; ++i) page(i)[0] = 1;  // present, like pinned pages
  }
  void TearDown() override {
    seen_.cache = nullptr;
    cache_.reset();
    ResetLogging();
    EXPECT_EQ(seen_.locked.load(), 0) << "a message reached the sink under the cache's lock";
    EXPECT_EQ(fake_->live_registrations(), 0);
  }
  void MakeCache(CacheOptions options) {
    options.use_environment = false;
    cache_ = RegistrationCache::Create(fake_, std::move(options)).value();
    seen_.cache = cache_.get();
  }
  std::vector<std::string> Lines() {
    std::lock_guard<std::mutex> lock(seen_.mu);
    return seen_.lines;
  }
  char* page(size_t i) { return mem_.data() + i * kPage; }

  Seen seen_;
  std::shared_ptr<FakeDomain> fake_ = std::make_shared<FakeDomain>("nic7");
  std::unique_ptr<RegistrationCache> cache_;
  test::SharedMemfd mem_{"log_events_test", kPages* kPage};
};

TEST_F(LogEventsTest, MonitorOverrunOncePerOverrun) {
  auto monitor = ExplicitMonitor::Create();
  MakeCache({.monitor = monitor});
  ASSERT_TRUE(cache_->Acquire(page(0), kPage, Access::kLocalWrite).ok());  // idle after
  auto held = cache_->Acquire(page(4), kPage, Access::kLocalWrite);
  ASSERT_TRUE(held.ok());
  // Events about other memory, one more than the log holds: lapped.
  for (size_t i = 0; i <= internal::InvalidationLog::kCapacity; ++i) {
    ASSERT_TRUE(monitor->Notify(page(8), kPage).ok());
  }
  ASSERT_TRUE(cache_->Acquire(page(0), kPage, Access::kLocalWrite).ok());
  ASSERT_TRUE(cache_->Acquire(page(1), kPage, Access::kLocalWrite).ok());  // caught up: quiet
  EXPECT_EQ(cache_->stats().monitor_overruns, 1u);
  EXPECT_THAT(Lines(),
              ElementsAre(AllOf(HasSubstr("warn: cache on nic7: fell behind its monitor's log"),
                                HasSubstr("dropped every cached mapping, 1 of them idle"))));
}

TEST_F(LogEventsTest, UncachedRegistrationWarnsOnceThenDebugs) {
  MakeCache({.monitor = std::make_shared<RefusingMonitor>()});
  for (int i = 0; i < 3; ++i) {
    auto r = cache_->Acquire(page(2), 2 * kPage, Access::kLocalWrite);
    ASSERT_TRUE(r.ok()) << r.status();
  }
  EXPECT_EQ(cache_->stats().uncached_registrations, 3u);
  const std::string what =
      absl::StrFormat("cache on nic7: %s registered uncached", Span(page(2), 2 * kPage));
  EXPECT_THAT(Lines(), ElementsAre("warn: " + what +
                                   ": the memory monitor cannot watch it, so "
                                   "each request registers it again"));
  // At debug level every repeat is told too.
  SetLogLevel(LogLevel::kDebug);
  ASSERT_TRUE(cache_->Acquire(page(2), 2 * kPage, Access::kLocalWrite).ok());
  ASSERT_THAT(Lines(), SizeIs(2));
  EXPECT_THAT(Lines()[1], HasSubstr("debug: " + what));
}

TEST_F(LogEventsTest, StalePfnOncePerStaleRegistration) {
  if (geteuid() != 0) GTEST_SKIP() << "PFNs in /proc/self/pagemap need CAP_SYS_ADMIN";
  MakeCache({.monitor = ExplicitMonitor::Create(), .pfn_check_every = 1000});
  uint32_t lkey = 0;
  {
    auto a = cache_->Acquire(page(0), 4 * kPage, Access::kLocalWrite);
    auto b = cache_->Acquire(page(8), 4 * kPage, Access::kLocalWrite);
    ASSERT_TRUE(a.ok() && b.ok());
    lkey = a->lkey();
  }
  ASSERT_TRUE(cache_->CheckPfns().ok());
  EXPECT_THAT(Lines(), IsEmpty()) << "memory left alone reported stale";
  // New pages behind the monitor's back, in the first registration only.
  ASSERT_NE(
      mmap(page(2), kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0),
      MAP_FAILED);
  page(2)[0] = 2;
  auto report = cache_->CheckPfns();
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_THAT(report->stale, SizeIs(1));
  ASSERT_TRUE(cache_->CheckPfns().ok());  // retired: not reported again
  EXPECT_THAT(Lines(), ElementsAre(AllOf(
                           HasSubstr(absl::StrFormat(
                               "warn: cache on nic7: PFN check: [%#x, +%#x) (lkey %#x) is stale "
                               "from page %#x",
                               reinterpret_cast<uintptr_t>(page(0)), 4 * kPage, lkey,
                               reinterpret_cast<uintptr_t>(page(2)))),
                           HasSubstr("retired"))));
}

TEST_F(LogEventsTest, PagingFallbackOncePerSwitch) {
  fake_->mutable_capabilities().on_demand_paging = true;
  fake_->RefuseOnDemand(ErrnoStatus(EOPNOTSUPP, "ibv_reg_mr", "nic7"));
  MakeCache({.monitoring = Monitoring::kExplicitOnly, .paging = Paging::kAutomatic});
  ASSERT_TRUE(cache_->Acquire(page(0), kPage, Access::kLocalWrite).ok());
  ASSERT_TRUE(cache_->Acquire(page(4), kPage, Access::kLocalWrite).ok());  // pinned: quiet
  EXPECT_EQ(cache_->stats().on_demand_fallbacks, 1u);
  EXPECT_EQ(fake_->on_demand_refusals(), 1);
  EXPECT_THAT(Lines(),
              ElementsAre(AllOf(HasSubstr("warn: cache on nic7: on-demand paging refused for " +
                                          Span(page(0), kPage)),
                                HasSubstr("EOPNOTSUPP"))));
}

TEST_F(LogEventsTest, FailedDeregistrationOncePerMapping) {
  MakeCache({.monitoring = Monitoring::kExplicitOnly});
  ASSERT_TRUE(cache_->Acquire(page(0), kPage, Access::kLocalWrite).ok());
  ASSERT_TRUE(cache_->Acquire(page(8), 2 * kPage, Access::kLocalWrite).ok());
  fake_->FailDeregistrations(ErrnoStatus(EIO, "ibv_dereg_mr", "nic7"));
  ASSERT_TRUE(cache_->Invalidate(mem_.data(), mem_.size()).ok());
  EXPECT_EQ(fake_->live_registrations(), 0) << "dropped anyway";
  const std::vector<std::string> lines = Lines();
  ASSERT_THAT(lines, SizeIs(2));
  for (const auto& [p, len] : {std::pair{page(0), kPage}, std::pair{page(8), 2 * kPage}}) {
    const std::string what = "cache on nic7: deregistering " + Span(p, len);
    EXPECT_EQ(std::count_if(lines.begin(), lines.end(),
                            [&](const std::string& l) {
                              return l.find(what) != std::string::npos &&
                                     l.find("EIO") != std::string::npos;
                            }),
              1)
        << what;
  }
}

}  // namespace
}  // namespace dmareg
