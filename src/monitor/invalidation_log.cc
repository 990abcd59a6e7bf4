// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "monitor/invalidation_log.h"

#include <sched.h>

#include <algorithm>
#include <optional>

namespace dmareg::internal {

void InvalidationLog::Publish(Range r) {
  const uint64_t n = head_.fetch_add(1, std::memory_order_acq_rel);
  Slot& s = ring_[n % kCapacity];
  const uint64_t writing = 2 * n + 1;
  uint64_t seen = s.seq.load(std::memory_order_relaxed);
  // Claim the slot from an older lap's committed event. A slot still being
  // written (odd) or already taken by a later lap means kCapacity events
  // raced past a stalled producer: give the event up and say so.
  for (;;) {
    if (seen >= writing || (seen & 1) != 0) {
      lost_.fetch_add(1, std::memory_order_seq_cst);
      return;
    }
    if (s.seq.compare_exchange_weak(seen, writing, std::memory_order_acquire,
                                    std::memory_order_relaxed)) {
      break;
    }
  }
  // Seqlock writer: the odd mark is visible before any byte of the range.
  std::atomic_thread_fence(std::memory_order_release);
  s.begin.store(r.begin(), std::memory_order_relaxed);
  s.end.store(r.end(), std::memory_order_relaxed);
  uint64_t expected = writing;
  if (!s.seq.compare_exchange_strong(expected, writing + 1, std::memory_order_release,
                                     std::memory_order_relaxed)) {
    lost_.fetch_add(1, std::memory_order_seq_cst);
  }
}

void InvalidationLog::WaitQuietSlow() const {
  // A producer holds the bracket open for one read() and a few copies. Spin
  // briefly, then yield: the producer may be descheduled.
  for (int spins = 0; in_flight_.load(std::memory_order_acquire) != 0; ++spins) {
    if (spins > 64) sched_yield();
  }
}

uint64_t InvalidationLog::ReadSince(uint64_t cursor, std::vector<Range>* out, bool* overrun) const {
  // Allocate before reading: nothing here holds a lock, but room made first
  // keeps the copy loop free of allocations that could unmap memory.
  const uint64_t lost_before = lost_.load(std::memory_order_seq_cst);
  const uint64_t h = head_.load(std::memory_order_acquire);
  *overrun = h - cursor > kCapacity;
  if (*overrun) return h;
  out->reserve(out->size() + (h - cursor));
  const size_t kept = out->size();
  for (uint64_t n = cursor; n != h; ++n) {
    const Slot& s = ring_[n % kCapacity];
    const uint64_t committed = 2 * n + 2;
    for (int spins = 0;; ++spins) {
      const uint64_t seq = s.seq.load(std::memory_order_acquire);
      if (seq == committed) {
        const uintptr_t b = s.begin.load(std::memory_order_relaxed);
        const uintptr_t e = s.end.load(std::memory_order_relaxed);
        std::atomic_thread_fence(std::memory_order_acquire);
        const std::optional<Range> r = Range::FromBounds(b, e);
        if (s.seq.load(std::memory_order_relaxed) == committed && r) {
          out->push_back(*r);
          break;
        }
      } else if (seq < committed && lost_.load(std::memory_order_seq_cst) == lost_before) {
        // Claimed, not yet committed: the producer is a few stores away
        // (it may have been descheduled, or be in a signal handler).
        if (spins > 64) sched_yield();
        continue;
      }
      // Overwritten by a later lap, or an event was lost: start over.
      out->resize(kept);
      *overrun = true;
      return h;
    }
  }
  return h;
}

}  // namespace dmareg::internal
