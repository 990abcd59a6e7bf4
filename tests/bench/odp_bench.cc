// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The on-demand IOVA cache over VFIO: relinking one page after an
// invalidation against registering the whole region again, on a 1 GiB
// window, and the cost of a link per page and per chunk. Rows named Fake
// run over FakeVfioOps anywhere (dmareg's own cost); the others need a
// device bound to vfio-pci (scripts/bench --odp runs them in the VM):
//
//   scripts/vm/run --mem 3072 -- build-bench/tests/bench/odp_bench
//
// Rows (the argument is the window's size in bytes):
//   BM_<env>OdpRelinkOnePage     Invalidate one page + Fault it: one chunk
//                                unmapped and mapped again at its IOVA
//   BM_<env>ReregisterWhole      VfioDomain::RegisterHost + Deregister of
//                                the whole region (what a pinned cache does)
//   BM_<env>OdpLinkPerPage       64-page window, one chunk per page:
//                                Invalidate all + Fault all; per page
//   BM_<env>OdpLinkPerChunk      1 GiB window (chunks sized by dma_avail):
//                                Invalidate + Fault 64 chunks; per chunk
// Counters: chunk_bytes, table_bytes_per_page.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "benchmark/benchmark.h"
#include "dmareg/odp/odp_region.h"
#include "dmareg/odp/vfio_backend.h"
#include "dmareg/testing/fake_vfio_ops.h"
#include "dmareg/vfio/vfio_domain.h"

namespace {

constexpr uint64_t kPage = 4096;

struct Env {
  std::shared_ptr<dmareg::VfioContainer> container;
  std::shared_ptr<dmareg::VfioDomain> domain;
  std::shared_ptr<dmareg::OdpVfioBackend> backend;
  std::string error;
};

// The domain joins the container over the container's own VfioOps.
Env Make(absl::StatusOr<std::shared_ptr<dmareg::VfioContainer>> c, const char* dev) {
  Env e;
  if (!c.ok()) {
    e.error = c.status().ToString();
    return e;
  }
  dmareg::VfioDomainOptions o;
  o.container = *c;
  o.dma_address_bits = 39;  // no DMA here: only the IOMMU's work is measured
  auto d = dmareg::VfioDomain::Open(dev, o);
  if (!d.ok()) {
    e.error = d.status().ToString();
    return e;
  }
  e.container = *c;
  e.domain = *d;
  e.backend = *dmareg::OdpVfioBackend::Create(e.container);
  return e;
}

Env& DeviceEnv() {
  static Env* env = [] {
    const char* dev = std::getenv("DMAREG_VFIO_DEVICE");
    if (dev == nullptr) {
      auto* e = new Env;
      e->error = "no DMAREG_VFIO_DEVICE (run in the VM: scripts/bench --odp)";
      return e;
    }
    return new Env(Make(dmareg::VfioContainer::Open(), dev));
  }();
  return *env;
}

Env& FakeEnv() {
  static Env* env = [] {
    auto ops = std::make_shared<dmareg::testing::FakeVfioOps>();
    ops->AddDevice({.address = "0000:00:03.0", .group = 5});
    return new Env(Make(dmareg::VfioContainer::Open({.ops = ops}), "0000:00:03.0"));
  }();
  return *env;
}

// Populated memory where a kernel pins it; the fake touches none.
struct Buffer {
  Buffer(size_t n, bool populate) : size(n) {
    p = mmap(nullptr, n, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | (populate ? MAP_POPULATE : MAP_NORESERVE), -1, 0);
    if (p == MAP_FAILED) p = nullptr;
  }
  ~Buffer() {
    if (p != nullptr) munmap(p, size);
  }
  char* data() const { return static_cast<char*>(p); }
  void* p;
  size_t size;
};

bool Ready(benchmark::State& state, Env& env, const Buffer& buf) {
  if (!env.error.empty()) {
    state.SkipWithError(env.error.c_str());
    return false;
  }
  if (buf.p == nullptr) {
    state.SkipWithError("mmap failed");
    return false;
  }
  return true;
}

std::unique_ptr<dmareg::OdpRegion> Region(benchmark::State& state, Env& env, const Buffer& buf) {
  auto r = dmareg::OdpRegion::Create(env.backend, buf.p, buf.size, dmareg::Access::kLocalWrite,
                                     {.read_pfns = false});
  if (!r.ok()) {
    state.SkipWithError(r.status().ToString().c_str());
    return nullptr;
  }
  state.counters["table_bytes_per_page"] =
      static_cast<double>((*r)->table_bytes()) / static_cast<double>((*r)->pages());
  return *std::move(r);
}

void RelinkOnePage(benchmark::State& state, Env& env, bool populate) {
  Buffer buf(static_cast<size_t>(state.range(0)), populate);
  if (!Ready(state, env, buf)) return;
  auto region = Region(state, env, buf);
  if (!region || !region->Fault(buf.p, buf.size, true).ok()) {
    state.SkipWithError("linking the window failed");
    return;
  }
  const dmareg::OdpStats st = region->stats();  // the whole window: chunks of equal size
  state.counters["chunk_bytes"] = static_cast<double>(st.linked_pages / st.link_calls * kPage);
  char* page = buf.data() + buf.size / 2;
  for (auto _ : state) {
    if (!region->Invalidate(page, kPage).ok() || !region->Fault(page, kPage, true).ok()) {
      state.SkipWithError("relink failed");
      return;
    }
  }
}

void ReregisterWhole(benchmark::State& state, Env& env, bool populate) {
  Buffer buf(static_cast<size_t>(state.range(0)), populate);
  if (!Ready(state, env, buf)) return;
  const dmareg::AccessFlags access(dmareg::Access::kLocalWrite);
  for (auto _ : state) {
    auto m = env.domain->RegisterHost(dmareg::HostMemory{buf.p, buf.size}, access);
    if (!m.ok() || !env.domain->Deregister(*m).ok()) {
      state.SkipWithError(m.ok() ? "deregister failed" : m.status().ToString().c_str());
      return;
    }
  }
}

// Invalidate + Fault `chunks` chunks (or pages) per iteration.
void LinkCost(benchmark::State& state, Env& env, bool populate, size_t window, size_t chunks) {
  Buffer buf(window, populate);
  if (!Ready(state, env, buf)) return;
  auto region = Region(state, env, buf);
  if (!region) return;
  uint64_t chunk = 0;
  if (region->Fault(buf.p, kPage, true).ok()) {
    // The first chunk's pages are all linked together.
    while (chunk < buf.size && (region->page_entry(chunk / kPage) & dmareg::kOdpDmaMapped) != 0) {
      chunk += kPage;
    }
  }
  if (chunk == 0 || chunk * chunks > buf.size) {
    state.SkipWithError("chunk size unknown or window too small");
    return;
  }
  const size_t span = chunk * chunks;
  for (auto _ : state) {
    if (!region->Invalidate(buf.p, span).ok() || !region->Fault(buf.p, span, true).ok()) {
      state.SkipWithError("link failed");
      return;
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * chunks));
  state.counters["chunk_bytes"] = static_cast<double>(chunk);
}

constexpr int64_t kGiB = int64_t{1} << 30;

void BM_FakeOdpRelinkOnePage(benchmark::State& s) { RelinkOnePage(s, FakeEnv(), false); }
void BM_FakeReregisterWhole(benchmark::State& s) { ReregisterWhole(s, FakeEnv(), false); }
void BM_FakeOdpLinkPerPage(benchmark::State& s) { LinkCost(s, FakeEnv(), false, 64 * kPage, 64); }
void BM_FakeOdpLinkPerChunk(benchmark::State& s) { LinkCost(s, FakeEnv(), false, kGiB, 64); }
void BM_OdpRelinkOnePage(benchmark::State& s) { RelinkOnePage(s, DeviceEnv(), true); }
void BM_ReregisterWhole(benchmark::State& s) { ReregisterWhole(s, DeviceEnv(), true); }
void BM_OdpLinkPerPage(benchmark::State& s) { LinkCost(s, DeviceEnv(), true, 64 * kPage, 64); }
void BM_OdpLinkPerChunk(benchmark::State& s) { LinkCost(s, DeviceEnv(), true, kGiB, 64); }

BENCHMARK(BM_FakeOdpRelinkOnePage)->Arg(kGiB);
BENCHMARK(BM_FakeReregisterWhole)->Arg(kGiB);
BENCHMARK(BM_FakeOdpLinkPerPage);
BENCHMARK(BM_FakeOdpLinkPerChunk);
BENCHMARK(BM_OdpRelinkOnePage)->Arg(kGiB);
BENCHMARK(BM_ReregisterWhole)->Arg(kGiB);
BENCHMARK(BM_OdpLinkPerPage);
BENCHMARK(BM_OdpLinkPerChunk);

}  // namespace

BENCHMARK_MAIN();
