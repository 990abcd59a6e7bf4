// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// What sysfs says about a PCI device for VFIO: whether it exists, its
// driver, its IOMMU group, its IDs. (The address format is public:
// ValidatePciAddress in dmareg/vfio/vfio_domain.h.)
//
//   absl::StatusOr<int> group = ReadIommuGroup(ops, "0000:00:03.0");  // 5

#ifndef DMAREG_SRC_VFIO_PCI_SYSFS_H_
#define DMAREG_SRC_VFIO_PCI_SYSFS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "dmareg/vfio/vfio_domain.h"
#include "dmareg/vfio/vfio_ops.h"

namespace dmareg::internal {

inline constexpr absl::string_view kVfioPciDriver = "vfio-pci";

// "/sys/bus/pci/devices/<address>".
std::string PciDevicePath(absl::string_view address);

// The driver the device is bound to ("" when none).
absl::StatusOr<std::string> ReadPciDriver(VfioOps& ops, absl::string_view address);

// The device's IOMMU group number; FailedPrecondition when it has none.
absl::StatusOr<int> ReadIommuGroup(VfioOps& ops, absl::string_view address);

// PCI devices bound to vfio-pci, by address (entries of the bus that are
// not PCI addresses are not devices), with their IDs.
absl::StatusOr<std::vector<VfioDeviceInfo>> ListVfioPciDevices(VfioOps& ops);

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_VFIO_PCI_SYSFS_H_
