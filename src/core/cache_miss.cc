// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The miss path: a request no cached mapping serves. Decide under the lock
// (PlanMiss), register without it (RegisterPlanned), admit under it again
// (AdmitLocked), and redo the registration if an invalidation overlapped it
// meanwhile.
#include <algorithm>
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
// are deregistered, which must happen without mu_.
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
    if (held_) core_->mu_.Unlock();
    held_ = false;
    core_->FreeRegions(to_free_);
  }
  RegionList* to_free() { return &to_free_; }

 private:
  CacheCore* const core_;
  bool held_ = false;
  RegionList to_free_;
};

// The lock is taken and released through MissScope, which the analysis
// cannot follow; the helpers it calls are annotated.
absl::StatusOr<Region*> CacheCore::Miss(Range request, AccessFlags want,
                                        bool* created) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  for (int attempt = 0;; ++attempt) {
    // Past the optimistic attempts, mu_ is held across the registration.
    const bool hold_lock = attempt >= kOptimisticAttempts;
    log_.WaitQuiet();
    MissScope scope(this);
    absl::StatusOr<MissPlan> planned = PlanMiss(request, want, scope.to_free());
    if (!planned.ok()) return planned.status();
    MissPlan& plan = *planned;
    if (plan.hit != nullptr) return plan.hit;
    // Evicted mappings go before the new one is made, to stay inside limits.
    if (!hold_lock) scope.Unlock();

    absl::StatusOr<DeviceMapping> m = RegisterPlanned(plan);
    // The PFN check: the frames just pinned (empty when off).
    std::vector<uint64_t> frames;
    // On-demand mappings follow the page tables: nothing to check.
    if (pfn_check_every_ != 0 && m.ok() && !plan.on_demand) frames = ReadPfnsAfterRegistering(plan);

    log_.WaitQuiet();
    if (!hold_lock) scope.Lock();
    ApplyEventsLocked(scope.to_free());
    --reserved_regions_;
    reserved_bytes_ -= plan.reserved;
    if (plan.fell_back) ++counters_.on_demand_fallbacks;
    if (m.ok() && plan.on_demand) ++counters_.on_demand_registrations;
    if (!m.ok()) {
      ++counters_.registration_failures;
      return m.status();
    }
    if (recent_.InvalidatedSince(plan.epoch, plan.span)) {
      // The pages may have changed under the registration: redo it. The
      // mapping is gone from our books whatever Deregister says.
      ++counters_.retried_registrations;
      scope.Unlock();
      DeregisterOrWarn(*m, plan.span, false);
      if (attempt + 1 >= kMaxAttempts) {
        return absl::AbortedError(
            absl::StrFormat("%s was unmapped or replaced during each of %d registrations on %s",
                            plan.span.ToString(), kMaxAttempts, domain_->name()));
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
    DeregisterOrWarn(*m, plan.span, false);
    return full;
  }
}

absl::StatusOr<CacheCore::MissPlan> CacheCore::PlanMiss(Range request, AccessFlags want,
                                                        RegionList* to_free) {
  ApplyEventsLocked(to_free);
  MissPlan plan{.request = request, .want = want, .span = request, .access = want};
  // Someone may have registered it since the lock-free probe.
  plan.hit = index_.FindCovering(request, [&](Region* c) {
    mu_.AssertHeld();
    return AccessSatisfies(c->access, want) && TryRefLocked(c);
  });
  if (plan.hit != nullptr) {
    hits_.Add();
    return plan;
  }
  // Merge with every mapping the request overlaps (span and rights), as a
  // request for more rights than a cached span has must; the merged ones
  // are retired once the new mapping is in. Fewer, larger mappings also
  // keep the index small. Too large a union: register just the request.
  const uint64_t max_bytes = domain_->capabilities().max_mapping_bytes;
  index_.ForEachOverlapping(request, [&](Region* c) {
    plan.span = plan.span.Hull(c->span());
    plan.access = AccessUnion(plan.access, c->access);
    plan.merged = true;
  });
  if (plan.merged && plan.span.length() > max_bytes) {
    plan.span = request;
    plan.access = want;
    plan.merged = false;
  }
  if (plan.span.length() > max_bytes) {
    ++counters_.registration_failures;
    return absl::InvalidArgumentError(
        absl::StrFormat("span of %u bytes exceeds the largest mapping %s allows (%u bytes)",
                        plan.span.length(), domain_->name(), max_bytes));
  }
  if (absl::Status room = MakeRoom(1, plan.span.length(), to_free); !room.ok()) {
    ++counters_.registration_failures;
    return room;
  }
  plan.reserved = plan.span.length();
  ++reserved_regions_;
  reserved_bytes_ += plan.reserved;
  plan.epoch = recent_.epoch();
  return plan;
}

absl::StatusOr<DeviceMapping> CacheCore::RegisterPlanned(MissPlan& plan) {
  if (paging_.load(std::memory_order_relaxed) != Paging::kPinned) {
    bool refused = false;
    absl::StatusOr<DeviceMapping> m = RegisterOnDemand(plan, &refused);
    if (!refused) return m;  // else registered pinned below
  }
  auto watch = [&] {
    plan.cacheable =
        monitor_->Watch(reinterpret_cast<const void*>(plan.span.begin()), plan.span.length()).ok();
  };
  auto narrow_to_request = [&] {
    plan.span = plan.request;
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
    // Unmaps there would go unseen: hand out a mapping that no later
    // request can hit, deregistered with its handle.
    Region* r = NewRegion(plan.span, plan.access, m, kDead);
    if (r == nullptr) return nullptr;
    ++dead_referenced_;
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
  Region* r = NewRegion(plan.span, plan.access, m, 0);
  if (r == nullptr) return nullptr;
  index_.Insert(r);
  RingInsert(r);
  ++counters_.misses;
  if (plan.merged) {
    // Retire what the new mapping supersedes (what it merged, unless an
    // Invalidate already did, and anything else it now covers).
    RegionList superseded;
    index_.ForEachOverlapping(plan.span, [&](Region* c) {
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

Region* CacheCore::NewRegion(Range span, AccessFlags access, const DeviceMapping& m,
                             uint64_t flags) {
  Region* r = pool_.Allocate();
  if (r == nullptr) {
    ++counters_.registration_failures;
    return nullptr;
  }
  r->addr = span.begin();
  r->length = span.length();
  r->iova = m.iova;
  r->lkey = m.lkey;
  r->rkey = m.rkey;
  r->access = access;
  r->dmabuf = false;
  r->via_alias = false;
  r->cache = this;
  pool_.links(r).handle = m.handle;
  refs_.fetch_add(1, std::memory_order_relaxed);
  ++live_regions_;
  live_bytes_ += span.length();
  // Publishes the fields above to any thread that reads this state (acquire).
  r->SetFlags(flags, std::memory_order_release);
  AddRefLocked(r);
  return r;
}

}  // namespace dmareg::internal
