// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/dmabuf/drm_device.h"

#include <drm.h>
#include <drm_mode.h>
#include <fcntl.h>
#include <unistd.h>
#include <xf86drm.h>

#include <cerrno>
#include <cstdint>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "dmareg/dmabuf/dmabuf.h"
#include "dmareg/errno_status.h"

namespace dmareg {
namespace {

// Dumb buffers are WIDTH x height pixels of 4 bytes: one page per row.
constexpr uint32_t kWidth = 1024;
constexpr uint32_t kBpp = 32;
constexpr uint64_t kPitch = kWidth * (kBpp / 8);

}  // namespace

absl::StatusOr<DrmDevice> DrmDevice::Open(const std::string& card) {
  const int fd = open(card.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "open", card, "a DRM card");
  // drmGetVersion answers on every DRM node and nothing else. (Dumb
  // buffers are not asked about: vgem has them without DRM_CAP_DUMB_BUFFER.)
  drmVersionPtr v = drmGetVersion(fd);
  if (v == nullptr) {
    const int err = errno;
    close(fd);
    return absl::FailedPreconditionError(
        absl::StrFormat("%s is not a DRM device (drmGetVersion: %s)", card, ErrnoName(err)));
  }
  std::string driver(v->name, v->name_len);
  drmFreeVersion(v);
  return DrmDevice(fd, card, std::move(driver));
}

DrmDevice::DrmDevice(DrmDevice&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      card_(std::move(other.card_)),
      driver_(std::move(other.driver_)) {}

DrmDevice& DrmDevice::operator=(DrmDevice&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    card_ = std::move(other.card_);
    driver_ = std::move(other.driver_);
  }
  return *this;
}

DrmDevice::~DrmDevice() {
  if (fd_ >= 0) close(fd_);
}

absl::StatusOr<DmaBuf> DrmDevice::Allocate(uint64_t size) {
  const uint64_t rows = size / kPitch + (size % kPitch != 0);
  if (size == 0 || rows > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("dumb buffer of %u bytes on %s: size must be 1 to %u bytes", size, card_,
                        kPitch * std::numeric_limits<uint32_t>::max()));
  }
  drm_mode_create_dumb create{};
  create.width = kWidth;
  create.height = static_cast<uint32_t>(rows);
  create.bpp = kBpp;
  const std::string bytes = absl::StrFormat("%u bytes", size);
  if (drmIoctl(fd_, DRM_IOCTL_MODE_CREATE_DUMB, &create) != 0) {
    const int err = errno;
    if (err == EOPNOTSUPP || err == ENOSYS) {
      return absl::FailedPreconditionError(
          absl::StrFormat("DRM card %s (driver %s) offers no dumb buffers: "
                          "DRM_IOCTL_MODE_CREATE_DUMB: %s, %s",
                          card_, driver_, ErrnoName(err), bytes));
    }
    return ErrnoStatus(err, "DRM_IOCTL_MODE_CREATE_DUMB", card_, bytes);
  }
  int dmabuf = -1;
  const int r = drmPrimeHandleToFD(fd_, create.handle, DRM_CLOEXEC | DRM_RDWR, &dmabuf);
  const int err = errno;
  // The dma-buf holds the buffer now; the GEM handle is not needed either way.
  drm_gem_close gem_close{};
  gem_close.handle = create.handle;
  drmIoctl(fd_, DRM_IOCTL_GEM_CLOSE, &gem_close);
  if (r != 0) return ErrnoStatus(err, "drmPrimeHandleToFD", card_, bytes);
  return DmaBuf(dmabuf, create.size, absl::StrCat(driver_, " (", card_, ")"));
}

}  // namespace dmareg
