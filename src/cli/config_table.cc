// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "cli/config_table.h"

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "dmareg/config.h"

namespace dmareg::cli {
namespace {

absl::string_view View(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// `CacheOptions::paging` -> `paging`: the field alone, as dmareg(7) names
// fields (its table's column is narrow).
absl::string_view Field(std::string_view sets) {
  absl::string_view s = View(sets);
  if (const size_t colons = s.rfind("Options::"); colons != absl::string_view::npos) {
    s.remove_prefix(colons + 9);
  }
  return s;
}

std::string Markdown() {
  std::string out =
      "| Variable | Values | Default | Sets | Meaning |\n"
      "|---|---|---|---|---|\n";
  for (const EnvironmentVariable& v : EnvironmentVariables()) {
    // Words as code, as a reader types them; prose as it is.
    const std::string values =
        v.words.empty() ? std::string(View(v.values))
                        : absl::StrJoin(v.words, ", ", [](std::string* o, std::string_view w) {
                            absl::StrAppend(o, "`", View(w), "`");
                          });
    absl::StrAppend(&out, "| `", View(v.name), "` | ", values, " | `", View(v.default_value),
                    "` | ", View(v.sets), " | ", View(v.meaning), " |\n");
  }
  return out;
}

// Text for a tbl cell or text block: man's minus signs, and nothing a
// line could start with that troff would take for a request.
std::string Roff(absl::string_view text) {
  std::string out = absl::StrReplaceAll(text, {{"\\", "\\e"}, {"-", "\\-"}});
  if (!out.empty() && (out[0] == '.' || out[0] == '\'')) out.insert(0, "\\&");
  return out;
}

std::string Man() {
  std::string out =
      ".TS\n"
      "allbox;\n"
      "lb lb lb\n"
      "l lw(24n) l.\n"
      "Variable\tValues; meaning (field)\tDefault\n";
  for (const EnvironmentVariable& v : EnvironmentVariables()) {
    absl::StrAppend(&out, Roff(View(v.name)), "\tT{\n", Roff(View(v.values)), "\n.br\n",
                    Roff(View(v.meaning)), "\n(\\fB", Roff(Field(v.sets)), "\\fR)\nT}\t",
                    Roff(View(v.default_value)), "\n");
  }
  absl::StrAppend(&out, ".TE\n");
  return out;
}

std::string Text() {
  std::string out;
  for (const EnvironmentVariable& v : EnvironmentVariables()) {
    absl::StrAppend(&out, View(v.name), "\n", "  values:  ", View(v.values), "\n",
                    "  default: ", View(v.default_value), "\n", "  sets:    ", View(v.sets), "\n",
                    "  ", View(v.meaning), "\n");
  }
  return out;
}

}  // namespace

absl::StatusOr<TableFormat> ParseTableFormat(absl::string_view word) {
  if (word == "text") return TableFormat::kText;
  if (word == "markdown") return TableFormat::kMarkdown;
  if (word == "man") return TableFormat::kMan;
  return absl::InvalidArgumentError(
      absl::StrCat("--table=", word, ": want one of text, markdown, man"));
}

std::string RenderEnvironmentTable(TableFormat format) {
  switch (format) {
    case TableFormat::kMarkdown:
      return Markdown();
    case TableFormat::kMan:
      return Man();
    case TableFormat::kText:
      break;
  }
  return Text();
}

}  // namespace dmareg::cli
