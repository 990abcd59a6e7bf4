// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "vfio/fd_sharing/fd_client.h"

#include <sys/socket.h>
#include <sys/time.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "dmareg/errno_status.h"
#include "dmareg/vfio/fd_sharing.h"

namespace dmareg::internal {
namespace {

std::string Describe(const VfioFdRequest& r) {
  if (r.type == VfioFdRequestType::kGroup) {
    return absl::StrFormat("group %d", static_cast<int>(r.group));
  }
  return std::string(VfioFdRequestTypeName(static_cast<uint16_t>(r.type)));
}

absl::StatusOr<OwnedFd> Connect(absl::string_view socket, std::chrono::milliseconds timeout) {
  absl::StatusOr<UnixSocketAddress> address = UnixSocketAddress::Parse(socket);
  if (!address.ok()) return address.status();
  OwnedFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return ErrnoStatus(errno, "socket", socket);
  // A blocking connect waits (for a full backlog) at most SO_SNDTIMEO.
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(timeout).count();
  timeval tv{static_cast<time_t>(us / 1000000), static_cast<suseconds_t>(us % 1000000)};
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0) {
    return ErrnoStatus(errno, "setsockopt", socket, "SO_SNDTIMEO");
  }
  int r;
  do {
    r = ::connect(fd.get(), address->addr(), address->length());
  } while (r != 0 && errno == EINTR);
  if (r != 0) {
    const int err = errno;
    if (err == ENOENT || err == ECONNREFUSED || err == EAGAIN) {
      return absl::UnavailableError(absl::StrFormat("no VFIO fd server at %s: connect: %s (%s)",
                                                    socket, std::strerror(err), ErrnoName(err)));
    }
    return ErrnoStatus(err, "connect", socket, "to the VFIO fd server");
  }
  return fd;
}

}  // namespace

absl::StatusOr<FdAnswer> RequestFd(absl::string_view socket, const VfioFdRequest& request,
                                   std::chrono::milliseconds timeout) {
  absl::StatusOr<VfioFdRequestBytes> bytes = EncodeRequest(request);
  if (!bytes.ok()) return bytes.status();
  absl::StatusOr<OwnedFd> conn = Connect(socket, timeout);
  if (!conn.ok()) return conn.status();
  if (absl::Status s = SendMessage(conn->get(), *bytes, -1, socket); !s.ok()) return s;

  absl::StatusOr<WaitResult> w = WaitReadable(conn->get(), -1, timeout, socket);
  if (!w.ok()) return w.status();
  if (*w == WaitResult::kTimedOut) {
    return absl::DeadlineExceededError(
        absl::StrFormat("VFIO fd server at %s did not answer the %s request within %d ms", socket,
                        Describe(request), timeout.count()));
  }
  VfioFdReplyBytes buffer{};
  absl::StatusOr<ReceivedMessage> message = ReceiveMessage(conn->get(), buffer, socket);
  if (!message.ok()) return message.status();
  if (message->length == 0) {
    return absl::UnavailableError(absl::StrFormat(
        "VFIO fd server at %s closed the connection without answering the %s request", socket,
        Describe(request)));
  }
  if (message->truncated) {
    return absl::InternalError(
        absl::StrFormat("VFIO fd server at %s sent a %d-byte reply, expected %d", socket,
                        message->length, buffer.size()));
  }
  absl::StatusOr<VfioFdReply> reply =
      ParseReply(std::span<const uint8_t>(buffer.data(), message->length));
  if (!reply.ok()) {
    return absl::InternalError(absl::StrFormat("VFIO fd server at %s: unreadable reply: %s", socket,
                                               reply.status().message()));
  }
  if (reply->request_type != 0 && reply->request_type != static_cast<uint16_t>(request.type)) {
    return absl::InternalError(
        absl::StrFormat("VFIO fd server at %s answered a %s request to our %s request", socket,
                        VfioFdRequestTypeName(reply->request_type), Describe(request)));
  }
  if (message->fds.size() > 1) {
    return absl::InternalError(
        absl::StrFormat("VFIO fd server at %s sent %d fds with one reply (all closed)", socket,
                        message->fds.size()));
  }
  FdAnswer answer{std::move(*reply), {}};
  if (!message->fds.empty()) answer.fd = std::move(message->fds[0]);
  return answer;
}

absl::StatusOr<FdAnswer> CheckAnswer(absl::string_view socket, const VfioFdRequest& request,
                                     FdAnswer answer) {
  const VfioFdReply& reply = answer.reply;
  switch (reply.result) {
    case VfioFdResult::kOk:
      if (request.type == VfioFdRequestType::kIommuType) {
        answer.fd.reset();  // nothing was to come with it
      } else if (answer.fd.get() < 0) {
        return absl::InternalError(absl::StrFormat(
            "VFIO fd server at %s answered the %s request with no fd", socket, Describe(request)));
      }
      return answer;
    case VfioFdResult::kNoFd:
      return absl::FailedPreconditionError(
          absl::StrFormat("group %d is not bound to vfio-pci (VFIO fd server at %s: %s)",
                          static_cast<int>(request.group), socket, reply.reason));
    case VfioFdResult::kErr:
      break;
  }
  const auto code = static_cast<absl::StatusCode>(reply.value);
  const std::string message = absl::StrFormat("VFIO fd server at %s refused the %s request: %s",
                                              socket, Describe(request), reply.reason);
  switch (code) {
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kUnimplemented:
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kUnauthenticated:
      // The primary's own failure (or our uid): its code says what.
      return absl::Status(code, message);
    default:
      // OK, InvalidArgument, DeadlineExceeded (it could not read our
      // request), Internal, or no code at all: between us and the server.
      return absl::InternalError(message);
  }
}

}  // namespace dmareg::internal

namespace dmareg {
namespace {

absl::StatusOr<internal::FdAnswer> Ask(std::string_view socket, internal::VfioFdRequest request,
                                       std::chrono::milliseconds timeout) {
  const absl::string_view name(socket.data(), socket.size());
  absl::StatusOr<internal::FdAnswer> answer = internal::RequestFd(name, request, timeout);
  if (!answer.ok()) return answer.status();
  return internal::CheckAnswer(name, request, std::move(*answer));
}

}  // namespace

absl::StatusOr<int> RequestVfioContainerFd(std::string_view socket,
                                           std::chrono::milliseconds timeout) {
  absl::StatusOr<internal::FdAnswer> a =
      Ask(socket, {internal::VfioFdRequestType::kContainer, 0}, timeout);
  if (!a.ok()) return a.status();
  return a->fd.release();
}

absl::StatusOr<int> RequestVfioGroupFd(std::string_view socket, int group,
                                       std::chrono::milliseconds timeout) {
  absl::StatusOr<internal::FdAnswer> a =
      Ask(socket, {internal::VfioFdRequestType::kGroup, group}, timeout);
  if (!a.ok()) return a.status();
  return a->fd.release();
}

absl::StatusOr<int> RequestVfioIommuType(std::string_view socket,
                                         std::chrono::milliseconds timeout) {
  absl::StatusOr<internal::FdAnswer> a =
      Ask(socket, {internal::VfioFdRequestType::kIommuType, 0}, timeout);
  if (!a.ok()) return a.status();
  return a->reply.value;
}

}  // namespace dmareg
