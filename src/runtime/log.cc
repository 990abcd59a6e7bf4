// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The process-wide log state (log.h says why there is one): the sink, the
// levels that decide the threshold, and the per-thread queue.
#include "runtime/log.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/mutex.h"

namespace dmareg {

namespace internal {

// Warnings by default, as rdma-core and UCX print theirs; DMAREG_LOG_LEVEL
// (read when the state is first made, and by each RegistrationCache::Create)
// or SetLogLevel change it.
std::atomic<int> log_threshold{static_cast<int>(LogLevel::kWarn)};

namespace {

struct LogState {
  Mutex mu;
  LogSink sink ABSL_GUARDED_BY(mu) = nullptr;  // nullptr: stderr
  void* context ABSL_GUARDED_BY(mu) = nullptr;
  std::optional<LogLevel> explicit_level ABSL_GUARDED_BY(mu);
  std::optional<LogLevel> environment_level ABSL_GUARDED_BY(mu);
};

void UpdateThreshold(LogState& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
  LogLevel level = LogLevel::kWarn;
  if (s.environment_level) level = *s.environment_level;
  if (s.explicit_level) level = *s.explicit_level;
  log_threshold.store(static_cast<int>(level), std::memory_order_relaxed);
}

// Never destroyed: threads may log while the process exits. Made with
// DMAREG_LOG_LEVEL as the environment has it (a bad word is ignored here and
// reported by RegistrationCache::Create), so "off" silences even what is
// said before any cache exists.
LogState& State() {
  static LogState* state = [] {
    auto* s = new LogState;
    const char* word = std::getenv("DMAREG_LOG_LEVEL");
    MutexLock lock(&s->mu);
    if (word != nullptr) s->environment_level = ParseLogLevel(word);
    UpdateThreshold(*s);
    return s;
  }();
  return *state;
}

// One write per line, so lines from several processes sharing stderr do
// not interleave.
void WriteToStderr(LogLevel level, const std::string& text) {
  std::string line = absl::StrCat("dmareg: ", LogLevelName(level), ": ", text, "\n");
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    const ssize_t n = write(STDERR_FILENO, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // nowhere to complain to
    p += n;
    left -= static_cast<size_t>(n);
  }
}

// Set while this thread is inside the sink: what it logs there is dropped.
thread_local bool in_sink = false;

struct Queued {
  LogLevel level;
  std::string text;
};
thread_local std::vector<Queued> queued;

}  // namespace

void EmitLog(LogLevel level, const std::string& text) {
  if (in_sink || !LogEnabled(level)) return;
  LogState& s = State();
  if (!LogEnabled(level)) return;  // the environment's level, read just now
  MutexLock lock(&s.mu);
  in_sink = true;
  if (s.sink != nullptr) {
    s.sink(s.context, level, text);
  } else {
    WriteToStderr(level, text);
  }
  in_sink = false;
}

constinit thread_local bool tls_logs_queued __attribute__((tls_model("initial-exec"))) = false;

void QueueLog(LogLevel level, std::string text) {
  queued.push_back(Queued{level, std::move(text)});
  tls_logs_queued = true;
}

void FlushQueuedLogsSlow() {
  tls_logs_queued = false;
  if (queued.empty()) return;
  std::vector<Queued> now;
  now.swap(queued);
  for (const Queued& q : now) EmitLog(q.level, q.text);
}

void SetEnvironmentLogLevel(std::optional<LogLevel> level) {
  LogState& s = State();
  MutexLock lock(&s.mu);
  s.environment_level = level;
  UpdateThreshold(s);
}

}  // namespace internal

const char* LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kOff:
      return "off";
    case LogLevel::kError:
      return "error";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kDebug:
      return "debug";
  }
  return "unknown";
}

std::optional<LogLevel> ParseLogLevel(std::string_view word) {
  for (LogLevel l :
       {LogLevel::kOff, LogLevel::kError, LogLevel::kWarn, LogLevel::kInfo, LogLevel::kDebug}) {
    if (word == LogLevelName(l)) return l;
  }
  return std::nullopt;
}

void SetLogSink(LogSink sink, void* context) {
  internal::LogState& s = internal::State();
  internal::MutexLock lock(&s.mu);
  s.sink = sink;
  s.context = sink != nullptr ? context : nullptr;
  internal::UpdateThreshold(s);
}

void SetLogLevel(LogLevel level) {
  internal::LogState& s = internal::State();
  internal::MutexLock lock(&s.mu);
  s.explicit_level = level;
  internal::UpdateThreshold(s);
}

LogLevel GetLogLevel() {
  return static_cast<LogLevel>(internal::log_threshold.load(std::memory_order_relaxed));
}

void ResetLogging() {
  internal::LogState& s = internal::State();
  internal::MutexLock lock(&s.mu);
  s.sink = nullptr;
  s.context = nullptr;
  s.explicit_level.reset();
  s.environment_level.reset();
  internal::UpdateThreshold(s);
}

}  // namespace dmareg
