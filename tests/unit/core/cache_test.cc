// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/cache.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/test_memory.h"
#include "dmareg/errno_status.h"
#include "dmareg/testing/fake_domain.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dmareg {
namespace {

using ::testing::AllOf;
using testing::FakeDomain;
using ::testing::HasSubstr;

const size_t kPage = static_cast<size_t>(sysconf(_SC_PAGESIZE));

class CacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fake_ = std::make_shared<FakeDomain>();
    cache_ = RegistrationCache::Create(fake_, {.monitoring = Monitoring::kExplicitOnly}).value();
    // Address space we never touch: the fake registers nothing real.
    base_ = static_cast<char*>(
        mmap(nullptr, 1024 * kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    ASSERT_NE(base_, MAP_FAILED);
  }
  void TearDown() override {
    cache_.reset();
    EXPECT_EQ(fake_->live_registrations(), 0) << "registrations leaked";
    munmap(base_, 1024 * kPage);
  }
  char* page(size_t i) { return base_ + i * kPage; }

  std::shared_ptr<FakeDomain> fake_;
  std::unique_ptr<RegistrationCache> cache_;
  char* base_ = nullptr;
};

TEST_F(CacheTest, MissThenHitsInsideTheSpan) {
  auto r1 = cache_->Acquire(page(10), 4 * kPage, Access::kLocalWrite);
  ASSERT_TRUE(r1.ok()) << r1.status();
  EXPECT_EQ(r1->addr(), page(10));
  EXPECT_EQ(r1->length(), 4 * kPage);
  EXPECT_EQ(r1->IovaFor(page(11)), reinterpret_cast<uint64_t>(page(11)));
  auto r2 = cache_->Acquire(page(11) + 100, 2 * kPage, Access::kLocalWrite);
  ASSERT_TRUE(r2.ok());
  EXPECT_TRUE(r2->SameMapping(*r1));
  EXPECT_EQ(r2->lkey(), r1->lkey());
  EXPECT_EQ(r2->rkey(), r1->rkey());
  const CacheStats s = cache_->stats();
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(s.hits, 1u);
  EXPECT_EQ(s.live_regions, 1u);
  EXPECT_EQ(s.registered_bytes, 4 * kPage);
  EXPECT_EQ(s.referenced_regions, 1u);
  EXPECT_EQ(fake_->total_registrations(), 1);
}

// Misuse has a defined outcome: an empty handle (default or moved-from)
// reads as a mapping of nothing, and releasing it again does nothing.
TEST_F(CacheTest, AnEmptyHandleReadsAsNothing) {
  auto r = cache_->Acquire(page(10), kPage, Access::kLocalWrite);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_NE(r->lkey(), 0u) << "the fake's keys are never 0, or this proves nothing";
  Registration taken = std::move(*r);
  const Registration fresh;
  for (const Registration* e : {const_cast<const Registration*>(&*r), &fresh}) {
    EXPECT_FALSE(e->valid());
    EXPECT_EQ(e->lkey(), 0u);
    EXPECT_EQ(e->rkey(), 0u);
    EXPECT_EQ(e->iova(), 0u);
    EXPECT_EQ(e->addr(), nullptr);
    EXPECT_EQ(e->length(), 0u);
    EXPECT_EQ(e->access(), AccessFlags());
    EXPECT_FALSE(e->is_dmabuf());
    EXPECT_EQ(e->IovaFor(page(10)), 0u);
    EXPECT_EQ(e->info().lkey, 0u);
  }
  FakeDomain::LiveMapping live;
  EXPECT_TRUE(fake_->Lookup(taken.lkey(), &live)) << "the moved-to handle has the mapping";
  r->Reset();  // empty already: nothing
  taken.Reset();
  taken.Reset();  // twice: nothing
  EXPECT_EQ(cache_->stats().referenced_regions, 0u);
}

TEST_F(CacheTest, SpansAreRoundedToPages) {
  auto r = cache_->Acquire(page(3) + 7, 10, {});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->addr(), page(3));
  EXPECT_EQ(r->length(), kPage);
  auto live = fake_->live_mappings();
  ASSERT_EQ(live.size(), 1u);
  EXPECT_EQ(live[0].addr, reinterpret_cast<uintptr_t>(page(3)));
  EXPECT_EQ(live[0].length, kPage);
}

// Hugetlb memory goes in whole huge pages (the kernel unmaps no less): a
// request for a few bytes registers the huge page around them, a request
// anywhere in it hits, and an invalidation of any page of it retires it.
TEST_F(CacheTest, HugetlbSpansCoverWholeHugePages) {
  constexpr size_t k2M = size_t{2} << 20;
  test::Mapping huge(2 * k2M, PROT_READ | PROT_WRITE, MAP_HUGETLB | (21 << MAP_HUGE_SHIFT));
  if (!huge.ok()) GTEST_SKIP() << "no 2 MiB huge pages reserved (vm.nr_hugepages)";
  char* const second = huge.data() + k2M;
  auto r = cache_->Acquire(second + 5 * kPage + 3, 10, Access::kLocalWrite);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->addr(), second);
  EXPECT_EQ(r->length(), k2M);
  ASSERT_EQ(fake_->live_mappings().size(), 1u);
  EXPECT_EQ(fake_->live_mappings()[0].length, k2M);
  auto hit = cache_->Acquire(second + k2M - kPage, kPage, Access::kLocalWrite);
  ASSERT_TRUE(hit.ok()) << hit.status();
  EXPECT_TRUE(hit->SameMapping(*r));
  EXPECT_EQ(cache_->stats().hits, 1u);
  // Across both huge pages: one mapping of both, the first one retired.
  auto both = cache_->Acquire(second - 1, 2, Access::kLocalWrite);
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_EQ(both->addr(), huge.data());
  EXPECT_EQ(both->length(), 2 * k2M);
  r->Reset();
  hit->Reset();
  // Any page of it invalidated: the whole mapping goes.
  ASSERT_TRUE(cache_->Invalidate(huge.data() + 7 * kPage, kPage).ok());
  auto again = cache_->Acquire(second, kPage, Access::kLocalWrite);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->SameMapping(*both));
  EXPECT_EQ(again->length(), k2M);
  EXPECT_EQ(cache_->stats().misses, 3u);
}

TEST_F(CacheTest, BadInputIsInvalidArgumentAndRegistersNothing) {
  EXPECT_EQ(cache_->Acquire(page(1), 0, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache_->Acquire(nullptr, 10, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache_->Acquire(reinterpret_cast<void*>(UINTPTR_MAX - 100), 1000, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache_->Acquire(reinterpret_cast<void*>(UINTPTR_MAX - 100), 10, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto unknown = cache_->Acquire(page(1), 10, AccessFlags::FromBits(1u << 9));
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(), HasSubstr("unknown access bits"));
  EXPECT_EQ(cache_->Invalidate(page(1), 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache_->Acquire(DmaBufMemory{.fd = -1, .length = 10}, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(fake_->total_registrations(), 0);
}

// The last page of the address space [2^64 - page, 2^64) has an end no
// page-rounded span can name: requests touching it are refused, whether or
// not anything else is cached, and nothing is registered for them.
constexpr uintptr_t kLastPage = ~uintptr_t{0} & ~uintptr_t{0xfff};

void* At(uintptr_t a) { return reinterpret_cast<void*>(a); }

TEST_F(CacheTest, RequestsTouchingTheLastPageAreRefusedOnAnEmptyCache) {
  for (auto [addr, len] : {std::pair{kLastPage, size_t{1}}, std::pair{kLastPage - kPage, kPage + 1},
                           std::pair{kLastPage + 0x800, size_t{0x7ff}}}) {
    auto r = cache_->Acquire(At(addr), len, {});
    ASSERT_FALSE(r.ok()) << std::hex << addr << " +" << len;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr("last page"));
  }
  EXPECT_EQ(fake_->total_registrations(), 0);
  EXPECT_EQ(cache_->stats().live_regions, 0u);
  EXPECT_EQ(cache_->stats().registration_failures, 0u) << "refused before the domain";
}

TEST_F(CacheTest, RequestsTouchingTheLastPageNeverGetAnotherMapping) {
  // Before the fix, a span whose rounded end wrapped to 0 was "covered" by
  // any cached mapping.
  auto held = cache_->Acquire(page(5), kPage, {});
  ASSERT_TRUE(held.ok());
  auto r = cache_->Acquire(At(kLastPage), 1, {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  r = cache_->Acquire(At(kLastPage - kPage), kPage + 1, {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache_->stats().hits, 0u);
  EXPECT_EQ(fake_->total_registrations(), 1);
}

TEST_F(CacheTest, ThePageBeforeTheLastIsCachedAndInvalidatedByARangeReachingTheTop) {
  // The fake registers any address: a mapping right below the last page.
  auto r = cache_->Acquire(At(kLastPage - kPage), kPage, {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->length(), kPage);
  r->Reset();
  ASSERT_EQ(fake_->live_registrations(), 1);
  // Its page rounded out used to wrap to [x, 0) and retire nothing.
  ASSERT_TRUE(cache_->Invalidate(At(kLastPage - kPage), kPage + 1).ok());
  EXPECT_EQ(cache_->stats().invalidated_regions, 1u);
  EXPECT_EQ(fake_->live_registrations(), 0);
  // A range ending on the very last byte invalidates too (and wraps nowhere).
  ASSERT_TRUE(cache_->Acquire(At(kLastPage - kPage), kPage, {}).ok());
  ASSERT_TRUE(cache_->Invalidate(At(kLastPage - kPage), 2 * kPage - 1).ok());
  EXPECT_EQ(cache_->stats().invalidated_regions, 2u);
  EXPECT_EQ(fake_->live_registrations(), 0);
}

TEST_F(CacheTest, ACallersIovaIsRefusedTheCachePicksIovas) {
  auto r = cache_->Acquire(HostMemory{page(2), kPage, uint64_t{0x100000}}, {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("picks IOVAs"));
  EXPECT_EQ(fake_->total_registrations(), 0);
}

TEST_F(CacheTest, TheDomainGetsEachMappingsExtentBack) {
  // FakeDomain::Deregister refuses a mapping whose IOVA or length differs
  // from what it registered; none may be refused.
  {
    auto a = cache_->Acquire(page(80), 3 * kPage, {});
    auto b = cache_->Acquire(page(82), 4 * kPage, Access::kRemoteWrite);  // merges
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(b->length(), 6 * kPage);
  }
  cache_->Flush();
  EXPECT_EQ(fake_->live_registrations(), 0);
  EXPECT_EQ(fake_->total_deregistrations(), 2);
  EXPECT_EQ(fake_->deregistration_errors(), 0);
}

TEST_F(CacheTest, MoreAccessRegistersTheUnionAndRetiresTheOld) {
  auto ro = cache_->Acquire(page(20), 4 * kPage, Access::kRemoteRead);
  ASSERT_TRUE(ro.ok());
  auto rw = cache_->Acquire(page(22), 4 * kPage, Access::kRemoteWrite);
  ASSERT_TRUE(rw.ok());
  EXPECT_FALSE(rw->SameMapping(*ro));
  // Union of spans and rights; remote write brought local write with it.
  EXPECT_EQ(rw->addr(), page(20));
  EXPECT_EQ(rw->length(), 6 * kPage);
  EXPECT_TRUE(rw->access().Has(Access::kRemoteRead | Access::kRemoteWrite));
  EXPECT_TRUE(rw->access().Has(Access::kLocalWrite));
  // The old mapping stays valid for its holder but is no longer handed out.
  EXPECT_EQ(fake_->live_registrations(), 2);
  auto again = cache_->Acquire(page(20), kPage, Access::kRemoteRead);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->SameMapping(*rw));
  ro->Reset();
  EXPECT_EQ(fake_->live_registrations(), 1);
}

TEST_F(CacheTest, InvalidateRetiresAtOnceAndDeregistersWithTheLastHandle) {
  auto held = cache_->Acquire(page(40), 2 * kPage, Access::kLocalWrite);
  ASSERT_TRUE(held.ok());
  const uint32_t old_lkey = held->lkey();
  ASSERT_TRUE(cache_->Invalidate(page(41), 1).ok());
  EXPECT_EQ(fake_->live_registrations(), 1) << "deregistered under the holder's feet";
  auto fresh = cache_->Acquire(page(40), 2 * kPage, Access::kLocalWrite);
  ASSERT_TRUE(fresh.ok());
  EXPECT_NE(fresh->lkey(), old_lkey);
  EXPECT_EQ(held->lkey(), old_lkey);  // the holder's view is unchanged
  held->Reset();
  EXPECT_EQ(fake_->live_registrations(), 1);
  const CacheStats s = cache_->stats();
  EXPECT_EQ(s.invalidations, 1u);
  EXPECT_EQ(s.invalidated_regions, 1u);
}

TEST_F(CacheTest, InvalidateOfUnreferencedDeregistersNowAndOfUnknownRangeIsANoop) {
  { ASSERT_TRUE(cache_->Acquire(page(50), kPage, {}).ok()); }
  EXPECT_EQ(fake_->live_registrations(), 1);
  ASSERT_TRUE(cache_->Invalidate(page(50), kPage).ok());
  EXPECT_EQ(fake_->live_registrations(), 0);
  ASSERT_TRUE(cache_->Invalidate(page(500), 100 * kPage).ok());
  EXPECT_EQ(cache_->stats().invalidated_regions, 1u);
}

TEST_F(CacheTest, InvalidateDuringARegistrationRedoesIt) {
  int calls = 0;
  fake_->SetRegisterHook([&](uintptr_t, size_t) {
    if (calls++ == 0) {
      ASSERT_TRUE(cache_->Invalidate(page(60), kPage).ok());
    }
  });
  auto r = cache_->Acquire(page(60), kPage, {});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(cache_->stats().retried_registrations, 1u);
  EXPECT_EQ(fake_->live_registrations(), 1);
  fake_->SetRegisterHook(nullptr);
}

TEST_F(CacheTest, EndlessInvalidationsStillMakeProgress) {
  // Every optimistic attempt is raced by an Invalidate; the final attempt
  // holds the cache lock across the registration and so cannot be.
  int calls = 0;
  fake_->SetRegisterHook([&](uintptr_t, size_t) {
    if (++calls <= 3) {
      ASSERT_TRUE(cache_->Invalidate(page(70), kPage).ok());
    }
  });
  auto r = cache_->Acquire(page(70), kPage, {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(calls, 4);
  EXPECT_EQ(fake_->live_registrations(), 1);
  fake_->SetRegisterHook(nullptr);
}

TEST_F(CacheTest, RegistrationFailureIsReportedAndLosesNothing) {
  fake_->FailNextRegistrations(1, absl::ResourceExhaustedError("ibv_reg_mr on fake: ENOMEM"));
  auto r = cache_->Acquire(page(80), kPage, {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(r.status().message(), HasSubstr("ENOMEM"));
  EXPECT_EQ(cache_->stats().registration_failures, 1u);
  EXPECT_EQ(cache_->stats().live_regions, 0u);
  EXPECT_TRUE(cache_->Acquire(page(80), kPage, {}).ok());
}

// The kernel's limits (memlock, the device's MR table) count what the cache
// holds idle too: a refusal for want of room evicts it and retries once.
TEST_F(CacheTest, RefusedForRoomEvictsTheIdleAndRetriesOnce) {
  auto held = cache_->Acquire(page(200), kPage, {});
  ASSERT_TRUE(held.ok());
  for (size_t i = 1; i <= 3; ++i) ASSERT_TRUE(cache_->Acquire(page(200 + 2 * i), kPage, {}).ok());
  ASSERT_EQ(fake_->live_registrations(), 4);
  fake_->FailNextRegistrations(1, ErrnoStatus(ENOMEM, "ibv_reg_mr", "fake", "over RLIMIT_MEMLOCK"));
  auto r = cache_->Acquire(page(220), kPage, {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(cache_->stats().evictions, 3u);
  EXPECT_EQ(cache_->stats().registration_failures, 1u);
  EXPECT_EQ(fake_->live_registrations(), 2);  // the held one and the new one
  EXPECT_TRUE(held->SameMapping(*cache_->Acquire(page(200), kPage, {})));
}

TEST_F(CacheTest, RefusedForRoomTwiceSaysWhatTheCacheHolds) {
  auto held = cache_->Acquire(page(300), 2 * kPage, {});
  ASSERT_TRUE(held.ok());
  ASSERT_TRUE(cache_->Acquire(page(304), kPage, {}).ok());  // idle
  fake_->FailNextRegistrations(2, ErrnoStatus(ENOMEM, "ibv_reg_mr", "fake", "over RLIMIT_MEMLOCK"));
  auto r = cache_->Acquire(page(320), kPage, {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ErrnoOf(r.status()), ENOMEM) << "the errno survives";
  EXPECT_THAT(
      r.status().message(),
      AllOf(HasSubstr("over RLIMIT_MEMLOCK"),
            HasSubstr(absl::StrFormat("the cache on fake holds %u bytes in 1 mappings", 2 * kPage)),
            HasSubstr("evicted 1 unreferenced and retried once")));
  EXPECT_EQ(fake_->live_registrations(), 1);

  // Everything referenced: nothing to evict, one try, said so.
  fake_->FailNextRegistrations(1, ErrnoStatus(ENOMEM, "ibv_reg_mr", "fake", "over RLIMIT_MEMLOCK"));
  r = cache_->Acquire(page(330), kPage, {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(r.status().message(), HasSubstr("every one referenced: nothing to evict"));
  EXPECT_EQ(cache_->stats().registration_failures, 3u);
  // Once the limit allows, it works.
  EXPECT_TRUE(cache_->Acquire(page(330), kPage, {}).ok());
  EXPECT_EQ(fake_->live_registrations(), 2);
}

TEST_F(CacheTest, MaxMrSizeIsAClearError) {
  cache_.reset();  // a cache reads the capabilities when it is made
  fake_->mutable_capabilities().max_mapping_bytes = 8 * kPage;
  cache_ = RegistrationCache::Create(fake_, {.monitoring = Monitoring::kExplicitOnly}).value();
  auto r = cache_->Acquire(page(0), 9 * kPage, {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("largest mapping"));
}

TEST_F(CacheTest, EvictsLeastRecentlyUsedUnreferencedToKeepLimits) {
  ASSERT_TRUE(cache_->SetLimits({.max_regions = 3}).ok());
  for (size_t i = 0; i < 3; ++i) ASSERT_TRUE(cache_->Acquire(page(100 + 2 * i), kPage, {}).ok());
  // Touch the first two: the third is the least recently used.
  ASSERT_TRUE(cache_->Acquire(page(100), kPage, {}).ok());
  ASSERT_TRUE(cache_->Acquire(page(102), kPage, {}).ok());
  ASSERT_TRUE(cache_->Acquire(page(110), kPage, {}).ok());
  EXPECT_EQ(fake_->live_registrations(), 3);
  EXPECT_EQ(cache_->stats().evictions, 1u);
  for (const auto& m : fake_->live_mappings()) {
    EXPECT_NE(m.addr, reinterpret_cast<uintptr_t>(page(104))) << "evicted the wrong one";
  }
}

TEST_F(CacheTest, ReferencedRegionsAreNeverEvicted) {
  ASSERT_TRUE(cache_->SetLimits({.max_regions = 2}).ok());
  auto a = cache_->Acquire(page(200), kPage, {});
  auto b = cache_->Acquire(page(202), kPage, {});
  ASSERT_TRUE(a.ok() && b.ok());
  auto c = cache_->Acquire(page(204), kPage, {});
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(c.status().message(), HasSubstr("nothing unreferenced to evict"));
  EXPECT_EQ(fake_->live_registrations(), 2);
  b->Reset();
  EXPECT_TRUE(cache_->Acquire(page(204), kPage, {}).ok());
  EXPECT_TRUE(a->valid());
  EXPECT_EQ(fake_->live_registrations(), 2);
}

TEST_F(CacheTest, ByteLimitAndShrinkingLimits) {
  ASSERT_TRUE(cache_->SetLimits({.max_bytes = 8 * kPage}).ok());
  for (size_t i = 0; i < 4; ++i)
    ASSERT_TRUE(cache_->Acquire(page(300 + 4 * i), 2 * kPage, {}).ok());
  EXPECT_EQ(cache_->stats().registered_bytes, 8 * kPage);
  EXPECT_EQ(cache_->Acquire(page(400), 9 * kPage, {}).status().code(),
            absl::StatusCode::kResourceExhausted);
  auto held = cache_->Acquire(page(300), kPage, {});
  ASSERT_TRUE(held.ok());
  ASSERT_TRUE(cache_->SetLimits({.max_regions = 1}).ok());
  EXPECT_EQ(fake_->live_registrations(), 1);
  EXPECT_EQ(cache_->SetLimits({.max_bytes = kPage}).code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(CacheTest, FlushDropsOnlyUnreferenced) {
  auto held = cache_->Acquire(page(500), kPage, {});
  { ASSERT_TRUE(cache_->Acquire(page(502), kPage, {}).ok()); }
  cache_->Flush();
  EXPECT_EQ(fake_->live_registrations(), 1);
  EXPECT_TRUE(cache_->Acquire(page(500), kPage, {})->SameMapping(*held));
}

TEST_F(CacheTest, HandlesMayOutliveTheCache) {
  auto held = cache_->Acquire(page(600), kPage, Access::kLocalWrite);
  { ASSERT_TRUE(cache_->Acquire(page(602), kPage, {}).ok()); }
  cache_.reset();
  EXPECT_EQ(fake_->live_registrations(), 1);
  EXPECT_EQ(held->addr(), page(600));
  held->Reset();
  EXPECT_EQ(fake_->live_registrations(), 0);
}

TEST_F(CacheTest, DeregistrationFailureStillForgetsTheMapping) {
  fake_->FailDeregistrations(absl::UnavailableError("device gone"));
  { ASSERT_TRUE(cache_->Acquire(page(700), kPage, {}).ok()); }
  ASSERT_TRUE(cache_->Invalidate(page(700), kPage).ok());
  EXPECT_EQ(fake_->deregistration_errors(), 1);
  EXPECT_EQ(cache_->stats().live_regions, 0u);
}

TEST_F(CacheTest, MovedHandlesReleaseOnce) {
  auto r = cache_->Acquire(page(800), kPage, {});
  ASSERT_TRUE(r.ok());
  Registration moved = std::move(*r);
  EXPECT_FALSE(r->valid());
  Registration other;
  other = std::move(moved);
  EXPECT_TRUE(other.valid());
  ASSERT_TRUE(cache_->Invalidate(page(800), kPage).ok());
  EXPECT_EQ(fake_->live_registrations(), 1);
  other = Registration();
  EXPECT_EQ(fake_->live_registrations(), 0);
}

// A domain whose registrations are fast (no system call) is served in one
// critical section per miss, deregistrations under the lock too: the same
// answers, the same accounting, nothing leaked.
TEST(FastRegistrationCacheTest, SameAnswersInOneCriticalSection) {
  auto fake = std::make_shared<FakeDomain>();
  fake->mutable_capabilities().fast_registration = true;
  auto cache =
      RegistrationCache::Create(fake, {.max_regions = 3, .monitoring = Monitoring::kExplicitOnly})
          .value();
  char* base =
      static_cast<char*>(mmap(nullptr, 64 * kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(base, MAP_FAILED);
  auto page = [&](size_t i) { return base + i * kPage; };
  {
    auto a = cache->Acquire(page(0), 2 * kPage, Access::kLocalWrite);
    ASSERT_TRUE(a.ok());
    auto hit = cache->Acquire(page(1), 100, {});
    ASSERT_TRUE(hit.ok());
    EXPECT_TRUE(hit->SameMapping(*a));
    // More rights over a cached span: the union, the old one retired when
    // its handles go.
    auto more = cache->Acquire(page(0), kPage, Access::kRemoteWrite);
    ASSERT_TRUE(more.ok());
    EXPECT_FALSE(more->SameMapping(*a));
    EXPECT_EQ(fake->live_registrations(), 2);
  }
  EXPECT_EQ(fake->live_registrations(), 1);
  // Limits: idle mappings evicted, least recently used first.
  for (size_t i = 10; i < 16; ++i) ASSERT_TRUE(cache->Acquire(page(i), kPage, {}).ok());
  EXPECT_LE(fake->live_registrations(), 3);
  EXPECT_GE(cache->stats().evictions, 4u);
  ASSERT_TRUE(cache->Invalidate(page(15), kPage).ok());
  cache->Flush();
  EXPECT_EQ(fake->live_registrations(), 0);
  // A handle outliving its cache.
  auto kept = cache->Acquire(page(20), kPage, {});
  ASSERT_TRUE(kept.ok());
  cache.reset();
  EXPECT_EQ(fake->live_registrations(), 1);
  kept->Reset();
  EXPECT_EQ(fake->live_registrations(), 0);
  munmap(base, 64 * kPage);
}

}  // namespace
}  // namespace dmareg
