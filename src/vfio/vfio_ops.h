// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The seam between the VFIO backend and the kernel. The interface is
// installed for tests as dmareg/vfio/vfio_ops.h (one virtual function per
// call, the kernel's error conventions); `MakeRealVfioOps()` makes the
// system calls unchanged.

#ifndef DMAREG_SRC_VFIO_VFIO_OPS_H_
#define DMAREG_SRC_VFIO_VFIO_OPS_H_

#include <memory>

#include "dmareg/vfio/vfio_ops.h"

namespace dmareg::internal {

using VfioOps = ::dmareg::testing::VfioOps;

// A new, stateless VfioOps making the system calls.
std::shared_ptr<VfioOps> MakeRealVfioOps();

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_VFIO_VFIO_OPS_H_
