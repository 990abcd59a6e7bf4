// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// MonitorAccess: the library's own way into a monitor, for the parts of the
// core that share a monitor's log (caches, the hooks monitor) and for the
// tests that hold the userfaultfd reader to make the window of asynchronous
// monitors last. Not installed; nothing outside libdmareg's sources and its
// tests includes it.
#ifndef DMAREG_SRC_MONITOR_MONITOR_ACCESS_H_
#define DMAREG_SRC_MONITOR_MONITOR_ACCESS_H_

#include "dmareg/monitor.h"
#include "monitor/invalidation_log.h"

namespace dmareg::internal {

class MonitorAccess {
 public:
  static InvalidationLog& LogOf(MemoryMonitor& monitor) { return *monitor.log_; }
  static std::shared_ptr<InvalidationLog> SharedLogOf(MemoryMonitor& monitor) {
    return monitor.log_;
  }
  // Tests only: while held, the reader leaves the kernel's events unread, so
  // an unmapping thread stays inside munmap with its addresses already free
  // (the window every asynchronous monitor has, made to last).
  static void HoldUserfaultfdReader(UserfaultfdMonitor& monitor, bool hold);
  // True once a held reader has events waiting (an unmap is in flight).
  static bool UserfaultfdReaderHasEventsWaiting(UserfaultfdMonitor& monitor);
};

inline InvalidationLog& LogOf(MemoryMonitor& monitor) { return MonitorAccess::LogOf(monitor); }

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_MONITOR_MONITOR_ACCESS_H_
