// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/memory.h"

#include <cstdint>
#include <limits>

#include "absl/strings/str_format.h"

namespace dmareg {

absl::Status ValidateHostMemory(const HostMemory& m) {
  if (m.length == 0) return absl::InvalidArgumentError("host memory of zero length");
  if (m.addr == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrFormat("null host address with length %u", m.length));
  }
  const uintptr_t a = reinterpret_cast<uintptr_t>(m.addr);
  if (m.length > std::numeric_limits<uintptr_t>::max() - a) {
    return absl::InvalidArgumentError(
        absl::StrFormat("host range [%#x, +%#x) wraps around the address space", a, m.length));
  }
  if (m.iova && m.length > std::numeric_limits<uint64_t>::max() - *m.iova) {
    return absl::InvalidArgumentError(
        absl::StrFormat("host IOVA %#x + length %#x wraps around", *m.iova, m.length));
  }
  return absl::OkStatus();
}

absl::Status ValidateDmaBufMemory(const DmaBufMemory& m) {
  if (m.fd < 0) return absl::InvalidArgumentError(absl::StrFormat("bad dma-buf fd %d", m.fd));
  if (m.length == 0) return absl::InvalidArgumentError("dma-buf slice of zero length");
  if (m.length > std::numeric_limits<uint64_t>::max() - m.offset) {
    return absl::InvalidArgumentError(
        absl::StrFormat("dma-buf slice offset %#x + length %#x wraps around", m.offset, m.length));
  }
  if (m.iova && m.length > std::numeric_limits<uint64_t>::max() - *m.iova) {
    return absl::InvalidArgumentError(
        absl::StrFormat("dma-buf IOVA %#x + length %#x wraps around", *m.iova, m.length));
  }
  return absl::OkStatus();
}

}  // namespace dmareg
