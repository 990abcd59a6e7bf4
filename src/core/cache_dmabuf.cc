// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// dma-buf slices in the cache: keyed by the buffer's identity (dmabuf_id.h)
// and the slice's pages, in an index of their own beside the host ranges,
// sharing the regions, the references, the limits and the CLOCK ring.
// Lookups take the mutex (a dma-buf request costs an fstat anyway).
#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/cache_core.h"

namespace dmareg::internal {

namespace {
// Invalidations of the buffer while it registers redo the registration;
// after this many the miss gives up.
constexpr int kDmaBufAttempts = 4;

bool Overlaps(Range a, Range b) { return a.begin() < b.end() && b.begin() < a.end(); }
}  // namespace

absl::StatusOr<CacheCore::DmaBufSlice> CacheCore::ResolveDmaBuf(const DmaBufMemory& m) const {
  absl::StatusOr<DmaBufInfo> info = inspect_dmabuf_ ? inspect_dmabuf_(m.fd) : InspectDmaBuf(m.fd);
  if (!info.ok()) return info.status();
  if (m.offset > info->size || m.length > info->size - m.offset) {
    return absl::InvalidArgumentError(
        absl::StrFormat("dma-buf slice [%#x, +%#x) of fd %d reaches past the end of %s (%#x bytes)",
                        m.offset, m.length, m.fd, info->id.ToString(), info->size));
  }
  // Whole pages, clipped to the buffer (whose end need not be one).
  const uint64_t page = page_size_;
  const uint64_t begin = m.offset & ~(page - 1);
  const uint64_t end = m.offset + m.length;  // <= size: no wrap
  const uint64_t rounded =
      end % page == 0 || end > UINT64_MAX - page ? end : end + (page - end % page);
  return DmaBufSlice{.id = info->id,
                     .span = *Range::FromBounds(begin, std::min(rounded, info->size))};
}

absl::StatusOr<DeviceMapping> CacheCore::RegisterDmaBufSpan(const DmaBufMemory& m,
                                                            const DmaBufSlice& s,
                                                            AccessFlags access, bool* via_alias) {
  std::vector<std::string> attempts;
  absl::StatusCode code = absl::StatusCode::kUnimplemented;
  if (dmabuf_policy_ != DmaBufPolicy::kAliasOnly) {
    absl::StatusOr<DeviceMapping> mapped = domain_->RegisterDmaBuf(
        DmaBufMemory{.fd = m.fd, .offset = s.span.begin(), .length = s.span.length()}, access);
    if (mapped.ok()) return mapped;
    attempts.emplace_back(mapped.status().message());
    code = mapped.status().code();
  }
  if (dmabuf_policy_ != DmaBufPolicy::kDmaBufOnly) {
    if (m.alias == nullptr) {
      attempts.emplace_back("no CPU alias to fall back on (the buffer's source has none)");
    } else {
      // The alias maps byte 0; the device sees the same IOVAs (offsets) as
      // an import would give, where it takes a caller's IOVA per mapping.
      const DomainCapabilities& caps = domain_->capabilities();
      HostMemory host{static_cast<const char*>(m.alias) + s.span.begin(), s.span.length()};
      if (caps.kind != DeviceKind::kVfio && caps.caller_iova) host.iova = s.span.begin();
      absl::StatusOr<DeviceMapping> mapped = domain_->RegisterHost(host, access);
      if (mapped.ok()) {
        *via_alias = true;
        return mapped;
      }
      attempts.push_back(absl::StrCat("through the CPU alias: ", mapped.status().message()));
      code = mapped.status().code();
    }
  }
  return absl::Status(
      code, absl::StrFormat("dma-buf %s [%#x, +%#x) on %s (policy %s): %s", s.id.ToString(),
                            s.span.begin(), s.span.length(), domain_->name(),
                            DmaBufPolicyName(dmabuf_policy_), absl::StrJoin(attempts, "; then ")));
}

Region* CacheCore::FindDmaBufLocked(const DmaBufSlice& slice, AccessFlags want) {
  auto it = dmabuf_index_.find(slice.id);
  if (it == dmabuf_index_.end()) return nullptr;
  for (Region* r : it->second) {
    if (r->Covers(slice.span, want) && TryRefLocked(r)) {
      r->Touch();
      hits_.Add();
      ++counters_.dmabuf_hits;
      return r;
    }
  }
  return nullptr;
}

Region* CacheCore::FindDmaBuf(const DmaBufSlice& slice, AccessFlags want) {
  if (!dmabuf_ids_unique_ || Forked()) return nullptr;
  MutexLock lock(&mu_);
  return FindDmaBufLocked(slice, want);
}

absl::StatusOr<Region*> CacheCore::AcquireDmaBuf(const DmaBufMemory& mem, AccessFlags want,
                                                 bool* created) {
  if (Forked()) return ForkedError();
  absl::StatusOr<DmaBufSlice> slice = ResolveDmaBuf(mem);
  if (!slice.ok()) return slice.status();
  if (!dmabuf_ids_unique_) return AcquireDmaBufUncached(mem, *slice, want);

  for (int attempt = 1;; ++attempt) {
    RegionList to_free;
    DmaBufSlice plan{.id = slice->id, .span = slice->span};
    AccessFlags access = want;
    bool merged = false;
    uint64_t epoch = 0;
    uint64_t reserved = 0;
    absl::Status room;
    {
      MutexLock lock(&mu_);
      if (Region* r = FindDmaBufLocked(*slice, want)) return r;
      // Merge with the buffer's mappings the slice overlaps (span and
      // rights); they retire once the new mapping is in.
      if (auto it = dmabuf_index_.find(slice->id); it != dmabuf_index_.end()) {
        for (Region* c : it->second) {
          if (!Overlaps(c->span(), slice->span)) continue;
          plan.span = plan.span.Hull(c->span());
          access = AccessUnion(access, c->access);
          merged = true;
        }
      }
      if (merged && plan.span.length() > domain_->capabilities().max_mapping_bytes) {
        plan.span = slice->span;
        access = want;
        merged = false;
      }
      room = MakeRoom(1, plan.span.length(), &to_free);
      if (room.ok()) {
        reserved = plan.span.length();
        ++reserved_regions_;
        reserved_bytes_ += reserved;
        epoch = dmabuf_epoch_;
        ++dmabuf_in_flight_;
      } else {
        ++counters_.registration_failures;
      }
    }
    FreeRegions(to_free);
    if (!room.ok()) return room;

    bool via_alias = false;
    absl::StatusOr<DeviceMapping> m = RegisterDmaBufSpan(mem, plan, access, &via_alias);
    if (!m.ok() && merged) {
      // The union may be what was refused: the slice alone may register.
      plan.span = slice->span;
      access = want;
      merged = false;
      m = RegisterDmaBufSpan(mem, plan, access, &via_alias);
    }

    Region* r = nullptr;
    absl::Status failed;
    bool retry = false;
    {
      MutexLock lock(&mu_);
      --reserved_regions_;
      reserved_bytes_ -= reserved;
      --dmabuf_in_flight_;
      const bool invalidated = m.ok() && DmaBufInvalidatedSince(epoch, plan.id, plan.span);
      if (dmabuf_in_flight_ == 0) dmabuf_recent_.clear();
      if (!m.ok()) {
        ++counters_.registration_failures;
        return m.status();
      }
      if (invalidated) {
        ++counters_.retried_registrations;
        retry = true;
      } else if ((r = NewRegion(plan.span, access, *m, 0)) != nullptr) {
        r->dmabuf = true;
        r->via_alias = via_alias;
        DmaBufIndexInsert(r, plan.id);
        ++counters_.misses;
        ++counters_.dmabuf_misses;
        if (via_alias) ++counters_.dmabuf_alias_registrations;
        if (merged) {
          RegionList superseded;
          for (Region* c : dmabuf_index_[plan.id]) {
            if (c != r && r->Covers(c->span(), c->access)) superseded.push_back(c);
          }
          RetireAll(superseded, &to_free);
        }
      } else {
        failed = PoolFullError();
      }
    }
    FreeRegions(to_free);
    if (r != nullptr) {
      if (created != nullptr) *created = true;
      return r;
    }
    DeregisterOrWarn(*m, plan.span, true);
    if (!retry) return failed;
    if (attempt >= kDmaBufAttempts) {
      return absl::AbortedError(absl::StrFormat(
          "dma-buf %s [%#x, +%#x) was invalidated during each of %d "
          "registrations on %s",
          plan.id.ToString(), plan.span.begin(), plan.span.length(), attempt, domain_->name()));
    }
  }
}

// Registered for this request only (an inode may be reused): born dead with
// the caller's reference, deregistered when it goes.
absl::StatusOr<Region*> CacheCore::AcquireDmaBufUncached(const DmaBufMemory& mem,
                                                         const DmaBufSlice& s, AccessFlags want) {
  RegionList to_free;
  absl::Status room;
  {
    MutexLock lock(&mu_);
    room = MakeRoom(1, s.span.length(), &to_free);
    if (room.ok()) {
      ++reserved_regions_;
      reserved_bytes_ += s.span.length();
    } else {
      ++counters_.registration_failures;
    }
  }
  FreeRegions(to_free);
  if (!room.ok()) return room;

  bool via_alias = false;
  absl::StatusOr<DeviceMapping> m = RegisterDmaBufSpan(mem, s, want, &via_alias);
  absl::Status full;
  {
    MutexLock lock(&mu_);
    --reserved_regions_;
    reserved_bytes_ -= s.span.length();
    if (!m.ok()) {
      ++counters_.registration_failures;
      return m.status();
    }
    if (Region* r = NewRegion(s.span, want, *m, kDead)) {
      r->dmabuf = true;
      r->via_alias = via_alias;
      ++dead_referenced_;
      ++counters_.dmabuf_registrations;
      if (via_alias) ++counters_.dmabuf_alias_registrations;
      return r;
    }
    full = PoolFullError();
  }
  DeregisterOrWarn(*m, s.span, true);
  return full;
}

void CacheCore::DmaBufIndexInsert(Region* r, DmaBufId id) {
  pool_.links(r).dmabuf = id;
  dmabuf_index_[id].push_back(r);
  ++dmabuf_indexed_;
  RingInsert(r);  // sets `indexed`
}

void CacheCore::Unindex(Region* r) {
  if (r->dmabuf) {
    auto it = dmabuf_index_.find(pool_.links(r).dmabuf);
    if (it != dmabuf_index_.end()) {
      RegionList& list = it->second;
      list.erase(std::remove(list.begin(), list.end(), r), list.end());
      if (list.empty()) dmabuf_index_.erase(it);
      --dmabuf_indexed_;
    }
  } else {
    index_.Remove(r);
  }
  RingRemove(r);
}

bool CacheCore::DmaBufInvalidatedSince(uint64_t epoch, DmaBufId id, Range span) const {
  for (const DmaBufInvalidation& inv : dmabuf_recent_) {
    if (inv.epoch > epoch && inv.id == id && (!inv.span || Overlaps(*inv.span, span))) return true;
  }
  return false;
}

void CacheCore::InvalidateDmaBuf(DmaBufId id, std::optional<Range> span) {
  RegionList to_free;
  {
    MutexLock lock(&mu_);
    ++counters_.invalidations;
    if (dmabuf_in_flight_ > 0) dmabuf_recent_.push_back({++dmabuf_epoch_, id, span});
    RegionList victims;
    if (auto it = dmabuf_index_.find(id); it != dmabuf_index_.end()) {
      for (Region* r : it->second) {
        if (!span || Overlaps(r->span(), *span)) victims.push_back(r);
      }
    }
    counters_.invalidated_regions += victims.size();
    RetireAll(victims, &to_free);
  }
  FreeRegions(to_free);
}

void CacheCore::Discard(Region* r) {
  RegionList to_free;
  {
    MutexLock lock(&mu_);
    if (r->indexed && (r->state.load(std::memory_order_relaxed) & kFlags) == 0) {
      RegionList one{r};
      RetireAll(one, &to_free);
    }
  }
  FreeRegions(to_free);
}

}  // namespace dmareg::internal
