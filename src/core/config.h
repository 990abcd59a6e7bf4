// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// What RegistrationCache::Create reads from the environment (the variables
// of EnvironmentVariables(), config.h): the options, the log level, and
// which variables took effect (so an error about a field can say it came
// from the environment).
//
//   absl::StatusOr<internal::Environment> env = internal::ReadEnvironment(options);
//   if (!env.ok()) return env.status();
//   internal::SetEnvironmentLogLevel(env->log_level);

#ifndef DMAREG_SRC_CORE_CONFIG_H_
#define DMAREG_SRC_CORE_CONFIG_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "dmareg/cache_options.h"
#include "dmareg/log.h"

namespace dmareg::internal {

struct Environment {
  CacheOptions options;
  std::optional<LogLevel> log_level;  // DMAREG_LOG_LEVEL; nullopt: unset
  // "DMAREG_PAGING=on-demand, ..." for every variable that changed a field;
  // empty when none did.
  std::string applied;
};

absl::StatusOr<Environment> ReadEnvironment(CacheOptions options);

// Logs UnknownEnvironmentVariables() (config.h), the first time only: the
// environment is the process's, and one warning per cause is enough.
void LogUnknownVariablesOnce();

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_CORE_CONFIG_H_
