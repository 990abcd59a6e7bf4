// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "vfio/iommu_info.h"

#include <linux/vfio.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "dmareg/errno_status.h"

namespace dmareg::internal {
namespace {

// A chain longer than this is a loop the `next` checks missed, or garbage.
constexpr int kMaxCaps = 64;
// The kernel's answer is a few hundred bytes; anything near this is bogus.
constexpr uint32_t kMaxInfoBytes = 1u << 20;

template <typename T>
T Load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

absl::Status Malformed(size_t offset, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrFormat("VFIO_IOMMU_GET_INFO: malformed capability chain at offset %u: %s",
                      static_cast<unsigned>(offset), what));
}

}  // namespace

uint64_t SmallestPage(uint64_t page_sizes) {
  const uint64_t lowest = page_sizes & (~page_sizes + 1);
  return lowest < 4096 ? 4096 : lowest;
}

absl::StatusOr<VfioContainerInfo> ParseIommuInfo(const uint8_t* data, size_t size) {
  constexpr size_t kFixed = sizeof(vfio_iommu_type1_info);
  if (size < kFixed) {
    return absl::InvalidArgumentError(
        absl::StrFormat("VFIO_IOMMU_GET_INFO: %u bytes, less than the %u-byte header",
                        static_cast<unsigned>(size), static_cast<unsigned>(kFixed)));
  }
  const auto info = Load<vfio_iommu_type1_info>(data);
  VfioContainerInfo out;
  if (info.flags & VFIO_IOMMU_INFO_PGSIZES) out.page_sizes = info.iova_pgsizes;
  if (!(info.flags & VFIO_IOMMU_INFO_CAPS) || info.cap_offset == 0) return out;

  size_t offset = info.cap_offset;
  for (int n = 0; offset != 0; ++n) {
    if (n == kMaxCaps) return Malformed(offset, "too many capabilities");
    if (offset < kFixed) return Malformed(offset, "capability inside the fixed header");
    if (offset > size || size - offset < sizeof(vfio_info_cap_header)) {
      return Malformed(offset, "header past the end");
    }
    const auto header = Load<vfio_info_cap_header>(data + offset);
    const size_t room = size - offset;  // bytes from this capability to the end
    if (header.id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE) {
      constexpr size_t kHead = sizeof(vfio_iommu_type1_info_cap_iova_range);
      if (room < kHead) return Malformed(offset, "IOVA range capability truncated");
      const auto cap = Load<vfio_iommu_type1_info_cap_iova_range>(data + offset);
      const uint64_t need = kHead + uint64_t{cap.nr_iovas} * sizeof(vfio_iova_range);
      if (need > room) {
        return Malformed(offset, absl::StrCat(cap.nr_iovas, " IOVA ranges do not fit"));
      }
      out.iova_ranges.clear();
      for (uint32_t i = 0; i < cap.nr_iovas; ++i) {
        const auto r = Load<vfio_iova_range>(data + offset + kHead + i * sizeof(vfio_iova_range));
        if (r.end < r.start) {
          return Malformed(
              offset, absl::StrFormat("IOVA range %#x-%#x ends before it starts", r.start, r.end));
        }
        // Inclusive bounds; the very last byte is in no Range (range.h).
        const uint64_t end = r.end == UINT64_MAX ? UINT64_MAX : r.end + 1;
        out.iova_ranges.push_back(*Range::FromBounds(r.start, end));
      }
    } else if (header.id == VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL) {
      if (room < sizeof(vfio_iommu_type1_info_dma_avail)) {
        return Malformed(offset, "DMA avail capability truncated");
      }
      out.dma_avail = Load<vfio_iommu_type1_info_dma_avail>(data + offset).avail;
    }  // Others (migration, ...) are not ours to read.
    if (header.next != 0 && header.next <= offset) {
      return Malformed(offset, absl::StrCat("next capability at ", header.next, " goes backwards"));
    }
    offset = header.next;
  }
  return out;
}

absl::StatusOr<VfioContainerInfo> ReadIommuInfo(VfioOps& ops, int container_fd, int iommu_type) {
  const std::string device = absl::StrCat("VFIO container (fd ", container_fd, ")");
  uint32_t argsz = sizeof(vfio_iommu_type1_info);
  // The caps may grow between calls (another thread mapping): a few retries.
  for (int attempt = 0; attempt < 4; ++attempt) {
    std::vector<uint8_t> buf(argsz, 0);
    auto* info = reinterpret_cast<vfio_iommu_type1_info*>(buf.data());
    info->argsz = argsz;
    if (ops.IommuGetInfo(container_fd, info) < 0) {
      return ErrnoStatus(errno, "VFIO_IOMMU_GET_INFO", device);
    }
    const uint32_t wanted = info->argsz;
    if (wanted <= argsz) {
      absl::StatusOr<VfioContainerInfo> parsed = ParseIommuInfo(buf.data(), argsz);
      if (parsed.ok()) parsed->iommu_type = iommu_type;
      return parsed;
    }
    if (wanted > kMaxInfoBytes) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "VFIO_IOMMU_GET_INFO on %s: the kernel asks for %u bytes", device, wanted));
    }
    argsz = wanted;
  }
  return absl::InternalError(
      absl::StrCat("VFIO_IOMMU_GET_INFO on ", device, ": the answer kept growing"));
}

}  // namespace dmareg::internal
