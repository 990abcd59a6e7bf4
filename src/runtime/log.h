// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The library's side of log.h: cheap level checks, formatting only when a
// message will be passed on, and a per-thread queue for messages found under
// a lock, passed on once the lock is released.
//
//   internal::Log(LogLevel::kWarn, "cache on %s: deregistering %s failed: %s",
//                 domain->name(), span.ToString(), status.ToString());
//   // under a lock:
//   internal::LogLater(LogLevel::kWarn, "cache on %s: ...", domain->name());
//   // after releasing it:
//   internal::FlushQueuedLogs();
//
// The private section of libdmareg's ABI (docs/abi.md): the backends and the
// testing library are libraries of their own, and their warnings go through
// these, to the application's sink at its level. So libdmareg exports
// log_threshold, EmitLog, QueueLog and FlushQueuedLogs (DMAREG_PRIVATE in
// front of each), in version node DMAREG_PRIVATE_0.1 (abi/dmareg.map), for
// the libraries built from this tree only: no installed header declares
// them, and they may change in any release. The rest of this file is the
// core's own (or inline, on top of those four).

#ifndef DMAREG_SRC_BASE_LOG_H_
#define DMAREG_SRC_BASE_LOG_H_

#include <atomic>
#include <optional>
#include <string>

#include "absl/strings/str_format.h"
#include "dmareg/log.h"

// Exported from libdmareg despite -fvisibility=hidden: the private section.
#define DMAREG_PRIVATE [[gnu::visibility("default")]]

namespace dmareg::internal {

// The threshold in force (a LogLevel), kept in step with the state in log.cc.
DMAREG_PRIVATE extern std::atomic<int> log_threshold;

inline bool LogEnabled(LogLevel level) {
  return static_cast<int>(level) <= log_threshold.load(std::memory_order_relaxed) &&
         level != LogLevel::kOff;
}

// Passes `text` to the sink now. Call with no lock of the library held.
DMAREG_PRIVATE void EmitLog(LogLevel level, const std::string& text);
// Queues `text` on this thread, for the next FlushQueuedLogs on it.
DMAREG_PRIVATE void QueueLog(LogLevel level, std::string text);
// Set while this thread has queued messages (one TLS load to test, on every
// path that let go of a lock; initial-exec: no __tls_get_addr call).
extern constinit thread_local bool tls_logs_queued __attribute__((tls_model("initial-exec")));
DMAREG_PRIVATE void FlushQueuedLogsSlow();
// Passes on what this thread queued, in order.
inline void FlushQueuedLogs() {
  if (tls_logs_queued) [[unlikely]]
    FlushQueuedLogsSlow();
}

// DMAREG_LOG_LEVEL as RegistrationCache::Create read it (nullopt: unset).
void SetEnvironmentLogLevel(std::optional<LogLevel> level);

template <typename... Args>
void Log(LogLevel level, const absl::FormatSpec<Args...>& format, const Args&... args) {
  if (LogEnabled(level)) [[unlikely]]
    EmitLog(level, absl::StrFormat(format, args...));
}

template <typename... Args>
void LogLater(LogLevel level, const absl::FormatSpec<Args...>& format, const Args&... args) {
  if (LogEnabled(level)) [[unlikely]]
    QueueLog(level, absl::StrFormat(format, args...));
}

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_BASE_LOG_H_
