// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// pagemap.h: PagemapReader, the page frames under a range of this process's pages, from
// /proc/self/pagemap (one 64-bit entry per page: bit 63 present, bits 0-54
// the PFN). The kernel shows PFNs only to readers with CAP_SYS_ADMIN; for
// others it zeroes them, which pfns_visible() tells (probed at Open on a page
// known to be present).
//
//   absl::StatusOr<dmareg::PagemapReader> pm = dmareg::PagemapReader::Open();
//   if (!pm.ok() || !pm->pfns_visible()) return;     // nothing to compare
//   std::vector<uint64_t> frames;
//   absl::Status s = pm->Read(addr, pages, &frames);  // PageEntry words
//   if (PagePresent(frames[0])) use(PagePfn(frames[0]));
//
// The fd is the opener's: a forked child reading it reads its parent. The
// cache's PFN check and the on-demand IOVA cache's page table read it; so
// may an application that wants to see which frames a registration pins.

#ifndef DMAREG_PAGEMAP_H_
#define DMAREG_PAGEMAP_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#pragma GCC visibility push(default)

namespace dmareg {

inline constexpr uint64_t kPagemapPresent = uint64_t{1} << 63;
inline constexpr uint64_t kPagemapPfnMask = (uint64_t{1} << 55) - 1;

inline bool PagePresent(uint64_t entry) { return (entry & kPagemapPresent) != 0; }
inline uint64_t PagePfn(uint64_t entry) { return entry & kPagemapPfnMask; }
// What of an entry says which frame is mapped: present bit and PFN (the
// other bits, soft-dirty and exclusive, change without the frame changing).
inline uint64_t PageFrame(uint64_t entry) { return entry & (kPagemapPresent | kPagemapPfnMask); }

class PagemapReader {
 public:
  // Opens /proc/self/pagemap (NotFound / PermissionDenied... naming it) and
  // probes whether PFNs are visible.
  static absl::StatusOr<PagemapReader> Open();
  // For tests: any file laid out like a pagemap.
  static absl::StatusOr<PagemapReader> OpenPath(const std::string& path, bool probe = true);

  PagemapReader(PagemapReader&& other) noexcept;
  PagemapReader& operator=(PagemapReader&& other) noexcept;
  PagemapReader(const PagemapReader&) = delete;
  PagemapReader& operator=(const PagemapReader&) = delete;
  ~PagemapReader();

  // The entries of `pages` pages from page-aligned `addr` (replacing
  // `*entries`), read in batches. InvalidArgument for an unaligned address,
  // zero pages, or a range past the end of the address space.
  absl::Status Read(uintptr_t addr, size_t pages, std::vector<uint64_t>* entries) const;
  // The PageFrame of each page, as Read.
  absl::Status ReadFrames(uintptr_t addr, size_t pages, std::vector<uint64_t>* frames) const;

  // False where the kernel zeroes PFNs for this reader (no CAP_SYS_ADMIN).
  bool pfns_visible() const { return pfns_visible_; }
  // Why PFNs are hidden ("" when visible).
  const std::string& hidden_reason() const { return hidden_reason_; }
  size_t page_size() const { return page_size_; }

 private:
  PagemapReader(int fd, std::string path, size_t page_size);
  // Reads the entry of one page we touched: a present page with PFN 0 means
  // PFNs are hidden.
  absl::Status Probe();

  // Entries read per pread (4 KiB of entries: 2 MiB of memory at 4 KiB pages).
  static constexpr size_t kBatch = 512;
  int fd_ = -1;
  std::string path_;
  size_t page_size_ = 0;
  bool pfns_visible_ = false;
  std::string hidden_reason_;
};

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_PAGEMAP_H_
