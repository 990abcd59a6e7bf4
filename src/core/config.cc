// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// CacheOptions from the DMAREG_* variables, parsed with the one table of
// them that EnvironmentVariables() publishes (config.h). Every set variable
// is parsed, whether or not it takes effect, so a typo is an error rather
// than a setting silently ignored.
#include "dmareg/config.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <limits>
#include <optional>
#include <span>
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
#include "dmareg/cache_options.h"
#include "dmareg/domain.h"
#include "dmareg/log.h"
#include "runtime/log.h"

namespace dmareg {

namespace {

// The variable's value; nullopt when unset or empty.
std::optional<absl::string_view> Get(const EnvironmentVariable& var) {
  const char* value = std::getenv(std::string(var.name).c_str());
  if (value == nullptr || *value == '\0') return std::nullopt;
  return absl::string_view(value);
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

// The values of each variable that takes a word, in the order of its words.
constexpr Monitoring kMonitorings[] = {Monitoring::kAutomatic, Monitoring::kHooks,
                                       Monitoring::kUserfaultfd, Monitoring::kExplicitOnly};
constexpr Paging kPagings[] = {Paging::kPinned, Paging::kOnDemand, Paging::kAutomatic};
constexpr DmaBufPolicy kDmaBufPolicies[] = {DmaBufPolicy::kPreferDmaBuf, DmaBufPolicy::kDmaBufOnly,
                                            DmaBufPolicy::kAliasOnly};
constexpr LogLevel kLogLevels[] = {LogLevel::kOff, LogLevel::kError, LogLevel::kWarn,
                                   LogLevel::kInfo, LogLevel::kDebug};

// The rows of the table, in EnvironmentVariables()'s order.
enum Row : size_t {
  kMaxRegions,
  kMaxBytes,
  kMonitor,
  kPaging,
  kDmaBufPolicy,
  kPfnCheckEvery,
  kLogLevel,
  kLibCuda,
  kRows,
};

// The library's strings are std::string_view; this Abseil's are its own.
absl::string_view A(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// The words of an enum, as the library prints its values (PagingName, ...),
// so each word is spelled in one place.
template <typename Enum, size_t N>
std::vector<std::string_view> WordsOf(const Enum (&values)[N], const char* (*name)(Enum)) {
  std::vector<std::string_view> words;
  for (Enum v : values) words.emplace_back(name(v));
  return words;
}

// The one table: what config.h's EnvironmentVariables() returns and what
// ReadEnvironment parses with. Built once; read-only after.
class Table {
 public:
  Table() {
    const CacheOptions defaults;
    words_[kMonitor] = WordsOf(kMonitorings, MonitoringName);
    words_[kPaging] = WordsOf(kPagings, PagingName);
    words_[kDmaBufPolicy] = WordsOf(kDmaBufPolicies, DmaBufPolicyName);
    words_[kLogLevel] = WordsOf(kLogLevels, LogLevelName);
    for (size_t r = 0; r < kRows; ++r) {
      text_[r] = absl::StrJoin(words_[r], ", ",
                               [](std::string* out, std::string_view w) { out->append(w); });
    }
    rows_[kMaxRegions] = {
        .name = "DMAREG_MAX_REGIONS",
        .values = "a count; 0: no limit",
        .sets = "CacheOptions::max_regions",
        .default_value = Number(kMaxRegions, defaults.max_regions),
        .meaning = "the most mappings a cache holds (idle ones are evicted)",
    };
    rows_[kMaxBytes] = {
        .name = "DMAREG_MAX_BYTES",
        .values = "bytes, with K, M, G or T (powers of 1024); 0: no limit",
        .sets = "CacheOptions::max_bytes",
        .default_value = Number(kMaxBytes, defaults.max_bytes),
        .meaning = "the most bytes a cache keeps registered (idle mappings are evicted)",
    };
    rows_[kMonitor] = {
        .name = "DMAREG_MONITOR",
        .sets = "CacheOptions::monitoring",
        .default_value = MonitoringName(defaults.monitoring),
        .meaning = "how a cache learns that memory was unmapped",
    };
    rows_[kPaging] = {
        .name = "DMAREG_PAGING",
        .sets = "CacheOptions::paging",
        .default_value = PagingName(defaults.paging),
        .meaning = "how registrations hold their pages",
    };
    rows_[kDmaBufPolicy] = {
        .name = "DMAREG_DMABUF_POLICY",
        .sets = "CacheOptions::dmabuf_policy",
        .default_value = DmaBufPolicyName(defaults.dmabuf_policy),
        .meaning = "what is registered where the NIC cannot import a dma-buf",
    };
    rows_[kPfnCheckEvery] = {
        .name = "DMAREG_PFN_CHECK_EVERY",
        .values = "a count of hits below 2^32; 0: never",
        .sets = "CacheOptions::pfn_check_every",
        .default_value = Number(kPfnCheckEvery, defaults.pfn_check_every),
        .meaning = "re-read a mapping's page frames every N hits (a debugging aid)",
    };
    rows_[kLogLevel] = {
        .name = "DMAREG_LOG_LEVEL",
        .sets = "log.h's threshold",
        .default_value = LogLevelName(LogLevel::kWarn),
        .meaning =
            "which messages are logged, to standard error unless a sink is set (off: "
            "none; SetLogLevel wins)",
    };
    rows_[kLibCuda] = {
        .name = "DMAREG_LIBCUDA",
        .values = "a library file name or path",
        .sets = "CudaDriverOptions::library",
        .default_value = "libcuda.so.1",
        .meaning = "the CUDA driver that CudaDriver::Load opens when its options name none",
    };
    for (size_t r = 0; r < kRows; ++r) {
      if (words_[r].empty()) continue;
      rows_[r].words = words_[r];
      rows_[r].values = text_[r];
    }
  }
  Table(const Table&) = delete;
  Table& operator=(const Table&) = delete;

  const EnvironmentVariable& operator[](Row r) const { return rows_[r]; }
  std::span<const EnvironmentVariable> rows() const { return rows_; }

 private:
  std::string_view Number(Row r, uint64_t n) {
    text_[r] = absl::StrCat(n);
    return text_[r];
  }

  std::vector<std::string_view> words_[kRows];
  std::string text_[kRows];  // what `values` or `default_value` views
  EnvironmentVariable rows_[kRows];
};

const Table& TheTable() {
  static const Table* const table = new Table();  // never destroyed: views outlive exit
  return *table;
}

// What the table says it accepts, for a value that is none of it.
absl::Status Bad(const EnvironmentVariable& var, absl::string_view value) {
  return absl::InvalidArgumentError(
      absl::StrCat(A(var.name), "=\"", value, "\" from the environment: want ",
                   var.words.empty() ? "" : "one of ", A(var.values)));
}

// The value of `values` named by `text` among the variable's words (which
// list `values` in order), or nullopt.
template <typename Enum, size_t N>
std::optional<Enum> ParseWord(const EnvironmentVariable& var, absl::string_view text,
                              const Enum (&values)[N]) {
  for (size_t i = 0; i < var.words.size() && i < N; ++i) {
    if (text == A(var.words[i])) return values[i];
  }
  return std::nullopt;
}

// Edits (insert, delete, substitute, swap of neighbours) from `a` to `b`,
// or more than `limit` once that is certain.
size_t EditDistance(std::string_view a, std::string_view b, size_t limit) {
  if ((a.size() > b.size() ? a.size() - b.size() : b.size() - a.size()) > limit) return limit + 1;
  std::vector<size_t> before(b.size() + 1), prev(b.size() + 1), row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      row[j] = std::min({prev[j] + 1, row[j - 1] + 1, prev[j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        row[j] = std::min(row[j], before[j - 2] + 1);
      }
    }
    before.swap(prev);
    prev.swap(row);
    // No later row can come back under the smallest of this one.
    if (*std::min_element(prev.begin(), prev.end()) > limit) return limit + 1;
  }
  return prev[b.size()];
}

}  // namespace

std::vector<UnknownVariable> UnknownEnvironmentVariables() {
  constexpr std::string_view kPrefix = "DMAREG_";
  std::vector<UnknownVariable> unknown;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string_view entry(*e);
    const std::string_view name = entry.substr(0, entry.find('='));
    if (!name.starts_with(kPrefix)) continue;
    std::string_view suggestion;
    size_t best = 3;  // two edits at most count as a typo
    bool known = false;
    for (const EnvironmentVariable& v : TheTable().rows()) {
      if (v.name == name) {
        known = true;
        break;
      }
      if (const size_t d = EditDistance(name, v.name, 2); d < best) {
        best = d;
        suggestion = v.name;
      }
    }
    if (!known) unknown.push_back({std::string(name), std::string(suggestion)});
  }
  return unknown;
}

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
  const Table& table = TheTable();
  const CacheOptions defaults;
  Environment env;
  std::vector<std::string> applied;
  auto note = [&](const EnvironmentVariable& var, absl::string_view value) {
    applied.push_back(absl::StrCat(A(var.name), "=", value));
  };

  if (const EnvironmentVariable& var = table[kMaxRegions]; auto v = Get(var)) {
    const std::optional<uint64_t> n = ParseCount(*v);
    if (!n || *n > std::numeric_limits<size_t>::max()) return Bad(var, *v);
    if (options.max_regions == defaults.max_regions) {
      options.max_regions = static_cast<size_t>(*n);
      note(var, *v);
    }
  }
  if (const EnvironmentVariable& var = table[kMaxBytes]; auto v = Get(var)) {
    const absl::StatusOr<uint64_t> n = ParseByteSize(std::string_view(v->data(), v->size()));
    if (!n.ok() || *n > std::numeric_limits<size_t>::max()) return Bad(var, *v);
    if (options.max_bytes == defaults.max_bytes) {
      options.max_bytes = static_cast<size_t>(*n);
      note(var, *v);
    }
  }
  if (const EnvironmentVariable& var = table[kMonitor]; auto v = Get(var)) {
    const std::optional<Monitoring> m = ParseWord(var, *v, kMonitorings);
    if (!m) return Bad(var, *v);
    if (options.monitor == nullptr && options.monitoring == defaults.monitoring) {
      options.monitoring = *m;
      note(var, *v);
    }
  }
  if (const EnvironmentVariable& var = table[kPaging]; auto v = Get(var)) {
    const std::optional<Paging> p = ParseWord(var, *v, kPagings);
    if (!p) return Bad(var, *v);
    if (options.paging == defaults.paging) {
      options.paging = *p;
      note(var, *v);
    }
  }
  if (const EnvironmentVariable& var = table[kDmaBufPolicy]; auto v = Get(var)) {
    const std::optional<DmaBufPolicy> p = ParseWord(var, *v, kDmaBufPolicies);
    if (!p) return Bad(var, *v);
    if (options.dmabuf_policy == defaults.dmabuf_policy) {
      options.dmabuf_policy = *p;
      note(var, *v);
    }
  }
  if (const EnvironmentVariable& var = table[kPfnCheckEvery]; auto v = Get(var)) {
    const std::optional<uint64_t> n = ParseCount(*v);
    if (!n || *n > std::numeric_limits<uint32_t>::max()) return Bad(var, *v);
    if (options.pfn_check_every == defaults.pfn_check_every) {
      options.pfn_check_every = static_cast<uint32_t>(*n);
      note(var, *v);
    }
  }
  if (const EnvironmentVariable& var = table[kLogLevel]; auto v = Get(var)) {
    env.log_level = ParseWord(var, *v, kLogLevels);
    if (!env.log_level) return Bad(var, *v);
  }
  // DMAREG_LIBCUDA is CudaDriver::Load's (dmabuf/cuda_driver.h), read there.
  env.options = std::move(options);
  env.applied = absl::StrJoin(applied, ", ");
  return env;
}

void LogUnknownVariablesOnce() {
  static std::atomic<bool> said{false};
  if (said.exchange(true, std::memory_order_relaxed)) return;
  for (const UnknownVariable& v : UnknownEnvironmentVariables()) {
    if (!v.suggestion.empty()) {
      Log(LogLevel::kWarn, "%s is set but no dmareg library reads it; did you mean %s?", v.name,
          v.suggestion);
    } else {
      Log(LogLevel::kDebug, "%s is set but no dmareg library reads it", v.name);
    }
  }
}

}  // namespace internal

std::span<const EnvironmentVariable> EnvironmentVariables() { return TheTable().rows(); }

absl::StatusOr<CacheOptions> CacheOptionsFromEnvironment(CacheOptions options) {
  absl::StatusOr<internal::Environment> env = internal::ReadEnvironment(std::move(options));
  if (!env.ok()) return env.status();
  return std::move(env->options);
}

}  // namespace dmareg
