// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "core/cache_core.h"

#include <unistd.h>

#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "monitor/mapping_pages.h"
#include "runtime/log.h"

namespace dmareg::internal {

static_assert(RegionPool::kMaxRegions <= ThreadRefs::kMaxIndex,
              "every Region has a per-thread counter");

namespace {
// Monitor events applied in one batch beyond this many are recorded for
// in-flight misses as one span (see ApplyEventsLocked).
constexpr size_t kRecordEachEvents = 8;
}  // namespace

namespace {
// The lost flag of a domain whose device cannot go away.
constexpr std::atomic<bool> kNeverLost{false};
}  // namespace

CacheCore::CacheCore(std::shared_ptr<Domain> domain, std::shared_ptr<MemoryMonitor> monitor,
                     CacheOptions options, bool thread_refs)
    : domain_(std::move(domain)),
      monitor_(std::move(monitor)),
      log_(LogOf(*monitor_)),
      page_size_(static_cast<size_t>(sysconf(_SC_PAGESIZE))),
      fork_generation_(WatchForks()),
      creator_pid_(getpid()),
      dmabuf_policy_(options.dmabuf_policy),
      paging_option_(options.paging),
      paging_(options.paging),
      inspect_dmabuf_(options.inspect_dmabuf),
      dmabuf_ids_unique_(options.inspect_dmabuf ? true : DmaBufIdsUnique()),
      pfn_check_every_(options.pfn_check_every),
      fast_registration_(domain_->capabilities().fast_registration),
      lost_(domain_->lost_flag() != nullptr ? domain_->lost_flag() : &kNeverLost),
      max_mapping_bytes_(domain_->capabilities().max_mapping_bytes),
      options_(options),
      pool_(this),
      region_base_(ABSL_TS_UNCHECKED_READ(pool_).base()),
      index_(&ABSL_TS_UNCHECKED_READ(pool_)),
      thread_refs_(thread_refs && HeavyFenceAvailable()) {
  // Events from before this cache existed concern no mapping of it.
  log_cursor_.store(log_.head(), std::memory_order_relaxed);
  InitPfnCheck();
}

CacheCore::~CacheCore() = default;

Region* CacheCore::FastHit(Range span, AccessFlags want) {
  ThreadRefs* t = thread_refs_.Mine();
  if (t == nullptr) [[unlikely]]
    return FastHitShared(RangeIndex::kHostSpace, span, want, nullptr);
  return HitWith(t, RangeIndex::kHostSpace, span, want, nullptr);
}

// Threads without a table: one made now, or references on the shared count.
Region* CacheCore::FastHitShared(uint64_t space, Range span, AccessFlags want, const DmaBufId* id) {
  if (thread_refs_.enabled() && ThreadSlot() < kThreadSlots) {
    ThreadRefs* t;
    {
      MutexLock lock(&mu_);
      t = thread_refs_.CreateMine();
    }
    if (t != nullptr) return HitWith(t, space, span, want, id);
  }
  Region* hit = RegionAt(index_.Probe(space, span.begin(), [&](uint32_t i) {
    Region* r = region_base_ + i;
    if (!r->TryRefShared()) return false;
    if (r->Covers(span, want) && OfSpace(r, id)) {
      r->Touch();
      return true;
    }
    Release(r);
    return false;
  }));
  if (hit != nullptr) {
    hits_.Add();
    if (id != nullptr) dmabuf_hits_.Add();
  }
  return hit;
}

absl::StatusOr<Region*> CacheCore::AcquireHost(Range span, AccessFlags want, bool* created) {
  // TryHit probed already unless events were pending or this thread has no
  // table yet; then the probe is worth another go.
  if (EventsPending() || thread_refs_.Mine() == nullptr) [[unlikely]] {
    if (absl::Status s = CatchUp(); !s.ok()) return s;
    Region* hit = FastHit(span, want);  // counted as a hit there
    if (pfn_check_every_ != 0) [[unlikely]]
      hit = SampledPfnCheck(hit);
    if (hit != nullptr) return hit;
  }
  // Hugetlb memory is unmapped in whole huge pages: the mapping covers them
  // (monitor/mapping_pages.h). A fast domain makes no system call, nor
  // does the cache for it.
  if (!fast_registration_) span = RoundOutToMappingPages(span);
  return Miss(MissKey{.request = span}, want, created);
}

bool CacheCore::TryRefLocked(Region* r) {
  if (r->state.load(std::memory_order_relaxed) & kFlags) return false;
  AddRefLocked(r);
  return true;
}

void CacheCore::AddRefLocked(Region* r) {
  ThreadRefs* t = thread_refs_.Mine();
  if (t == nullptr) [[unlikely]]
    t = thread_refs_.CreateMine();
  if (t != nullptr) {
    ThreadRefs::Add(t->Counter(r->index), 1);
  } else {
    r->state.fetch_add(kOneRef, std::memory_order_relaxed);
  }
}

void CacheCore::FenceForSum() const {
  if (thread_refs_.OthersMayHold()) HeavyFence();
}

void CacheCore::Invalidate(Range span) {
  RegionList to_free;
  size_t freed = 0;
  {
    MutexLock lock(&mu_);
    ++counters_.invalidations;
    InvalidateLocked(span, &to_free);
    if (fast_registration_) freed = FreeRegionsLocked(to_free);
  }
  DropRefs(freed);
  FreeRegions(to_free);
}

void CacheCore::InvalidateLocked(const Range& span, RegionList* to_free, bool record) {
  // The regions found go straight to the end of to_free, to be retired there.
  const size_t first = to_free->size();
  index_.ForEachOverlapping(
      RangeIndex::kHostSpace, span, [](const Region* r) { return !r->dmabuf; },
      [&](Region* r) { to_free->push_back(r); });
  counters_.invalidated_regions += to_free->size() - first;
  RetireFrom(first, to_free);
  if (record) recent_.Record(span);
}

void CacheCore::ApplyEventsSlow(RegionList* to_free) {
  const uint64_t cursor = log_cursor_.load(std::memory_order_relaxed);
  if (!log_.Pending(cursor)) return;
  std::vector<Range> ranges;
  bool overrun = false;
  const uint64_t next = log_.ReadSince(cursor, &ranges, &overrun);
  if (overrun) {
    // Events were lost to us: anything may have been unmapped.
    ++counters_.monitor_overruns;
    const size_t before = to_free->size();
    InvalidateLocked(*Range::FromBounds(0, UINT64_MAX), to_free);
    LogLater(LogLevel::kWarn,
             "cache on %s: fell behind its monitor's log (events lost); dropped every cached "
             "mapping, %u of them idle",
             domain_->name(), to_free->size() - before);
  }
  // A storm of events is recorded for in-flight misses as one span covering
  // them all, so it cannot push older records out of the short log (a miss
  // that finds its epoch gone from the log must assume the worst and retry).
  const bool record_each = ranges.size() <= kRecordEachEvents;
  std::optional<Range> all;
  for (const Range& r : ranges) {
    // The log holds byte ranges; a mapping covers whole pages.
    const Range pages = r.RoundOutBelowLastPage(page_size_);
    InvalidateLocked(pages, to_free, record_each);
    all = all ? all->Hull(pages) : pages;
  }
  if (!record_each && all) recent_.Record(*all);
  counters_.monitor_events += next - cursor;
  // Publishes the retirements above to hits that read the cursor.
  log_cursor_.store(next, std::memory_order_release);
}

absl::Status CacheCore::CatchUp() {
  if (Forked()) return ForkedError();
  if (lost_->load(std::memory_order_acquire)) [[unlikely]] {
    // The kernel destroyed the mappings: deregistering frees our side.
    Flush();
    return domain_->LostStatus("Acquire");
  }
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

void CacheCore::RetireAll(absl::Span<Region* const> victims, RegionList* to_free) {
  const size_t first = to_free->size();
  to_free->insert(to_free->end(), victims.begin(), victims.end());
  RetireFrom(first, to_free);
}

void CacheCore::RetireFrom(size_t first, RegionList* to_free) {
  // All marked dead first, then one fence, then their counts read; the
  // list is compacted in place by each pass.
  RegionList& list = *to_free;
  size_t n = first;
  for (size_t i = first; i < list.size(); ++i) {
    Region* r = list[i];
    // Listed twice (a query may report a region once per colliding hash):
    // retired once.
    if (r->state.load(std::memory_order_relaxed) & kFlags) continue;
    if (r->indexed) Unindex(r);
    r->MarkDead();
    list[n++] = r;
  }
  // (pop_back is inline, resize a call; linear either way.)
  while (list.size() > n) list.pop_back();
  if (n == first) return;
  FenceForSum();
  size_t kept = first;
  for (size_t i = first; i < n; ++i) {
    Region* r = list[i];
    if (RefSum(r) == 0) {
      r->Claim();
      Forget(r);
      list[kept++] = r;
    } else {
      ++dead_referenced_;
    }
  }
  while (list.size() > kept) list.pop_back();
}

bool CacheCore::SettleDead(Region* r) {
  // Live again (an eviction candidate revived), or claimed by someone else:
  // possibly already recycled, in which case its new life is judged alike.
  if ((r->state.load(std::memory_order_acquire) & kFlags) != kDead) return false;
  FenceForSum();
  if (RefSum(r) != 0) return false;
  r->Claim();
  --dead_referenced_;
  Forget(r);
  return true;
}

void CacheCore::Forget(Region* r) {
  --live_regions_;
  live_bytes_ -= r->length;
  if (pfn_check_every_ != 0) pfns_.erase(r->index);
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

namespace {
// What the domain returned for `r`, to give back to it.
DeviceMapping MappingOf(const Region* r) {
  return {
      .lkey = r->lkey, .rkey = r->rkey, .iova = r->iova, .length = r->length, .handle = r->handle};
}
}  // namespace

void CacheCore::FreeRegions(absl::Span<Region* const> regions) {
  // Every path that let go of mu_ comes here: pass on what was logged
  // under it.
  FlushQueuedLogs();
  if (regions.empty()) return;
  // A forked child shares the parent's device descriptors: deregistering
  // would destroy the parent's mappings. The child's copies just go.
  const bool forked = Forked();
  for (Region* r : regions) {
    // A failed deregistration (device gone) still ends the mapping for us:
    // the kernel drops it with the device. Counted, not retried. The
    // fields, the handle too, are ours: `r` was claimed under mu_.
    const DeviceMapping m = MappingOf(r);
    if (!forked) DeregisterOrWarn(m, r->span(), r->dmabuf);
  }
  {
    MutexLock lock(&mu_);
    for (Region* r : regions) pool_.Free(r);
  }
  DropRefs(regions.size());
}

size_t CacheCore::FreeRegionsLocked(RegionList& regions) {
  // Fast registrations only (a no-op or test domain), never a kernel call
  // under mu_.
  const bool forked = Forked();
  for (Region* r : regions) {
    const DeviceMapping m = MappingOf(r);
    if (!forked) {
      if (absl::Status s = domain_->Deregister(m); !s.ok()) [[unlikely]] {
        LogLater(LogLevel::kWarn,
                 "cache on %s: deregistering %s%s (IOVA %#x, lkey %#x) failed: %s; dropped anyway",
                 domain_->name(), r->dmabuf ? "dma-buf slice " : "", r->span().ToString(), m.iova,
                 m.lkey, s.ToString());
      }
    }
    pool_.Free(r);
  }
  const size_t n = regions.size();
  regions.clear();
  return KeepRegionShares(n);
}

void CacheCore::TakeRegionShare() {
  if (ref_credits_ == 0) {
    refs_.fetch_add(kRefBatch, std::memory_order_relaxed);
    ref_credits_ = kRefBatch;
  }
  --ref_credits_;
}

size_t CacheCore::KeepRegionShares(size_t n) {
  ref_credits_ += static_cast<int64_t>(n);
  if (ref_credits_ <= 2 * kRefBatch) return 0;
  const int64_t excess = ref_credits_ - kRefBatch;
  ref_credits_ = kRefBatch;
  return static_cast<size_t>(excess);
}

void CacheCore::DropRefs(size_t n) {
  if (n == 0) return;
  if (refs_.fetch_sub(static_cast<int64_t>(n), std::memory_order_acq_rel) ==
      static_cast<int64_t>(n)) {
    thread_refs_.AwaitReleases();
    delete this;
  }
}

void CacheCore::DeregisterOrWarn(const DeviceMapping& m, Range span, bool dmabuf) {
  if (absl::Status s = domain_->Deregister(m); !s.ok()) [[unlikely]] {
    Log(LogLevel::kWarn,
        "cache on %s: deregistering %s%s (IOVA %#x, lkey %#x) failed: %s; dropped anyway",
        domain_->name(), dmabuf ? "dma-buf slice " : "", span.ToString(), m.iova, m.lkey,
        s.ToString());
  }
}

void CacheCore::DropRef() {
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    thread_refs_.AwaitReleases();
    delete this;
  }
}

void CacheCore::Close() {
  RegionList to_free;
  int64_t credits;
  {
    MutexLock lock(&mu_);
    RegionList all;
    ForEachIndexed([&](Region* r) { all.push_back(r); });
    // (RetireAll unlinks them from the ring: collected first.)
    RetireAll(all, &to_free);
    // No miss comes after this: the shares taken ahead go back.
    credits = std::exchange(ref_credits_, 0);
  }
  FreeRegions(to_free);
  DropRefs(static_cast<size_t>(credits));  // the owner's share keeps us alive
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
    ForEachIndexed([&](Region* r) {
      if (RefSum(r) == 0) idle.push_back(r);
    });
    for (Region* r : idle) r->MarkDead();
    EvictOrRevive(idle, &to_free);
  }
  FreeRegions(to_free);
}

absl::Status CacheCore::SetLimits(CacheOptions options) {
  RegionList to_free;
  absl::Status status;
  {
    MutexLock lock(&mu_);
    // The dma-buf policy and inspector are fixed at Create, like the monitor.
    options.dmabuf_policy = dmabuf_policy_;
    options.inspect_dmabuf = inspect_dmabuf_;
    options.pfn_check_every = pfn_check_every_;
    options_ = std::move(options);
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
  s.dmabuf_hits += dmabuf_hits_.Sum() + thread_refs_.DmaBufHits();
  s.live_regions = live_regions_;
  s.registered_bytes = live_bytes_;
  s.referenced_regions = dead_referenced_;
  ForEachIndexed([&](Region* r) {
    if (RefSum(r) != 0) ++s.referenced_regions;
    if (r->dmabuf) {
      ++s.dmabuf_regions;
      s.dmabuf_bytes += r->length;
    }
  });
  return s;
}

size_t CacheCore::IndexBytes() const {
  MutexLock lock(&mu_);
  return index_.MemoryBytes();
}

}  // namespace dmareg::internal
