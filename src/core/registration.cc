// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/registration.h"

#include "core/cache_core.h"
#include "core/region.h"

namespace dmareg::internal {

void ReleaseRegistration(const RegistrationInfo* info) noexcept {
  // Every RegistrationInfo a handle sees is the base of a Region.
  Region* r = const_cast<Region*>(static_cast<const Region*>(info));
  CacheCore::Of(r)->Release(r);
}

}  // namespace dmareg::internal
