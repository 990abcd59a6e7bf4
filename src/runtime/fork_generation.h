// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The process's fork generation: 0 in the process that loaded dmareg, +1 in
// each child of a fork (a pthread_atfork child handler bumps it).
//
// Process-wide by nature: fork() is an event of the process, not of any
// object, and the child must learn of it before it touches any cache. A
// child inherits the parent's verbs file descriptors, so a deregistration
// made from the child would destroy the parent's mapping; objects that hold
// device state compare the generation they were made in with this one.

#ifndef DMAREG_SRC_BASE_FORK_GENERATION_H_
#define DMAREG_SRC_BASE_FORK_GENERATION_H_

#include <atomic>
#include <cstdint>

namespace dmareg::internal {

extern std::atomic<uint32_t> fork_generation_value;

// Installs the atfork handler (once per process); returns the generation.
uint32_t WatchForks();

inline uint32_t ForkGeneration() { return fork_generation_value.load(std::memory_order_relaxed); }

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_BASE_FORK_GENERATION_H_
