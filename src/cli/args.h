// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The `dmareg` command line, checked before Abseil parses it. absl flags
// have no short options, no subcommands, and exit 1 (not 2) on an unknown
// flag; `PrepareArgs` adds those three things and nothing else:
//
//   - finds the command (the first positional argument; `--help`/`-h` mean
//     `help`, `--version` means `version`),
//   - rewrites `-d NAME` / `-dNAME` to `--device=NAME` (the one short option),
//   - rejects a flag the command does not take (usage error, exit 2),
//   - returns the arguments for absl::ParseCommandLine, which sets the values.
//
//   absl::StatusOr<PreparedArgs> p = PrepareArgs(args, kDmaregCommands);
//   if (!p.ok()) { usage on stderr; return 2; }
//   // p->command == "devices", p->argv == {"dmareg", "--device=rxe0", "--json"}

#ifndef DMAREG_SRC_CLI_ARGS_H_
#define DMAREG_SRC_CLI_ARGS_H_

#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dmareg::cli {

struct CommandSpec {
  absl::string_view name;
  std::vector<absl::string_view> flags;  // the long names it takes
};

// Flags that take no value: `--json`, `--nojson`, `--json=false`.
inline constexpr absl::string_view kBoolFlags[] = {"json", "effective"};

// Every command and the flags it takes. `help` and `version` take none.
const std::vector<CommandSpec>& DmaregCommands();

struct PreparedArgs {
  std::string command;            // "devices", "bench", "help", "version"
  std::vector<std::string> argv;  // argv[0], then every flag as --name=value
};

// `args` excludes argv[0] (`program` is put first in the result). An
// unknown command, a flag the command does not take, a missing value or a
// second positional argument is InvalidArgument naming it.
absl::StatusOr<PreparedArgs> PrepareArgs(absl::string_view program,
                                         std::span<const std::string> args,
                                         const std::vector<CommandSpec>& commands);

}  // namespace dmareg::cli

#endif  // DMAREG_SRC_CLI_ARGS_H_
