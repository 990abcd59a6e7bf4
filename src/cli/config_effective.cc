// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "cli/config_effective.h"

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "dmareg/cache.h"
#include "dmareg/domain.h"
#include "dmareg/memlock.h"

namespace dmareg::cli {
namespace {

// A domain that registers nothing: a cache over it shows what Create chose.
class ProbeDomain final : public Domain {
 public:
  ProbeDomain() { caps_.device_name = name_; }
  const std::string& name() const override { return name_; }
  const DomainCapabilities& capabilities() const override { return caps_; }
  using Domain::RegisterHost;
  absl::StatusOr<DeviceMapping> RegisterHost(const HostMemory&, AccessFlags, Paging) override {
    return absl::UnimplementedError("dmareg config: the probe domain registers nothing");
  }
  absl::Status Deregister(const DeviceMapping&) override { return absl::OkStatus(); }

 private:
  std::string name_ = "config-probe";
  DomainCapabilities caps_;
};

}  // namespace

EffectiveConfig CollectEffectiveConfig() {
  EffectiveConfig c;
  for (const EnvironmentVariable& v : EnvironmentVariables()) {
    EffectiveSetting s{.name = std::string(v.name)};
    const char* set = std::getenv(s.name.c_str());
    s.from_environment = set != nullptr && *set != '\0';  // empty counts as unset
    s.value = s.from_environment ? std::string(set) : std::string(v.default_value);
    c.settings.push_back(std::move(s));
  }
  c.environment = CacheOptionsFromEnvironment({}).status();
  c.unknown = UnknownEnvironmentVariables();
  if (c.environment.ok()) {
    absl::StatusOr<std::unique_ptr<RegistrationCache>> cache =
        RegistrationCache::Create(std::make_shared<ProbeDomain>());
    c.monitor = cache.ok() ? std::string((*cache)->monitor().name())
                           : absl::StrCat("none: ", cache.status().message());
    c.hooks_interposed = absl::StartsWith(c.monitor, "hooks");
  }
  c.memlock = ReadMemlockLimit();
  return c;
}

std::string RenderEffectiveConfig(const EffectiveConfig& c) {
  size_t width = 0;
  for (const EffectiveSetting& s : c.settings) width = std::max(width, s.name.size());
  std::string out;
  for (const EffectiveSetting& s : c.settings) {
    absl::StrAppendFormat(&out, "%-*s  %s  (%s)\n", static_cast<int>(width), s.name, s.value,
                          s.from_environment ? "environment" : "default");
  }
  if (!c.environment.ok()) {
    absl::StrAppend(&out, "environment: REFUSED: ", c.environment.message(),
                    "\n  (RegistrationCache::Create returns this error)\n");
  }
  for (const UnknownVariable& u : c.unknown) {
    absl::StrAppend(&out, "unknown: ", u.name, " is read by no dmareg library",
                    u.suggestion.empty() ? "" : absl::StrCat(" (did you mean ", u.suggestion, "?)"),
                    "\n");
  }
  if (!c.monitor.empty()) {
    absl::StrAppend(&out, "monitor: a cache with default options in this command gets ", c.monitor,
                    c.hooks_interposed
                        ? "\n"
                        : "; a program that links libdmareg_hooks (the installed package's "
                          "default) or preloads it gets hooks+userfaultfd\n");
  }
  absl::StrAppend(&out, "memlock: ", MemlockNote(c.memlock), "\n");
  return out;
}

}  // namespace dmareg::cli
