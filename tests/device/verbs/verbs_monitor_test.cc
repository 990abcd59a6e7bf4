// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// Invalidation on the real device: the cache's userfaultfd monitor notices
// munmap without the application's help, a forked child never touches its
// parent's MRs, and a randomized soak of 30,000 memory operations moves
// real bytes by RDMA WRITE and READ through every registration it gets,
// from four threads, with no stale translation and no MR left behind
// (counted by the kernel, through the `rdma` tool).

#include <infiniband/verbs.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "common/sanitizers.h"
#include "common/soak.h"
#include "device/verbs/device_env.h"
#include "dmareg/c/hooks.h"
#include "dmareg/cache.h"
#include "dmareg/monitor.h"
#include "dmareg/verbs/verbs_domain.h"
#include "gtest/gtest.h"
#include "verbs/rc_qp.h"

namespace dmareg::device_test {
namespace {

class VerbsMonitorTest : public RcLoopbackTest {
 protected:
  void SetUp() override {
    RcLoopbackTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    // The process's shared monitor; this binary links the hooks, so it is
    // the hooks composed with the userfaultfd.
    ASSERT_EQ(&cache_->monitor(), SharedMonitor().value().get())
        << "device caches monitor automatically";
    ASSERT_EQ(cache_->monitor().name(), "hooks+userfaultfd");
  }
};

TEST_F(VerbsMonitorTest, MunmapIsNoticedWithoutInvalidate) {
  constexpr size_t kLen = 64 * 1024;
  Mapping dst(kLen);
  ASSERT_TRUE(dst.ok());
  auto d = cache_->Acquire(dst.data(), kLen, Access::kLocalWrite);
  ASSERT_TRUE(d.ok()) << d.status();
  Mapping buf(kLen);
  ASSERT_TRUE(buf.ok());
  char* const addr = buf.data();
  FillPattern(addr, kLen, 1);
  uint32_t old_rkey = 0;
  {
    auto old_reg = cache_->Acquire(addr, kLen, Access::kRemoteRead);
    ASSERT_TRUE(old_reg.ok()) << old_reg.status();
    old_rkey = old_reg->rkey();
  }
  const int64_t mrs = domain_->live_mrs();
  // New pages at the same address, and no Invalidate call.
  ASSERT_TRUE(test::ReplacePages(addr, kLen)) << std::strerror(errno);
  FillPattern(addr, kLen, 2);
  auto new_reg = cache_->Acquire(addr, kLen, Access::kRemoteRead);
  ASSERT_TRUE(new_reg.ok()) << new_reg.status();
  EXPECT_NE(new_reg->rkey(), old_rkey) << "the old MR was served after munmap";
  EXPECT_EQ(domain_->live_mrs(), mrs) << "the old MR should be gone, the new one in";
  std::memset(dst.data(), 0, kLen);
  absl::Status r =
      pair_.b->Read(dst.data(), kLen, d->lkey(), new_reg->IovaFor(addr), new_reg->rkey());
  ASSERT_TRUE(r.ok()) << r;
  EXPECT_EQ(FindMismatch(dst.data(), kLen, 2), -1) << "the device must read the new pages";
}

// fork(): the child refuses the parent's cache and drops inherited handles
// without touching the device; the parent's MR keeps working, and sees the
// parent's writes made after the fork.
TEST_F(VerbsMonitorTest, ForkLeavesTheParentsMrsAlone) {
  constexpr size_t kLen = 64 * 1024;
  Mapping src(kLen), dst(kLen);
  ASSERT_TRUE(src.ok() && dst.ok());
  FillPattern(src.data(), kLen, 10);
  auto s = cache_->Acquire(src.data(), kLen, Access::kRemoteRead);
  auto d = cache_->Acquire(dst.data(), kLen, Access::kLocalWrite);
  ASSERT_TRUE(s.ok() && d.ok());

  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int code = 0;
    auto r = cache_->Acquire(src.data(), kLen, Access::kRemoteRead);
    if (r.ok() || r.status().code() != absl::StatusCode::kFailedPrecondition) code |= 1;
    s->Reset();  // would deregister the parent's MR if it reached the device
    d->Reset();
    cache_.reset();
    // The way for a child: its own domain and cache.
    auto own = VerbsDomain::Open(device_);
    if (!own.ok()) {
      code |= 2;
    } else {
      auto own_cache = RegistrationCache::Create(*own);
      if (!own_cache.ok() || !(*own_cache)->Acquire(src.data(), kLen, Access::kRemoteRead).ok()) {
        code |= 4;
      }
    }
    _exit(code);
  }
  const int code = test::ChildExitCode(pid);
  ASSERT_GE(code, 0) << "the child died";
  EXPECT_EQ(code & 1, 0) << "the child was served its parent's MR";
  EXPECT_EQ(code & 2, 0) << "the child could not open its own domain";
  EXPECT_EQ(code & 4, 0) << "the child could not register with its own cache";

  FillPattern(src.data(), kLen, 11);  // the parent writes after the fork
  absl::Status r = pair_.b->Read(dst.data(), kLen, d->lkey(), s->IovaFor(src.data()), s->rkey());
  ASSERT_TRUE(r.ok()) << "the parent's MR stopped working after the child exited: " << r;
  EXPECT_EQ(FindMismatch(dst.data(), kLen, 11), -1)
      << "the parent's MR must follow the parent's pages after fork";
}

// Device access for the soak: RDMA through the registration, bytes checked.
class RdmaChecker : public soak::Checker {
 public:
  struct Lane {
    rc::RcLoopback pair;
    Mapping scratch{32 * 1024};
    ibv_mr* mr = nullptr;
  };

  absl::Status Setup(VerbsDomain& domain, const std::string& device, int lanes) {
    for (int i = 0; i < lanes; ++i) {
      auto lane = std::make_unique<Lane>();
      absl::StatusOr<rc::RcLoopback> pair =
          rc::ConnectLoopback(domain.context(), domain.pd(), device);
      if (!pair.ok()) return pair.status();
      lane->pair = std::move(*pair);
      if (!lane->scratch.ok()) return absl::ResourceExhaustedError("scratch mmap");
      lane->mr =
          ibv_reg_mr(domain.pd(), lane->scratch.data(), lane->scratch.size(),
                     IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE);
      if (lane->mr == nullptr) return absl::InternalError("ibv_reg_mr of scratch failed");
      lanes_.push_back(std::move(lane));
    }
    return absl::OkStatus();
  }
  void Teardown() {
    for (auto& lane : lanes_) {
      lane->pair = {};
      if (lane->mr != nullptr) ibv_dereg_mr(lane->mr);
    }
    lanes_.clear();
  }

  // On-demand MRs on rxe move one packet at the start of a page only (see
  // verbs_odp_test.cc): with `chunk` set, Check moves that much at each page
  // start inside the block (up to the scratch's pages) and nothing else.
  void SetPageChunks(size_t chunk) { chunk_ = chunk; }
  uint64_t chunks_moved() const { return chunks_moved_.load(); }

  absl::Status Check(int thread, const Registration& reg, char* p, size_t len,
                     uint32_t seed) override {
    if (chunk_ != 0) return CheckChunks(thread, reg, p, len, seed);
    Lane& l = *lanes_[static_cast<size_t>(thread)];
    char* scratch = l.scratch.data();
    const uint64_t scratch_iova = reinterpret_cast<uintptr_t>(scratch);
    // WRITE from the block through its lkey: the device must read what the
    // program just wrote.
    FillPattern(p, len, seed);
    if (absl::Status s = l.pair.a->Write(p, len, reg.lkey(), scratch_iova, l.mr->rkey); !s.ok()) {
      return s;
    }
    if (ptrdiff_t at = FindMismatch(scratch, len, seed); at >= 0) {
      // Stale MR (the CPU still sees the pattern) or memory overwritten
      // behind the program's back (then the CPU sees it too)?
      const ptrdiff_t cpu = FindMismatch(p, len, seed);
      return Stale(cpu < 0 ? "RDMA WRITE through the lkey (CPU view intact)"
                           : "RDMA WRITE through the lkey (CPU view overwritten too)",
                   p, len, at);
    }
    // READ into the block through its lkey: the program must see it.
    FillPattern(scratch, len, seed + 1);
    if (absl::Status s = l.pair.a->Read(p, len, reg.lkey(), scratch_iova, l.mr->rkey); !s.ok()) {
      return s;
    }
    if (ptrdiff_t at = FindMismatch(p, len, seed + 1); at >= 0) {
      return Stale("RDMA READ through the lkey", p, len, at);
    }
    // The block as the remote side, through its rkey.
    if (reg.access().Has(Access::kRemoteWrite)) {
      FillPattern(scratch, len, seed + 2);
      if (absl::Status s = l.pair.b->Write(scratch, len, l.mr->lkey, reg.IovaFor(p), reg.rkey());
          !s.ok()) {
        return s;
      }
      if (ptrdiff_t at = FindMismatch(p, len, seed + 2); at >= 0) {
        return Stale("RDMA WRITE to the rkey", p, len, at);
      }
    }
    if (reg.access().Has(Access::kRemoteRead)) {
      const uint32_t now = reg.access().Has(Access::kRemoteWrite) ? seed + 2 : seed + 1;
      std::memset(scratch, 0, len);
      if (absl::Status s = l.pair.b->Read(scratch, len, l.mr->lkey, reg.IovaFor(p), reg.rkey());
          !s.ok()) {
        return s;
      }
      if (ptrdiff_t at = FindMismatch(scratch, len, now); at >= 0) {
        return Stale("RDMA READ from the rkey", p, len, at);
      }
    }
    return absl::OkStatus();
  }

 private:
  absl::Status CheckChunks(int thread, const Registration& reg, char* p, size_t len,
                           uint32_t seed) {
    Lane& l = *lanes_[static_cast<size_t>(thread)];
    constexpr size_t kPage = 4096;
    FillPattern(p, len, seed);
    const uintptr_t first = (reinterpret_cast<uintptr_t>(p) + kPage - 1) & ~(kPage - 1);
    size_t k = 0;
    for (uintptr_t q = first;
         q + chunk_ <= reinterpret_cast<uintptr_t>(p) + len && (k + 1) * kPage <= l.scratch.size();
         q += kPage, ++k) {
      char* const at = reinterpret_cast<char*>(q);
      const size_t off = static_cast<size_t>(at - p);
      char* const scratch = l.scratch.data() + k * kPage;
      const uint64_t scratch_iova = reinterpret_cast<uintptr_t>(scratch);
      if (absl::Status s = l.pair.a->Write(at, chunk_, reg.lkey(), scratch_iova, l.mr->rkey);
          !s.ok()) {
        return s;
      }
      if (ptrdiff_t bad = FindMismatch(scratch, chunk_, seed, off); bad >= 0) {
        return Stale("RDMA WRITE through the lkey (page chunk)", at, chunk_, bad);
      }
      FillPattern(scratch, chunk_, seed + 1, off);
      if (absl::Status s = l.pair.a->Read(at, chunk_, reg.lkey(), scratch_iova, l.mr->rkey);
          !s.ok()) {
        return s;
      }
      if (ptrdiff_t bad = FindMismatch(at, chunk_, seed + 1, off); bad >= 0) {
        return Stale("RDMA READ through the lkey (page chunk)", at, chunk_, bad);
      }
      if (reg.access().Has(Access::kRemoteWrite)) {
        FillPattern(scratch, chunk_, seed + 2, off);
        if (absl::Status s =
                l.pair.b->Write(scratch, chunk_, l.mr->lkey, reg.IovaFor(at), reg.rkey());
            !s.ok()) {
          return s;
        }
        if (ptrdiff_t bad = FindMismatch(at, chunk_, seed + 2, off); bad >= 0) {
          return Stale("RDMA WRITE to the rkey (page chunk)", at, chunk_, bad);
        }
      }
      if (reg.access().Has(Access::kRemoteRead)) {
        const uint32_t now = reg.access().Has(Access::kRemoteWrite) ? seed + 2 : seed + 1;
        std::memset(scratch, 0, chunk_);
        if (absl::Status s =
                l.pair.b->Read(scratch, chunk_, l.mr->lkey, reg.IovaFor(at), reg.rkey());
            !s.ok()) {
          return s;
        }
        if (ptrdiff_t bad = FindMismatch(scratch, chunk_, now, off); bad >= 0) {
          return Stale("RDMA READ from the rkey (page chunk)", at, chunk_, bad);
        }
      }
      chunks_moved_.fetch_add(1, std::memory_order_relaxed);
    }
    return absl::OkStatus();
  }
  static absl::Status Stale(const char* what, const char* p, size_t len, ptrdiff_t at) {
    return absl::DataLossError(
        absl::StrFormat("stale translation: %s of [%p, +%u) differs at byte %d", what, p, len, at));
  }
  std::vector<std::unique_ptr<Lane>> lanes_;
  size_t chunk_ = 0;
  std::atomic<uint64_t> chunks_moved_{0};
};

TEST_F(VerbsMonitorTest, SoakHasNoStaleTranslationAndLeaksNoMr) {
  const int64_t before = KernelMrCount(device_);
  ASSERT_GE(before, 0) << "cannot count MRs with `rdma -j resource show`";
  constexpr int kThreads = 4;
  // 30,000 operations: under the VM's emulated CPU each costs ~3 ms of RDMA
  // and checking; the unit suite runs the same soak 100,000 deep natively.
  constexpr uint64_t kOps = 30000;
  RdmaChecker checker;
  ASSERT_TRUE(checker.Setup(*domain_, device_, kThreads).ok());
  const soak::Result r =
      soak::Run(*cache_, checker, {.threads = kThreads, .ops = kOps, .seed = 2026});
  const CacheStats stats = cache_->stats();
  std::printf("%s\n  cache: %u hits, %u misses, %u monitor events, %u uncached\n",
              r.Summary().c_str(), static_cast<unsigned>(stats.hits),
              static_cast<unsigned>(stats.misses), static_cast<unsigned>(stats.monitor_events),
              static_cast<unsigned>(stats.uncached_registrations));
  EXPECT_EQ(r.failures, 0u) << r.first_failure;
  EXPECT_EQ(r.ops, kOps);
  EXPECT_GT(stats.monitor_events, 1000u);
  cache_.reset();  // every cached MR goes with the cache
  EXPECT_EQ(domain_->live_mrs(), 0);
  EXPECT_EQ(KernelMrCount(device_), before + kThreads) << "the kernel still holds cache MRs";
  checker.Teardown();
  EXPECT_EQ(KernelMrCount(device_), before);
}

// The soak over two NICs (the multi-rail case): each registration the soak
// acquires from the cache on rxe0 is acquired again from a second cache on
// rxe1, both fed by the process's one shared monitor, and both are checked
// by RDMA. Neither cache registers anything uncached, the second one hits,
// and no translation on either NIC is stale.
class TwoNicChecker : public soak::Checker {
 public:
  TwoNicChecker(RdmaChecker* first, RdmaChecker* second, RegistrationCache* second_cache)
      : first_(first), second_(second), second_cache_(second_cache) {}
  absl::Status Check(int thread, const Registration& reg, char* p, size_t len,
                     uint32_t seed) override {
    if (absl::Status s = first_->Check(thread, reg, p, len, seed); !s.ok()) return s;
    absl::StatusOr<Registration> again = second_cache_->Acquire(p, len, reg.access());
    if (!again.ok()) return again.status();
    return second_->Check(thread, *again, p, len, seed + 7);
  }

 private:
  RdmaChecker* const first_;
  RdmaChecker* const second_;
  RegistrationCache* const second_cache_;
};

TEST_F(VerbsMonitorTest, SoakOnTwoNicsSharesOneMonitorAndHasNoStaleTranslation) {
  const std::string dev2 = Env("DMAREG_RXE_DEV2");
  if (dev2.empty()) {
    ASSERT_FALSE(InVm()) << "DMAREG_IN_VM=1 but DMAREG_RXE_DEV2 is not set";
    GTEST_SKIP() << "no second RDMA device (DMAREG_RXE_DEV2)";
  }
  auto domain2 = VerbsDomain::Open(dev2);
  ASSERT_TRUE(domain2.ok()) << domain2.status();
  auto cache2 = RegistrationCache::Create(*domain2);
  ASSERT_TRUE(cache2.ok()) << cache2.status();
  ASSERT_EQ(&(*cache2)->monitor(), &cache_->monitor()) << "one monitor for every cache";
  constexpr int kThreads = 4;
  // Twice the RDMA of the one-NIC soak per operation: a sixth of its length
  // (about 20 s in the VM; 2,000 checks on each NIC, a quarter of them hits).
  constexpr uint64_t kOps = 5000;
  RdmaChecker first, second;
  ASSERT_TRUE(first.Setup(*domain_, device_, kThreads).ok());
  ASSERT_TRUE(second.Setup(**domain2, dev2, kThreads).ok());
  TwoNicChecker checker(&first, &second, cache2->get());
  const soak::Result r =
      soak::Run(*cache_, checker, {.threads = kThreads, .ops = kOps, .seed = 2027});
  const CacheStats a = cache_->stats();
  const CacheStats b = (*cache2)->stats();
  std::printf("%s\n  %s: %u hits, %u misses; %s: %u hits, %u misses; %u monitor events\n",
              r.Summary().c_str(), device_.c_str(), static_cast<unsigned>(a.hits),
              static_cast<unsigned>(a.misses), dev2.c_str(), static_cast<unsigned>(b.hits),
              static_cast<unsigned>(b.misses), static_cast<unsigned>(b.monitor_events));
  EXPECT_EQ(r.failures, 0u) << r.first_failure;
  EXPECT_EQ(a.uncached_registrations, 0u);
  EXPECT_EQ(b.uncached_registrations, 0u);
  EXPECT_GT(b.hits, 0u);
  EXPECT_GT(b.monitor_events, 100u);
  cache2->reset();
  EXPECT_EQ((*domain2)->live_mrs(), 0);
  second.Teardown();
  first.Teardown();
}

// The soak's unordered phase: threads race glibc's malloc, realloc and
// free of large blocks with nothing ordering them, and RDMA through every
// registration acquired right after malloc. glibc's free() munmaps with no
// lock held; the hooks monitor hears of it before, so no stale MR.
TEST_F(VerbsMonitorTest, SoakUnorderedMallocWithHooksMonitorHasNoStaleMr) {
  if (!::dmareg::testing::kGlibcMalloc || dmareg_hooks_decodes_malloc() == 0) {
    GTEST_SKIP() << "the hooks do not see this malloc's free() (a sanitizer's malloc)";
  }
  auto hooks = HooksMonitor::Create();
  ASSERT_TRUE(hooks.ok()) << "the test links libdmareg_hooks: " << hooks.status();
  auto cache = RegistrationCache::Create(domain_, {.monitor = *hooks});
  ASSERT_TRUE(cache.ok()) << cache.status();
  const int64_t before = KernelMrCount(device_);
  ASSERT_GE(before, 0) << "cannot count MRs with `rdma -j resource show`";
  constexpr int kThreads = 4;
  constexpr uint64_t kOps = 4000;  // short: the VM emulates the CPU
  RdmaChecker checker;
  ASSERT_TRUE(checker.Setup(*domain_, device_, kThreads).ok());
  const soak::Result r =
      soak::Run(**cache, checker,
                {.threads = kThreads, .ops = 0, .seed = 2028, .unordered_malloc_ops = kOps});
  const CacheStats stats = (*cache)->stats();
  std::printf("%s\n  %s cache: %u hits, %u misses, %u monitor events (%llu from the hooks)\n",
              r.Summary().c_str(), std::string((*hooks)->name()).c_str(),
              static_cast<unsigned>(stats.hits), static_cast<unsigned>(stats.misses),
              static_cast<unsigned>(stats.monitor_events),
              static_cast<unsigned long long>((*hooks)->hook_events()));
  EXPECT_EQ(r.failures, 0u) << r.first_failure;
  EXPECT_EQ(r.unordered_ops, kOps);
  EXPECT_GT(r.frees, 100u);
  EXPECT_GT((*hooks)->hook_events(), 100u) << "the hooks saw almost no free()";
  cache->reset();  // every cached MR goes with the cache
  EXPECT_EQ(KernelMrCount(device_), before + kThreads) << "the kernel still holds cache MRs";
  checker.Teardown();
  EXPECT_EQ(KernelMrCount(device_), before);
}

// On-demand mode where the device has ODP for RC: NO monitor (explicit,
// never notified), and still no stale translation, because the NIC follows
// the page tables; every MR goes with the cache. Refused clearly elsewhere.
TEST_F(VerbsMonitorTest, SoakInOnDemandModeNeedsNoMonitor) {
  auto made = RegistrationCache::Create(
      domain_, {.monitoring = Monitoring::kExplicitOnly, .paging = Paging::kOnDemand});
  if (!domain_->capabilities().on_demand_paging) {
    ASSERT_FALSE(made.ok());
    std::printf("  on-demand soak: %s\n", made.status().ToString().c_str());
    EXPECT_EQ(made.status().code(), absl::StatusCode::kFailedPrecondition);
    return;
  }
  ASSERT_TRUE(made.ok()) << made.status();
  const int64_t before = KernelMrCount(device_);
  ASSERT_GE(before, 0) << "cannot count MRs with `rdma -j resource show`";
  constexpr int kThreads = 4;
  RdmaChecker checker;
  ASSERT_TRUE(checker.Setup(*domain_, device_, kThreads).ok());
  checker.SetPageChunks(std::min<size_t>(4096, size_t{128} << pair_.a->endpoint().mtu));
  const soak::Result r =
      soak::Run(**made, checker, {.threads = kThreads, .ops = 5000, .seed = 2027});
  const CacheStats stats = (*made)->stats();
  std::printf(
      "%s\n  on-demand cache: %u hits, %u misses (%u on demand), %u monitor events; "
      "%llu page chunks moved\n",
      r.Summary().c_str(), static_cast<unsigned>(stats.hits), static_cast<unsigned>(stats.misses),
      static_cast<unsigned>(stats.on_demand_registrations),
      static_cast<unsigned>(stats.monitor_events),
      static_cast<unsigned long long>(checker.chunks_moved()));
  EXPECT_EQ(r.failures, 0u) << r.first_failure;
  EXPECT_EQ(r.ops, 5000u);
  EXPECT_EQ(stats.monitor_events, 0u);
  EXPECT_EQ(stats.on_demand_registrations, stats.misses);
  EXPECT_GT(checker.chunks_moved(), 1000u) << "too few device accesses to mean anything";
  made->reset();  // every cached MR goes with the cache
  EXPECT_EQ(KernelMrCount(device_), before + kThreads) << "the kernel still holds cache MRs";
  // The page-chunk checker can fail: a pinned cache nobody tells about
  // unmaps serves stale MRs, and the chunks show it.
  auto blind = RegistrationCache::Create(domain_, {.monitoring = Monitoring::kExplicitOnly});
  ASSERT_TRUE(blind.ok()) << blind.status();
  const soak::Result b = soak::Run(**blind, checker, {.threads = 1, .ops = 2000, .seed = 6});
  EXPECT_GT(b.failures, 0u) << "stale pinned MRs went unnoticed by the chunks: " << b.Summary();
  blind->reset();
  checker.Teardown();
  EXPECT_EQ(KernelMrCount(device_), before);
}

// The checker can fail on the device: a cache nobody tells about unmaps
// serves stale MRs, and the bytes show it.
TEST_F(VerbsMonitorTest, SoakCatchesAnUnmonitoredCache) {
  auto blind = RegistrationCache::Create(domain_, {.monitoring = Monitoring::kExplicitOnly});
  ASSERT_TRUE(blind.ok());
  RdmaChecker checker;
  ASSERT_TRUE(checker.Setup(*domain_, device_, 1).ok());
  const soak::Result r = soak::Run(**blind, checker, {.threads = 1, .ops = 5000, .seed = 5});
  EXPECT_GT(r.failures, 0u) << "stale MRs went unnoticed by the bytes: " << r.Summary();
  blind->reset();
  checker.Teardown();
}

}  // namespace
}  // namespace dmareg::device_test
