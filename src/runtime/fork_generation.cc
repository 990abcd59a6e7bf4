// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "runtime/fork_generation.h"

#include <pthread.h>

#include <mutex>

namespace dmareg::internal {

std::atomic<uint32_t> fork_generation_value{0};

namespace {
void InChild() { fork_generation_value.fetch_add(1, std::memory_order_relaxed); }
}  // namespace

uint32_t WatchForks() {
  static std::once_flag once;
  std::call_once(once, [] { pthread_atfork(nullptr, nullptr, &InChild); });
  return ForkGeneration();
}

}  // namespace dmareg::internal
