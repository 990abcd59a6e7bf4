// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/vfio/vfio_ops.h"

#include <memory>
#include <string_view>
#include <utility>
#include <vector>

#include "dmareg/vfio/vfio_domain.h"

namespace dmareg::testing {

// The friend VfioContainer and VfioDomain name: the one way from this
// library to their constructors over a given VfioOps.
class VfioAccess {
 public:
  static absl::StatusOr<std::shared_ptr<VfioContainer>> OpenContainer(
      std::shared_ptr<VfioOps> ops) {
    return VfioContainer::OpenWith(std::move(ops));
  }
  static absl::StatusOr<std::shared_ptr<VfioContainer>> AdoptContainer(std::shared_ptr<VfioOps> ops,
                                                                       int container_fd,
                                                                       int iommu_type) {
    return VfioContainer::AdoptWith(std::move(ops), container_fd, iommu_type);
  }
  static absl::StatusOr<std::shared_ptr<VfioContainer>> WrapContainer(std::shared_ptr<VfioOps> ops,
                                                                      int container_fd,
                                                                      int iommu_type) {
    return VfioContainer::WrapWith(std::move(ops), container_fd, iommu_type);
  }
  static absl::StatusOr<std::shared_ptr<VfioDomain>> OpenDomain(std::shared_ptr<VfioOps> ops,
                                                                std::string_view address,
                                                                VfioDomainOptions options) {
    return VfioDomain::OpenWith(std::move(ops), address, std::move(options));
  }
  static absl::StatusOr<std::vector<VfioDeviceInfo>> ListDevices(std::shared_ptr<VfioOps> ops) {
    return VfioDomain::ListDevicesWith(std::move(ops));
  }
};

absl::StatusOr<std::shared_ptr<VfioContainer>> OpenVfioContainer(std::shared_ptr<VfioOps> ops) {
  return VfioAccess::OpenContainer(std::move(ops));
}

absl::StatusOr<std::shared_ptr<VfioContainer>> AdoptVfioContainer(std::shared_ptr<VfioOps> ops,
                                                                  int container_fd,
                                                                  int iommu_type) {
  return VfioAccess::AdoptContainer(std::move(ops), container_fd, iommu_type);
}

absl::StatusOr<std::shared_ptr<VfioContainer>> WrapVfioContainer(std::shared_ptr<VfioOps> ops,
                                                                 int container_fd, int iommu_type) {
  return VfioAccess::WrapContainer(std::move(ops), container_fd, iommu_type);
}

absl::StatusOr<std::shared_ptr<VfioDomain>> OpenVfioDomain(std::shared_ptr<VfioOps> ops,
                                                           std::string_view pci_address,
                                                           VfioDomainOptions options) {
  return VfioAccess::OpenDomain(std::move(ops), pci_address, std::move(options));
}

absl::StatusOr<std::vector<VfioDeviceInfo>> ListVfioDevices(std::shared_ptr<VfioOps> ops) {
  return VfioAccess::ListDevices(std::move(ops));
}

}  // namespace dmareg::testing
