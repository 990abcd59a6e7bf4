// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// A counter that many threads bump without sharing a cache line and without
// a locked instruction: a thread with a slot (thread_slot.h) owns that
// stripe outright, so a relaxed load and store is an exact increment; threads
// without one share an overflow stripe with fetch_add. Readers sum the
// stripes. Used for hit counts, which a single atomic would turn into the
// one contended line of the hit path.

#ifndef DMAREG_SRC_BASE_STRIPED_COUNTER_H_
#define DMAREG_SRC_BASE_STRIPED_COUNTER_H_

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "runtime/thread_slot.h"

namespace dmareg::internal {

class StripedCounter {
 public:
  static constexpr size_t kStripes = kThreadSlots;

  void Add(uint64_t n = 1) {
    const size_t id = ThreadSlot();
    if (id < kStripes) {
      std::atomic<uint64_t>& v = stripes_[id].v;  // only this thread writes it
      v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    } else {
      stripes_[kStripes].v.fetch_add(n, std::memory_order_relaxed);
    }
  }
  uint64_t Sum() const {
    uint64_t total = 0;
    for (const Stripe& s : stripes_) total += s.v.load(std::memory_order_relaxed);
    return total;
  }

 private:
  struct alignas(64) Stripe {
    std::atomic<uint64_t> v{0};
  };
  Stripe stripes_[kStripes + 1];  // the last one is shared
};

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_BASE_STRIPED_COUNTER_H_
