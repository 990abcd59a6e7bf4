// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/access.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace dmareg {

absl::Status ValidateAccess(AccessFlags access) {
  const uint32_t unknown = access.bits() & ~kAllAccess.bits();
  if (unknown != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("unknown access bits 0x%x in 0x%x", unknown, access.bits()));
  }
  return absl::OkStatus();
}

std::string AccessToString(AccessFlags access) {
  static constexpr struct {
    Access bit;
    const char* name;
  } kNames[] = {
      {Access::kLocalWrite, "LOCAL_WRITE"},           {Access::kRemoteRead, "REMOTE_READ"},
      {Access::kRemoteWrite, "REMOTE_WRITE"},         {Access::kRemoteAtomic, "REMOTE_ATOMIC"},
      {Access::kRelaxedOrdering, "RELAXED_ORDERING"},
  };
  std::string out;
  for (const auto& n : kNames) {
    if (access.Has(n.bit)) absl::StrAppend(&out, out.empty() ? "" : "|", n.name);
  }
  const uint32_t unknown = access.bits() & ~kAllAccess.bits();
  if (unknown != 0)
    absl::StrAppend(&out, out.empty() ? "" : "|", absl::Hex(unknown, absl::kZeroPad8));
  return out.empty() ? "NONE" : out;
}

}  // namespace dmareg
