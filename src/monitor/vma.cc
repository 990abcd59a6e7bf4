// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "monitor/vma.h"

#include <unistd.h>

#include <cerrno>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "base/errno_status.h"

namespace dmareg::internal {

absl::StatusOr<Span> MappingSpan(absl::string_view maps, uintptr_t a, uintptr_t b) {
  Span span;
  bool found = false;
  uintptr_t covered = a;  // [a, covered) is known mapped
  while (!maps.empty()) {
    const size_t nl = maps.find('\n');
    absl::string_view line = maps.substr(0, nl);
    maps.remove_prefix(nl == absl::string_view::npos ? maps.size() : nl + 1);
    // "start-end perms offset dev inode path", addresses in hex.
    const size_t dash = line.find('-');
    const size_t space = line.find(' ');
    if (dash == absl::string_view::npos || space == absl::string_view::npos || dash > space) {
      continue;
    }
    uint64_t start = 0, end = 0;
    if (!absl::SimpleHexAtoi(line.substr(0, dash), &start) ||
        !absl::SimpleHexAtoi(line.substr(dash + 1, space - dash - 1), &end)) {
      continue;
    }
    if (end <= covered) continue;
    if (start > covered) break;  // a hole before b
    if (!found) span.start = start;
    found = true;
    span.end = end;
    covered = end;
    if (covered >= b) return span;
  }
  return absl::NotFoundError(absl::StrFormat("[%#x, %#x) is not entirely mapped", a, b));
}

absl::StatusOr<Span> MappingSpanOfSelf(int fd, uintptr_t a, uintptr_t b) {
  std::string text;
  char buf[16384];
  for (off_t off = 0;;) {
    const ssize_t n = pread(fd, buf, sizeof buf, off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "pread", "/proc/self/maps");
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    off += n;
  }
  return MappingSpan(text, a, b);
}

}  // namespace dmareg::internal
