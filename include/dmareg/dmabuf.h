// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// dmabuf.h: dma-bufs from the kernel's exporters (component `dmabuf`).
//
// Each source is a small class that opens its device once and allocates
// buffers from it; a buffer is a `DmaBuf`: an owned dma-buf fd, its size and,
// where the source has one, a CPU alias through which a host registration
// pins the buffer's own pages (the cache's fallback, `DmaBufPolicy`).
//
//   DRM dumb buffers (libdrm; vgem or any KMS card)   DrmDevice     no alias
//   udmabuf over a sealed memfd (/dev/udmabuf)         UdmabufDevice the memfd
//   DMA-BUF heaps (/dev/dma_heap/NAME)                 DmaHeap       no alias
//   CUDA device memory (libcuda at run time)           cuda.h
//
//   absl::StatusOr<dmareg::UdmabufDevice> dev = dmareg::UdmabufDevice::Open();
//   if (!dev.ok()) return dev.status();   // e.g. no /dev/udmabuf: says so
//   absl::StatusOr<dmareg::DmaBuf> buf = dev->Allocate(1 << 20);
//   auto reg = cache->Acquire(buf->Slice(0, 4096), dmareg::Access::kLocalWrite);
//
// `DmaBufMapping` maps a dma-buf's own fd for the CPU, with the
// DMA_BUF_IOCTL_SYNC brackets that keep caches coherent with a device.

#ifndef DMAREG_DMABUF_H_
#define DMAREG_DMABUF_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dmareg/memory.h"

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

// Dumb buffers of a DRM device, PRIME-exported (libdrm).
class DrmDevice {
 public:
  // "/dev/dri/card0". NotFound / PermissionDenied, or FailedPrecondition
  // when the file is not a DRM device, naming the card. (vgem makes dumb
  // buffers without reporting DRM_CAP_DUMB_BUFFER, so a driver without them
  // is found by Allocate, also as FailedPrecondition.)
  static absl::StatusOr<DrmDevice> Open(const std::string& card);
  DrmDevice(DrmDevice&& other) noexcept;
  DrmDevice& operator=(DrmDevice&& other) noexcept;
  DrmDevice(const DrmDevice&) = delete;
  DrmDevice& operator=(const DrmDevice&) = delete;
  ~DrmDevice();

  const std::string& card() const { return card_; }
  const std::string& driver() const { return driver_; }  // "vgem"
  // A dumb buffer of at least `size` bytes (rounded to the driver's pitch),
  // exported read-write. No alias (its CPU mapping is PFN-mapped).
  absl::StatusOr<DmaBuf> Allocate(uint64_t size);

 private:
  DrmDevice(int fd, std::string card, std::string driver)
      : fd_(fd), card_(std::move(card)), driver_(std::move(driver)) {}
  int fd_ = -1;
  std::string card_;
  std::string driver_;
};

// udmabuf: a dma-buf over a sealed memfd's pages. The memfd's own shared
// mapping is the alias.
class UdmabufDevice {
 public:
  // Opens /dev/udmabuf (or `path`). NotFound when the kernel has none
  // (CONFIG_UDMABUF), PermissionDenied where it may not be opened.
  static absl::StatusOr<UdmabufDevice> Open(const std::string& path = "/dev/udmabuf");
  UdmabufDevice(UdmabufDevice&& other) noexcept;
  UdmabufDevice& operator=(UdmabufDevice&& other) noexcept;
  UdmabufDevice(const UdmabufDevice&) = delete;
  UdmabufDevice& operator=(const UdmabufDevice&) = delete;
  ~UdmabufDevice();

  // `size` a multiple of the page size (InvalidArgument otherwise).
  absl::StatusOr<DmaBuf> Allocate(uint64_t size);

 private:
  explicit UdmabufDevice(int fd) : fd_(fd) {}
  int fd_ = -1;
};

// A DMA-BUF heap (/dev/dma_heap/NAME): "system" is the common one.
class DmaHeap {
 public:
  static absl::StatusOr<DmaHeap> Open(const std::string& name = "system");
  DmaHeap(DmaHeap&& other) noexcept;
  DmaHeap& operator=(DmaHeap&& other) noexcept;
  DmaHeap(const DmaHeap&) = delete;
  DmaHeap& operator=(const DmaHeap&) = delete;
  ~DmaHeap();

  const std::string& name() const { return name_; }
  absl::StatusOr<DmaBuf> Allocate(uint64_t size);

 private:
  DmaHeap(int fd, std::string name) : fd_(fd), name_(std::move(name)) {}
  int fd_ = -1;
  std::string name_;
};

// What this machine offers to make dma-bufs from, for `dmareg devices`.
struct DmaBufSources {
  struct Drm {
    std::string card;    // /dev/dri/cardN
    std::string driver;  // drmGetVersion's name, "" if it could not be read
  };
  std::vector<Drm> drm_cards;
  bool udmabuf = false;            // /dev/udmabuf can be opened
  std::vector<std::string> heaps;  // names under /dev/dma_heap
  bool cuda = false;               // libcuda loads and has the dma-buf export
  std::string cuda_detail;         // why not, or the driver version
};
DmaBufSources ProbeDmaBufSources();

}  // namespace dmareg

#endif  // DMAREG_DMABUF_H_
