// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// cache_bench: dmareg's RegistrationCache and UCX's ucs_rcache on the same
// workloads, in one binary so that ratios come from one run on one machine.
//
// Both caches sit in front of a registration that does nothing
// (dmareg::testing::NoopDomain; UCX ops whose mem_reg/mem_dereg only count),
// so what is measured is the cache itself. Memory is 4 KiB regions at 8 KiB
// stride (no two regions touch, so neither cache merges) inside one
// PROT_NONE, MAP_NORESERVE reservation: neither cache touches the pages
// (UCX's PFN check is off, and UCX installs no memory hooks: ucm_events = 0).
//
// Workloads (each as Dmareg/<name> and Ucx/<name>):
//   HitHot            acquire + release of a 4 KiB range inside one cached
//                     1 MiB region.
//   HitRandom/N       acquire + release of one of N cached 4 KiB regions,
//                     picked by xorshift64 in the loop (N = 1e3, 1e5, 1e6).
//                     Counter bytes_per_region: resident-set growth while the
//                     N regions were populated, divided by N: every page the
//                     cache touched, its own mmaps included (malloc's in-use
//                     count would miss UCX's mmap'd page-table pool, and
//                     count the untouched padding of 2 MiB-aligned blocks).
//   Miss              acquire + release of an address the cache has not seen.
//   MissChurn         the same, plus retiring the region made 1,024 misses
//                     earlier, all timed: the full life of a cached region.
//   HitRandomMT/100000, HitHotMT: the hit workloads from 1 and 2 threads on
//                     one shared cache; scaling = items/s(2) / items/s(1).
//   Memory/DependentLoad/MiB  no cache at all: the latency of a dependent
//                     load over 8 and 64 MiB, the floor under the random rows.
//   Paired/Miss, Paired/MissChurn: both caches' Miss and MissChurn in
//                     alternating timed blocks of 1,024 operations, one
//                     benchmark; the median of the per-pair ratios (see
//                     BM_Paired).
//   DmaBuf/HitImported, DmaBuf/HitByFd, DmaBuf/Fstat (dmareg only): a 4 KiB
//                     slice inside one cached 1 MiB dma-buf mapping, acquired
//                     and released through an ImportedDmaBuf and by fd (one
//                     fstat per call, as InspectDmaBuf makes), and the bare
//                     fstat(2) of the same fd, and DmaBuf/FstatThenHostHit
//                     (that fstat, then Dmareg/HitHot's hit, in one loop),
//                     to read against Dmareg/HitHot
//                     (a memfd stands for the dma-buf: the cache's side is
//                     the same, and so is the fstat).
//
// Counter regs_per_op: registrations the cache asked of the domain per
// operation during the timed loop: 0 for the hit workloads, 1 for the misses
// (a check that each workload measures what it says).
//
//   cache_bench --benchmark_min_time=0.2 --benchmark_repetitions=5
//       --benchmark_enable_random_interleaving=true
//       --benchmark_format=json > out.json       (one command line)
//   python3 tests/bench/compare.py out.json
//
// HitRandom at 100,000 and 1,000,000 regions is bound by memory latency and
// so by what else shares the last-level cache: on a machine running other
// work, compare figures from one run only, and read compare.py's parallelism
// column before trusting a 2-thread figure.

#include <malloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "benchmark/benchmark.h"
#include "dmareg/cache.h"
#include "dmareg/dmabuf_id.h"
#include "dmareg/testing/fake_domain.h"

#ifdef DMAREG_BENCH_HAVE_UCX
extern "C" {
#include <ucs/memory/rcache.h>
}
#endif

namespace {

constexpr size_t kRegionBytes = 4096;
constexpr size_t kStride = 8192;
constexpr size_t kHotRegionBytes = size_t{1} << 20;
// Misses: regions made between two clean-ups (Miss) / kept alive (MissChurn).
constexpr size_t kMissWindow = 1024;

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "cache_bench: %s\n", what);
  std::abort();
}

// An address range that is never touched: no memory behind it.
class Reservation {
 public:
  explicit Reservation(size_t bytes, size_t align = size_t{2} << 20) : bytes_(bytes + align) {
    void* p = mmap(nullptr, bytes_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) Die("mmap of the address reservation failed");
    raw_ = static_cast<char*>(p);
    const uintptr_t a = reinterpret_cast<uintptr_t>(raw_);
    base_ = raw_ + ((align - a % align) % align);
  }
  ~Reservation() { munmap(raw_, bytes_); }
  Reservation(const Reservation&) = delete;
  Reservation& operator=(const Reservation&) = delete;

  char* base() const { return base_; }

 private:
  size_t bytes_;
  char* raw_;
  char* base_;
};

// Resident set size in bytes (/proc/self/statm, second field). Free heap
// pages are handed back first, so that memory a fixture reuses from an
// earlier benchmark counts as growth too.
size_t ResidentBytes() {
  malloc_trim(0);
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  unsigned long size = 0, resident = 0;
  const int n = std::fscanf(f, "%lu %lu", &size, &resident);
  std::fclose(f);
  return n == 2 ? resident * static_cast<size_t>(sysconf(_SC_PAGESIZE)) : 0;
}

// xorshift64: three shifts and xors per draw, no table.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull | 1) {}
  // Uniform in [0, n) by multiply-shift (no division in the loop).
  size_t Below(size_t n) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return static_cast<size_t>((static_cast<unsigned __int128>(s) * n) >> 64);
  }
};

// ---- the two caches behind one interface -----------------------------------
//
// AcquireRelease: take a mapping for [p, p + len) and drop it again (returns
//   false on failure). The key is read, so the lookup cannot be elided.
// AcquireReleaseToken: the same, returning what Remove needs later.
// Remove: retire one cached region (dmareg: Invalidate of its span; UCX:
//   ucs_rcache_region_invalidate of the region).
// registrations(): calls the cache made to the (no-op) registration.

class DmaregBackend {
 public:
  using Token = const char*;

  DmaregBackend() {
    auto cache =
        dmareg::RegistrationCache::Create(std::make_shared<dmareg::testing::NoopDomain>(),
                                          {.monitoring = dmareg::Monitoring::kExplicitOnly});
    if (!cache.ok()) Die("RegistrationCache::Create failed");
    cache_ = std::move(*cache);
  }

  bool AcquireRelease(const char* p, size_t len) {
    absl::StatusOr<dmareg::Registration> r = cache_->Acquire(p, len, dmareg::Access::kLocalWrite);
    if (!r.ok()) return false;
    benchmark::DoNotOptimize(r->lkey());
    return true;  // the handle's destructor releases
  }
  Token AcquireReleaseToken(const char* p, size_t len) {
    return AcquireRelease(p, len) ? p : nullptr;
  }
  void Remove(Token t) {
    if (!cache_->Invalidate(t, kRegionBytes).ok()) Die("Invalidate failed");
  }
  uint64_t registrations() const { return cache_->stats().misses; }

 private:
  std::unique_ptr<dmareg::RegistrationCache> cache_;
};

#ifdef DMAREG_BENCH_HAVE_UCX
class UcxBackend {
 public:
  using Token = ucs_rcache_region_t*;

  UcxBackend() {
    static const ucs_rcache_ops_t kOps = {
        .mem_reg = [](void* context, ucs_rcache_t*, void*, ucs_rcache_region_t*,
                      uint16_t) -> ucs_status_t {
          ++static_cast<UcxBackend*>(context)->regs_;  // under UCX's write lock
          return UCS_OK;
        },
        .mem_dereg = [](void*, ucs_rcache_t*, ucs_rcache_region_t*) {},
        .dump_region =
            [](void*, ucs_rcache_t*, ucs_rcache_region_t*, char* buf, size_t max) {
              if (max > 0) buf[0] = '\0';
            },
    };
    ucs_rcache_params_t params = {};
    params.region_struct_size = sizeof(ucs_rcache_region_t);
    params.alignment = UCS_PGT_ADDR_ALIGN;
    params.max_alignment = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    params.ucm_events = 0;  // no memory hooks: nothing gets unmapped here
    params.ucm_event_priority = 0;
    params.ops = &kOps;
    params.context = this;
    params.flags = UCS_RCACHE_FLAG_NO_PFN_CHECK;  // never read /proc/self/pagemap
    params.max_regions = ULONG_MAX;
    params.max_size = SIZE_MAX;
    params.max_unreleased = SIZE_MAX;
    if (ucs_rcache_create(&params, "cache_bench", nullptr, &rcache_) != UCS_OK) {
      Die("ucs_rcache_create failed");
    }
  }
  ~UcxBackend() { ucs_rcache_destroy(rcache_); }
  UcxBackend(const UcxBackend&) = delete;
  UcxBackend& operator=(const UcxBackend&) = delete;

  bool AcquireRelease(const char* p, size_t len) {
    ucs_rcache_region_t* r;
    if (ucs_rcache_get(rcache_, const_cast<char*>(p), len, PROT_READ | PROT_WRITE, nullptr, &r) !=
        UCS_OK) {
      return false;
    }
    benchmark::DoNotOptimize(r->super.start);
    ucs_rcache_region_put(rcache_, r);
    return true;
  }
  // The region stays valid after the put: the page table holds a reference
  // until it is invalidated (no limits, no unmap events here).
  Token AcquireReleaseToken(const char* p, size_t len) {
    ucs_rcache_region_t* r;
    if (ucs_rcache_get(rcache_, const_cast<char*>(p), len, PROT_READ | PROT_WRITE, nullptr, &r) !=
        UCS_OK) {
      return nullptr;
    }
    benchmark::DoNotOptimize(r->super.start);
    ucs_rcache_region_put(rcache_, r);
    return r;
  }
  void Remove(Token r) {
    ucs_rcache_region_invalidate(
        rcache_, r, [](void*) {}, nullptr);
  }
  uint64_t registrations() const { return regs_; }

 private:
  ucs_rcache_t* rcache_ = nullptr;
  uint64_t regs_ = 0;
};
#endif  // DMAREG_BENCH_HAVE_UCX

// ---- shared, lazily built fixtures -----------------------------------------
//
// Built once per process (the first benchmark that needs one) and kept, so
// repeated runs of a benchmark function and the 1- and 2-thread variants
// share one populated cache, and so that the memory measured while
// populating is not recycled from a fixture freed earlier.

std::mutex fixtures_mu;

// One cached 1 MiB region; hits ask for 4 KiB in its middle.
template <typename B>
struct HotFixture {
  Reservation mem{kHotRegionBytes};
  B backend;
  const char* target = mem.base() + kHotRegionBytes / 2;

  HotFixture() {
    if (!backend.AcquireRelease(mem.base(), kHotRegionBytes)) Die("hot region registration failed");
  }
  static HotFixture& Get() {
    std::lock_guard<std::mutex> lock(fixtures_mu);
    static HotFixture* f = new HotFixture();  // never freed
    return *f;
  }
};

// N cached, unreferenced 4 KiB regions at 8 KiB stride.
template <typename B>
struct RandomFixture {
  explicit RandomFixture(size_t count) : n(count), mem(count * kStride) {
    backend = std::make_unique<B>();
    const size_t before = ResidentBytes();
    for (size_t i = 0; i < n; ++i) {
      if (!backend->AcquireRelease(mem.base() + i * kStride, kRegionBytes)) {
        Die("populating registration failed");
      }
    }
    const size_t after = ResidentBytes();
    bytes_per_region = after > before ? static_cast<double>(after - before) / n : 0.0;
    if (backend->registrations() != n) Die("populating did not register every region");
  }
  static RandomFixture& Get(size_t n) {
    std::lock_guard<std::mutex> lock(fixtures_mu);
    static auto* all = new std::map<size_t, std::unique_ptr<RandomFixture>>();  // never freed
    auto& f = (*all)[n];
    if (f == nullptr) f = std::make_unique<RandomFixture>(n);
    return *f;
  }

  const size_t n;
  Reservation mem;
  std::unique_ptr<B> backend;
  double bytes_per_region = 0;
};

// Registrations per operation during the timed loop (thread 0 reports; the
// start/stop barriers of threaded runs order the reads after every thread).
template <typename B>
void ReportRegs(benchmark::State& state, const B& backend, uint64_t before) {
  if (state.thread_index() != 0 || state.iterations() == 0) return;
  const double ops = static_cast<double>(state.iterations()) * state.threads();
  state.counters["regs_per_op"] = static_cast<double>(backend.registrations() - before) / ops;
}

// ---- workloads --------------------------------------------------------------

template <typename B>
void BM_HitHot(benchmark::State& state) {
  HotFixture<B>& f = HotFixture<B>::Get();
  const uint64_t regs = f.backend.registrations();
  const char* p = f.target;
  for (auto _ : state) {
    if (!f.backend.AcquireRelease(p, kRegionBytes)) {
      state.SkipWithError("acquire failed");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
  ReportRegs(state, f.backend, regs);
}

template <typename B>
void BM_HitRandom(benchmark::State& state) {
  RandomFixture<B>& f = RandomFixture<B>::Get(static_cast<size_t>(state.range(0)));
  const uint64_t regs = f.backend->registrations();
  B& backend = *f.backend;
  const char* base = f.mem.base();
  const size_t n = f.n;
  Rng rng(static_cast<uint64_t>(state.thread_index()) + 1);
  for (auto _ : state) {
    if (!backend.AcquireRelease(base + rng.Below(n) * kStride, kRegionBytes)) {
      state.SkipWithError("acquire failed");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
  ReportRegs(state, backend, regs);
  if (state.thread_index() == 0) state.counters["bytes_per_region"] = f.bytes_per_region;
}

// Miss: every iteration acquires and releases an address the cache does not
// hold: the lock-free probe fails, the region is registered (no-op) and
// inserted. To keep the cache bounded the same way for both (neither cache's
// eviction policy is involved), every kMissWindow misses the timer is paused
// and those regions are retired one by one through each cache's own explicit
// invalidation (dmareg: Invalidate(span); UCX: ucs_rcache_region_invalidate),
// then their addresses are reused. So the cache holds 0..1,023 regions while
// timed, and ns/op is the cost of one miss + insert + release, without the
// removal. MissChurn below times the removal too.
// The Miss workload's state: kMissWindow addresses, made one at a time and
// retired together.
template <typename B>
struct MissWindow {
  B backend;
  Reservation mem{kMissWindow * kStride};
  std::vector<typename B::Token> made = std::vector<typename B::Token>(kMissWindow);

  // Misses on address i (< kMissWindow); false if the acquire failed.
  bool Make(size_t i) {
    made[i] = backend.AcquireReleaseToken(mem.base() + i * kStride, kRegionBytes);
    return made[i] != nullptr;
  }
  void RetireAll() {
    for (typename B::Token t : made) backend.Remove(t);
  }
};

template <typename B>
void BM_Miss(benchmark::State& state) {
  MissWindow<B> w;
  const uint64_t regs = w.backend.registrations();
  size_t i = 0;
  for (auto _ : state) {
    if (!w.Make(i)) {
      state.SkipWithError("acquire failed");
      break;
    }
    if (++i == kMissWindow) {
      state.PauseTiming();
      w.RetireAll();
      i = 0;
      state.ResumeTiming();
    }
  }
  state.SetItemsProcessed(state.iterations());
  ReportRegs(state, w.backend, regs);
}

// MissChurn: steady state of kMissWindow live regions; each iteration retires
// the region made kMissWindow iterations ago and misses on a new address (the
// addresses cycle through 2 * kMissWindow slots, so a slot is reused only
// after its region was retired). Everything is timed.
template <typename B>
struct ChurnRing {
  B backend;
  Reservation mem{2 * kMissWindow * kStride};
  std::vector<typename B::Token> ring = std::vector<typename B::Token>(kMissWindow);
  size_t slot = kMissWindow;  // next address slot, mod 2 * kMissWindow
  size_t k = 0;               // ring position of the oldest region

  ChurnRing() {
    for (size_t i = 0; i < kMissWindow; ++i) {
      ring[i] = backend.AcquireReleaseToken(mem.base() + i * kStride, kRegionBytes);
      if (ring[i] == nullptr) Die("churn warm-up failed");
    }
  }
  ~ChurnRing() {
    for (typename B::Token t : ring) {
      if (t != nullptr) backend.Remove(t);
    }
  }
  ChurnRing(const ChurnRing&) = delete;
  ChurnRing& operator=(const ChurnRing&) = delete;

  // Retires the oldest region and misses on the next address; false if the
  // acquire failed.
  bool Step() {
    backend.Remove(ring[k]);
    ring[k] = backend.AcquireReleaseToken(mem.base() + slot * kStride, kRegionBytes);
    if (ring[k] == nullptr) return false;
    if (++slot == 2 * kMissWindow) slot = 0;
    if (++k == kMissWindow) k = 0;
    return true;
  }
};

template <typename B>
void BM_MissChurn(benchmark::State& state) {
  ChurnRing<B> c;
  const uint64_t regs = c.backend.registrations();
  for (auto _ : state) {
    if (!c.Step()) {
      state.SkipWithError("acquire failed");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
  ReportRegs(state, c.backend, regs);
}

// One cached 1 MiB dma-buf mapping (a memfd standing for the buffer, told
// apart by one fstat per call as InspectDmaBuf does), acquired by fd and
// through an import.
struct DmaBufFixture {
  std::unique_ptr<dmareg::RegistrationCache> cache;
  int fd = -1;
  std::optional<dmareg::ImportedDmaBuf> imported;

  DmaBufFixture() {
    fd = memfd_create("cache-bench-dmabuf", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, kHotRegionBytes) != 0) Die("memfd for the dma-buf rows failed");
    dmareg::DmaBufInspector fstat_only = [](int f) -> absl::StatusOr<dmareg::DmaBufInfo> {
      struct stat st;
      if (fstat(f, &st) != 0) return absl::InvalidArgumentError("fstat");
      return dmareg::DmaBufInfo{
          .id = {.dev = static_cast<uint64_t>(st.st_dev), .ino = static_cast<uint64_t>(st.st_ino)},
          .size = static_cast<uint64_t>(st.st_size)};
    };
    auto domain = std::make_shared<dmareg::testing::NoopDomain>();
    auto c = dmareg::RegistrationCache::Create(
        domain, {.monitoring = dmareg::Monitoring::kExplicitOnly, .inspect_dmabuf = fstat_only});
    if (!c.ok()) Die("RegistrationCache::Create failed");
    cache = std::move(*c);
    auto imp = dmareg::ImportedDmaBuf::Import(fd, nullptr, fstat_only);
    if (!imp.ok()) Die("ImportedDmaBuf::Import failed");
    imported.emplace(std::move(*imp));
    if (auto first = cache->Acquire(*imported, 0, kHotRegionBytes, dmareg::Access::kLocalWrite);
        !first.ok()) {
      std::fprintf(stderr, "cache_bench: %s\n", first.status().ToString().c_str());
      Die("the dma-buf mapping failed");
    }
  }
  static DmaBufFixture& Get() {
    std::lock_guard<std::mutex> lock(fixtures_mu);
    static DmaBufFixture* f = new DmaBufFixture();  // never freed
    return *f;
  }
};

void BM_DmaBufHitImported(benchmark::State& state) {
  DmaBufFixture& f = DmaBufFixture::Get();
  for (auto _ : state) {
    auto r = f.cache->Acquire(*f.imported, kHotRegionBytes / 2, kRegionBytes,
                              dmareg::Access::kLocalWrite);
    if (!r.ok()) Die("imported dma-buf hit failed");
    benchmark::DoNotOptimize(r->lkey());
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_DmaBufHitByFd(benchmark::State& state) {
  DmaBufFixture& f = DmaBufFixture::Get();
  const dmareg::DmaBufMemory slice{
      .fd = f.fd, .offset = kHotRegionBytes / 2, .length = kRegionBytes};
  for (auto _ : state) {
    auto r = f.cache->Acquire(slice, dmareg::Access::kLocalWrite);
    if (!r.ok()) Die("dma-buf hit by fd failed");
    benchmark::DoNotOptimize(r->lkey());
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_DmaBufFstat(benchmark::State& state) {
  DmaBufFixture& f = DmaBufFixture::Get();
  struct stat st;
  for (auto _ : state) {
    if (fstat(f.fd, &st) != 0) Die("fstat failed");
    benchmark::DoNotOptimize(st.st_ino);
  }
  state.SetItemsProcessed(state.iterations());
}

// The by-fd row's bound, measured as one sequence rather than summed: the
// same fstat, then the HitHot row's host hit. A system call evicts part of
// what a hot loop keeps in the first-level caches, so a hit right after one
// costs more than HitHot's, by fd or not.
void BM_DmaBufFstatThenHostHit(benchmark::State& state) {
  DmaBufFixture& d = DmaBufFixture::Get();
  HotFixture<DmaregBackend>& h = HotFixture<DmaregBackend>::Get();
  struct stat st;
  for (auto _ : state) {
    if (fstat(d.fd, &st) != 0) Die("fstat failed");
    benchmark::DoNotOptimize(st.st_ino);
    if (!h.backend.AcquireRelease(h.target, kRegionBytes)) Die("host hit failed");
  }
  state.SetItemsProcessed(state.iterations());
}

#ifdef DMAREG_BENCH_HAVE_UCX
// Paired/Miss, Paired/MissChurn: the Miss and MissChurn workloads of both
// caches in one benchmark, in alternating blocks of kMissWindow operations
// (which cache goes first alternates too), each block timed on its own. On
// a shared machine whose speed drifts with other tenants' load (the rows
// above swing by a third between runs), two adjacent blocks see about the
// same machine, so the median of the per-pair ratios says more than a ratio
// of two medians taken at different times. Counters: dmareg_ns, ucx_ns (the
// medians of the blocks' ns per operation) and ratio (UCX / dmareg).
using Clock = std::chrono::steady_clock;

double NsPerOp(Clock::time_point t0, Clock::time_point t1) {
  return std::chrono::duration<double, std::nano>(t1 - t0).count() / kMissWindow;
}

// Miss: a block makes kMissWindow regions (timed), then retires them
// (untimed), as BM_Miss does.
template <typename B>
struct MissBlocks {
  MissWindow<B> w;

  double Block() {
    const Clock::time_point t0 = Clock::now();
    for (size_t i = 0; i < kMissWindow; ++i) {
      if (!w.Make(i)) Die("paired miss failed");
    }
    const Clock::time_point t1 = Clock::now();
    w.RetireAll();
    return NsPerOp(t0, t1);
  }
};

// MissChurn: kMissWindow steps of BM_MissChurn's loop, all timed.
template <typename B>
struct ChurnBlocks {
  ChurnRing<B> c;

  double Block() {
    const Clock::time_point t0 = Clock::now();
    for (size_t n = 0; n < kMissWindow; ++n) {
      if (!c.Step()) Die("paired churn failed");
    }
    return NsPerOp(t0, Clock::now());
  }
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

template <template <typename> class Blocks>
void BM_Paired(benchmark::State& state) {
  Blocks<DmaregBackend> dmareg;
  Blocks<UcxBackend> ucx;
  std::vector<double> d, u, ratios;
  bool dmareg_first = true;
  for (auto _ : state) {
    double a, b;
    if (dmareg_first) {
      a = dmareg.Block();
      b = ucx.Block();
    } else {
      b = ucx.Block();
      a = dmareg.Block();
    }
    dmareg_first = !dmareg_first;
    d.push_back(a);
    u.push_back(b);
    ratios.push_back(b / a);
  }
  state.SetItemsProcessed(state.iterations() * 2 * kMissWindow);
  state.counters["dmareg_ns"] = Median(d);
  state.counters["ucx_ns"] = Median(u);
  state.counters["ratio"] = Median(ratios);
}
#endif

// The machine's floor for the random rows: one dependent load per
// iteration over a random cyclic chain of 64-byte lines spanning N MiB
// (huge pages, like the caches' own large arrays). A hit over many regions
// needs at least one line the caches cannot hold, so at 1,000,000 regions
// no cache can get below this latency unless the CPU overlaps iterations.
void BM_DependentLoad(benchmark::State& state) {
  const size_t bytes = static_cast<size_t>(state.range(0)) << 20;
  const size_t lines = bytes / 64;
  Reservation mem(bytes);
  char* base = mem.base();
  if (mprotect(base, bytes, PROT_READ | PROT_WRITE) != 0) Die("mprotect of the chain failed");
  madvise(base, bytes, MADV_HUGEPAGE);
  std::vector<uint32_t> order(lines);
  for (size_t i = 0; i < lines; ++i) order[i] = static_cast<uint32_t>(i);
  Rng rng(7);
  for (size_t i = lines - 1; i > 0; --i) std::swap(order[i], order[rng.Below(i + 1)]);
  for (size_t i = 0; i < lines; ++i) {
    *reinterpret_cast<char**>(base + size_t{order[i]} * 64) =
        base + size_t{order[(i + 1) % lines]} * 64;
  }
  char* p = base + size_t{order[0]} * 64;
  for (auto _ : state) {
    p = *reinterpret_cast<char**>(p);
    benchmark::DoNotOptimize(p);
  }
  state.SetItemsProcessed(state.iterations());
}

// Each workload is registered for dmareg and then for UCX, so the two sit
// side by side in the output and run close together in time.
template <typename B>
void RegisterWorkload(const char* prefix, int workload) {
  auto name = [&](const char* w) { return std::string(prefix) + "/" + w; };
  switch (workload) {
    case 0:
      benchmark::RegisterBenchmark(name("HitHot").c_str(), BM_HitHot<B>);
      break;
    case 1:
      benchmark::RegisterBenchmark(name("HitRandom").c_str(), BM_HitRandom<B>)
          ->Arg(1000)
          ->Arg(100000)
          ->Arg(1000000);
      break;
    case 2:
      benchmark::RegisterBenchmark(name("Miss").c_str(), BM_Miss<B>);
      break;
    case 3:
      benchmark::RegisterBenchmark(name("MissChurn").c_str(), BM_MissChurn<B>);
      break;
    case 4:
      benchmark::RegisterBenchmark(name("HitRandomMT").c_str(), BM_HitRandom<B>)
          ->Arg(100000)
          ->Threads(1)
          ->Threads(2)
          ->UseRealTime();
      break;
    case 5:
      benchmark::RegisterBenchmark(name("HitHotMT").c_str(), BM_HitHot<B>)
          ->Threads(1)
          ->Threads(2)
          ->UseRealTime();
      break;
  }
}
constexpr int kWorkloads = 6;

}  // namespace

int main(int argc, char** argv) {
  for (int w = 0; w < kWorkloads; ++w) {
    RegisterWorkload<DmaregBackend>("Dmareg", w);
#ifdef DMAREG_BENCH_HAVE_UCX
    RegisterWorkload<UcxBackend>("Ucx", w);
#endif
  }
#ifdef DMAREG_BENCH_HAVE_UCX
  benchmark::AddCustomContext("ucx", "ucs_rcache (libucs), no-op mem_reg");
#else
  benchmark::AddCustomContext("ucx", "not built (UCX not found)");
#endif
  benchmark::RegisterBenchmark("Memory/DependentLoad", BM_DependentLoad)->Arg(8)->Arg(64);
  benchmark::RegisterBenchmark("DmaBuf/HitImported", BM_DmaBufHitImported);
  benchmark::RegisterBenchmark("DmaBuf/HitByFd", BM_DmaBufHitByFd);
  benchmark::RegisterBenchmark("DmaBuf/Fstat", BM_DmaBufFstat);
  benchmark::RegisterBenchmark("DmaBuf/FstatThenHostHit", BM_DmaBufFstatThenHostHit);
#ifdef DMAREG_BENCH_HAVE_UCX
  benchmark::RegisterBenchmark("Paired/Miss", BM_Paired<MissBlocks>);
  benchmark::RegisterBenchmark("Paired/MissChurn", BM_Paired<ChurnBlocks>);
#endif
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
