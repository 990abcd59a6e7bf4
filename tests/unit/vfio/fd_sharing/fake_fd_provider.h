// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// A VfioFdProvider over memfds, for the fd sharing tests: a "container"
// memfd, one memfd per group given to AddGroup, NO_FD for groups marked
// unbound, ERR for the rest; the IOMMU type or an error as set.
//
//   auto p = std::make_shared<FakeFdProvider>();
//   p->AddGroup(26);            // p->group_fd(26) is what a client receives
//   p->SetIommuType(3);

#ifndef DMAREG_TESTS_UNIT_VFIO_MP_FAKE_FD_PROVIDER_H_
#define DMAREG_TESTS_UNIT_VFIO_MP_FAKE_FD_PROVIDER_H_

#include <map>
#include <set>

#include "base/mutex.h"
#include "vfio/fd_sharing/fd_provider.h"
#include "vfio/fd_sharing/fd_socket.h"

namespace dmareg::internal {

class FakeFdProvider : public VfioFdProvider {
 public:
  FakeFdProvider();
  absl::StatusOr<int> ContainerFd() override;
  absl::StatusOr<int> IommuType() override;
  GroupFdAnswer GroupFd(int group) override;

  void AddGroup(int group);
  void MarkUnbound(int group);
  void SetIommuType(absl::StatusOr<int> type);
  void SetContainerFd(absl::StatusOr<int> fd);  // overrides the memfd
  int container_fd() const { return container_.get(); }
  int group_fd(int group);

 private:
  OwnedFd container_;
  // Lock order: a leaf; the server's thread and the test both call in.
  Mutex mu_;
  std::map<int, OwnedFd> groups_ ABSL_GUARDED_BY(mu_);
  std::set<int> unbound_ ABSL_GUARDED_BY(mu_);
  absl::StatusOr<int> iommu_type_ ABSL_GUARDED_BY(mu_) = 3;
  absl::StatusOr<int> container_override_ ABSL_GUARDED_BY(mu_) = -1;
};

}  // namespace dmareg::internal

#endif  // DMAREG_TESTS_UNIT_VFIO_MP_FAKE_FD_PROVIDER_H_
