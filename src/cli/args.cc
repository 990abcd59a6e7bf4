// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "cli/args.h"

#include <algorithm>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace dmareg::cli {
namespace {

bool IsBool(absl::string_view name) {
  return std::find(std::begin(kBoolFlags), std::end(kBoolFlags), name) != std::end(kBoolFlags);
}

struct FlagArg {
  std::string name;       // as the command knows it: "json" for --nojson too
  std::string rewritten;  // what absl gets
};

}  // namespace

const std::vector<CommandSpec>& DmaregCommands() {
  // A function-local constant, not a mutable singleton.
  static const std::vector<CommandSpec>* const commands = new std::vector<CommandSpec>{
      {"devices", {"json", "device"}},
      {"bench", {"json", "device", "sizes", "iterations"}},
      {"config", {"table", "effective"}},
      {"help", {}},
      {"version", {}},
  };
  return *commands;
}

absl::StatusOr<PreparedArgs> PrepareArgs(absl::string_view program,
                                         std::span<const std::string> args,
                                         const std::vector<CommandSpec>& commands) {
  std::vector<std::string> positional;
  std::vector<FlagArg> flags;
  bool help = false;
  bool version = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      positional.insert(positional.end(), args.begin() + static_cast<ptrdiff_t>(i) + 1, args.end());
      break;
    }
    if (a.empty() || a[0] != '-' || a == "-") {
      positional.push_back(a);
      continue;
    }
    if (a == "-h" || a == "--help" || a == "-help") {
      help = true;
      continue;
    }
    if (a == "--version" || a == "-version") {
      version = true;
      continue;
    }
    // The one short option: -d NAME, -dNAME.
    if (a[1] == 'd' && !absl::StartsWith(a, "-device")) {
      if (a.size() > 2) {
        flags.push_back({"device", absl::StrCat("--device=", a.substr(2))});
        continue;
      }
      if (i + 1 >= args.size()) return absl::InvalidArgumentError("option -d needs a device name");
      flags.push_back({"device", absl::StrCat("--device=", args[++i])});
      continue;
    }
    if (a[1] != '-' && a.size() == 2) {
      return absl::InvalidArgumentError(absl::StrCat("unknown option '", a, "'"));
    }
    absl::string_view body = absl::string_view(a).substr(a[1] == '-' ? 2 : 1);
    std::optional<absl::string_view> value;
    if (const size_t eq = body.find('='); eq != absl::string_view::npos) {
      value = body.substr(eq + 1);
      body = body.substr(0, eq);
    }
    std::string name(body);
    if (!IsBool(name) && absl::StartsWith(name, "no") && IsBool(name.substr(2)) && !value) {
      flags.push_back({name.substr(2), absl::StrCat("--", name)});
      continue;
    }
    const bool known = std::any_of(commands.begin(), commands.end(), [&](const CommandSpec& c) {
      return std::find(c.flags.begin(), c.flags.end(), name) != c.flags.end();
    });
    if (!known) return absl::InvalidArgumentError(absl::StrCat("unknown option '", a, "'"));
    if (IsBool(name)) {
      flags.push_back({name, value ? absl::StrCat("--", name, "=", *value) : "--" + name});
      continue;
    }
    if (!value) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(absl::StrCat("option --", name, " needs a value"));
      }
      value = args[++i];
    }
    flags.push_back({name, absl::StrCat("--", name, "=", *value)});
  }

  PreparedArgs out;
  if (help) {
    out.command = "help";
  } else if (version) {
    out.command = "version";
  } else if (positional.empty()) {
    return absl::InvalidArgumentError("no command given");
  } else {
    out.command = positional.front();
  }
  const auto spec = std::find_if(commands.begin(), commands.end(),
                                 [&](const CommandSpec& c) { return c.name == out.command; });
  if (spec == commands.end()) {
    return absl::InvalidArgumentError(absl::StrCat("unknown command '", out.command, "'"));
  }
  if (help || version) return PreparedArgs{out.command, {std::string(program)}};
  if (positional.size() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(out.command, ": unexpected argument '", positional[1], "'"));
  }
  out.argv.emplace_back(program);
  for (const FlagArg& f : flags) {
    if (std::find(spec->flags.begin(), spec->flags.end(), f.name) == spec->flags.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(out.command, ": unknown option '--", f.name, "'"));
    }
    out.argv.push_back(f.rewritten);
  }
  return out;
}

}  // namespace dmareg::cli
