// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/testing/edu_device.h"

#include <sched.h>

#include <chrono>
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"

namespace dmareg::testing {
namespace {

constexpr uint64_t kIdent = 0x00;
constexpr uint64_t kLiveness = 0x04;
constexpr uint64_t kDmaSource = 0x80;
constexpr uint64_t kDmaDestination = 0x88;
constexpr uint64_t kDmaCount = 0x90;
constexpr uint64_t kDmaCommand = 0x98;
constexpr uint64_t kCommandStart = 1;
constexpr uint64_t kCommandToRam = 2;
constexpr uint16_t kPciCommandBusMaster = 1u << 2;
// qemu runs an edu transfer from a 100 ms virtual-time timer; under TCG on
// a loaded machine that can stretch, so the deadline is generous.
constexpr auto kTransferDeadline = std::chrono::seconds(20);

uint32_t Read32(const VfioRegionMap& bar, uint64_t off) {
  return *reinterpret_cast<volatile const uint32_t*>(static_cast<const char*>(bar.data()) + off);
}
void Write32(const VfioRegionMap& bar, uint64_t off, uint32_t v) {
  *reinterpret_cast<volatile uint32_t*>(static_cast<char*>(bar.data()) + off) = v;
}
uint64_t Read64(const VfioRegionMap& bar, uint64_t off) {
  return *reinterpret_cast<volatile const uint64_t*>(static_cast<const char*>(bar.data()) + off);
}
void Write64(const VfioRegionMap& bar, uint64_t off, uint64_t v) {
  *reinterpret_cast<volatile uint64_t*>(static_cast<char*>(bar.data()) + off) = v;
}

}  // namespace

absl::StatusOr<std::unique_ptr<EduDevice>> EduDevice::Open(std::shared_ptr<VfioDomain> domain) {
  if (domain == nullptr) return absl::InvalidArgumentError("EduDevice::Open: no domain");
  uint16_t ids[2] = {0, 0};
  if (absl::Status s = domain->ReadConfig(0, ids, sizeof ids); !s.ok()) return s;
  if (ids[0] != kVendor || ids[1] != kDevice) {
    return absl::FailedPreconditionError(
        absl::StrFormat("%s is %04x:%04x, not qemu's edu device (%04x:%04x)", domain->name(),
                        ids[0], ids[1], kVendor, kDevice));
  }
  uint16_t command = 0;
  if (absl::Status s = domain->ReadConfig(4, &command, sizeof command); !s.ok()) return s;
  command |= kPciCommandBusMaster;
  if (absl::Status s = domain->WriteConfig(4, &command, sizeof command); !s.ok()) return s;
  absl::StatusOr<VfioRegionMap> bar = domain->MapRegion(0);
  if (!bar.ok()) return bar.status();
  if (bar->size() < 0x100) {
    return absl::FailedPreconditionError(
        absl::StrFormat("%s: BAR0 holds %d bytes, too few for edu", domain->name(), bar->size()));
  }
  const uint32_t ident = Read32(*bar, kIdent);
  if ((ident & 0xff) != 0xed) {
    return absl::FailedPreconditionError(
        absl::StrFormat("%s: identification register 0x%08x is not edu's", domain->name(), ident));
  }
  Write32(*bar, kLiveness, 0x12345678);
  if (Read32(*bar, kLiveness) != ~0x12345678u) {
    return absl::FailedPreconditionError(
        absl::StrFormat("%s: liveness register does not answer", domain->name()));
  }
  return std::unique_ptr<EduDevice>(new EduDevice(std::move(domain), std::move(*bar), ident));
}

EduDevice::EduDevice(std::shared_ptr<VfioDomain> domain, VfioRegionMap bar, uint32_t ident)
    : domain_(std::move(domain)), bar_(std::move(bar)), ident_(ident) {}

absl::Status EduDevice::ToDevice(uint64_t iova, size_t length, size_t offset) {
  return Transfer(iova, kBufferAddress + offset, length, offset, /*to_ram=*/false);
}

absl::Status EduDevice::FromDevice(uint64_t iova, size_t length, size_t offset) {
  return Transfer(kBufferAddress + offset, iova, length, offset, /*to_ram=*/true);
}

absl::Status EduDevice::Transfer(uint64_t src, uint64_t dst, size_t length, size_t offset,
                                 bool to_ram) {
  if (length == 0 || offset >= kBufferSize || length > kBufferSize - offset - 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "edu transfer of %d bytes at buffer offset %d must end strictly inside its %d-byte buffer",
        length, offset, kBufferSize));
  }
  const uint64_t ram = to_ram ? dst : src;
  if (ram >> kDmaAddressBits != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "edu transfer: IOVA 0x%x is beyond the device's %d-bit DMA mask", ram, kDmaAddressBits));
  }
  if (Read64(bar_, kDmaCommand) & kCommandStart) {
    return absl::UnavailableError(absl::StrFormat("%s: a DMA is already running", domain_->name()));
  }
  Write64(bar_, kDmaSource, src);
  Write64(bar_, kDmaDestination, dst);
  Write64(bar_, kDmaCount, length);
  Write64(bar_, kDmaCommand, kCommandStart | (to_ram ? kCommandToRam : 0));
  // Poll the device's busy bit, as a driver without interrupts does.
  const auto deadline = std::chrono::steady_clock::now() + kTransferDeadline;
  while (Read64(bar_, kDmaCommand) & kCommandStart) {
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::DeadlineExceededError(absl::StrFormat(
          "%s: DMA of %d bytes 0x%x -> 0x%x did not finish", domain_->name(), length, src, dst));
    }
    sched_yield();
  }
  return absl::OkStatus();
}

}  // namespace dmareg::testing
