// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The bounds of the mappings (VMAs) that hold a range of this process's
// address space, read from /proc/self/maps (and the parser of its lines,
// which CheckHostAccess reads protections with).
//
// Why a monitor needs them: UFFDIO_REGISTER on part of a mapping splits it
// in two or three, and mremap works on one mapping only, so watching just
// the registered bytes would make an application's later mremap of its own
// mapping fail with EFAULT. Watching whole mappings changes nothing the
// application can see.

#ifndef DMAREG_SRC_MONITOR_VMA_H_
#define DMAREG_SRC_MONITOR_VMA_H_

#include <cstdint>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "dmareg/range.h"

namespace dmareg::internal {

// One line of /proc/self/maps, "start-end perms offset dev inode path"
// (addresses in hex); empty for a line that is not one.
struct MapsLine {
  uint64_t start = 0;
  uint64_t end = 0;
  absl::string_view perms;  // "rw-p": read, write, execute, private/shared
  uint64_t inode = 0;       // 0: anonymous memory (no file behind it)
};
std::optional<MapsLine> ParseMapsLine(absl::string_view line);

// The span from the start of the mapping holding the first byte of `r` to
// the end of the one holding its last, if every byte of `r` (not empty) is
// mapped; NotFound otherwise. `maps` is the text of /proc/self/maps (or a
// test's).
absl::StatusOr<Range> MappingSpan(absl::string_view maps, Range r);

// Reads /proc/self/maps through `fd` (an open descriptor of it, read from
// offset 0) and answers MappingSpan.
absl::StatusOr<Range> MappingSpanOfSelf(int fd, Range r);

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_MONITOR_VMA_H_
