// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// dmabuf/drm_device.h: dma-bufs from a DRM device's dumb buffers, PRIME-exported
// through libdrm (vgem, or any KMS card); no CPU alias (component `dmabuf`).
//
//   auto card = dmareg::DrmDevice::Open();   // the first card, or a path
//   if (!card.ok()) return card.status();
//   absl::StatusOr<dmareg::DmaBuf> buf = card->Allocate(1 << 20);

#ifndef DMAREG_DMABUF_DRM_DEVICE_H_
#define DMAREG_DMABUF_DRM_DEVICE_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "dmareg/dmabuf/dmabuf.h"

#pragma GCC visibility push(default)

namespace dmareg {

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

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_DMABUF_DRM_DEVICE_H_
