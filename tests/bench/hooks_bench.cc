// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// What libdmareg_hooks and the monitors on it cost the application, every
// variant in one run so that the ratios compare:
// - munmap of a page and of 2 MiB (populated), the range unregistered or
//   registered in a cache (the FakeDomain; `Apply` rows also time the cache
//   retiring it, the others leave that to the next, untimed, Acquire);
// - free() of a 1 MiB mmap-backed malloc block (munmap inside glibc) and a
//   malloc(64)+free() pair (the hooks' free() fast path);
// - the cache's hot hit under each monitor.
// Monitors: Libc (libc's own function, called past the interposer: the bare
// call), Unsubscribed (through the hooks, nobody subscribed: what linking
// the library costs), Userfaultfd, Hooks (kNever: the hooks alone), HooksUffd
// (the hooks composed with a userfaultfd), Explicit (munmap, then Notify).
// Every cache holds two pages that bracket the address space where mmap
// places memory, so the hooks' watched span covers the unmapped ranges and
// their sink publishes each (the worst case); `OutsideSpan` drops them at
// the filter. Counters per iteration: `hooked` (events the library saw),
// `published` (of those, the hooks monitor passed to its log), `applied`
// (log events the cache consumed: 2 per range when the hooks and the
// userfaultfd both report it).
//
//   hooks_bench --benchmark_repetitions=3 --benchmark_format=json > out.json
//   python3 tests/bench/compare_hooks.py out.json    (or: scripts/bench --hooks)

#include <dlfcn.h>
#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "dmareg/c/hooks.h"
#include "dmareg/cache.h"
#include "dmareg/monitor.h"
#include "dmareg/testing/fake_domain.h"

namespace {

const size_t kPage = static_cast<size_t>(sysconf(_SC_PAGESIZE));
constexpr size_t kHuge = size_t{2} << 20;
constexpr size_t kLargeBlock = size_t{1} << 20;

enum class Mon { kLibc, kUnsubscribed, kUserfaultfd, kHooks, kHooksUffd, kExplicit };

using MunmapFn = int (*)(void*, size_t);
using FreeFn = void (*)(void*);
MunmapFn g_libc_munmap = nullptr;
FreeFn g_libc_free = nullptr;
char* g_low = nullptr;   // bracket the hooks' watched span
char* g_high = nullptr;  // (see the header comment)

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "hooks_bench: %s\n", what);
  std::exit(1);
}

int Unmap(Mon mon, void* p, size_t n) {
  return mon == Mon::kLibc ? g_libc_munmap(p, n) : munmap(p, n);
}
void Free(Mon mon, void* p) { mon == Mon::kLibc ? g_libc_free(p) : free(p); }

char* MapAt(void* hint, size_t n) {
  void* p =
      mmap(hint, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (p == MAP_FAILED) Die("mmap failed");
  return static_cast<char*>(p);
}

uint64_t Hooked() {
  uint64_t n = 0;
  for (int k = 0; k < DMAREG_HOOKS_KINDS; ++k) n += dmareg_hooks_events(k);
  return n;
}

// A cache over the FakeDomain fed by `mon`'s monitor (an ExplicitMonitor for
// Libc and Unsubscribed: nobody subscribes to the hooks).
struct Setup {
  std::shared_ptr<dmareg::testing::FakeDomain> fake =
      std::make_shared<dmareg::testing::FakeDomain>();
  std::shared_ptr<dmareg::MemoryMonitor> monitor;
  std::shared_ptr<dmareg::HooksMonitor> hooks;
  std::unique_ptr<dmareg::RegistrationCache> cache;
  std::vector<dmareg::Registration> held;
  uint64_t hooked0 = 0, published0 = 0, applied0 = 0;

  // Empty on success, else why not.
  std::string Init(Mon mon, bool wide_span) {
    switch (mon) {
      case Mon::kUserfaultfd: {
        auto u = dmareg::UserfaultfdMonitor::Create();
        if (!u.ok()) return std::string(u.status().message());
        monitor = *u;
        break;
      }
      case Mon::kHooks:
      case Mon::kHooksUffd: {
        auto h = dmareg::HooksMonitor::Create(
            {.userfaultfd = mon == Mon::kHooks ? dmareg::HooksUserfaultfd::kNever
                                               : dmareg::HooksUserfaultfd::kRequired});
        if (!h.ok()) return std::string(h.status().message());
        monitor = hooks = *h;
        break;
      }
      default:
        monitor = dmareg::ExplicitMonitor::Create();
    }
    auto c = dmareg::RegistrationCache::Create(fake, {.monitor = monitor});
    if (!c.ok()) Die("RegistrationCache::Create failed");
    cache = *std::move(c);
    if (wide_span) {
      for (char* p : {g_low, g_high}) held.push_back(Acquire(p, kPage));
    }
    return "";
  }
  dmareg::Registration Acquire(const void* p, size_t n) {
    auto r = cache->Acquire(p, n, dmareg::Access::kLocalWrite);
    if (!r.ok()) Die("Acquire failed");
    return *std::move(r);
  }
  void Start() {
    hooked0 = Hooked();
    published0 = hooks != nullptr ? hooks->hook_events() : 0;
    applied0 = cache->stats().monitor_events;
  }
  void Report(benchmark::State& state) {
    const double n = static_cast<double>(state.iterations());
    const uint64_t published = hooks != nullptr ? hooks->hook_events() - published0 : 0;
    state.counters["hooked"] = static_cast<double>(Hooked() - hooked0) / n;
    state.counters["published"] = static_cast<double>(published) / n;
    cache->ApplyMonitorEvents();
    state.counters["applied"] = static_cast<double>(cache->stats().monitor_events - applied0) / n;
  }
};

double Seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Times munmap (and for Explicit the Notify; for `apply` the cache retiring
// the registration) with its own clock: the mmap and the Acquire before it
// are not timed. Wall-clock time: an unmapping thread of a watched range
// waits (off the CPU) for the userfaultfd reader.
void BM_Munmap(benchmark::State& state, Mon mon, size_t size, bool registered, bool apply,
               bool wide_span) {
  Setup s;
  if (std::string why = s.Init(mon, wide_span); !why.empty())
    return state.SkipWithError(why.c_str());
  s.Start();
  for (auto _ : state) {
    char* p = MapAt(nullptr, size);
    if (registered) s.Acquire(p, size);  // released at once: stays cached
    const auto t0 = std::chrono::steady_clock::now();
    if (Unmap(mon, p, size) != 0) Die("munmap failed");
    if (mon == Mon::kExplicit && registered) (void)s.monitor->Notify(p, size);
    if (apply) s.cache->ApplyMonitorEvents();
    state.SetIterationTime(Seconds(t0));
  }
  s.Report(state);
}

// munmap that the kernel refuses at once (a misaligned address inside a
// mapping: nothing is unmapped): the system call's floor, so what the hooks
// add, the sink's publish included, stands out.
void BM_MunmapRefused(benchmark::State& state, Mon mon) {
  Setup s;
  if (std::string why = s.Init(mon, true); !why.empty()) return state.SkipWithError(why.c_str());
  char* p = MapAt(nullptr, 2 * kPage);
  s.Start();
  for (auto _ : state) {
    if (Unmap(mon, p + 1, kPage) == 0) Die("a misaligned munmap succeeded");
  }
  s.Report(state);
  munmap(p, 2 * kPage);
}

// free() of a 1 MiB block, mmap-backed (main sets M_MMAP_THRESHOLD below
// it), every page touched; only the free is timed.
void BM_FreeLarge(benchmark::State& state, Mon mon) {
  Setup s;
  if (std::string why = s.Init(mon, true); !why.empty()) return state.SkipWithError(why.c_str());
  s.Start();
  for (auto _ : state) {
    auto* p = static_cast<char*>(malloc(kLargeBlock));
    if (p == nullptr) Die("malloc failed");
    for (size_t i = 0; i < kLargeBlock; i += kPage) p[i] = 1;
    benchmark::DoNotOptimize(p);
    const auto t0 = std::chrono::steady_clock::now();
    Free(mon, p);
    state.SetIterationTime(Seconds(t0));
  }
  s.Report(state);
}

// malloc(64) + free(): a heap chunk, the hooks' fast path (with a
// subscriber, two sbrk(0) around libc's free to see a trim).
void BM_MallocFreeSmall(benchmark::State& state, Mon mon) {
  Setup s;
  if (std::string why = s.Init(mon, true); !why.empty()) return state.SkipWithError(why.c_str());
  s.Start();
  for (auto _ : state) {
    void* p = malloc(64);
    benchmark::DoNotOptimize(p);
    Free(mon, p);
  }
  s.Report(state);
}

void BM_HitHot(benchmark::State& state, Mon mon) {
  Setup s;
  if (std::string why = s.Init(mon, true); !why.empty()) return state.SkipWithError(why.c_str());
  constexpr size_t kPages = 16;
  char* p = MapAt(nullptr, kPages * kPage);
  dmareg::Registration held = s.Acquire(p, kPages * kPage);
  for (auto _ : state) {
    auto r = s.cache->Acquire(p + kPage, kPage, dmareg::Access::kLocalWrite);
    benchmark::DoNotOptimize(r);
  }
  held.Reset();
  s.held.clear();
  s.cache.reset();
  munmap(p, kPages * kPage);
}

void RegisterAll() {
  struct Named {
    const char* name;
    Mon mon;
  };
  const Named all[] = {{"Libc", Mon::kLibc},
                       {"Unsubscribed", Mon::kUnsubscribed},
                       {"Userfaultfd", Mon::kUserfaultfd},
                       {"Hooks", Mon::kHooks},
                       {"HooksUffd", Mon::kHooksUffd}};
  const Named watching[] = {{"Userfaultfd", Mon::kUserfaultfd},
                            {"Hooks", Mon::kHooks},
                            {"HooksUffd", Mon::kHooksUffd},
                            {"Explicit", Mon::kExplicit}};
  for (auto [size, tag] : {std::pair{kPage, "Page"}, std::pair{kHuge, "2MiB"}}) {
    const std::string base = std::string("BM_Munmap") + tag;
    for (const Named& m : all) {
      benchmark::RegisterBenchmark((base + "/Unregistered/" + m.name).c_str(), BM_Munmap, m.mon,
                                   size, false, false, true)
          ->UseManualTime();
    }
    benchmark::RegisterBenchmark((base + "/Unregistered/Hooks_OutsideSpan").c_str(), BM_Munmap,
                                 Mon::kHooks, size, false, false, false)
        ->UseManualTime();
    for (bool apply : {false, true}) {
      for (const Named& m : watching) {
        benchmark::RegisterBenchmark(
            (base + (apply ? "/RegisteredApply/" : "/Registered/") + m.name).c_str(), BM_Munmap,
            m.mon, size, true, apply, true)
            ->UseManualTime();
      }
    }
  }
  for (const Named& m : all) {
    benchmark::RegisterBenchmark((std::string("BM_MunmapRefused/") + m.name).c_str(),
                                 BM_MunmapRefused, m.mon);
  }
  for (const Named& m : all) {
    benchmark::RegisterBenchmark((std::string("BM_Free1MiB/") + m.name).c_str(), BM_FreeLarge,
                                 m.mon)
        ->UseManualTime();
  }
  for (const Named& m : all) {
    benchmark::RegisterBenchmark((std::string("BM_MallocFree64/") + m.name).c_str(),
                                 BM_MallocFreeSmall, m.mon);
  }
  for (const Named& m : {Named{"Explicit", Mon::kExplicit}, Named{"Userfaultfd", Mon::kUserfaultfd},
                         Named{"Hooks", Mon::kHooks}, Named{"HooksUffd", Mon::kHooksUffd}}) {
    benchmark::RegisterBenchmark((std::string("BM_HitHot/") + m.name).c_str(), BM_HitHot, m.mon);
  }
}

}  // namespace

int main(int argc, char** argv) {
  // libc's own munmap and free, past the interposer that this binary links.
  void* libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
  if (libc == nullptr) Die("libc.so.6 is not loaded");
  g_libc_munmap = reinterpret_cast<MunmapFn>(dlsym(libc, "munmap"));
  g_libc_free = reinterpret_cast<FreeFn>(dlsym(libc, "free"));
  if (g_libc_munmap == nullptr || g_libc_free == nullptr) Die("no munmap/free in libc");
  if (g_libc_munmap == &munmap) Die("munmap is not interposed: link dmareg_hooks");
  // A fixed threshold: glibc's sliding one would move 1 MiB blocks to the
  // heap after the first free.
  if (mallopt(M_MMAP_THRESHOLD, 256 * 1024) == 0) Die("mallopt failed");
  // The bracketing pages: one low (below the heap of a PIE and every mmap),
  // one just under the stack (above mmap's base).
  g_low = MapAt(reinterpret_cast<void*>(uintptr_t{1} << 32), kPage);
  int on_stack = 0;
  g_high = MapAt(reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(&on_stack) - (256 << 20)) &
                                         ~(kPage - 1)),
                 kPage);
  RegisterAll();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
