// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/dmabuf/dmabuf.h"

#include <linux/dma-buf.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "absl/strings/str_format.h"
#include "dmareg/errno_status.h"

namespace dmareg {

DmaBuf::DmaBuf(int fd, uint64_t size, std::string source, void* alias, size_t alias_length,
               int alias_fd)
    : fd_(fd),
      size_(size),
      source_(std::move(source)),
      alias_(alias),
      alias_length_(alias_length),
      alias_fd_(alias_fd) {}

DmaBuf::DmaBuf(DmaBuf&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      size_(std::exchange(other.size_, 0)),
      source_(std::move(other.source_)),
      alias_(std::exchange(other.alias_, nullptr)),
      alias_length_(std::exchange(other.alias_length_, 0)),
      alias_fd_(std::exchange(other.alias_fd_, -1)) {}

DmaBuf& DmaBuf::operator=(DmaBuf&& other) noexcept {
  if (this != &other) {
    Reset();
    fd_ = std::exchange(other.fd_, -1);
    size_ = std::exchange(other.size_, 0);
    source_ = std::move(other.source_);
    alias_ = std::exchange(other.alias_, nullptr);
    alias_length_ = std::exchange(other.alias_length_, 0);
    alias_fd_ = std::exchange(other.alias_fd_, -1);
  }
  return *this;
}

DmaBuf::~DmaBuf() { Reset(); }

void DmaBuf::Reset() {
  if (alias_ != nullptr) munmap(alias_, alias_length_);
  if (alias_fd_ >= 0) close(alias_fd_);
  if (fd_ >= 0) close(fd_);
  alias_ = nullptr;
  alias_length_ = 0;
  alias_fd_ = -1;
  fd_ = -1;
  size_ = 0;
}

DmaBufMemory DmaBuf::Slice(uint64_t offset, size_t length) const {
  return DmaBufMemory{.fd = fd_, .offset = offset, .length = length, .alias = alias_};
}

int DmaBuf::ReleaseFd() { return std::exchange(fd_, -1); }

absl::StatusOr<DmaBufMapping> DmaBufMapping::Map(int fd, uint64_t size, bool writable) {
  const std::string what = absl::StrFormat("dma-buf fd %d", fd);
  if (fd < 0 || size == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("mmap of %s: bad fd or zero size (%u bytes)", what, size));
  }
  const int prot = PROT_READ | (writable ? PROT_WRITE : 0);
  void* p = mmap(nullptr, size, prot, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    return ErrnoStatus(errno, "mmap", what, absl::StrFormat("%u bytes", size));
  }
  return DmaBufMapping(fd, static_cast<uint8_t*>(p), size);
}

DmaBufMapping::DmaBufMapping(DmaBufMapping&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

DmaBufMapping& DmaBufMapping::operator=(DmaBufMapping&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) munmap(data_, size_);
    fd_ = std::exchange(other.fd_, -1);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

DmaBufMapping::~DmaBufMapping() {
  if (data_ != nullptr) munmap(data_, size_);
}

namespace {

absl::Status Sync(int fd, uint64_t flags, const char* phase) {
  dma_buf_sync sync{.flags = flags};
  int r;
  do {
    r = ioctl(fd, DMA_BUF_IOCTL_SYNC, &sync);
  } while (r != 0 && (errno == EINTR || errno == EAGAIN));
  if (r != 0) {
    return ErrnoStatus(errno, "DMA_BUF_IOCTL_SYNC", absl::StrFormat("dma-buf fd %d", fd), phase);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status DmaBufMapping::BeginCpuAccess(bool write) {
  return Sync(fd_, DMA_BUF_SYNC_START | (write ? DMA_BUF_SYNC_RW : DMA_BUF_SYNC_READ), "start");
}

absl::Status DmaBufMapping::EndCpuAccess(bool write) {
  return Sync(fd_, DMA_BUF_SYNC_END | (write ? DMA_BUF_SYNC_RW : DMA_BUF_SYNC_READ), "end");
}

}  // namespace dmareg
