// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The secondary's side of VFIO fd sharing: one connection, one request, one
// reply (fd_message.h) and at most one fd, within a timeout. The public
// RequestVfio*() functions (dmareg/vfio_fd_sharing.h) are built on it.
//
//   absl::StatusOr<FdAnswer> a =
//       RequestFd("@dmareg-vfio", {VfioFdRequestType::kGroup, 26}, std::chrono::seconds(5));
//   // a->reply.result == VfioFdResult::kOk; a->fd owns the group's fd

#ifndef DMAREG_SRC_VFIO_MP_FD_CLIENT_H_
#define DMAREG_SRC_VFIO_MP_FD_CLIENT_H_

#include <chrono>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "vfio/fd_sharing/fd_message.h"
#include "vfio/fd_sharing/fd_socket.h"

namespace dmareg::internal {

struct FdAnswer {
  VfioFdReply reply;
  OwnedFd fd;  // the one fd that came with the reply, if any
};

// The server's reply as it is (any result). Fails for what is not a reply:
// no server (Unavailable), no reply in time (DeadlineExceeded), a reply that
// does not parse, answers another request, or brought more than one fd
// (Internal; every fd received is closed).
absl::StatusOr<FdAnswer> RequestFd(absl::string_view socket, const VfioFdRequest& request,
                                   std::chrono::milliseconds timeout);

// The reply as a status: OK with the fd (for container and group requests
// when one came) or the value; NO_FD: FailedPrecondition "group N is not
// bound to vfio-pci"; ERR: see dmareg/vfio_fd_sharing.h. An OK
// container/group reply without an fd is Internal.
absl::StatusOr<FdAnswer> CheckAnswer(absl::string_view socket, const VfioFdRequest& request,
                                     FdAnswer answer);

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_VFIO_MP_FD_CLIENT_H_
