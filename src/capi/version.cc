// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The version of this library (dmareg/version.h), for programs that were
// compiled against other headers than the library they run with.
#include "dmareg/version.h"

#include <string_view>

namespace dmareg {

std::string_view Version() noexcept { return DMAREG_VERSION_STRING; }

}  // namespace dmareg

extern "C" const char* dmareg_version(void) { return DMAREG_VERSION_STRING; }
