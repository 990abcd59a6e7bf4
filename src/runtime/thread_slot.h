// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// Thread slots: a small number, unique among the live threads of the
// process, that lets a thread own per-thread data (a counter stripe, a
// reference-count table) found by indexing, with no hashing and no lock.
// A slot goes back to the pool when its thread exits and is reused by a
// later thread, which then continues whatever the slot owns (counts are only
// ever summed, never attributed to a thread). Threads beyond kThreadSlots
// live at once, and threads that are exiting, get kNoSlot and take the
// callers' shared path.

#ifndef DMAREG_SRC_BASE_THREAD_SLOT_H_
#define DMAREG_SRC_BASE_THREAD_SLOT_H_

#include <cstddef>

namespace dmareg::internal {

inline constexpr size_t kThreadSlots = 64;
inline constexpr size_t kNoSlot = kThreadSlots;

// Zero until the thread first asks; then its slot plus one (kNoSlot + 1
// without one). initial-exec: a hit reads it with one TLS load, no
// __tls_get_addr call; constinit: and without a call to an init wrapper.
extern constinit thread_local size_t tls_thread_slot __attribute__((tls_model("initial-exec")));
size_t AssignThreadSlot();

// This thread's slot, or kNoSlot. The hand-over from an exited thread to the
// next owner of its slot goes through a mutex, so the new owner sees every
// write the old one made to what the slot owns.
inline size_t ThreadSlot() {
  const size_t s = tls_thread_slot;
  return s != 0 ? s - 1 : AssignThreadSlot();
}

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_BASE_THREAD_SLOT_H_
