// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The container's edge: the type1 map and unmap calls with their errno
// turned into statuses, and the descriptions its table uses.
#include <linux/vfio.h>

#include <cerrno>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "dmareg/errno_status.h"
#include "dmareg/memlock.h"
#include "vfio/container_state.h"

namespace dmareg::internal {

std::string DescribeMapping(uint64_t va, uint64_t iova, uint64_t length, bool writable) {
  return absl::StrFormat("{va %#x, iova [%#x, %#x), %s}", va, iova, iova + length,
                         writable ? "rw" : "ro");
}

std::string RangesString(const std::vector<Range>& ranges) {
  if (ranges.empty()) return "(none)";
  return absl::StrJoin(ranges, ", ",
                       [](std::string* out, const Range& r) { out->append(r.ToString()); });
}

bool InsideOne(const std::vector<Range>& ranges, Range r) {
  if (ranges.empty()) return true;  // the kernel gave none: any IOVA
  for (const Range& x : ranges) {
    if (x.Contains(r)) return true;
  }
  return false;
}

// The parts of `r` inside the allocator's usable space.
std::vector<Range> PartsInside(const internal::IovaAllocator& a, Range r) {
  std::vector<Range> parts;
  for (const Range& u : a.usable()) {
    if (u.Overlaps(r)) parts.push_back(u.Intersect(r));
  }
  return parts;
}

absl::Status KernelMap(VfioOps& ops, int fd, const VfioContainerInfo& info, size_t table_size,
                       uint64_t va, uint64_t iova, uint64_t length, bool writable) {
  if (!writable) {
    // type1 pins a read-only mapping without FOLL_WRITE: a private page the
    // process never wrote is pinned as the shared zero page (or a page still
    // shared copy-on-write), and the process's next write moves it to a new
    // page the device never sees. Populating for write first (content kept)
    // gives the process its own pages before they are pinned. Memory the
    // process cannot write cannot move that way; errors are the kernel's to
    // report in MAP_DMA.
    (void)ops.PopulateWrite(va, length);
  }
  vfio_iommu_type1_dma_map map{};
  map.argsz = sizeof(map);
  map.flags = VFIO_DMA_MAP_FLAG_READ | (writable ? VFIO_DMA_MAP_FLAG_WRITE : 0);
  map.vaddr = va;
  map.iova = iova;
  map.size = length;
  if (ops.MapDma(fd, &map) == 0) return absl::OkStatus();
  const int err = errno;
  const std::string device = absl::StrCat("VFIO container (fd ", fd, ")");
  const std::string what = DescribeMapping(va, iova, length, writable);
  switch (err) {
    case EEXIST:
      return absl::AlreadyExistsError(absl::StrCat(
          "VFIO_IOMMU_MAP_DMA on ", device, ": ", what,
          " overlaps a mapping dmareg's table does not hold: one the application made itself "
          "on a container it handed over (VfioContainer::Wrap), or another process's sharing "
          "the container; the kernel cannot list them, so choose IOVAs clear of them"));
    case ENOSPC:
      return absl::ResourceExhaustedError(absl::StrCat(
          "VFIO_IOMMU_MAP_DMA on ", device, ": ", what, ": the kernel's dma_entry_limit is spent (",
          info.dma_avail ? absl::StrCat("dma_avail was ", *info.dma_avail, " when last read, ")
                         : std::string(),
          table_size,
          " mappings in this table); raise /sys/module/vfio_iommu_type1/parameters/"
          "dma_entry_limit or map fewer, larger buffers"));
    case ENOMEM:
      // type1 pins the pages and charges them to the process's memlock limit.
      return ErrnoStatus(
          err, "VFIO_IOMMU_MAP_DMA", device,
          absl::StrCat(what, "; the mapping pins its pages against the process's ", MemlockNote()));
    default:
      return ErrnoStatus(err, "VFIO_IOMMU_MAP_DMA", device, what);
  }
}

absl::StatusOr<uint64_t> KernelUnmap(VfioOps& ops, int fd, uint64_t iova, uint64_t length) {
  vfio_iommu_type1_dma_unmap unmap{};
  unmap.argsz = sizeof(unmap);
  unmap.iova = iova;
  unmap.size = length;
  if (ops.UnmapDma(fd, &unmap) != 0) {
    return ErrnoStatus(errno, "VFIO_IOMMU_UNMAP_DMA", absl::StrCat("VFIO container (fd ", fd, ")"),
                       absl::StrFormat("iova [%#x, %#x)", iova, iova + length));
  }
  return unmap.size;
}

}  // namespace dmareg::internal
