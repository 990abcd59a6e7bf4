// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// CacheCore: the registration cache behind RegistrationCache's front door
// (which validates and rounds requests before they get here).
//
// Lifetime: a CacheCore is owned jointly by its RegistrationCache and by
// every Region it has allocated and not yet freed (`refs_`), so a handle that
// outlives the cache can still release its mapping. The last owner deletes it.
//
// References (the hit path). A region's reference count is spread over
// per-thread tables (thread_refs.h) plus a shared count in its state word
// (region.h). A hit bumps its own thread's entry with a plain store, then
// LightFence(), then reads the region's state; a retirer (always under mu_)
// marks the region dead, then HeavyFence(), then sums every entry. That is
// Dekker's handshake with an asymmetric barrier (asymmetric_fence.h): either
// the hit sees kDead and backs out, or the retirer's sum includes the hit.
// So a region whose sum is 0 after it was marked dead has no handle and can
// get none: it is claimed (kFree) and freed, by whoever sees that first
// under mu_, which makes the freeing exactly-once. A release is the same
// handshake in reverse: decrement, LightFence(), read the state; if dead, the
// releaser settles the region under mu_ (HeavyFence, sum, free at 0).
// Eviction marks a batch of candidates dead, fences once, frees those with a
// zero sum and revives the rest; a hit or release that saw the passing kDead
// backs out or settles under mu_, where it then finds the region live again.
// Between a release's decrement and its look at the state, another thread
// may free the region and with it the last share of the cache: the releaser
// sets its table's `busy` flag around that window and the cache waits for it
// before it is deleted.
// Where no heavy fence exists (old kernels, ThreadSanitizer), or a thread has
// no table, references go on the shared count by compare-and-swap instead,
// which needs no fence: the CAS fails once kDead is set.
// The fence is skipped when no other thread has a table for this cache (the
// sums then read only this thread's own writes); tables are created under mu_.

#ifndef DMAREG_SRC_CORE_CACHE_CORE_H_
#define DMAREG_SRC_CORE_CACHE_CORE_H_

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "base/mutex.h"
#include "base/striped_counter.h"
#include "core/range_index.h"
#include "core/recent_invalidations.h"
#include "core/region.h"
#include "core/region_pool.h"
#include "core/thread_refs.h"
#include "dmareg/cache.h"
#include "dmareg/cache_options.h"
#include "dmareg/dmabuf_id.h"
#include "dmareg/domain.h"
#include "dmareg/memory.h"
#include "dmareg/monitor.h"
#include "dmareg/pagemap.h"
#include "dmareg/range.h"
#include "monitor/invalidation_log.h"
#include "monitor/monitor_access.h"
#include "runtime/asymmetric_fence.h"
#include "runtime/fork_generation.h"

namespace dmareg::internal {

class CacheCore {
 public:
  // `thread_refs`: use per-thread reference tables when the heavy fence is
  // available (false: the shared count only; tests run both).
  CacheCore(std::shared_ptr<Domain> domain, std::shared_ptr<MemoryMonitor> monitor,
            CacheOptions options, bool thread_refs = true);

  // `span` page-aligned, non-empty; `want` normalised and valid.
  // `*created` (if given): true when this call registered the mapping.
  absl::StatusOr<Region*> AcquireHost(Range span, AccessFlags want, bool* created = nullptr);
  // `m` validated (cache_dmabuf.cc).
  absl::StatusOr<Region*> AcquireDmaBuf(const DmaBufMemory& m, AccessFlags want,
                                        bool* created = nullptr);
  // `span` page-aligned (may be empty).
  void Invalidate(Range span);
  // Retires the dma-buf's mappings overlapping `span` (all if empty).
  void InvalidateDmaBuf(DmaBufId id, std::optional<Range> span);
  // The dma-buf and the whole pages of `m`'s slice, clipped to the buffer.
  struct DmaBufSlice {
    DmaBufId id;
    Range span;
  };
  absl::StatusOr<DmaBufSlice> ResolveDmaBuf(const DmaBufMemory& m) const;
  // A cached dma-buf mapping covering `slice` with `want`, referenced for
  // the caller, or null.
  Region* FindDmaBuf(const DmaBufSlice& slice, AccessFlags want) ABSL_LOCKS_EXCLUDED(mu_);
  // Retires `r` (which the caller holds a reference on) if it is still
  // cached: a registration set undoing what it made.
  void Discard(Region* r) ABSL_LOCKS_EXCLUDED(mu_);
  // Before Linux 5.18 a dma-buf's inode may be reused: register per request.
  void SetDmaBufIdsUniqueForTesting(bool unique) { dmabuf_ids_unique_ = unique; }
  absl::Status SetLimits(CacheOptions options);
  CacheOptions limits() const;
  void Flush();
  CacheStats stats() const;
  // The paging in effect (kAutomatic until the first registration decides).
  Paging paging() const { return paging_.load(std::memory_order_relaxed); }
  Domain& domain() const { return *domain_; }
  MemoryMonitor& monitor() const { return *monitor_; }

  // Hit path: true if the monitor has events this cache has not applied
  // yet, or the process forked since the cache was made.
  bool EventsPending() const {
    return ForkGeneration() != fork_generation_ ||
           log_.Pending(log_cursor_.load(std::memory_order_acquire));
  }
  // The hit path, inlined into the front door: a region covering `span`
  // with `want`, referenced for this thread, or null: then AcquireHost,
  // which also takes the slow cases (pending events, no table yet).
  Region* TryHit(Range span, AccessFlags want) {
    ThreadRefs* t = thread_refs_.Mine();
    if (t == nullptr || EventsPending()) [[unlikely]]
      return nullptr;
    Region* r = HitWith(t, span, want);
    if (pfn_check_every_ != 0) [[unlikely]]
      return SampledPfnCheck(r);
    return r;
  }
  // Applies pending monitor events; FailedPrecondition in a forked child.
  absl::Status CatchUp() ABSL_LOCKS_EXCLUDED(mu_);
  size_t page_size() const { return page_size_; }

  // A handle let go of `r`.
  void Release(Region* r) {
    ThreadRefs* t = thread_refs_.Mine();
    if (t != nullptr) [[likely]] {
      t->busy.store(ThreadRefs::BusyMark(), std::memory_order_relaxed);
      ThreadRefs::Add(t->Counter(r->index), -1);
      LightFence();
      if (r->state.load(std::memory_order_relaxed) & kDead) [[unlikely]] {
        ReleaseDead(r, t);
        return;
      }
      // Nothing of the cache is touched after this.
      t->busy.store(0, std::memory_order_release);
    } else if (!r->TryUnrefShared()) {
      ReleaseDeadShared(r);
    }
  }
  // The owning RegistrationCache is gone: retire everything, drop its share.
  void Close();
  // RegistrationCache::CheckPfns (cache_pfn.cc).
  absl::StatusOr<PfnReport> CheckPfns() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  using RegionList = absl::InlinedVector<Region*, 8>;
  // A miss's decisions, made under mu_ (cache_miss.cc).
  struct MissPlan {
    Region* hit = nullptr;  // found registered under the lock: nothing to do
    Range request;          // what was asked for
    AccessFlags want;
    Range span;              // what to register: the request, or its union
    AccessFlags access;      // with the overlapped mappings
    bool merged = false;     // span/access took in cached mappings
    uint64_t reserved = 0;   // bytes reserved against the limits
    uint64_t epoch = 0;      // recent_ invalidations seen before registering
    bool cacheable = true;   // the monitor watches the span
    bool on_demand = false;  // registered with on-demand paging
    bool fell_back = false;  // this miss switched kAutomatic to pinned
  };
  class MissScope;

  ~CacheCore();
  Region* FastHit(Range span, AccessFlags want);
  // No lock, no locked instruction. A candidate is referenced first and
  // validated after, because its fields are stable only while we hold a
  // reference (see the handshake above). The index gives the Region and
  // this thread's counter for it at once.
  Region* HitWith(ThreadRefs* t, Range span, AccessFlags want) {
    return RegionAt(index_.Probe(span.begin(), [&](uint32_t i) {
      Region* r = region_base_ + i;
      ThreadRefs::Add(t->Counter(i), 1);
      LightFence();
      const uint64_t s = r->state.load(std::memory_order_acquire);
      if (!(s & kFlags) && r->Covers(span, want)) [[likely]] {
        r->Touch();
        t->CountHit();
        return true;
      }
      // A full release: if the region died meanwhile, ours may be its last
      // reference.
      Release(r);
      return false;
    }));
  }
  // The Region a probe returned, or null for RangeIndex::kNoIndex.
  Region* RegionAt(uint32_t i) const {
    return i == RangeIndex::kNoIndex ? nullptr : region_base_ + i;
  }
  // --- the miss path (cache_miss.cc) ---
  absl::StatusOr<Region*> Miss(Range request, AccessFlags want, bool* created);
  // Finds the request registered after all, or decides what to register
  // and reserves room for it.
  absl::StatusOr<MissPlan> PlanMiss(Range request, AccessFlags want, RegionList* to_free)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Watches and registers the plan's span, narrowing it to the request where
  // the union cannot be watched or registered. No lock needed.
  absl::StatusOr<DeviceMapping> RegisterPlanned(MissPlan& plan);
  // --- paging (cache_paging.cc) ---
  // Registers the plan's span on demand (no Watch: the device follows the
  // page tables). Sets `*refused` when the domain refused on-demand paging
  // in kAutomatic mode: the cache is pinned from then on and the caller
  // registers pinned.
  absl::StatusOr<DeviceMapping> RegisterOnDemand(MissPlan& plan, bool* refused);
  // Makes the new mapping a Region: indexed if cacheable (retiring what it
  // supersedes), else born dead with the caller's reference. Null when the
  // pool is full (the caller deregisters `m`).
  Region* AdmitLocked(const MissPlan& plan, const DeviceMapping& m, RegionList* to_free)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status PoolFullError() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Removes `victims` from the index and the CLOCK ring and marks them dead;
  // those with no handle out are appended to `to_free` (and leave the
  // accounting), the others are freed by their last handle.
  void RetireAll(const RegionList& victims, RegionList* to_free) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Claims `r` for freeing (true; the caller frees it) if it is dead, not
  // yet claimed, and has no reference left.
  bool SettleDead(Region* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Evicts those of `candidates` (marked dead, unindexed not yet) that have no
  // reference; revives the others.
  void EvictOrRevive(const RegionList& candidates, RegionList* to_free)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Makes the per-thread counts of regions marked dead before it exact.
  void FenceForSum() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int64_t RefSum(const Region* r) const {
    return Region::SharedRefs(r->state.load(std::memory_order_acquire)) +
           thread_refs_.Sum(r->index);
  }
  // Takes a reference for this thread under mu_ (no handshake needed: only
  // mu_'s holders mark regions dead). False if `r` is dead or free.
  bool TryRefLocked(Region* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AddRefLocked(Region* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Region* FastHitShared(Range span, AccessFlags want);
  // --- dma-bufs (cache_dmabuf.cc) ---
  // Registers the span as the policy says: the domain's import, then the
  // CPU alias. The error names every attempt.
  absl::StatusOr<DeviceMapping> RegisterDmaBufSpan(const DmaBufMemory& m, const DmaBufSlice& s,
                                                   AccessFlags access, bool* via_alias);
  absl::StatusOr<Region*> AcquireDmaBufUncached(const DmaBufMemory& m, const DmaBufSlice& s,
                                                AccessFlags want);
  Region* FindDmaBufLocked(const DmaBufSlice& slice, AccessFlags want)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DmaBufIndexInsert(Region* r, DmaBufId id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // True if an invalidation of `id` overlapping `span` came after `epoch`.
  bool DmaBufInvalidatedSince(uint64_t epoch, DmaBufId id, Range span) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes `r` from the index it is in and from the CLOCK ring.
  void Unindex(Region* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Every indexed region, host and dma-buf.
  template <typename F>
  void ForEachIndexed(F f) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    index_.ForEach(f);
    for (const auto& [id, regions] : dmabuf_index_) {
      for (Region* r : regions) f(r);
    }
  }
  size_t IndexedCount() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return index_.size() + dmabuf_indexed_;
  }
  // --- the PFN check (cache_pfn.cc) ---
  // Opens the pagemap when the check is on, or says why it cannot run.
  void InitPfnCheck();
  // A hit's region `r` (may be null), or null when this hit was sampled and
  // found its pages replaced: `r` is then retired and released.
  Region* SampledPfnCheck(Region* r) ABSL_LOCKS_EXCLUDED(mu_);
  // The frames under a miss's span, read right after registering it; empty
  // when not recording (no check, PFNs hidden, not a pinned registration).
  std::vector<uint64_t> ReadPfnsAfterRegistering(const MissPlan& plan) const;
  // Keeps `frames` for the newly admitted `r` (if cached and recorded).
  void RecordPfnsLocked(const Region* r, std::vector<uint64_t> frames)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The first page of `r` whose frame differs from the record, or -1.
  ptrdiff_t FirstStalePage(const Region* r, const std::vector<uint64_t>& now) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool PfnsReadable() const { return pagemap_.has_value() && pagemap_->pfns_visible(); }
  // --- eviction (cache_eviction.cc) ---
  // Evicts until `regions` more mappings of `bytes` fit the limits.
  absl::Status MakeRoom(size_t regions, size_t bytes, RegionList* to_free)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool OverLimits(size_t regions, size_t bytes) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Retires what overlaps `span` and logs it for in-flight misses.
  // (`record`: false when the caller records a span covering several.)
  void InvalidateLocked(Range span, RegionList* to_free, bool record = true)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Applies the monitor's log past log_cursor_ (all of it: a caller that
  // must not miss an event calls log_.WaitQuiet() first).
  void ApplyEventsLocked(RegionList* to_free) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Forked() const { return ForkGeneration() != fork_generation_; }
  absl::Status ForkedError() const;
  // A region holding one reference for the calling thread, with `flags`;
  // null when the pool is out of Regions.
  Region* NewRegion(Range span, AccessFlags access, const DeviceMapping& m, uint64_t flags)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RingInsert(Region* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RingRemove(Region* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Forget(Region* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);  // leave accounting

  // Deregisters and recycles regions that are dead with no handle (call
  // without mu_; may delete `this` when the last share goes).
  void FreeRegions(RegionList& regions) ABSL_LOCKS_EXCLUDED(mu_);  // and clears it
  void FreeRegions(absl::Span<Region* const> regions) ABSL_LOCKS_EXCLUDED(mu_);
  // Deregisters `m` (of `span`, host or dma-buf), logging a failure: the
  // mapping is gone from our books either way.
  void DeregisterOrWarn(const DeviceMapping& m, Range span, bool dmabuf) ABSL_LOCKS_EXCLUDED(mu_);
  // Release found `r` dead after its decrement (t->busy set; cleared here).
  void ReleaseDead(Region* r, ThreadRefs* t) ABSL_LOCKS_EXCLUDED(mu_);
  // Release of a shared reference on a dead region.
  void ReleaseDeadShared(Region* r) ABSL_LOCKS_EXCLUDED(mu_);
  void DropRef();
  uint64_t HandleOf(const Region* r) const;  // of a claimed region, without mu_

  const std::shared_ptr<Domain> domain_;
  const std::shared_ptr<MemoryMonitor> monitor_;
  InvalidationLog& log_;
  const size_t page_size_;
  const uint32_t fork_generation_;
  const pid_t creator_pid_;
  const DmaBufPolicy dmabuf_policy_;
  const Paging paging_option_;            // as configured
  std::atomic<Paging> paging_;            // in effect; kAutomatic resolves on a miss
  const DmaBufInspector inspect_dmabuf_;  // empty: InspectDmaBuf
  bool dmabuf_ids_unique_;                // set before the cache is shared
  const uint32_t pfn_check_every_;        // the PFN check's sampling, fixed at Create; 0: off

  // Lock order: mu_, then the process-wide thread-slot lock (base/thread_slot.cc,
  // which a first ThreadSlot() call takes), the userfaultfd monitor's
  // watched-set mutex, the monitor log's leaf mutex. mu_ is never held across
  // a Domain call (but for a miss's last attempts, see Miss); the hit path
  // never takes it (but for a thread's first hit, which creates its reference
  // table). Producers of monitor events never take it.
  mutable Mutex mu_;
  CacheOptions options_ ABSL_GUARDED_BY(mu_);
  RangeIndex index_;  // writers hold mu_; Probe runs without it
  RegionPool pool_ ABSL_GUARDED_BY(mu_);
  Region* const region_base_;                          // pool_.base(), for hits (no lock)
  Region* clock_hand_ ABSL_GUARDED_BY(mu_) = nullptr;  // ring of indexed regions
  size_t live_regions_ ABSL_GUARDED_BY(mu_) = 0;       // mapped on the device
  size_t live_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  size_t dead_referenced_ ABSL_GUARDED_BY(mu_) = 0;   // retired, handles out
  size_t reserved_regions_ ABSL_GUARDED_BY(mu_) = 0;  // misses in flight
  size_t reserved_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // Invalidations for misses in flight to check against.
  RecentInvalidations recent_ ABSL_GUARDED_BY(mu_);
  // Cached dma-buf mappings by buffer (a handful each: slices merge).
  absl::flat_hash_map<DmaBufId, RegionList> dmabuf_index_ ABSL_GUARDED_BY(mu_);
  size_t dmabuf_indexed_ ABSL_GUARDED_BY(mu_) = 0;
  // dma-buf invalidations while dma-buf misses are in flight, to check
  // those against (dropped when none is).
  struct DmaBufInvalidation {
    uint64_t epoch;
    DmaBufId id;
    std::optional<Range> span;  // empty: the whole buffer
  };
  std::vector<DmaBufInvalidation> dmabuf_recent_ ABSL_GUARDED_BY(mu_);
  uint64_t dmabuf_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  size_t dmabuf_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  // Monitor events applied so far; written under mu_, read by hits.
  std::atomic<uint64_t> log_cursor_{0};

  CacheStats counters_ ABSL_GUARDED_BY(mu_);  // all but hits and the gauges
  StripedCounter hits_;                       // hits not counted in a thread's table
  // Created under mu_ (see the lifetime note above); read without it.
  ThreadRefTables thread_refs_;
  std::atomic<int64_t> refs_{1};  // the owner + allocated regions

  // The PFN check (cache_pfn.cc).
  std::optional<PagemapReader> pagemap_;  // opened when the check is on
  absl::Status pfns_unavailable_;         // why CheckPfns cannot run
  // Frames under each recorded pinned host region, by Region::index; erased
  // when the region leaves the accounting (Forget).
  absl::flat_hash_map<uint32_t, std::vector<uint64_t>> pfns_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> pfn_hits_{0};  // hits seen, for sampling
};

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_CORE_CACHE_CORE_H_
