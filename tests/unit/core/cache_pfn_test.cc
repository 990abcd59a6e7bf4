// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The PFN check over the fake domain: memory replaced behind an explicit
// monitor's back (MAP_FIXED, no Notify) is found by CheckPfns and by a
// sampled hit; memory left alone is not. As root (the CI) PFNs are visible;
// elsewhere the check must refuse with the reason, which is asserted instead.
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "common/test_memory.h"
#include "dmareg/cache.h"
#include "dmareg/monitor.h"
#include "dmareg/testing/fake_domain.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dmareg {
namespace {

using testing::FakeDomain;
using ::testing::HasSubstr;

const size_t kPage = static_cast<size_t>(sysconf(_SC_PAGESIZE));
constexpr size_t kPages = 16;

bool PfnsVisible() { return geteuid() == 0; }

class CachePfnTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fake_ = std::make_shared<FakeDomain>();
    // Shared memory: a replacement can never get the old frames back.
    ASSERT_TRUE(mem_.ok()) << std::strerror(errno);
    for (size_t i = 0; i < kPages; ++i) page(i)[0] = 1;  // present, like pinned pages
  }
  void TearDown() override {
    cache_.reset();
    EXPECT_EQ(fake_->live_registrations(), 0) << "registrations leaked";
  }
  void MakeCache(uint32_t every) {
    cache_ = RegistrationCache::Create(
                 fake_, {.monitor = ExplicitMonitor::Create(), .pfn_check_every = every})
                 .value();
  }
  char* page(size_t i) { return mem_.data() + i * kPage; }
  // New anonymous pages at page(i), written; no monitor is told.
  void Replace(size_t i) {
    ASSERT_NE(mmap(page(i), kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                   -1, 0),
              MAP_FAILED);
    page(i)[0] = 2;
  }

  std::shared_ptr<FakeDomain> fake_;
  std::unique_ptr<RegistrationCache> cache_;
  test::SharedMemfd mem_{"cache_pfn_test", kPages* kPage};
};

TEST_F(CachePfnTest, WithoutTheOptionCheckPfnsIsFailedPrecondition) {
  MakeCache(0);
  ASSERT_TRUE(cache_->Acquire(page(0), kPage, Access::kLocalWrite).ok());
  absl::StatusOr<PfnReport> r = cache_->CheckPfns();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("pfn_check_every"));
  EXPECT_EQ(cache_->limits().pfn_check_every, 0u);
}

TEST_F(CachePfnTest, CheckPfnsFindsMemoryReplacedBehindTheMonitor) {
  MakeCache(1000);
  uint32_t stale_lkey = 0, kept_lkey = 0;
  {
    auto a = cache_->Acquire(page(0), 4 * kPage, Access::kLocalWrite);
    auto b = cache_->Acquire(page(8), 4 * kPage, Access::kLocalWrite);
    ASSERT_TRUE(a.ok() && b.ok());
    stale_lkey = a->lkey();
    kept_lkey = b->lkey();
  }
  if (!PfnsVisible()) {
    absl::StatusOr<PfnReport> r = cache_->CheckPfns();
    EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(r.status().message(), HasSubstr("CAP_SYS_ADMIN"));
    return;
  }
  absl::StatusOr<PfnReport> clean = cache_->CheckPfns();
  ASSERT_TRUE(clean.ok()) << clean.status();
  EXPECT_EQ(clean->checked_regions, 2u);
  EXPECT_EQ(clean->checked_pages, 8u);
  EXPECT_TRUE(clean->stale.empty()) << "memory left alone reported stale";

  Replace(2);
  absl::StatusOr<PfnReport> r = cache_->CheckPfns();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->checked_regions, 2u);
  ASSERT_EQ(r->stale.size(), 1u);
  EXPECT_EQ(r->stale[0].addr, reinterpret_cast<uintptr_t>(page(0)));
  EXPECT_EQ(r->stale[0].length, 4 * kPage);
  EXPECT_EQ(r->stale[0].lkey, stale_lkey);
  EXPECT_EQ(r->stale[0].first_stale_page, reinterpret_cast<uintptr_t>(page(2)));
  // Retired and deregistered (no handle was out); the other one kept.
  EXPECT_EQ(fake_->live_registrations(), 1);
  FakeDomain::LiveMapping m;
  EXPECT_TRUE(fake_->Lookup(kept_lkey, &m));
  EXPECT_FALSE(fake_->Lookup(stale_lkey, &m));
  CacheStats s = cache_->stats();
  EXPECT_EQ(s.pfn_checks, 4u);
  EXPECT_EQ(s.pfn_stale, 1u);

  // The next request registers the new pages; nothing is stale any more.
  auto again = cache_->Acquire(page(1), kPage, Access::kLocalWrite);
  ASSERT_TRUE(again.ok());
  EXPECT_NE(again->lkey(), stale_lkey);
  EXPECT_EQ(fake_->total_registrations(), 3);
  again->Reset();
  absl::StatusOr<PfnReport> after = cache_->CheckPfns();
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(after->stale.empty());
  EXPECT_EQ(after->checked_regions, 2u);
}

TEST_F(CachePfnTest, SampledHitRetiresAStaleRegionAndRegistersAgain) {
  MakeCache(1);  // every hit checked
  auto first = cache_->Acquire(page(0), 4 * kPage, Access::kLocalWrite);
  ASSERT_TRUE(first.ok());
  auto hit = cache_->Acquire(page(1), kPage, Access::kLocalWrite);
  ASSERT_TRUE(hit.ok());
  EXPECT_TRUE(hit->SameMapping(*first)) << "unchanged memory must stay a hit";
  hit->Reset();
  Replace(3);
  auto fresh = cache_->Acquire(page(1), kPage, Access::kLocalWrite);
  ASSERT_TRUE(fresh.ok());
  const CacheStats s = cache_->stats();
  if (PfnsVisible()) {
    EXPECT_FALSE(fresh->SameMapping(*first)) << "a stale registration was handed out";
    EXPECT_EQ(fake_->total_registrations(), 2);
    EXPECT_EQ(s.pfn_checks, 2u);
    EXPECT_EQ(s.pfn_stale, 1u);
    // The holder of the stale one keeps it until it lets go.
    EXPECT_EQ(fake_->live_registrations(), 2);
    first->Reset();
    EXPECT_EQ(fake_->live_registrations(), 1);
  } else {
    EXPECT_TRUE(fresh->SameMapping(*first)) << "hidden PFNs: the sampled check does nothing";
    EXPECT_EQ(s.pfn_checks, 0u);
  }
}

TEST_F(CachePfnTest, OneHitInNIsChecked) {
  MakeCache(4);
  auto held = cache_->Acquire(page(0), kPages * kPage, Access::kLocalWrite);
  ASSERT_TRUE(held.ok());
  for (int i = 0; i < 8; ++i) {
    auto h = cache_->Acquire(page(i), kPage, Access::kLocalWrite);
    ASSERT_TRUE(h.ok());
    EXPECT_TRUE(h->SameMapping(*held));
  }
  EXPECT_EQ(cache_->stats().pfn_checks, PfnsVisible() ? 2u : 0u);
  EXPECT_EQ(cache_->stats().pfn_stale, 0u);
}

// Without CAP_SYS_ADMIN the cache is still made and works; CheckPfns says why
// it cannot check.
TEST_F(CachePfnTest, HiddenPfnsAreFailedPreconditionNamingWhy) {
  if (geteuid() != 0) {
    MakeCache(1);
    EXPECT_THAT(cache_->CheckPfns().status().message(), HasSubstr("CAP_SYS_ADMIN"));
    return;
  }
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (setgid(65534) != 0 || setuid(65534) != 0) _exit(2);
    if (prctl(PR_SET_DUMPABLE, 1) != 0) _exit(2);  // else /proc/self is root's
    auto cache =
        RegistrationCache::Create(std::make_shared<FakeDomain>(),
                                  {.monitor = ExplicitMonitor::Create(), .pfn_check_every = 1});
    if (!cache.ok()) _exit(3);
    for (int i = 0; i < 2; ++i) {
      if (!(*cache)->Acquire(page(0), kPage, Access::kLocalWrite).ok()) _exit(4);
    }
    absl::StatusOr<PfnReport> r = (*cache)->CheckPfns();
    if (r.status().code() != absl::StatusCode::kFailedPrecondition) _exit(5);
    if (std::string(r.status().message()).find("CAP_SYS_ADMIN") == std::string::npos) _exit(6);
    if ((*cache)->stats().hits != 1) _exit(7);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << "2: setuid, 3: Create failed, 4: Acquire failed, 5: not FailedPrecondition, "
         "6: no reason, 7: the hit did not stay a hit";
}

}  // namespace
}  // namespace dmareg
