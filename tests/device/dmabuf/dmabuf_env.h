// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// What the dma-buf device tests share: the sources the VM harness reports
// (DMAREG_DRM_CARD, DMAREG_UDMABUF, DMAREG_DMA_HEAP; empty where the booted
// kernel has none), open fds counted, and a dma-buf's bytes read and
// written through its own mmap inside the sync brackets.
//
//   int fds = dmabuf_test::OpenFds();
//   dmabuf_test::FillThroughMapping(buf.fd(), buf.size(), /*seed=*/3);
//   EXPECT_EQ(dmabuf_test::MismatchThroughMapping(buf.fd(), buf.size(), 3), -1);

#ifndef DMAREG_TESTS_DEVICE_DMABUF_DMABUF_ENV_H_
#define DMAREG_TESTS_DEVICE_DMABUF_DMABUF_ENV_H_

#include <filesystem>
#include <string>

#include "common/test_memory.h"
#include "dmareg/dmabuf/dmabuf.h"
#include "gtest/gtest.h"

namespace dmareg::dmabuf_test {

inline int OpenFds() {
  int n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

// Writes pattern `seed` over the whole buffer through DmaBufMapping.
inline void FillThroughMapping(int fd, uint64_t size, uint32_t seed) {
  absl::StatusOr<DmaBufMapping> m = DmaBufMapping::Map(fd, size, /*writable=*/true);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE(m->BeginCpuAccess(true).ok());
  test::FillPattern(m->data(), size, seed);
  ASSERT_TRUE(m->EndCpuAccess(true).ok());
}

// First byte [offset, offset + n) that differs from pattern `seed` (indexed
// from the buffer's byte 0), read through DmaBufMapping; -1 if none, -2 if
// the buffer could not be mapped.
inline ptrdiff_t MismatchThroughMapping(int fd, uint64_t size, uint32_t seed, size_t offset = 0,
                                        size_t n = 0) {
  absl::StatusOr<DmaBufMapping> m = DmaBufMapping::Map(fd, size, /*writable=*/false);
  if (!m.ok() || !m->BeginCpuAccess(false).ok()) return -2;
  const ptrdiff_t r =
      test::FindMismatch(m->data() + offset, n == 0 ? size - offset : n, seed, offset);
  if (!m->EndCpuAccess(false).ok()) return -2;
  return r;
}

}  // namespace dmareg::dmabuf_test

#endif  // DMAREG_TESTS_DEVICE_DMABUF_DMABUF_ENV_H_
