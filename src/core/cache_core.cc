// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "core/cache_core.h"

#include <unistd.h>

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_format.h"

namespace dmareg::internal {

static_assert(RegionPool::kMaxRegions <= ThreadRefs::kMaxIndex,
              "every Region has a per-thread counter");

namespace {
// Misses register without the lock and check afterwards that no Invalidate
// overlapped them; after this many collisions the miss holds the lock across
// the registration, so it cannot starve an explicit Invalidate.
constexpr int kOptimisticAttempts = 3;
// Monitor events need no lock, so memory unmapped again and again while it
// is being registered could still collide; give up after this many tries.
constexpr int kMaxAttempts = 8;
// Monitor events applied in one batch beyond this many are recorded for
// in-flight misses as one span (see ApplyEventsLocked).
constexpr size_t kRecordEachEvents = 8;
}  // namespace

CacheCore::CacheCore(std::shared_ptr<Domain> domain, std::shared_ptr<MemoryMonitor> monitor,
                     CacheOptions options, bool thread_refs)
    : domain_(std::move(domain)),
      monitor_(std::move(monitor)),
      log_(LogOf(*monitor_)),
      page_size_(static_cast<size_t>(sysconf(_SC_PAGESIZE))),
      fork_generation_(WatchForks()),
      creator_pid_(getpid()),
      options_(options),
      region_base_(ABSL_TS_UNCHECKED_READ(pool_).base()),
      thread_refs_(thread_refs && HeavyFenceAvailable()) {
  // Events from before this cache existed concern no mapping of it.
  log_cursor_.store(log_.head(), std::memory_order_relaxed);
}

CacheCore::~CacheCore() = default;

Region* CacheCore::FastHit(uintptr_t a, uintptr_t b, AccessFlags want) {
  ThreadRefs* t = thread_refs_.Mine();
  if (t == nullptr) [[unlikely]] return FastHitShared(a, b, want);
  return HitWith(t, a, b, want);
}

// Threads without a table: references on the shared count.
Region* CacheCore::FastHitShared(uintptr_t a, uintptr_t b, AccessFlags want) {
  if (thread_refs_.enabled() && ThreadSlot() < kThreadSlots) {
    ThreadRefs* t;
    {
      MutexLock lock(&mu_);
      t = thread_refs_.CreateMine();
    }
    if (t != nullptr) return FastHit(a, b, want);
  }
  Region* hit = RegionAt(index_.Probe(a, [&](uint32_t i) {
    Region* r = region_base_ + i;
    if (!r->TryRefShared()) return false;
    if (r->Covers(a, b, want)) {
      r->Touch();
      return true;
    }
    Release(r);
    return false;
  }));
  if (hit != nullptr) hits_.Add();
  return hit;
}

absl::StatusOr<Region*> CacheCore::AcquireHost(uintptr_t a, uintptr_t b, AccessFlags want) {
  if (EventsPending()) [[unlikely]] {
    if (absl::Status s = CatchUp(); !s.ok()) return s;
  }
  if (Region* r = FastHit(a, b, want)) return r;  // counted as a hit there
  return Miss(a, b, want);
}

// Locks and unlocks by hand: whether the lock is held across the device call
// depends on the attempt, which the thread-safety analysis cannot follow.
absl::StatusOr<Region*> CacheCore::Miss(uintptr_t a, uintptr_t b, AccessFlags want)
    ABSL_NO_THREAD_SAFETY_ANALYSIS {
  const uint64_t max_mr = domain_->capabilities().max_mr_size;
  for (int attempt = 0;; ++attempt) {
    const bool locked_registration = attempt >= kOptimisticAttempts;
    RegionList to_free;
    uintptr_t start = a, end = b;
    AccessFlags access = want;
    uint64_t epoch;
    log_.WaitQuiet();
    mu_.Lock();
    ApplyEventsLocked(&to_free);
    // Someone may have registered it since the lock-free probe.
    if (Region* r = index_.FindCovering(a, b, [&](Region* c) {
          mu_.AssertHeld();
          return AccessSatisfies(c->access, want) && TryRefLocked(c);
        })) {
      mu_.Unlock();
      FreeRegions(to_free);
      hits_.Add();
      return r;
    }
    // Merge with every mapping the request overlaps (span and rights), as a
    // request for more rights than a cached span has must; the merged ones
    // are retired once the new mapping is in. Fewer, larger mappings also
    // keep the index small. Too large a union: register just the request.
    bool merged = false;
    index_.ForEachOverlapping(a, b, [&](Region* c) {
      start = std::min(start, c->addr);
      end = std::max(end, c->end());
      access = AccessUnion(access, c->access);
      merged = true;
    });
    if (merged && end - start > max_mr) {
      start = a;
      end = b;
      access = want;
      merged = false;
    }
    size_t length = end - start;
    if (length > max_mr) {
      ++counters_.registration_failures;
      mu_.Unlock();
      FreeRegions(to_free);
      return absl::InvalidArgumentError(absl::StrFormat(
          "span of %u bytes exceeds the largest mapping %s allows (%u bytes)", length,
          domain_->name(), max_mr));
    }
    if (absl::Status room = MakeRoom(1, length, &to_free); !room.ok()) {
      ++counters_.registration_failures;
      mu_.Unlock();
      FreeRegions(to_free);
      return room;
    }
    const size_t reserved = length;
    ++reserved_regions_;
    reserved_bytes_ += reserved;
    epoch = inv_epoch_;
    if (!locked_registration) mu_.Unlock();
    // Evicted mappings go before the new one is made, to stay inside limits.
    if (!locked_registration) FreeRegions(to_free);

    // Watch before registering: an unmap from here on is in the log by the
    // time we look again, so the check below cannot miss it.
    bool cacheable = monitor_->Watch(reinterpret_cast<const void*>(start), length).ok();
    // Falls back from the union to the request alone (watched anew).
    auto narrow_to_request = [&] {
      start = a;
      end = b;
      access = want;
      merged = false;
      length = end - start;
      cacheable = monitor_->Watch(reinterpret_cast<const void*>(start), length).ok();
    };
    // Something in the union cannot be watched: the request may be.
    if (!cacheable && merged) narrow_to_request();

    absl::StatusOr<DeviceMapping> m =
        domain_->RegisterHost(reinterpret_cast<const void*>(start), length, access);
    if (!m.ok() && merged) {
      // A merged neighbour may cover memory unmapped behind our back (an
      // unwatched free, say): the request alone may still register.
      narrow_to_request();
      m = domain_->RegisterHost(reinterpret_cast<const void*>(start), length, access);
    }

    log_.WaitQuiet();
    if (!locked_registration) mu_.Lock();
    ApplyEventsLocked(&to_free);
    --reserved_regions_;
    reserved_bytes_ -= reserved;
    if (!m.ok()) {
      ++counters_.registration_failures;
      mu_.Unlock();
      FreeRegions(to_free);
      return m.status();
    }
    if (InvalidatedSince(epoch, start, end)) {
      // The pages may have changed under the registration: redo it.
      ++counters_.retried_registrations;
      mu_.Unlock();
      FreeRegions(to_free);
      if (absl::Status s = domain_->Deregister(*m); !s.ok()) {
        // The mapping is gone from our books either way; nothing to retry.
      }
      if (attempt + 1 >= kMaxAttempts) {
        return absl::AbortedError(absl::StrFormat(
            "[%#x, %#x) was unmapped or replaced during each of %d registrations on %s",
            start, end, kMaxAttempts, domain_->name()));
      }
      continue;
    }
    if (!cacheable) {
      // Unmaps there would go unseen: hand out a mapping that no later
      // request can hit, deregistered with its handle.
      Region* r = NewRegion(start, length, access, *m, kDead);
      if (r == nullptr) return PoolFull(*m, to_free);
      ++dead_referenced_;
      ++counters_.uncached_registrations;
      ++counters_.misses;
      mu_.Unlock();
      FreeRegions(to_free);
      return r;
    }
    // Not marked accessed: CLOCK then ranks it by its hits, like LRU would.
    Region* r = NewRegion(start, length, access, *m, 0);
    if (r == nullptr) return PoolFull(*m, to_free);
    index_.Insert(r);
    RingInsert(r);
    ++counters_.misses;
    if (merged) {
      // Retire what the new mapping supersedes (what it merged, unless an
      // Invalidate already did, and anything else it now covers).
      RegionList superseded;
      index_.ForEachOverlapping(start, end, [&](Region* c) {
        if (c != r && r->Covers(c->addr, c->end(), c->access)) {
          superseded.push_back(c);
        }
      });
      RetireAll(superseded, &to_free);
    }
    mu_.Unlock();
    FreeRegions(to_free);
    return r;
  }
}

absl::StatusOr<Region*> CacheCore::AcquireDmaBuf(const DmaBufMemory& mem, AccessFlags want) {
  if (Forked()) return ForkedError();
  RegionList to_free;
  mu_.Lock();
  absl::Status room = MakeRoom(1, mem.length, &to_free);
  if (room.ok()) {
    ++reserved_regions_;
    reserved_bytes_ += mem.length;
  } else {
    ++counters_.registration_failures;
  }
  mu_.Unlock();
  FreeRegions(to_free);
  if (!room.ok()) return room;

  absl::StatusOr<DeviceMapping> m = domain_->RegisterDmaBuf(mem, want);
  mu_.Lock();
  --reserved_regions_;
  reserved_bytes_ -= mem.length;
  if (!m.ok()) {
    ++counters_.registration_failures;
    mu_.Unlock();
    return m.status();
  }
  // Never indexed: born dead with the caller's reference, freed on release.
  Region* r = NewRegion(mem.offset, mem.length, want, *m, kDead);
  if (r == nullptr) {
    RegionList none;
    return PoolFull(*m, none);
  }
  r->dmabuf = true;
  ++dead_referenced_;
  ++counters_.dmabuf_registrations;
  mu_.Unlock();
  return r;
}

absl::StatusOr<Region*> CacheCore::PoolFull(const DeviceMapping& m, RegionList& to_free) {
  ++counters_.registration_failures;
  const size_t max_regions = pool_.max_regions();
  mu_.Unlock();
  FreeRegions(to_free);
  (void)domain_->Deregister(m);
  return absl::ResourceExhaustedError(absl::StrFormat(
      "registration cache on %s holds as many mappings as it has room for (%u)", domain_->name(),
      max_regions));
}

Region* CacheCore::NewRegion(uintptr_t addr, size_t length, AccessFlags access,
                             const DeviceMapping& m, uint64_t flags) {
  Region* r = pool_.Allocate();
  if (r == nullptr) return nullptr;
  r->addr = addr;
  r->length = length;
  r->iova = m.iova;
  r->lkey = m.lkey;
  r->rkey = m.rkey;
  r->access = access;
  r->dmabuf = false;
  r->cache = this;
  pool_.links(r).handle = m.handle;
  refs_.fetch_add(1, std::memory_order_relaxed);
  ++live_regions_;
  live_bytes_ += length;
  // Publishes the fields above to any thread that reads this state (acquire).
  r->SetFlags(flags, std::memory_order_release);
  AddRefLocked(r);
  return r;
}

bool CacheCore::TryRefLocked(Region* r) {
  if (r->state.load(std::memory_order_relaxed) & kFlags) return false;
  AddRefLocked(r);
  return true;
}

void CacheCore::AddRefLocked(Region* r) {
  ThreadRefs* t = thread_refs_.CreateMine();
  if (t != nullptr) {
    ThreadRefs::Add(t->Counter(r->index), 1);
  } else {
    r->state.fetch_add(kOneRef, std::memory_order_relaxed);
  }
}

void CacheCore::FenceForSum() const {
  if (thread_refs_.OthersMayHold()) HeavyFence();
}

void CacheCore::Invalidate(uintptr_t a, uintptr_t b) {
  RegionList to_free;
  {
    MutexLock lock(&mu_);
    ++counters_.invalidations;
    InvalidateLocked(a, b, &to_free);
  }
  FreeRegions(to_free);
}

void CacheCore::InvalidateLocked(uintptr_t a, uintptr_t b, RegionList* to_free, bool record) {
  RegionList hit;
  index_.ForEachOverlapping(a, b, [&](Region* r) { hit.push_back(r); });
  RetireAll(hit, to_free);
  counters_.invalidated_regions += hit.size();
  if (record) RecordInvalidation(a, b);
}

void CacheCore::RecordInvalidation(uintptr_t a, uintptr_t b) {
  ++inv_epoch_;
  inv_log_[inv_epoch_ % inv_log_.size()] = {inv_epoch_, a, b};
}

void CacheCore::ApplyEventsLocked(RegionList* to_free) {
  const uint64_t cursor = log_cursor_.load(std::memory_order_relaxed);
  if (!log_.Pending(cursor)) return;
  std::vector<InvalidationLog::Range> ranges;
  bool overrun = false;
  const uint64_t next = log_.ReadSince(cursor, &ranges, &overrun);
  if (overrun) {
    // Events were lost to us: anything may have been unmapped.
    ++counters_.monitor_overruns;
    InvalidateLocked(0, std::numeric_limits<uintptr_t>::max(), to_free);
  }
  // A storm of events is recorded for in-flight misses as one span covering
  // them all, so it cannot push older records out of the short log (a miss
  // that finds its epoch gone from the log must assume the worst and retry).
  const bool record_each = ranges.size() <= kRecordEachEvents;
  uintptr_t lo = std::numeric_limits<uintptr_t>::max(), hi = 0;
  for (const InvalidationLog::Range& r : ranges) {
    // The log holds byte ranges, never empty (Notify rejects those).
    const auto [a, b] = PagesCovering(r.a, r.b - 1, page_size_);
    InvalidateLocked(a, b, to_free, record_each);
    lo = std::min(lo, a);
    hi = std::max(hi, b);
  }
  if (!record_each) RecordInvalidation(lo, hi);
  counters_.monitor_events += next - cursor;
  // Publishes the retirements above to hits that read the cursor.
  log_cursor_.store(next, std::memory_order_release);
}

absl::Status CacheCore::CatchUp() {
  if (Forked()) return ForkedError();
  log_.WaitQuiet();
  RegionList to_free;
  {
    MutexLock lock(&mu_);
    ApplyEventsLocked(&to_free);
  }
  FreeRegions(to_free);
  return absl::OkStatus();
}

absl::Status CacheCore::ForkedError() const {
  return absl::FailedPreconditionError(absl::StrFormat(
      "registration cache on %s was made in process %d; this forked child (%d) must open "
      "its own domain and cache",
      domain_->name(), creator_pid_, getpid()));
}

bool CacheCore::InvalidatedSince(uint64_t epoch, uintptr_t a, uintptr_t b) const {
  if (inv_epoch_ == epoch) return false;
  if (inv_epoch_ - epoch >= inv_log_.size()) return true;  // log overrun: assume so
  for (uint64_t e = epoch + 1; e <= inv_epoch_; ++e) {
    const InvalidationRecord& rec = inv_log_[e % inv_log_.size()];
    if (rec.a < b && a < rec.b) return true;
  }
  return false;
}

void CacheCore::RetireAll(const RegionList& victims, RegionList* to_free) {
  if (victims.empty()) return;
  for (Region* r : victims) {
    if (r->indexed) {
      index_.Remove(r);
      RingRemove(r);
    }
    r->SetFlags(kDead, std::memory_order_seq_cst);
  }
  FenceForSum();
  for (Region* r : victims) {
    if (RefSum(r) == 0) {
      r->SetFlags(kDead | kFree, std::memory_order_relaxed);  // claimed
      Forget(r);
      to_free->push_back(r);
    } else {
      ++dead_referenced_;
    }
  }
}

bool CacheCore::SettleDead(Region* r) {
  // Live again (an eviction candidate revived), or claimed by someone else:
  // possibly already recycled, in which case its new life is judged alike.
  if ((r->state.load(std::memory_order_acquire) & kFlags) != kDead) return false;
  FenceForSum();
  if (RefSum(r) != 0) return false;
  r->SetFlags(kDead | kFree, std::memory_order_relaxed);  // claimed
  --dead_referenced_;
  Forget(r);
  return true;
}

void CacheCore::EvictOrRevive(const RegionList& candidates, RegionList* to_free) {
  if (candidates.empty()) return;
  FenceForSum();
  for (Region* r : candidates) {
    if (RefSum(r) != 0) {
      r->SetFlags(0, std::memory_order_release);  // a hit got in first
      continue;
    }
    r->SetFlags(kDead | kFree, std::memory_order_relaxed);  // claimed
    index_.Remove(r);
    RingRemove(r);
    Forget(r);
    ++counters_.evictions;
    to_free->push_back(r);
  }
}

void CacheCore::Forget(Region* r) {
  --live_regions_;
  live_bytes_ -= r->length;
}

bool CacheCore::OverLimits(size_t regions, size_t bytes) const {
  if (options_.max_regions != 0 &&
      live_regions_ + reserved_regions_ + regions > options_.max_regions) {
    return true;
  }
  return options_.max_bytes != 0 && live_bytes_ + reserved_bytes_ + bytes > options_.max_bytes;
}

// CLOCK over the ring of indexed regions: a region used since the hand last
// passed gets a second chance; referenced regions are skipped. Two full turns
// without a victim mean everything left is referenced. Victims are taken in
// batches (as many as the limits need) that share one fence.
absl::Status CacheCore::MakeRoom(size_t regions, size_t bytes, RegionList* to_free) {
  if (options_.max_bytes != 0 && bytes > options_.max_bytes) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "a mapping of %u bytes exceeds the cache's max_bytes (%u)", bytes, options_.max_bytes));
  }
  size_t budget = 2 * index_.size() + 1;
  while (OverLimits(regions, bytes)) {
    // Over the limits even if `batch` (n regions, nb bytes) goes.
    size_t n = 0, nb = 0;
    auto still_over = [&] {
      mu_.AssertHeld();
      return (options_.max_regions != 0 &&
              live_regions_ + reserved_regions_ + regions > options_.max_regions + n) ||
             (options_.max_bytes != 0 &&
              live_bytes_ + reserved_bytes_ + bytes > options_.max_bytes + nb);
    };
    RegionList batch;
    while (still_over() && clock_hand_ != nullptr && budget > 0) {
      --budget;
      Region* r = clock_hand_;
      clock_hand_ = pool_.links(r).next;
      if (r->state.load(std::memory_order_relaxed) & kDead) continue;  // in this batch
      if (RefSum(r) != 0) continue;  // a hint; settled after the fence
      if (r->accessed.load(std::memory_order_relaxed) != 0) {
        r->accessed.store(0, std::memory_order_relaxed);
        continue;
      }
      r->SetFlags(kDead, std::memory_order_seq_cst);
      batch.push_back(r);
      ++n;
      nb += r->length;
    }
    EvictOrRevive(batch, to_free);
    if (batch.empty()) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "registration cache full on %s: %u mappings (%u bytes) held, limits %u mappings / "
          "%u bytes, nothing unreferenced to evict",
          domain_->name(), live_regions_, live_bytes_, options_.max_regions,
          options_.max_bytes));
    }
  }
  return absl::OkStatus();
}

void CacheCore::RingInsert(Region* r) {
  RegionPool::Links& l = pool_.links(r);
  if (clock_hand_ == nullptr) {
    l.prev = l.next = r;
    clock_hand_ = r;
  } else {
    // Just behind the hand: the newest region is the last the hand reaches.
    RegionPool::Links& hand = pool_.links(clock_hand_);
    l.next = clock_hand_;
    l.prev = hand.prev;
    pool_.links(l.prev).next = r;
    hand.prev = r;
  }
  r->indexed = true;
}

void CacheCore::RingRemove(Region* r) {
  RegionPool::Links& l = pool_.links(r);
  if (l.next == r) {
    clock_hand_ = nullptr;
  } else {
    pool_.links(l.prev).next = l.next;
    pool_.links(l.next).prev = l.prev;
    if (clock_hand_ == r) clock_hand_ = l.next;
  }
  l.prev = l.next = nullptr;
  r->indexed = false;
}

void CacheCore::ReleaseDead(Region* r, ThreadRefs* t) {
  bool claimed;
  {
    MutexLock lock(&mu_);
    claimed = SettleDead(r);
  }
  // Before FreeRegions, which may delete this (and `t`) when its last share
  // goes; a region claimed above keeps the cache alive until then.
  t->busy.store(0, std::memory_order_release);
  if (claimed) FreeRegions({&r, 1});
}

void CacheCore::ReleaseDeadShared(Region* r) {
  bool claimed;
  {
    // The reference is dropped under mu_, so no one can free the region (or
    // the cache) under us before we have looked.
    MutexLock lock(&mu_);
    r->state.fetch_sub(kOneRef, std::memory_order_release);
    claimed = SettleDead(r);
  }
  if (claimed) FreeRegions({&r, 1});
}

void CacheCore::FreeRegions(RegionList& regions) {
  FreeRegions(absl::Span<Region* const>(regions));
  regions.clear();
}

void CacheCore::FreeRegions(absl::Span<Region* const> regions) {
  if (regions.empty()) return;
  // A forked child shares the parent's device descriptors: deregistering
  // would destroy the parent's mappings. The child's copies just go.
  const bool forked = Forked();
  for (Region* r : regions) {
    // A failed deregistration (device gone) still ends the mapping for us:
    // the kernel drops it with the device. Counted, not retried.
    const DeviceMapping m{.lkey = r->lkey, .rkey = r->rkey, .iova = r->iova,
                          .handle = HandleOf(r)};
    if (!forked) (void)domain_->Deregister(m);
  }
  {
    MutexLock lock(&mu_);
    for (Region* r : regions) pool_.Free(r);
  }
  for (size_t i = 0; i < regions.size(); ++i) DropRef();
}

// Without mu_: `r` was claimed under mu_ (which ordered the handle's write
// before us), and the pool's side arrays never move.
uint64_t CacheCore::HandleOf(const Region* r) const ABSL_NO_THREAD_SAFETY_ANALYSIS {
  return pool_.links(r).handle;
}

void CacheCore::DropRef() {
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    thread_refs_.AwaitReleases();
    delete this;
  }
}

void CacheCore::Close() {
  RegionList to_free;
  {
    MutexLock lock(&mu_);
    RegionList all;
    index_.ForEach([&](Region* r) { all.push_back(r); });
    RetireAll(all, &to_free);
  }
  FreeRegions(to_free);
  DropRef();
}

void CacheCore::Flush() {
  RegionList to_free;
  log_.WaitQuiet();
  {
    MutexLock lock(&mu_);
    ApplyEventsLocked(&to_free);
    // Flush ignores recent use. Candidates are re-checked after the fence:
    // a hit may have referenced one meanwhile.
    RegionList idle;
    index_.ForEach([&](Region* r) {
      if (RefSum(r) == 0) idle.push_back(r);
    });
    for (Region* r : idle) r->SetFlags(kDead, std::memory_order_seq_cst);
    EvictOrRevive(idle, &to_free);
  }
  FreeRegions(to_free);
}

absl::Status CacheCore::SetLimits(CacheOptions options) {
  RegionList to_free;
  absl::Status status;
  {
    MutexLock lock(&mu_);
    options_ = options;
    status = MakeRoom(0, 0, &to_free);
  }
  FreeRegions(to_free);
  return status;
}

CacheOptions CacheCore::limits() const {
  MutexLock lock(&mu_);
  return options_;
}

CacheStats CacheCore::stats() const {
  MutexLock lock(&mu_);
  CacheStats s = counters_;
  s.hits = hits_.Sum() + thread_refs_.Hits();
  s.live_regions = live_regions_;
  s.registered_bytes = live_bytes_;
  s.referenced_regions = dead_referenced_;
  index_.ForEach([&](Region* r) {
    if (RefSum(r) != 0) ++s.referenced_regions;
  });
  return s;
}

}  // namespace dmareg::internal
