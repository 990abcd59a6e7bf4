// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "vfio/pci_sysfs.h"

#include <algorithm>
#include <cerrno>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "dmareg/errno_status.h"

namespace dmareg {
namespace {

bool IsLowerHex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

}  // namespace

absl::Status ValidatePciAddress(std::string_view a) {
  // DDDD:BB:DD.F
  bool ok = a.size() == 12 && a[4] == ':' && a[7] == ':' && a[10] == '.';
  for (size_t i : {0, 1, 2, 3, 5, 6, 8, 9}) ok = ok && IsLowerHex(a[i]);
  ok = ok && a[11] >= '0' && a[11] <= '7' && a[8] <= '1';  // device < 0x20, function < 8
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "\"", absl::string_view(a.data(), a.size()),
      "\" is not a PCI address: want DDDD:BB:DD.F in lowercase hex, e.g. 0000:00:03.0"));
}

namespace internal {
namespace {

constexpr const char* kDevices = "/sys/bus/pci/devices";

absl::string_view Basename(absl::string_view path) {
  const size_t slash = path.rfind('/');
  return slash == absl::string_view::npos ? path : path.substr(slash + 1);
}

// A sysfs ID attribute ("0x1234\n"); 0 when it cannot be read.
uint16_t ReadId(VfioOps& ops, absl::string_view address, absl::string_view attribute) {
  std::string text;
  uint32_t id = 0;
  if (ops.ReadFile(absl::StrCat(PciDevicePath(address), "/", attribute), &text) != 0 ||
      !absl::SimpleHexAtoi(absl::StripAsciiWhitespace(text), &id) || id > 0xffff) {
    return 0;
  }
  return static_cast<uint16_t>(id);
}

}  // namespace

std::string PciDevicePath(absl::string_view address) {
  return absl::StrCat(kDevices, "/", address);
}

absl::StatusOr<std::string> ReadPciDriver(VfioOps& ops, absl::string_view address) {
  std::string target;
  const std::string link = PciDevicePath(address) + "/driver";
  const int err = ops.ReadLink(link, &target);
  if (err == ENOENT) return std::string();
  if (err != 0) return ErrnoStatus(err, "readlink", link);
  return std::string(Basename(target));
}

absl::StatusOr<int> ReadIommuGroup(VfioOps& ops, absl::string_view address) {
  std::string target;
  const std::string link = PciDevicePath(address) + "/iommu_group";
  const int err = ops.ReadLink(link, &target);
  if (err == ENOENT) {
    return absl::FailedPreconditionError(
        absl::StrCat("PCI device ", address,
                     " has no IOMMU group: is the IOMMU on (intel_iommu=on / amd_iommu=on)?"));
  }
  if (err != 0) return ErrnoStatus(err, "readlink", link);
  int group = -1;
  if (!absl::SimpleAtoi(Basename(target), &group) || group < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(link, " points at \"", target, "\", not an IOMMU group"));
  }
  return group;
}

absl::StatusOr<std::vector<VfioDeviceInfo>> ListVfioPciDevices(VfioOps& ops) {
  std::vector<std::string> names;
  std::vector<VfioDeviceInfo> out;
  const int err = ops.ListDir(kDevices, &names);
  if (err == ENOENT) return out;  // no PCI bus
  if (err != 0) return ErrnoStatus(err, "opendir", kDevices);
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    if (!ValidatePciAddress(name).ok()) continue;
    absl::StatusOr<std::string> driver = ReadPciDriver(ops, name);
    if (!driver.ok() || *driver != kVfioPciDriver) continue;
    absl::StatusOr<int> group = ReadIommuGroup(ops, name);
    out.push_back(VfioDeviceInfo{name, group.ok() ? *group : -1, *driver,
                                 ReadId(ops, name, "vendor"), ReadId(ops, name, "device")});
  }
  return out;
}

}  // namespace internal
}  // namespace dmareg
