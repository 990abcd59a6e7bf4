// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// testing/edu_device.h: a driver for qemu's `edu` PCI device (1234:11e8), the DMA
// engine the VFIO tests and examples use to prove that an IOMMU mapping
// points at the right host pages: the device itself copies RAM -> its
// buffer -> RAM through IOVAs, and the bytes are compared.
//
//   auto domain = dmareg::VfioDomain::Open("0000:00:10.0",
//       {.dma_address_bits = dmareg::testing::EduDevice::kDmaAddressBits}).value();
//   auto edu = dmareg::testing::EduDevice::Open(domain).value();
//   ... map `src` at IOVA a and `dst` at IOVA b through dmareg ...
//   absl::Status s = edu->ToDevice(a, 2048);     // RAM -> edu buffer
//   s.Update(edu->FromDevice(b, 2048));          // edu buffer -> RAM
//
// The device: BAR0 0x00 identification (0x010000ed), 0x04 liveness (reads
// back the bitwise NOT), 0x80/0x88/0x90/0x98 DMA source, destination, count
// and command (bit 0 start/busy, bit 1 device -> RAM). Its buffer sits at
// device address 0x40000 and holds 4 KiB; its DMA mask is 28 bits (qemu
// silently clamps wider addresses). qemu 7.2 aborts the whole VM on a
// transfer ending exactly at the buffer's end, so transfers here must end
// strictly inside it: that is checked before the device is touched.
//
// Not thread-safe: one transfer at a time per device.
#ifndef DMAREG_TESTING_EDU_DEVICE_H_
#define DMAREG_TESTING_EDU_DEVICE_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dmareg/vfio/vfio_domain.h"

#pragma GCC visibility push(default)

namespace dmareg::testing {

class EduDevice {
 public:
  static constexpr uint32_t kVendor = 0x1234;
  static constexpr uint32_t kDevice = 0x11e8;
  static constexpr int kDmaAddressBits = 28;
  static constexpr uint64_t kBufferAddress = 0x40000;
  static constexpr size_t kBufferSize = 4096;
  // The longest transfer starting at buffer offset 0 (see above).
  static constexpr size_t kMaxTransfer = kBufferSize - 1;

  // Enables bus mastering, maps BAR0 and checks the identification and
  // liveness registers. `domain` must stay attached while transfers run.
  static absl::StatusOr<std::unique_ptr<EduDevice>> Open(std::shared_ptr<VfioDomain> domain);

  // RAM at `iova` -> the device's buffer at `offset` (length bytes).
  absl::Status ToDevice(uint64_t iova, size_t length, size_t offset = 0);
  // The device's buffer at `offset` -> RAM at `iova`.
  absl::Status FromDevice(uint64_t iova, size_t length, size_t offset = 0);

  uint32_t ident() const { return ident_; }
  const std::shared_ptr<VfioDomain>& domain() const { return domain_; }

 private:
  EduDevice(std::shared_ptr<VfioDomain> domain, VfioRegionMap bar, uint32_t ident);
  absl::Status Transfer(uint64_t src, uint64_t dst, size_t length, size_t offset, bool to_ram);

  std::shared_ptr<VfioDomain> domain_;
  VfioRegionMap bar_;
  uint32_t ident_;
};

}  // namespace dmareg::testing

#pragma GCC visibility pop

#endif  // DMAREG_TESTING_EDU_DEVICE_H_
