// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// A std::mutex with Clang thread-safety annotations.
//
// Why not absl::Mutex: Debian's Abseil is built without ThreadSanitizer
// instrumentation, so TSan cannot see absl::Mutex's happens-before edges and
// reports false races; pthread mutexes are intercepted by every sanitizer.

#ifndef DMAREG_SRC_BASE_MUTEX_H_
#define DMAREG_SRC_BASE_MUTEX_H_

#include <mutex>

#include "absl/base/thread_annotations.h"

namespace dmareg::internal {

class ABSL_LOCKABLE Mutex {
 public:
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  bool TryLock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) { return mu_.try_lock(); }
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK() {}

 private:
  std::mutex mu_;
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
