// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The windows a userfaultfd cannot see, on the real device, shown by the
// bytes an RDMA READ through the acquired registration returns:
// - glibc's free() of a large block munmaps it with no lock held; another
//   thread's malloc may get the same addresses and acquire them while that
//   munmap is still in flight. The userfaultfd monitor alone then serves the
//   old MR (the READ returns the old block's bytes); the hooks monitor
//   publishes before the munmap and never does; on-demand paging (where the
//   device has ODP) needs no monitor at all.
// - shmat(SHM_REMAP) over cached memory gives no userfaultfd event: stale
//   with userfaultfd alone (asserted, so a kernel that starts reporting it
//   is noticed), fresh with the hooks monitor and in on-demand mode.
// The binary links libdmareg_hooks, so its munmap, free and shmat are the
// hooked ones.

#include <malloc.h>
#include <sched.h>
#include <sys/ipc.h>
#include <sys/shm.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "common/sanitizers.h"
#include "common/vm_env.h"
#include "device/verbs/device_env.h"
#include "dmareg/c/hooks.h"
#include "dmareg/cache.h"
#include "dmareg/monitor.h"
#include "dmareg/verbs/verbs_domain.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "monitor/monitor_access.h"
#include "verbs/rc_qp.h"

namespace dmareg::device_test {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr size_t kPage = 4096;
// Blocks above glibc's mmap threshold, which is fixed (so not raised by the
// first free()): malloc mmaps each and free() munmaps it, with no lock
// held. Only a page of each is written or moved: a read-only pin of the
// untouched rest is cheap.
constexpr size_t kMmapThreshold = 128 * 1024;
constexpr size_t kBlock = 1 << 20;
constexpr int kThreads = 6;
constexpr int kRounds = 6;  // per thread and monitor: lean under emulation

// The first page boundary inside a malloc'd block (past glibc's header).
char* FirstPage(char* p) {
  return reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(p) + kPage - 1) & ~(kPage - 1));
}

// One thread's QP pair and the local page its READs land in.
struct Lane {
  rc::RcLoopback pair;
  Mapping scratch{kPage};
};

// What a READ through a registration returned.
enum class Saw { kOld, kNew, kNeither };
const char* SawName(Saw s) {
  return s == Saw::kOld ? "the old bytes" : s == Saw::kNew ? "the new bytes" : "neither";
}

class VerbsHooksTest : public RcLoopbackTest {
 protected:
  void SetUp() override {
    RcLoopbackTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    if (!::dmareg::testing::kGlibcMalloc || dmareg_hooks_decodes_malloc() == 0) {
      GTEST_SKIP() << "free() is not glibc's (a sanitizer's malloc): its munmap is not hooked";
    }
    // A fixed threshold turns glibc's dynamic one off.
    ASSERT_EQ(mallopt(M_MMAP_THRESHOLD, kMmapThreshold), 1);
    mrs_before_ = KernelMrCount(device_);
    ASSERT_GE(mrs_before_, 0) << "cannot count MRs with `rdma -j resource show`";
    // rxe's on-demand path moves one packet at the start of a page only (see
    // verbs_odp_test.cc): on-demand checks move one such chunk.
    odp_chunk_ = std::min(kPage, size_t{128} << pair_.a->endpoint().mtu);  // IBV_MTU_256 is 1
  }
  void TearDown() override {
    lanes_.clear();  // QPs before the PD
    RcLoopbackTest::TearDown();
    if (mrs_before_ >= 0) {
      EXPECT_EQ(KernelMrCount(device_), mrs_before_) << "the kernel still holds MRs of this test";
    }
  }

  Lane& AddLane() {
    auto lane = std::make_unique<Lane>();
    absl::StatusOr<rc::RcLoopback> pair =
        rc::ConnectLoopback(domain_->context(), domain_->pd(), device_);
    EXPECT_TRUE(pair.ok()) << pair.status();
    if (pair.ok()) lane->pair = std::move(*pair);
    EXPECT_TRUE(lane->scratch.ok());
    lanes_.push_back(std::move(lane));
    return *lanes_.back();
  }

  // RDMA READ of `chunk` bytes at page-aligned `at` through `reg` into the
  // lane's scratch (registered as `local`), compared with the patterns
  // `old_seed` and `new_seed` were written with.
  static absl::StatusOr<Saw> ReadBack(Lane& lane, const Registration& local,
                                      const Registration& reg, const char* at, size_t chunk,
                                      uint32_t old_seed, uint32_t new_seed) {
    char* into = lane.scratch.data();
    std::memset(into, 0, chunk);
    absl::Status r = lane.pair.b->Read(into, chunk, local.lkey(), reg.IovaFor(at), reg.rkey());
    if (!r.ok()) return r;
    if (FindMismatch(into, chunk, new_seed) == -1) return Saw::kNew;
    if (FindMismatch(into, chunk, old_seed) == -1) return Saw::kOld;
    return Saw::kNeither;
  }

  void RunWindow(const std::shared_ptr<MemoryMonitor>& monitor, UserfaultfdMonitor& uffd, Saw* saw);
  // 6 threads: malloc, write, Acquire, READ-check, free. Returns the stale READs.
  uint64_t RunReproduction(RegistrationCache& cache, size_t chunk, uint64_t* failures);
  void RunShmRemap(CacheOptions options, size_t chunk, Saw* saw, bool* same_mr);

  int64_t mrs_before_ = -1;
  size_t odp_chunk_ = kPage;
  std::vector<std::unique_ptr<Lane>> lanes_;
};

// Releases the held reader and joins the freeing thread on every way out.
struct HeldWindow {
  UserfaultfdMonitor& uffd;
  std::thread freer;
  ~HeldWindow() {
    internal::MonitorAccess::HoldUserfaultfdReader(uffd, false);
    if (freer.joinable()) freer.join();
  }
};

// The window made to last: thread A's free() of a cached block stays inside
// munmap (the userfaultfd reader is held) while this thread mallocs the same
// size, gets the same addresses, writes new bytes there and acquires them.
void VerbsHooksTest::RunWindow(const std::shared_ptr<MemoryMonitor>& monitor,
                               UserfaultfdMonitor& uffd, Saw* saw) {
  auto made = RegistrationCache::Create(domain_, {.monitor = monitor});
  ASSERT_TRUE(made.ok()) << made.status();
  RegistrationCache& cache = **made;
  Lane& lane = AddLane();
  ASSERT_NE(lane.pair.b, nullptr);
  auto local = cache.Acquire(lane.scratch.data(), kPage, Access::kLocalWrite);
  ASSERT_TRUE(local.ok()) << local.status();

  char* const a = static_cast<char*>(std::malloc(kBlock));
  ASSERT_NE(a, nullptr);
  const uintptr_t old_addr = reinterpret_cast<uintptr_t>(a);
  FillPattern(FirstPage(a), kPage, 1);  // before Acquire: the pin takes these pages
  {
    auto r = cache.Acquire(a, kBlock, Access::kRemoteRead);
    ASSERT_TRUE(r.ok()) << r.status();
    auto first = ReadBack(lane, *local, *r, FirstPage(a), kPage, 1, 1);
    ASSERT_TRUE(first.ok()) << first.status();
    ASSERT_EQ(*first, Saw::kNew) << "the device does not read the block it was given";
  }
  char* b = nullptr;
  {
    internal::MonitorAccess::HoldUserfaultfdReader(uffd, true);
    HeldWindow window{uffd, std::thread([a] { std::free(a); })};
    while (!internal::MonitorAccess::UserfaultfdReaderHasEventsWaiting(uffd)) sched_yield();
    // free() is inside munmap now, the addresses already free.
    b = static_cast<char*>(std::malloc(kBlock));
    ASSERT_EQ(reinterpret_cast<uintptr_t>(b), old_addr) << "malloc did not reuse the addresses";
    FillPattern(FirstPage(b), kPage, 2);
    auto r = cache.Acquire(b, kBlock, Access::kRemoteRead);
    ASSERT_TRUE(r.ok()) << r.status();
    auto got = ReadBack(lane, *local, *r, FirstPage(b), kPage, 1, 2);
    ASSERT_TRUE(got.ok()) << got.status();
    *saw = *got;
    std::printf("  %s: in-flight free() of %zu MiB, READ through the acquired MR saw %s\n",
                monitor->name().data(), kBlock >> 20, SawName(*saw));
  }  // the reader goes on, free() returns
  std::free(b);
  local->Reset();
  made->reset();
  EXPECT_EQ(domain_->live_mrs(), 0);
}

TEST_F(VerbsHooksTest, InFlightFreeIsStaleWithUserfaultfdAloneAndFreshWithHooks) {
  {
    auto uffd = UserfaultfdMonitor::Create();
    ASSERT_TRUE(uffd.ok()) << uffd.status();
    Saw saw = Saw::kNeither;
    RunWindow(*uffd, **uffd, &saw);
    if (HasFatalFailure()) return;
    // The window every asynchronous monitor has, seen in the device's bytes.
    ASSERT_EQ(saw, Saw::kOld) << "userfaultfd alone no longer serves the old MR in the window";
  }
  auto hooks = HooksMonitor::Create({.userfaultfd = HooksUserfaultfd::kRequired});
  ASSERT_TRUE(hooks.ok()) << hooks.status();
  ASSERT_EQ((*hooks)->name(), "hooks+userfaultfd");
  Saw saw = Saw::kNeither;
  RunWindow(*hooks, *(*hooks)->userfaultfd(), &saw);
  if (HasFatalFailure()) return;
  EXPECT_EQ(saw, Saw::kNew) << "the hooks monitor served the freed block's MR";
  EXPECT_GE((*hooks)->hook_events(), 1u);
}

uint64_t VerbsHooksTest::RunReproduction(RegistrationCache& cache, size_t chunk,
                                         uint64_t* failures) {
  while (lanes_.size() < static_cast<size_t>(kThreads)) AddLane();
  std::atomic<uint64_t> stale{0}, failed{0};
  std::vector<std::string> first_failure(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Lane& lane = *lanes_[static_cast<size_t>(t)];
      auto local = cache.Acquire(lane.scratch.data(), kPage, Access::kLocalWrite);
      if (!local.ok()) {
        failed += kRounds;
        first_failure[t] = local.status().ToString();
        return;
      }
      for (int round = 0; round < kRounds; ++round) {
        char* p = static_cast<char*>(std::malloc(kBlock));
        if (p == nullptr) {
          ++failed;
          continue;
        }
        const uint32_t seed = 1000 + static_cast<uint32_t>(t * kRounds + round);  // unique
        FillPattern(FirstPage(p), kPage, seed);
        auto reg = cache.Acquire(p, kBlock, Access::kRemoteRead);
        absl::StatusOr<Saw> got =
            reg.ok() ? ReadBack(lane, *local, *reg, FirstPage(p), chunk, seed, seed)
                     : absl::StatusOr<Saw>(reg.status());
        if (!got.ok()) {
          ++failed;
          if (first_failure[t].empty()) first_failure[t] = got.status().ToString();
        } else if (*got != Saw::kNew) {
          ++stale;  // another block's bytes: the MR of a block freed meanwhile
        }
        if (reg.ok()) reg->Reset();
        std::free(p);
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (const std::string& f : first_failure) EXPECT_EQ(f, "");
  *failures = failed.load();
  return stale.load();
}

// The reproduction: no external ordering between the threads' frees
// and mallocs, so a stale MR is served whenever one lands in the window.
TEST_F(VerbsHooksTest, MallocFreeThreadsNeverReadStaleBytesWithHooks) {
  const int total = kThreads * kRounds;
  {
    auto uffd = UserfaultfdMonitor::Create();
    ASSERT_TRUE(uffd.ok()) << uffd.status();
    auto made = RegistrationCache::Create(domain_, {.monitor = *uffd});
    ASSERT_TRUE(made.ok()) << made.status();
    uint64_t failures = 0;
    const uint64_t stale = RunReproduction(**made, kPage, &failures);
    std::printf("  userfaultfd alone: %llu of %d READs saw another block's bytes\n",
                static_cast<unsigned long long>(stale), total);
    RecordProperty("stale_userfaultfd", static_cast<int>(stale));
    EXPECT_EQ(failures, 0u);
    made->reset();
  }
  auto hooks = HooksMonitor::Create();
  ASSERT_TRUE(hooks.ok()) << hooks.status();
  auto made = RegistrationCache::Create(domain_, {.monitor = *hooks});
  ASSERT_TRUE(made.ok()) << made.status();
  uint64_t failures = 0;
  const uint64_t stale = RunReproduction(**made, kPage, &failures);
  const CacheStats st = (*made)->stats();
  std::printf("  %s: %llu of %d READs stale (%llu misses, %llu monitor events)\n",
              (*hooks)->name().data(), static_cast<unsigned long long>(stale), total,
              static_cast<unsigned long long>(st.misses),
              static_cast<unsigned long long>(st.monitor_events));
  RecordProperty("stale_hooks", static_cast<int>(stale));
  EXPECT_EQ(stale, 0u) << "the hooks monitor served a freed block's MR";
  EXPECT_EQ(failures, 0u);
  EXPECT_GE((*hooks)->hook_events(), static_cast<uint64_t>(total)) << "every free() is hooked";
  made->reset();
  EXPECT_EQ(domain_->live_mrs(), 0);
}

// On-demand paging needs no monitor: the device follows the page tables.
// Decided by what the device reports; refused clearly where it has no ODP.
TEST_F(VerbsHooksTest, MallocFreeThreadsInOnDemandModeNeedNoMonitor) {
  auto made = RegistrationCache::Create(
      domain_, {.monitoring = Monitoring::kExplicitOnly, .paging = Paging::kOnDemand});
  if (!domain_->capabilities().on_demand_paging) {
    ASSERT_FALSE(made.ok()) << "on-demand mode accepted on a device without ODP for RC";
    std::printf("  on-demand: %s\n", made.status().ToString().c_str());
    EXPECT_EQ(made.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(made.status().message(), AllOf(HasSubstr(device_), HasSubstr("on-demand")));
    test::RecordBranch("odp", false);
    return;
  }
  test::RecordBranch("odp", true);
  ASSERT_TRUE(made.ok()) << made.status();
  ASSERT_EQ((*made)->monitor().name(), "explicit");
  uint64_t failures = 0;
  const uint64_t stale = RunReproduction(**made, odp_chunk_, &failures);
  const CacheStats st = (*made)->stats();
  std::printf("  on-demand, no monitor: %llu of %d READs stale (%llu hits, %llu misses)\n",
              static_cast<unsigned long long>(stale), kThreads * kRounds,
              static_cast<unsigned long long>(st.hits), static_cast<unsigned long long>(st.misses));
  RecordProperty("stale_on_demand", static_cast<int>(stale));
  EXPECT_EQ(stale, 0u) << "an on-demand MR read pages the process no longer has";
  EXPECT_EQ(failures, 0u);
  EXPECT_EQ(st.monitor_events, 0u);
  EXPECT_EQ(st.on_demand_registrations, st.misses);
  made->reset();
  EXPECT_EQ(domain_->live_mrs(), 0);
}

// A System V segment, removed (IPC_RMID) on every way out.
struct Segment {
  int id = shmget(IPC_PRIVATE, kPage, IPC_CREAT | 0600);
  ~Segment() {
    if (id >= 0) shmctl(id, IPC_RMID, nullptr);
  }
};

// A cached buffer (anonymous memory, pattern 1) replaced in place by
// shmat(segment, SHM_REMAP) (pattern 2); the READ through what Acquire
// then returns shows which pages the device reads.
void VerbsHooksTest::RunShmRemap(CacheOptions options, size_t chunk, Saw* saw, bool* same_mr) {
  Segment seg;
  ASSERT_GE(seg.id, 0) << std::strerror(errno);
  void* other = shmat(seg.id, nullptr, 0);
  ASSERT_NE(other, reinterpret_cast<void*>(-1)) << std::strerror(errno);
  FillPattern(other, kPage, 2);
  ASSERT_EQ(shmdt(other), 0);
  Mapping buf(kPage);
  ASSERT_TRUE(buf.ok());
  char* const addr = buf.data();
  FillPattern(addr, kPage, 1);
  {
    auto made = RegistrationCache::Create(domain_, options);
    ASSERT_TRUE(made.ok()) << made.status();
    RegistrationCache& cache = **made;
    Lane& lane = AddLane();
    ASSERT_NE(lane.pair.b, nullptr);
    auto local = cache.Acquire(lane.scratch.data(), kPage, Access::kLocalWrite);
    ASSERT_TRUE(local.ok()) << local.status();
    auto before = cache.Acquire(addr, kPage, Access::kRemoteRead);
    ASSERT_TRUE(before.ok()) << before.status();
    // Cached, so that a later Acquire can be served this MR. (The segment
    // mapped later is not watchable by a userfaultfd: a composed monitor
    // registers it per request.)
    ASSERT_EQ(cache.stats().uncached_registrations, 0u) << "the buffer must be cached";
    auto first = ReadBack(lane, *local, *before, addr, chunk, 2, 1);
    ASSERT_TRUE(first.ok()) << first.status();
    ASSERT_EQ(*first, Saw::kNew) << "the device does not read the buffer it was given";
    before->Reset();

    ASSERT_EQ(shmat(seg.id, addr, SHM_REMAP), static_cast<void*>(addr)) << std::strerror(errno);
    buf.Release();  // the segment's now: shmdt below
    ASSERT_EQ(FindMismatch(addr, kPage, 2), -1) << "the CPU does not see the segment";
    auto after = cache.Acquire(addr, kPage, Access::kRemoteRead);
    const bool acquired = after.ok();
    EXPECT_TRUE(acquired) << after.status();
    if (acquired) {
      auto got = ReadBack(lane, *local, *after, addr, chunk, 1, 2);
      EXPECT_TRUE(got.ok()) << got.status();
      if (got.ok()) *saw = *got;
      *same_mr = cache.stats().hits >= 1;
      std::printf("  %s%s: READ after shmat(SHM_REMAP) saw %s (%s)\n",
                  cache.monitor().name().data(),
                  cache.paging() == Paging::kOnDemand ? ", on-demand" : "", SawName(*saw),
                  *same_mr ? "the cached MR" : "a new MR");
    }
  }
  EXPECT_EQ(shmdt(addr), 0);
  EXPECT_EQ(domain_->live_mrs(), 0);
}

TEST_F(VerbsHooksTest, ShmRemapIsStaleWithUserfaultfdAloneAndFreshWithHooksOrOnDemand) {
  {
    auto uffd = UserfaultfdMonitor::Create();
    ASSERT_TRUE(uffd.ok()) << uffd.status();
    Saw saw = Saw::kNeither;
    bool same = false;
    RunShmRemap({.monitor = *uffd}, kPage, &saw, &same);
    if (HasFatalFailure()) return;
    // The kernel maps the segment without an unmap event: asserted, so a
    // kernel that starts reporting it is noticed.
    EXPECT_EQ(saw, Saw::kOld) << "userfaultfd now sees shmat(SHM_REMAP): update monitor.h";
    EXPECT_TRUE(same);
  }
  {
    auto hooks = HooksMonitor::Create();
    ASSERT_TRUE(hooks.ok()) << hooks.status();
    Saw saw = Saw::kNeither;
    bool same = true;
    RunShmRemap({.monitor = *hooks}, kPage, &saw, &same);
    if (HasFatalFailure()) return;
    EXPECT_EQ(saw, Saw::kNew) << "the hooks monitor served the replaced segment's MR";
    EXPECT_FALSE(same);
  }
  if (!domain_->capabilities().on_demand_paging) return;  // refusal: the test above
  Saw saw = Saw::kNeither;
  bool same = false;
  RunShmRemap({.monitoring = Monitoring::kExplicitOnly, .paging = Paging::kOnDemand}, odp_chunk_,
              &saw, &same);
  if (HasFatalFailure()) return;
  EXPECT_EQ(saw, Saw::kNew) << "the on-demand MR read the replaced segment";
  EXPECT_TRUE(same) << "no monitor: the cached MR is a hit";
}

}  // namespace
}  // namespace dmareg::device_test
