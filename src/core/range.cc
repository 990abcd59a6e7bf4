// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/range.h"

#include <string>

#include "absl/strings/str_format.h"

namespace dmareg {

std::string Range::ToString() const { return absl::StrFormat("[%#x, %#x)", begin_, end_); }

}  // namespace dmareg
