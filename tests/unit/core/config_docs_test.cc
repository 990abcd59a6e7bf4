// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The documents agree with the library's one table of DMAREG_* variables
// (dmareg::EnvironmentVariables(), which the parser itself reads): the
// ENVIRONMENT table of man/dmareg.7 and, where it exists, the table of
// docs/configuration.md name the same variables, each with the same values,
// default and meaning. Every getenv("DMAREG_...") in src/ and odp/ is in
// the table. Both documents are generated: `dmareg config --table=man` and
// `dmareg config --table=markdown`.

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "dmareg/config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dmareg {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const fs::path kSource = DMAREG_SOURCE_DIR;

std::string Slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::set<std::string> TableNames() {
  std::set<std::string> names;
  for (const EnvironmentVariable& v : EnvironmentVariables()) names.emplace(v.name);
  return names;
}

std::set<std::string> KeysOf(const std::map<std::string, std::string>& rows) {
  std::set<std::string> keys;
  for (const auto& [k, v] : rows) keys.insert(k);
  return keys;
}

// The rows of the tbl tables in a man page, by variable: the text of each
// row (its lines joined by spaces) with troff's escapes undone.
std::map<std::string, std::string> ManRows(const std::string& page) {
  std::map<std::string, std::string> rows;
  bool in_table = false;
  std::string* row = nullptr;
  for (absl::string_view line : absl::StrSplit(page, '\n')) {
    if (line == ".TS") in_table = true;
    if (line == ".TE") in_table = false, row = nullptr;
    if (!in_table) continue;
    std::string text = absl::StrReplaceAll(
        line, {{"\\-", "-"}, {"\\fB", ""}, {"\\fR", ""}, {"\\fI", ""}, {"\\&", ""}, {"\\e", "\\"}});
    if (absl::StartsWith(text, "DMAREG_")) {
      const std::string name(text.substr(0, text.find('\t')));
      row = &rows[name];
    }
    if (row != nullptr) absl::StrAppend(row, row->empty() ? "" : " ", text);
  }
  return rows;
}

// The rows of the Markdown tables that start with a `DMAREG_` cell, by
// variable: the cells, trimmed, code marks removed.
std::map<std::string, std::vector<std::string>> MarkdownRows(const std::string& doc) {
  std::map<std::string, std::vector<std::string>> rows;
  for (absl::string_view line : absl::StrSplit(doc, '\n')) {
    if (!absl::StartsWith(line, "| `DMAREG_")) continue;
    std::vector<std::string> cells;
    for (absl::string_view cell : absl::StrSplit(line, '|')) {
      cells.push_back(absl::StrReplaceAll(absl::StripAsciiWhitespace(cell), {{"`", ""}}));
    }
    // "| a | b |" splits into "", "a", "b", "".
    if (cells.size() < 3) continue;
    cells.erase(cells.begin());
    cells.pop_back();
    rows[cells[0]] = cells;
  }
  return rows;
}

TEST(ConfigDocsTest, TheTableIsWellFormed) {
  std::set<std::string> seen;
  for (const EnvironmentVariable& v : EnvironmentVariables()) {
    const std::string name(v.name);
    SCOPED_TRACE(name);
    EXPECT_TRUE(absl::StartsWith(name, "DMAREG_"));
    EXPECT_TRUE(seen.insert(name).second) << "listed twice";
    EXPECT_FALSE(v.values.empty());
    EXPECT_FALSE(v.sets.empty());
    EXPECT_FALSE(v.default_value.empty());
    EXPECT_FALSE(v.meaning.empty());
    EXPECT_EQ(v.meaning.find('\n'), std::string_view::npos) << "one line";
    if (!v.words.empty()) {
      EXPECT_EQ(std::string(v.values),
                absl::StrJoin(v.words, ", ",
                              [](std::string* out, std::string_view w) { out->append(w); }));
      EXPECT_THAT(v.words, ::testing::Contains(v.default_value));
    }
  }
}

TEST(ConfigDocsTest, EveryVariableTheSourcesReadIsInTheTable) {
  const std::regex getenv_call(R"re(getenv\("(DMAREG_[A-Z0-9_]+)"\))re");
  const std::set<std::string> table = TableNames();
  size_t files = 0;
  for (const char* dir : {"src", "odp"}) {
    for (const fs::directory_entry& e : fs::recursive_directory_iterator(kSource / dir)) {
      const std::string ext = e.path().extension().string();
      if (!e.is_regular_file() || (ext != ".cc" && ext != ".h" && ext != ".c")) continue;
      ++files;
      const std::string text = Slurp(e.path());
      for (std::sregex_iterator m(text.begin(), text.end(), getenv_call), end; m != end; ++m) {
        EXPECT_TRUE(table.count((*m)[1].str()))
            << (*m)[1].str() << " (read in " << fs::relative(e.path(), kSource).string()
            << ") is not in EnvironmentVariables() (src/core/config.cc)";
      }
    }
  }
  EXPECT_GT(files, 50u) << "the sources were not found under " << kSource;
}

void ExpectManPageAgrees(const fs::path& page_path) {
  const std::string page = Slurp(page_path);
  ASSERT_FALSE(page.empty()) << page_path;
  const std::map<std::string, std::string> rows = ManRows(page);
  EXPECT_EQ(KeysOf(rows), TableNames()) << page_path << ": not the same variables";
  for (const EnvironmentVariable& v : EnvironmentVariables()) {
    const auto it = rows.find(std::string(v.name));
    if (it == rows.end()) continue;
    SCOPED_TRACE(it->first);
    EXPECT_THAT(it->second, HasSubstr(std::string(v.values)));
    EXPECT_THAT(it->second, HasSubstr(std::string(v.meaning)));
    EXPECT_TRUE(absl::EndsWith(it->second, "T}\t" + std::string(v.default_value)))
        << "the default: " << it->second;
  }
}

TEST(ConfigDocsTest, TheManPageSaysWhatTheTableSays) {
  ExpectManPageAgrees(kSource / "man" / "dmareg.7");
}

TEST(ConfigDocsTest, TheConfigurationDocSaysWhatTheTableSays) {
  const fs::path doc = kSource / "docs" / "configuration.md";
  if (!fs::exists(doc)) GTEST_SKIP() << doc << " does not exist (yet)";
  const std::map<std::string, std::vector<std::string>> rows = MarkdownRows(Slurp(doc));
  std::set<std::string> names;
  for (const auto& [name, cells] : rows) names.insert(name);
  EXPECT_EQ(names, TableNames()) << doc << ": not the same variables";
  for (const EnvironmentVariable& v : EnvironmentVariables()) {
    const auto it = rows.find(std::string(v.name));
    if (it == rows.end()) continue;
    SCOPED_TRACE(it->first);
    // Variable | Values | Default | Sets | Meaning
    ASSERT_EQ(it->second.size(), 5u);
    EXPECT_EQ(it->second[1], std::string(v.values));
    EXPECT_EQ(it->second[2], std::string(v.default_value));
    EXPECT_EQ(it->second[3], std::string(v.sets));
    EXPECT_EQ(it->second[4], std::string(v.meaning));
  }
}

// The comparison itself finds a difference: a page with one word changed.
TEST(ConfigDocsTest, ADifferingRowIsFound) {
  std::map<std::string, std::string> rows = ManRows(
      ".TS\nallbox;\nl l l.\nDMAREG_PAGING\tT{\npinned, on\\-demand\n.br\nhow\n(\\fBpaging\\fR)\nT}"
      "\tpinned\n.TE\n");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows["DMAREG_PAGING"],
            "DMAREG_PAGING\tT{ pinned, on-demand .br how (paging) T}\tpinned");
  EXPECT_THAT(rows["DMAREG_PAGING"], ::testing::Not(HasSubstr("pinned, on-demand, automatic")));
}

}  // namespace
}  // namespace dmareg
