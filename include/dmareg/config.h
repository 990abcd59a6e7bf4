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
// | variable               | values                                 | field            |
// |------------------------|----------------------------------------|------------------|
// | DMAREG_MAX_REGIONS     | a count; 0: no limit                   | max_regions      |
// | DMAREG_MAX_BYTES       | bytes, with K, M, G or T (x 1024^n)    | max_bytes        |
// | DMAREG_MONITOR         | userfaultfd, hooks, explicit           | monitoring       |
// | DMAREG_PAGING          | pinned, on-demand, automatic           | paging           |
// | DMAREG_DMABUF_POLICY   | prefer-dmabuf, dmabuf-only, alias-only | dmabuf_policy    |
// | DMAREG_PFN_CHECK_EVERY | a count; 0: never                      | pfn_check_every  |
// | DMAREG_LOG_LEVEL       | off, error, warn, info, debug          | log.h's threshold|
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
#include <string_view>

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

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_CONFIG_H_
