// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// VfioFdServer::Start over a VfioContainer: what a primary serves its
// secondaries. The group fds it hands the server are duplicates it owns,
// made under the container's lock, because a domain's Detach may close the
// original at any moment; the server sends each before it asks again (one
// request at a time), so each duplicate lives until the next request.
#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "base/mutex.h"
#include "dmareg/vfio/fd_sharing.h"
#include "dmareg/vfio/vfio_domain.h"
#include "vfio/fd_sharing/fd_provider.h"

namespace dmareg {
namespace internal {

class ContainerFdProvider final : public VfioFdProvider {
 public:
  explicit ContainerFdProvider(std::shared_ptr<VfioContainer> container)
      : container_(std::move(container)) {}
  ~ContainerFdProvider() override { CloseLast(); }

  absl::StatusOr<int> ContainerFd() override { return container_->fd(); }
  absl::StatusOr<int> IommuType() override { return container_->IommuType(); }

  GroupFdAnswer GroupFd(int group) override {
    MutexLock lock(&mu_);
    CloseLastLocked();
    absl::StatusOr<int> fd = container_->DupGroupFd(group);
    if (fd.ok()) {
      last_ = *fd;
      return {GroupFdAnswer::kOk, *fd, ""};
    }
    struct stat st;
    const bool exists =
        ::stat(absl::StrFormat("/sys/kernel/iommu_groups/%d", group).c_str(), &st) == 0;
    const bool node = ::stat(absl::StrFormat("/dev/vfio/%d", group).c_str(), &st) == 0;
    if (exists && !node) return {GroupFdAnswer::kNoFd, -1, ""};
    if (!exists) return {GroupFdAnswer::kErr, -1, absl::StrFormat("no IOMMU group %d", group)};
    return {GroupFdAnswer::kErr, -1,
            absl::StrFormat("IOMMU group %d is not attached to the primary's container", group)};
  }

 private:
  void CloseLast() {
    MutexLock lock(&mu_);
    CloseLastLocked();
  }
  void CloseLastLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (last_ >= 0) ::close(last_);
    last_ = -1;
  }

  const std::shared_ptr<VfioContainer> container_;
  Mutex mu_;                            // a leaf
  int last_ ABSL_GUARDED_BY(mu_) = -1;  // the duplicate handed out last
};

}  // namespace internal

absl::StatusOr<std::unique_ptr<VfioFdServer>> VfioFdServer::Start(
    std::shared_ptr<VfioContainer> container, VfioFdServerOptions options) {
  if (container == nullptr) return absl::InvalidArgumentError("VfioFdServer::Start: no container");
  return StartWithProvider(std::make_shared<internal::ContainerFdProvider>(std::move(container)),
                           std::move(options));
}

}  // namespace dmareg
