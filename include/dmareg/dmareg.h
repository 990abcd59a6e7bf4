// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// dmareg.h: everything a user of the registration API needs.
#ifndef DMAREG_DMAREG_H_
#define DMAREG_DMAREG_H_

#include "dmareg/access.h"           // IWYU pragma: export
#include "dmareg/cache.h"            // IWYU pragma: export
#include "dmareg/domain.h"           // IWYU pragma: export
#include "dmareg/external_memory.h"  // IWYU pragma: export
#include "dmareg/memory.h"           // IWYU pragma: export
#include "dmareg/registration.h"     // IWYU pragma: export

#endif  // DMAREG_DMAREG_H_
