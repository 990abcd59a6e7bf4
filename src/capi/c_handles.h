// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// c_handles.h: what the C API's domain handle holds. The core's C API
// (src/capi/dmareg_c.cc) alone opens one up; the libraries that make domains
// for C callers (verbs, testing) go through the public bridge,
// dmareg/c_bridge.h (NewCDomain, DomainOfC, CFail).
#ifndef DMAREG_SRC_CAPI_C_HANDLES_H_
#define DMAREG_SRC_CAPI_C_HANDLES_H_

#include <memory>

#include "dmareg/c/dmareg.h"
#include "dmareg/c_bridge.h"  // IWYU pragma: export
#include "dmareg/domain.h"

struct dmareg_domain {
  std::shared_ptr<dmareg::Domain> domain;
};

#endif  // DMAREG_SRC_CAPI_C_HANDLES_H_
