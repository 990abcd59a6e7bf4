// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// UserfaultfdMonitor: unmap, remove and remap events from the kernel.
//
// Why write-protect mode: UFFDIO_REGISTER needs a mode, and non-cooperative
// events (UNMAP, REMOVE, REMAP) arrive for any registered range whatever the
// mode. MISSING mode would route the application's first touch of every
// page to us; WP mode faults only on pages someone write-protected with
// UFFDIO_WRITEPROTECT, which we never do. So the application's accesses take
// no fault of ours.
//
// Why the reader only publishes: the kernel holds an unmapping thread (one
// that may hold any lock of ours or the application's) until the event is
// read. The reader reads into a stack buffer and copies ranges into the
// log without a lock; it allocates nothing (malloc could munmap
// and wait for this very reader) and takes no other lock.
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/mutex.h"
#include "dmareg/errno_status.h"
#include "dmareg/monitor.h"
#include "monitor/invalidation_log.h"
#include "monitor/monitor_access.h"
#include "monitor/vma.h"
#include "runtime/fork_generation.h"

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

namespace dmareg {

namespace {

constexpr uint64_t kFeatures =
    UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_REMAP;

int OpenUserfaultfd(std::string* why) {
  const int flags = O_CLOEXEC | O_NONBLOCK;
  int fd = static_cast<int>(syscall(SYS_userfaultfd, flags));
  if (fd >= 0) return fd;
  const int first = errno;
  // Unprivileged with vm.unprivileged_userfaultfd=0: Linux 5.11+ still
  // allows a descriptor that handles user-mode faults only, all we need.
  fd = static_cast<int>(syscall(SYS_userfaultfd, flags | UFFD_USER_MODE_ONLY));
  if (fd >= 0) return fd;
  const int second = errno;
#ifdef USERFAULTFD_IOC_NEW
  // Linux 6.1+: /dev/userfaultfd, when its permissions allow this user.
  const int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
  if (dev >= 0) {
    fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
    const int third = errno;
    close(dev);
    if (fd >= 0) return fd;
    errno = third;
  }
#endif
  *why = absl::StrFormat(
      "userfaultfd: %s (%s); with UFFD_USER_MODE_ONLY: %s (%s); /dev/userfaultfd: %s",
      strerror(first), ErrnoName(first), strerror(second), ErrnoName(second), strerror(errno));
  return -1;
}

}  // namespace

struct UserfaultfdMonitor::State {
  int uffd = -1;
  int wake = -1;  // eventfd: tells the reader to stop
  int maps = -1;  // /proc/self/maps
  uint32_t fork_generation = 0;
  pthread_t reader{};
  std::atomic<bool> reader_running{false};
  std::atomic<bool> reader_done{false};  // left its loop: uffd no longer read
  std::atomic<uint64_t> watches{0};
  std::atomic<bool> hold{false};              // tests: leave events unread
  std::atomic<bool> held_with_events{false};  // tests: ... and some are waiting

  // Lock order: after a cache's mutex, before the log's. The reader never
  // takes it.
  internal::Mutex mu;
  // Ranges known watched, start -> end, pruned by the log's events before
  // each use: a hit here needs no system call.
  absl::btree_map<uintptr_t, uintptr_t> watched ABSL_GUARDED_BY(mu);
  uint64_t cursor ABSL_GUARDED_BY(mu) = 0;  // log events applied to `watched`
};

void UserfaultfdMonitor::PruneWatched() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_->mu) {
  std::vector<Range> ranges;
  bool overrun = false;
  state_->cursor = internal::LogOf(*this).ReadSince(state_->cursor, &ranges, &overrun);
  absl::btree_map<uintptr_t, uintptr_t>& watched = state_->watched;
  if (overrun) {
    watched.clear();
    return;
  }
  for (const Range& r : ranges) {
    // Drop every entry the range touches (a part of it may still be
    // registered; registering it again is harmless).
    auto first = watched.upper_bound(r.begin());
    if (first != watched.begin() && std::prev(first)->second > r.begin()) --first;
    auto last = first;
    while (last != watched.end() && last->first < r.end()) ++last;
    watched.erase(first, last);
  }
}

absl::StatusOr<std::shared_ptr<UserfaultfdMonitor>> UserfaultfdMonitor::Create() {
  auto state = std::make_unique<State>();
  state->fork_generation = internal::WatchForks();
  std::string why;
  state->uffd = OpenUserfaultfd(&why);
  if (state->uffd < 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the kernel refused a userfaultfd (", why,
        "); allow it (vm.unprivileged_userfaultfd=1, or CAP_SYS_PTRACE, or Linux 5.11+) or use "
        "an ExplicitMonitor and call Notify"));
  }
  uffdio_api api = {};
  api.api = UFFD_API;
  api.features = kFeatures;
  if (ioctl(state->uffd, UFFDIO_API, &api) != 0) {
    const int err = errno;
    close(state->uffd);
    return absl::FailedPreconditionError(absl::StrCat(
        ErrnoStatus(err, "UFFDIO_API", "userfaultfd", "unmap/remove/remap events unsupported")
            .message()));
  }
  if ((api.ioctls & (1ull << _UFFDIO_REGISTER)) == 0) {
    close(state->uffd);
    return absl::FailedPreconditionError("userfaultfd: the kernel offers no UFFDIO_REGISTER");
  }
  state->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (state->wake < 0) {
    const int err = errno;
    close(state->uffd);
    return ErrnoStatus(err, "eventfd", "userfaultfd");
  }
  state->maps = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (state->maps < 0) {
    const int err = errno;
    close(state->uffd);
    close(state->wake);
    return ErrnoStatus(err, "open", "/proc/self/maps");
  }
  std::shared_ptr<UserfaultfdMonitor> monitor(new UserfaultfdMonitor(std::move(state)));
  UserfaultfdMonitor* m = monitor.get();
  auto entry = [](void* arg) -> void* {
    static_cast<UserfaultfdMonitor*>(arg)->ReadLoop();
    return nullptr;
  };
  if (const int err = pthread_create(&m->state_->reader, nullptr, entry, m); err != 0) {
    return ErrnoStatus(err, "pthread_create", "userfaultfd");
  }
  // Nothing is watched before the reader runs: a thread's start-up may
  // unmap memory (sanitizer runtimes do), and nobody would read that event.
  while (!m->state_->reader_running.load(std::memory_order_acquire)) sched_yield();
  return monitor;
}

UserfaultfdMonitor::UserfaultfdMonitor(std::unique_ptr<State> state) : state_(std::move(state)) {}

UserfaultfdMonitor::~UserfaultfdMonitor() {
  // In a forked child the reader exists only in the parent, and the
  // descriptor's registrations belong to the parent's address space.
  if (internal::ForkGeneration() == state_->fork_generation) {
    const uint64_t one = 1;
    (void)!write(state_->wake, &one, sizeof one);
    while (!state_->reader_done.load(std::memory_order_acquire)) sched_yield();
    // Closed before the join: the reader's exit (sanitizer runtimes free
    // per-thread state) and the join itself (glibc trims its cache of thread
    // stacks) may unmap watched memory, and with no reader left such an
    // unmap would wait forever. Closing unregisters every range and releases
    // any thread still waiting on an event.
    close(state_->uffd);
    pthread_join(state_->reader, nullptr);
  } else {
    close(state_->uffd);
  }
  close(state_->maps);
  close(state_->wake);
}

MonitorCoverage UserfaultfdMonitor::coverage() const {
  MonitorCoverage c;
  c.munmap = true;
  c.mremap = true;
  c.madvise_dontneed = true;
  c.anonymous = true;
  c.shared_memory = true;
  c.file_backed = false;
  return c;
}

uint64_t UserfaultfdMonitor::watches() const {
  return state_->watches.load(std::memory_order_relaxed);
}

absl::Status UserfaultfdMonitor::Watch(const void* addr, size_t length) {
  if (internal::ForkGeneration() != state_->fork_generation) {
    return absl::FailedPreconditionError(
        "userfaultfd monitor used in a forked child: it watches the parent's address space");
  }
  const std::string what = absl::StrFormat("[%p, +%#x)", addr, length);
  const std::optional<Range> range = Range::FromLength(reinterpret_cast<uintptr_t>(addr), length);
  if (!range || range->empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("UFFDIO_REGISTER on userfaultfd: ", what, " is empty or wraps around"));
  }
  const uintptr_t a = range->begin();
  const uintptr_t b = range->end();
  // Events must be in the log before we trust the set (see Pending).
  internal::LogOf(*this).WaitQuiet();
  internal::MutexLock lock(&state_->mu);
  PruneWatched();
  auto it = state_->watched.upper_bound(a);
  if (it != state_->watched.begin() && std::prev(it)->second >= b) return absl::OkStatus();

  // Whole mappings: registering part of one would split it, and mremap of
  // a split mapping fails (vma.h).
  absl::StatusOr<Range> span = internal::MappingSpanOfSelf(state_->maps, *range);
  if (!span.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("UFFDIO_REGISTER on userfaultfd: ", what,
                                                   " is not mapped: ", span.status().message()));
  }
  uffdio_register reg = {};
  reg.range.start = span->begin();
  reg.range.len = span->length();
  reg.mode = UFFDIO_REGISTER_MODE_WP;
  if (ioctl(state_->uffd, UFFDIO_REGISTER, &reg) == 0) {
    state_->watches.fetch_add(1, std::memory_order_relaxed);
    // Remember [a, b) only, not the whole span: the span was read before the
    // ioctl, and a mapping unmapped meanwhile (unwatched, so with no event)
    // leaves a hole that a later mapping could fill unwatched. [a, b) is the
    // caller's own memory, mapped across the ioctl: all of it is watched,
    // and any change to it from now on is an event that prunes the entry.
    // Merge with overlapping or touching entries.
    uintptr_t start = a, end = b;
    auto first = state_->watched.upper_bound(start);
    if (first != state_->watched.begin() && std::prev(first)->second >= start) --first;
    auto last = first;
    while (last != state_->watched.end() && last->first <= end) {
      start = std::min(start, last->first);
      end = std::max(end, last->second);
      ++last;
    }
    state_->watched.erase(first, last);
    state_->watched.emplace(start, end);
    return absl::OkStatus();
  }
  const int err = errno;
  switch (err) {
    case EBUSY:
      return absl::FailedPreconditionError(
          absl::StrCat("UFFDIO_REGISTER on userfaultfd: ", what,
                       " is watched by another userfaultfd (share one monitor between caches)"));
    case EINVAL:
      return absl::InvalidArgumentError(absl::StrCat(
          "UFFDIO_REGISTER on userfaultfd: cannot watch ", what,
          " (file page cache, device memory or another mapping userfaultfd does not support)"));
    case ENOMEM:
      return absl::InvalidArgumentError(
          absl::StrCat("UFFDIO_REGISTER on userfaultfd: ", what, " is not mapped"));
    default:
      return ErrnoStatus(err, "UFFDIO_REGISTER", "userfaultfd", what);
  }
}

void UserfaultfdMonitor::ReadLoop() {
  state_->reader_running.store(true, std::memory_order_release);
  pollfd fds[2] = {{state_->uffd, POLLIN, 0}, {state_->wake, POLLIN, 0}};
  for (;;) {
    if (poll(fds, 2, -1) < 0) continue;  // EINTR; nothing else can fail here
    if (fds[1].revents != 0) {
      state_->reader_done.store(true, std::memory_order_release);
      return;
    }
    if (fds[0].revents == 0) continue;
    if (state_->hold.load(std::memory_order_acquire)) {
      state_->held_with_events.store(true, std::memory_order_release);
      while (state_->hold.load(std::memory_order_acquire)) sched_yield();
      state_->held_with_events.store(false, std::memory_order_release);
    }
    ReadEvents();
  }
}

namespace internal {
void MonitorAccess::HoldUserfaultfdReader(UserfaultfdMonitor& monitor, bool hold) {
  monitor.state_->hold.store(hold, std::memory_order_release);
}
bool MonitorAccess::UserfaultfdReaderHasEventsWaiting(UserfaultfdMonitor& monitor) {
  return monitor.state_->held_with_events.load(std::memory_order_acquire);
}
}  // namespace internal

void UserfaultfdMonitor::ReadEvents() {
  uffd_msg msgs[64];
  {
    // Open the bracket before the read: the read releases the unmapping
    // threads (see invalidation_log.h).
    BeginEvents();
    const ssize_t n = read(state_->uffd, msgs, sizeof msgs);
    for (ssize_t i = 0; n > 0 && i < n / static_cast<ssize_t>(sizeof(uffd_msg)); ++i) {
      const uffd_msg& m = msgs[i];
      switch (m.event) {
        case UFFD_EVENT_UNMAP:
        case UFFD_EVENT_REMOVE:
          if (auto r = Range::FromBounds(m.arg.remove.start, m.arg.remove.end)) Publish(*r);
          break;
        case UFFD_EVENT_REMAP:
          if (auto r = Range::FromLength(m.arg.remap.from, m.arg.remap.len)) Publish(*r);
          break;
        case UFFD_EVENT_PAGEFAULT: {
          // Not expected: nothing is ever write-protected. Should a fault
          // arrive anyway, un-protect the page and wake the thread rather
          // than leave it hanging.
          const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
          uffdio_writeprotect wp = {};
          wp.range.start = m.arg.pagefault.address & ~(page - 1);
          wp.range.len = page;
          wp.mode = 0;
          if (ioctl(state_->uffd, UFFDIO_WRITEPROTECT, &wp) != 0) {
            uffdio_range wake = wp.range;
            (void)ioctl(state_->uffd, UFFDIO_WAKE, &wake);
          }
          break;
        }
        default:
          break;
      }
    }
    EndEvents();
  }
}

}  // namespace dmareg
