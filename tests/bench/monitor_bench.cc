// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// What a memory monitor costs the application:
// - munmap of a range the cache registered, and of one it never saw, with
//   no monitor, the userfaultfd monitor, and explicit notification;
// - the cache's hot hit with each monitor attached.
// The registrations go to a no-op domain: only the monitor's share is timed.
//
//   monitor_bench --benchmark_min_time=0.2

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>

#include "benchmark/benchmark.h"
#include "dmareg/cache.h"
#include "dmareg/monitor.h"
#include "dmareg/testing/fake_domain.h"

namespace {

const size_t kPage = static_cast<size_t>(sysconf(_SC_PAGESIZE));
constexpr size_t kPages = 16;

enum class Mon { kNone, kUserfaultfd, kExplicit };

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

BENCHMARK_CAPTURE(BM_Munmap, Unregistered_NoMonitor, Mon::kNone, false)->UseRealTime();
BENCHMARK_CAPTURE(BM_Munmap, Unregistered_Userfaultfd, Mon::kUserfaultfd, false)->UseRealTime();
BENCHMARK_CAPTURE(BM_Munmap, Registered_NoMonitor, Mon::kNone, true)->UseRealTime();
BENCHMARK_CAPTURE(BM_Munmap, Registered_Userfaultfd, Mon::kUserfaultfd, true)->UseRealTime();
BENCHMARK_CAPTURE(BM_Munmap, Registered_Explicit, Mon::kExplicit, true)->UseRealTime();
BENCHMARK_CAPTURE(BM_HitHot, NoMonitor, Mon::kNone);
BENCHMARK_CAPTURE(BM_HitHot, Userfaultfd, Mon::kUserfaultfd);

}  // namespace

BENCHMARK_MAIN();
