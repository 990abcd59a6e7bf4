// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "vfio/fd_sharing/fd_socket.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "dmareg/errno_status.h"

namespace dmareg::internal {

void OwnedFd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

absl::StatusOr<UnixSocketAddress> UnixSocketAddress::Parse(absl::string_view name) {
  UnixSocketAddress a;
  a.addr_.sun_family = AF_UNIX;
  const bool abstract = !name.empty() && name[0] == '@';
  // A path needs its terminating NUL; an abstract name has the leading one.
  const size_t room = sizeof(a.addr_.sun_path) - 1;
  const size_t length = abstract ? name.size() - 1 : name.size();
  if (length == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "VFIO fd socket name '%s' is empty (a path, or @name for the abstract namespace)", name));
  }
  if (length > room) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "VFIO fd socket name '%s' is %d bytes, at most %d fit", name, length, room));
  }
  if (abstract) {
    std::memcpy(a.addr_.sun_path + 1, name.data() + 1, length);
    a.length_ = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + length);
  } else {
    if (name.find('\0') != absl::string_view::npos) {
      return absl::InvalidArgumentError("VFIO fd socket path contains a NUL byte");
    }
    std::memcpy(a.addr_.sun_path, name.data(), length);
    a.length_ = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + length + 1);
  }
  return a;
}

absl::StatusOr<ReceivedMessage> ReceiveMessage(int fd, std::span<uint8_t> buffer,
                                               absl::string_view name) {
  // Room for more fds than any reply carries, so that extra ones arrive (and
  // are closed) rather than being dropped with MSG_CTRUNC.
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
  iovec iov{buffer.data(), buffer.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = ::recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC | MSG_TRUNC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return ErrnoStatus(errno, "recvmsg", name);
  ReceivedMessage m;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int received;
      std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      m.fds.emplace_back(received);
    }
  }
  m.length = static_cast<size_t>(n);
  m.truncated = (msg.msg_flags & MSG_TRUNC) != 0 || m.length > buffer.size();
  return m;
}

absl::Status SendMessage(int fd, std::span<const uint8_t> bytes, int pass_fd,
                         absl::string_view name) {
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (pass_fd >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
  }
  ssize_t n;
  do {
    n = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return ErrnoStatus(errno, "sendmsg", name);
  return absl::OkStatus();
}

absl::StatusOr<WaitResult> WaitReadable(int fd, int stop_fd, std::chrono::milliseconds timeout,
                                        absl::string_view name) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point deadline = Clock::now() + timeout;
  for (;;) {
    pollfd fds[2] = {{fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    const int r =
        ::poll(fds, stop_fd >= 0 ? 2 : 1,
               static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(left.count(), INT32_MAX))));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "poll", name);
    }
    if (stop_fd >= 0 && fds[1].revents != 0) return WaitResult::kStopped;
    if (fds[0].revents != 0) return WaitResult::kReady;
    if (r == 0) return WaitResult::kTimedOut;
  }
}

}  // namespace dmareg::internal
