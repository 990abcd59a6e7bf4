// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// log.h: where dmareg's warnings go.
//
// The library reports what an application may want to know but that is no
// request's error: the cache fell back from on-demand to pinned paging, a
// range the monitor cannot watch was registered uncached, the cache fell
// behind its monitor and dropped everything, a deregistration failed, the
// PFN check found a stale registration. Each message names the device and
// the range.
//
//   void ToMyLog(void* ctx, dmareg::LogLevel level, std::string_view text) {
//     static_cast<MyLogger*>(ctx)->Write(dmareg::LogLevelName(level), text);
//   }
//   dmareg::SetLogSink(&ToMyLog, &my_logger);  // warnings and errors
//   dmareg::SetLogLevel(dmareg::LogLevel::kDebug);  // or everything
//
// By default warnings and errors go to stderr, one line per message
// ("dmareg: warn: <text>"), each cause once (a repeat of the same cause is
// debug), as rdma-core and UCX report theirs. DMAREG_LOG_LEVEL (read when
// the library first logs and by every RegistrationCache::Create) changes the
// threshold: "off" silences it, "info" adds what each cache was created
// with.
//
// Process-wide, like ibv's and UCX's logging: the messages come from deep
// inside caches, monitors and device code that the application reaches
// through many objects, and a process has one log. The state is guarded by
// a mutex and the level is an atomic, so every function here may be called
// from any thread at any time.
//
// The sink is called from whichever thread logs, one call at a time (calls
// are serialised), never with a lock of a cache held (messages found under
// a cache's lock are queued on the thread and passed on once it is
// released). It must not call SetLogSink, SetLogLevel or ResetLogging (they
// wait for the sink to return); messages logged from inside the sink on the
// same thread are dropped. Once SetLogSink returns, the previous sink is
// never called again, so its context may be freed.

#ifndef DMAREG_LOG_H_
#define DMAREG_LOG_H_

#include <optional>
#include <string_view>

#pragma GCC visibility push(default)

namespace dmareg {

// In order of verbosity: a message at level L is passed on when the
// threshold is L or more verbose.
enum class LogLevel { kOff, kError, kWarn, kInfo, kDebug };

// "off", "error", "warn", "info", "debug" (the DMAREG_LOG_LEVEL words).
const char* LogLevelName(LogLevel level);
// The inverse of LogLevelName; nullopt for any other word.
std::optional<LogLevel> ParseLogLevel(std::string_view word);

// `text` has no trailing newline and is valid only during the call.
using LogSink = void (*)(void* context, LogLevel level, std::string_view text);

// Sends every later message to `sink` (nullptr: the default, stderr).
void SetLogSink(LogSink sink, void* context);

// The threshold, which wins over DMAREG_LOG_LEVEL.
void SetLogLevel(LogLevel level);

// The threshold in force: SetLogLevel's, else DMAREG_LOG_LEVEL's (as the
// last RegistrationCache::Create read it), else kWarn.
LogLevel GetLogLevel();

// Back to the start: the default sink, no level set (DMAREG_LOG_LEVEL is
// read again by the next Create).
void ResetLogging();

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_LOG_H_
