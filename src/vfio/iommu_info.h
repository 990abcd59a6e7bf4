// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// Reads a type1 container's VFIO_IOMMU_GET_INFO: the page sizes and the
// capability chain (usable IOVA ranges, DMA mappings still available).
//
//   absl::StatusOr<VfioContainerInfo> info = ReadIommuInfo(ops, fd, VFIO_TYPE1v2_IOMMU);
//
// The kernel says how big the answer is (argsz) when the caps do not fit;
// the read grows its buffer and retries. The chain is walked defensively:
// every header and payload must lie inside the bytes the kernel filled, and
// each `next` must move forward, so a malformed chain is a status, never an
// out-of-bounds read or a loop.

#ifndef DMAREG_SRC_VFIO_IOMMU_INFO_H_
#define DMAREG_SRC_VFIO_IOMMU_INFO_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"
#include "dmareg/vfio/vfio_domain.h"
#include "dmareg/vfio/vfio_ops.h"

namespace dmareg::internal {

// Parses a vfio_iommu_type1_info of `size` bytes (as the kernel filled it).
// iommu_type is left 0. InvalidArgument for a truncated header or a
// malformed capability chain.
absl::StatusOr<VfioContainerInfo> ParseIommuInfo(const uint8_t* data, size_t size);

// VFIO_IOMMU_GET_INFO on `container_fd`, grown and retried until the caps fit.
absl::StatusOr<VfioContainerInfo> ReadIommuInfo(VfioOps& ops, int container_fd, int iommu_type);

// The smallest IOMMU page in `page_sizes` (its lowest set bit), at least 4096.
uint64_t SmallestPage(uint64_t page_sizes);

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_VFIO_IOMMU_INFO_H_
