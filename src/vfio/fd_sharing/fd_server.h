// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// FdServer: the primary's side of VFIO fd sharing. Listens on a Unix
// SOCK_SEQPACKET socket and answers each connection's one request with the
// provider's fds (fd_handler.h), on a thread of its own.
//
//   auto server = FdServer::Start(provider, {.socket = "@dmareg-vfio"});
//   ... secondaries call RequestVfioContainerFd("@dmareg-vfio") ...
//   server->reset();   // stops: closes the socket, joins the thread
//
// Why SOCK_SEQPACKET: a request is one message, so a short, long or empty
// one is seen as such (MSG_TRUNC gives the real length) with no framing to
// get wrong, and the connection still gives SO_PEERCRED and an end.
//
// One connection at a time: accept, SO_PEERCRED, wait for the request at
// most io_timeout (or until stopped), reply, close. A peer that stalls holds
// the others back by io_timeout at most; the primary's own threads never
// wait for it. The request is read before a refused peer is answered, so
// that closing never finds unread data (which would reset the peer's socket
// before it reads the refusal).

#ifndef DMAREG_SRC_VFIO_MP_FD_SERVER_H_
#define DMAREG_SRC_VFIO_MP_FD_SERVER_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "dmareg/vfio/fd_sharing.h"
#include "vfio/fd_sharing/fd_provider.h"
#include "vfio/fd_sharing/fd_socket.h"

namespace dmareg::internal {

using FdServerOptions = VfioFdServerOptions;

class FdServer {
 public:
  // InvalidArgument for a bad socket name or a null provider; the bind
  // error (AlreadyExists when a live server holds the name). A filesystem
  // socket left by a server that is gone is replaced.
  static absl::StatusOr<std::unique_ptr<FdServer>> Start(std::shared_ptr<VfioFdProvider> provider,
                                                         FdServerOptions options);
  ~FdServer();
  FdServer(const FdServer&) = delete;
  FdServer& operator=(const FdServer&) = delete;

  const std::string& socket() const { return options_.socket; }
  VfioFdServerStats stats() const;

 private:
  FdServer(std::shared_ptr<VfioFdProvider> provider, FdServerOptions options, OwnedFd listener,
           OwnedFd stop, ino_t inode);
  void Run();
  void Serve(int conn);
  void Reply(int conn, std::span<const uint8_t> reply, int fd);

  const std::shared_ptr<VfioFdProvider> provider_;
  const FdServerOptions options_;
  OwnedFd listener_;
  OwnedFd stop_;       // eventfd: written once by the destructor
  const ino_t inode_;  // the socket file's (0: abstract), removed only if still ours
  std::atomic<uint64_t> served_{0};
  std::atomic<uint64_t> refused_{0};
  std::atomic<uint64_t> malformed_{0};
  std::atomic<uint64_t> timed_out_{0};
  std::thread thread_;  // last: started once everything above is set
};

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_VFIO_MP_FD_SERVER_H_
