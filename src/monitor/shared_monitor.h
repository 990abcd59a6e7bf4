// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The shared monitor as RegistrationCache::Create asks for it: by the
// Monitoring a cache was given (SharedMonitor in monitor.h is kAutomatic's).
//
//   absl::StatusOr<std::shared_ptr<MemoryMonitor>> m =
//       internal::SharedMonitorFor(Monitoring::kHooks);

#ifndef DMAREG_SRC_MONITOR_SHARED_MONITOR_H_
#define DMAREG_SRC_MONITOR_SHARED_MONITOR_H_

#include <memory>

#include "absl/status/statusor.h"
#include "dmareg/cache_options.h"
#include "dmareg/monitor.h"

namespace dmareg::internal {

// kAutomatic: the shared monitor, whatever it is; the first time it is the
// userfaultfd alone, a warning says the munmap window is open and how to
// close it. kHooks: the shared one if it is a HooksMonitor, else
// FailedPrecondition saying why the hooks are absent. kUserfaultfd: the
// shared one if a UserfaultfdMonitor, or the userfaultfd a shared
// HooksMonitor is composed with. kExplicitOnly: not shared; InvalidArgument.
absl::StatusOr<std::shared_ptr<MemoryMonitor>> SharedMonitorFor(Monitoring monitoring);

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_MONITOR_SHARED_MONITOR_H_
