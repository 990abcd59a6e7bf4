// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// `dmareg config --effective`: what a cache created now with default
// options would run with, and where each setting came from (as `ucx_info
// -c`): every DMAREG_* variable's value and source (environment or
// default), the environment's verdict (a bad value is the error Create
// would return), DMAREG_ variables no library reads, the monitor such a
// cache gets in this process, and the memlock limit registrations count
// against.
//
//   EffectiveConfig c = CollectEffectiveConfig();
//   std::string text = RenderEffectiveConfig(c);
//   // DMAREG_MAX_REGIONS  4096       environment
//   // DMAREG_PAGING       pinned     default
//   // ...

#ifndef DMAREG_SRC_CLI_CONFIG_EFFECTIVE_H_
#define DMAREG_SRC_CLI_CONFIG_EFFECTIVE_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "dmareg/config.h"
#include "dmareg/memlock.h"

namespace dmareg::cli {

struct EffectiveSetting {
  std::string name;   // "DMAREG_PAGING"
  std::string value;  // as set, or the default
  bool from_environment = false;
};

struct EffectiveConfig {
  std::vector<EffectiveSetting> settings;  // EnvironmentVariables()' order
  absl::Status environment;                // CacheOptionsFromEnvironment's verdict
  std::vector<UnknownVariable> unknown;
  // The monitor a default cache in this process gets ("hooks+userfaultfd",
  // "userfaultfd", "explicit"), or why Create refused.
  std::string monitor;
  bool hooks_interposed = false;  // in this process (the monitor is the hooks')
  MemlockLimit memlock;
};

// Reads the environment and the process's limits, and creates one cache
// with default options over a domain that registers nothing.
EffectiveConfig CollectEffectiveConfig();

// One line per variable, then the verdict, unknown variables, monitor and
// memlock lines. Ends in a newline.
std::string RenderEffectiveConfig(const EffectiveConfig& config);

}  // namespace dmareg::cli

#endif  // DMAREG_SRC_CLI_CONFIG_EFFECTIVE_H_
