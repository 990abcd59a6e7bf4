// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "base/aligned_mapping.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>

namespace dmareg::internal {

AlignedMapping::~AlignedMapping() {
  if (mapping_ != nullptr) munmap(mapping_, mapping_bytes_);
}

bool AlignedMapping::Map(size_t bytes, int prot, size_t align) {
  if (bytes > SIZE_MAX - align) return false;
  const size_t total = bytes + align;  // room to align
  void* p = mmap(nullptr, total, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return false;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  const uintptr_t start = (a + align - 1) & ~(uintptr_t{align} - 1);
  // Give back what alignment left over on either side (a large alignment
  // would otherwise keep twice the address space).
  const size_t page = 4096;
  const uintptr_t head_end = start & ~(page - 1);
  if (head_end > a) munmap(p, head_end - a);
  const uintptr_t end = (start + bytes + page - 1) & ~(page - 1);
  if (a + total > end) munmap(reinterpret_cast<void*>(end), a + total - end);
  mapping_ = reinterpret_cast<void*>(head_end);
  mapping_bytes_ = end - head_end;
  data_ = reinterpret_cast<void*>(start);
  return true;
}

}  // namespace dmareg::internal
