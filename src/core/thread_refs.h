// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// ThreadRefTables: per-thread reference counts of one cache's regions, so
// that a hit and a release change memory only this thread writes, with a
// plain load and store (no locked instruction, no shared cache line).
//
// A region's reference count is the sum over every thread's table (plus the
// shared count in its state word, see region.h); one thread's entry may be
// negative (a handle taken on one thread and dropped on another). A thread
// with a slot (thread_slot.h) gets its table on its first hit; the tables
// stay with the slot when the thread exits, so no count is ever lost, and the
// slot's next owner carries on with them. A table is one flat array indexed
// by Region::index in reserved address space: pages appear as the thread
// first touches them, and the hit path finds a counter with no lookup.
//
// The sum is exact only after a HeavyFence (asymmetric_fence.h) issued after
// the region was marked dead: see CacheCore for the handshake.

#ifndef DMAREG_SRC_CORE_THREAD_REFS_H_
#define DMAREG_SRC_CORE_THREAD_REFS_H_

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "runtime/fork_generation.h"
#include "runtime/thread_slot.h"

namespace dmareg::internal {

class ThreadRefs {
 public:
  // Region indexes below this have a counter (RegionPool makes no more).
  static constexpr size_t kMaxIndex = size_t{1} << 24;

  // nullptr if the address space cannot be reserved.
  static ThreadRefs* Create();
  ~ThreadRefs();
  ThreadRefs(const ThreadRefs&) = delete;
  ThreadRefs& operator=(const ThreadRefs&) = delete;

  // Owner thread only. The counter of region `index` (< kMaxIndex).
  std::atomic_ref<int32_t> Counter(uint32_t index) {
    return std::atomic_ref<int32_t>(counts_[index]);
  }
  // Owner thread only: plain increments, the owner is the only writer.
  static void Add(std::atomic_ref<int32_t> c, int32_t n) {
    // release: whoever sums and sees this value also sees `busy` set before
    // it (see CacheCore::Release).
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_release);
  }
  void CountHit(bool dmabuf = false) {
    hits_.store(hits_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    if (dmabuf) {
      dmabuf_hits_.store(dmabuf_hits_.load(std::memory_order_relaxed) + 1,
                         std::memory_order_relaxed);
    }
  }

  // Any thread.
  int32_t Get(uint32_t index) const {
    return std::atomic_ref<int32_t>(counts_[index]).load(std::memory_order_acquire);
  }
  uint64_t hits() const { return hits_.load(std::memory_order_relaxed); }
  uint64_t dmabuf_hits() const { return dmabuf_hits_.load(std::memory_order_relaxed); }

  // Set by the owner while it releases a reference: between its decrement and
  // its last look at the region, the region may be freed by another thread,
  // and the cache with it; the cache waits for this flag before it goes.
  // The value set is BusyMark(): the process's fork generation plus one, so
  // that in a forked child the mark of a parent's thread caught mid-release
  // (a thread the child does not have) is told apart and not waited for.
  std::atomic<uint32_t> busy{0};
  static uint32_t BusyMark() { return ForkGeneration() + 1; }

 private:
  explicit ThreadRefs(int32_t* counts) : counts_(counts) {}

  int32_t* const counts_;  // kMaxIndex entries, zero until written
  std::atomic<uint64_t> hits_{0};
  std::atomic<uint64_t> dmabuf_hits_{0};  // of hits_
};

class ThreadRefTables {
 public:
  // Disabled: every thread uses the shared count (no heavy fence available).
  explicit ThreadRefTables(bool enabled) : enabled_(enabled) {}
  ~ThreadRefTables();
  ThreadRefTables(const ThreadRefTables&) = delete;
  ThreadRefTables& operator=(const ThreadRefTables&) = delete;

  bool enabled() const { return enabled_; }
  // Tables created so far (tests).
  size_t size() const { return count_.load(std::memory_order_acquire); }

  // This thread's table, or nullptr (none yet, no slot yet or at all, or
  // disabled): one TLS load and one indexed load, no branch.
  ThreadRefs* Mine() const { return tables_[tls_thread_slot].load(std::memory_order_acquire); }
  // Mine(), creating it if this thread has a slot and tables are enabled.
  // Callers serialise CreateMine with OthersMayHold (the cache's mutex).
  ThreadRefs* CreateMine();

  // True if a thread other than the caller may hold counts, so a sum needs a
  // HeavyFence first. Serialised with CreateMine.
  bool OthersMayHold() const;

  // Sum of every table's count for `index`.
  int64_t Sum(uint32_t index) const;
  uint64_t Hits() const;
  uint64_t DmaBufHits() const;

  // Waits until no other thread is inside a release (ThreadRefs::busy).
  void AwaitReleases() const;

 private:
  const bool enabled_;
  // By thread slot plus one, as tls_thread_slot holds it: entry 0 (no slot
  // asked for yet) and entry kNoSlot + 1 (none to be had) stay null.
  std::atomic<ThreadRefs*> tables_[kThreadSlots + 2] = {};
  // The same tables densely, for sums; `count_` published after each entry.
  std::atomic<ThreadRefs*> list_[kThreadSlots] = {};
  std::atomic<size_t> count_{0};
};

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_CORE_THREAD_REFS_H_
