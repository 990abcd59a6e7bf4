// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/pagemap.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "absl/strings/str_format.h"
#include "dmareg/errno_status.h"

namespace dmareg {

absl::StatusOr<PagemapReader> PagemapReader::Open() { return OpenPath("/proc/self/pagemap"); }

absl::StatusOr<PagemapReader> PagemapReader::OpenPath(const std::string& path, bool probe) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "open", path);
  PagemapReader reader(fd, path, static_cast<size_t>(sysconf(_SC_PAGESIZE)));
  if (probe) {
    if (absl::Status s = reader.Probe(); !s.ok()) return s;
  }
  return reader;
}

PagemapReader::PagemapReader(int fd, std::string path, size_t page_size)
    : fd_(fd), path_(std::move(path)), page_size_(page_size) {}

PagemapReader::PagemapReader(PagemapReader&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      path_(std::move(other.path_)),
      page_size_(other.page_size_),
      pfns_visible_(other.pfns_visible_),
      hidden_reason_(std::move(other.hidden_reason_)) {}

PagemapReader& PagemapReader::operator=(PagemapReader&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
    page_size_ = other.page_size_;
    pfns_visible_ = other.pfns_visible_;
    hidden_reason_ = std::move(other.hidden_reason_);
  }
  return *this;
}

PagemapReader::~PagemapReader() {
  if (fd_ >= 0) close(fd_);
}

absl::Status PagemapReader::Probe() {
  // A page of our own, written so that it is present.
  void* p = mmap(nullptr, page_size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return ErrnoStatus(errno, "mmap", "a pagemap probe page");
  *static_cast<volatile char*>(p) = 1;
  std::vector<uint64_t> entry;
  absl::Status s = Read(reinterpret_cast<uintptr_t>(p), 1, &entry);
  munmap(p, page_size_);
  if (!s.ok()) return s;
  if (!PagePresent(entry[0])) {
    hidden_reason_ = absl::StrFormat("%s shows a page just written as not present", path_);
  } else if (PagePfn(entry[0]) == 0) {
    hidden_reason_ = absl::StrFormat(
        "%s hides page frame numbers from this process (reading them needs CAP_SYS_ADMIN)", path_);
  }
  pfns_visible_ = hidden_reason_.empty();
  return absl::OkStatus();
}

absl::Status PagemapReader::Read(uintptr_t addr, size_t pages,
                                 std::vector<uint64_t>* entries) const {
  const uintptr_t first = addr / page_size_;
  if (addr % page_size_ != 0 || pages == 0 || pages > UINTPTR_MAX / page_size_ - first) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: cannot read %u pages from %#x (page-aligned, non-empty, "
                        "inside the address space)",
                        path_, pages, addr));
  }
  entries->resize(pages);
  size_t done = 0;
  while (done < pages) {
    const size_t want = std::min(kBatch, pages - done);
    char* out = reinterpret_cast<char*>(entries->data() + done);
    const off_t offset = static_cast<off_t>((first + done) * sizeof(uint64_t));
    const ssize_t n = pread(fd_, out, want * sizeof(uint64_t), offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "pread", path_,
                         absl::StrFormat("pages from %#x", addr + done * page_size_));
    }
    if (n == 0 || n % sizeof(uint64_t) != 0) {
      return absl::OutOfRangeError(
          absl::StrFormat("pread on %s: %d bytes for the pages from %#x (past the address space?)",
                          path_, n, addr + done * page_size_));
    }
    done += static_cast<size_t>(n) / sizeof(uint64_t);
  }
  return absl::OkStatus();
}

absl::Status PagemapReader::ReadFrames(uintptr_t addr, size_t pages,
                                       std::vector<uint64_t>* frames) const {
  if (absl::Status s = Read(addr, pages, frames); !s.ok()) return s;
  for (uint64_t& e : *frames) e = PageFrame(e);
  return absl::OkStatus();
}

}  // namespace dmareg
