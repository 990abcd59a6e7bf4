// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The seam between VerbsDomain and libibverbs. The interface is installed
// for tests as dmareg/verbs/verbs_ops.h (one virtual function per verbs
// call, libibverbs' error conventions); inside the library it goes by
// `internal::VerbsOps`. `MakeRealVerbsOps()` forwards every call to
// libibverbs unchanged.

#ifndef DMAREG_SRC_VERBS_VERBS_OPS_H_
#define DMAREG_SRC_VERBS_VERBS_OPS_H_

#include <memory>

#include "dmareg/verbs/verbs_ops.h"

namespace dmareg::internal {

using VerbsOps = ::dmareg::testing::VerbsOps;

// A new, stateless VerbsOps calling libibverbs.
std::shared_ptr<VerbsOps> MakeRealVerbsOps();

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_VERBS_VERBS_OPS_H_
