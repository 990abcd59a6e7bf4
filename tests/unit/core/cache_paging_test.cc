// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The cache's paging modes over FakeDomain: on-demand registrations need no
// monitor, automatic falls back to pinned on the domain's first refusal (and
// only on a refusal), pinned never asks for on-demand paging.

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <iterator>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "dmareg/cache.h"
#include "dmareg/errno_status.h"
#include "dmareg/testing/fake_domain.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dmareg {
namespace {

using ::dmareg::testing::FakeDomain;
using ::testing::HasSubstr;

class CachePagingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    page_ = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    base_ = static_cast<char*>(
        mmap(nullptr, 64 * page_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    ASSERT_NE(base_, MAP_FAILED);
    fake_->mutable_capabilities().on_demand_paging = true;
  }
  void TearDown() override {
    EXPECT_EQ(fake_->live_registrations(), 0);
    EXPECT_EQ(fake_->total_registrations(), fake_->total_deregistrations());
    munmap(base_, 64 * page_);
  }
  std::unique_ptr<RegistrationCache> MakeCache(Paging paging) {
    auto cache = RegistrationCache::Create(
        fake_, {.monitoring = Monitoring::kExplicitOnly, .paging = paging});
    EXPECT_TRUE(cache.ok()) << cache.status();
    return cache.ok() ? *std::move(cache) : nullptr;
  }
  // The fake's record of the mapping behind `reg`.
  FakeDomain::LiveMapping MappingOf(const Registration& reg) {
    FakeDomain::LiveMapping m;
    EXPECT_TRUE(fake_->Lookup(reg.lkey(), &m)) << "lkey " << reg.lkey();
    return m;
  }
  char* page(size_t i) { return base_ + i * page_; }

  std::shared_ptr<FakeDomain> fake_ = std::make_shared<FakeDomain>();
  size_t page_ = 4096;
  char* base_ = nullptr;
};

TEST_F(CachePagingTest, OnDemandNeedsTheDomainsCapability) {
  fake_->mutable_capabilities().on_demand_paging = false;
  auto cache = RegistrationCache::Create(
      fake_, {.monitoring = Monitoring::kExplicitOnly, .paging = Paging::kOnDemand});
  ASSERT_FALSE(cache.ok());
  EXPECT_EQ(cache.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(cache.status().message(), HasSubstr("no on-demand paging"));
  EXPECT_THAT(cache.status().message(), HasSubstr("fake"));
  // Automatic and pinned do not need it.
  EXPECT_NE(MakeCache(Paging::kAutomatic), nullptr);
  EXPECT_NE(MakeCache(Paging::kPinned), nullptr);
}

TEST_F(CachePagingTest, PagingNames) {
  EXPECT_STREQ(PagingName(Paging::kPinned), "pinned");
  EXPECT_STREQ(PagingName(Paging::kOnDemand), "on-demand");
  EXPECT_STREQ(PagingName(Paging::kAutomatic), "automatic");
}

TEST_F(CachePagingTest, OnDemandMissesRegisterOnDemand) {
  auto cache = MakeCache(Paging::kOnDemand);
  ASSERT_NE(cache, nullptr);
  EXPECT_EQ(cache->paging(), Paging::kOnDemand);
  auto reg = cache->Acquire(page(0), 4 * page_, Access::kRemoteWrite);
  ASSERT_TRUE(reg.ok()) << reg.status();
  EXPECT_TRUE(MappingOf(*reg).on_demand);
  EXPECT_EQ(MappingOf(*reg).length, 4 * page_);
  const CacheStats s = cache->stats();
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(s.on_demand_registrations, 1u);
  EXPECT_EQ(s.on_demand_fallbacks, 0u);
  EXPECT_EQ(s.live_regions, 1u);
}

// No monitor at all (explicit-only, never notified): the memory is replaced
// under a cached on-demand mapping and the next request still hits it, which
// is right because the device follows the page tables.
TEST_F(CachePagingTest, OnDemandMappingsStayCachedWithoutAMonitor) {
  auto cache = MakeCache(Paging::kOnDemand);
  ASSERT_NE(cache, nullptr);
  uint32_t lkey = 0;
  {
    auto reg = cache->Acquire(page(8), 8 * page_, Access::kLocalWrite);
    ASSERT_TRUE(reg.ok()) << reg.status();
    lkey = reg->lkey();
  }
  // munmap + mmap at the same address, then MADV_DONTNEED.
  ASSERT_EQ(munmap(page(8), 8 * page_), 0);
  ASSERT_EQ(mmap(page(8), 8 * page_, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0),
            page(8));
  ASSERT_EQ(madvise(page(8), 8 * page_, MADV_DONTNEED), 0);
  auto again = cache->Acquire(page(9), 2 * page_, Access::kLocalWrite);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->lkey(), lkey);
  EXPECT_EQ(cache->stats().hits, 1u);
  EXPECT_EQ(cache->stats().misses, 1u);
  EXPECT_EQ(fake_->total_registrations(), 1);
}

TEST_F(CachePagingTest, OnDemandMergesForMoreRights) {
  auto cache = MakeCache(Paging::kOnDemand);
  ASSERT_NE(cache, nullptr);
  auto ro = cache->Acquire(page(0), 2 * page_, Access::kRemoteRead);
  ASSERT_TRUE(ro.ok()) << ro.status();
  ro->Reset();
  auto rw = cache->Acquire(page(1), 2 * page_, Access::kRemoteWrite);
  ASSERT_TRUE(rw.ok()) << rw.status();
  const FakeDomain::LiveMapping m = MappingOf(*rw);
  EXPECT_TRUE(m.on_demand);
  EXPECT_EQ(m.addr, reinterpret_cast<uintptr_t>(page(0)));
  EXPECT_EQ(m.length, 3 * page_);
  EXPECT_EQ(fake_->live_registrations(), 1);  // the read-only one is retired
  EXPECT_EQ(cache->stats().on_demand_registrations, 2u);
}

TEST_F(CachePagingTest, OnDemandRefusalIsAnErrorNotAFallback) {
  auto cache = MakeCache(Paging::kOnDemand);
  ASSERT_NE(cache, nullptr);
  fake_->RefuseOnDemand(absl::UnimplementedError("fake: no ODP (EOPNOTSUPP)"));
  auto reg = cache->Acquire(page(0), page_, Access::kLocalWrite);
  ASSERT_FALSE(reg.ok());
  EXPECT_EQ(reg.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(cache->paging(), Paging::kOnDemand);
  EXPECT_EQ(cache->stats().on_demand_fallbacks, 0u);
  EXPECT_EQ(cache->stats().registration_failures, 1u);
  EXPECT_EQ(fake_->total_registrations(), 0);
}

TEST_F(CachePagingTest, AutomaticResolvesToOnDemandWhereAccepted) {
  auto cache = MakeCache(Paging::kAutomatic);
  ASSERT_NE(cache, nullptr);
  EXPECT_EQ(cache->paging(), Paging::kAutomatic);
  auto reg = cache->Acquire(page(0), page_, Access::kLocalWrite);
  ASSERT_TRUE(reg.ok()) << reg.status();
  EXPECT_TRUE(MappingOf(*reg).on_demand);
  EXPECT_EQ(cache->paging(), Paging::kOnDemand);
  EXPECT_EQ(cache->stats().on_demand_registrations, 1u);
}

// Each refusal the domains give (no ODP in the domain, EOPNOTSUPP from a
// newer kernel, EINVAL from rxe on 6.1) switches automatic to pinned once.
class AutomaticFallbackTest : public CachePagingTest,
                              public ::testing::WithParamInterface<absl::Status> {};

TEST_P(AutomaticFallbackTest, FirstRefusalSwitchesToPinnedForGood) {
  auto cache = MakeCache(Paging::kAutomatic);
  ASSERT_NE(cache, nullptr);
  fake_->RefuseOnDemand(GetParam());
  auto reg = cache->Acquire(page(0), 2 * page_, Access::kRemoteRead);
  ASSERT_TRUE(reg.ok()) << reg.status();  // that request went pinned
  EXPECT_FALSE(MappingOf(*reg).on_demand);
  EXPECT_EQ(cache->paging(), Paging::kPinned);
  auto other = cache->Acquire(page(10), page_, Access::kLocalWrite);
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_FALSE(MappingOf(*other).on_demand);
  const CacheStats s = cache->stats();
  EXPECT_EQ(s.on_demand_fallbacks, 1u);
  EXPECT_EQ(s.on_demand_registrations, 0u);
  EXPECT_EQ(s.misses, 2u);
  EXPECT_EQ(s.registration_failures, 0u);
  EXPECT_EQ(fake_->on_demand_refusals(), 1);  // never asked again
  // Accepting again changes nothing: the switch is for good.
  fake_->RefuseOnDemand(absl::OkStatus());
  auto third = cache->Acquire(page(20), page_, Access::kLocalWrite);
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_FALSE(MappingOf(*third).on_demand);
}

INSTANTIATE_TEST_SUITE_P(
    Refusals, AutomaticFallbackTest,
    ::testing::Values(absl::UnimplementedError("on-demand paging is not supported by domain fake"),
                      ErrnoStatus(EOPNOTSUPP, "ibv_reg_mr_iova2", "rxe0"),
                      ErrnoStatus(EINVAL, "ibv_reg_mr_iova2", "rxe0")));

// Other failures (a bad address, no memory) are the request's own: they are
// returned and the mode stays.
TEST_F(CachePagingTest, AutomaticKeepsOnDemandOnOtherErrors) {
  auto cache = MakeCache(Paging::kAutomatic);
  ASSERT_NE(cache, nullptr);
  // An EINVAL in the text but not as the call's errno is no refusal either.
  const absl::Status errors[] = {
      ErrnoStatus(ENOMEM, "ibv_reg_mr_iova2", "fake"),
      ErrnoStatus(EFAULT, "ibv_reg_mr_iova2", "fake"),
      absl::InvalidArgumentError("fake: a message that mentions EINVAL")};
  for (const absl::Status& err : errors) {
    fake_->RefuseOnDemand(err);
    auto reg = cache->Acquire(page(0), page_, Access::kLocalWrite);
    ASSERT_FALSE(reg.ok());
    EXPECT_EQ(reg.status(), err);
    EXPECT_EQ(cache->paging(), Paging::kAutomatic);
  }
  EXPECT_EQ(cache->stats().on_demand_fallbacks, 0u);
  EXPECT_EQ(cache->stats().registration_failures, std::size(errors));
  fake_->RefuseOnDemand(absl::OkStatus());
  auto reg = cache->Acquire(page(0), page_, Access::kLocalWrite);
  ASSERT_TRUE(reg.ok()) << reg.status();
  EXPECT_TRUE(MappingOf(*reg).on_demand);
}

// A refusal after on-demand mappings were made: those stay cached and hit.
TEST_F(CachePagingTest, AutomaticLaterRefusalKeepsTheOnDemandMappings) {
  auto cache = MakeCache(Paging::kAutomatic);
  ASSERT_NE(cache, nullptr);
  auto odp = cache->Acquire(page(0), 4 * page_, Access::kLocalWrite);
  ASSERT_TRUE(odp.ok()) << odp.status();
  fake_->RefuseOnDemand(absl::UnimplementedError("fake: no more ODP"));
  auto pinned = cache->Acquire(page(30), page_, Access::kLocalWrite);
  ASSERT_TRUE(pinned.ok()) << pinned.status();
  EXPECT_FALSE(MappingOf(*pinned).on_demand);
  EXPECT_EQ(cache->paging(), Paging::kPinned);
  auto hit = cache->Acquire(page(1), page_, Access::kLocalWrite);
  ASSERT_TRUE(hit.ok()) << hit.status();
  EXPECT_TRUE(hit->SameMapping(*odp));
  const CacheStats s = cache->stats();
  EXPECT_EQ(s.on_demand_registrations, 1u);
  EXPECT_EQ(s.on_demand_fallbacks, 1u);
  EXPECT_EQ(s.hits, 1u);
}

// Several misses refused at once: each registers pinned, one counts the switch.
TEST_F(CachePagingTest, ConcurrentRefusalsCountOneFallback) {
  auto cache = MakeCache(Paging::kAutomatic);
  ASSERT_NE(cache, nullptr);
  fake_->RefuseOnDemand(absl::UnimplementedError("fake: no ODP"));
  constexpr int kThreads = 8;
  std::vector<std::thread> threads;
  std::vector<int> ok(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto reg = cache->Acquire(page(static_cast<size_t>(4 * t)), page_, Access::kLocalWrite);
      ok[static_cast<size_t>(t)] = reg.ok() ? 1 : 0;
    });
  }
  for (std::thread& t : threads) t.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(ok[static_cast<size_t>(t)], 1) << "thread " << t;
  EXPECT_EQ(cache->stats().on_demand_fallbacks, 1u);
  EXPECT_EQ(cache->paging(), Paging::kPinned);
  for (const FakeDomain::LiveMapping& m : fake_->live_mappings()) EXPECT_FALSE(m.on_demand);
  EXPECT_GE(fake_->on_demand_refusals(), 1);
  EXPECT_LE(fake_->on_demand_refusals(), kThreads);
}

TEST_F(CachePagingTest, PinnedNeverAsksForOnDemand) {
  auto cache = MakeCache(Paging::kPinned);
  ASSERT_NE(cache, nullptr);
  fake_->RefuseOnDemand(absl::InternalError("must not be called"));
  auto reg = cache->Acquire(page(0), page_, Access::kLocalWrite);
  ASSERT_TRUE(reg.ok()) << reg.status();
  EXPECT_FALSE(MappingOf(*reg).on_demand);
  EXPECT_EQ(fake_->on_demand_refusals(), 0);
  EXPECT_EQ(cache->paging(), Paging::kPinned);
  EXPECT_EQ(cache->stats().on_demand_registrations, 0u);
}

TEST_F(CachePagingTest, OnDemandBadInputIsRefusedBeforeTheDomain) {
  auto cache = MakeCache(Paging::kOnDemand);
  ASSERT_NE(cache, nullptr);
  EXPECT_EQ(cache->Acquire(page(0), 0, Access::kLocalWrite).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache->Acquire(page(0), SIZE_MAX, Access::kLocalWrite).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(fake_->total_registrations(), 0);
}

}  // namespace
}  // namespace dmareg
