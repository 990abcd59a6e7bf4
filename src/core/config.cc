// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// CacheOptions from the DMAREG_* variables (the table is in config.h).
// Every set variable is parsed, whether or not it takes effect, so a typo
// is an error rather than a setting silently ignored.
#include "dmareg/config.h"

#include <cstdlib>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "core/config.h"

namespace dmareg {

namespace {

// The variable's value; nullopt when unset or empty.
std::optional<absl::string_view> Get(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return absl::string_view(value);
}

absl::Status Bad(const char* name, absl::string_view value, absl::string_view expected) {
  return absl::InvalidArgumentError(
      absl::StrCat(name, "=\"", value, "\" is not ", expected, " (from the environment)"));
}

// Digits only: no sign, no space, no base prefix.
std::optional<uint64_t> ParseCount(absl::string_view text) {
  if (text.empty()) return std::nullopt;
  for (char c : text) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return std::nullopt;
  }
  uint64_t n;
  if (!absl::SimpleAtoi(text, &n)) return std::nullopt;  // too large
  return n;
}

// The value among `values` whose name is `text`: the names are the ones
// the library prints (PagingName, ...), so each is spelled in one place.
template <typename Enum, size_t N>
std::optional<Enum> ParseName(absl::string_view text, const Enum (&values)[N],
                              const char* (*name)(Enum)) {
  for (Enum v : values) {
    if (text == name(v)) return v;
  }
  return std::nullopt;
}

// "one of a, b, c", for the error of a word that is none of them.
template <typename Enum, size_t N>
std::string OneOf(const Enum (&values)[N], const char* (*name)(Enum)) {
  return absl::StrCat("one of ", absl::StrJoin(values, ", ", [&](std::string* out, Enum v) {
                        out->append(name(v));
                      }));
}

// DMAREG_MONITOR's words: the automatic monitor is the userfaultfd.
const char* MonitorWord(Monitoring monitoring) {
  switch (monitoring) {
    case Monitoring::kAutomatic:
      return "userfaultfd";
    case Monitoring::kHooks:
      return "hooks";
    case Monitoring::kExplicitOnly:
      return "explicit";
  }
  return "unknown";
}

constexpr Monitoring kMonitorings[] = {Monitoring::kAutomatic, Monitoring::kHooks,
                                       Monitoring::kExplicitOnly};
constexpr Paging kPagings[] = {Paging::kPinned, Paging::kOnDemand, Paging::kAutomatic};
constexpr DmaBufPolicy kDmaBufPolicies[] = {DmaBufPolicy::kPreferDmaBuf, DmaBufPolicy::kDmaBufOnly,
                                            DmaBufPolicy::kAliasOnly};

}  // namespace

absl::StatusOr<uint64_t> ParseByteSize(std::string_view std_text) {
  const absl::string_view text(std_text.data(), std_text.size());
  absl::string_view digits = text;
  unsigned shift = 0;
  if (!digits.empty()) {
    switch (absl::ascii_toupper(static_cast<unsigned char>(digits.back()))) {
      case 'K':
        shift = 10;
        break;
      case 'M':
        shift = 20;
        break;
      case 'G':
        shift = 30;
        break;
      case 'T':
        shift = 40;
        break;
      default:
        break;
    }
    if (shift != 0) digits.remove_suffix(1);
  }
  const std::optional<uint64_t> n = ParseCount(digits);
  if (!n || *n > (std::numeric_limits<uint64_t>::max() >> shift)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", text, "\" is not a byte count below 2^64 (digits, then optionally K, M, G or T)"));
  }
  return *n << shift;
}

namespace internal {

absl::StatusOr<Environment> ReadEnvironment(CacheOptions options) {
  const CacheOptions defaults;
  Environment env;
  std::vector<std::string> applied;
  auto note = [&](const char* name, absl::string_view value) {
    applied.push_back(absl::StrCat(name, "=", value));
  };

  if (auto v = Get("DMAREG_MAX_REGIONS")) {
    const std::optional<uint64_t> n = ParseCount(*v);
    if (!n || *n > std::numeric_limits<size_t>::max()) {
      return Bad("DMAREG_MAX_REGIONS", *v, "a count of regions (digits; 0: no limit)");
    }
    if (options.max_regions == defaults.max_regions) {
      options.max_regions = static_cast<size_t>(*n);
      note("DMAREG_MAX_REGIONS", *v);
    }
  }
  if (auto v = Get("DMAREG_MAX_BYTES")) {
    const absl::StatusOr<uint64_t> n = ParseByteSize(std::string_view(v->data(), v->size()));
    if (!n.ok() || *n > std::numeric_limits<size_t>::max()) {
      return Bad("DMAREG_MAX_BYTES", *v,
                 "a byte count below 2^64 (digits, then optionally K, M, G or T; 0: no limit)");
    }
    if (options.max_bytes == defaults.max_bytes) {
      options.max_bytes = static_cast<size_t>(*n);
      note("DMAREG_MAX_BYTES", *v);
    }
  }
  if (auto v = Get("DMAREG_MONITOR")) {
    const std::optional<Monitoring> m = ParseName(*v, kMonitorings, MonitorWord);
    if (!m) return Bad("DMAREG_MONITOR", *v, OneOf(kMonitorings, MonitorWord));
    if (options.monitor == nullptr && options.monitoring == defaults.monitoring) {
      options.monitoring = *m;
      note("DMAREG_MONITOR", *v);
    }
  }
  if (auto v = Get("DMAREG_PAGING")) {
    const std::optional<Paging> p = ParseName(*v, kPagings, PagingName);
    if (!p) return Bad("DMAREG_PAGING", *v, OneOf(kPagings, PagingName));
    if (options.paging == defaults.paging) {
      options.paging = *p;
      note("DMAREG_PAGING", *v);
    }
  }
  if (auto v = Get("DMAREG_DMABUF_POLICY")) {
    const std::optional<DmaBufPolicy> p = ParseName(*v, kDmaBufPolicies, DmaBufPolicyName);
    if (!p) return Bad("DMAREG_DMABUF_POLICY", *v, OneOf(kDmaBufPolicies, DmaBufPolicyName));
    if (options.dmabuf_policy == defaults.dmabuf_policy) {
      options.dmabuf_policy = *p;
      note("DMAREG_DMABUF_POLICY", *v);
    }
  }
  if (auto v = Get("DMAREG_PFN_CHECK_EVERY")) {
    const std::optional<uint64_t> n = ParseCount(*v);
    if (!n || *n > std::numeric_limits<uint32_t>::max()) {
      return Bad("DMAREG_PFN_CHECK_EVERY", *v, "a count of hits below 2^32 (digits; 0: never)");
    }
    if (options.pfn_check_every == defaults.pfn_check_every) {
      options.pfn_check_every = static_cast<uint32_t>(*n);
      note("DMAREG_PFN_CHECK_EVERY", *v);
    }
  }
  if (auto v = Get("DMAREG_LOG_LEVEL")) {
    env.log_level = ParseLogLevel(std::string_view(v->data(), v->size()));
    if (!env.log_level) return Bad("DMAREG_LOG_LEVEL", *v, "one of off, error, warn, info, debug");
  }
  env.options = std::move(options);
  env.applied = absl::StrJoin(applied, ", ");
  return env;
}

}  // namespace internal

absl::StatusOr<CacheOptions> CacheOptionsFromEnvironment(CacheOptions options) {
  absl::StatusOr<internal::Environment> env = internal::ReadEnvironment(std::move(options));
  if (!env.ok()) return env.status();
  return std::move(env->options);
}

}  // namespace dmareg
