// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// Eviction: keeping the cache inside its limits. CLOCK (second chance) over
// the ring of indexed regions; victims are marked dead in batches that share
// one fence (see cache_core.h for the reference handshake).
#include "absl/strings/str_format.h"
#include "core/cache_core.h"

namespace dmareg::internal {

void CacheCore::EvictOrRevive(const RegionList& candidates, RegionList* to_free) {
  if (candidates.empty()) return;
  FenceForSum();
  for (Region* r : candidates) {
    if (RefSum(r) != 0) {
      r->SetFlags(0, std::memory_order_release);  // a hit got in first
      continue;
    }
    r->Claim();
    Unindex(r);
    Forget(r);
    ++counters_.evictions;
    to_free->push_back(r);
  }
}

// CLOCK over the ring of indexed regions: a region used since the hand last
// passed gets a second chance; referenced regions are skipped. Two full turns
// without a victim mean everything left is referenced. Victims are taken in
// batches (as many as the limits need) that share one fence.
absl::Status CacheCore::MakeRoomSlow(size_t regions, size_t bytes, RegionList* to_free) {
  if (options_.max_bytes != 0 && bytes > options_.max_bytes) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "a mapping of %u bytes exceeds the cache's max_bytes (%u)", bytes, options_.max_bytes));
  }
  size_t budget = 2 * IndexedCount() + 1;
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
    while (still_over() && clock_hand_ != RegionPool::kNone && budget > 0) {
      --budget;
      Region* r = region_base_ + clock_hand_;
      clock_hand_ = pool_.links(r).next;
      if (r->state.load(std::memory_order_relaxed) & kDead) continue;  // in this batch
      if (RefSum(r) != 0) continue;  // a hint; settled after the fence
      if (r->accessed.load(std::memory_order_relaxed) != 0) {
        r->accessed.store(0, std::memory_order_relaxed);
        continue;
      }
      r->MarkDead();
      batch.push_back(r);
      ++n;
      nb += r->length;
    }
    EvictOrRevive(batch, to_free);
    if (batch.empty()) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "registration cache full on %s: %u mappings (%u bytes) held, limits %u mappings / "
          "%u bytes, nothing unreferenced to evict",
          domain_->name(), live_regions_, live_bytes_, options_.max_regions, options_.max_bytes));
    }
  }
  return absl::OkStatus();
}

size_t CacheCore::EvictIdleLocked(RegionList* to_free) {
  RegionList batch;
  ForEachIndexed([&](Region* r) {
    mu_.AssertHeld();
    if ((r->state.load(std::memory_order_relaxed) & kDead) != 0 || RefSum(r) != 0) return;
    r->MarkDead();
    batch.push_back(r);
  });
  const uint64_t before = counters_.evictions;
  EvictOrRevive(batch, to_free);
  return counters_.evictions - before;
}

absl::Status CacheCore::ExhaustedWithHoldings(const absl::Status& refused, size_t evicted) const {
  if (evicted == 0 && live_regions_ == 0) return refused;  // the cache is not the cause
  absl::Status out(
      refused.code(),
      absl::StrFormat(
          "%s; the cache on %s holds %u bytes in %u mappings%s", refused.message(), domain_->name(),
          live_bytes_, live_regions_,
          evicted > 0 ? absl::StrFormat(" (it evicted %u unreferenced and retried once)", evicted)
                      : std::string(", every one referenced: nothing to evict")));
  refused.ForEachPayload(
      [&](absl::string_view url, const absl::Cord& payload) { out.SetPayload(url, payload); });
  return out;
}

void CacheCore::RingInsert(Region* r) {
  RegionPool::Links& l = pool_.links(r);
  if (clock_hand_ == RegionPool::kNone) {
    l.prev = l.next = r->index;
    clock_hand_ = r->index;
  } else {
    // Just behind the hand: the newest region is the last the hand reaches.
    RegionPool::Links& hand = pool_.links(clock_hand_);
    l.next = clock_hand_;
    l.prev = hand.prev;
    pool_.links(l.prev).next = r->index;
    hand.prev = r->index;
  }
}

void CacheCore::RingRemove(Region* r) {
  RegionPool::Links& l = pool_.links(r);
  if (l.next == r->index) {
    clock_hand_ = RegionPool::kNone;
  } else {
    pool_.links(l.prev).next = l.next;
    pool_.links(l.next).prev = l.prev;
    if (clock_hand_ == r->index) clock_hand_ = l.next;
  }
  l.prev = l.next = RegionPool::kNone;
}

}  // namespace dmareg::internal
