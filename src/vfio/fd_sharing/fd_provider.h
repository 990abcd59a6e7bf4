// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// VfioFdProvider: what a VFIO fd server (fd_server.h) asks the process that
// owns the VFIO state for: the container fd, the IOMMU type set on it, and
// the fd of one IOMMU group. The VFIO core implements it over a
// VfioContainer; tests implement it with memfds.
//
//   class ContainerProvider : public internal::VfioFdProvider {
//     absl::StatusOr<int> ContainerFd() override { return container_->fd(); }
//     absl::StatusOr<int> IommuType() override { return container_->info().iommu_type; }
//     GroupFdAnswer GroupFd(int group) override { ... }
//   };
//
// Every fd handed out is borrowed: the server sends a duplicate (SCM_RIGHTS
// duplicates it into the peer) and never closes it. The server calls these
// from its own thread, so an implementation must be safe to call
// concurrently with whatever else its owner does.

#ifndef DMAREG_SRC_VFIO_MP_FD_PROVIDER_H_
#define DMAREG_SRC_VFIO_MP_FD_PROVIDER_H_

#include <string>

#include "absl/status/statusor.h"

namespace dmareg::internal {

// The answer to "the fd of group N".
struct GroupFdAnswer {
  enum Answer {
    kOk,    // `fd` is the group's fd (borrowed)
    kNoFd,  // the group exists but is not bound to vfio-pci (no /dev/vfio/N)
    kErr,   // anything else; `why` says what
  };
  Answer answer = kErr;
  int fd = -1;
  std::string why;
};

class VfioFdProvider {
 public:
  virtual ~VfioFdProvider() = default;
  // The container's fd (borrowed).
  virtual absl::StatusOr<int> ContainerFd() = 0;
  // The IOMMU type set on the container (VFIO_TYPE1v2_IOMMU, ...).
  virtual absl::StatusOr<int> IommuType() = 0;
  virtual GroupFdAnswer GroupFd(int group) = 0;
};

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_VFIO_MP_FD_PROVIDER_H_
