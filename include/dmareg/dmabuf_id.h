// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// dmabuf_id.h: what a dma-buf is, independently of the fd that names it.
//
// An fd number is not an identity: two fds (dup, another process's SCM_RIGHTS,
// a second export) may name one buffer, and a closed fd's number is handed to
// the next open. A dma-buf's identity is its file: the device and inode of the
// dma-buf pseudo file system (`fstat`). Since Linux 5.18 those inode numbers
// come from a 64-bit counter and are never reused, so an identity names one
// buffer for the life of the system (`DmaBufIdsUnique()`); on older kernels
// an inode may come back and the cache registers dma-bufs per request.
//
//   absl::StatusOr<dmareg::DmaBufInfo> info = dmareg::InspectDmaBuf(fd);
//   if (!info.ok()) return info.status();   // not a dma-buf: says what it is
//   printf("%s, %llu bytes\n", info->id.ToString().c_str(),
//          (unsigned long long)info->size);

#ifndef DMAREG_DMABUF_ID_H_
#define DMAREG_DMABUF_ID_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"

#pragma GCC visibility push(default)

namespace dmareg {

struct DmaBufId {
  uint64_t dev = 0;  // st_dev of the dma-buf file system
  uint64_t ino = 0;  // st_ino: one per buffer

  friend bool operator==(const DmaBufId&, const DmaBufId&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const DmaBufId& id) {
    return H::combine(std::move(h), id.dev, id.ino);
  }
  // "dmabuf:DEV:INO".
  std::string ToString() const;
};

struct DmaBufInfo {
  DmaBufId id{};
  uint64_t size = 0;  // bytes in the buffer
};

// The identity and size of the dma-buf `fd` names. InvalidArgument, naming
// what the fd is instead (not open, a pipe, a regular file, a socket, another
// anonymous inode...), when it is not a dma-buf. One fstat per call (and one
// fstatfs the first time a file system is seen).
absl::StatusOr<DmaBufInfo> InspectDmaBuf(int fd);

// True where the running kernel never reuses a dma-buf's inode number (Linux
// 5.18 and later). Read once.
bool DmaBufIdsUnique();
// The same decision from a kernel release string ("6.1.0-25-amd64").
bool DmaBufIdsUniqueOnRelease(const std::string& release);

// How a cache tells dma-bufs apart (CacheOptions::inspect_dmabuf). The
// default is InspectDmaBuf; tests substitute fds of their own
// (testing::FakeDmaBufs).
using DmaBufInspector = std::function<absl::StatusOr<DmaBufInfo>(int fd)>;

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_DMABUF_ID_H_
