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

#ifndef DMAREG_SRC_BASE_LOG_H_
#define DMAREG_SRC_BASE_LOG_H_

#include <atomic>
#include <optional>
#include <string>

#include "absl/strings/str_format.h"
#include "dmareg/log.h"

namespace dmareg::internal {

// The threshold in force (a LogLevel), kept in step with the state in log.cc.
extern std::atomic<int> log_threshold;

inline bool LogEnabled(LogLevel level) {
  return static_cast<int>(level) <= log_threshold.load(std::memory_order_relaxed) &&
         level != LogLevel::kOff;
}

// Passes `text` to the sink now. Call with no lock of the library held.
void EmitLog(LogLevel level, const std::string& text);
// Queues `text` on this thread, for the next FlushQueuedLogs on it.
void QueueLog(LogLevel level, std::string text);
// Set while this thread has queued messages (one TLS load to test, on every
// path that let go of a lock; initial-exec: no __tls_get_addr call).
extern constinit thread_local bool tls_logs_queued __attribute__((tls_model("initial-exec")));
void FlushQueuedLogsSlow();
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
