// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// CacheCore: the registration cache behind RegistrationCache's front door
// (which validates and rounds requests before they get here).
//
// Lifetime: a CacheCore is owned jointly by its RegistrationCache and by
// every Region it has allocated and not yet freed (`refs_`), so a handle that
// outlives the cache can still release its mapping. The last owner deletes it.

#ifndef DMAREG_SRC_CORE_CACHE_CORE_H_
#define DMAREG_SRC_CORE_CACHE_CORE_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include <sys/types.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "dmareg/cache.h"
#include "core/fork_generation.h"
#include "core/mutex.h"
#include "core/range_index.h"
#include "core/region.h"
#include "core/region_pool.h"
#include "core/striped_counter.h"
#include "monitor/invalidation_log.h"

namespace dmareg::internal {

class CacheCore {
 public:
  CacheCore(std::shared_ptr<Domain> domain, std::shared_ptr<MemoryMonitor> monitor,
            CacheOptions options);

  // [a, b) page-aligned, non-empty; `want` normalised and valid.
  absl::StatusOr<Region*> AcquireHost(uintptr_t a, uintptr_t b, AccessFlags want);
  absl::StatusOr<Region*> AcquireDmaBuf(const DmaBufMemory& m, AccessFlags want);
  void Invalidate(uintptr_t a, uintptr_t b);
  absl::Status SetLimits(CacheOptions options);
  CacheOptions limits() const;
  void Flush();
  CacheStats stats() const;
  Domain& domain() const { return *domain_; }
  MemoryMonitor& monitor() const { return *monitor_; }

  // Hit path: true if the monitor has events this cache has not applied
  // yet, or the process forked since the cache was made.
  bool EventsPending() const {
    return ForkGeneration() != fork_generation_ ||
           log_.Pending(log_cursor_.load(std::memory_order_acquire));
  }
  // Applies pending monitor events; FailedPrecondition in a forked child.
  absl::Status CatchUp() ABSL_LOCKS_EXCLUDED(mu_);
  size_t page_size() const { return page_size_; }

  // A handle let go of `r`.
  void Release(Region* r) {
    if (r->Unref()) FreeDead(r);
  }
  // The owning RegistrationCache is gone: retire everything, drop its share.
  void Close();

 private:
  struct InvalidationRecord {
    uint64_t epoch = 0;
    uintptr_t a = 0, b = 0;
  };
  using RegionList = std::vector<Region*>;

  ~CacheCore();
  Region* FastHit(uintptr_t a, uintptr_t b, AccessFlags want);
  absl::StatusOr<Region*> Miss(uintptr_t a, uintptr_t b, AccessFlags want);

  // Removes `r` from the index and the CLOCK ring and marks it dead; if no
  // handle is out it is appended to `to_free` (and leaves the accounting).
  void Retire(Region* r, RegionList* to_free) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Evicts until `regions` more mappings of `bytes` fit the limits.
  absl::Status MakeRoom(size_t regions, size_t bytes, RegionList* to_free)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool OverLimits(size_t regions, size_t bytes) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Retires what overlaps [a, b) and logs it for in-flight misses.
  void InvalidateLocked(uintptr_t a, uintptr_t b, RegionList* to_free)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Applies the monitor's log past log_cursor_ (all of it: a caller that
  // must not miss an event calls log_.WaitQuiet() first).
  void ApplyEventsLocked(RegionList* to_free) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Forked() const { return ForkGeneration() != fork_generation_; }
  absl::Status ForkedError() const;
  // True if an Invalidate overlapping [a, b) ran after `epoch`.
  bool InvalidatedSince(uint64_t epoch, uintptr_t a, uintptr_t b) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Region* NewRegion(uintptr_t addr, size_t length, AccessFlags access,
                    const DeviceMapping& m, uint64_t state) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RingInsert(Region* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RingRemove(Region* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Forget(Region* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);  // leave accounting

  // Deregisters and recycles regions that are dead with no handle (call
  // without mu_; may delete `this` when the last share goes).
  void FreeRegions(RegionList& regions) ABSL_LOCKS_EXCLUDED(mu_);
  void FreeDead(Region* r) ABSL_LOCKS_EXCLUDED(mu_);
  void DropRef();

  const std::shared_ptr<Domain> domain_;
  const std::shared_ptr<MemoryMonitor> monitor_;
  InvalidationLog& log_;
  const size_t page_size_;
  const uint32_t fork_generation_;
  const pid_t creator_pid_;

  // Lock order: mu_, then the monitor log's leaf mutex. mu_ is never held
  // across a Domain call (but for a miss's last attempts, see Miss), and the
  // hit path never takes it. Producers of monitor events never take it.
  mutable Mutex mu_;
  CacheOptions options_ ABSL_GUARDED_BY(mu_);
  RangeIndex index_;  // writers hold mu_; Probe runs without it
  RegionPool pool_ ABSL_GUARDED_BY(mu_);
  Region* clock_hand_ ABSL_GUARDED_BY(mu_) = nullptr;  // ring of indexed regions
  size_t live_regions_ ABSL_GUARDED_BY(mu_) = 0;       // mapped on the device
  size_t live_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  size_t dead_referenced_ ABSL_GUARDED_BY(mu_) = 0;    // retired, handles out
  size_t reserved_regions_ ABSL_GUARDED_BY(mu_) = 0;   // misses in flight
  size_t reserved_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t inv_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  // Monitor events applied so far; written under mu_, read by hits.
  std::atomic<uint64_t> log_cursor_{0};
  std::array<InvalidationRecord, 64> inv_log_ ABSL_GUARDED_BY(mu_);

  CacheStats counters_ ABSL_GUARDED_BY(mu_);  // all but hits and the gauges
  StripedCounter hits_;
  std::atomic<int64_t> refs_{1};  // the owner + allocated regions
};

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_CORE_CACHE_CORE_H_
