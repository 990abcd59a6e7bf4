// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0

#include "odp/pagemap_pfn.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/errno_status.h"

namespace dmareg::internal {

namespace {
constexpr char kPath[] = "/proc/self/pagemap";
}  // namespace

PagemapPfns PagemapPfns::Open() {
  PagemapPfns p;
  p.fd_ = ::open(kPath, O_RDONLY | O_CLOEXEC);
  if (p.fd_ < 0) return p;
  // A present page of our own: PFN 0 means the kernel hides PFNs from us.
  static thread_local volatile uint64_t probe = 1;
  probe = probe + 1;
  const long page = ::sysconf(_SC_PAGESIZE);
  const uintptr_t va = reinterpret_cast<uintptr_t>(&probe) & ~static_cast<uintptr_t>(page - 1);
  uint64_t word = 0;
  if (p.Read(va, 1, &word).ok()) p.visible_ = Pfn(word) != 0;
  return p;
}

PagemapPfns::PagemapPfns(PagemapPfns&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), visible_(other.visible_) {}

PagemapPfns& PagemapPfns::operator=(PagemapPfns&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    visible_ = other.visible_;
  }
  return *this;
}

PagemapPfns::~PagemapPfns() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status PagemapPfns::Read(uintptr_t va, size_t pages, uint64_t* words) const {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat(kPath, " is not open"));
  const long page = ::sysconf(_SC_PAGESIZE);
  const off_t offset = static_cast<off_t>(va / static_cast<uintptr_t>(page) * 8);
  const size_t bytes = pages * 8;
  size_t done = 0;
  while (done < bytes) {
    const ssize_t n = ::pread(fd_, reinterpret_cast<char*>(words) + done, bytes - done,
                              offset + static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return ErrnoStatus(n < 0 ? errno : EIO, "pread", kPath,
                         absl::StrFormat("va %#x, %u pages", va, pages));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace dmareg::internal
