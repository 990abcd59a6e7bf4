// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// dmabuf/dmabuf.h: an owned dma-buf and a CPU mapping of one (component `dmabuf`).
//
// Each source is a small class that opens its device once and allocates
// buffers from it; a buffer is a `DmaBuf`: an owned dma-buf fd, its size and,
// where the source has one, a CPU alias through which a host registration
// pins the buffer's own pages (the cache's fallback, `DmaBufPolicy`).
//
//   DRM dumb buffers (libdrm; vgem or any KMS card)   DrmDevice      drm_device.h     no alias
//   udmabuf over a sealed memfd (/dev/udmabuf)         UdmabufDevice  udmabuf.h        the memfd
//   DMA-BUF heaps (/dev/dma_heap/NAME)                 DmaHeap        dma_heap.h       no alias
//   CUDA device memory (libcuda at run time)           CudaDmaBufExporter cuda_exporter.h
//
//   absl::StatusOr<dmareg::UdmabufDevice> dev = dmareg::UdmabufDevice::Open();
//   if (!dev.ok()) return dev.status();   // e.g. no /dev/udmabuf: says so
//   absl::StatusOr<dmareg::DmaBuf> buf = dev->Allocate(1 << 20);
//   auto reg = cache->Acquire(buf->Slice(0, 4096), dmareg::Access::kLocalWrite);
//
// `DmaBufMapping` maps a dma-buf's own fd for the CPU, with the
// DMA_BUF_IOCTL_SYNC brackets that keep caches coherent with a device.

#ifndef DMAREG_DMABUF_DMABUF_H_
#define DMAREG_DMABUF_DMABUF_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dmareg/memory.h"

#pragma GCC visibility push(default)

namespace dmareg {

// An owned dma-buf. Move-only; closes its fd (and unmaps its alias) when it
// goes. Mappings registered from it stay valid: the kernel's MR holds its own
// reference on the buffer.
class DmaBuf {
 public:
  DmaBuf() = default;
  // Takes `fd`; `alias` (may be null) is unmapped with munmap(alias,
  // alias_length) when the DmaBuf goes; `alias_fd` (may be -1) closed.
  DmaBuf(int fd, uint64_t size, std::string source, void* alias = nullptr, size_t alias_length = 0,
         int alias_fd = -1);
  DmaBuf(DmaBuf&& other) noexcept;
  DmaBuf& operator=(DmaBuf&& other) noexcept;
  DmaBuf(const DmaBuf&) = delete;
  DmaBuf& operator=(const DmaBuf&) = delete;
  ~DmaBuf();

  bool valid() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  uint64_t size() const { return size_; }
  // Null where the source has none.
  void* alias() const { return alias_; }
  // "vgem (/dev/dri/card0)", "udmabuf", "heap system", "cuda".
  const std::string& source() const { return source_; }

  // The descriptor of bytes [offset, offset + length) (fd, alias included).
  DmaBufMemory Slice(uint64_t offset, size_t length) const;
  DmaBufMemory All() const { return Slice(0, size_); }

  // Gives up ownership of the fd (the alias stays owned); -1 afterwards.
  int ReleaseFd();

 private:
  void Reset();
  int fd_ = -1;
  uint64_t size_ = 0;
  std::string source_;
  void* alias_ = nullptr;
  size_t alias_length_ = 0;
  int alias_fd_ = -1;
};

// A CPU mapping of a dma-buf through its own fd (PROT_READ, plus PROT_WRITE
// if asked). Move-only; unmapped when it goes.
class DmaBufMapping {
 public:
  static absl::StatusOr<DmaBufMapping> Map(int fd, uint64_t size, bool writable);
  DmaBufMapping(DmaBufMapping&& other) noexcept;
  DmaBufMapping& operator=(DmaBufMapping&& other) noexcept;
  DmaBufMapping(const DmaBufMapping&) = delete;
  DmaBufMapping& operator=(const DmaBufMapping&) = delete;
  ~DmaBufMapping();

  uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  // DMA_BUF_IOCTL_SYNC START / END, for reading (and writing, if `write`).
  absl::Status BeginCpuAccess(bool write);
  absl::Status EndCpuAccess(bool write);

 private:
  DmaBufMapping(int fd, uint8_t* data, uint64_t size) : fd_(fd), data_(data), size_(size) {}
  int fd_ = -1;  // not owned
  uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_DMABUF_DMABUF_H_
