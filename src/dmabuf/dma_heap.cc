// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/dmabuf/dma_heap.h"

#include <fcntl.h>
#include <linux/dma-heap.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "dmareg/dmabuf/dmabuf.h"
#include "dmareg/errno_status.h"

namespace dmareg {
namespace {

std::string HeapPath(const std::string& name) { return absl::StrCat("/dev/dma_heap/", name); }

}  // namespace

absl::StatusOr<DmaHeap> DmaHeap::Open(const std::string& name) {
  if (name.empty() || absl::StrContains(name, '/') || name == "." || name == "..") {
    return absl::InvalidArgumentError(
        absl::StrFormat("bad DMA-BUF heap name \"%s\" (a file name under /dev/dma_heap)", name));
  }
  const std::string path = HeapPath(name);
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return ErrnoStatus(
        err, "open", path,
        err == ENOENT ? "this kernel offers no such DMA-BUF heap (CONFIG_DMABUF_HEAPS_*)" : "");
  }
  return DmaHeap(fd, name);
}

DmaHeap::DmaHeap(DmaHeap&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), name_(std::move(other.name_)) {}

DmaHeap& DmaHeap::operator=(DmaHeap&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    name_ = std::move(other.name_);
  }
  return *this;
}

DmaHeap::~DmaHeap() {
  if (fd_ >= 0) close(fd_);
}

absl::StatusOr<DmaBuf> DmaHeap::Allocate(uint64_t size) {
  const std::string path = HeapPath(name_);
  if (size == 0) {
    return absl::InvalidArgumentError(absl::StrFormat("buffer of 0 bytes from %s", path));
  }
  dma_heap_allocation_data alloc{};
  alloc.len = size;
  alloc.fd_flags = O_RDWR | O_CLOEXEC;
  if (ioctl(fd_, DMA_HEAP_IOCTL_ALLOC, &alloc) != 0) {
    return ErrnoStatus(errno, "DMA_HEAP_IOCTL_ALLOC", path, absl::StrFormat("%u bytes", size));
  }
  // The heap rounds up to whole pages; the buffer says how large it is.
  const int fd = static_cast<int>(alloc.fd);
  const off_t end = lseek(fd, 0, SEEK_END);
  return DmaBuf(fd, end > 0 ? static_cast<uint64_t>(end) : size, absl::StrCat("heap ", name_));
}

}  // namespace dmareg
