// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// libdmareg_hooks on its own: every hooked call reports its range and kind to
// the subscribed sinks BEFORE it proceeds (the sink still sees the memory
// mapped, with its old bytes), and the call then takes effect; calls that
// take nothing away are not reported. Then the subscription API.
#include "dmareg/c/hooks.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "common/sanitizers.h"
#include "gtest/gtest.h"

namespace {

const uintptr_t kPage = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));

uintptr_t U(const void* p) { return reinterpret_cast<uintptr_t>(p); }
char* Map(size_t pages, int flags = MAP_PRIVATE | MAP_ANONYMOUS, char fill = 0x5a) {
  void* p = mmap(nullptr, pages * kPage, PROT_READ | PROT_WRITE, flags, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  memset(p, fill, pages * kPage);
  return static_cast<char*>(p);
}

// Whether every page of [b, e) is mapped (mincore fails with ENOMEM on a
// hole). A system call, no allocation: usable inside a sink.
bool Mapped(uintptr_t b, uintptr_t e) {
  static unsigned char vec[1 << 16];
  const uintptr_t len = e - b;
  if (len / kPage > sizeof vec) return false;
  return mincore(reinterpret_cast<void*>(b), len, vec) == 0;
}

// What a sink saw of one event.
struct Seen {
  int kind;
  uintptr_t begin, end;
  bool mapped;     // every page of the range was still mapped
  int first_byte;  // the byte at `begin` then, or -1
};

// Records the events that overlap [lo, hi) (set by each test, so that other
// memory activity is left out), with what the range held at that moment.
class Recorder {
 public:
  static constexpr int kMax = 64;
  static void Sink(void* ctx, int kind, uintptr_t b, uintptr_t e) {
    auto* r = static_cast<Recorder*>(ctx);
    if (e <= r->lo.load() || b >= r->hi.load()) return;
    const int i = r->n.fetch_add(1);
    if (i >= kMax) return;
    const bool mapped = Mapped(b, e > r->hi.load() ? r->hi.load() : e);
    r->seen[i] = {kind, b, e, mapped,
                  mapped && r->read ? *reinterpret_cast<volatile unsigned char*>(b) : -1};
  }
  void Watch(const void* p, size_t len, bool readable = true) {
    n = 0;
    read = readable;
    lo = U(p);
    hi = U(p) + len;
  }
  void Stop() { lo = hi = 0; }  // keeps what was recorded
  std::vector<Seen> Take() {
    std::vector<Seen> out(seen, seen + std::min(n.load(), kMax));
    n = 0;
    return out;
  }

  std::atomic<uintptr_t> lo{0}, hi{0};
  std::atomic<int> n{0};
  bool read = true;
  Seen seen[kMax] = {};
};

class HooksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    id_ = dmareg_hooks_subscribe(&Recorder::Sink, &rec_);
    ASSERT_GE(id_, 0);
  }
  void TearDown() override { dmareg_hooks_unsubscribe(id_); }

  // Exactly one event, of `kind` and [b, e), seen while mapped holding `byte`.
  void ExpectOne(int kind, uintptr_t b, uintptr_t e, int byte) {
    const std::vector<Seen> seen = rec_.Take();
    ASSERT_EQ(seen.size(), 1u);
    EXPECT_EQ(seen[0].kind, kind);
    EXPECT_EQ(seen[0].begin, b);
    EXPECT_EQ(seen[0].end, e);
    EXPECT_TRUE(seen[0].mapped) << "reported after the range was already gone";
    EXPECT_EQ(seen[0].first_byte, byte) << "the sink should still see the old bytes";
  }

  Recorder rec_;
  int id_ = -1;
};

TEST_F(HooksTest, MunmapIsReportedBefore) {
  char* p = Map(4);
  ASSERT_NE(p, nullptr);
  rec_.Watch(p, 4 * kPage);
  ASSERT_EQ(munmap(p + kPage, 2 * kPage), 0);
  ExpectOne(DMAREG_HOOKS_MUNMAP, U(p) + kPage, U(p) + 3 * kPage, 0x5a);
  EXPECT_FALSE(Mapped(U(p) + kPage, U(p) + 3 * kPage)) << "munmap did not proceed";
  EXPECT_TRUE(Mapped(U(p), U(p) + kPage));
  munmap(p, 4 * kPage);
}

TEST_F(HooksTest, MapFixedOverMemoryIsReportedNoReplaceIsNot) {
  char* p = Map(4);
  ASSERT_NE(p, nullptr);
  rec_.Watch(p, 4 * kPage);
  ASSERT_EQ(mmap(p + kPage, 2 * kPage, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0),
            p + kPage);
  ExpectOne(DMAREG_HOOKS_MMAP_FIXED, U(p) + kPage, U(p) + 3 * kPage, 0x5a);
  EXPECT_EQ(p[kPage], 0) << "the new pages should have replaced the old";

  const uint64_t before = dmareg_hooks_events(DMAREG_HOOKS_MMAP_FIXED);
  for (int flags : {MAP_FIXED_NOREPLACE, MAP_FIXED_NOREPLACE | MAP_FIXED}) {
    void* q = mmap(p, kPage, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);
    EXPECT_EQ(q, MAP_FAILED) << "NOREPLACE over a mapping must fail (kernel >= 4.17)";
  }
  EXPECT_EQ(dmareg_hooks_events(DMAREG_HOOKS_MMAP_FIXED), before);
  EXPECT_TRUE(rec_.Take().empty()) << "MAP_FIXED_NOREPLACE replaces nothing";
  munmap(p, 4 * kPage);
}

TEST_F(HooksTest, MremapThatMovesReportsTheOldRange) {
  // Eight pages, of which the last four stay mapped: growing the first four
  // cannot happen in place.
  char* p = Map(8);
  ASSERT_NE(p, nullptr);
  rec_.Watch(p, 4 * kPage);
  void* q = mremap(p, 4 * kPage, 8 * kPage, MREMAP_MAYMOVE);
  ASSERT_NE(q, MAP_FAILED);
  ExpectOne(DMAREG_HOOKS_MREMAP, U(p), U(p) + 4 * kPage, 0x5a);
  EXPECT_NE(q, p);
  EXPECT_FALSE(Mapped(U(p), U(p) + 4 * kPage)) << "the old range should be gone";
  munmap(q, 8 * kPage);
  munmap(p + 4 * kPage, 4 * kPage);
}

TEST_F(HooksTest, MremapThatShrinksReportsTheCutTail) {
  char* p = Map(4);
  ASSERT_NE(p, nullptr);
  rec_.Watch(p, 4 * kPage);
  ASSERT_EQ(mremap(p, 4 * kPage, kPage, 0), p);
  ExpectOne(DMAREG_HOOKS_MREMAP, U(p) + kPage, U(p) + 4 * kPage, 0x5a);
  EXPECT_FALSE(Mapped(U(p) + kPage, U(p) + 4 * kPage));
  EXPECT_TRUE(Mapped(U(p), U(p) + kPage));
  munmap(p, kPage);
}

TEST_F(HooksTest, MremapFixedReportsTheTargetToo) {
  char* src = Map(2, MAP_PRIVATE | MAP_ANONYMOUS, 0x11);
  char* dst = Map(2, MAP_PRIVATE | MAP_ANONYMOUS, 0x22);
  ASSERT_NE(src, nullptr);
  ASSERT_NE(dst, nullptr);
  rec_.Watch(std::min(src, dst), std::max(U(src), U(dst)) + 2 * kPage - U(std::min(src, dst)));
  ASSERT_EQ(mremap(src, 2 * kPage, 2 * kPage, MREMAP_MAYMOVE | MREMAP_FIXED, dst), dst);
  const std::vector<Seen> seen = rec_.Take();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].kind, DMAREG_HOOKS_MREMAP);
  EXPECT_EQ(seen[0].begin, U(src));
  EXPECT_EQ(seen[0].end, U(src) + 2 * kPage);
  EXPECT_EQ(seen[0].first_byte, 0x11);
  EXPECT_EQ(seen[1].kind, DMAREG_HOOKS_MREMAP);
  EXPECT_EQ(seen[1].begin, U(dst));
  EXPECT_EQ(seen[1].end, U(dst) + 2 * kPage);
  EXPECT_EQ(seen[1].first_byte, 0x22) << "the target's old pages, before they were replaced";
  EXPECT_FALSE(Mapped(U(src), U(src) + 2 * kPage));
  EXPECT_EQ(dst[0], 0x11) << "the source's pages moved over the target";
  munmap(dst, 2 * kPage);
}

TEST_F(HooksTest, MadviseThatDropsPagesIsReportedOthersAreNot) {
  char* p = Map(4);
  char* shared = Map(2, MAP_SHARED | MAP_ANONYMOUS);  // MADV_REMOVE needs shmem
  ASSERT_NE(p, nullptr);
  ASSERT_NE(shared, nullptr);
  rec_.Watch(p, 4 * kPage);
  ASSERT_EQ(madvise(p, kPage, MADV_DONTNEED), 0);
  ExpectOne(DMAREG_HOOKS_MADVISE, U(p), U(p) + kPage, 0x5a);
  EXPECT_EQ(p[0], 0) << "DONTNEED did not proceed";
  ASSERT_EQ(madvise(p + kPage, kPage, MADV_FREE), 0);
  ExpectOne(DMAREG_HOOKS_MADVISE, U(p) + kPage, U(p) + 2 * kPage, 0x5a);

  const uint64_t before = dmareg_hooks_events(DMAREG_HOOKS_MADVISE);
  for (int advice : {MADV_WILLNEED, MADV_NORMAL, MADV_SEQUENTIAL, MADV_RANDOM}) {
    EXPECT_EQ(madvise(p + 2 * kPage, 2 * kPage, advice), 0) << advice;
  }
  EXPECT_EQ(dmareg_hooks_events(DMAREG_HOOKS_MADVISE), before);
  EXPECT_TRUE(rec_.Take().empty()) << "advice that keeps the pages is not an unmap";

  rec_.Watch(shared, 2 * kPage);
  ASSERT_EQ(madvise(shared, 2 * kPage, MADV_REMOVE), 0) << strerror(errno);
  ExpectOne(DMAREG_HOOKS_MADVISE, U(shared), U(shared) + 2 * kPage, 0x5a);
  EXPECT_EQ(shared[0], 0) << "REMOVE did not proceed";
  munmap(p, 4 * kPage);
  munmap(shared, 2 * kPage);
}

// A System V segment of 2.5 pages, removed at scope exit (after detach).
struct Segment {
  Segment() : id(shmget(IPC_PRIVATE, 2 * kPage + 100, IPC_CREAT | 0600)) {}
  ~Segment() {
    if (id >= 0) shmctl(id, IPC_RMID, nullptr);
  }
  int id;
};

TEST_F(HooksTest, ShmatRemapIsReportedPlainShmatIsNot) {
  Segment seg;
  if (seg.id < 0) GTEST_SKIP() << "no System V shared memory here: " << strerror(errno);
  char* p = Map(4);
  ASSERT_NE(p, nullptr);
  rec_.Watch(p, 4 * kPage);
  ASSERT_EQ(shmat(seg.id, p, SHM_REMAP), p) << strerror(errno);
  // The segment's size from IPC_STAT, rounded up to whole pages.
  ExpectOne(DMAREG_HOOKS_SHMAT, U(p), U(p) + 3 * kPage, 0x5a);
  EXPECT_EQ(p[0], 0) << "the segment should have replaced the pages";

  const uint64_t before = dmareg_hooks_events(DMAREG_HOOKS_SHMAT);
  void* q = shmat(seg.id, nullptr, 0);
  ASSERT_NE(q, reinterpret_cast<void*>(-1));
  EXPECT_EQ(dmareg_hooks_events(DMAREG_HOOKS_SHMAT), before) << "a fresh attach replaces nothing";
  ASSERT_EQ(shmdt(q), 0);
  ASSERT_EQ(shmdt(p), 0);
  munmap(p + 3 * kPage, kPage);
}

TEST_F(HooksTest, ShmdtReportsTheWholeAttachmentEvenWhenSplit) {
  Segment seg;
  if (seg.id < 0) GTEST_SKIP() << "no System V shared memory here: " << strerror(errno);
  for (bool split : {false, true}) {
    SCOPED_TRACE(split ? "split by mprotect" : "one mapping");
    char* q = static_cast<char*>(shmat(seg.id, nullptr, 0));
    ASSERT_NE(q, reinterpret_cast<char*>(-1));
    memset(q, 0x33, 3 * kPage);
    if (split) {
      ASSERT_EQ(mprotect(q + kPage, kPage, PROT_READ), 0);
    }
    rec_.Watch(q, 3 * kPage);
    ASSERT_EQ(shmdt(q), 0);
    ExpectOne(DMAREG_HOOKS_SHMDT, U(q), U(q) + 3 * kPage, 0x33);
    EXPECT_FALSE(Mapped(U(q), U(q) + kPage));
    EXPECT_FALSE(Mapped(U(q) + 2 * kPage, U(q) + 3 * kPage));
  }
}

TEST_F(HooksTest, ShrinkingTheBreakIsReported) {
  // Grow the break by four whole pages of our own, shrink it back in two
  // steps (sbrk, then brk), and only then assert: nothing may allocate
  // while the break is ours, or malloc could take memory we then cut.
  char* const old_break = static_cast<char*>(sbrk(0));
  ASSERT_NE(old_break, reinterpret_cast<char*>(-1));
  const uintptr_t start = (U(old_break) + kPage - 1) & ~(kPage - 1);
  if (sbrk(static_cast<intptr_t>(start + 4 * kPage - U(old_break))) ==
      reinterpret_cast<void*>(-1)) {
    GTEST_SKIP() << "the break cannot grow here: " << strerror(errno);
  }
  memset(reinterpret_cast<void*>(start), 0x44, 4 * kPage);
  rec_.Watch(reinterpret_cast<void*>(start), 4 * kPage);
  const void* cut = sbrk(-2 * static_cast<intptr_t>(kPage));
  const bool tail_gone = !Mapped(start + 2 * kPage, start + 3 * kPage);
  const int lowered = brk(reinterpret_cast<void*>(start));
  const bool all_gone = !Mapped(start, start + kPage);
  const int restored = brk(old_break);
  rec_.Stop();
  Seen seen[Recorder::kMax];
  const int n = std::min(rec_.n.load(), Recorder::kMax);
  std::copy(rec_.seen, rec_.seen + n, seen);

  ASSERT_NE(cut, reinterpret_cast<void*>(-1));
  ASSERT_EQ(lowered, 0);
  ASSERT_EQ(restored, 0);
  EXPECT_EQ(sbrk(0), old_break);
  ASSERT_EQ(n, 2);
  EXPECT_EQ(seen[0].kind, DMAREG_HOOKS_BRK);
  EXPECT_EQ(seen[0].begin, start + 2 * kPage);
  EXPECT_EQ(seen[0].end, start + 4 * kPage);
  EXPECT_TRUE(seen[0].mapped);
  EXPECT_EQ(seen[0].first_byte, 0x44);
  EXPECT_EQ(seen[1].kind, DMAREG_HOOKS_BRK);
  EXPECT_EQ(seen[1].begin, start);
  EXPECT_EQ(seen[1].end, start + 2 * kPage);
  EXPECT_TRUE(seen[1].mapped);
  EXPECT_EQ(seen[1].first_byte, 0x44);
  EXPECT_TRUE(tail_gone);
  EXPECT_TRUE(all_gone);
}

bool GlibcMalloc() { return dmareg::testing::kGlibcMalloc && dmareg_hooks_decodes_malloc() != 0; }
// Above glibc's largest mmap threshold (which rises after each free of an
// mmap-backed block): always a mapping of its own.
constexpr size_t kLarge = 40 << 20;

TEST_F(HooksTest, FreeOfALargeBlockReportsItsWholeMapping) {
  if (!GlibcMalloc()) GTEST_SKIP() << "glibc's malloc is replaced here (sanitizer): no chunks";
  char* block = static_cast<char*>(malloc(kLarge));
  ASSERT_NE(block, nullptr);
  memset(block, 0x66, kLarge);
  rec_.Watch(block, kLarge);
  free(block);
  const std::vector<Seen> seen = rec_.Take();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].kind, DMAREG_HOOKS_FREE);
  EXPECT_EQ(seen[0].begin % kPage, 0u);
  EXPECT_EQ(seen[0].end % kPage, 0u);
  EXPECT_LE(seen[0].begin, U(block));
  EXPECT_LT(U(block) - seen[0].begin, kPage) << "the chunk header is in the first page";
  EXPECT_GE(seen[0].end, U(block) + kLarge);
  EXPECT_TRUE(seen[0].mapped);
  EXPECT_FALSE(Mapped(seen[0].begin, seen[0].end)) << "glibc should have unmapped it";
}

TEST_F(HooksTest, ReallocOfALargeBlockReportsItsWholeMapping) {
  if (!GlibcMalloc()) GTEST_SKIP() << "glibc's malloc is replaced here (sanitizer): no chunks";
  char* block = static_cast<char*>(malloc(kLarge));
  ASSERT_NE(block, nullptr);
  memset(block, 0x77, kLarge);
  rec_.Watch(block, kLarge);
  char* grown = static_cast<char*>(realloc(block, 2 * kLarge));
  ASSERT_NE(grown, nullptr);
  const std::vector<Seen> seen = rec_.Take();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].kind, DMAREG_HOOKS_REALLOC);
  EXPECT_LE(seen[0].begin, U(block));
  EXPECT_LT(U(block) - seen[0].begin, kPage);
  EXPECT_GE(seen[0].end, U(block) + kLarge);
  EXPECT_TRUE(seen[0].mapped);
  EXPECT_EQ(seen[0].first_byte, 0) << "the chunk header's offset word is 0";
  EXPECT_EQ(grown[kLarge - 1], 0x77);
  if (grown != block) {
    EXPECT_FALSE(Mapped(seen[0].begin, seen[0].begin + kPage)) << "moved: the old range goes";
  }
  free(grown);
}

// ---- The subscription API ---------------------------------------------

void Ignore(void*, int, uintptr_t, uintptr_t) {}

TEST(HooksSubscribeTest, NullSinkIsInvalid) {
  EXPECT_EQ(dmareg_hooks_subscribe(nullptr, nullptr), -EINVAL);
}

TEST(HooksSubscribeTest, AtMostMaxSinksThenNoSpace) {
  std::vector<int> ids;
  int id;
  while ((id = dmareg_hooks_subscribe(&Ignore, nullptr)) >= 0) {
    ids.push_back(id);
    ASSERT_LE(ids.size(), size_t{DMAREG_HOOKS_MAX_SINKS});
  }
  EXPECT_EQ(id, -ENOSPC);
  EXPECT_EQ(ids.size(), size_t{DMAREG_HOOKS_MAX_SINKS}) << "a sink of another test leaked";
  dmareg_hooks_unsubscribe(ids.back());
  const int again = dmareg_hooks_subscribe(&Ignore, nullptr);
  EXPECT_EQ(again, ids.back()) << "an unsubscribed slot should be reusable";
  if (again >= 0) ids.back() = again;
  for (int i : ids) dmareg_hooks_unsubscribe(i);
  dmareg_hooks_unsubscribe(-1);  // ignored
  dmareg_hooks_unsubscribe(DMAREG_HOOKS_MAX_SINKS);
}

// A sink that blocks on an event inside [block_lo, block_hi) until released,
// and counts the others ("probes").
struct Blocker {
  static void Sink(void* ctx, int, uintptr_t b, uintptr_t e) {
    auto* s = static_cast<Blocker*>(ctx);
    // Only the first such event blocks: a probe may reuse the addresses.
    if (b < s->block_hi.load() && e > s->block_lo.load() && !s->entered.exchange(true)) {
      while (!s->released.load()) sched_yield();
    } else {
      s->probes.fetch_add(1);
    }
  }
  std::atomic<uintptr_t> block_lo{0}, block_hi{0};
  std::atomic<bool> entered{false}, released{false};
  std::atomic<int> probes{0};
};

TEST(HooksSubscribeTest, UnsubscribeWaitsForSinksInFlight) {
  Blocker blocker;
  char* p = Map(1);
  ASSERT_NE(p, nullptr);
  blocker.block_lo = U(p);
  blocker.block_hi = U(p) + kPage;
  const int id = dmareg_hooks_subscribe(&Blocker::Sink, &blocker);
  ASSERT_GE(id, 0);
  std::thread unmapper([&] { munmap(p, kPage); });
  while (!blocker.entered.load()) sched_yield();

  std::atomic<bool> returned{false};
  std::thread unsubscriber([&] {
    dmareg_hooks_unsubscribe(id);
    returned = true;
  });
  // Once a probe munmap no longer reaches the sink, unsubscribe has cleared
  // it and is waiting (or, if broken, returning).
  for (;;) {
    const int probes = blocker.probes.load();
    char* q = Map(1);
    if (q == nullptr) break;
    munmap(q, kPage);
    if (blocker.probes.load() == probes) break;
  }
  bool early = false;
  for (int i = 0; i < 1000 && !early; ++i) {
    early = returned.load();
    sched_yield();
  }
  blocker.released = true;
  unsubscriber.join();
  unmapper.join();
  EXPECT_FALSE(early) << "unsubscribe returned while its sink was running";
  EXPECT_TRUE(returned.load());
  EXPECT_FALSE(Mapped(U(p), U(p) + kPage));
}

TEST(HooksEventsTest, CountsPerKindWithOrWithoutSubscribers) {
  uint64_t before[DMAREG_HOOKS_KINDS];
  for (int k = 0; k < DMAREG_HOOKS_KINDS; ++k) before[k] = dmareg_hooks_events(k);
  char* p = Map(4);
  ASSERT_NE(p, nullptr);
  ASSERT_EQ(madvise(p, kPage, MADV_DONTNEED), 0);
  ASSERT_EQ(mmap(p, kPage, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0), p);
  ASSERT_EQ(mremap(p, 4 * kPage, 2 * kPage, 0), p);
  ASSERT_EQ(munmap(p, 2 * kPage), 0);
  EXPECT_EQ(dmareg_hooks_events(DMAREG_HOOKS_MUNMAP), before[DMAREG_HOOKS_MUNMAP] + 1);
  EXPECT_EQ(dmareg_hooks_events(DMAREG_HOOKS_MMAP_FIXED), before[DMAREG_HOOKS_MMAP_FIXED] + 1);
  EXPECT_EQ(dmareg_hooks_events(DMAREG_HOOKS_MREMAP), before[DMAREG_HOOKS_MREMAP] + 1);
  EXPECT_EQ(dmareg_hooks_events(DMAREG_HOOKS_MADVISE), before[DMAREG_HOOKS_MADVISE] + 1);
  for (int k : {DMAREG_HOOKS_SHMAT, DMAREG_HOOKS_SHMDT, DMAREG_HOOKS_BRK}) {
    EXPECT_EQ(dmareg_hooks_events(k), before[k]) << "kind " << k;
  }
  EXPECT_EQ(dmareg_hooks_events(-1), 0u);
  EXPECT_EQ(dmareg_hooks_events(DMAREG_HOOKS_KINDS), 0u);
}

// ---- Signal handlers --------------------------------------------------

// Counts the events of threads that set t_counting (a signal handler runs on
// the interrupted thread, so its events count too), and how deep sinks nest.
thread_local bool t_counting = false;
thread_local int t_depth = 0;
struct Nesting {
  static void Sink(void* ctx, int kind, uintptr_t, uintptr_t) {
    if (!t_counting) return;
    auto* s = static_cast<Nesting*>(ctx);
    const int depth = ++t_depth;
    int max = s->max_depth.load();
    while (depth > max && !s->max_depth.compare_exchange_weak(max, depth)) {
    }
    s->events[kind].fetch_add(1);
    --t_depth;
  }
  std::atomic<int> max_depth{0};
  std::atomic<uint64_t> events[DMAREG_HOOKS_KINDS] = {};
};

std::atomic<int> g_handled{0};
void MapUnmapAdvise(int) {
  const int saved = errno;
  void* p = mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p != MAP_FAILED) {
    madvise(p, kPage, MADV_DONTNEED);
    munmap(p, kPage);
    g_handled.fetch_add(1);
  }
  errno = saved;
}

TEST(HooksSignalTest, HookedCallsInsideSignalHandlersNestOnce) {
  struct sigaction sa = {}, old = {};
  sa.sa_handler = &MapUnmapAdvise;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);
  Nesting nesting;
  const int id = dmareg_hooks_subscribe(&Nesting::Sink, &nesting);
  ASSERT_GE(id, 0);
  g_handled = 0;
  constexpr int kSignals = 200;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> loops{0};
  std::atomic<bool> started{false};
  std::thread worker([&] {
    t_counting = true;
    started = true;
    while (!stop.load()) {
      void* p = mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) break;
      munmap(p, kPage);
      loops.fetch_add(1);
    }
    t_counting = false;
  });
  // One signal at a time, each handled before the next: none coalesce, and
  // all land while the worker loops.
  while (!started.load()) sched_yield();
  int sent = 0;
  for (; sent < kSignals; ++sent) {
    if (pthread_kill(worker.native_handle(), SIGUSR1) != 0) break;
    while (g_handled.load() == sent) sched_yield();
  }
  stop = true;
  worker.join();
  dmareg_hooks_unsubscribe(id);
  sigaction(SIGUSR1, &old, nullptr);

  EXPECT_EQ(sent, kSignals);
  EXPECT_EQ(g_handled.load(), kSignals);
  EXPECT_EQ(nesting.events[DMAREG_HOOKS_MUNMAP].load(), loops.load() + kSignals);
  EXPECT_EQ(nesting.events[DMAREG_HOOKS_MADVISE].load(), uint64_t{kSignals});
  EXPECT_GE(nesting.max_depth.load(), 1);
  EXPECT_LE(nesting.max_depth.load(), 2) << "a sink re-entered beyond one signal's nesting";
}

}  // namespace
