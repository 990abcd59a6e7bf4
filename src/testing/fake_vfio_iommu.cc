// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// FakeVfioOps: the container's IOMMU calls (API version, extensions,
// SET_IOMMU, GET_INFO with its capability chain, MAP_DMA, UNMAP_DMA), as
// vfio_iommu_type1.c answers them. Groups, devices, regions and sysfs are in
// fake_vfio_ops.cc.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "dmareg/testing/fake_vfio_ops.h"

namespace dmareg::testing {
namespace {

uint64_t SmallestPage(uint64_t page_sizes) { return page_sizes & (~page_sizes + 1); }

}  // namespace

int FakeVfioOps::GetApiVersion(int container_fd) {
  std::lock_guard<std::mutex> lock(mu_);
  return ContainerOf(container_fd) ? VFIO_API_VERSION : Fail(EBADF);
}

int FakeVfioOps::CheckExtension(int container_fd, int extension) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!ContainerOf(container_fd)) return Fail(EBADF);
  if (extension == VFIO_TYPE1v2_IOMMU) return spec_.type1v2 ? 1 : 0;
  if (extension == VFIO_TYPE1_IOMMU) return spec_.type1 ? 1 : 0;
  return 0;
}

int FakeVfioOps::SetIommu(int container_fd, int iommu_type) {
  RunHook(Call::kSetIommu);
  std::lock_guard<std::mutex> lock(mu_);
  if (int err = TakeFailure(Call::kSetIommu)) return Fail(err);
  Container* c = ContainerOf(container_fd);
  if (c == nullptr) return Fail(EBADF);
  if (c->groups.empty() || c->type != 0) return Fail(EINVAL);
  const bool supported = (iommu_type == VFIO_TYPE1v2_IOMMU && spec_.type1v2) ||
                         (iommu_type == VFIO_TYPE1_IOMMU && spec_.type1);
  if (!supported) return Fail(ENODEV);
  c->type = iommu_type;
  c->avail = spec_.dma_entry_limit;
  return 0;
}

int FakeVfioOps::IommuGetInfo(int container_fd, vfio_iommu_type1_info* info) {
  RunHook(Call::kGetInfo);
  std::lock_guard<std::mutex> lock(mu_);
  if (int err = TakeFailure(Call::kGetInfo)) return Fail(err);
  Container* c = ContainerOf(container_fd);
  if (c == nullptr) return Fail(EBADF);
  if (c->type == 0) return Fail(EINVAL);
  constexpr size_t kMinSize = offsetof(vfio_iommu_type1_info, cap_offset) + sizeof(uint32_t);
  const uint32_t argsz = info->argsz;
  if (argsz < kMinSize) return Fail(EINVAL);
  std::vector<uint8_t> answer;
  if (!raw_info_.empty()) {
    answer = raw_info_;
  } else {
    // The fixed part, then the caps at 8-byte aligned offsets, as the kernel builds them.
    answer.resize(sizeof(vfio_iommu_type1_info));
    vfio_iommu_type1_info fixed{};
    fixed.flags = VFIO_IOMMU_INFO_PGSIZES;
    fixed.iova_pgsizes = spec_.page_sizes;
    std::vector<size_t> cap_starts;
    if (spec_.report_ranges) {
      vfio_iommu_type1_info_cap_iova_range head{};
      head.header.id = VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE;
      head.header.version = 1;
      head.nr_iovas = static_cast<uint32_t>(spec_.ranges.size());
      cap_starts.push_back(answer.size());
      answer.resize(answer.size() + sizeof(head) + spec_.ranges.size() * sizeof(vfio_iova_range));
      std::memcpy(answer.data() + cap_starts.back(), &head, sizeof(head));
      std::memcpy(answer.data() + cap_starts.back() + sizeof(head), spec_.ranges.data(),
                  spec_.ranges.size() * sizeof(vfio_iova_range));
    }
    if (spec_.report_dma_avail) {
      vfio_iommu_type1_info_dma_avail cap{};
      cap.header.id = VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL;
      cap.header.version = 1;
      cap.avail = c->avail;
      answer.resize((answer.size() + 7) & ~size_t{7});
      cap_starts.push_back(answer.size());
      answer.resize(answer.size() + sizeof(cap));
      std::memcpy(answer.data() + cap_starts.back(), &cap, sizeof(cap));
    }
    for (size_t i = 0; i + 1 < cap_starts.size(); ++i) {
      const auto next = static_cast<uint32_t>(cap_starts[i + 1]);
      std::memcpy(answer.data() + cap_starts[i] + offsetof(vfio_info_cap_header, next), &next,
                  sizeof(next));
    }
    if (!cap_starts.empty()) {
      fixed.flags |= VFIO_IOMMU_INFO_CAPS;
      fixed.cap_offset = static_cast<uint32_t>(sizeof(vfio_iommu_type1_info));
    }
    fixed.argsz = static_cast<uint32_t>(answer.size());
    std::memcpy(answer.data(), &fixed, sizeof(fixed));
  }
  if (argsz >= answer.size()) {
    std::memcpy(info, answer.data(), answer.size());
    info->argsz = argsz;
    return 0;
  }
  // Too small for the caps: the fixed part, no caps, and the size needed.
  vfio_iommu_type1_info fixed{};
  std::memcpy(&fixed, answer.data(), std::min(answer.size(), sizeof(fixed)));
  fixed.cap_offset = 0;
  fixed.argsz = static_cast<uint32_t>(answer.size());
  std::memcpy(info, &fixed, std::min<size_t>(argsz, sizeof(fixed)));
  return 0;
}

int FakeVfioOps::MapDma(int container_fd, const vfio_iommu_type1_dma_map* map) {
  RunHook(Call::kMapDma);
  std::lock_guard<std::mutex> lock(mu_);
  if (int err = TakeFailure(Call::kMapDma)) return Fail(err);
  Container* c = ContainerOf(container_fd);
  if (c == nullptr) return Fail(EBADF);
  if (c->type == 0) return Fail(EINVAL);
  const uint32_t prot = map->flags & (VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE);
  if (map->flags & ~(VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE)) return Fail(EINVAL);
  const uint64_t page = SmallestPage(spec_.page_sizes);
  if (prot == 0 || map->size == 0 || ((map->size | map->iova | map->vaddr) & (page - 1)) != 0) {
    return Fail(EINVAL);
  }
  const uint64_t last = map->iova + map->size - 1;
  if (last < map->iova || map->vaddr + map->size - 1 < map->vaddr) return Fail(EINVAL);
  for (const auto& [iova, m] : c->maps) {
    if (iova <= last && map->iova <= iova + m.size - 1) return Fail(EEXIST);
  }
  if (c->avail == 0) return Fail(ENOSPC);
  bool valid = false;
  for (const vfio_iova_range& r : spec_.ranges) {
    valid = valid || (r.start <= map->iova && last <= r.end);
  }
  if (!valid) return Fail(EINVAL);
  c->maps[map->iova] = KernelMapping{map->vaddr, map->iova, map->size, prot};
  --c->avail;
  return 0;
}

int FakeVfioOps::UnmapDma(int container_fd, vfio_iommu_type1_dma_unmap* unmap) {
  RunHook(Call::kUnmapDma);
  std::lock_guard<std::mutex> lock(mu_);
  if (int err = TakeFailure(Call::kUnmapDma)) return Fail(err);
  Container* c = ContainerOf(container_fd);
  if (c == nullptr) return Fail(EBADF);
  if (c->type == 0) return Fail(EINVAL);
  const uint64_t page = SmallestPage(spec_.page_sizes);
  const uint64_t iova = unmap->iova;
  const uint64_t size = unmap->size;
  if (size == 0 || ((iova | size) & (page - 1)) != 0 || iova + size - 1 < iova) {
    return Fail(EINVAL);
  }
  const uint64_t last = iova + size - 1;
  auto containing = [&](uint64_t x) -> const KernelMapping* {
    for (const auto& [b, m] : c->maps) {
      if (b <= x && x <= b + m.size - 1) return &m;
    }
    return nullptr;
  };
  if (c->type == VFIO_TYPE1v2_IOMMU) {
    // v2: no mapping may be bisected by the range; nothing is removed if one is.
    const KernelMapping* first = containing(iova);
    const KernelMapping* end = containing(last);
    if ((first && first->iova != iova) || (end && end->iova + end->size != iova + size)) {
      unmap->size = 0;
      return Fail(EINVAL);
    }
  }
  uint64_t unmapped = 0;
  for (auto it = c->maps.begin(); it != c->maps.end();) {
    const KernelMapping& m = it->second;
    const bool touches = m.iova <= last && iova <= m.iova + m.size - 1;
    if (!touches) {
      ++it;
      continue;
    }
    // v1: a range starting after a mapping's first IOVA stops the walk.
    if (c->type != VFIO_TYPE1v2_IOMMU && iova > m.iova) break;
    unmapped += m.size;
    it = c->maps.erase(it);
    ++c->avail;
  }
  unmap->size = unmapped;
  return 0;
}

}  // namespace dmareg::testing
