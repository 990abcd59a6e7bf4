// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// InvalidationLog: the ranges a MemoryMonitor learned were unmapped, in
// order, for any number of caches to consume at their own pace.
//
// Producers (a monitor's event reader, Notify callers, and the interposition
// hooks from inside munmap or free) append without a lock: `Publish` claims
// a sequence number with one atomic add, writes the slot and commits it. It
// never blocks, allocates or makes a system call, so it is safe inside a
// signal handler and inside any hooked call, whatever locks that thread
// holds (the hooks monitor publishes from there).
//
// Consumers (caches) keep a cursor. The hit path asks `Pending(cursor)`: two
// loads of a line that is written only when events arrive. A consumer that
// fell more than kCapacity events behind is told so (`overrun`) and must drop
// everything it caches. `ReadSince` waits only for producers that claimed a
// slot and have not yet committed it: a few stores away, never a lock.
//
// The in-flight bracket closes the window of asynchronous monitors: the
// kernel lets a thread return from munmap as soon as the userfaultfd reader
// has dequeued its event, before the reader has published it. The reader
// opens the bracket before it reads, so a thread that returned from munmap
// sees either the bracket open or the range published, and `WaitQuiet` then
// waits (for a copy, never for a lock or a device) until it is published.

#ifndef DMAREG_SRC_MONITOR_INVALIDATION_LOG_H_
#define DMAREG_SRC_MONITOR_INVALIDATION_LOG_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "dmareg/range.h"

namespace dmareg::internal {

class InvalidationLog {
 public:
  static constexpr size_t kCapacity = 4096;

  void BeginEvents() { in_flight_.fetch_add(1, std::memory_order_seq_cst); }
  void EndEvents() { in_flight_.fetch_sub(1, std::memory_order_release); }
  // `r` (bytes, not empty) changed. Lock-free and async-signal-safe.
  void Publish(Range r);

  // True if events past `cursor` exist or may be about to. Reads the bracket
  // before the head: a closed bracket was closed after its publications.
  bool Pending(uint64_t cursor) const {
    return in_flight_.load(std::memory_order_acquire) != 0 ||
           head_.load(std::memory_order_acquire) != cursor;
  }
  // Returns once no bracket is open (producers publish, then close: bounded).
  void WaitQuiet() const {
    if (in_flight_.load(std::memory_order_acquire) != 0) [[unlikely]]
      WaitQuietSlow();
  }
  // Appends the ranges after `cursor` to `out` and returns the new cursor;
  // sets `*overrun` (and appends nothing) if some were already overwritten.
  // Every range claimed before the call is in `out` when it returns.
  uint64_t ReadSince(uint64_t cursor, std::vector<Range>* out, bool* overrun) const;
  // Events claimed so far (committed or about to be).
  uint64_t head() const { return head_.load(std::memory_order_acquire); }

 private:
  void WaitQuietSlow() const;
  // A slot's `seq` is 2n+1 while event n is written into it and 2n+2 once
  // committed; a consumer of event n accepts the slot only at 2n+2, before
  // and after reading it.
  struct Slot {
    std::atomic<uint64_t> seq{0};
    std::atomic<uintptr_t> begin{0};
    std::atomic<uintptr_t> end{0};
  };
  // Read together on every hit; written only when events arrive.
  alignas(64) std::atomic<uint32_t> in_flight_{0};
  std::atomic<uint64_t> head_{0};  // sequence numbers claimed
  // Bumped by a producer that found its slot taken by a later lap (or lost
  // its slot to one): the events in between may be gone, and consumers that
  // see it move treat that as an overrun.
  std::atomic<uint64_t> lost_{0};
  alignas(64) std::array<Slot, kCapacity> ring_;
};

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_MONITOR_INVALIDATION_LOG_H_
