// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// CacheCore: the registration cache behind RegistrationCache's front door
// (which validates and rounds requests before they get here).
//
// One cache for two kinds of key: a host range, or a dma-buf's identity and
// a span of its pages. Both live in the same regions, the same lock-free
// index (a dma-buf is a space of its own there), the same limits and CLOCK
// ring, and go through the same miss pipeline (cache_miss.cc): plan under
// mu_, register (with mu_ released unless registrations are cheap, see
// Miss), admit under mu_, redo when an invalidation of the span came in
// between, with one retry limit and one lock-holding fallback for both.
// What differs is confined to registering (the monitor's Watch and paging
// for host memory; the import-then-alias policy for dma-bufs,
// cache_dmabuf.cc).
//
// Lifetime: a CacheCore is owned jointly by its RegistrationCache and by
// every Region it has allocated and not yet freed (`refs_`, which also holds
// a few shares taken ahead for the next misses), so a handle that outlives
// the cache can still release its mapping. The last owner deletes it.
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

#include <algorithm>
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

// A dma-buf request: the buffer, its space in the index, and the whole
// pages of the slice (clipped to the buffer), as offsets.
struct DmaBufKey {
  DmaBufId id;
  uint64_t space = 0;  // RangeIndex::SpaceOf(id)
  Range span;
};
// What a dma-buf miss registers from: an fd of the buffer and its CPU alias.
struct DmaBufSource {
  int fd = -1;
  const void* alias = nullptr;
};

class CacheCore {
 public:
  // `thread_refs`: use per-thread reference tables when the heavy fence is
  // available (false: the shared count only; tests run both).
  CacheCore(std::shared_ptr<Domain> domain, std::shared_ptr<MemoryMonitor> monitor,
            CacheOptions options, bool thread_refs = true);

  // `span` page-aligned, non-empty; `want` normalised and valid. A miss
  // registers it rounded out to the huge pages of hugetlb memory.
  // `*created` (if given): true when this call registered the mapping.
  absl::StatusOr<Region*> AcquireHost(Range span, AccessFlags want, bool* created = nullptr);
  // `key` from ResolveDmaBuf or an ImportedDmaBuf; `want` normalised and valid.
  absl::StatusOr<Region*> AcquireDmaBuf(const DmaBufKey& key, const DmaBufSource& source,
                                        AccessFlags want, bool* created = nullptr);
  // The buffer `m.fd` names (fstat, or the cache's inspector) and the whole
  // pages of `m`'s slice; InvalidArgument past the buffer's end.
  absl::StatusOr<DmaBufKey> ResolveDmaBuf(const DmaBufMemory& m) const;
  // The fstat of it: what the cache's inspector says of `fd`.
  absl::StatusOr<DmaBufInfo> InspectFd(int fd) const {
    return inspect_dmabuf_ ? inspect_dmabuf_(fd) : InspectDmaBuf(fd);
  }
  // The key of [offset, offset + length) of a buffer of `size` bytes.
  absl::StatusOr<DmaBufKey> DmaBufKeyOf(const DmaBufId& id, uint64_t size, uint64_t offset,
                                        uint64_t length, int fd) const;
  // Whether [offset, offset + length) lies inside a buffer of `size` bytes;
  // else SlicePastEnd says so (the front doors test inline, with no status).
  static bool SliceInside(uint64_t size, uint64_t offset, uint64_t length) {
    return offset <= size && length <= size - offset;
  }
  static absl::Status SlicePastEnd(const DmaBufId& id, uint64_t size, uint64_t offset,
                                   uint64_t length, int fd);
  // The key of a slice for which SliceInside holds: the hit path's version.
  DmaBufKey SliceKey(const DmaBufId& id, uint64_t size, uint64_t offset, uint64_t length) const {
    // Whole pages, clipped to the buffer (whose end need not be one).
    const uint64_t page = page_size_;
    const uint64_t begin = offset & ~(page - 1);
    const uint64_t end = offset + length;  // <= size: no wrap
    const uint64_t rounded =
        end % page == 0 || end > UINT64_MAX - page ? end : end + (page - end % page);
    return DmaBufKey{.id = id,
                     .space = RangeIndex::SpaceOf(id),
                     .span = *Range::FromBounds(begin, std::min(rounded, size))};
  }
  // `span` page-aligned (may be empty).
  void Invalidate(Range span);
  // Retires the dma-buf's mappings overlapping `span` (all if empty).
  void InvalidateDmaBuf(DmaBufId id, std::optional<Range> span);
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
  // The index's tables (bytes), for the memory figures.
  size_t IndexBytes() const ABSL_LOCKS_EXCLUDED(mu_);

  // Hit path: true if the monitor has events this cache has not applied
  // yet, or the process forked since the cache was made.
  // Also true once the domain's device is gone (Domain::lost_flag()).
  bool EventsPending() const {
    return ForkGeneration() != fork_generation_ ||
           log_.Pending(log_cursor_.load(std::memory_order_acquire)) ||
           lost_->load(std::memory_order_relaxed);
  }
  // The hit path, inlined into the front door: a region covering `span`
  // with `want`, referenced for this thread, or null: then AcquireHost,
  // which also takes the slow cases (pending events, no table yet).
  [[gnu::always_inline]] Region* TryHit(Range span, AccessFlags want) {
    ThreadRefs* t = thread_refs_.Mine();
    if (t == nullptr || EventsPending()) [[unlikely]]
      return nullptr;
    Region* r = HitWith(t, RangeIndex::kHostSpace, span, want, nullptr);
    if (pfn_check_every_ != 0) [[unlikely]]
      return SampledPfnCheck(r);
    return r;
  }
  // The same for a dma-buf slice: the same index, in the buffer's space.
  // Monitor events concern host memory only; a forked child takes the slow
  // path, which refuses.
  [[gnu::always_inline]] Region* TryHitDmaBuf(const DmaBufKey& key, AccessFlags want) {
    ThreadRefs* t = thread_refs_.Mine();
    if (t == nullptr || Forked() || !dmabuf_ids_unique_ || lost_->load(std::memory_order_relaxed))
        [[unlikely]]
      return nullptr;
    return HitWith(t, key.space, key.span, want, &key.id);
  }
  // Applies pending monitor events; FailedPrecondition in a forked child;
  // once the device is gone, lets go of every idle mapping and returns the
  // domain's LostStatus.
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
  // The cache that owns `r`.
  static CacheCore* Of(const Region* r) { return static_cast<CacheCore*>(RegionPool::OwnerOf(r)); }
  // The owning RegistrationCache is gone: retire everything, drop its share.
  void Close();
  // RegistrationCache::CheckPfns (cache_pfn.cc).
  absl::StatusOr<PfnReport> CheckPfns() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  using RegionList = absl::InlinedVector<Region*, 8>;
  // What a miss asks for: a span of a space, and for a dma-buf what it
  // registers from.
  struct MissKey {
    uint64_t space = RangeIndex::kHostSpace;
    Range request;
    const DmaBufId* id = nullptr;  // dma-buf misses
    const DmaBufSource* source = nullptr;
  };
  // A miss's decisions, made under mu_ (cache_miss.cc).
  struct MissPlan {
    Region* hit = nullptr;  // found registered under the lock: nothing to do
    // What was asked for: Miss's argument, which outlives the plan (held by
    // address: a copy costs a store-forwarding stall on every miss).
    const MissKey* key = nullptr;
    AccessFlags want;
    Range span;              // what to register: the request, or its union
    AccessFlags access;      // with the overlapped mappings
    bool merged = false;     // span/access took in cached mappings
    uint64_t reserved = 0;   // bytes reserved against the limits
    uint64_t epoch = 0;      // recent_ invalidations seen before registering
    bool cacheable = true;   // the monitor watches the span (dma-bufs: ids unique)
    bool on_demand = false;  // registered with on-demand paging
    bool fell_back = false;  // this miss switched kAutomatic to pinned
    bool via_alias = false;  // a dma-buf registered through its CPU alias
    bool dmabuf() const { return key->id != nullptr; }
  };
  class MissScope;

  ~CacheCore();
  Region* FastHit(Range span, AccessFlags want);
  // Whether `r` (referenced, or under mu_) is of the space a request names:
  // host memory (`id` null) or that buffer. Lock-free on a referenced
  // region: its identity chunk was written before the region was indexed
  // and is not reused while a reference is held.
  bool OfSpace(const Region* r, const DmaBufId* id) const ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return id == nullptr ? !r->dmabuf : r->dmabuf && pool_.DmaBufIdOf(r) == *id;
  }
  // No lock, no locked instruction. A candidate is referenced first and
  // validated after, because its fields are stable only while we hold a
  // reference (see the handshake above). The index gives the Region and
  // this thread's counter for it at once.
  [[gnu::always_inline]] Region* HitWith(ThreadRefs* t, uint64_t space, Range span,
                                         AccessFlags want, const DmaBufId* id) {
    // The candidate test inlined too (link-time optimisation would
    // otherwise outline it for the dma-buf hit).
    return RegionAt(index_.Probe(
        space, span.begin(), [&](uint32_t i) __attribute__((always_inline)) {
          Region* r = region_base_ + i;
          ThreadRefs::Add(t->Counter(i), 1);
          LightFence();
          const uint64_t s = r->state.load(std::memory_order_acquire);
          if (!(s & kFlags) && r->Covers(span, want) && OfSpace(r, id)) [[likely]] {
            r->Touch();
            t->CountHit(id != nullptr);
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
  absl::StatusOr<Region*> Miss(const MissKey& key, AccessFlags want, bool* created);
  // Finds the request registered after all, or decides what to register
  // and reserves room for it.
  absl::Status PlanMiss(const MissKey& key, AccessFlags want, RegionList* to_free, MissPlan* plan)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The cached mappings of the key's space that overlap `span`.
  template <typename F>
  void ForEachOverlappingLocked(const MissKey& key, const Range& span, F f) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Registers the plan's span (host: Watch, then as the paging says;
  // dma-buf: as the policy says), narrowing it to the request where the
  // union cannot be watched or registered. No lock needed.
  absl::StatusOr<DeviceMapping> RegisterPlanned(MissPlan& plan);
  absl::StatusOr<DeviceMapping> RegisterHostPlanned(MissPlan& plan);
  absl::StatusOr<DeviceMapping> RegisterPinnedPlanned(MissPlan& plan);
  // --- paging (cache_paging.cc) ---
  // Registers the plan's span on demand (no Watch: the device follows the
  // page tables). Sets `*refused` when the domain refused on-demand paging
  // in kAutomatic mode: the cache is pinned from then on and the caller
  // registers pinned.
  absl::StatusOr<DeviceMapping> RegisterOnDemand(MissPlan& plan, bool* refused);
  // --- dma-bufs (cache_dmabuf.cc) ---
  // Registers the plan's span as the policy says: the domain's import, then
  // the CPU alias. The error names every attempt.
  absl::StatusOr<DeviceMapping> RegisterDmaBufPlanned(MissPlan& plan);
  // Files a new dma-buf region under its buffer (index, per-buffer list).
  void IndexDmaBufLocked(Region* r, const DmaBufId& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Makes the new mapping a Region: indexed if cacheable (retiring what it
  // supersedes), else born dead with the caller's reference. Null when the
  // pool is full (the caller deregisters `m`).
  Region* AdmitLocked(const MissPlan& plan, const DeviceMapping& m, RegionList* to_free)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status PoolFullError() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Removes `victims` from the index and the CLOCK ring and marks them dead;
  // those with no handle out are appended to `to_free` (and leave the
  // accounting), the others are freed by their last handle. A victim
  // already retired (listed twice) is skipped.
  void RetireAll(absl::Span<Region* const> victims, RegionList* to_free)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The same for the victims already at (*to_free)[first..]: those not
  // freed now leave the list.
  void RetireFrom(size_t first, RegionList* to_free) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
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
  Region* FastHitShared(uint64_t space, Range span, AccessFlags want, const DmaBufId* id);
  // Removes `r` from the index (and its buffer's list) and the CLOCK ring.
  void Unindex(Region* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Every indexed region, host and dma-buf (the CLOCK ring).
  template <typename F>
  void ForEachIndexed(F f) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (clock_hand_ == RegionPool::kNone) return;
    uint32_t i = clock_hand_;
    do {
      const uint32_t next = pool_.links(i).next;  // f may not unlink
      f(region_base_ + i);
      i = next;
    } while (i != clock_hand_);
  }
  size_t IndexedCount() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return index_.size(); }
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
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!OverLimits(regions, bytes) && (options_.max_bytes == 0 || bytes <= options_.max_bytes))
        [[likely]] {
      return absl::OkStatus();
    }
    return MakeRoomSlow(regions, bytes, to_free);
  }
  absl::Status MakeRoomSlow(size_t regions, size_t bytes, RegionList* to_free)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Evicts every indexed region no one references (the kernel refused a
  // registration for want of room: memlock, the device's MR table); returns
  // how many.
  size_t EvictIdleLocked(RegionList* to_free) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `refused` (ResourceExhausted from the domain) with what this cache holds.
  absl::Status ExhaustedWithHoldings(const absl::Status& refused, size_t evicted) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool OverLimits(size_t regions, size_t bytes) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (options_.max_regions != 0 &&
        live_regions_ + reserved_regions_ + regions > options_.max_regions) {
      return true;
    }
    return options_.max_bytes != 0 && live_bytes_ + reserved_bytes_ + bytes > options_.max_bytes;
  }
  // Retires what overlaps host `span` and logs it for in-flight misses.
  // (`record`: false when the caller records a span covering several.)
  void InvalidateLocked(const Range& span, RegionList* to_free, bool record = true)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Applies the monitor's log past log_cursor_ (all of it: a caller that
  // must not miss an event calls log_.WaitQuiet() first).
  void ApplyEventsLocked(RegionList* to_free) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (log_.Pending(log_cursor_.load(std::memory_order_relaxed))) [[unlikely]]
      ApplyEventsSlow(to_free);
  }
  void ApplyEventsSlow(RegionList* to_free) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Forked() const { return ForkGeneration() != fork_generation_; }
  absl::Status ForkedError() const;
  // A region holding one reference for the calling thread, with `flags`;
  // null when the pool is out of Regions.
  Region* NewRegion(const MissPlan& plan, const DeviceMapping& m, uint64_t flags)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RingInsert(Region* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RingRemove(Region* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Forget(Region* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);  // leave accounting

  // Deregisters and recycles regions that are dead with no handle (call
  // without mu_; may delete `this` when the last share goes).
  void FreeRegions(RegionList& regions) ABSL_LOCKS_EXCLUDED(mu_);  // and clears it
  void FreeRegions(absl::Span<Region* const> regions) ABSL_LOCKS_EXCLUDED(mu_);
  // With fast registrations: deregisters and recycles `regions` under mu_
  // (no second critical section), keeping their shares as credits; the
  // caller then calls DropRefs(n) for the n shares that exceed the credits.
  size_t FreeRegionsLocked(RegionList& regions) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The lifetime share of a region being made, taken from ref_credits_.
  void TakeRegionShare() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Keeps the shares of `n` regions freed under mu_ as credits; returns how
  // many exceed two batches' worth, for DropRefs once mu_ is released.
  size_t KeepRegionShares(size_t n) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropRefs(size_t n);
  // Deregisters `m` (of `span`, host or dma-buf), logging a failure: the
  // mapping is gone from our books either way.
  void DeregisterOrWarn(const DeviceMapping& m, Range span, bool dmabuf);
  // Release found `r` dead after its decrement (t->busy set; cleared here).
  void ReleaseDead(Region* r, ThreadRefs* t) ABSL_LOCKS_EXCLUDED(mu_);
  // Release of a shared reference on a dead region.
  void ReleaseDeadShared(Region* r) ABSL_LOCKS_EXCLUDED(mu_);
  void DropRef();

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
  // The domain's registrations are cheap (DomainCapabilities::
  // fast_registration): a miss is one critical section, registration
  // included, and regions are deregistered under mu_.
  const bool fast_registration_;
  // The domain's lost_flag(), or a flag never set: read on every request.
  const std::atomic<bool>* const lost_;
  const uint64_t max_mapping_bytes_;  // the domain's, read once

  // Lock order: mu_, then the process-wide thread-slot lock
  // (runtime/thread_slot.cc, which a first ThreadSlot() call takes), the
  // userfaultfd monitor's watched-set mutex, the monitor log's leaf mutex.
  // mu_ is never held across a Domain call, but for a miss's last attempts
  // and for domains whose registrations are fast (see Miss); the hit path
  // never takes it (but for a thread's first hit, which creates its
  // reference table). Producers of monitor events never take it.
  mutable Mutex mu_;
  CacheOptions options_ ABSL_GUARDED_BY(mu_);
  RegionPool pool_ ABSL_GUARDED_BY(mu_);
  Region* const region_base_;  // pool_.base(), for hits (no lock)
  RangeIndex index_;           // writers hold mu_; Probe runs without it
  uint32_t clock_hand_ ABSL_GUARDED_BY(mu_) = RegionPool::kNone;  // ring of indexed regions
  size_t live_regions_ ABSL_GUARDED_BY(mu_) = 0;                  // mapped on the device
  size_t live_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  size_t dead_referenced_ ABSL_GUARDED_BY(mu_) = 0;   // retired, handles out
  size_t reserved_regions_ ABSL_GUARDED_BY(mu_) = 0;  // misses in flight
  size_t reserved_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // Invalidations (host and dma-buf) for misses in flight to check against.
  RecentInvalidations recent_ ABSL_GUARDED_BY(mu_);
  // Each buffer's cached regions (a handful: slices merge), for merging,
  // whole-buffer invalidation and the dma-buf gauges; hits use the index.
  absl::flat_hash_map<DmaBufId, RegionList> dmabuf_regions_ ABSL_GUARDED_BY(mu_);
  // Monitor events applied so far; written under mu_, read by hits.
  std::atomic<uint64_t> log_cursor_{0};

  CacheStats counters_ ABSL_GUARDED_BY(mu_);  // all but hits and the gauges
  StripedCounter hits_;                       // hits not counted in a thread's table
  StripedCounter dmabuf_hits_;                // of those, dma-buf hits
  // Created under mu_ (see the lifetime note above); read without it.
  ThreadRefTables thread_refs_;
  std::atomic<int64_t> refs_{1};  // the owner + allocated regions + ref_credits_
  // Shares of refs_ taken ahead for regions not yet allocated: a miss takes
  // one, a region freed under mu_ gives one back, and refs_ itself changes
  // once per kRefBatch regions instead of twice per region (a locked
  // instruction each). Returned to refs_ by Close.
  static constexpr int64_t kRefBatch = 64;
  int64_t ref_credits_ ABSL_GUARDED_BY(mu_) = 0;

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
