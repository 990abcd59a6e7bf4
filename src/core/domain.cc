// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/domain.h"

#include "absl/strings/str_cat.h"

namespace dmareg {

absl::StatusOr<DeviceMapping> Domain::RegisterDmaBuf(const DmaBufMemory&, AccessFlags) {
  return absl::UnimplementedError(
      absl::StrCat("dma-buf registration is not supported by domain ", name()));
}

}  // namespace dmareg
