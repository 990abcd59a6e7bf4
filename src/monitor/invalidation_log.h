// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// InvalidationLog: the ranges a MemoryMonitor learned were unmapped, in
// order, for any number of caches to consume at their own pace.
//
// Producers (a monitor's event reader, Notify callers) append under a short
// mutex that is only ever held for a copy: no producer waits on a device, a
// cache lock or the kernel while holding it, so producers never block each
// other for long and never deadlock with a thread inside munmap.
//
// Consumers (caches) keep a cursor. The hit path asks `Pending(cursor)`: two
// loads of a line that is written only when events arrive. A consumer that
// fell more than kCapacity events behind is told so (`overrun`) and must drop
// everything it caches.
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

#include "absl/base/thread_annotations.h"
#include "base/mutex.h"
#include "dmareg/range.h"

namespace dmareg::internal {

class InvalidationLog {
 public:
  static constexpr size_t kCapacity = 4096;

  void BeginEvents() { in_flight_.fetch_add(1, std::memory_order_seq_cst); }
  void EndEvents() { in_flight_.fetch_sub(1, std::memory_order_release); }
  // `r` (bytes, not empty) changed.
  void Publish(Range r);

  // True if events past `cursor` exist or may be about to. Reads the bracket
  // before the head: a closed bracket was closed after its publications.
  bool Pending(uint64_t cursor) const {
    return in_flight_.load(std::memory_order_acquire) != 0 ||
           head_.load(std::memory_order_acquire) != cursor;
  }
  // Returns once no bracket is open (producers publish, then close: bounded).
  void WaitQuiet() const;
  // Appends the ranges after `cursor` to `out` and returns the new cursor;
  // sets `*overrun` (and appends nothing) if some were already overwritten.
  uint64_t ReadSince(uint64_t cursor, std::vector<Range>* out, bool* overrun) const;
  uint64_t head() const { return head_.load(std::memory_order_acquire); }

 private:
  // Read together on every hit; written only when events arrive.
  alignas(64) std::atomic<uint32_t> in_flight_{0};
  std::atomic<uint64_t> head_{0};
  // Lock order: a leaf; held only for copies into or out of ring_, never
  // across an allocation (see ReadSince).
  alignas(64) mutable Mutex mu_;
  std::array<Range, kCapacity> ring_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_MONITOR_INVALIDATION_LOG_H_
