// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// AlignedMapping: an anonymous private mapping whose usable start is aligned
// to a huge page, so that transparent huge pages can back the large arrays
// the hit path reads at random (the hash index, the region pool). Owns the
// mapping; unmaps it when destroyed. MAP_NORESERVE: nothing is committed
// until touched (or, for PROT_NONE, until made writable).

#ifndef DMAREG_SRC_BASE_ALIGNED_MAPPING_H_
#define DMAREG_SRC_BASE_ALIGNED_MAPPING_H_

#include <cstddef>

namespace dmareg::internal {

inline constexpr size_t kHugePage = size_t{2} << 20;

class AlignedMapping {
 public:
  AlignedMapping() = default;
  ~AlignedMapping();
  AlignedMapping(const AlignedMapping&) = delete;
  AlignedMapping& operator=(const AlignedMapping&) = delete;

  // Maps `bytes` usable bytes with protection `prot`, the usable start a
  // multiple of `align` (a power of two); false if mmap refuses (this object
  // then stays empty). Call at most once.
  bool Map(size_t bytes, int prot, size_t align = kHugePage);

  // The aligned start; null when empty.
  void* data() const { return data_; }

 private:
  void* mapping_ = nullptr;
  size_t mapping_bytes_ = 0;
  void* data_ = nullptr;
};

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_BASE_ALIGNED_MAPPING_H_
