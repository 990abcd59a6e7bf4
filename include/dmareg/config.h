// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// config.h: CacheOptions from the environment, as UCX (UCX_RCACHE_*) and
// libfabric (FI_MR_CACHE_*) read theirs. RegistrationCache::Create applies
// it itself unless CacheOptions::use_environment is false; call it to see
// what Create would use.
//
//   // DMAREG_MAX_BYTES=1G DMAREG_MONITOR=hooks ./app
//   absl::StatusOr<dmareg::CacheOptions> o =
//       dmareg::CacheOptionsFromEnvironment({.max_regions = 4096});
//   // o->max_regions == 4096 (explicit), o->max_bytes == 1 << 30,
//   // o->monitoring == Monitoring::kHooks
//
// The variables, their values and what each sets are one table in the
// library, `EnvironmentVariables()` below, which the parser itself reads;
// `dmareg config` prints it (`--table=markdown` and `--table=man` give the
// tables of the documentation and of dmareg(7)):
//
//   for (const dmareg::EnvironmentVariable& v : dmareg::EnvironmentVariables())
//     std::cout << v.name << ": " << v.values << " (" << v.meaning << ")\n";
//
// What wins: a field the caller set (not at its CacheOptions default) over
// the environment; the environment over the default. DMAREG_MONITOR applies
// only when neither `monitor` nor `monitoring` was set. SetLogLevel wins over
// DMAREG_LOG_LEVEL. A caller who wants a default value kept whatever the
// environment says sets use_environment = false.
//
// Every variable that is set is checked, even where an explicit field wins:
// an unknown word, a number with anything after it, or a value too large
// for its field is InvalidArgument naming the variable and the value. An
// empty variable counts as unset. Words are matched exactly (lower case).

#ifndef DMAREG_CONFIG_H_
#define DMAREG_CONFIG_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "dmareg/cache_options.h"

#pragma GCC visibility push(default)

namespace dmareg {

// `options` with the environment applied as above (use_environment is
// ignored); reads getenv now. Has no other effect (Create also hands
// DMAREG_LOG_LEVEL to the log).
absl::StatusOr<CacheOptions> CacheOptionsFromEnvironment(CacheOptions options);

// "4096", "64K", "1M", "2G", "1T" (powers of 1024): the bytes; anything
// else, or more than 2^64 - 1, is InvalidArgument.
absl::StatusOr<uint64_t> ParseByteSize(std::string_view text);

// One DMAREG_* variable a dmareg library reads.
struct EnvironmentVariable {
  std::string_view name;  // "DMAREG_PAGING"
  // What it accepts, in words: "pinned, on-demand, automatic", "a count; 0: no limit".
  std::string_view values;
  // The exact words accepted, for a variable that takes one; else empty.
  std::span<const std::string_view> words;
  std::string_view sets;           // "CacheOptions::paging"
  std::string_view default_value;  // what applies when it is unset: "pinned"
  std::string_view meaning;        // one line: "how registrations hold their pages"
};

// Every DMAREG_* variable the libraries read (the core's, and
// DMAREG_LIBCUDA of CudaDriver), in a fixed order; the same table
// CacheOptionsFromEnvironment parses with. The views stay valid for the
// life of the process.
std::span<const EnvironmentVariable> EnvironmentVariables();

// A DMAREG_* variable set in the environment that no dmareg library reads.
struct UnknownVariable {
  std::string name;        // "DMAREG_MAX_REGION"
  std::string suggestion;  // a variable of the table it is one typo from, or empty
};

// Every such variable set now, in the environment's order. RegistrationCache
// warns once per process about each one that has a suggestion (a likely
// typo); the others (a script's own DMAREG_ variables) are debug messages.
// `dmareg config --effective` lists them all.
std::vector<UnknownVariable> UnknownEnvironmentVariables();

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_CONFIG_H_
