// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "base/aligned_mapping.h"

#include <sys/mman.h>

#include <cstdint>

namespace dmareg::internal {

AlignedMapping::~AlignedMapping() {
  if (mapping_ != nullptr) munmap(mapping_, mapping_bytes_);
}

bool AlignedMapping::Map(size_t bytes, int prot) {
  const size_t total = bytes + kHugePage;  // room to align
  void* p = mmap(nullptr, total, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return false;
  mapping_ = p;
  mapping_bytes_ = total;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  data_ = reinterpret_cast<void*>((a + kHugePage - 1) & ~(kHugePage - 1));
  return true;
}

}  // namespace dmareg::internal
