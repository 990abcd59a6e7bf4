// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "common/soak.h"

#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <functional>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/sanitizers.h"

namespace dmareg::soak {
namespace {

const size_t kPage = static_cast<size_t>(sysconf(_SC_PAGESIZE));
constexpr size_t kMmapThreshold = 128 * 1024;
constexpr int kSlots = 24;
constexpr int kHeld = 4;
// Few live blocks per thread in the unordered phase: freed addresses are
// soon malloc'd again, by this thread or another.
constexpr int kUnorderedSlots = 4;

// Under a sanitizer malloc is the sanitizer's, so what free() and realloc()
// do to pages is unknown to us.
using ::dmareg::testing::kGlibcMalloc;

// An address as a number the compiler cannot trace back to an allocation
// (it would warn about reading a chunk header or comparing freed pointers,
// both of which the soak does on purpose).
uintptr_t Opaque(const void* p) {
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  asm volatile("" : "+r"(a));
  return a;
}

// glibc's chunk header: the size word just before the block, with flag
// bit 2 for a chunk it got from mmap; the chunk starts two words before the
// block and spans `size` bytes (whole pages for an mmapped chunk).
size_t SizeWord(const void* p) {
  size_t size_word;
  memcpy(&size_word, reinterpret_cast<const void*>(Opaque(p) - sizeof(size_t)), sizeof size_word);
  return size_word;
}
bool IsMmappedChunk(const void* p) { return kGlibcMalloc && (SizeWord(p) & 2) != 0; }
uintptr_t MmappedChunkEnd(const void* p) {
  return Opaque(p) - 2 * sizeof(size_t) + (SizeWord(p) & ~size_t{7});
}

enum class Kind { kSmall, kLarge, kPrivate, kShared };

struct Block {
  Kind kind = Kind::kSmall;
  char* p = nullptr;
  size_t len = 0;
  const char* last_op = "allocated";  // for failure reports
  bool live() const { return p != nullptr; }
  bool mapped() const { return kind == Kind::kPrivate || kind == Kind::kShared; }
};

uintptr_t PageDown(uintptr_t x) { return x & ~(kPage - 1); }

class Worker {
 public:
  // `unordered`: the unordered malloc phase (see soak.h).
  Worker(int index, RegistrationCache& cache, Checker& checker, const Options& options,
         uint64_t ops, std::mutex& memory_ops, bool unordered)
      : memory_ops_(memory_ops),
        unordered_(unordered),
        index_(index),
        cache_(cache),
        checker_(checker),
        options_(options),
        ops_(ops),
        rng_(options.seed * 1000003 + static_cast<uint64_t>(index)) {}

  Result Run() {
    for (uint64_t i = 0; i < ops_; ++i) {
      if (unordered_) {
        UnorderedStep();
        ++result_.unordered_ops;
      } else {
        Step();
        ++result_.ops;
      }
    }
    for (Block& b : blocks_) {
      if (unordered_) {
        UnorderedFree(b);
        continue;
      }
      std::lock_guard<std::mutex> lock(memory_ops_);
      Free(b);
    }
    for (auto& h : held_) h.Reset();
    return result_;
  }

 private:
  size_t Uniform(size_t lo, size_t hi) {  // [lo, hi]
    return std::uniform_int_distribution<size_t>(lo, hi)(rng_);
  }
  bool Chance(int percent) { return Uniform(0, 99) < static_cast<size_t>(percent); }

  void Fail(const std::string& what) {
    ++result_.failures;
    if (result_.first_failure.empty()) {
      result_.first_failure =
          absl::StrFormat("thread %d, %s op %u: %s", index_, unordered_ ? "unordered" : "ordered",
                          result_.ops + result_.unordered_ops, what);
    }
  }

  void Replace(uintptr_t a, uintptr_t b, const std::function<void()>& change) {
    const uint64_t ticket = checker_.BeginReplace();
    change();
    checker_.EndReplace(ticket, a, b);
  }

  void Step() {
    Block& b = blocks_[Uniform(0, kSlots - 1)];
    const size_t op = Uniform(0, 99);
    if (b.live() && (op < 40 || (!b.mapped() && op >= 80))) return Check(b);
    // Address space changes are ordered between threads (the guarantee is
    // ordered by munmap's return; see monitor.h): a thread's new mapping
    // never lands on addresses another thread is still unmapping. Acquires
    // and device accesses run concurrently with all of it.
    std::lock_guard<std::mutex> lock(memory_ops_);
    if (!b.live()) return Allocate(b);
    if (op < 55) return Free(b);
    if (b.mapped()) {
      if (op < 68) return Mremap(b);
      if (op < 80) return UnmapPart(b);
      return Madvise(b);
    }
    return Realloc(b);
  }

  // No lock and no BeginReplace/EndReplace: threads race glibc's malloc,
  // realloc and free of large blocks as an application does.
  void UnorderedStep() {
    Block& b = blocks_[Uniform(0, kUnorderedSlots - 1)];
    const size_t op = Uniform(0, 99);
    if (!b.live()) return UnorderedMalloc(b);
    if (op < 40) return Check(b);
    if (op < 75) return UnorderedFree(b);
    return UnorderedRealloc(b);
  }

  size_t UnorderedLength() { return Uniform(2 * kMmapThreshold, options_.max_unordered_block); }

  void UnorderedMalloc(Block& b) {
    b.kind = Kind::kLarge;
    b.len = UnorderedLength();
    b.p = static_cast<char*>(malloc(b.len));
    ++result_.mallocs;
    if (b.p == nullptr) return Fail("malloc failed");
    if (!IsMmappedChunk(b.p)) return DropHeapBlock(b);
    checker_.Obtained(PageDown(Opaque(b.p)), MmappedChunkEnd(b.p));
    b.last_op = "malloc (unordered)";
    CheckStart(b);  // right after malloc: the window
  }

  // An arena's free space can serve a large block too (after the first
  // phase's small frees coalesce): its pages may hold other blocks, so it
  // is not this phase's subject.
  void DropHeapBlock(Block& b) {
    ++result_.heap_blocks_dropped;
    UnorderedFree(b);
  }

  void UnorderedFree(Block& b) {
    if (!b.live()) return;
    free(b.p);
    ++result_.frees;
    b.p = nullptr;
    b.len = 0;
  }

  void UnorderedRealloc(Block& b) {
    const size_t len = UnorderedLength();
    const uintptr_t old = Opaque(b.p);
    const uintptr_t old_end = MmappedChunkEnd(b.p);
    char* p = static_cast<char*>(realloc(b.p, len));
    ++result_.reallocs;
    if (p == nullptr) return Fail("realloc failed");
    b.p = p;
    b.len = len;
    if (!IsMmappedChunk(p)) return DropHeapBlock(b);
    // Moved: every page is new here; grown in place: the pages past the
    // old end; shrunk in place: none.
    if (Opaque(p) != old) {
      checker_.Obtained(PageDown(Opaque(p)), MmappedChunkEnd(p));
      b.last_op = "realloc moved (unordered)";
    } else {
      if (MmappedChunkEnd(p) > old_end) checker_.Obtained(old_end, MmappedChunkEnd(p));
      b.last_op = "realloc in place (unordered)";
    }
    CheckStart(b);
  }

  void CheckStart(Block& b) { Check(b, 0, std::min(b.len, options_.max_check_bytes)); }

  void Allocate(Block& b) {
    b.kind = static_cast<Kind>(Uniform(0, 3));
    switch (b.kind) {
      case Kind::kSmall:
        b.len = Uniform(16, 48 * 1024);
        b.p = static_cast<char*>(malloc(b.len));
        ++result_.mallocs;
        break;
      case Kind::kLarge:
        b.len = Uniform(2 * kMmapThreshold, 1024 * 1024);
        b.p = static_cast<char*>(malloc(b.len));
        ++result_.mallocs;
        if (b.p != nullptr && !IsMmappedChunk(b.p)) b.kind = Kind::kSmall;
        break;
      case Kind::kPrivate:
      case Kind::kShared: {
        b.len = Uniform(1, 32) * kPage;
        const int flags = MAP_ANONYMOUS | (b.kind == Kind::kShared ? MAP_SHARED : MAP_PRIVATE);
        void* p = mmap(nullptr, b.len, PROT_READ | PROT_WRITE, flags, -1, 0);
        b.p = p == MAP_FAILED ? nullptr : static_cast<char*>(p);
        ++result_.mmaps;
        break;
      }
    }
    if (b.p == nullptr) {
      Fail("allocation failed");
      return;
    }
    memset(b.p, static_cast<int>(Uniform(0, 255)), b.len);
    b.last_op = "allocated";
  }

  void Free(Block& b) {
    if (!b.live()) return;
    const uintptr_t a = reinterpret_cast<uintptr_t>(b.p);
    if (b.mapped()) {
      Replace(a, a + b.len, [&] { munmap(b.p, b.len); });
      ++result_.munmaps;
    } else if (IsMmappedChunk(b.p)) {
      // glibc unmaps the whole chunk, header page included.
      Replace(PageDown(a), MmappedChunkEnd(b.p), [&] { free(b.p); });
      ++result_.frees;
    } else {
      free(b.p);  // heap: glibc may trim or madvise; only a monitor knows
      ++result_.frees;
    }
    b.p = nullptr;
    b.len = 0;
  }

  void Realloc(Block& b) {
    const bool large = Chance(50);
    const size_t len = large ? Uniform(2 * kMmapThreshold, 1024 * 1024) : Uniform(16, 48 * 1024);
    const uintptr_t old = Opaque(b.p);
    const size_t old_len = b.len;
    const bool was_mmapped = IsMmappedChunk(b.p);
    const uintptr_t old_end = was_mmapped ? MmappedChunkEnd(b.p) : 0;
    const uint64_t ticket = checker_.BeginReplace();
    char* p = static_cast<char*>(realloc(b.p, len));
    ++result_.reallocs;
    if (p == nullptr) {
      Fail("realloc failed");
      return;
    }
    // What glibc did is known only now, hence the ticket taken before.
    if (was_mmapped) {
      if (reinterpret_cast<uintptr_t>(p) != old) {
        checker_.EndReplace(ticket, PageDown(old), old_end);
      } else if (IsMmappedChunk(p) && MmappedChunkEnd(p) < old_end) {
        // Shrunk in place: the pages past the chunk's new end are gone.
        checker_.EndReplace(ticket, MmappedChunkEnd(p), old_end);
      }
    }
    b.p = p;
    b.len = len;
    b.last_op = reinterpret_cast<uintptr_t>(p) == old ? "realloc in place" : "realloc moved";
    b.kind = IsMmappedChunk(p) ? Kind::kLarge : Kind::kSmall;
    if (len > old_len) memset(p + old_len, 0x5a, len - old_len);
  }

  void Mremap(Block& b) {
    // Shared anonymous memory is a shmem object of fixed size: growing the
    // mapping past it would map pages that SIGBUS.
    const size_t len = Uniform(1, b.kind == Kind::kShared ? b.len / kPage : 32) * kPage;
    const uintptr_t old = reinterpret_cast<uintptr_t>(b.p);
    // Always move: a placeholder picks the destination, MREMAP_FIXED takes it.
    void* dest = mmap(nullptr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (dest == MAP_FAILED) return Fail("mmap placeholder failed");
    void* p = MAP_FAILED;
    Replace(old, old + b.len,
            [&] { p = mremap(b.p, b.len, len, MREMAP_MAYMOVE | MREMAP_FIXED, dest); });
    ++result_.mremaps;
    if (p == MAP_FAILED) {
      munmap(dest, len);
      b.p = nullptr;
      return Fail(absl::StrFormat("mremap failed: %s", strerror(errno)));
    }
    const size_t old_len = b.len;
    b.p = static_cast<char*>(p);
    b.len = len;
    b.last_op = "mremap";
    if (len > old_len) memset(b.p + old_len, 0x33, len - old_len);
  }

  void UnmapPart(Block& b) {
    const size_t pages = b.len / kPage;
    if (pages < 2) return Free(b);
    const size_t keep = Uniform(1, pages - 1);
    const uintptr_t cut = reinterpret_cast<uintptr_t>(b.p) + keep * kPage;
    Replace(cut, cut + (pages - keep) * kPage,
            [&] { munmap(reinterpret_cast<void*>(cut), (pages - keep) * kPage); });
    ++result_.munmaps;
    b.len = keep * kPage;
    b.last_op = "munmap of its tail";
  }

  void Madvise(Block& b) {
    const size_t pages = b.len / kPage;
    const size_t first = Uniform(0, pages - 1);
    const size_t n = Uniform(1, pages - first);
    const uintptr_t a = reinterpret_cast<uintptr_t>(b.p) + first * kPage;
    auto change = [&] { madvise(reinterpret_cast<void*>(a), n * kPage, MADV_DONTNEED); };
    // Shared memory keeps its pages (the page cache holds them); private
    // memory gets fresh zero pages.
    if (b.kind == Kind::kPrivate) {
      Replace(a, a + n * kPage, change);
    } else {
      change();
    }
    ++result_.madvises;
    b.last_op = "madvise(DONTNEED)";
  }

  void Check(Block& b) {
    const size_t len = Uniform(1, std::min(b.len, options_.max_check_bytes));
    Check(b, Uniform(0, b.len - len), len);
  }

  void Check(Block& b, size_t off, size_t len) {
    char* p = b.p + off;
    static constexpr std::array<AccessFlags, 3> kAccess = {
        Access::kLocalWrite, Access::kLocalWrite | Access::kRemoteRead,
        Access::kLocalWrite | Access::kRemoteWrite | Access::kRemoteRead};
    const AccessFlags want = kAccess[Uniform(0, kAccess.size() - 1)];
    absl::StatusOr<Registration> reg = cache_.Acquire(p, len, want);
    ++result_.checks;
    if (!reg.ok()) return Fail(absl::StrCat("Acquire: ", reg.status().ToString()));
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    if (reg->info().addr > a || reg->info().addr + reg->length() < a + len) {
      return Fail("registration does not cover the request");
    }
    if (!AccessSatisfies(reg->access(), want)) return Fail("registration lacks the asked access");
    if (absl::Status s = checker_.Check(index_, *reg, p, len, static_cast<uint32_t>(rng_()));
        !s.ok()) {
      static constexpr const char* kKinds[] = {"heap block", "mmapped malloc block",
                                               "private mapping", "shared mapping"};
      return Fail(absl::StrFormat(
          "%s; in a %s [%p, +%u) (last op on it: %s), registration [%#x, +%#x) lkey %u",
          s.ToString(), kKinds[static_cast<int>(b.kind)], b.p, b.len, b.last_op, reg->info().addr,
          reg->length(), reg->lkey()));
    }
    if (Chance(10)) held_[next_held_++ % kHeld] = *std::move(reg);
  }

  std::mutex& memory_ops_;
  const bool unordered_;
  const int index_;
  RegistrationCache& cache_;
  Checker& checker_;
  const Options options_;
  const uint64_t ops_;
  std::mt19937_64 rng_;
  std::array<Block, kSlots> blocks_{};
  // Handles kept across operations: their mappings must survive the memory
  // changing (deregistered only when dropped).
  std::array<Registration, kHeld> held_{};
  size_t next_held_ = 0;
  Result result_;
};

}  // namespace

std::string Result::Summary() const {
  return absl::StrFormat(
      "%u ops + %u unordered: %u checks, %u failures; malloc %u free %u realloc %u mmap %u "
      "munmap %u mremap %u madvise %u; %u large blocks from a heap",
      ops, unordered_ops, checks, failures, mallocs, frees, reallocs, mmaps, munmaps, mremaps,
      madvises, heap_blocks_dropped);
}

Result Run(RegistrationCache& cache, Checker& checker, const Options& options) {
  // A fixed threshold (no dynamic raising) keeps large blocks on mmap.
  mallopt(M_MMAP_THRESHOLD, static_cast<int>(kMmapThreshold));
  std::vector<Result> results;
  std::mutex memory_ops;
  const auto phase = [&](uint64_t ops, bool unordered) {
    std::vector<Result> phase_results(static_cast<size_t>(options.threads));
    std::vector<std::thread> threads;
    const uint64_t per_thread = ops / static_cast<uint64_t>(options.threads);
    for (int t = 0; t < options.threads; ++t) {
      threads.emplace_back([&, t] {
        Worker w(t, cache, checker, options,
                 per_thread + (t == 0 ? ops % static_cast<uint64_t>(options.threads) : 0),
                 memory_ops, unordered);
        phase_results[static_cast<size_t>(t)] = w.Run();
      });
    }
    for (std::thread& t : threads) t.join();
    results.insert(results.end(), phase_results.begin(), phase_results.end());
  };
  phase(options.ops, false);
  // A sanitizer's malloc does not munmap in free(): nothing to race.
  if (kGlibcMalloc && options.unordered_malloc_ops > 0) phase(options.unordered_malloc_ops, true);
  Result total;
  for (const Result& r : results) {
    total.ops += r.ops;
    total.unordered_ops += r.unordered_ops;
    total.heap_blocks_dropped += r.heap_blocks_dropped;
    total.checks += r.checks;
    total.failures += r.failures;
    total.mallocs += r.mallocs;
    total.frees += r.frees;
    total.reallocs += r.reallocs;
    total.mmaps += r.mmaps;
    total.munmaps += r.munmaps;
    total.mremaps += r.mremaps;
    total.madvises += r.madvises;
    if (total.first_failure.empty()) total.first_failure = r.first_failure;
  }
  return total;
}

}  // namespace dmareg::soak
