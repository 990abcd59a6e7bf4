// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// What a miss pays to learn the page size of the memory it registers
// (monitor/mapping_pages.h): PROCMAP_QUERY where the kernel has it (6.11+),
// else /proc/self/maps up to the mapping, and for memory with a file behind
// it /proc/self/smaps; with 0 and 1,000 other mappings in the process. A
// kernel registration it precedes costs tens of microseconds (cache_bench's
// verbs figures); a hit pays nothing of it.
//
//   mapping_pages_bench --benchmark_min_time=0.2

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "benchmark/benchmark.h"
#include "monitor/mapping_pages.h"

namespace {

const size_t kPage = static_cast<size_t>(sysconf(_SC_PAGESIZE));

enum class Way { kQuery, kMaps };
enum class Memory { kAnonymous, kFile };

// `n` separate mappings (alternating protections keep them from merging),
// unmapped on destruction.
class OtherMappings {
 public:
  explicit OtherMappings(int n) {
    for (int i = 0; i < n; ++i) {
      void* p =
          mmap(nullptr, kPage, (i % 2) ? PROT_READ : PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p != MAP_FAILED) maps_.push_back(p);
    }
  }
  ~OtherMappings() {
    for (void* p : maps_) munmap(p, kPage);
  }

 private:
  std::vector<void*> maps_;
};

void BM_Lookup(benchmark::State& state, Way way, Memory memory) {
  int memfd = memory == Memory::kFile ? memfd_create("bench", MFD_CLOEXEC) : -1;
  if (memfd >= 0 && ftruncate(memfd, 16 * kPage) != 0) std::abort();
  void* p = mmap(nullptr, 16 * kPage, PROT_READ | PROT_WRITE,
                 memfd >= 0 ? MAP_SHARED : MAP_PRIVATE | MAP_ANONYMOUS, memfd, 0);
  if (p == MAP_FAILED) std::abort();
  // Mapped after it, top-down: below it, so /proc/self/maps lists them first.
  const OtherMappings others(static_cast<int>(state.range(0)));
  const uint64_t addr = reinterpret_cast<uint64_t>(p) + kPage;
  const int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  bool unsupported = false;
  if (way == Way::kQuery && !dmareg::internal::MappingPagesByQuery(fd, addr, &unsupported)) {
    state.SkipWithError(unsupported ? "no PROCMAP_QUERY on this kernel" : "query failed");
  }
  for (auto _ : state) {
    auto pages = way == Way::kQuery ? dmareg::internal::MappingPagesByQuery(fd, addr, &unsupported)
                                    : dmareg::internal::MappingPagesFromMaps(fd, addr);
    benchmark::DoNotOptimize(pages);
  }
  close(fd);
  munmap(p, 16 * kPage);
  if (memfd >= 0) close(memfd);
}

BENCHMARK_CAPTURE(BM_Lookup, Query_Anonymous, Way::kQuery, Memory::kAnonymous)->Arg(0)->Arg(1000);
BENCHMARK_CAPTURE(BM_Lookup, Maps_Anonymous, Way::kMaps, Memory::kAnonymous)->Arg(0)->Arg(1000);
BENCHMARK_CAPTURE(BM_Lookup, Maps_File, Way::kMaps, Memory::kFile)->Arg(0)->Arg(1000);

// What a miss pays in all: opening /proc/self/maps and one query (or read).
void BM_MappingPagesAt(benchmark::State& state) {
  std::vector<char> buf(16 * kPage);
  const uint64_t addr = reinterpret_cast<uint64_t>(buf.data());
  for (auto _ : state) benchmark::DoNotOptimize(dmareg::internal::MappingPagesAt(addr));
}
BENCHMARK(BM_MappingPagesAt);

}  // namespace

BENCHMARK_MAIN();
