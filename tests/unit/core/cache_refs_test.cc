// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The reference protocol of CacheCore (see cache_core.h), with per-thread
// tables (where membarrier exists) and with the shared count only: handles
// released on other threads, threads that exit with handles out, eviction
// and Flush racing hits, and the cache going while releases race. The
// checks: a held mapping is never deregistered, every mapping is
// deregistered exactly once, and the books agree at the end.

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "core/cache_core.h"
#include "dmareg/testing/fake_domain.h"
#include "gtest/gtest.h"

namespace dmareg::internal {
namespace {

using testing::FakeDomain;

const uintptr_t kPage = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));

class CacheRefsTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    fake_ = std::make_shared<FakeDomain>();
    mem_ = static_cast<char*>(mmap(nullptr, kPages * kPage, PROT_NONE,
                                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
    ASSERT_NE(mem_, MAP_FAILED);
  }
  void TearDown() override {
    if (core_ != nullptr) core_->Close();
    EXPECT_EQ(fake_->live_registrations(), 0);
    EXPECT_EQ(fake_->deregistration_errors(), 0);
    EXPECT_EQ(fake_->total_registrations(), fake_->total_deregistrations());
    munmap(mem_, kPages * kPage);
  }
  CacheCore* Make(CacheOptions options = {}) {
    core_ = new CacheCore(fake_, ExplicitMonitor::Create(), options, GetParam());
    return core_;
  }
  // Page `i` of the test's memory, one page long.
  Region* Get(int i) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(mem_) + static_cast<uintptr_t>(i) * kPage;
    absl::StatusOr<Region*> r =
        core_->AcquireHost(*Range::FromLength(a, kPage), NormalizeAccess({}));
    return r.ok() ? *r : nullptr;
  }
  bool Registered(const Region* r) const {
    FakeDomain::LiveMapping m;
    return fake_->Lookup(r->lkey, &m);
  }

  static constexpr size_t kPages = 64;
  std::shared_ptr<FakeDomain> fake_;
  char* mem_ = nullptr;
  CacheCore* core_ = nullptr;
};

TEST_P(CacheRefsTest, ReleaseOnAnotherThreadThenInvalidate) {
  CacheCore* core = Make();
  Region* r = Get(0);
  ASSERT_NE(r, nullptr);
  ASSERT_EQ(Get(0), r);  // a hit: two references
  std::thread([&] { core->Release(r); }).join();
  core->Invalidate(*Range::FromLength(reinterpret_cast<uintptr_t>(mem_), kPage));
  EXPECT_TRUE(Registered(r));  // one handle still out
  std::thread([&] { core->Release(r); }).join();
  EXPECT_EQ(fake_->live_registrations(), 0);
}

TEST_P(CacheRefsTest, ThreadExitsWithHandlesOut) {
  CacheCore* core = Make();
  std::vector<Region*> held;
  std::thread([&] {
    for (int i = 0; i < 16; ++i) {
      held.push_back(Get(i));  // miss
      core->Release(Get(i));   // hit, released
    }
  }).join();
  for (Region* r : held) ASSERT_NE(r, nullptr);
  // A later thread (likely on the exited thread's slot) hits them too.
  std::thread([&] {
    for (int i = 0; i < 16; ++i) {
      Region* r = Get(i);
      EXPECT_EQ(r, held[i]);
      core->Release(r);
    }
  }).join();
  core->Invalidate(*Range::FromLength(reinterpret_cast<uintptr_t>(mem_), 16 * kPage));
  EXPECT_EQ(fake_->live_registrations(), 16);
  EXPECT_EQ(core->stats().referenced_regions, 16u);
  for (Region* r : held) core->Release(r);
  EXPECT_EQ(fake_->live_registrations(), 0);
  EXPECT_EQ(core->stats().referenced_regions, 0u);
}

// Hitters hold and drop handles while the main thread evicts (tight limits,
// Flush, SetLimits): a held mapping must stay registered throughout.
TEST_P(CacheRefsTest, EvictionRacingHits) {
  CacheCore* core = Make({.max_regions = 12});
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::atomic<uint64_t> holds{0};
  auto hitter = [&](int id) {
    std::mt19937 rng(id);
    while (!stop.load(std::memory_order_relaxed)) {
      Region* r = Get(static_cast<int>(rng() % 24));
      if (r == nullptr) continue;  // full of held regions: allowed
      if (!Registered(r)) failures++;
      std::this_thread::yield();
      if (!Registered(r)) failures++;
      core->Release(r);
      holds++;
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) threads.emplace_back(hitter, i);
  // At least 2,000 rounds, and until the hitters got going (they may start
  // late on a loaded machine); at most ~20 s.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  for (int round = 0;
       (round < 2000 || holds.load() < 2000) && std::chrono::steady_clock::now() < deadline;
       ++round) {
    if (round % 3 == 0) core->Flush();
    (void)core->SetLimits({.max_regions = static_cast<size_t>(4 + round % 9)});
    if (round % 7 == 0) {
      const int i = round % 24;
      const uintptr_t a = reinterpret_cast<uintptr_t>(mem_) + i * kPage;
      core->Invalidate(*Range::FromLength(a, kPage));
    }
  }
  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GT(holds.load(), 0u);
  const CacheStats s = core->stats();
  EXPECT_EQ(static_cast<int64_t>(s.live_regions), fake_->live_registrations());
  EXPECT_EQ(s.referenced_regions, 0u);
}

// The owner goes while other threads drop the last handles: whoever frees
// the last region deletes the cache, and no release may touch it after.
TEST_P(CacheRefsTest, CacheGoesWhileReleasesRace) {
  for (int round = 0; round < 200; ++round) {
    CacheCore* core = Make();
    std::vector<Region*> regs;
    for (int i = 0; i < 8; ++i) regs.push_back(Get(i % 4));  // hits among them
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([core, r1 = regs[t], r2 = regs[t + 4]] {
        core->Release(r1);
        core->Release(r2);
      });
    }
    core->Close();
    core_ = nullptr;
    for (auto& t : threads) t.join();
    ASSERT_EQ(fake_->live_registrations(), 0) << "round " << round;
  }
}

INSTANTIATE_TEST_SUITE_P(Protocols, CacheRefsTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? "ThreadTables" : "SharedCount";
                         });

}  // namespace
}  // namespace dmareg::internal
