// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// SharedMonitor: the process's one automatic monitor.
//
// Process-wide on purpose: the kernel lets one userfaultfd watch a range,
// and libdmareg_hooks publishes every unmap of the process to its
// subscribers, so two automatic monitors would either fight over ranges (the
// second cache could cache nothing) or do the same work twice. One per
// process (per fork generation: a child's userfaultfd must be its own), made
// on first use, gone with the last holder.
#include "monitor/shared_monitor.h"

#include <memory>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "base/mutex.h"
#include "dmareg/monitor.h"
#include "runtime/fork_generation.h"
#include "runtime/log.h"

namespace dmareg {

namespace {

struct Shared {
  internal::Mutex mu;
  std::weak_ptr<MemoryMonitor> monitor ABSL_GUARDED_BY(mu);
  uint32_t generation ABSL_GUARDED_BY(mu) = 0;   // the fork generation it was made in
  bool window_said ABSL_GUARDED_BY(mu) = false;  // the userfaultfd-alone warning
  // Why the monitor made is not a HooksMonitor (HooksMonitor::Create's
  // answer then), for a cache that asks for the hooks.
  absl::Status no_hooks ABSL_GUARDED_BY(mu);
};

// Never destroyed: a cache may be closed while the process exits.
Shared& TheShared() {
  static Shared* shared = new Shared;
  return *shared;
}

absl::StatusOr<std::shared_ptr<MemoryMonitor>> SharedLocked(Shared& s)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
  const uint32_t generation = internal::WatchForks();
  if (s.generation == generation) {
    if (std::shared_ptr<MemoryMonitor> m = s.monitor.lock()) return m;
  }
  // A parent's monitor watches the parent's memory: a child starts afresh
  // (its copies of the parent's caches keep theirs).
  std::shared_ptr<MemoryMonitor> made;
  absl::StatusOr<std::shared_ptr<HooksMonitor>> hooks = HooksMonitor::Create();
  s.no_hooks = hooks.status();
  if (hooks.ok()) {
    made = *std::move(hooks);
  } else {
    absl::StatusOr<std::shared_ptr<UserfaultfdMonitor>> uffd = UserfaultfdMonitor::Create();
    if (!uffd.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("no monitor for this process: ", uffd.status().message(), "; and ",
                       hooks.status().message()));
    }
    made = *std::move(uffd);
  }
  s.monitor = made;
  s.generation = generation;
  return made;
}

}  // namespace

absl::StatusOr<std::shared_ptr<MemoryMonitor>> SharedMonitor() {
  // The caller's own code asks: no cache to warn about.
  Shared& s = TheShared();
  internal::MutexLock lock(&s.mu);
  return SharedLocked(s);
}

namespace internal {

absl::StatusOr<std::shared_ptr<MemoryMonitor>> SharedMonitorFor(Monitoring monitoring) {
  if (monitoring == Monitoring::kExplicitOnly) {
    return absl::InvalidArgumentError("an explicit monitor is never shared");
  }
  bool warn_window = false;
  std::shared_ptr<MemoryMonitor> m;
  HooksMonitor* hooks = nullptr;
  absl::Status no_hooks;
  {
    Shared& s = TheShared();
    MutexLock lock(&s.mu);
    absl::StatusOr<std::shared_ptr<MemoryMonitor>> shared = SharedLocked(s);
    if (!shared.ok()) return shared.status();
    m = *std::move(shared);
    hooks = dynamic_cast<HooksMonitor*>(m.get());
    if (hooks == nullptr) no_hooks = s.no_hooks;
    if (monitoring == Monitoring::kAutomatic && !s.window_said && hooks == nullptr) {
      s.window_said = warn_window = true;
    }
  }
  if (warn_window) {
    Log(LogLevel::kWarn,
        "monitor: the userfaultfd alone (libdmareg_hooks is not interposed): an unmap is seen "
        "once the munmap has returned, so a thread that maps and acquires the same addresses "
        "while it is in flight may be served the old pages; link libdmareg_hooks "
        "(-ldmareg_hooks, the installed package's default) or preload it to close the window, "
        "or choose monitoring = userfaultfd to accept it");
  }
  switch (monitoring) {
    case Monitoring::kHooks:
      // The shared one is a userfaultfd: why the hooks were absent when it was made.
      if (hooks == nullptr) return no_hooks;
      return m;
    case Monitoring::kUserfaultfd:
      if (hooks == nullptr) return m;
      if (hooks->userfaultfd() != nullptr) {
        // Aliasing: holding it keeps the shared monitor (and so this
        // userfaultfd's place as the process's one) alive.
        return std::shared_ptr<MemoryMonitor>(m, hooks->userfaultfd().get());
      }
      return absl::FailedPreconditionError(
          "userfaultfd monitor: the kernel refused one to the process's monitor (it runs on the "
          "hooks alone)");
    default:
      return m;
  }
}

}  // namespace internal

}  // namespace dmareg
