// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/domain.h"

#include <algorithm>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

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

const char* PagingName(Paging paging) {
  switch (paging) {
    case Paging::kPinned:
      return "pinned";
    case Paging::kOnDemand:
      return "on-demand";
    case Paging::kAutomatic:
      return "automatic";
  }
  return "unknown";
}

absl::Status CheckIovaPlacement(const DomainCapabilities& caps, uint64_t va, uint64_t iova,
                                uint64_t length, std::string_view where) {
  const std::optional<Range> vr = Range::FromLength(va, length);
  const std::optional<Range> ir = Range::FromLength(iova, length);
  const auto say = [&](absl::StatusCode code, std::string_view why) {
    return absl::Status(
        code, absl::StrFormat("%s: VA %#x, IOVA %#x, %#x bytes: %s", where, va, iova, length, why));
  };
  if (length == 0) return say(absl::StatusCode::kInvalidArgument, "a zero length");
  if (!vr) return say(absl::StatusCode::kInvalidArgument, "the VA range wraps around");
  if (!ir) return say(absl::StatusCode::kInvalidArgument, "the IOVA range wraps around");
  if (!caps.caller_iova) {
    return say(absl::StatusCode::kFailedPrecondition,
               absl::StrCat(caps.device_name, " cannot place a mapping at a caller's IOVA"));
  }
  if (caps.dma_address_bits > 0 && caps.dma_address_bits < 64 &&
      ir->end() > (uint64_t{1} << caps.dma_address_bits)) {
    return say(absl::StatusCode::kOutOfRange,
               absl::StrFormat("the IOVAs pass %s's %d-bit DMA mask", caps.device_name,
                               caps.dma_address_bits));
  }
  if (!caps.iova_ranges.empty() && std::none_of(caps.iova_ranges.begin(), caps.iova_ranges.end(),
                                                [&](const Range& r) { return r.Contains(*ir); })) {
    return say(
        absl::StatusCode::kOutOfRange,
        absl::StrCat("the IOVAs lie outside ", caps.device_name, "'s IOVA ranges ",
                     absl::StrJoin(caps.iova_ranges, ", ", [](std::string* out, const Range& r) {
                       out->append(r.ToString());
                     })));
  }
  const uint64_t page = caps.page_sizes & (~caps.page_sizes + 1);  // the smallest
  if (page != 0 && ((va - iova) & (page - 1)) != 0) {
    return say(absl::StatusCode::kInvalidArgument,
               absl::StrFormat("VA and IOVA differ in their offset within %s's %#x-byte pages",
                               caps.device_name, page));
  }
  if (page != 0 && !caps.byte_granular && ((va | length) & (page - 1)) != 0) {
    return say(absl::StatusCode::kInvalidArgument,
               absl::StrFormat("not whole %#x-byte pages, which %s maps", page, caps.device_name));
  }
  return absl::OkStatus();
}

absl::StatusOr<DeviceMapping> Domain::RegisterDmaBuf(const DmaBufMemory&, AccessFlags) {
  return absl::UnimplementedError(
      absl::StrCat("dma-buf registration is not supported by domain ", name()));
}

}  // namespace dmareg
