// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "vfio/fd_sharing/fd_message.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace dmareg::internal {
namespace {

// Little-endian field access, independent of the host's byte order.
uint16_t Get16(std::span<const uint8_t> b, size_t at) {
  return static_cast<uint16_t>(b[at] | (b[at + 1] << 8));
}
uint32_t Get32(std::span<const uint8_t> b, size_t at) {
  return static_cast<uint32_t>(b[at]) | (static_cast<uint32_t>(b[at + 1]) << 8) |
         (static_cast<uint32_t>(b[at + 2]) << 16) | (static_cast<uint32_t>(b[at + 3]) << 24);
}
void Put16(std::span<uint8_t> b, size_t at, uint16_t v) {
  b[at] = static_cast<uint8_t>(v);
  b[at + 1] = static_cast<uint8_t>(v >> 8);
}
void Put32(std::span<uint8_t> b, size_t at, uint32_t v) {
  for (size_t i = 0; i < 4; ++i) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
}

bool KnownType(uint16_t type) {
  switch (static_cast<VfioFdRequestType>(type)) {
    case VfioFdRequestType::kContainer:
    case VfioFdRequestType::kGroup:
    case VfioFdRequestType::kIommuType:
      return true;
  }
  return false;
}

bool KnownResult(uint16_t result) {
  switch (static_cast<VfioFdResult>(result)) {
    case VfioFdResult::kOk:
    case VfioFdResult::kNoFd:
    case VfioFdResult::kErr:
      return true;
  }
  return false;
}

// The checks both records share: size, magic, version.
absl::Status CheckHeader(std::span<const uint8_t> bytes, size_t size, absl::string_view what) {
  if (bytes.size() != size) {
    return absl::InvalidArgumentError(
        absl::StrFormat("VFIO fd %s is %d bytes, expected %d", what, bytes.size(), size));
  }
  if (uint32_t magic = Get32(bytes, 0); magic != kVfioFdMagic) {
    return absl::InvalidArgumentError(
        absl::StrFormat("VFIO fd %s has magic %#x, expected %#x", what, magic, kVfioFdMagic));
  }
  if (uint16_t version = Get16(bytes, 4); version != kVfioFdVersion) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "VFIO fd %s has version %d, this side speaks %d", what, version, kVfioFdVersion));
  }
  return absl::OkStatus();
}

absl::Status CheckRequest(uint16_t type, int32_t group) {
  if (!KnownType(type)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("VFIO fd request has unknown type %#x", type));
  }
  if (group < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("VFIO fd request names negative group %d", group));
  }
  if (group != 0 && static_cast<VfioFdRequestType>(type) != VfioFdRequestType::kGroup) {
    return absl::InvalidArgumentError(
        absl::StrFormat("VFIO fd %s request carries group %d", VfioFdRequestTypeName(type), group));
  }
  return absl::OkStatus();
}

absl::Status CheckReply(uint16_t type, uint16_t result) {
  if (!KnownResult(result)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("VFIO fd reply has unknown result %d", result));
  }
  if (type == 0 ? static_cast<VfioFdResult>(result) != VfioFdResult::kErr : !KnownType(type)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "VFIO fd reply answers unknown request type %#x with result %d", type, result));
  }
  return absl::OkStatus();
}

}  // namespace

absl::string_view VfioFdRequestTypeName(uint16_t type) {
  switch (static_cast<VfioFdRequestType>(type)) {
    case VfioFdRequestType::kContainer:
      return "container";
    case VfioFdRequestType::kGroup:
      return "group";
    case VfioFdRequestType::kIommuType:
      return "IOMMU type";
  }
  return "unknown";
}

absl::StatusOr<VfioFdRequestBytes> EncodeRequest(const VfioFdRequest& request) {
  const auto type = static_cast<uint16_t>(request.type);
  if (absl::Status s = CheckRequest(type, request.group); !s.ok()) return s;
  VfioFdRequestBytes bytes{};
  Put32(bytes, 0, kVfioFdMagic);
  Put16(bytes, 4, kVfioFdVersion);
  Put16(bytes, 6, type);
  Put32(bytes, 8, static_cast<uint32_t>(request.group));
  return bytes;
}

absl::StatusOr<VfioFdRequest> ParseRequest(std::span<const uint8_t> bytes) {
  if (absl::Status s = CheckHeader(bytes, kVfioFdRequestSize, "request"); !s.ok()) return s;
  const uint16_t type = Get16(bytes, 6);
  const auto group = static_cast<int32_t>(Get32(bytes, 8));
  if (absl::Status s = CheckRequest(type, group); !s.ok()) return s;
  if (uint32_t reserved = Get32(bytes, 12); reserved != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("VFIO fd request has reserved bits %#x set", reserved));
  }
  return VfioFdRequest{static_cast<VfioFdRequestType>(type), group};
}

absl::StatusOr<VfioFdReplyBytes> EncodeReply(const VfioFdReply& reply) {
  const auto result = static_cast<uint16_t>(reply.result);
  if (absl::Status s = CheckReply(reply.request_type, result); !s.ok()) return s;
  const size_t reason_len = std::min(reply.reason.size(), kVfioFdMaxReason);
  VfioFdReplyBytes bytes{};
  Put32(bytes, 0, kVfioFdMagic);
  Put16(bytes, 4, kVfioFdVersion);
  Put16(bytes, 6, reply.request_type);
  Put16(bytes, 8, result);
  Put16(bytes, 10, static_cast<uint16_t>(reason_len));
  Put32(bytes, 12, static_cast<uint32_t>(reply.value));
  std::copy_n(reply.reason.begin(), reason_len, bytes.begin() + 16);
  return bytes;
}

absl::StatusOr<VfioFdReply> ParseReply(std::span<const uint8_t> bytes) {
  if (absl::Status s = CheckHeader(bytes, kVfioFdReplySize, "reply"); !s.ok()) return s;
  VfioFdReply reply;
  reply.request_type = Get16(bytes, 6);
  const uint16_t result = Get16(bytes, 8);
  if (absl::Status s = CheckReply(reply.request_type, result); !s.ok()) return s;
  reply.result = static_cast<VfioFdResult>(result);
  const uint16_t reason_len = Get16(bytes, 10);
  if (reason_len > kVfioFdMaxReason) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "VFIO fd reply has a %d-byte reason, at most %d fit", reason_len, kVfioFdMaxReason));
  }
  reply.value = static_cast<int32_t>(Get32(bytes, 12));
  const auto reason = bytes.subspan(16, reason_len);
  const auto padding = bytes.subspan(16 + reason_len);
  if (std::any_of(padding.begin(), padding.end(), [](uint8_t b) { return b != 0; })) {
    return absl::InvalidArgumentError("VFIO fd reply has bytes after its reason");
  }
  reply.reason.assign(reason.begin(), reason.end());
  return reply;
}

}  // namespace dmareg::internal
