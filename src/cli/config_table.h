// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// `dmareg config`: the table of DMAREG_* variables (dmareg::EnvironmentVariables(),
// the one the library parses with) as text, as the Markdown table of the
// documentation, or as the tbl(1) table of dmareg(7), so that the documents
// are generated from the code rather than copied from it.
//
//   absl::StatusOr<TableFormat> f = ParseTableFormat("man");
//   std::string table = RenderEnvironmentTable(*f);   // .TS ... .TE

#ifndef DMAREG_SRC_CLI_CONFIG_TABLE_H_
#define DMAREG_SRC_CLI_CONFIG_TABLE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dmareg::cli {

enum class TableFormat { kText, kMarkdown, kMan };

// "text", "markdown", "man"; anything else is InvalidArgument listing them.
absl::StatusOr<TableFormat> ParseTableFormat(absl::string_view word);

// Every variable, one row each, ending in a newline. kMan is the tbl block
// from .TS to .TE inclusive; kMarkdown the table with its header rows.
std::string RenderEnvironmentTable(TableFormat format);

}  // namespace dmareg::cli

#endif  // DMAREG_SRC_CLI_CONFIG_TABLE_H_
