// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "core/thread_refs.h"

#include <sched.h>
#include <sys/mman.h>

#include <cstddef>

namespace dmareg::internal {

namespace {
constexpr size_t kTableBytes = ThreadRefs::kMaxIndex * sizeof(int32_t);
// The first 2 MiB (the first half million regions) on small pages, so that
// a small cache costs a page per thread; beyond, huge pages spare the TLB.
constexpr size_t kSmallPagesBytes = size_t{2} << 20;
}  // namespace

ThreadRefs* ThreadRefs::Create() {
  // Reserved, not committed: anonymous pages read as zero until written.
  void* p = mmap(nullptr, kTableBytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  madvise(static_cast<char*>(p) + kSmallPagesBytes, kTableBytes - kSmallPagesBytes, MADV_HUGEPAGE);
  return new ThreadRefs(static_cast<int32_t*>(p));
}

ThreadRefs::~ThreadRefs() { munmap(counts_, kTableBytes); }

ThreadRefTables::~ThreadRefTables() {
  for (auto& t : tables_) delete t.load(std::memory_order_relaxed);
}

ThreadRefs* ThreadRefTables::CreateMine() {
  const size_t slot = ThreadSlot();
  if (!enabled_ || slot >= kThreadSlots) return nullptr;
  ThreadRefs* t = tables_[slot + 1].load(std::memory_order_relaxed);
  if (t == nullptr) {
    t = ThreadRefs::Create();
    if (t == nullptr) return nullptr;  // the shared count still works
    const size_t n = count_.load(std::memory_order_relaxed);
    list_[n].store(t, std::memory_order_relaxed);
    count_.store(n + 1, std::memory_order_release);
    tables_[slot + 1].store(t, std::memory_order_release);
  }
  return t;
}

bool ThreadRefTables::OthersMayHold() const {
  const size_t n = count_.load(std::memory_order_acquire);
  if (n == 0) return false;
  if (n > 1) return true;
  const size_t mine = ThreadSlot();
  return mine >= kThreadSlots || tables_[mine + 1].load(std::memory_order_relaxed) !=
                                     list_[0].load(std::memory_order_relaxed);
}

int64_t ThreadRefTables::Sum(uint32_t index) const {
  int64_t sum = 0;
  if (index >= ThreadRefs::kMaxIndex) return 0;
  const size_t n = count_.load(std::memory_order_acquire);
  for (size_t i = 0; i < n; ++i) sum += list_[i].load(std::memory_order_relaxed)->Get(index);
  return sum;
}

uint64_t ThreadRefTables::Hits() const {
  uint64_t sum = 0;
  const size_t n = count_.load(std::memory_order_acquire);
  for (size_t i = 0; i < n; ++i) sum += list_[i].load(std::memory_order_relaxed)->hits();
  return sum;
}

uint64_t ThreadRefTables::DmaBufHits() const {
  uint64_t sum = 0;
  const size_t n = count_.load(std::memory_order_acquire);
  for (size_t i = 0; i < n; ++i) sum += list_[i].load(std::memory_order_relaxed)->dmabuf_hits();
  return sum;
}

void ThreadRefTables::AwaitReleases() const {
  const size_t mine = ThreadSlot();
  for (size_t s = 0; s < kThreadSlots; ++s) {
    const ThreadRefs* p = tables_[s + 1].load(std::memory_order_acquire);
    if (p == nullptr || s == mine) continue;
    // A few instructions, unless that thread was descheduled mid-release.
    // A stale mark from before a fork has a thread behind it no longer.
    while (p->busy.load(std::memory_order_acquire) == ThreadRefs::BusyMark()) sched_yield();
  }
}

}  // namespace dmareg::internal
