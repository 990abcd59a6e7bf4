// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// VfioContainer::Wrap: a container the application opened, borrowed.
//
// Borrowed rather than dup'ed: the container fd is the application's, as a
// wrapped VerbsDomain's PD is; it keeps it open while dmareg uses it, and
// closes it when it likes afterwards. (A dup would keep the container, and
// with it the IOMMU mappings of every group still joined, alive past the
// application's close, which it did not ask for.) DPDK's
// rte_vfio_container_create makes a container of its own; this is the other
// case: one the application made and set up.
//
// Bare or set up is told by VFIO_IOMMU_GET_INFO: it answers only once the
// IOMMU type is set (EINVAL before). Set up, the container is handled as an
// adopted one (the IOMMU stays set while the application's groups are
// joined); bare, as one dmareg opened (its first group sets the type).

#include <linux/vfio.h>

#include <cerrno>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "dmareg/errno_status.h"
#include "dmareg/vfio/vfio_domain.h"
#include "dmareg/vfio/vfio_ops.h"
#include "vfio/container_state.h"

namespace dmareg {

absl::StatusOr<std::shared_ptr<VfioContainer>> VfioContainer::Wrap(int container_fd, int iommu_type,
                                                                   VfioContainerOptions options) {
  std::shared_ptr<VfioOps> ops = options.ops != nullptr ? std::move(options.ops) : KernelVfioOps();
  const std::string device = absl::StrCat("VFIO container fd ", container_fd);
  if (container_fd < 0) {
    return absl::InvalidArgumentError(absl::StrCat("wrapping ", device, ": not an fd"));
  }
  if (iommu_type != 0 && iommu_type != VFIO_TYPE1v2_IOMMU && iommu_type != VFIO_TYPE1_IOMMU) {
    return absl::InvalidArgumentError(absl::StrCat("wrapping ", device, ": IOMMU type ", iommu_type,
                                                   " is not type1 (", VFIO_TYPE1_IOMMU,
                                                   ") or type1v2 (", VFIO_TYPE1v2_IOMMU, ")"));
  }
  // An fd that is not a container fails here (ENOTTY, EBADF...).
  const int version = ops->GetApiVersion(container_fd);
  if (version < 0) {
    return ErrnoStatus(errno, "VFIO_GET_API_VERSION", device, "is it an open /dev/vfio/vfio?");
  }
  if (version != VFIO_API_VERSION) {
    return absl::FailedPreconditionError(
        absl::StrFormat("VFIO_GET_API_VERSION on %s: API version %d, this library speaks %d",
                        device, version, VFIO_API_VERSION));
  }
  vfio_iommu_type1_info probe{};
  probe.argsz = sizeof(probe);
  bool set = true;
  if (ops->IommuGetInfo(container_fd, &probe) != 0) {
    if (errno != EINVAL) return ErrnoStatus(errno, "VFIO_IOMMU_GET_INFO", device);
    set = false;  // no IOMMU type yet
  }
  int type = iommu_type;
  if (type == 0) {
    // Set: the type1 driver answers 1 for both types, so v2 is a guess the
    // caller corrects by naming the type. Bare: the best the kernel has.
    if (ops->CheckExtension(container_fd, VFIO_TYPE1v2_IOMMU) > 0) {
      type = VFIO_TYPE1v2_IOMMU;
    } else if (ops->CheckExtension(container_fd, VFIO_TYPE1_IOMMU) > 0) {
      type = VFIO_TYPE1_IOMMU;
    } else {
      return absl::FailedPreconditionError(absl::StrCat(
          "VFIO_CHECK_EXTENSION on ", device,
          ": neither the type1v2 nor the type1 IOMMU is supported (is the IOMMU on?)"));
    }
  }
  std::shared_ptr<VfioContainer> c(
      new VfioContainer(std::move(ops), container_fd, type, /*owns_fd=*/false));
  c->state_ = std::make_unique<State>(type, /*adopted_type=*/set);
  if (set) {
    if (absl::Status st = ReadAdoptedInfo(*c, type); !st.ok()) return st;
  }
  return c;
}

}  // namespace dmareg
