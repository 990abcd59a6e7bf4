// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The randomized memory soak (tests/common/soak.h) against the fake domain,
// with a model of page generations as the checker: every page the soak
// replaces gets a new generation, every fake registration records the clock
// when it began, and a registration handed out over a page replaced after
// it began is a stale translation. The same soak runs on rxe in the VM
// (tests/device/verbs/verbs_monitor_test.cc) with RDMA and real bytes.
#include "common/soak.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "common/sanitizers.h"
#include "dmareg/c/hooks.h"
#include "dmareg/cache.h"
#include "dmareg/monitor.h"
#include "dmareg/testing/fake_domain.h"
#include "gtest/gtest.h"

namespace dmareg {
namespace {

using testing::FakeDomain;

const uintptr_t kPage = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));

// DMAREG_SOAK_THREADS / DMAREG_SOAK_SEED override the defaults (4, 42) to
// chase a failure.
int SoakThreads() {
  const char* v = getenv("DMAREG_SOAK_THREADS");
  return v != nullptr ? atoi(v) : 4;
}
uint64_t SoakSeed() {
  const char* v = getenv("DMAREG_SOAK_SEED");
  return v != nullptr ? strtoull(v, nullptr, 10) : 42;
}

class ModelChecker : public soak::Checker {
 public:
  // `notify`: a monitor told of every replacement (an application's
  // explicit notifications), or null.
  ModelChecker(FakeDomain& fake, MemoryMonitor* notify) : fake_(fake), notify_(notify) {
    fake_.SetTagSource([this] { return clock_.load(); });
  }
  ~ModelChecker() override { fake_.SetTagSource(nullptr); }

  // The ticket is the replacement's time: taken before the change, so a
  // registration that began after it (of the new pages, perhaps by another
  // thread that got the address) is never taken for stale.
  uint64_t BeginReplace() override { return ++clock_; }
  void EndReplace(uint64_t ticket, uintptr_t a, uintptr_t b) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (uintptr_t p = a; p < b; p += kPage) {
        uint64_t& g = gen_[p];
        g = std::max(g, ticket);
      }
    }
    if (notify_ != nullptr) (void)notify_->Notify(reinterpret_cast<void*>(a), b - a);
  }
  // Unordered phase: the pages are new as of a time taken after malloc
  // returned them; a registration that began before is stale.
  void Obtained(uintptr_t a, uintptr_t b) override { EndReplace(++clock_, a, b); }

  absl::Status Check(int, const Registration& reg, char* p, size_t len, uint32_t) override {
    FakeDomain::LiveMapping m;
    if (!fake_.Lookup(reg.lkey(), &m)) {
      return absl::InternalError("the handle's mapping is no longer registered");
    }
    const uintptr_t first = reinterpret_cast<uintptr_t>(p) & ~(kPage - 1);
    const uintptr_t end = reinterpret_cast<uintptr_t>(p) + len;
    std::lock_guard<std::mutex> lock(mu_);
    for (uintptr_t q = first; q < end; q += kPage) {
      auto it = gen_.find(q);
      if (it != gen_.end() && it->second > m.tag) {
        return absl::DataLossError(absl::StrFormat(
            "stale translation: page %#x replaced at %u, its mapping (lkey %u) began at %u", q,
            it->second, reg.lkey(), m.tag));
      }
    }
    return absl::OkStatus();
  }

 private:
  FakeDomain& fake_;
  MemoryMonitor* const notify_;
  std::atomic<uint64_t> clock_{0};
  std::mutex mu_;
  absl::flat_hash_map<uintptr_t, uint64_t> gen_;  // page -> last replacement
};

enum class Watcher { kUserfaultfd, kExplicit, kHooks };

struct SoakCase {
  const char* name;
  Watcher watcher;
  size_t max_regions;
  uint64_t unordered_ops;  // of the unordered malloc phase (hooks only)
};

// Why glibc's free() cannot be raced here, or empty.
std::string NoGlibcFree() {
  if (!testing::kGlibcMalloc) return "the sanitizer's malloc replaces glibc's (free() keeps it)";
  if (dmareg_hooks_decodes_malloc() == 0) return "libdmareg_hooks does not decode this malloc";
  return "";
}

class SoakTest : public ::testing::TestWithParam<SoakCase> {};

TEST_P(SoakTest, NoStaleTranslationNoLeak) {
  const SoakCase& c = GetParam();
  auto fake = std::make_shared<FakeDomain>();
  fake->RequireMappedMemory(true);
  std::shared_ptr<MemoryMonitor> monitor;
  if (c.watcher == Watcher::kUserfaultfd) {
    auto uffd = UserfaultfdMonitor::Create();
    if (!uffd.ok()) GTEST_SKIP() << "no userfaultfd for this process: " << uffd.status();
    monitor = *uffd;
  } else if (c.watcher == Watcher::kHooks) {
    if (std::string why = NoGlibcFree(); !why.empty()) GTEST_SKIP() << why;
    auto hooks = HooksMonitor::Create();
    ASSERT_TRUE(hooks.ok()) << "the test links libdmareg_hooks: " << hooks.status();
    monitor = *hooks;
  } else {
    monitor = ExplicitMonitor::Create();
  }
  const bool explicit_notes = c.watcher == Watcher::kExplicit;
  auto cache =
      RegistrationCache::Create(fake, {.max_regions = c.max_regions, .monitor = monitor}).value();
  ModelChecker checker(*fake, explicit_notes ? monitor.get() : nullptr);
  const soak::Result r = soak::Run(*cache, checker,
                                   {.threads = SoakThreads(),
                                    .ops = 100000,
                                    .seed = SoakSeed(),
                                    .unordered_malloc_ops = c.unordered_ops});
  const CacheStats s = cache->stats();
  EXPECT_EQ(r.failures, 0u) << r.first_failure;
  EXPECT_EQ(r.ops, 100000u);
  EXPECT_EQ(r.unordered_ops, c.unordered_ops);
  EXPECT_GT(r.munmaps + r.mremaps + r.madvises, 10000u) << r.Summary();
  EXPECT_GT(s.monitor_events, 1000u) << "the monitor saw almost nothing";
  EXPECT_GT(s.hits, 1000u);
  cache.reset();
  EXPECT_EQ(fake->live_registrations(), 0) << "registrations leaked";
  RecordProperty("summary", r.Summary());
  std::printf("%s\n  cache: %u hits, %u misses, %u monitor events, %u evictions\n",
              r.Summary().c_str(), static_cast<unsigned>(s.hits), static_cast<unsigned>(s.misses),
              static_cast<unsigned>(s.monitor_events), static_cast<unsigned>(s.evictions));
}

INSTANTIATE_TEST_SUITE_P(Monitors, SoakTest,
                         ::testing::Values(SoakCase{"userfaultfd", Watcher::kUserfaultfd, 0, 0},
                                           SoakCase{"userfaultfd_limited", Watcher::kUserfaultfd,
                                                    64, 0},
                                           SoakCase{"explicit", Watcher::kExplicit, 0, 0},
                                           // Then glibc's malloc/free raced freely.
                                           SoakCase{"hooks", Watcher::kHooks, 0, 20000}),
                         [](const auto& p) { return std::string(p.param.name); });

// The checker can fail: with nobody telling the cache about unmaps, the same
// soak must catch stale translations.
TEST(SoakCheckerTest, CatchesAnUnmonitoredCache) {
  auto fake = std::make_shared<FakeDomain>();
  auto cache = RegistrationCache::Create(fake, {.monitoring = Monitoring::kExplicitOnly}).value();
  ModelChecker checker(*fake, nullptr);
  const soak::Result r = soak::Run(*cache, checker, {.threads = 1, .ops = 20000, .seed = 3});
  EXPECT_GT(r.failures, 0u) << "the model let stale translations through: " << r.Summary();
}

// The unordered phase's model can fail too: freed blocks nobody reports are
// malloc'd again and served their old registrations.
TEST(SoakCheckerTest, UnorderedPhaseCatchesAnUnmonitoredCache) {
  if (std::string why = NoGlibcFree(); !why.empty()) GTEST_SKIP() << why;
  auto fake = std::make_shared<FakeDomain>();
  auto cache = RegistrationCache::Create(fake, {.monitoring = Monitoring::kExplicitOnly}).value();
  ModelChecker checker(*fake, nullptr);
  const soak::Result r =
      soak::Run(*cache, checker, {.threads = 1, .ops = 0, .seed = 3, .unordered_malloc_ops = 2000});
  EXPECT_EQ(r.unordered_ops, 2000u);
  EXPECT_GT(r.failures, 0u) << "the model let stale translations through: " << r.Summary();
}

// The userfaultfd monitor alone in the unordered phase: the window is a
// race, so stale translations are counted and reported, not asserted (the
// deterministic window is asserted in monitor_window_test.cc).
TEST(SoakUnorderedTest, UserfaultfdAloneIsCounted) {
  if (std::string why = NoGlibcFree(); !why.empty()) GTEST_SKIP() << why;
  auto uffd = UserfaultfdMonitor::Create();
  if (!uffd.ok()) GTEST_SKIP() << "no userfaultfd for this process: " << uffd.status();
  auto fake = std::make_shared<FakeDomain>();
  auto cache = RegistrationCache::Create(fake, {.monitor = *uffd}).value();
  ModelChecker checker(*fake, nullptr);
  const soak::Result r = soak::Run(
      *cache, checker, {.threads = 6, .ops = 0, .seed = SoakSeed(), .unordered_malloc_ops = 20000});
  EXPECT_EQ(r.unordered_ops, 20000u);
  if (r.failures > 0) {
    EXPECT_NE(r.first_failure.find("stale translation"), std::string::npos) << r.first_failure;
  }
  RecordProperty("stale", static_cast<int>(r.failures));
  std::printf("userfaultfd alone, unordered: %s\n", r.Summary().c_str());
  cache.reset();
  EXPECT_EQ(fake->live_registrations(), 0) << "registrations leaked";
}

}  // namespace
}  // namespace dmareg
