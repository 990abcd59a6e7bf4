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
// A buffer acquired many times is best imported once (ImportedDmaBuf below).
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

// A dma-buf imported once for many acquires: its identity and size read
// once (one fstat, at Import), and a descriptor of its own, so that
// acquiring slices of it costs no system call at all (acquiring by fd costs
// an fstat each time). One import serves every cache, on every NIC.
//
//   absl::StatusOr<dmareg::ImportedDmaBuf> buf = dmareg::ImportedDmaBuf::Import(fd);
//   if (!buf.ok()) return buf.status();       // not a dma-buf: says what it is
//   close(fd);                                // the import keeps its own
//   auto reg = cache->Acquire(*buf, /*offset=*/4096, /*length=*/8192,
//                             dmareg::Access::kRemoteWrite);
//
// Move-only; closes its descriptor when it goes (cached mappings stay: the
// kernel's MR holds its own reference on the buffer). Thread-safe to use
// from many threads at once (it does not change after Import).
class ImportedDmaBuf {
 public:
  // Inspects `fd` (InvalidArgument, naming what it is, if it is no
  // dma-buf) and keeps a close-on-exec duplicate. `alias`: a CPU mapping
  // of the buffer's byte 0 that a host registration can pin (see
  // DmaBufMemory::alias), or null. `inspect`: as CacheOptions::inspect_dmabuf.
  static absl::StatusOr<ImportedDmaBuf> Import(int fd, const void* alias = nullptr,
                                               const DmaBufInspector& inspect = {});
  ImportedDmaBuf(ImportedDmaBuf&& other) noexcept;
  ImportedDmaBuf& operator=(ImportedDmaBuf&& other) noexcept;
  ImportedDmaBuf(const ImportedDmaBuf&) = delete;
  ImportedDmaBuf& operator=(const ImportedDmaBuf&) = delete;
  ~ImportedDmaBuf();

  int fd() const { return fd_; }  // the import's own descriptor
  const DmaBufId& id() const { return info_.id; }
  uint64_t size() const { return info_.size; }
  const void* alias() const { return alias_; }

 private:
  ImportedDmaBuf(int fd, DmaBufInfo info, const void* alias)
      : fd_(fd), info_(info), alias_(alias) {}
  int fd_ = -1;
  DmaBufInfo info_;
  const void* alias_ = nullptr;
};

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_DMABUF_ID_H_
