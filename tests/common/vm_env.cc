// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "common/vm_env.h"

#include <cstdlib>
#include <string>

namespace dmareg::test {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? std::string() : std::string(v);
}

bool InVm() { return Env("DMAREG_IN_VM") == "1"; }

}  // namespace dmareg::test
