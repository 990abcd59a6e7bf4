// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The socket plumbing VFIO fd sharing's client and server share: an owned fd,
// Unix socket names ("/path" or "@abstract"), one-message send/receive with
// SCM_RIGHTS fds, and a poll that waits for a socket or a stop fd.
//
//   absl::StatusOr<UnixSocketAddress> a = UnixSocketAddress::Parse("@dmareg-vfio");
//   connect(fd, a->addr(), a->length());
//   absl::StatusOr<ReceivedMessage> m = ReceiveMessage(fd, buffer, "@dmareg-vfio");
//   // m->length, m->fds (owned: closed unless taken)

#ifndef DMAREG_SRC_VFIO_MP_FD_SOCKET_H_
#define DMAREG_SRC_VFIO_MP_FD_SOCKET_H_

#include <sys/socket.h>
#include <sys/un.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dmareg::internal {

// Owns one fd: closed on destruction unless release()d.
class OwnedFd {
 public:
  OwnedFd() = default;
  explicit OwnedFd(int fd) : fd_(fd) {}
  OwnedFd(OwnedFd&& o) noexcept : fd_(o.release()) {}
  OwnedFd& operator=(OwnedFd&& o) noexcept {
    if (this != &o) reset(o.release());
    return *this;
  }
  ~OwnedFd() { reset(); }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

// A Unix socket name: a filesystem path, or "@name" for the abstract
// namespace (Linux; no file, gone with the last fd).
class UnixSocketAddress {
 public:
  // InvalidArgument for an empty name, "@" alone, or one too long for sun_path.
  static absl::StatusOr<UnixSocketAddress> Parse(absl::string_view name);
  const ::sockaddr* addr() const { return reinterpret_cast<const ::sockaddr*>(&addr_); }
  socklen_t length() const { return length_; }
  bool abstract() const { return addr_.sun_path[0] == '\0'; }
  const char* path() const { return addr_.sun_path; }  // filesystem names only

 private:
  sockaddr_un addr_{};
  socklen_t length_ = 0;
};

// One message received: its length (the whole message's, even when it did not
// fit the buffer: then `truncated`), and the fds that came with it.
struct ReceivedMessage {
  size_t length = 0;
  bool truncated = false;
  std::vector<OwnedFd> fds;
};

// One recvmsg (MSG_DONTWAIT, MSG_CMSG_CLOEXEC) into `buffer`; any fds
// received are owned by the result, so none leaks whatever the caller does.
// `name` is the socket's, for the error message.
absl::StatusOr<ReceivedMessage> ReceiveMessage(int fd, std::span<uint8_t> buffer,
                                               absl::string_view name);

// One sendmsg (MSG_NOSIGNAL, MSG_DONTWAIT) of `bytes`, with `pass_fd` as
// SCM_RIGHTS when it is not -1.
absl::Status SendMessage(int fd, std::span<const uint8_t> bytes, int pass_fd,
                         absl::string_view name);

enum class WaitResult { kReady, kStopped, kTimedOut };

// Waits until `fd` is readable (or hung up), `stop_fd` (-1: none) is
// readable, or `timeout` passes; EINTR restarts with the time left.
absl::StatusOr<WaitResult> WaitReadable(int fd, int stop_fd, std::chrono::milliseconds timeout,
                                        absl::string_view name);

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_VFIO_MP_FD_SOCKET_H_
