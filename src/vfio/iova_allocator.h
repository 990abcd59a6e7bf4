// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// IovaAllocator: hands out I/O virtual addresses (IOVAs) for one device's
// address space, for the domains that choose the IOVA a buffer is mapped at
// (a VFIO IOMMU container, an ODP-style IOVA cache). It only does the
// arithmetic: nothing here talks to a kernel. A domain asks for a window,
// maps it, and gives it back when it unmaps.
//
//   IovaAllocator::Options o;
//   o.ranges = {*Range::FromBounds(0, 0xfee00000),            // from VFIO's
//               *Range::FromBounds(0xfef00000, 0x8000000000)};  // IOVA ranges
//   o.address_bits = 39;       // the device's DMA mask
//   o.page_size = 4096;        // the smallest IOMMU page size
//   absl::StatusOr<std::unique_ptr<IovaAllocator>> a = IovaAllocator::Create(o);
//   absl::StatusOr<Range> iova = (*a)->Allocate(len, /*alignment=*/2 << 20);
//   ... map, use, unmap ...
//   (*a)->Free(*iova);
//
// The usable space. The device's ranges (none = the whole 64-bit space) are
// merged where they overlap or touch, clipped below 2^address_bits, and
// trimmed inward to whole pages; the first page is dropped (a driver may read
// IOVA 0 as "no address"), and the last page of the 64-bit space is in no
// Range anyway. What is left, as disjoint ranges that never touch, is
// `usable()`. Allocate places windows only there; Reserve refuses anything
// outside it, so an IOVA the device cannot reach is refused before any
// kernel call.
//
// Placement: first fit by address. Allocate returns the lowest-addressed
// window that fits (deterministic, and it keeps the low space dense, which
// matters for devices with a narrow mask). The padding in front of an
// aligned window stays free.
//
// Complexity (n free extents, a allocations): Reserve, Free and Usable are
// O(log n + log a). Allocate keeps first fit by address but finds it
// through a second index of the free extents, by size class (the power of
// two below the length), each class in address order. A class whose every
// extent fits (its shortest length is at least length + alignment - page)
// answers with its first entry; only the classes that may also hold extents
// too short (for a page-aligned request, just the class of the request's
// length) are scanned, and only below the best answer so far. So Allocate
// is O(log n + m) plus a sweep of at most 64 classes, m the extents of those
// classes lying below the answer: m = n in the worst case (every free
// extent just too short or misaligned), cheap for the thousands of windows
// expected, and m = 0 whenever no near-miss sits below the answer. An
// exactly O(log n) first fit would need a tree augmented with each
// subtree's longest extent, which absl's B-trees cannot carry; a plain
// size-ordered index would give best fit, not the lowest address.
//
// Thread safety: every method may be called from any thread. One mutex
// guards the state; lock order: a leaf (held only for bookkeeping; no
// other lock is taken, and nothing calls out, under it).

#ifndef DMAREG_SRC_BASE_IOVA_ALLOCATOR_H_
#define DMAREG_SRC_BASE_IOVA_ALLOCATOR_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/mutex.h"
#include "dmareg/range.h"

namespace dmareg::internal {

class IovaAllocator {
 public:
  struct Options {
    // The device's usable IOVA ranges; empty = the whole 64-bit space.
    // (VFIO reports inclusive bounds: pass [start, last + 1), or
    // [start, UINT64_MAX) for a last of 2^64 - 1.)
    std::vector<Range> ranges;
    // The device's DMA addressing width: IOVAs lie below 2^address_bits.
    // 1..64; 64 = no limit.
    int address_bits = 64;
    // The IOMMU page: a power of two, at least 4096. With VFIO's bitmap of
    // page sizes, its lowest set bit.
    uint64_t page_size = 4096;
  };

  // InvalidArgument for a bad page size or address width, or when nothing
  // usable is left of the ranges.
  static absl::StatusOr<std::unique_ptr<IovaAllocator>> Create(Options options);

  IovaAllocator(const IovaAllocator&) = delete;
  IovaAllocator& operator=(const IovaAllocator&) = delete;

  // The lowest-addressed free window of `length` bytes rounded up to whole
  // pages, starting at a multiple of `alignment` (0 = the page size; else a
  // power of two >= the page size). InvalidArgument for a zero length or a
  // bad alignment; ResourceExhausted, naming the request, the free total
  // and the largest free extent, when nothing fits. Changes nothing on
  // failure.
  absl::StatusOr<Range> Allocate(uint64_t length, uint64_t alignment = 0) ABSL_LOCKS_EXCLUDED(mu_);

  // Takes exactly `iova` (an identity mapping, a caller-chosen IOVA).
  // InvalidArgument if it is empty or not whole pages, or, naming the usable
  // ranges and the mask, if it is not inside the usable space (an IOVA the
  // device cannot take); AlreadyExists, naming the allocation, if it
  // overlaps one.
  absl::Status Reserve(Range iova) ABSL_LOCKS_EXCLUDED(mu_);

  // Gives back exactly a range Allocate returned or Reserve took; free
  // neighbours merge. NotFound if it overlaps no allocation (never
  // allocated, or already freed); InvalidArgument, naming the allocation,
  // if it is part of one or spans more than one. Changes nothing on failure.
  absl::Status Free(Range iova) ABSL_LOCKS_EXCLUDED(mu_);

  // True if `iova` is non-empty and inside the usable space (whatever is
  // allocated there). Need not be page-aligned.
  bool Usable(Range iova) const;

  uint64_t free_bytes() const ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t allocated_bytes() const ABSL_LOCKS_EXCLUDED(mu_);
  size_t allocations() const ABSL_LOCKS_EXCLUDED(mu_);  // Allocate + Reserve, live
  // The free extents in address order; maximal (no two touch). Diagnostics.
  std::vector<Range> FreeExtents() const ABSL_LOCKS_EXCLUDED(mu_);
  // The usable space in address order: disjoint, page-aligned, never touching.
  std::vector<Range> usable() const { return usable_; }
  uint64_t page_size() const { return page_size_; }
  int address_bits() const { return address_bits_; }

 private:
  using ExtentMap = absl::btree_map<uint64_t, uint64_t>;  // begin -> end
  static constexpr int kClasses = 64;                     // class of a length: floor(log2)

  IovaAllocator(uint64_t page_size, int address_bits, std::vector<Range> usable);

  // Files / unfiles a free extent in free_ and its size class.
  void AddExtent(uint64_t begin, uint64_t end) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveExtent(uint64_t begin, uint64_t end) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes [begin, end) out of the free extent [fb, fe) that holds it.
  void Carve(uint64_t fb, uint64_t fe, uint64_t begin, uint64_t end)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The lowest-addressed allocation overlapping `r`, if any.
  const ExtentMap::value_type* FirstAllocationOverlapping(Range r) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string FreeSummary() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const uint64_t page_size_;
  const int address_bits_;
  const std::vector<Range> usable_;  // immutable: read without the lock

  // Lock order: a leaf. Held only for bookkeeping, never across a call out.
  mutable Mutex mu_;
  ExtentMap free_ ABSL_GUARDED_BY(mu_);
  // free_ again, split by size class, so Allocate skips classes too short.
  std::array<ExtentMap, kClasses> free_by_class_ ABSL_GUARDED_BY(mu_);
  uint64_t nonempty_classes_ ABSL_GUARDED_BY(mu_) = 0;  // bit k: class k
  ExtentMap allocated_ ABSL_GUARDED_BY(mu_);            // what Allocate and Reserve took
  uint64_t free_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t allocated_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_BASE_IOVA_ALLOCATOR_H_
