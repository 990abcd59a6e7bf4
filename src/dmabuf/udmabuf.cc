// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/dmabuf/udmabuf.h"

#include <fcntl.h>
#include <linux/udmabuf.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <limits>
#include <utility>

#include "absl/strings/str_format.h"
#include "dmareg/dmabuf/dmabuf.h"
#include "dmareg/errno_status.h"

namespace dmareg {
namespace {

// Closes an fd on every early return.
struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) close(fd);
  }
};

}  // namespace

absl::StatusOr<UdmabufDevice> UdmabufDevice::Open(const std::string& path) {
  const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return ErrnoStatus(
        err, "open", path,
        err == ENOENT ? "this kernel offers no udmabuf (CONFIG_UDMABUF, module udmabuf)" : "");
  }
  return UdmabufDevice(fd);
}

UdmabufDevice::UdmabufDevice(UdmabufDevice&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}

UdmabufDevice& UdmabufDevice::operator=(UdmabufDevice&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

UdmabufDevice::~UdmabufDevice() {
  if (fd_ >= 0) close(fd_);
}

absl::StatusOr<DmaBuf> UdmabufDevice::Allocate(uint64_t size) {
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  if (size == 0 || size % page != 0 ||
      size > static_cast<uint64_t>(std::numeric_limits<off_t>::max())) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "udmabuf of %u bytes: the size must be a non-zero multiple of the page size (%u)", size,
        page));
  }
  const std::string bytes = absl::StrFormat("%u bytes", size);
  FdCloser memfd{memfd_create("dmareg-udmabuf", MFD_ALLOW_SEALING | MFD_CLOEXEC)};
  if (memfd.fd < 0) return ErrnoStatus(errno, "memfd_create", "udmabuf", bytes);
  if (ftruncate(memfd.fd, static_cast<off_t>(size)) != 0) {
    return ErrnoStatus(errno, "ftruncate of the memfd", "udmabuf", bytes);
  }
  if (fcntl(memfd.fd, F_ADD_SEALS, F_SEAL_SHRINK) != 0) {
    return ErrnoStatus(errno, "fcntl(F_ADD_SEALS, F_SEAL_SHRINK)", "udmabuf", bytes);
  }
  udmabuf_create create{};
  create.memfd = static_cast<uint32_t>(memfd.fd);
  create.flags = UDMABUF_FLAGS_CLOEXEC;
  create.offset = 0;
  create.size = size;
  const int dmabuf = ioctl(fd_, UDMABUF_CREATE, &create);
  if (dmabuf < 0) {
    const int err = errno;
    return ErrnoStatus(err, "UDMABUF_CREATE", "/dev/udmabuf",
                       err == EINVAL || err == E2BIG
                           ? absl::StrFormat("%s (over the module's size_limit_mb?)", bytes)
                           : bytes);
  }
  // The memfd's own shared mapping: the same pages, pinnable by ibv_reg_mr.
  void* alias = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd.fd, 0);
  if (alias == MAP_FAILED) {
    const int err = errno;
    close(dmabuf);
    return ErrnoStatus(err, "mmap of the memfd", "udmabuf", bytes);
  }
  // The mapping keeps the memfd's pages; the memfd itself is not needed.
  return DmaBuf(dmabuf, size, "udmabuf", alias, size);
}

}  // namespace dmareg
