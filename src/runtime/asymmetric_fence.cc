// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "runtime/asymmetric_fence.h"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define DMAREG_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define DMAREG_TSAN 1
#endif

namespace dmareg::internal {

namespace {

long Membarrier(int cmd) { return syscall(SYS_membarrier, cmd, 0, 0); }

bool Register() {
#ifdef DMAREG_TSAN
  return false;
#else
  const long cmds = Membarrier(MEMBARRIER_CMD_QUERY);
  if (cmds < 0 || !(cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED)) return false;
  return Membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0;
#endif
}

}  // namespace

bool HeavyFenceAvailable() {
  // Registration is a fact about the process (membarrier registers the mm),
  // so one answer for all caches.
  static const bool available = Register();
  return available;
}

void HeavyFence() {
  // Cannot fail once registered; if it somehow did, carrying on would break
  // the handshake, so stop.
  if (Membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0) std::abort();
}

}  // namespace dmareg::internal
