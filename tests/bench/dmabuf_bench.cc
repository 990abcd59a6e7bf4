// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// dmabuf_bench: what a dma-buf costs in the cache, and one buffer on
// several NICs, in the VM harness (real dma-bufs, rxe0 and rxe1):
//
//   Hit/Host          acquire + release of 4 KiB inside a cached host region
//   Hit/DmaBuf        the same for a slice of a real dma-buf (vgem, or a
//                     udmabuf where the kernel has one): the fd is fstat'ed
//                     per request, so this is Hit/Host plus one system call
//   Fstat             one fstat of that dma-buf fd: the floor under Hit/DmaBuf
//   Register/Sequential/MiB, Register/Parallel/MiB
//                     AcquireOnAll of one buffer (a udmabuf through its
//                     alias, else host memory) on rxe0 and rxe1, one NIC
//                     after the other against both at once; the caches are
//                     flushed (deregistered) outside the timing.
//
// The hit rows run over a domain that registers nothing (the cache alone);
// the Register rows over the real NICs. Under the VM's emulated CPUs the
// absolute figures are slow; read the ratios between rows of one run.
//
//   scripts/bench --dmabuf

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "dmareg/cache.h"
#include "dmareg/dmabuf/dmabuf.h"
#include "dmareg/dmabuf/drm_device.h"
#include "dmareg/dmabuf/udmabuf.h"
#include "dmareg/registration_set.h"
#include "dmareg/testing/fake_domain.h"
#include "dmareg/verbs/verbs_domain.h"

namespace {

using dmareg::Access;
using dmareg::AccessFlags;

std::string EnvOr(const char* name, const char* fallback = "") {
  const char* v = std::getenv(name);
  return v != nullptr ? v : fallback;
}

// A real dma-buf: a udmabuf where there is one, else a vgem dumb buffer.
struct RealDmaBuf {
  RealDmaBuf() {
    const uint64_t size = 1 << 20;
    if (const std::string udmabuf = EnvOr("DMAREG_UDMABUF"); !udmabuf.empty()) {
      auto dev = dmareg::UdmabufDevice::Open(udmabuf);
      if (dev.ok()) {
        auto b = dev->Allocate(size);
        if (b.ok()) buf = std::move(*b);
      }
    }
    if (!buf.valid()) {
      const std::string card = EnvOr("DMAREG_DRM_CARD");
      if (card.empty()) {
        error = "no dma-buf source (run in the VM: scripts/bench --dmabuf)";
        return;
      }
      auto dev = dmareg::DrmDevice::Open(card);
      auto b = dev.ok() ? dev->Allocate(size) : absl::StatusOr<dmareg::DmaBuf>(dev.status());
      if (!b.ok()) {
        error = b.status().ToString();
        return;
      }
      buf = std::move(*b);
    }
  }
  dmareg::DmaBuf buf;
  std::string error;
};

RealDmaBuf& TheDmaBuf() {
  static RealDmaBuf* b = new RealDmaBuf;
  return *b;
}

std::unique_ptr<dmareg::RegistrationCache> NoopCache() {
  return dmareg::RegistrationCache::Create(std::make_shared<dmareg::testing::NoopDomain>(),
                                           {.monitoring = dmareg::Monitoring::kExplicitOnly})
      .value();
}

void BM_HitHost(benchmark::State& state) {
  const size_t len = 1 << 20;
  void* p = mmap(nullptr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  auto cache = NoopCache();
  const char* base = static_cast<const char*>(p);
  { (void)cache->Acquire(base, len, Access::kLocalWrite); }
  for (auto _ : state) {
    auto r = cache->Acquire(base + 8192, 4096, Access::kLocalWrite);
    benchmark::DoNotOptimize(r);
  }
  cache.reset();
  munmap(p, len);
}
BENCHMARK(BM_HitHost)->Name("Hit/Host");

void BM_HitDmaBuf(benchmark::State& state) {
  RealDmaBuf& d = TheDmaBuf();
  if (!d.error.empty()) {
    state.SkipWithError(d.error.c_str());
    return;
  }
  auto cache = NoopCache();
  { (void)cache->Acquire(d.buf.All(), Access::kLocalWrite); }
  for (auto _ : state) {
    auto r = cache->Acquire(d.buf.Slice(8192, 4096), Access::kLocalWrite);
    benchmark::DoNotOptimize(r);
  }
  state.counters["regs_per_op"] = benchmark::Counter(
      static_cast<double>(cache->stats().dmabuf_misses - 1), benchmark::Counter::kAvgIterations);
}
BENCHMARK(BM_HitDmaBuf)->Name("Hit/DmaBuf");

void BM_Fstat(benchmark::State& state) {
  RealDmaBuf& d = TheDmaBuf();
  if (!d.error.empty()) {
    state.SkipWithError(d.error.c_str());
    return;
  }
  struct stat st;
  for (auto _ : state) {
    benchmark::DoNotOptimize(fstat(d.buf.fd(), &st));
  }
}
BENCHMARK(BM_Fstat)->Name("Fstat");

// rxe0 and rxe1, each with a cache in front.
struct Nics {
  Nics() {
    for (const char* var : {"DMAREG_RXE_DEV", "DMAREG_RXE_DEV2"}) {
      const std::string name = EnvOr(var);
      if (name.empty()) {
        error = std::string("no ") + var + " (run in the VM: scripts/bench --dmabuf)";
        return;
      }
      auto d = dmareg::VerbsDomain::Open(name);
      if (!d.ok()) {
        error = d.status().ToString();
        return;
      }
      caches.push_back(
          dmareg::RegistrationCache::Create(*d, {.monitoring = dmareg::Monitoring::kExplicitOnly})
              .value());
      ptrs.push_back(caches.back().get());
    }
  }
  std::vector<std::unique_ptr<dmareg::RegistrationCache>> caches;
  std::vector<dmareg::RegistrationCache*> ptrs;
  std::string error;
};

Nics& TheNics() {
  static Nics* n = new Nics;
  return *n;
}

void Register(benchmark::State& state, bool parallel) {
  Nics& nics = TheNics();
  if (!nics.error.empty()) {
    state.SkipWithError(nics.error.c_str());
    return;
  }
  const uint64_t len = static_cast<uint64_t>(state.range(0)) << 20;
  // A udmabuf (registered through its alias on rxe) where the kernel has
  // one; host memory otherwise. Populated: pinning, not faults, is timed.
  std::optional<dmareg::DmaBuf> udmabuf;
  if (const std::string path = EnvOr("DMAREG_UDMABUF"); !path.empty()) {
    auto dev = dmareg::UdmabufDevice::Open(path);
    if (dev.ok()) {
      auto b = dev->Allocate(len);
      if (b.ok()) udmabuf = std::move(*b);
    }
  }
  void* host = nullptr;
  if (!udmabuf) {
    host = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
                -1, 0);
    if (host == MAP_FAILED) {
      state.SkipWithError("mmap failed");
      return;
    }
  } else {
    // Touch the alias's pages once, as MAP_POPULATE does for host memory.
    for (uint64_t off = 0; off < len; off += 4096) {
      static_cast<volatile char*>(udmabuf->alias())[off] = 0;
    }
  }
  const AccessFlags access = Access::kLocalWrite | Access::kRemoteWrite | Access::kRemoteRead;
  for (auto _ : state) {
    auto set = udmabuf ? dmareg::AcquireOnAll(nics.ptrs, udmabuf->All(), access, {parallel})
                       : dmareg::AcquireOnAll(nics.ptrs, dmareg::HostMemory{host, len}, access,
                                              {parallel});
    if (!set.ok()) {
      state.SkipWithError(set.status().ToString().c_str());
      break;
    }
    state.PauseTiming();
    *set = dmareg::RegistrationSet();
    for (auto* c : nics.ptrs) c->Flush();
    state.ResumeTiming();
  }
  state.SetLabel(udmabuf ? "udmabuf via alias" : "host memory");
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * len * nics.ptrs.size()));
  if (host != nullptr) munmap(host, len);
}
void BM_RegisterSequential(benchmark::State& state) { Register(state, false); }
void BM_RegisterParallel(benchmark::State& state) { Register(state, true); }
BENCHMARK(BM_RegisterSequential)
    ->Name("Register/Sequential")
    ->Arg(16)
    ->Arg(128)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_RegisterParallel)
    ->Name("Register/Parallel")
    ->Arg(16)
    ->Arg(128)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
