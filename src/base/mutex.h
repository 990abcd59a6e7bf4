// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// Mutex: a lock with Clang thread-safety annotations, one 32-bit word and a
// futex. Taking and releasing it uncontended is one atomic instruction
// each, inline; a thread that finds it held sleeps in the kernel until the
// holder wakes it (Drepper, "Futexes Are Tricky", mutex 2).
//
//   Mutex mu;
//   int n ABSL_GUARDED_BY(mu);
//   { MutexLock lock(&mu); ++n; }
//
// Why not std::mutex: its lock and unlock are calls into libc, about 50
// instructions a pair, twice on every step of the cache's miss-and-retire
// path (callgrind). Why not absl::Mutex: Debian's Abseil is built without
// ThreadSanitizer instrumentation, so TSan cannot see its happens-before
// edges. This one tells TSan what it is (the __tsan_mutex_* annotations, as
// Abseil's own code does), so TSan checks races and lock order through it
// as through a pthread mutex. Private to one process (FUTEX_PRIVATE): never
// in memory shared with another.

#ifndef DMAREG_SRC_BASE_MUTEX_H_
#define DMAREG_SRC_BASE_MUTEX_H_

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>

#include "absl/base/thread_annotations.h"

#if defined(__SANITIZE_THREAD__)
#define DMAREG_INTERNAL_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define DMAREG_INTERNAL_TSAN 1
#endif
#endif
#ifdef DMAREG_INTERNAL_TSAN
#include <sanitizer/tsan_interface.h>
#endif

namespace dmareg::internal {

class ABSL_LOCKABLE Mutex {
 public:
#ifdef DMAREG_INTERNAL_TSAN
  Mutex() { __tsan_mutex_create(this, 0); }
  ~Mutex() { __tsan_mutex_destroy(this, 0); }
#else
  // Constant-initialised and trivially destroyed, as std::mutex is: usable
  // from static constructors and destructors in any order.
  constexpr Mutex() = default;
#endif
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    Tsan(kPreLock, 0);
    uint32_t seen = kFree;
    if (!word_.compare_exchange_strong(seen, kLocked, std::memory_order_acquire,
                                       std::memory_order_relaxed)) [[unlikely]] {
      LockSlow(seen);
    }
    Tsan(kPostLock, 0);
  }
  bool TryLock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) {
    Tsan(kPreLock, kTryLock);
    uint32_t seen = kFree;
    const bool taken = word_.compare_exchange_strong(seen, kLocked, std::memory_order_acquire,
                                                     std::memory_order_relaxed);
    Tsan(kPostLock, taken ? kTryLock : kTryLock | kTryLockFailed);
    return taken;
  }
  void Unlock() ABSL_UNLOCK_FUNCTION() {
    Tsan(kPreUnlock, 0);
    if (word_.exchange(kFree, std::memory_order_release) == kContended) [[unlikely]]
      Wake();
    Tsan(kPostUnlock, 0);
  }
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK() {}

 private:
  // The word: free, held, or held with (possibly) a thread asleep on it.
  static constexpr uint32_t kFree = 0;
  static constexpr uint32_t kLocked = 1;
  static constexpr uint32_t kContended = 2;

  [[gnu::noinline]] void LockSlow(uint32_t seen) {
    // Marked contended before sleeping, so the unlock that frees it wakes
    // one sleeper; the woken thread marks it so again (others may sleep).
    // The caller's errno survives (a pthread mutex leaves it alone too).
    const int saved_errno = errno;
    if (seen != kContended) seen = word_.exchange(kContended, std::memory_order_acquire);
    while (seen != kFree) {
      syscall(SYS_futex, Futex(), FUTEX_WAIT_PRIVATE, kContended, nullptr, nullptr, 0);
      seen = word_.exchange(kContended, std::memory_order_acquire);
    }
    errno = saved_errno;
  }
  [[gnu::noinline]] void Wake() {
    const int saved_errno = errno;
    syscall(SYS_futex, Futex(), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
    errno = saved_errno;
  }
  uint32_t* Futex() { return reinterpret_cast<uint32_t*>(&word_); }

  enum TsanEvent { kPreLock, kPostLock, kPreUnlock, kPostUnlock };
#ifdef DMAREG_INTERNAL_TSAN
  static constexpr unsigned kTryLock = __tsan_mutex_try_lock;
  static constexpr unsigned kTryLockFailed = __tsan_mutex_try_lock_failed;
  void Tsan(TsanEvent e, unsigned flags) {
    switch (e) {
      case kPreLock:
        __tsan_mutex_pre_lock(this, flags);
        break;
      case kPostLock:
        __tsan_mutex_post_lock(this, flags, 0);
        break;
      case kPreUnlock:
        __tsan_mutex_pre_unlock(this, flags);
        break;
      case kPostUnlock:
        __tsan_mutex_post_unlock(this, flags);
        break;
    }
  }
#else
  static constexpr unsigned kTryLock = 0;
  static constexpr unsigned kTryLockFailed = 0;
  void Tsan(TsanEvent, unsigned) {}
#endif

  std::atomic<uint32_t> word_{kFree};
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_BASE_MUTEX_H_
