// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "monitor/invalidation_log.h"

#include <sched.h>

#include <algorithm>

namespace dmareg::internal {

void InvalidationLog::Publish(Range r) {
  MutexLock lock(&mu_);
  const uint64_t h = head_.load(std::memory_order_relaxed);
  ring_[h % kCapacity] = r;
  head_.store(h + 1, std::memory_order_release);
}

void InvalidationLog::WaitQuiet() const {
  // A producer holds the bracket open for one read() and a few copies. Spin
  // briefly, then yield: the producer may be descheduled.
  for (int spins = 0; in_flight_.load(std::memory_order_acquire) != 0; ++spins) {
    if (spins > 64) sched_yield();
  }
}

uint64_t InvalidationLog::ReadSince(uint64_t cursor, std::vector<Range>* out, bool* overrun) const {
  // Never allocate under mu_: the event reader needs mu_ to publish, and an
  // allocation may free memory (an allocator trimming, a sanitizer's
  // quarantine) that unmaps a watched range, which waits for that reader.
  // Make room first, then copy; retry if more arrived meanwhile.
  for (;;) {
    const uint64_t seen = head_.load(std::memory_order_acquire);
    out->reserve(out->size() + std::min<uint64_t>(seen - cursor, kCapacity));
    MutexLock lock(&mu_);
    const uint64_t h = head_.load(std::memory_order_relaxed);
    *overrun = h - cursor > kCapacity;
    if (*overrun) return h;
    if (h - cursor <= out->capacity() - out->size()) {
      for (uint64_t e = cursor; e != h; ++e) out->push_back(ring_[e % kCapacity]);
      return h;
    }
  }
}

}  // namespace dmareg::internal
