// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "common/limited_memlock.h"

#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace dmareg::test {
namespace {

// CAP_IPC_LOCK in or out of the effective set; the raw system calls, as
// glibc wraps neither.
bool SetIpcLockEffective(bool on, std::string* error) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (syscall(SYS_capget, &header, data) != 0) {
    *error = std::string("capget: ") + std::strerror(errno);
    return false;
  }
  const uint32_t bit = 1u << CAP_IPC_LOCK;  // capability 14: in the first word
  if (on && (data[0].permitted & bit) == 0) {
    *error = "CAP_IPC_LOCK is not permitted: cannot restore it";
    return false;
  }
  data[0].effective = on ? (data[0].effective | bit) : (data[0].effective & ~bit);
  if (syscall(SYS_capset, &header, data) != 0) {
    *error = std::string("capset: ") + std::strerror(errno);
    return false;
  }
  return true;
}

}  // namespace

LimitedMemlock::LimitedMemlock(uint64_t soft) {
  if (getrlimit(RLIMIT_MEMLOCK, &saved_) != 0) {
    error_ = std::string("getrlimit: ") + std::strerror(errno);
    return;
  }
  dropped_ = SetIpcLockEffective(false, &error_);
  if (dropped_) SetSoft(soft);
}

LimitedMemlock::~LimitedMemlock() {
  setrlimit(RLIMIT_MEMLOCK, &saved_);
  std::string ignored;
  if (dropped_) SetIpcLockEffective(true, &ignored);
}

bool LimitedMemlock::SetSoft(uint64_t soft) {
  struct rlimit r = saved_;
  r.rlim_cur = soft;
  if (setrlimit(RLIMIT_MEMLOCK, &r) != 0) {
    error_ = std::string("setrlimit(RLIMIT_MEMLOCK): ") + std::strerror(errno);
    return false;
  }
  return true;
}

}  // namespace dmareg::test
