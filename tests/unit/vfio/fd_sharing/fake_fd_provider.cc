// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "unit/vfio/fd_sharing/fake_fd_provider.h"

#include <sys/mman.h>

#include "absl/strings/str_format.h"

namespace dmareg::internal {

FakeFdProvider::FakeFdProvider() : container_(::memfd_create("container", MFD_CLOEXEC)) {}

absl::StatusOr<int> FakeFdProvider::ContainerFd() {
  MutexLock lock(&mu_);
  if (!container_override_.ok() || *container_override_ != -1) return container_override_;
  return container_.get();
}

absl::StatusOr<int> FakeFdProvider::IommuType() {
  MutexLock lock(&mu_);
  return iommu_type_;
}

GroupFdAnswer FakeFdProvider::GroupFd(int group) {
  MutexLock lock(&mu_);
  if (auto it = groups_.find(group); it != groups_.end()) {
    return {GroupFdAnswer::kOk, it->second.get(), ""};
  }
  if (unbound_.contains(group)) return {GroupFdAnswer::kNoFd, -1, ""};
  return {GroupFdAnswer::kErr, -1, absl::StrFormat("no IOMMU group %d", group)};
}

void FakeFdProvider::AddGroup(int group) {
  MutexLock lock(&mu_);
  groups_[group] = OwnedFd(::memfd_create(absl::StrFormat("group%d", group).c_str(), MFD_CLOEXEC));
}

void FakeFdProvider::MarkUnbound(int group) {
  MutexLock lock(&mu_);
  unbound_.insert(group);
}

void FakeFdProvider::SetIommuType(absl::StatusOr<int> type) {
  MutexLock lock(&mu_);
  iommu_type_ = std::move(type);
}

void FakeFdProvider::SetContainerFd(absl::StatusOr<int> fd) {
  MutexLock lock(&mu_);
  container_override_ = std::move(fd);
}

int FakeFdProvider::group_fd(int group) {
  MutexLock lock(&mu_);
  auto it = groups_.find(group);
  return it == groups_.end() ? -1 : it->second.get();
}

}  // namespace dmareg::internal
