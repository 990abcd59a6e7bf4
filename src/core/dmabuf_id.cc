// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// A dma-buf's identity: its file on the dma-buf pseudo file system.
#include "dmareg/dmabuf_id.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "dmareg/errno_status.h"

#ifndef DMA_BUF_MAGIC
#define DMA_BUF_MAGIC 0x444d4142  // "DMAB", <linux/magic.h> since 4.x
#endif

namespace dmareg {

std::string DmaBufId::ToString() const { return absl::StrFormat("dmabuf:%u:%u", dev, ino); }

namespace {

// What /proc/self/fd says the fd is ("pipe:[123]", "/tmp/x"), or "".
std::string FdTarget(int fd) {
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
  char target[256];
  const ssize_t n = readlink(path, target, sizeof(target) - 1);
  return n > 0 ? std::string(target, static_cast<size_t>(n)) : std::string();
}

std::string KindOf(const struct stat& st) {
  switch (st.st_mode & S_IFMT) {
    case S_IFREG:
      return "a regular file";
    case S_IFIFO:
      return "a pipe";
    case S_IFSOCK:
      return "a socket";
    case S_IFCHR:
      return "a character device";
    case S_IFBLK:
      return "a block device";
    case S_IFDIR:
      return "a directory";
    case S_IFLNK:
      return "a symbolic link";
    default:
      return "an anonymous inode";
  }
}

absl::Status NotADmaBuf(int fd, const struct stat& st) {
  const std::string target = FdTarget(fd);
  return absl::InvalidArgumentError(
      absl::StrCat("fd ", fd, " is not a dma-buf: it is ", KindOf(st),
                   target.empty() ? "" : absl::StrCat(" (", target, ")")));
}

// st_dev of the dma-buf file system once one fd was found on it: every
// later fd on that device is a dma-buf without asking fstatfs again (the
// kernel has one internal dma-buf mount).
std::atomic<uint64_t> known_dmabuf_dev{0};

}  // namespace

absl::StatusOr<DmaBufInfo> InspectDmaBuf(int fd) {
  if (fd < 0) return absl::InvalidArgumentError(absl::StrFormat("bad dma-buf fd %d", fd));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    if (err == EBADF) {
      return absl::InvalidArgumentError(
          absl::StrFormat("fd %d is not open (fstat: EBADF): no dma-buf there", fd));
    }
    return ErrnoStatus(err, "fstat", "dma-buf", absl::StrFormat("fd %d", fd));
  }
  const auto dev = static_cast<uint64_t>(st.st_dev);
  if (dev == 0 || dev != known_dmabuf_dev.load(std::memory_order_relaxed)) {
    struct statfs fs;
    if (fstatfs(fd, &fs) != 0) {
      return ErrnoStatus(errno, "fstatfs", "dma-buf", absl::StrFormat("fd %d", fd));
    }
    if (static_cast<uint64_t>(fs.f_type) != DMA_BUF_MAGIC) return NotADmaBuf(fd, st);
    known_dmabuf_dev.store(dev, std::memory_order_relaxed);
  }
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size == 0) {
    // Kernels that leave i_size unset still answer SEEK_END with the size.
    const off_t end = lseek(fd, 0, SEEK_END);
    if (end < 0) {
      return ErrnoStatus(errno, "lseek(SEEK_END)", "dma-buf",
                         absl::StrFormat("fd %d: its size", fd));
    }
    size = static_cast<uint64_t>(end);
  }
  return DmaBufInfo{.id = {.dev = dev, .ino = static_cast<uint64_t>(st.st_ino)}, .size = size};
}

absl::StatusOr<ImportedDmaBuf> ImportedDmaBuf::Import(int fd, const void* alias,
                                                      const DmaBufInspector& inspect) {
  absl::StatusOr<DmaBufInfo> info = inspect ? inspect(fd) : InspectDmaBuf(fd);
  if (!info.ok()) return info.status();
  const int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (own < 0) {
    return ErrnoStatus(errno, "fcntl(F_DUPFD_CLOEXEC)", "dma-buf",
                       absl::StrFormat("fd %d (%s)", fd, info->id.ToString()));
  }
  return ImportedDmaBuf(own, *info, alias);
}

ImportedDmaBuf::ImportedDmaBuf(ImportedDmaBuf&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), info_(other.info_), alias_(other.alias_) {}

ImportedDmaBuf& ImportedDmaBuf::operator=(ImportedDmaBuf&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    info_ = other.info_;
    alias_ = other.alias_;
  }
  return *this;
}

ImportedDmaBuf::~ImportedDmaBuf() {
  if (fd_ >= 0) close(fd_);
}

bool DmaBufIdsUniqueOnRelease(const std::string& release) {
  unsigned major = 0, minor = 0;
  if (std::sscanf(release.c_str(), "%u.%u", &major, &minor) != 2) return false;
  return major > 5 || (major == 5 && minor >= 18);
}

bool DmaBufIdsUnique() {
  static const bool unique = [] {
    struct utsname u;
    return uname(&u) == 0 && DmaBufIdsUniqueOnRelease(u.release);
  }();
  return unique;
}

}  // namespace dmareg
