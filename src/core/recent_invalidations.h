// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// RecentInvalidations: the last few ranges a cache invalidated, each in its
// space (host memory, or one dma-buf: RangeIndex::SpaceOf), numbered by an
// epoch, so that a miss that registered without the cache's lock can ask
// "was my span invalidated since I looked?" and redo its registration if so.
// A space hash that two buffers share only makes a needless retry.
//
//   const uint64_t epoch = recent.Open();       // under the lock, before
//   ... register `span` with no lock held ...
//   recent.Close();                              // under the lock, after
//   if (recent.InvalidatedSince(epoch, span, space))
//     ... deregister and retry ...
//
// While no miss has one open, no one can ask: Record then keeps nothing
// (the common case of an invalidation, kept off its path).
//
// It keeps kCapacity records: a miss whose epoch has dropped out of them
// cannot tell, so it is told yes (a needless retry, never a stale mapping).
// Not thread-safe: the cache's mutex guards it.

#ifndef DMAREG_SRC_CORE_RECENT_INVALIDATIONS_H_
#define DMAREG_SRC_CORE_RECENT_INVALIDATIONS_H_

#include <array>
#include <cstddef>
#include <cstdint>

#include "dmareg/range.h"

namespace dmareg::internal {

class RecentInvalidations {
 public:
  static constexpr size_t kCapacity = 64;

  // The epoch of the newest record (0 before any), for a miss that will
  // ask about it once it has called Close.
  uint64_t Open() {
    ++open_;
    return epoch_;
  }
  void Close() { --open_; }

  void Record(Range r, uint64_t space = 0) {
    if (open_ == 0) return;
    ++epoch_;
    records_[epoch_ % kCapacity] = {r, space};
  }

  // True if a range of `space` overlapping `r` was recorded after `epoch`,
  // or if that can no longer be told.
  bool InvalidatedSince(uint64_t epoch, Range r, uint64_t space = 0) const {
    if (epoch_ == epoch) return false;
    if (epoch_ - epoch >= kCapacity) return true;
    for (uint64_t e = epoch + 1; e <= epoch_; ++e) {
      const Entry& x = records_[e % kCapacity];
      if (x.space == space && x.range.Overlaps(r)) return true;
    }
    return false;
  }

 private:
  struct Entry {
    Range range;
    uint64_t space = 0;
  };
  uint64_t epoch_ = 0;
  size_t open_ = 0;                       // Open calls not yet closed
  std::array<Entry, kCapacity> records_;  // epoch e at e % kCapacity
};

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_CORE_RECENT_INVALIDATIONS_H_
