// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// odp_verbs_bench: what on-demand paging costs and saves.
//
//   Hit/Pinned, Hit/OnDemand   acquire + release of 4 KiB inside one cached
//                              1 MiB region over the fake domain, in pinned
//                              and in on-demand mode: the hit path is the
//                              same code, so the rows should agree.
//   Relink/Pinned/bytes        on an RDMA device (rxe in the VM): invalidate
//                              an OdpRegion over the pinned backend and fault
//                              it again: deregister + register at the SAME IOVA.
//   RegisterAnew/bytes         RegisterHost + Deregister of the same span:
//                              what a cache without fixed IOVAs pays.
//   Relink/OnDemand/bytes      the same invalidate + fault over the on-demand
//                              backend: no registration, only the prefetch
//                              (skipped where the device has no ODP for RC).
//
//   odp_verbs_bench --benchmark_filter=Hit --benchmark_min_time=0.2   (this host)
//   scripts/vm/run --kernel 7.3.4+deb13-amd64 -- tests/bench/odp_verbs_bench
//       --benchmark_filter=-Hit                            (rxe; one command line)

#include <sys/mman.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "benchmark/benchmark.h"
#include "dmareg/cache.h"
#include "dmareg/odp/odp_region.h"
#include "dmareg/odp/verbs_backend.h"
#include "dmareg/testing/fake_domain.h"
#include "dmareg/verbs/verbs_domain.h"

namespace dmareg {
namespace {

constexpr size_t kRegion = size_t{1} << 20;

void Hit(benchmark::State& state, Paging paging) {
  auto fake = std::make_shared<testing::FakeDomain>();
  fake->mutable_capabilities().on_demand_paging = true;
  auto cache =
      RegistrationCache::Create(fake, {.monitoring = Monitoring::kExplicitOnly, .paging = paging});
  void* mem = mmap(nullptr, kRegion, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (!cache.ok() || mem == MAP_FAILED) {
    state.SkipWithError("setup failed");
    return;
  }
  char* const base = static_cast<char*>(mem);
  {
    auto whole = (*cache)->Acquire(base, kRegion, Access::kLocalWrite);
    if (!whole.ok()) {
      state.SkipWithError(whole.status().ToString().c_str());
      return;
    }
  }
  const int64_t regs = fake->total_registrations();
  size_t i = 0;
  for (auto _ : state) {
    auto r = (*cache)->Acquire(base + (i++ % 256) * 4096, 4096, Access::kLocalWrite);
    benchmark::DoNotOptimize(r);
  }
  state.counters["regs_per_op"] = benchmark::Counter(
      static_cast<double>(fake->total_registrations() - regs), benchmark::Counter::kAvgIterations);
  state.counters["on_demand"] = static_cast<double>((*cache)->stats().on_demand_registrations);
  cache->reset();
  munmap(mem, kRegion);
}
void BM_HitPinned(benchmark::State& state) { Hit(state, Paging::kPinned); }
void BM_HitOnDemand(benchmark::State& state) { Hit(state, Paging::kOnDemand); }
BENCHMARK(BM_HitPinned)->Name("Hit/Pinned");
BENCHMARK(BM_HitOnDemand)->Name("Hit/OnDemand");

// The first RDMA device, opened once.
std::shared_ptr<VerbsDomain> Device(std::string* error) {
  static absl::StatusOr<std::shared_ptr<VerbsDomain>> domain = VerbsDomain::Open();
  if (!domain.ok()) *error = domain.status().ToString();
  return domain.ok() ? *domain : nullptr;
}

struct Buffer {
  explicit Buffer(size_t n) : len(n) {
    void* p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    data = p == MAP_FAILED ? nullptr : static_cast<char*>(p);
    if (data != nullptr) std::fill(data, data + n, 1);
  }
  ~Buffer() {
    if (data != nullptr) munmap(data, len);
  }
  char* data;
  size_t len;
};

void Relink(benchmark::State& state, bool on_demand) {
  std::string error;
  std::shared_ptr<VerbsDomain> domain = Device(&error);
  if (domain == nullptr) {
    state.SkipWithError(error.c_str());
    return;
  }
  absl::StatusOr<std::shared_ptr<OdpBackend>> backend;
  if (on_demand) {
    auto b = OdpVerbsBackend::Create(domain);
    if (b.ok()) backend = std::shared_ptr<OdpBackend>(*b);
    if (!b.ok()) backend = b.status();
  } else {
    backend = std::shared_ptr<OdpBackend>(*OdpVerbsPinnedBackend::Create(domain));
  }
  if (!backend.ok()) {
    state.SkipWithError(backend.status().ToString().c_str());
    return;
  }
  const size_t n = static_cast<size_t>(state.range(0));
  Buffer buf(n);
  auto region =
      OdpRegion::Create(*backend, buf.data, n, Access::kRemoteWrite, {.read_pfns = false});
  if (buf.data == nullptr || !region.ok()) {
    state.SkipWithError(region.ok() ? "mmap failed" : region.status().ToString().c_str());
    return;
  }
  const uint64_t iova = (*region)->iova();
  for (auto _ : state) {
    if (!(*region)->Invalidate(buf.data, n).ok() || !(*region)->Fault(buf.data, n, true).ok()) {
      state.SkipWithError("relink failed");
      return;
    }
  }
  if ((*region)->iova() != iova) state.SkipWithError("the IOVA moved");
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(n));
}
void BM_RelinkPinned(benchmark::State& state) { Relink(state, false); }
void BM_RelinkOnDemand(benchmark::State& state) { Relink(state, true); }

void BM_RegisterAnew(benchmark::State& state) {
  std::string error;
  std::shared_ptr<VerbsDomain> domain = Device(&error);
  if (domain == nullptr) {
    state.SkipWithError(error.c_str());
    return;
  }
  const size_t n = static_cast<size_t>(state.range(0));
  Buffer buf(n);
  for (auto _ : state) {
    auto m = domain->RegisterHost(HostMemory{buf.data, n}, Access::kRemoteWrite);
    if (!m.ok() || !domain->Deregister(*m).ok()) {
      state.SkipWithError("register failed");
      return;
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(n));
}
BENCHMARK(BM_RelinkPinned)->Name("Relink/Pinned")->Arg(64 << 10)->Arg(1 << 20);
BENCHMARK(BM_RegisterAnew)->Name("RegisterAnew")->Arg(64 << 10)->Arg(1 << 20);
BENCHMARK(BM_RelinkOnDemand)->Name("Relink/OnDemand")->Arg(64 << 10)->Arg(1 << 20);

}  // namespace
}  // namespace dmareg

BENCHMARK_MAIN();
