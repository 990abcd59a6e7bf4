// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// A background thread that sleeps in poll(2) and is woken to stop: it owns
// an eventfd the thread adds to its poll set, and Stop() (or the destructor)
// writes it and joins. In a forked child the thread stayed in the parent, so
// Stop() drops the handle instead of joining (a join would never return).
// Used by the watches that wait on a device's events (verbs, VFIO).
//
//   WakeableThread thread;
//   thread.Start([&] { for (;;) { poll({my_fd, thread.wake_fd()}); ... } });
//   ...
//   thread.Stop();  // before what the body uses goes
#ifndef DMAREG_SRC_BASE_WAKEABLE_THREAD_H_
#define DMAREG_SRC_BASE_WAKEABLE_THREAD_H_

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <system_error>
#include <thread>
#include <utility>

namespace dmareg::internal {

class WakeableThread {
 public:
  WakeableThread() : wake_fd_(eventfd(0, EFD_CLOEXEC)) {}
  ~WakeableThread() {
    Stop();
    if (wake_fd_ >= 0) close(wake_fd_);
  }
  WakeableThread(const WakeableThread&) = delete;
  WakeableThread& operator=(const WakeableThread&) = delete;

  // Readable once Stop() is called: the body returns when it is.
  int wake_fd() const { return wake_fd_; }

  // Runs `body` on the thread; false if there is no eventfd or no thread.
  template <typename F>
  bool Start(F body) {
    if (wake_fd_ < 0) return false;
    try {
      thread_ = std::thread(std::move(body));
    } catch (const std::system_error&) {
      return false;
    }
    return true;
  }

  // Wakes the thread and joins it; idempotent.
  void Stop() {
    if (!thread_.joinable()) return;
    if (getpid() != creator_pid_) {
      // A forked child: the handle is moved into a leaked object, so no
      // call reaches the thread library for a thread that is not here.
      new std::thread(std::move(thread_));
      return;
    }
    const uint64_t one = 1;
    while (write(wake_fd_, &one, sizeof one) < 0 && errno == EINTR) {
    }
    thread_.join();
  }

 private:
  const pid_t creator_pid_ = getpid();
  const int wake_fd_;
  std::thread thread_;
};

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_BASE_WAKEABLE_THREAD_H_
