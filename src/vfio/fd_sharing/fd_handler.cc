// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "vfio/fd_sharing/fd_handler.h"

#include <string>

#include "absl/strings/str_format.h"

namespace dmareg::internal {
namespace {

VfioFdReplyBytes Encode(const VfioFdReply& reply) {
  // Only the handler builds replies, always with a known type and result.
  return *EncodeReply(reply);
}

FdHandling WithFd(uint16_t type, absl::StatusOr<int> fd, absl::string_view what) {
  if (!fd.ok()) {
    return {ErrorReply(type, fd.status().code(), fd.status().message()), -1, false};
  }
  if (*fd < 0) {
    return {ErrorReply(type, absl::StatusCode::kInternal,
                       absl::StrFormat("the primary has no %s fd (%d)", what, *fd)),
            -1, false};
  }
  return {Encode({type, VfioFdResult::kOk, 0, ""}), *fd, false};
}

}  // namespace

VfioFdReplyBytes ErrorReply(uint16_t request_type, absl::StatusCode code, absl::string_view why) {
  return Encode({request_type, VfioFdResult::kErr, static_cast<int32_t>(code), std::string(why)});
}

FdHandling HandleFdRequest(std::span<const uint8_t> bytes, VfioFdProvider& provider) {
  absl::StatusOr<VfioFdRequest> request = ParseRequest(bytes);
  if (!request.ok()) {
    return {ErrorReply(0, absl::StatusCode::kInvalidArgument, request.status().message()), -1,
            true};
  }
  const auto type = static_cast<uint16_t>(request->type);
  switch (request->type) {
    case VfioFdRequestType::kContainer:
      return WithFd(type, provider.ContainerFd(), "container");
    case VfioFdRequestType::kIommuType: {
      absl::StatusOr<int> iommu = provider.IommuType();
      if (!iommu.ok()) {
        return {ErrorReply(type, iommu.status().code(), iommu.status().message()), -1, false};
      }
      return {Encode({type, VfioFdResult::kOk, *iommu, ""}), -1, false};
    }
    case VfioFdRequestType::kGroup: {
      GroupFdAnswer answer = provider.GroupFd(request->group);
      switch (answer.answer) {
        case GroupFdAnswer::kOk:
          return WithFd(type, answer.fd,
                        absl::StrFormat("group %d", static_cast<int>(request->group)));
        case GroupFdAnswer::kNoFd:
          return {Encode({type, VfioFdResult::kNoFd, request->group,
                          answer.why.empty() ? absl::StrFormat("group %d is not bound to vfio-pci",
                                                               static_cast<int>(request->group))
                                             : answer.why}),
                  -1, false};
        case GroupFdAnswer::kErr:
          break;
      }
      return {ErrorReply(type, absl::StatusCode::kUnavailable,
                         answer.why.empty() ? absl::StrFormat("group %d could not be opened",
                                                              static_cast<int>(request->group))
                                            : answer.why),
              -1, false};
    }
  }
  return {ErrorReply(type, absl::StatusCode::kInternal, "unhandled request type"), -1, true};
}

}  // namespace dmareg::internal
