// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "core/cache_core.h"

#include <unistd.h>

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_format.h"

namespace dmareg::internal {

namespace {
// Misses register without the lock and check afterwards that no Invalidate
// overlapped them; after this many collisions the miss holds the lock across
// the registration, so it cannot starve an explicit Invalidate.
constexpr int kOptimisticAttempts = 3;
// Monitor events need no lock, so memory unmapped again and again while it
// is being registered could still collide; give up after this many tries.
constexpr int kMaxAttempts = 8;
}  // namespace

CacheCore::CacheCore(std::shared_ptr<Domain> domain, std::shared_ptr<MemoryMonitor> monitor,
                     CacheOptions options)
    : domain_(std::move(domain)),
      monitor_(std::move(monitor)),
      log_(LogOf(*monitor_)),
      page_size_(static_cast<size_t>(sysconf(_SC_PAGESIZE))),
      fork_generation_(WatchForks()),
      creator_pid_(getpid()),
      options_(options) {
  // Events from before this cache existed concern no mapping of it.
  log_cursor_.store(log_.head(), std::memory_order_relaxed);
}

CacheCore::~CacheCore() = default;

// The hit path: no lock. A candidate is referenced first and validated after,
// because its fields are stable only while we hold a reference.
Region* CacheCore::FastHit(uintptr_t a, uintptr_t b, AccessFlags want) {
  return index_.Probe(a, [&](Region* r) {
    if (!r->TryRef()) return false;
    if (r->addr <= a && r->end() >= b && AccessSatisfies(r->access, want)) return true;
    Release(r);
    return false;
  });
}

absl::StatusOr<Region*> CacheCore::AcquireHost(uintptr_t a, uintptr_t b, AccessFlags want) {
  if (EventsPending()) [[unlikely]] {
    if (absl::Status s = CatchUp(); !s.ok()) return s;
  }
  if (Region* r = FastHit(a, b, want)) {
    hits_.Add();
    return r;
  }
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
          return AccessSatisfies(c->access, want) && c->TryRef();
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
      Region* r = NewRegion(start, length, access, *m, 1 | kDead);
      ++dead_referenced_;
      ++counters_.uncached_registrations;
      ++counters_.misses;
      mu_.Unlock();
      FreeRegions(to_free);
      return r;
    }
    // Not marked accessed: CLOCK then ranks it by its hits, like LRU would.
    Region* r = NewRegion(start, length, access, *m, 1);
    index_.Insert(r);
    RingInsert(r);
    ++counters_.misses;
    if (merged) {
      // Retire what the new mapping supersedes (what it merged, unless an
      // Invalidate already did, and anything else it now covers).
      RegionList superseded;
      index_.ForEachOverlapping(start, end, [&](Region* c) {
        if (c != r && c->addr >= start && c->end() <= end && AccessSatisfies(access, c->access)) {
          superseded.push_back(c);
        }
      });
      for (Region* c : superseded) Retire(c, &to_free);
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
  MutexLock lock(&mu_);
  --reserved_regions_;
  reserved_bytes_ -= mem.length;
  if (!m.ok()) {
    ++counters_.registration_failures;
    return m.status();
  }
  // Never indexed: born dead with the caller's reference, freed on release.
  Region* r = NewRegion(mem.offset, mem.length, want, *m, 1 | kDead);
  r->dmabuf = true;
  ++dead_referenced_;
  ++counters_.dmabuf_registrations;
  return r;
}

Region* CacheCore::NewRegion(uintptr_t addr, size_t length, AccessFlags access,
                             const DeviceMapping& m, uint64_t state) {
  Region* r = pool_.Allocate();
  r->addr = addr;
  r->length = length;
  r->iova = m.iova;
  r->lkey = m.lkey;
  r->rkey = m.rkey;
  r->access = access;
  r->dmabuf = false;
  r->cache = this;
  r->mapping = m;
  refs_.fetch_add(1, std::memory_order_relaxed);
  ++live_regions_;
  live_bytes_ += length;
  // Publishes the fields above to any thread whose TryRef reads this state.
  r->state.store(state, std::memory_order_release);
  return r;
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

void CacheCore::InvalidateLocked(uintptr_t a, uintptr_t b, RegionList* to_free) {
  RegionList hit;
  index_.ForEachOverlapping(a, b, [&](Region* r) { hit.push_back(r); });
  for (Region* r : hit) Retire(r, to_free);
  counters_.invalidated_regions += hit.size();
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
  for (const InvalidationLog::Range& r : ranges) {
    // Whole pages, clamped: the log holds byte ranges.
    const uintptr_t a = r.a & ~(page_size_ - 1);
    const uintptr_t b = r.b > std::numeric_limits<uintptr_t>::max() - (page_size_ - 1)
                            ? std::numeric_limits<uintptr_t>::max()
                            : (r.b + page_size_ - 1) & ~(page_size_ - 1);
    InvalidateLocked(a, b, to_free);
  }
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

void CacheCore::Retire(Region* r, RegionList* to_free) {
  if (r->indexed) {
    index_.Remove(r);
    RingRemove(r);
  }
  if (r->MarkDead()) {
    Forget(r);
    to_free->push_back(r);
  } else {
    ++dead_referenced_;
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
// without a victim mean everything left is referenced.
absl::Status CacheCore::MakeRoom(size_t regions, size_t bytes, RegionList* to_free) {
  if (options_.max_bytes != 0 && bytes > options_.max_bytes) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "a mapping of %u bytes exceeds the cache's max_bytes (%u)", bytes, options_.max_bytes));
  }
  size_t budget = 2 * index_.size() + 1;
  while (OverLimits(regions, bytes)) {
    Region* victim = nullptr;
    while (clock_hand_ != nullptr && budget-- > 0) {
      Region* r = clock_hand_;
      clock_hand_ = r->lru_next;
      if (r->TryEvict()) {
        victim = r;
        break;
      }
    }
    if (victim == nullptr) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "registration cache full on %s: %u mappings (%u bytes) held, limits %u mappings / "
          "%u bytes, nothing unreferenced to evict",
          domain_->name(), live_regions_, live_bytes_, options_.max_regions,
          options_.max_bytes));
    }
    index_.Remove(victim);
    RingRemove(victim);
    Forget(victim);
    ++counters_.evictions;
    to_free->push_back(victim);
  }
  return absl::OkStatus();
}

void CacheCore::RingInsert(Region* r) {
  if (clock_hand_ == nullptr) {
    r->lru_prev = r->lru_next = r;
    clock_hand_ = r;
  } else {
    // Just behind the hand: the newest region is the last the hand reaches.
    r->lru_next = clock_hand_;
    r->lru_prev = clock_hand_->lru_prev;
    r->lru_prev->lru_next = r;
    clock_hand_->lru_prev = r;
  }
  r->indexed = true;
}

void CacheCore::RingRemove(Region* r) {
  if (r->lru_next == r) {
    clock_hand_ = nullptr;
  } else {
    r->lru_prev->lru_next = r->lru_next;
    r->lru_next->lru_prev = r->lru_prev;
    if (clock_hand_ == r) clock_hand_ = r->lru_next;
  }
  r->lru_prev = r->lru_next = nullptr;
  r->indexed = false;
}

void CacheCore::FreeDead(Region* r) {
  {
    MutexLock lock(&mu_);
    --dead_referenced_;
    Forget(r);
  }
  RegionList one{r};
  FreeRegions(one);
}

void CacheCore::FreeRegions(RegionList& regions) {
  if (regions.empty()) return;
  // A forked child shares the parent's device descriptors: deregistering
  // would destroy the parent's mappings. The child's copies just go.
  const bool forked = Forked();
  for (Region* r : regions) {
    // A failed deregistration (device gone) still ends the mapping for us:
    // the kernel drops it with the device. Counted, not retried.
    if (!forked) (void)domain_->Deregister(r->mapping);
  }
  {
    MutexLock lock(&mu_);
    for (Region* r : regions) pool_.Free(r);
  }
  const size_t n = regions.size();
  regions.clear();
  for (size_t i = 0; i < n; ++i) DropRef();
}

void CacheCore::DropRef() {
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
}

void CacheCore::Close() {
  RegionList to_free;
  {
    MutexLock lock(&mu_);
    RegionList all;
    index_.ForEach([&](Region* r) { all.push_back(r); });
    for (Region* r : all) Retire(r, &to_free);
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
    RegionList idle;
    index_.ForEach([&](Region* r) {
      if (r->refs() == 0) idle.push_back(r);
    });
    for (Region* r : idle) {
      // Re-checked atomically: a hit may have referenced it meanwhile. Flush
      // ignores recent use: the first TryEvict may only clear kAccessed.
      if (r->TryEvict() || r->TryEvict()) {
        index_.Remove(r);
        RingRemove(r);
        Forget(r);
        ++counters_.evictions;
        to_free.push_back(r);
      }
    }
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
  s.hits = hits_.Sum();
  s.live_regions = live_regions_;
  s.registered_bytes = live_bytes_;
  s.referenced_regions = dead_referenced_;
  index_.ForEach([&](Region* r) {
    if (r->refs() != 0) ++s.referenced_regions;
  });
  return s;
}

}  // namespace dmareg::internal
