// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "runtime/thread_slot.h"

#include <mutex>
#include <vector>

namespace dmareg::internal {

constinit thread_local size_t tls_thread_slot __attribute__((tls_model("initial-exec"))) = 0;

namespace {

// Slots are a process-wide resource (they number the process's threads), so
// the pool of free ones is process-wide too. Never destroyed: threads may
// exit during static destruction.
struct SlotPool {
  std::mutex mu;
  std::vector<size_t> free;  // returned by exited threads
  size_t next = 0;           // never handed out yet: next .. kThreadSlots-1
};

SlotPool& Pool() {
  static SlotPool* pool = new SlotPool();
  return *pool;
}

// Gives the slot back when the thread exits. Later calls on this thread
// (other thread_local destructors) get kNoSlot.
struct SlotReturner {
  size_t slot = kNoSlot;
  ~SlotReturner() {
    tls_thread_slot = kNoSlot + 1;
    if (slot == kNoSlot) return;
    SlotPool& p = Pool();
    std::lock_guard<std::mutex> lock(p.mu);
    p.free.push_back(slot);
  }
};
thread_local SlotReturner slot_returner;

}  // namespace

size_t AssignThreadSlot() {
  size_t slot = kNoSlot;
  {
    SlotPool& p = Pool();
    std::lock_guard<std::mutex> lock(p.mu);
    if (!p.free.empty()) {
      slot = p.free.back();
      p.free.pop_back();
    } else if (p.next < kThreadSlots) {
      slot = p.next++;
    }
  }
  slot_returner.slot = slot;  // constructs the returner: runs at thread exit
  tls_thread_slot = slot + 1;
  return slot;
}

}  // namespace dmareg::internal
