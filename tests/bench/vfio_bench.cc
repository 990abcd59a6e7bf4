// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// VFIO map+unmap through dmareg against the raw ioctls, in the same run, and
// cached Acquire hits over a VFIO domain against the same over verbs. Needs
// a device bound to vfio-pci (and an RDMA device for the verbs rows): run it
// in the VM, e.g.
//
//   scripts/vm/run --mem 3072 -- build-bench/tests/bench/vfio_bench
//
// Rows (each argument is the mapping's size in bytes):
//   BM_RawMapUnmap        VFIO_IOMMU_MAP_DMA + VFIO_IOMMU_UNMAP_DMA on the container
//   BM_DomainMapUnmap     VfioDomain::RegisterHost at that IOVA + Deregister
//   BM_DmaMapUnmap        ExternalMemoryRegistry::DmaMap + DmaUnmap (validation included)
//   BM_HitVfio / BM_HitVerbs   RegistrationCache::Acquire of a cached range
// Figures under the VM's TCG emulation are slow in absolute terms and noisy
// (the guest kernel allocates and zeroes IOMMU page-table pages on the
// emulated CPU); the ratios between rows of one run are what compare.
//
// dmareg's own cost, natively, needs no device (these rows run anywhere):
//   BM_FakeKernelMapUnmap     the fake kernel's MAP_DMA + UNMAP_DMA alone
//   BM_DomainOverFakeKernel   VfioDomain::RegisterHost + Deregister over it
//   BM_DmaMapOverFakeKernel   ExternalMemoryRegistry::DmaMap + DmaUnmap over it
// Their differences are what the domain, and the registry on top of it, add
// to each map+unmap.
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "benchmark/benchmark.h"
#include "dmareg/cache.h"
#include "dmareg/external_memory.h"
#include "dmareg/testing/fake_vfio_ops.h"
#include "dmareg/vfio/vfio_domain.h"
#ifdef DMAREG_BENCH_HAVE_VERBS
#include "dmareg/verbs/verbs_domain.h"
#endif

namespace {

constexpr uint64_t kIova = 1ull << 32;  // clear of everything else in the container

struct Env {
  std::shared_ptr<dmareg::VfioContainer> container;
  std::shared_ptr<dmareg::VfioDomain> domain;
  std::string error;
};

Env& TheEnv() {
  static Env* env = [] {
    auto* e = new Env;
    const char* dev = std::getenv("DMAREG_VFIO_DEVICE");
    if (dev == nullptr) {
      e->error = "no DMAREG_VFIO_DEVICE (run in the VM: scripts/vm/run)";
      return e;
    }
    auto c = dmareg::VfioContainer::Open();
    if (!c.ok()) {
      e->error = c.status().ToString();
      return e;
    }
    dmareg::VfioDomainOptions o;
    o.container = *c;
    auto d = dmareg::VfioDomain::Open(dev, o);
    if (!d.ok()) {
      e->error = d.status().ToString();
      return e;
    }
    e->container = *c;
    e->domain = *d;
    return e;
  }();
  return *env;
}

// Populated memory, so that pinning measures the IOMMU work and not faults.
struct Buffer {
  explicit Buffer(size_t n) : size(n) {
    p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) p = nullptr;
  }
  ~Buffer() {
    if (p != nullptr) munmap(p, size);
  }
  void* p;
  size_t size;
};

bool Ready(benchmark::State& state, Buffer& buf) {
  if (!TheEnv().error.empty()) {
    state.SkipWithError(TheEnv().error.c_str());
    return false;
  }
  if (buf.p == nullptr) {
    state.SkipWithError("mmap failed");
    return false;
  }
  return true;
}

// The raw type1 requests for [va, va + size) at kIova, read-write, built
// per iteration as a caller of the ioctls would.
struct RawRequests {
  RawRequests(uint64_t va, uint64_t size) {
    map.argsz = sizeof map;
    map.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
    map.vaddr = va;
    map.iova = kIova;
    map.size = size;
    unmap.argsz = sizeof unmap;
    unmap.iova = kIova;
    unmap.size = size;
  }
  vfio_iommu_type1_dma_map map = {};
  vfio_iommu_type1_dma_unmap unmap = {};
};

// map+unmap of `memory` through `domain`, once per iteration.
void DomainMapUnmap(benchmark::State& state, dmareg::Domain& domain,
                    const dmareg::HostMemory& memory) {
  const dmareg::AccessFlags access(dmareg::Access::kLocalWrite);
  for (auto _ : state) {
    auto m = domain.RegisterHost(memory, access);
    if (!m.ok() || !domain.Deregister(*m).ok()) {
      state.SkipWithError("VfioDomain map/unmap failed");
      return;
    }
  }
}

void BM_RawMapUnmap(benchmark::State& state) {
  Buffer buf(state.range(0));
  if (!Ready(state, buf)) return;
  const int fd = TheEnv().container->fd();
  for (auto _ : state) {
    RawRequests r(reinterpret_cast<uintptr_t>(buf.p), buf.size);
    if (ioctl(fd, VFIO_IOMMU_MAP_DMA, &r.map) != 0 ||
        ioctl(fd, VFIO_IOMMU_UNMAP_DMA, &r.unmap) != 0) {
      state.SkipWithError("raw VFIO map/unmap failed");
      return;
    }
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}

void BM_DomainMapUnmap(benchmark::State& state) {
  Buffer buf(state.range(0));
  if (!Ready(state, buf)) return;
  DomainMapUnmap(state, *TheEnv().domain, dmareg::HostMemory{buf.p, buf.size, kIova});
  state.SetBytesProcessed(state.iterations() * state.range(0));
}

void BM_DmaMapUnmap(benchmark::State& state) {
  Buffer buf(state.range(0));
  if (!Ready(state, buf)) return;
  dmareg::ExternalMemoryRegistry registry;
  if (!registry.Register(buf.p, buf.size, 4096).ok()) {
    state.SkipWithError("Register failed");
    return;
  }
  std::shared_ptr<dmareg::Domain> domain = TheEnv().domain;
  const dmareg::AccessFlags access(dmareg::Access::kLocalWrite);
  for (auto _ : state) {
    if (!registry.DmaMap(domain, buf.p, kIova, buf.size, access).ok() ||
        !registry.DmaUnmap(domain, buf.p, kIova, buf.size).ok()) {
      state.SkipWithError("DmaMap/DmaUnmap failed");
      return;
    }
  }
  (void)registry.Unregister(buf.p, buf.size);
  state.SetBytesProcessed(state.iterations() * state.range(0));
}

void Hits(benchmark::State& state, std::shared_ptr<dmareg::Domain> domain) {
  Buffer buf(1 << 20);
  auto cache = dmareg::RegistrationCache::Create(std::move(domain));
  if (!cache.ok()) {
    state.SkipWithError(cache.status().ToString().c_str());
    return;
  }
  const dmareg::AccessFlags access(dmareg::Access::kLocalWrite);
  { auto warm = (*cache)->Acquire(buf.p, buf.size, access); }
  for (auto _ : state) {
    auto r = (*cache)->Acquire(static_cast<char*>(buf.p) + 4096, 8192, access);
    benchmark::DoNotOptimize(r);
  }
}

void BM_HitVfio(benchmark::State& state) {
  Buffer probe(4096);
  if (!Ready(state, probe)) return;
  Hits(state, TheEnv().domain);
}

#ifdef DMAREG_BENCH_HAVE_VERBS
void BM_HitVerbs(benchmark::State& state) {
  const char* dev = std::getenv("DMAREG_RXE_DEV");
  auto d = dmareg::VerbsDomain::Open(dev == nullptr ? "" : dev);
  if (!d.ok()) {
    state.SkipWithError(d.status().ToString().c_str());
    return;
  }
  Hits(state, *d);
}
BENCHMARK(BM_HitVerbs);
#endif

// ---- dmareg's own cost, over the fake kernel (no device needed)

constexpr uint64_t kFakeVa = 0x7f0000000000;

// A domain over a fake kernel with one device; null (and the benchmark
// skipped) if it cannot be opened.
std::shared_ptr<dmareg::VfioDomain> OpenOverFake(
    benchmark::State& state, const std::shared_ptr<dmareg::testing::FakeVfioOps>& ops) {
  ops->AddDevice({.address = "0000:00:03.0", .group = 5});
  auto domain = dmareg::VfioDomain::Open("0000:00:03.0", {.ops = ops});
  if (!domain.ok()) {
    state.SkipWithError(domain.status().ToString().c_str());
    return nullptr;
  }
  return *domain;
}

void BM_FakeKernelMapUnmap(benchmark::State& state) {
  auto ops = std::make_shared<dmareg::testing::FakeVfioOps>();
  std::shared_ptr<dmareg::VfioDomain> domain = OpenOverFake(state, ops);
  if (domain == nullptr) return;
  const int fd = domain->container()->fd();
  for (auto _ : state) {
    RawRequests r(kFakeVa, 4096);
    if (ops->MapDma(fd, &r.map) != 0 || ops->UnmapDma(fd, &r.unmap) != 0) {
      state.SkipWithError("fake map/unmap failed");
      return;
    }
  }
}

void BM_DomainOverFakeKernel(benchmark::State& state) {
  auto ops = std::make_shared<dmareg::testing::FakeVfioOps>();
  std::shared_ptr<dmareg::VfioDomain> domain = OpenOverFake(state, ops);
  if (domain == nullptr) return;
  DomainMapUnmap(state, *domain, dmareg::HostMemory{reinterpret_cast<void*>(kFakeVa), 4096, kIova});
}

void BM_DmaMapOverFakeKernel(benchmark::State& state) {
  auto ops = std::make_shared<dmareg::testing::FakeVfioOps>();
  std::shared_ptr<dmareg::VfioDomain> domain = OpenOverFake(state, ops);
  if (domain == nullptr) return;
  // The fake kernel never touches the memory: the chunk is a plain number.
  const void* va = reinterpret_cast<const void*>(kFakeVa);
  dmareg::ExternalMemoryRegistry registry;
  if (!registry.Register(va, 4096, 4096).ok()) {
    state.SkipWithError("Register failed");
    return;
  }
  std::shared_ptr<dmareg::Domain> d = domain;
  const dmareg::AccessFlags access(dmareg::Access::kLocalWrite);
  for (auto _ : state) {
    if (!registry.DmaMap(d, va, kIova, 4096, access).ok() ||
        !registry.DmaUnmap(d, va, kIova, 4096).ok()) {
      state.SkipWithError("DmaMap/DmaUnmap failed");
      return;
    }
  }
  (void)registry.Unregister(va, 4096);
}

BENCHMARK(BM_FakeKernelMapUnmap);
BENCHMARK(BM_DomainOverFakeKernel);
BENCHMARK(BM_DmaMapOverFakeKernel);

// 4 KiB to 1 GiB.
void Sizes(benchmark::internal::Benchmark* b) {
  for (int64_t s = 4096; s <= (int64_t{1} << 30); s *= 16) b->Arg(s);
  b->Arg(int64_t{1} << 30);
  b->Unit(benchmark::kMicrosecond);
}

BENCHMARK(BM_RawMapUnmap)->Apply(Sizes);
BENCHMARK(BM_DomainMapUnmap)->Apply(Sizes);
BENCHMARK(BM_DmaMapUnmap)->Apply(Sizes);
BENCHMARK(BM_HitVfio);

}  // namespace

BENCHMARK_MAIN();
