// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The page size of the mapping (VMA) that holds an address: the base page
// for most memory, the huge page for hugetlbfs memory (MAP_HUGETLB, memfd
// with MFD_HUGETLB, files on a hugetlbfs mount). Transparent huge pages are
// not huge pages here: they live in base-page mappings and a partial munmap
// splits them.
//
// Why the cache needs it: the kernel unmaps a hugetlb mapping in whole huge
// pages only (munmap rounds the length up), so a registration of 4 KiB
// inside a 2 MiB page could go stale by an unmap that never named its bytes.
// A mapping that covers whole huge pages overlaps every unmap that frees any
// of them, and a request anywhere in a cached huge page is a hit.
//
//   const Range span = RoundOutToMappingPages(request);  // no lock held
#ifndef DMAREG_SRC_MONITOR_MAPPING_PAGES_H_
#define DMAREG_SRC_MONITOR_MAPPING_PAGES_H_

#include <cstdint>
#include <optional>

#include "dmareg/range.h"

namespace dmareg::internal {

struct MappingPages {
  uint64_t start = 0;  // the mapping's bounds
  uint64_t end = 0;
  uint64_t page_size = 0;
};

// The mapping holding `addr`; nullopt where nothing is mapped there or the
// kernel's tables cannot be read. PROCMAP_QUERY (Linux 6.11+) answers in one
// ioctl; older kernels read /proc/self/maps up to the mapping, and for one
// backed by a file (hugetlb memory always is) /proc/self/smaps.
std::optional<MappingPages> MappingPagesAt(uint64_t addr);

// The two ways, for tests. `maps_fd`: an open /proc/self/maps. ByQuery sets
// `*unsupported` where the kernel has no PROCMAP_QUERY.
std::optional<MappingPages> MappingPagesByQuery(int maps_fd, uint64_t addr, bool* unsupported);
std::optional<MappingPages> MappingPagesFromMaps(int maps_fd, uint64_t addr);

// `span` (page-aligned, not empty) rounded out to whole pages of the mappings
// that hold its first and last byte; `span` itself where those are base
// pages or cannot be read (the registration then reports what is wrong).
Range RoundOutToMappingPages(Range span);

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_MONITOR_MAPPING_PAGES_H_
