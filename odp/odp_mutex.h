// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The on-demand IOVA cache's lock: a std::mutex with Clang thread-safety
// annotations. odp/ builds on the exported API only, so it keeps this one
// small wrapper of its own rather than the libraries' (src/base/mutex.h).
// Not absl::Mutex: Debian's Abseil is built without ThreadSanitizer
// instrumentation, so TSan cannot see its happens-before edges; pthread
// mutexes are intercepted by every sanitizer. Not installed.

#ifndef DMAREG_ODP_ODP_MUTEX_H_
#define DMAREG_ODP_ODP_MUTEX_H_

#include <mutex>

#include "absl/base/thread_annotations.h"

namespace dmareg::odp_internal {

class ABSL_LOCKABLE Mutex {
 public:
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
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

}  // namespace dmareg::odp_internal

#endif  // DMAREG_ODP_ODP_MUTEX_H_
