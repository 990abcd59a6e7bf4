// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// memory.h: what can be turned into a device mapping.
//
// `HostMemory` is any range of the process's virtual address space
// ("external memory" in DPDK's sense: the library never allocated it).
// `DmaBufMemory` is a slice of a dma-buf: an fd exported by a GPU driver
// (CUDA, ROCm) or a DRM device (libdrm's PRIME export), an offset and a length.
//
//   dmareg::HostMemory host{buf, 1 << 20};
//   dmareg::DmaBufMemory gpu{.fd = dmabuf_fd, .offset = 0, .length = size};
//
// Both may name the IOVA the device should use for their first byte. A
// `Domain` honours it where its capabilities say `caller_iova`; the
// `RegistrationCache` picks IOVAs itself and refuses a request that names one.
//
// Validation (zero length, wrap-around, null with a length, negative fd) is
// done by `ValidateHostMemory()`/`ValidateDmaBufMemory()`; every entry point of
// the library calls them, so callers need not.

#ifndef DMAREG_MEMORY_H_
#define DMAREG_MEMORY_H_

#include <cstddef>
#include <cstdint>
#include <optional>

#include "absl/status/status.h"

#pragma GCC visibility push(default)

namespace dmareg {

struct HostMemory {
  const void* addr = nullptr;
  size_t length = 0;
  // The IOVA the device should use for `addr`; empty: the domain's choice
  // (verbs: the address itself).
  std::optional<uint64_t> iova = std::nullopt;
};

struct DmaBufMemory {
  int fd = -1;          // a dma-buf fd; the caller keeps ownership
  uint64_t offset = 0;  // byte offset into the dma-buf
  size_t length = 0;
  // The IOVA the device should use for the first byte; empty: `offset`
  // (what ibv_reg_dmabuf_mr does when asked for no particular address).
  std::optional<uint64_t> iova = std::nullopt;
  // A CPU mapping of the buffer's byte 0 through which a host registration
  // pins the very pages of the dma-buf (the memfd behind a udmabuf; a CUDA
  // pointer where nvidia-peermem lets ibv_reg_mr pin it); null: none. Not
  // every mapping qualifies: an mmap of the dma-buf fd itself is PFN-mapped
  // and cannot be pinned. The cache's fallback policy uses it
  // (`DmaBufPolicy`); the source that made the buffer says whether it has one.
  const void* alias = nullptr;
};

absl::Status ValidateHostMemory(const HostMemory& m);
absl::Status ValidateDmaBufMemory(const DmaBufMemory& m);

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_MEMORY_H_
