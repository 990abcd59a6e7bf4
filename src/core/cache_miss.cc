// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The miss path, one pipeline for host ranges and dma-buf slices: decide
// under the lock (PlanMiss), register (RegisterPlanned, without the lock
// unless registrations are fast), admit under the lock (AdmitLocked), and
// redo the registration if an invalidation of the span came in meanwhile.
#include <algorithm>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "core/cache_core.h"
#include "runtime/log.h"

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

// One attempt's hold on mu_: taken on construction; on scope exit (every
// return) released if still held, and then the regions the attempt retired
// are deregistered, which must happen without mu_ (but for fast domains,
// whose regions go under it).
class CacheCore::MissScope {
 public:
  explicit MissScope(CacheCore* core) : core_(core) { Lock(); }
  ~MissScope() { Unlock(); }
  MissScope(const MissScope&) = delete;
  MissScope& operator=(const MissScope&) = delete;

  void Lock() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    core_->mu_.Lock();
    held_ = true;
  }
  // Releases mu_ (if held) and frees what was retired so far.
  void Unlock() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    size_t freed = 0;
    if (held_) {
      if (core_->fast_registration_ && !to_free_.empty())
        freed = core_->FreeRegionsLocked(to_free_);
      core_->mu_.Unlock();
    }
    held_ = false;
    core_->DropRefs(freed);
    if (!to_free_.empty()) {
      core_->FreeRegions(to_free_);
    } else {
      FlushQueuedLogs();
    }
  }
  RegionList* to_free() { return &to_free_; }

 private:
  CacheCore* const core_;
  bool held_ = false;
  RegionList to_free_;
};

// The lock is taken and released through MissScope, which the analysis
// cannot follow; the helpers it calls are annotated.
absl::StatusOr<Region*> CacheCore::Miss(const MissKey& key, AccessFlags want,
                                        bool* created) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  // The kernel refused for want of room once already (see below), and how
  // many idle mappings the cache then let go.
  bool made_room = false;
  size_t evicted_for_room = 0;
  for (int attempt = 0;; ++attempt) {
    // Past the optimistic attempts, or where registering costs less than a
    // second critical section would, mu_ is held across the registration.
    const bool hold_lock = fast_registration_ || attempt >= kOptimisticAttempts;
    log_.WaitQuiet();
    MissScope scope(this);
    MissPlan plan;
    if (absl::Status planned = PlanMiss(key, want, scope.to_free(), &plan); !planned.ok()) {
      return planned;
    }
    if (plan.hit != nullptr) return plan.hit;
    // Evicted mappings go before the new one is made, to stay inside limits.
    if (!hold_lock) scope.Unlock();

    absl::StatusOr<DeviceMapping> m = RegisterPlanned(plan);
    // The PFN check: the frames just pinned (empty when off).
    std::vector<uint64_t> frames;
    // On-demand mappings follow the page tables, dma-bufs have no frames
    // of ours: nothing to check.
    if (pfn_check_every_ != 0 && m.ok() && !plan.on_demand && !plan.dmabuf()) {
      frames = ReadPfnsAfterRegistering(plan);
    }

    log_.WaitQuiet();
    if (!hold_lock) scope.Lock();
    ApplyEventsLocked(scope.to_free());
    --reserved_regions_;
    reserved_bytes_ -= plan.reserved;
    recent_.Close();
    if (plan.fell_back) ++counters_.on_demand_fallbacks;
    if (m.ok() && plan.on_demand) ++counters_.on_demand_registrations;
    if (!m.ok()) {
      ++counters_.registration_failures;
      if (m.status().code() != absl::StatusCode::kResourceExhausted) return m.status();
      // Memlock, the device's MR table or its mapping count: what this cache
      // holds unreferenced counts against the same limit, so let it go and
      // retry once.
      if (!made_room) {
        made_room = true;
        evicted_for_room = EvictIdleLocked(scope.to_free());
        if (evicted_for_room > 0) continue;
      }
      return ExhaustedWithHoldings(m.status(), evicted_for_room);
    }
    if (recent_.InvalidatedSince(plan.epoch, plan.span, plan.key->space)) {
      // The pages may have changed under the registration: redo it. The
      // mapping is gone from our books whatever Deregister says.
      ++counters_.retried_registrations;
      scope.Unlock();
      DeregisterOrWarn(*m, plan.span, plan.dmabuf());
      if (attempt + 1 >= kMaxAttempts) {
        return absl::AbortedError(absl::StrFormat(
            "%s%s was %s during each of %d registrations on %s",
            plan.dmabuf() ? plan.key->id->ToString() + " " : "", plan.span.ToString(),
            plan.dmabuf() ? "invalidated" : "unmapped or replaced", kMaxAttempts, domain_->name()));
      }
      continue;
    }
    if (Region* r = AdmitLocked(plan, *m, scope.to_free())) {
      if (!frames.empty()) RecordPfnsLocked(r, std::move(frames));
      if (created != nullptr) *created = true;
      return r;
    }
    const absl::Status full = PoolFullError();
    scope.Unlock();
    DeregisterOrWarn(*m, plan.span, plan.dmabuf());
    return full;
  }
}

template <typename F>
void CacheCore::ForEachOverlappingLocked(const MissKey& key, const Range& span, F f) const {
  if (key.id == nullptr) {
    index_.ForEachOverlapping(
        RangeIndex::kHostSpace, span, [](const Region* r) { return !r->dmabuf; }, f);
    return;
  }
  auto it = dmabuf_regions_.find(*key.id);
  if (it == dmabuf_regions_.end()) return;
  for (Region* r : it->second) {
    if (!r->span().Overlaps(span)) continue;
    if constexpr (std::is_same_v<decltype(f(r)), bool>) {
      if (f(r)) return;
    } else {
      f(r);
    }
  }
}

absl::Status CacheCore::PlanMiss(const MissKey& key, AccessFlags want, RegionList* to_free,
                                 MissPlan* plan) {
  ApplyEventsLocked(to_free);
  // `plan` is fresh: only what differs from its defaults is set.
  plan->key = &key;
  plan->want = want;
  plan->span = key.request;
  plan->access = want;
  // A dma-buf whose identity the kernel may reuse is never cached.
  plan->cacheable = !plan->dmabuf() || dmabuf_ids_unique_;
  if (plan->cacheable) {
    // One pass over what the request overlaps: a mapping that covers it
    // with the rights asked for is a hit (registered since the lock-free
    // probe); the others are merged (span and rights), as a request for
    // more rights than a cached span has must, and retired once the new
    // mapping is in. Fewer, larger mappings also keep the index small.
    ForEachOverlappingLocked(key, key.request, [&](Region* c) -> bool {
      mu_.AssertHeld();
      if (c->Covers(key.request, want) && TryRefLocked(c)) {
        plan->hit = c;
        return true;
      }
      plan->span = plan->span.Hull(c->span());
      plan->access = AccessUnion(plan->access, c->access);
      plan->merged = true;
      return false;
    });
    if (plan->hit != nullptr) {
      plan->hit->Touch();
      hits_.Add();
      if (plan->dmabuf()) dmabuf_hits_.Add();
      return absl::OkStatus();
    }
  }
  // Too large a union: register just the request.
  if (plan->merged && plan->span.length() > max_mapping_bytes_) {
    plan->span = key.request;
    plan->access = want;
    plan->merged = false;
  }
  if (plan->span.length() > max_mapping_bytes_) {
    ++counters_.registration_failures;
    return absl::InvalidArgumentError(
        absl::StrFormat("span of %u bytes exceeds the largest mapping %s allows (%u bytes)",
                        plan->span.length(), domain_->name(), max_mapping_bytes_));
  }
  if (absl::Status room = MakeRoom(1, plan->span.length(), to_free); !room.ok()) [[unlikely]] {
    ++counters_.registration_failures;
    return room;
  }
  plan->reserved = plan->span.length();
  ++reserved_regions_;
  reserved_bytes_ += plan->reserved;
  plan->epoch = recent_.Open();  // closed by Miss after registering
  return absl::OkStatus();
}

absl::StatusOr<DeviceMapping> CacheCore::RegisterPlanned(MissPlan& plan) {
  if (plan.dmabuf()) {
    absl::StatusOr<DeviceMapping> m = RegisterDmaBufPlanned(plan);
    if (!m.ok() && plan.merged) {
      // The union may be what was refused: the slice alone may register.
      plan.span = plan.key->request;
      plan.access = plan.want;
      plan.merged = false;
      m = RegisterDmaBufPlanned(plan);
    }
    return m;
  }
  return RegisterHostPlanned(plan);
}

absl::StatusOr<DeviceMapping> CacheCore::RegisterHostPlanned(MissPlan& plan) {
  if (paging_.load(std::memory_order_relaxed) != Paging::kPinned) [[unlikely]] {
    bool refused = false;
    absl::StatusOr<DeviceMapping> m = RegisterOnDemand(plan, &refused);
    if (!refused) return m;  // else registered pinned below
  }
  return RegisterPinnedPlanned(plan);
}

// One named result, so it is built where the caller wants it (no copy of
// the StatusOr, whose reload would stall on the domain's stores).
absl::StatusOr<DeviceMapping> CacheCore::RegisterPinnedPlanned(MissPlan& plan) {
  auto watch = [&] {
    plan.cacheable =
        monitor_->Watch(reinterpret_cast<const void*>(plan.span.begin()), plan.span.length()).ok();
  };
  auto narrow_to_request = [&] {
    plan.span = plan.key->request;
    plan.access = plan.want;
    plan.merged = false;
    watch();
  };
  auto register_span = [&] {
    return domain_->RegisterHost(
        HostMemory{reinterpret_cast<const void*>(plan.span.begin()), plan.span.length()},
        plan.access);
  };
  // Watch before registering: an unmap from here on is in the log by the
  // time we look again, so the check after cannot miss it.
  watch();
  // Something in the union cannot be watched: the request may be.
  if (!plan.cacheable && plan.merged) narrow_to_request();
  absl::StatusOr<DeviceMapping> m = register_span();
  if (!m.ok() && plan.merged) {
    // A merged neighbour may cover memory unmapped behind our back (an
    // unwatched free, say): the request alone may still register.
    narrow_to_request();
    m = register_span();
  }
  return m;
}

Region* CacheCore::AdmitLocked(const MissPlan& plan, const DeviceMapping& m, RegionList* to_free) {
  if (!plan.cacheable) {
    // Unmaps (or, for a dma-buf whose inode may come back, a new buffer
    // under the same identity) would go unseen: hand out a mapping that no
    // later request can hit, deregistered with its handle.
    Region* r = NewRegion(plan, m, kDead);
    if (r == nullptr) return nullptr;
    ++dead_referenced_;
    if (plan.dmabuf()) {
      ++counters_.dmabuf_registrations;
      if (plan.via_alias) ++counters_.dmabuf_alias_registrations;
      return r;
    }
    ++counters_.uncached_registrations;
    ++counters_.misses;
    // The first in full; then quietly, as it repeats on every request.
    LogLater(counters_.uncached_registrations == 1 ? LogLevel::kWarn : LogLevel::kDebug,
             "cache on %s: %s registered uncached: the memory monitor cannot watch it, so each "
             "request registers it again",
             domain_->name(), plan.span.ToString());
    return r;
  }
  // Not marked accessed: CLOCK then ranks it by its hits, like LRU would.
  Region* r = NewRegion(plan, m, 0);
  if (r == nullptr) return nullptr;
  if (plan.dmabuf()) {
    IndexDmaBufLocked(r, *plan.key->id);
    ++counters_.dmabuf_misses;
    if (plan.via_alias) ++counters_.dmabuf_alias_registrations;
  } else {
    index_.Insert(r, RangeIndex::kHostSpace);
  }
  RingInsert(r);
  ++counters_.misses;
  if (plan.merged) {
    // Retire what the new mapping supersedes (what it merged, unless an
    // Invalidate already did, and anything else it now covers).
    RegionList superseded;
    ForEachOverlappingLocked(*plan.key, plan.span, [&](Region* c) {
      if (c != r && r->Covers(c->span(), c->access)) superseded.push_back(c);
    });
    RetireAll(superseded, to_free);
  }
  return r;
}

absl::Status CacheCore::PoolFullError() const {
  return absl::ResourceExhaustedError(
      absl::StrFormat("registration cache on %s holds as many mappings as it has room for (%u)",
                      domain_->name(), pool_.max_regions()));
}

Region* CacheCore::NewRegion(const MissPlan& plan, const DeviceMapping& m, uint64_t flags) {
  Region* r = pool_.Allocate();
  if (r == nullptr) {
    ++counters_.registration_failures;
    return nullptr;
  }
  // Every field a hit validates is written before the state publishes them:
  // a reader holding a stale index of this slot must see the new space too.
  r->addr = plan.span.begin();
  r->length = plan.span.length();
  r->iova = m.iova;
  r->lkey = m.lkey;
  r->rkey = m.rkey;
  r->access = plan.access;
  r->dmabuf = plan.dmabuf();
  r->via_alias = plan.via_alias;
  r->handle = m.handle;
  if (plan.dmabuf()) pool_.SetDmaBufId(r, *plan.key->id);
  TakeRegionShare();
  ++live_regions_;
  live_bytes_ += plan.span.length();
  // Publishes the fields above to any thread that reads this state
  // (acquire). kFree is still set: nobody else writes the word.
  r->SetFlagsOfFree(flags, std::memory_order_release);
  AddRefLocked(r);
  return r;
}

}  // namespace dmareg::internal
