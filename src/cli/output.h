// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// Writing the command's output so that a failed write is an error: a full
// disk, a closed pipe or /dev/full must not exit 0 with nothing written.
//
//   absl::Status s = WriteAll(stdout, text, "standard output");
//   if (!s.ok()) { fprintf(stderr, "dmareg: %s\n", s.ToString().c_str()); return 1; }

#ifndef DMAREG_SRC_CLI_OUTPUT_H_
#define DMAREG_SRC_CLI_OUTPUT_H_

#include <cstdio>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace dmareg::cli {

// fwrite + fflush + ferror; the error names the call, `what` and the errno.
absl::Status WriteAll(std::FILE* f, absl::string_view text, absl::string_view what);

}  // namespace dmareg::cli

#endif  // DMAREG_SRC_CLI_OUTPUT_H_
