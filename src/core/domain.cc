// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/domain.h"

#include "absl/strings/str_cat.h"

namespace dmareg {

std::string_view DeviceKindName(DeviceKind kind) {
  switch (kind) {
    case DeviceKind::kRdma:
      return "rdma";
    case DeviceKind::kVfio:
      return "vfio";
    case DeviceKind::kFake:
      break;
  }
  return "fake";
}

absl::StatusOr<DeviceMapping> Domain::RegisterHostOnDemand(const HostMemory&, AccessFlags) {
  return absl::UnimplementedError(
      absl::StrCat("on-demand paging is not supported by domain ", name()));
}

absl::StatusOr<DeviceMapping> Domain::RegisterDmaBuf(const DmaBufMemory&, AccessFlags) {
  return absl::UnimplementedError(
      absl::StrCat("dma-buf registration is not supported by domain ", name()));
}

}  // namespace dmareg
