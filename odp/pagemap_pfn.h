// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// PFNs of the process's own pages from /proc/self/pagemap (8 bytes per
// page: bit 63 present, bits 0-54 the PFN). Without CAP_SYS_ADMIN the kernel
// reports present pages with PFN 0: the PFNs are hidden.
//
//   internal::PagemapPfns pfns = internal::PagemapPfns::Open();
//   std::vector<uint64_t> words(n);
//   if (pfns.Read(va, n, words.data()).ok() && pfns.visible()) ...
#ifndef DMAREG_ODP_PAGEMAP_PFN_H_
#define DMAREG_ODP_PAGEMAP_PFN_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"

namespace dmareg::internal {

inline constexpr uint64_t kPagemapPresent = uint64_t{1} << 63;
inline constexpr uint64_t kPagemapPfnMask = (uint64_t{1} << 55) - 1;

class PagemapPfns {
 public:
  // Opens /proc/self/pagemap and probes, with a page of its own, whether
  // PFNs are visible. A file that cannot be opened: no PFNs (fd() < 0).
  static PagemapPfns Open();
  PagemapPfns() = default;
  PagemapPfns(PagemapPfns&& other) noexcept;
  PagemapPfns& operator=(PagemapPfns&& other) noexcept;
  PagemapPfns(const PagemapPfns&) = delete;
  PagemapPfns& operator=(const PagemapPfns&) = delete;
  ~PagemapPfns();

  // The raw pagemap words of the `pages` pages from `va` (page-aligned).
  absl::Status Read(uintptr_t va, size_t pages, uint64_t* words) const;
  // The PFN of a word, 0 when not present or hidden.
  static uint64_t Pfn(uint64_t word) {
    return (word & kPagemapPresent) != 0 ? word & kPagemapPfnMask : 0;
  }
  bool visible() const { return visible_; }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  bool visible_ = false;
};

}  // namespace dmareg::internal

#endif  // DMAREG_ODP_PAGEMAP_PFN_H_
