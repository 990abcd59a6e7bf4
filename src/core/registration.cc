// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/registration.h"

#include "core/cache_core.h"
#include "core/region.h"

namespace dmareg {

void Registration::Release(const RegistrationInfo* info) noexcept {
  // Every RegistrationInfo a handle sees is the base of a Region.
  auto* r = const_cast<internal::Region*>(static_cast<const internal::Region*>(info));
  internal::CacheCore::Of(r)->Release(r);
}

}  // namespace dmareg
