// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// vfio/fd_sharing.h: VFIO fds shared between processes (DPDK's multiprocess
// model). A primary process owns the VFIO container and groups and serves
// their fds on a Unix socket; a secondary asks for them and works on the same
// IOMMU address space.
//
//   // primary
//   dmareg::VfioFdServerOptions o;
//   o.socket = "@dmareg-vfio";                     // abstract; or a path
//   auto server = dmareg::VfioFdServer::Start(container, o);
//
//   // secondary (same uid)
//   absl::StatusOr<int> type = dmareg::RequestVfioIommuType("@dmareg-vfio");
//   absl::StatusOr<int> fd = dmareg::RequestVfioContainerFd("@dmareg-vfio");
//   auto container = dmareg::VfioContainer::Adopt(*fd, *type);
//   absl::StatusOr<int> group = dmareg::RequestVfioGroupFd("@dmareg-vfio", 26);
//
// Only peers whose SO_PEERCRED uid equals `allowed_uid` are served. A peer
// that sends a malformed request, or none within `io_timeout`, gets an error
// reply; the server, on a thread of its own, carries on with the next one.
// A filesystem socket is created mode 0600 and removed when the server goes.
//
// Errors of the client functions: no server (Unavailable, from connect), the
// server refused our uid (PermissionDenied), a group not bound to vfio-pci
// (FailedPrecondition "group N is not bound to vfio-pci"), the primary's own
// failure (its status code and message), a reply we cannot read or a server
// that did not understand us (Internal), no reply in time (DeadlineExceeded).
//
// Thread safety: the functions may be called from any thread; a server's
// methods too.

#ifndef DMAREG_VFIO_FD_SHARING_H_
#define DMAREG_VFIO_FD_SHARING_H_

#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

#pragma GCC visibility push(default)

namespace dmareg {

class VfioContainer;  // dmareg/vfio/vfio_container.h

namespace internal {
class FdServer;
class VfioFdProvider;
}  // namespace internal

// How long a client waits for connect + reply unless told otherwise.
inline constexpr std::chrono::milliseconds kVfioFdDefaultTimeout{5000};

struct VfioFdServerOptions {
  std::string socket;                          // a path, or "@name" (abstract namespace)
  uid_t allowed_uid = ::geteuid();             // the only uid served
  std::chrono::milliseconds io_timeout{1000};  // for a connected peer's request
};

struct VfioFdServerStats {
  uint64_t served = 0;     // well-formed requests of allowed peers answered
  uint64_t refused = 0;    // peers with another uid
  uint64_t malformed = 0;  // requests that did not parse (any size, any bytes)
  uint64_t timed_out = 0;  // peers that sent nothing within io_timeout
};

// A running fd server; stopping it (the destructor) closes the socket and
// every connection, and joins its thread.
class VfioFdServer {
 public:
  // Serves `container`'s fd, its IOMMU type and the fds of the groups
  // attached to it. A group that exists but has no /dev/vfio node (not
  // bound to vfio-pci) is answered NO_FD; a group attached elsewhere, or
  // none, is an error.
  static absl::StatusOr<std::unique_ptr<VfioFdServer>> Start(
      std::shared_ptr<VfioContainer> container, VfioFdServerOptions options);
  // Serves what `provider` hands out (tests use fakes).
  static absl::StatusOr<std::unique_ptr<VfioFdServer>> StartWithProvider(
      std::shared_ptr<internal::VfioFdProvider> provider, VfioFdServerOptions options);

  ~VfioFdServer();
  VfioFdServer(const VfioFdServer&) = delete;
  VfioFdServer& operator=(const VfioFdServer&) = delete;

  const std::string& socket() const;
  VfioFdServerStats stats() const;

 private:
  explicit VfioFdServer(std::unique_ptr<internal::FdServer> server);
  std::unique_ptr<internal::FdServer> server_;
};

// The primary's container fd; the caller owns it (close-on-exec).
absl::StatusOr<int> RequestVfioContainerFd(
    std::string_view socket, std::chrono::milliseconds timeout = kVfioFdDefaultTimeout);
// The fd of IOMMU group `group`; the caller owns it.
absl::StatusOr<int> RequestVfioGroupFd(std::string_view socket, int group,
                                       std::chrono::milliseconds timeout = kVfioFdDefaultTimeout);
// The IOMMU type set on the primary's container (VFIO_TYPE1v2_IOMMU, ...).
absl::StatusOr<int> RequestVfioIommuType(std::string_view socket,
                                         std::chrono::milliseconds timeout = kVfioFdDefaultTimeout);

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_VFIO_FD_SHARING_H_
