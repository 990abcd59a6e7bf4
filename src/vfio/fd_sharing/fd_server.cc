// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "vfio/fd_sharing/fd_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "dmareg/errno_status.h"
#include "vfio/fd_sharing/fd_handler.h"

namespace dmareg::internal {
namespace {

absl::StatusOr<OwnedFd> NewSocket(absl::string_view name) {
  OwnedFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) return ErrnoStatus(errno, "socket", name);
  return fd;
}

// Whether a server still listens on the filesystem socket `a` (a socket
// file whose server died refuses connections).
bool SomeoneListens(const UnixSocketAddress& a) {
  OwnedFd probe(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (probe.get() < 0) return true;
  return ::connect(probe.get(), a.addr(), a.length()) == 0 || errno != ECONNREFUSED;
}

// The listening socket, mode 0600 when it is a file: the mode is set on the
// socket before bind(), which creates the file with it (no window with the
// umask's mode).
absl::StatusOr<OwnedFd> Listen(const UnixSocketAddress& a, absl::string_view name, ino_t* inode) {
  absl::StatusOr<OwnedFd> fd = NewSocket(name);
  if (!fd.ok()) return fd.status();
  if (!a.abstract() && ::fchmod(fd->get(), 0600) != 0) {
    return ErrnoStatus(errno, "fchmod", name, "mode 0600 for the socket file");
  }
  if (::bind(fd->get(), a.addr(), a.length()) != 0) {
    const int err = errno;
    struct stat st;
    if (err != EADDRINUSE || a.abstract() || ::lstat(a.path(), &st) != 0 || !S_ISSOCK(st.st_mode) ||
        SomeoneListens(a)) {
      if (err == EADDRINUSE) {
        return absl::AlreadyExistsError(absl::StrFormat(
            "bind on %s: Address already in use (EADDRINUSE): another VFIO fd server holds the "
            "name",
            name));
      }
      return ErrnoStatus(err, "bind", name);
    }
    // A socket file left by a server that is gone: replace it.
    if (::unlink(a.path()) != 0) return ErrnoStatus(errno, "unlink", name, "stale socket");
    if (::bind(fd->get(), a.addr(), a.length()) != 0) return ErrnoStatus(errno, "bind", name);
  }
  *inode = 0;
  if (!a.abstract()) {
    struct stat st;
    if (::lstat(a.path(), &st) == 0) *inode = st.st_ino;
  }
  if (::listen(fd->get(), SOMAXCONN) != 0) {
    if (*inode != 0) ::unlink(a.path());
    return ErrnoStatus(errno, "listen", name);
  }
  return fd;
}

}  // namespace

absl::StatusOr<std::unique_ptr<FdServer>> FdServer::Start(std::shared_ptr<VfioFdProvider> provider,
                                                          FdServerOptions options) {
  if (provider == nullptr) return absl::InvalidArgumentError("VFIO fd server needs a provider");
  if (options.io_timeout.count() <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "VFIO fd server io_timeout must be positive, not %d ms", options.io_timeout.count()));
  }
  absl::StatusOr<UnixSocketAddress> address = UnixSocketAddress::Parse(options.socket);
  if (!address.ok()) return address.status();
  ino_t inode = 0;
  absl::StatusOr<OwnedFd> listener = Listen(*address, options.socket, &inode);
  if (!listener.ok()) return listener.status();
  OwnedFd stop(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (stop.get() < 0) {
    const int err = errno;
    if (inode != 0) ::unlink(address->path());
    return ErrnoStatus(err, "eventfd", options.socket, "the server's stop signal");
  }
  return std::unique_ptr<FdServer>(new FdServer(std::move(provider), std::move(options),
                                                std::move(*listener), std::move(stop), inode));
}

FdServer::FdServer(std::shared_ptr<VfioFdProvider> provider, FdServerOptions options,
                   OwnedFd listener, OwnedFd stop, ino_t inode)
    : provider_(std::move(provider)),
      options_(std::move(options)),
      listener_(std::move(listener)),
      stop_(std::move(stop)),
      inode_(inode),
      thread_([this] { Run(); }) {}

FdServer::~FdServer() {
  const uint64_t one = 1;
  // An eventfd write of 1 cannot fail short of overflow; the thread polls it.
  [[maybe_unused]] ssize_t n = ::write(stop_.get(), &one, sizeof(one));
  thread_.join();
  if (inode_ != 0) {
    // Remove the file only if it is still ours (not a later server's).
    const std::string& path = options_.socket;
    struct stat st;
    if (::lstat(path.c_str(), &st) == 0 && st.st_ino == inode_) ::unlink(path.c_str());
  }
}

VfioFdServerStats FdServer::stats() const {
  return {served_.load(), refused_.load(), malformed_.load(), timed_out_.load()};
}

void FdServer::Run() {
  for (;;) {
    absl::StatusOr<WaitResult> w =
        WaitReadable(listener_.get(), stop_.get(), std::chrono::hours(24), options_.socket);
    if (!w.ok() || *w == WaitResult::kStopped) return;
    if (*w == WaitResult::kTimedOut) continue;
    OwnedFd conn(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (conn.get() >= 0) {
      Serve(conn.get());
      continue;
    }
    if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) continue;
    // Out of fds or memory: back off instead of spinning on the ready listener.
    absl::StatusOr<WaitResult> pause =
        WaitReadable(stop_.get(), -1, options_.io_timeout, options_.socket);
    if (!pause.ok() || *pause == WaitResult::kReady) return;
  }
}

void FdServer::Serve(int conn) {
  const std::string& name = options_.socket;
  absl::StatusOr<WaitResult> w = WaitReadable(conn, stop_.get(), options_.io_timeout, name);
  if (!w.ok() || *w == WaitResult::kStopped) return;
  if (*w == WaitResult::kTimedOut) {
    ++timed_out_;
    Reply(conn,
          ErrorReply(0, absl::StatusCode::kDeadlineExceeded,
                     absl::StrFormat("no request within %d ms", options_.io_timeout.count())),
          -1);
    return;
  }
  uint8_t buffer[kVfioFdRequestSize];
  // Any fds the peer sent are owned by `message` and closed with it.
  absl::StatusOr<ReceivedMessage> message = ReceiveMessage(conn, buffer, name);
  if (!message.ok()) return;  // the peer is gone

  ucred peer{};
  socklen_t len = sizeof(peer);
  if (::getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0) return;
  if (peer.uid != options_.allowed_uid) {
    ++refused_;
    Reply(conn,
          ErrorReply(0, absl::StatusCode::kPermissionDenied,
                     absl::StrFormat("peer uid %d is not allowed", peer.uid)),
          -1);
    return;
  }
  if (message->truncated || message->length != sizeof(buffer)) {
    ++malformed_;
    Reply(conn,
          ErrorReply(0, absl::StatusCode::kInvalidArgument,
                     absl::StrFormat("VFIO fd request is %d bytes, expected %d", message->length,
                                     sizeof(buffer))),
          -1);
    return;
  }
  FdHandling handling = HandleFdRequest(buffer, *provider_);
  ++(handling.malformed ? malformed_ : served_);
  Reply(conn, handling.reply, handling.fd);
}

void FdServer::Reply(int conn, std::span<const uint8_t> reply, int fd) {
  // A peer that has gone or does not read is its own problem: nothing to do.
  [[maybe_unused]] absl::Status s = SendMessage(conn, reply, fd, options_.socket);
}

}  // namespace dmareg::internal
