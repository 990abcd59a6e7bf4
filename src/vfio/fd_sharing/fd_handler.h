// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// What the VFIO fd server does with one request, without the socket: request
// bytes in, reply bytes and the fd to pass beside them out. Pure apart from
// the provider's calls, so the fuzzer drives it with a fake provider.
//
//   FdHandling h = HandleFdRequest(request_bytes, provider);
//   SendMessage(conn, h.reply, h.fd, name);   // h.fd: borrowed, -1 for none

#ifndef DMAREG_SRC_VFIO_MP_FD_HANDLER_H_
#define DMAREG_SRC_VFIO_MP_FD_HANDLER_H_

#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "vfio/fd_sharing/fd_message.h"
#include "vfio/fd_sharing/fd_provider.h"

namespace dmareg::internal {

struct FdHandling {
  VfioFdReplyBytes reply{};
  int fd = -1;             // the provider's fd to pass (borrowed); -1: none
  bool malformed = false;  // the request could not be parsed
};

// The reply to `bytes`: OK with the container/group fd or the IOMMU type,
// NO_FD, or ERR (value = the absl::StatusCode: InvalidArgument for a
// malformed request, the provider's code for its errors, Unavailable for a
// group the provider could not open, Internal for a provider that returned
// a negative fd).
FdHandling HandleFdRequest(std::span<const uint8_t> bytes, VfioFdProvider& provider);

// An ERR reply to a request of `request_type` (0: not read).
VfioFdReplyBytes ErrorReply(uint16_t request_type, absl::StatusCode code, absl::string_view why);

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_VFIO_MP_FD_HANDLER_H_
