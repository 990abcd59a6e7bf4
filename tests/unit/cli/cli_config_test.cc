// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// `dmareg config`'s tables: one row per variable of the library's table,
// and the documents that hold them are the generator's output: man/dmareg.7
// (and docs/configuration.md where it exists) contain the table exactly as
// `dmareg config --table=man` (`--table=markdown`) prints it today.

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/config_table.h"
#include "dmareg/config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dmareg::cli {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string Slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(ConfigTableTest, ParsesTheFormats) {
  EXPECT_EQ(*ParseTableFormat("text"), TableFormat::kText);
  EXPECT_EQ(*ParseTableFormat("markdown"), TableFormat::kMarkdown);
  EXPECT_EQ(*ParseTableFormat("man"), TableFormat::kMan);
  absl::StatusOr<TableFormat> bad = ParseTableFormat("html");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("text, markdown, man"));
}

TEST(ConfigTableTest, EveryFormatHasOneRowPerVariable) {
  const std::string markdown = RenderEnvironmentTable(TableFormat::kMarkdown);
  const std::string man = RenderEnvironmentTable(TableFormat::kMan);
  const std::string text = RenderEnvironmentTable(TableFormat::kText);
  EXPECT_THAT(markdown, StartsWith("| Variable | Values | Default | Sets | Meaning |\n|---|"));
  EXPECT_THAT(man, StartsWith(".TS\n"));
  size_t md_rows = 0;
  for (absl::string_view line : absl::StrSplit(markdown, '\n')) {
    if (absl::StartsWith(line, "| `DMAREG_")) ++md_rows;
  }
  EXPECT_EQ(md_rows, EnvironmentVariables().size());
  for (const EnvironmentVariable& v : EnvironmentVariables()) {
    const std::string name(v.name);
    SCOPED_TRACE(name);
    EXPECT_THAT(markdown, HasSubstr(absl::StrCat("| `", name, "` | ")));
    EXPECT_THAT(markdown, HasSubstr(absl::StrCat(" | ", std::string(v.sets), " | ",
                                                 std::string(v.meaning), " |\n")));
    EXPECT_THAT(man, HasSubstr(absl::StrCat("\n", name, "\tT{\n")));
    EXPECT_THAT(text, HasSubstr(absl::StrCat(name, "\n  values:  ", std::string(v.values))));
  }
  // Words are code in Markdown, and man's minus signs are escaped.
  EXPECT_THAT(markdown, HasSubstr("`pinned`, `on-demand`, `automatic`"));
  EXPECT_THAT(man, HasSubstr("pinned, on\\-demand, automatic\n.br\n"));
  EXPECT_THAT(man, ::testing::EndsWith(".TE\n"));
}

TEST(ConfigTableTest, TheManPageHoldsTheGeneratedTable) {
  const std::string page = Slurp(fs::path(DMAREG_SOURCE_DIR) / "man" / "dmareg.7");
  ASSERT_FALSE(page.empty());
  EXPECT_THAT(page, HasSubstr(RenderEnvironmentTable(TableFormat::kMan)))
      << "man/dmareg.7's ENVIRONMENT table is not the library's: replace it (.TS to .TE) with "
         "the output of `dmareg config --table=man`";
}

TEST(ConfigTableTest, TheConfigurationDocHoldsTheGeneratedTable) {
  const fs::path doc = fs::path(DMAREG_SOURCE_DIR) / "docs" / "configuration.md";
  if (!fs::exists(doc)) GTEST_SKIP() << doc << " does not exist (yet)";
  EXPECT_THAT(Slurp(doc), HasSubstr(RenderEnvironmentTable(TableFormat::kMarkdown)))
      << "docs/configuration.md's table is not the library's: replace it with the output of "
         "`dmareg config --table=markdown`";
}

}  // namespace
}  // namespace dmareg::cli
