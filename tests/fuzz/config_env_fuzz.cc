// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// libFuzzer target for the environment parser (src/core/config.cc): any
// text may sit in a DMAREG_* variable. The input is lines, each a selector
// byte and a value: the selector picks one of the library's variables or a
// DMAREG_ name of its own (a typo, a script's variable). Checks, beyond "no
// crash, no sanitizer report":
//   - CacheOptionsFromEnvironment is OK, or InvalidArgument naming a
//     variable that is set and its value; twice, the same verdict;
//   - a count or byte size it accepted is the number the value spells
//     (ParseByteSize's, for DMAREG_MAX_BYTES);
//   - UnknownEnvironmentVariables lists exactly the set DMAREG_ names no
//     library reads, each suggestion one of the table's (the environment
//     is the input's alone: environ points at an array of the target's);
//   - ParseByteSize of the raw input never accepts what has no digits.
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dmareg/config.h"
#include "dmareg/log.h"

extern char** environ;

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

const char* const kOwnNames[] = {"DMAREG_MAX_REGION", "DMAREG_MONTIOR",    "DMAREG_HOST_INDEX",
                                 "DMAREG_",           "DMAREG_LOG_LEVELS", "DMAREG_PAGNG"};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool quiet = [] {
    dmareg::SetLogLevel(dmareg::LogLevel::kOff);
    return true;
  }();
  (void)quiet;
  const std::span<const dmareg::EnvironmentVariable> table = dmareg::EnvironmentVariables();
  std::set<std::string> known;
  for (const dmareg::EnvironmentVariable& v : table) known.insert(std::string(v.name));

  // Lines: selector byte, value up to '\n' (a NUL ends it: C strings). The
  // environment is an array of our own, not setenv's: glibc never frees what
  // setenv copies, and a million inputs would keep it all.
  std::vector<std::pair<std::string, std::string>> set;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  while (!in.empty() && set.size() < 12) {
    const uint8_t selector = static_cast<uint8_t>(in[0]);
    in.remove_prefix(1);
    const size_t nl = in.find('\n');
    std::string value(in.substr(0, nl));
    in.remove_prefix(nl == std::string_view::npos ? in.size() : nl + 1);
    value = value.c_str();
    const size_t pick = selector % (table.size() + std::size(kOwnNames));
    const std::string name = pick < table.size() ? std::string(table[pick].name)
                                                 : std::string(kOwnNames[pick - table.size()]);
    // A later setting of a name replaces the earlier, as setenv would.
    std::erase_if(set, [&](const auto& e) { return e.first == name; });
    set.emplace_back(name, value);
  }
  std::vector<std::string> entries;
  for (const auto& [n, v] : set) entries.push_back(n + "=" + v);
  std::vector<char*> env;
  for (std::string& e : entries) env.push_back(e.data());
  env.push_back(nullptr);
  char** const saved = environ;
  environ = env.data();
  // The last setting of a name is the one in force.
  auto value_of = [&](const std::string& name) -> std::string {
    std::string v;
    for (const auto& [n, val] : set) {
      if (n == name) v = val;
    }
    return v;
  };

  const absl::StatusOr<dmareg::CacheOptions> a = dmareg::CacheOptionsFromEnvironment({});
  const absl::StatusOr<dmareg::CacheOptions> b = dmareg::CacheOptionsFromEnvironment({});
  Check(a.ok() == b.ok());
  if (!a.ok()) {
    Check(a.status().code() == absl::StatusCode::kInvalidArgument);
    Check(a.status() == b.status());
    bool named = false;
    for (const auto& [n, v] : set) {
      if (known.count(n) != 0 && a.status().message().find(n) != std::string_view::npos) {
        named = true;
      }
    }
    Check(named);
  } else {
    Check(a->max_regions == b->max_regions && a->max_bytes == b->max_bytes &&
          a->monitoring == b->monitoring && a->paging == b->paging);
    const std::string bytes = value_of("DMAREG_MAX_BYTES");
    if (!bytes.empty()) {
      absl::StatusOr<uint64_t> parsed = dmareg::ParseByteSize(bytes);
      Check(parsed.ok() && *parsed == a->max_bytes);
    }
    const std::string regions = value_of("DMAREG_MAX_REGIONS");
    if (!regions.empty()) {
      Check(regions.find_first_not_of("0123456789") == std::string::npos);
      Check(std::strtoull(regions.c_str(), nullptr, 10) == a->max_regions);
    }
  }

  const std::vector<dmareg::UnknownVariable> unknown = dmareg::UnknownEnvironmentVariables();
  std::set<std::string> expected;
  for (const auto& [n, v] : set) {
    if (known.count(n) == 0) expected.insert(n);
  }
  std::set<std::string> listed;
  for (const dmareg::UnknownVariable& u : unknown) {
    listed.insert(u.name);
    Check(u.suggestion.empty() || known.count(u.suggestion) != 0);
  }
  // The environment is the input's alone: exactly its unknown names.
  Check(listed == expected);

  environ = saved;

  const absl::StatusOr<uint64_t> raw =
      dmareg::ParseByteSize(std::string_view(reinterpret_cast<const char*>(data), size));
  if (raw.ok()) {
    bool digit = false;
    for (size_t i = 0; i < size; ++i) digit |= std::isdigit(data[i]) != 0;
    Check(digit);
  }
  return 0;
}
