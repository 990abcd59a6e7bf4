// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The rest of a scope as an unprivileged process meets pinning: CAP_IPC_LOCK
// out of the effective set (kept in the permitted one, so that it can come
// back) and RLIMIT_MEMLOCK's soft limit lowered; the destructor restores
// both. A container's 8 MiB in a test's scale.
//
//   test::LimitedMemlock limit(baseline + (1 << 20));
//   ASSERT_TRUE(limit.ok()) << limit.error();
//   ... registrations past the limit are refused (ENOMEM) ...
//   limit.SetSoft(baseline + (8 << 20));   // the limit allows: recovery

#ifndef DMAREG_TESTS_COMMON_LIMITED_MEMLOCK_H_
#define DMAREG_TESTS_COMMON_LIMITED_MEMLOCK_H_

#include <sys/resource.h>

#include <cstdint>
#include <string>

namespace dmareg::test {

class LimitedMemlock {
 public:
  explicit LimitedMemlock(uint64_t soft);
  ~LimitedMemlock();
  LimitedMemlock(const LimitedMemlock&) = delete;
  LimitedMemlock& operator=(const LimitedMemlock&) = delete;

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  // A new soft limit (at most the hard one): false and error() if refused.
  bool SetSoft(uint64_t soft);

 private:
  struct rlimit saved_ {};
  bool dropped_ = false;
  std::string error_;
};

}  // namespace dmareg::test

#endif  // DMAREG_TESTS_COMMON_LIMITED_MEMLOCK_H_
