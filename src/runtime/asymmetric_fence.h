// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// Asymmetric fences: a light fence for the frequent side of a Dekker-style
// handshake (the hit path: free, the compiler only) and a heavy fence for the
// rare side (retiring a region) that makes every other running thread of the
// process execute a full memory barrier, via
// membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) (Linux >= 4.14).
//
// Pairing: thread A stores x, LightFence(), loads y; thread B stores y,
// HeavyFence(), loads x. Then A sees B's y, or B sees A's x (or both). A
// sleeping or descheduled thread has passed through the kernel's own full
// barrier, so only running threads need the IPI.
//
// HeavyFenceAvailable() is false when the kernel refuses membarrier, and
// always under ThreadSanitizer, which does not model it (it would then
// report the light side as a race, or worse, miss real ones); callers then
// use a protocol with atomic read-modify-writes on both sides.

#ifndef DMAREG_SRC_BASE_ASYMMETRIC_FENCE_H_
#define DMAREG_SRC_BASE_ASYMMETRIC_FENCE_H_

#include <atomic>

namespace dmareg::internal {

inline void LightFence() { std::atomic_signal_fence(std::memory_order_seq_cst); }

// Registers the process for expedited membarrier on first call; the answer
// is fixed for the life of the process.
bool HeavyFenceAvailable();

// Precondition: HeavyFenceAvailable().
void HeavyFence();

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_BASE_ASYMMETRIC_FENCE_H_
