// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "cli/output.h"

#include <cerrno>

#include "dmareg/errno_status.h"

namespace dmareg::cli {

absl::Status WriteAll(std::FILE* f, absl::string_view text, absl::string_view what) {
  errno = 0;
  if (!text.empty() && std::fwrite(text.data(), 1, text.size(), f) != text.size()) {
    return ErrnoStatus(errno != 0 ? errno : EIO, "fwrite", what);
  }
  if (std::fflush(f) != 0 || std::ferror(f) != 0) {
    return ErrnoStatus(errno != 0 ? errno : EIO, "fflush", what);
  }
  return absl::OkStatus();
}

}  // namespace dmareg::cli
