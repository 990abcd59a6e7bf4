// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The wire format of VFIO fd sharing between a primary process (which owns
// the VFIO container and groups) and its secondaries: one request, one reply,
// each a fixed-size little-endian record, one SOCK_SEQPACKET message each.
// The fd itself travels beside the reply as SCM_RIGHTS ancillary data.
//
//   request (16 bytes)               reply (216 bytes)
//   0  u32 magic "DRVF"             0  u32 magic "DRVF"
//   4  u16 version (1)              4  u16 version (1)
//   6  u16 type                     6  u16 type answered (0: request unreadable)
//   8  i32 group (group requests)   8  u16 result (0 OK, 1 NO_FD, 2 ERR)
//   12 u32 reserved, zero           10 u16 reason length (<= 200)
//                                   12 i32 value (IOMMU type; on ERR an
//                                          absl::StatusCode)
//                                   16 200 bytes reason, zero-padded
//
// The functions are pure (bytes in, value or status out) so they can be
// fuzzed; every field is checked, so a record that parses is one that
// EncodeRequest/EncodeReply could have produced:
//
//   auto bytes = EncodeRequest({VfioFdRequestType::kGroup, 26});
//   absl::StatusOr<VfioFdRequest> r = ParseRequest(*bytes);   // r->group == 26

#ifndef DMAREG_SRC_VFIO_MP_FD_MESSAGE_H_
#define DMAREG_SRC_VFIO_MP_FD_MESSAGE_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dmareg::internal {

inline constexpr uint32_t kVfioFdMagic = 0x46565244;  // "DRVF" little-endian
inline constexpr uint16_t kVfioFdVersion = 1;
inline constexpr size_t kVfioFdRequestSize = 16;
inline constexpr size_t kVfioFdMaxReason = 200;
inline constexpr size_t kVfioFdReplySize = 16 + kVfioFdMaxReason;

// The request types (DPDK's SOCKET_REQ_* values).
enum class VfioFdRequestType : uint16_t {
  kContainer = 0x100,
  kGroup = 0x200,
  kIommuType = 0x400,
};

enum class VfioFdResult : uint16_t {
  kOk = 0,
  kNoFd = 1,
  kErr = 2,
};

struct VfioFdRequest {
  VfioFdRequestType type = VfioFdRequestType::kContainer;
  int32_t group = 0;  // kGroup only; zero otherwise
};

struct VfioFdReply {
  // The type of the request answered; 0 when the request could not be read
  // (then the result is kErr).
  uint16_t request_type = 0;
  VfioFdResult result = VfioFdResult::kErr;
  int32_t value = 0;   // kIommuType: the type; kErr: an absl::StatusCode
  std::string reason;  // kErr, kNoFd: why (at most kVfioFdMaxReason bytes)
};

using VfioFdRequestBytes = std::array<uint8_t, kVfioFdRequestSize>;
using VfioFdReplyBytes = std::array<uint8_t, kVfioFdReplySize>;

absl::string_view VfioFdRequestTypeName(uint16_t type);  // "container", ..., "unknown"

// InvalidArgument for an unknown type, a negative group, or a group on a
// request that is not a group request.
absl::StatusOr<VfioFdRequestBytes> EncodeRequest(const VfioFdRequest& request);
// InvalidArgument naming the first thing wrong: size, magic, version, type,
// group, reserved bits.
absl::StatusOr<VfioFdRequest> ParseRequest(std::span<const uint8_t> bytes);

// InvalidArgument for an unknown result or request type, or a request type
// of 0 on a result other than kErr. A longer reason is cut to
// kVfioFdMaxReason bytes (it is a message for a human, not data).
absl::StatusOr<VfioFdReplyBytes> EncodeReply(const VfioFdReply& reply);
absl::StatusOr<VfioFdReply> ParseReply(std::span<const uint8_t> bytes);

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_VFIO_MP_FD_MESSAGE_H_
