// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
// VfioFdServer: the public face of internal::FdServer.
#include <utility>

#include "dmareg/vfio/fd_sharing.h"
#include "vfio/fd_sharing/fd_server.h"

namespace dmareg {

absl::StatusOr<std::unique_ptr<VfioFdServer>> VfioFdServer::StartWithProvider(
    std::shared_ptr<internal::VfioFdProvider> provider, VfioFdServerOptions options) {
  absl::StatusOr<std::unique_ptr<internal::FdServer>> server =
      internal::FdServer::Start(std::move(provider), std::move(options));
  if (!server.ok()) return server.status();
  return std::unique_ptr<VfioFdServer>(new VfioFdServer(std::move(*server)));
}

VfioFdServer::VfioFdServer(std::unique_ptr<internal::FdServer> server)
    : server_(std::move(server)) {}

VfioFdServer::~VfioFdServer() = default;

const std::string& VfioFdServer::socket() const { return server_->socket(); }

VfioFdServerStats VfioFdServer::stats() const { return server_->stats(); }

}  // namespace dmareg
