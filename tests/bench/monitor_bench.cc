// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// What a memory monitor costs the application:
// - munmap of a range the cache registered, and of one it never saw, with
//   no monitor, the userfaultfd monitor, and explicit notification;
// - the cache's hot hit with each monitor attached;
// - the process's shared monitor (the default): its hit and munmap against
//   a userfaultfd of the cache's own, what one more cache costs to create
//   (against one with its own userfaultfd and reader thread), and a munmap
//   of memory that 1, 2, 4 or 8 caches hold, with each cache applying it.
// The registrations go to a no-op domain: only the monitor's share is timed.
//
//   monitor_bench --benchmark_min_time=0.2

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "benchmark/benchmark.h"
#include "dmareg/cache.h"
#include "dmareg/monitor.h"
#include "dmareg/testing/fake_domain.h"

namespace {

const size_t kPage = static_cast<size_t>(sysconf(_SC_PAGESIZE));
constexpr size_t kPages = 16;

enum class Mon { kNone, kUserfaultfd, kExplicit, kShared };

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "monitor_bench: %s\n", what);
  std::exit(1);
}

std::unique_ptr<dmareg::RegistrationCache> MakeCache(Mon mon,
                                                     std::shared_ptr<dmareg::MemoryMonitor>* m) {
  switch (mon) {
    case Mon::kUserfaultfd: {
      auto uffd = dmareg::UserfaultfdMonitor::Create();
      if (!uffd.ok()) return nullptr;
      *m = *uffd;
      break;
    }
    case Mon::kExplicit:
    case Mon::kNone:
      *m = dmareg::ExplicitMonitor::Create();
      break;
    case Mon::kShared: {
      auto cache = dmareg::RegistrationCache::Create(
          std::make_shared<dmareg::testing::NoopDomain>(), {.use_environment = false});
      if (!cache.ok()) return nullptr;
      return std::move(*cache);
    }
  }
  auto cache = dmareg::RegistrationCache::Create(std::make_shared<dmareg::testing::NoopDomain>(),
                                                 {.monitor = *m});
  if (!cache.ok()) Die("RegistrationCache::Create failed");
  return std::move(*cache);
}

char* Map() {
  void* p = mmap(nullptr, kPages * kPage, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (p == MAP_FAILED) Die("mmap failed");
  return static_cast<char*>(p);
}

// Times munmap alone; the set-up (mmap, and the registration when
// `registered`) runs with the clock paused. Wall-clock time: an unmapping
// thread waits (off the CPU) for the monitor's reader.
void BM_Munmap(benchmark::State& state, Mon mon, bool registered) {
  std::shared_ptr<dmareg::MemoryMonitor> monitor;
  auto cache = MakeCache(mon, &monitor);
  if (cache == nullptr) return state.SkipWithError("no userfaultfd for this process");
  for (auto _ : state) {
    state.PauseTiming();
    char* p = Map();
    if (registered) {
      auto reg = cache->Acquire(p, kPages * kPage, dmareg::Access::kLocalWrite);
      if (!reg.ok()) Die("Acquire failed");
    }
    state.ResumeTiming();
    munmap(p, kPages * kPage);
    // An application on explicit notification pays for telling the cache.
    if (mon == Mon::kExplicit) (void)monitor->Notify(p, kPages * kPage);
  }
  cache->ApplyMonitorEvents();
}

void BM_HitHot(benchmark::State& state, Mon mon) {
  std::shared_ptr<dmareg::MemoryMonitor> monitor;
  auto cache = MakeCache(mon, &monitor);
  if (cache == nullptr) return state.SkipWithError("no userfaultfd for this process");
  char* p = Map();
  auto held = cache->Acquire(p, kPages * kPage, dmareg::Access::kLocalWrite);
  if (!held.ok()) Die("Acquire failed");
  for (auto _ : state) {
    auto r = cache->Acquire(p + kPage, kPage, dmareg::Access::kLocalWrite);
    benchmark::DoNotOptimize(r);
  }
  held->Reset();
  cache.reset();
  munmap(p, kPages * kPage);
}

// Creating a cache: with the shared monitor (made already, as in a program
// whose first cache is up) against a userfaultfd and reader thread of its own.
void BM_CreateCache(benchmark::State& state, bool shared) {
  auto noop = std::make_shared<dmareg::testing::NoopDomain>();
  std::shared_ptr<dmareg::MemoryMonitor> first;
  if (shared) first = dmareg::SharedMonitor().value();
  for (auto _ : state) {
    std::shared_ptr<dmareg::MemoryMonitor> own;
    if (!shared) {
      auto uffd = dmareg::UserfaultfdMonitor::Create();
      if (!uffd.ok()) return state.SkipWithError("no userfaultfd for this process");
      own = *uffd;
    }
    auto cache =
        dmareg::RegistrationCache::Create(noop, {.monitor = own, .use_environment = false});
    if (!cache.ok()) Die("RegistrationCache::Create failed");
    benchmark::DoNotOptimize(cache);
  }
}

// One munmap of memory that `caches` caches (one per NIC) all hold, on the
// shared monitor, then each cache applying it as its next Acquire would.
void BM_MunmapInCaches(benchmark::State& state) {
  std::vector<std::unique_ptr<dmareg::RegistrationCache>> caches;
  for (int64_t i = 0; i < state.range(0); ++i) {
    auto c = dmareg::RegistrationCache::Create(std::make_shared<dmareg::testing::NoopDomain>(),
                                               {.use_environment = false});
    if (!c.ok()) return state.SkipWithError("no shared monitor for this process");
    caches.push_back(std::move(*c));
  }
  for (auto _ : state) {
    state.PauseTiming();
    char* p = Map();
    for (auto& c : caches) {
      if (!c->Acquire(p, kPages * kPage, dmareg::Access::kLocalWrite).ok()) Die("Acquire failed");
    }
    state.ResumeTiming();
    munmap(p, kPages * kPage);
    for (auto& c : caches) c->ApplyMonitorEvents();
  }
  state.counters["caches"] = static_cast<double>(caches.size());
}

BENCHMARK_CAPTURE(BM_Munmap, Unregistered_NoMonitor, Mon::kNone, false)->UseRealTime();
BENCHMARK_CAPTURE(BM_Munmap, Unregistered_Userfaultfd, Mon::kUserfaultfd, false)->UseRealTime();
BENCHMARK_CAPTURE(BM_Munmap, Registered_NoMonitor, Mon::kNone, true)->UseRealTime();
BENCHMARK_CAPTURE(BM_Munmap, Registered_Userfaultfd, Mon::kUserfaultfd, true)->UseRealTime();
BENCHMARK_CAPTURE(BM_Munmap, Registered_Explicit, Mon::kExplicit, true)->UseRealTime();
BENCHMARK_CAPTURE(BM_HitHot, NoMonitor, Mon::kNone);
BENCHMARK_CAPTURE(BM_Munmap, Registered_Shared, Mon::kShared, true)->UseRealTime();
BENCHMARK_CAPTURE(BM_HitHot, Userfaultfd, Mon::kUserfaultfd);
BENCHMARK_CAPTURE(BM_HitHot, Shared, Mon::kShared);
BENCHMARK_CAPTURE(BM_CreateCache, OwnUserfaultfd, false)->UseRealTime();
BENCHMARK_CAPTURE(BM_CreateCache, Shared, true)->UseRealTime();
BENCHMARK(BM_MunmapInCaches)->Arg(1)->Arg(2)->Arg(4)->Arg(8)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
