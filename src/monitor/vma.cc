// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "monitor/vma.h"

#include <unistd.h>

#include <cerrno>
#include <optional>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "dmareg/errno_status.h"

namespace dmareg::internal {

std::optional<MapsLine> ParseMapsLine(absl::string_view line) {
  const size_t dash = line.find('-');
  const size_t space = line.find(' ');
  if (dash == absl::string_view::npos || space == absl::string_view::npos || dash > space) {
    return std::nullopt;
  }
  MapsLine m;
  if (!absl::SimpleHexAtoi(line.substr(0, dash), &m.start) ||
      !absl::SimpleHexAtoi(line.substr(dash + 1, space - dash - 1), &m.end)) {
    return std::nullopt;
  }
  m.perms = line.substr(space + 1, 4);
  // "perms offset dev inode": the inode is the fourth field after the range.
  absl::string_view rest = line.substr(space + 1);
  for (int field = 0; field < 3; ++field) {
    const size_t sp = rest.find(' ');
    if (sp == absl::string_view::npos) return m;  // a test's short line: no inode
    rest.remove_prefix(sp + 1);
  }
  (void)absl::SimpleAtoi(rest.substr(0, rest.find(' ')), &m.inode);
  return m;
}

absl::StatusOr<Range> MappingSpan(absl::string_view maps, Range r) {
  uint64_t span_start = 0;
  bool found = false;
  uint64_t covered = r.begin();  // [r.begin(), covered) is known mapped
  while (!maps.empty()) {
    const size_t nl = maps.find('\n');
    absl::string_view line = maps.substr(0, nl);
    maps.remove_prefix(nl == absl::string_view::npos ? maps.size() : nl + 1);
    const std::optional<MapsLine> m = ParseMapsLine(line);
    if (!m) continue;
    const uint64_t start = m->start, end = m->end;
    if (end <= covered) continue;
    if (start > covered) break;  // a hole before the end of r
    if (!found) span_start = start;
    found = true;
    covered = end;
    if (covered >= r.end()) {
      if (std::optional<Range> span = Range::FromBounds(span_start, end)) return *span;
      break;  // a malformed line
    }
  }
  return absl::NotFoundError(absl::StrCat(r.ToString(), " is not entirely mapped"));
}

absl::StatusOr<Range> MappingSpanOfSelf(int fd, Range r) {
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
  return MappingSpan(text, r);
}

}  // namespace dmareg::internal
