// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// dmabuf/udmabuf.h: dma-bufs over a sealed memfd's pages (/dev/udmabuf); the
// memfd's own shared mapping is the CPU alias (component `dmabuf`).
//
//   absl::StatusOr<dmareg::UdmabufDevice> dev = dmareg::UdmabufDevice::Open();
//   if (!dev.ok()) return dev.status();   // e.g. no /dev/udmabuf: says so
//   absl::StatusOr<dmareg::DmaBuf> buf = dev->Allocate(1 << 20);

#ifndef DMAREG_DMABUF_UDMABUF_H_
#define DMAREG_DMABUF_UDMABUF_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "dmareg/dmabuf/dmabuf.h"

#pragma GCC visibility push(default)

namespace dmareg {

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

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_DMABUF_UDMABUF_H_
