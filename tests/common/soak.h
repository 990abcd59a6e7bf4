// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// A randomized soak of a registration cache against everything an
// application does to its memory: malloc/free/realloc of small blocks (heap)
// and large ones (glibc's own mmap/munmap/mremap), mmap/munmap/mremap/madvise
// of private and shared anonymous memory, interleaved with Acquire and a
// device access through the returned registration, from several threads.
//
// The device access is a `Checker`: on rxe it is an RDMA WRITE and READ
// with every byte checked (tests/device); against the fake domain it is a
// model of page generations (tests/unit). Both must report zero stale
// translations.
//
//   soak::Options opt{.threads = 4, .ops = 100000, .seed = 7};
//   soak::Result r = soak::Run(*cache, checker, opt);
//   EXPECT_EQ(r.failures, 0u) << r.first_failure;
//
// With `unordered_malloc_ops`, a second phase follows with NO ordering
// between the threads: large blocks malloc'd, realloc'd and freed by glibc
// (which munmaps with no lock held, telling nobody), each acquired right
// after malloc or realloc. Only a monitor that hears of the unmap before it
// happens (the hooks monitor) serves no stale translation there.

#ifndef DMAREG_TESTS_COMMON_SOAK_H_
#define DMAREG_TESTS_COMMON_SOAK_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "dmareg/cache.h"

namespace dmareg::soak {

class Checker {
 public:
  virtual ~Checker() = default;
  // `reg` was just acquired for [p, p + len) (inside one live block of
  // thread `thread`). Access the memory through it and say whether the
  // device sees the program's memory. `seed` varies per call.
  virtual absl::Status Check(int thread, const Registration& reg, char* p, size_t len,
                             uint32_t seed) = 0;
  // The soak replaces the pages of [a, b) (page-aligned): munmap, a moving
  // mremap, madvise(DONTNEED) of private memory, free() or realloc() of a
  // block glibc mapped. BeginReplace is called before the change (what
  // glibc does inside realloc is known only after it) and EndReplace after,
  // with BeginReplace's ticket; an explicit-notification soak calls Notify
  // in EndReplace.
  virtual uint64_t BeginReplace() { return 0; }
  virtual void EndReplace(uint64_t /*ticket*/, uintptr_t /*a*/, uintptr_t /*b*/) {}
  // Unordered phase: malloc or realloc just returned the pages of [a, b)
  // (page-aligned) anew; a registration over them that began before now is
  // stale.
  virtual void Obtained(uintptr_t /*a*/, uintptr_t /*b*/) {}
};

struct Options {
  int threads = 4;
  uint64_t ops = 100000;  // in total, split between the threads
  uint64_t seed = 1;
  size_t max_check_bytes = 32 * 1024;  // one device access at most this long
  // Operations (in total) of the unordered malloc phase, run after the
  // first; glibc's malloc only (none under a sanitizer's).
  uint64_t unordered_malloc_ops = 0;
  size_t max_unordered_block = 1024 * 1024;  // its blocks: 256 KiB up to this
};

struct Result {
  uint64_t ops = 0;
  uint64_t unordered_ops = 0;        // of the unordered malloc phase
  uint64_t heap_blocks_dropped = 0;  // large blocks glibc served from a heap: freed unchecked
  uint64_t checks = 0;
  uint64_t failures = 0;  // stale translations, wrong coverage, errors
  uint64_t mallocs = 0, frees = 0, reallocs = 0;
  uint64_t mmaps = 0, munmaps = 0, mremaps = 0, madvises = 0;
  std::string first_failure;
  std::string Summary() const;
};

// Runs the soak; every block is freed and every handle dropped on return.
// Sets glibc's mmap threshold to 128 KiB (fixed), so large blocks always go
// through mmap/munmap/mremap.
Result Run(RegistrationCache& cache, Checker& checker, const Options& options);

}  // namespace dmareg::soak

#endif  // DMAREG_TESTS_COMMON_SOAK_H_
