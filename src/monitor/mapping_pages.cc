// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "monitor/mapping_pages.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/string_view.h"
#include "monitor/vma.h"

namespace dmareg::internal {

namespace {

// <linux/fs.h> of Linux 6.11+ (Debian bookworm's headers predate it); the
// size field lets the kernel take this layout from any later one.
struct ProcmapQuery {
  uint64_t size;
  uint64_t query_flags;
  uint64_t query_addr;
  uint64_t vma_start;
  uint64_t vma_end;
  uint64_t vma_flags;
  uint64_t vma_page_size;
  uint64_t vma_offset;
  uint64_t inode;
  uint32_t dev_major;
  uint32_t dev_minor;
  uint32_t vma_name_size;
  uint32_t build_id_size;
  uint64_t vma_name_addr;
  uint64_t build_id_addr;
};
static_assert(sizeof(ProcmapQuery) == 104);
constexpr unsigned long kProcmapQuery = _IOWR('f', 17, ProcmapQuery);

// Closes on scope exit.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  const int fd_;
};

// Calls `f(line)` for each whole line of the file behind `fd`, from offset 0,
// until it returns true; false if it never did (or a read failed).
template <typename F>
bool ForEachLine(int fd, F f) {
  std::string pending;
  char buf[16384];
  for (off_t off = 0;;) {
    const ssize_t n = pread(fd, buf, sizeof buf, off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return !pending.empty() && f(absl::string_view(pending));
    off += n;
    pending.append(buf, static_cast<size_t>(n));
    size_t from = 0;
    for (size_t nl; (nl = pending.find('\n', from)) != std::string::npos; from = nl + 1) {
      if (f(absl::string_view(pending).substr(from, nl - from))) return true;
    }
    pending.erase(0, from);
  }
}

uint64_t BasePage() { return static_cast<uint64_t>(sysconf(_SC_PAGESIZE)); }

// KernelPageSize of the mapping starting at `start`, from /proc/self/smaps;
// 0 if it cannot be read.
uint64_t SmapsPageSize(uint64_t start) {
  const Fd fd(open("/proc/self/smaps", O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return 0;
  bool inside = false;
  uint64_t kib = 0;
  ForEachLine(fd.get(), [&](absl::string_view line) {
    if (std::optional<MapsLine> m = ParseMapsLine(line)) {
      if (inside || m->start > start) return true;  // past it
      inside = m->start == start;
      return false;
    }
    constexpr absl::string_view kKey = "KernelPageSize:";
    if (!inside || !absl::StartsWith(line, kKey)) return false;
    absl::string_view v = absl::StripAsciiWhitespace(line.substr(kKey.size()));
    (void)absl::SimpleAtoi(v.substr(0, v.find(' ')), &kib);
    return true;
  });
  return kib * 1024;
}

// Whether any hugetlb page exists on the system (the pools of every size,
// surplus pages included, in /proc/meminfo's "Hugetlb:" line, Linux 4.16+):
// where none does, no mapping can be hugetlb. True where it cannot be read.
bool SystemHasHugetlbPages() {
  const Fd fd(open("/proc/meminfo", O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return true;
  bool any = true;
  ForEachLine(fd.get(), [&](absl::string_view line) {
    constexpr absl::string_view kKey = "Hugetlb:";
    if (!absl::StartsWith(line, kKey)) return false;
    absl::string_view v = absl::StripAsciiWhitespace(line.substr(kKey.size()));
    uint64_t kib = 1;
    any = !absl::SimpleAtoi(v.substr(0, v.find(' ')), &kib) || kib != 0;
    return true;
  });
  return any;
}

}  // namespace

std::optional<MappingPages> MappingPagesByQuery(int maps_fd, uint64_t addr, bool* unsupported) {
  ProcmapQuery q{};
  q.size = sizeof q;
  q.query_addr = addr;  // query_flags 0: the mapping covering it, or ENOENT
  *unsupported = false;
  if (ioctl(maps_fd, kProcmapQuery, &q) != 0) {
    *unsupported = errno == ENOTTY || errno == EINVAL || errno == EOPNOTSUPP;
    return std::nullopt;
  }
  if (q.vma_page_size == 0 || !std::has_single_bit(q.vma_page_size)) return std::nullopt;
  return MappingPages{.start = q.vma_start, .end = q.vma_end, .page_size = q.vma_page_size};
}

std::optional<MappingPages> MappingPagesFromMaps(int maps_fd, uint64_t addr) {
  std::optional<MapsLine> found;
  ForEachLine(maps_fd, [&](absl::string_view line) {
    std::optional<MapsLine> m = ParseMapsLine(line);
    if (!m || m->end <= addr) return false;
    if (m->start <= addr) found = m;
    return true;  // the lines are in address order: found, or a hole
  });
  if (!found) return std::nullopt;
  MappingPages pages{.start = found->start, .end = found->end, .page_size = BasePage()};
  // Anonymous memory is in base pages (THP included); only memory with a
  // file behind it can be hugetlb, and only smaps says so before 6.11.
  if (found->inode != 0) {
    const uint64_t size = SmapsPageSize(found->start);
    if (size != 0 && std::has_single_bit(size)) pages.page_size = size;
  }
  return pages;
}

std::optional<MappingPages> MappingPagesAt(uint64_t addr) {
  // Opened on each call: a descriptor of /proc/self/maps kept across a fork
  // would describe the parent.
  const Fd fd(open("/proc/self/maps", O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return std::nullopt;
  bool unsupported = false;
  std::optional<MappingPages> pages = MappingPagesByQuery(fd.get(), addr, &unsupported);
  if (pages || !unsupported) return pages;
  return MappingPagesFromMaps(fd.get(), addr);
}

Range RoundOutToMappingPages(Range span) {
  const Fd fd(open("/proc/self/maps", O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return span;
  bool unsupported = false;
  std::optional<MappingPages> first = MappingPagesByQuery(fd.get(), span.begin(), &unsupported);
  if (unsupported) {
    // Before 6.11 the answer costs a read of /proc/self/maps (9 us, to
    // 170 us in a process of 1,000 mappings): skipped where the system has
    // no huge pages at all, as most have none.
    if (!SystemHasHugetlbPages()) return span;
    first = MappingPagesFromMaps(fd.get(), span.begin());
  }
  if (!first) return span;
  std::optional<MappingPages> last = first;
  if (span.end() > first->end) {
    last = unsupported ? MappingPagesFromMaps(fd.get(), span.end() - 1)
                       : MappingPagesByQuery(fd.get(), span.end() - 1, &unsupported);
  }
  if (!last) return span;
  const uint64_t base = BasePage();
  uint64_t begin = span.begin(), end = span.end();
  // A hugetlb mapping starts and ends on its page boundaries, so rounding
  // stays inside it.
  if (first->page_size > base) begin &= ~(first->page_size - 1);
  if (last->page_size > base && end % last->page_size != 0) {
    end = (end | (last->page_size - 1)) + 1;
    if (end == 0 || end > last->end) return span;  // a malformed answer
  }
  return Range::FromBounds(begin, end).value_or(span);
}

}  // namespace dmareg::internal
