// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// What is particular to dma-buf slices in the cache; the rest (hits, the
// miss pipeline, limits, eviction) is the host path's own. A slice is keyed
// by the buffer's identity (dmabuf_id.h) and its whole pages, in a space of
// its own in the index; a miss registers it as the cache's DmaBufPolicy
// says: the domain's import, then the buffer's CPU alias.
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

absl::Status CacheCore::SlicePastEnd(const DmaBufId& id, uint64_t size, uint64_t offset,
                                     uint64_t length, int fd) {
  return absl::InvalidArgumentError(
      absl::StrFormat("dma-buf slice [%#x, +%#x) of fd %d reaches past the end of %s (%#x bytes)",
                      offset, length, fd, id.ToString(), size));
}

absl::StatusOr<DmaBufKey> CacheCore::DmaBufKeyOf(const DmaBufId& id, uint64_t size, uint64_t offset,
                                                 uint64_t length, int fd) const {
  if (!SliceInside(size, offset, length)) return SlicePastEnd(id, size, offset, length, fd);
  return SliceKey(id, size, offset, length);
}

absl::StatusOr<DmaBufKey> CacheCore::ResolveDmaBuf(const DmaBufMemory& m) const {
  absl::StatusOr<DmaBufInfo> info = InspectFd(m.fd);
  if (!info.ok()) return info.status();
  return DmaBufKeyOf(info->id, info->size, m.offset, m.length, m.fd);
}

absl::StatusOr<Region*> CacheCore::AcquireDmaBuf(const DmaBufKey& key, const DmaBufSource& source,
                                                 AccessFlags want, bool* created) {
  if (Forked()) return ForkedError();
  if (lost_->load(std::memory_order_relaxed)) [[unlikely]] {
    if (absl::Status s = CatchUp(); !s.ok()) return s;
  }
  if (thread_refs_.Mine() == nullptr && dmabuf_ids_unique_) {
    // No table (yet): the shared count, or a table made on this first hit.
    if (Region* hit = FastHitShared(key.space, key.span, want, &key.id)) return hit;
  }
  return Miss(MissKey{.space = key.space, .request = key.span, .id = &key.id, .source = &source},
              want, created);
}

absl::StatusOr<DeviceMapping> CacheCore::RegisterDmaBufPlanned(MissPlan& plan) {
  const DmaBufSource& src = *plan.key->source;
  std::vector<std::string> attempts;
  absl::StatusCode code = absl::StatusCode::kUnimplemented;
  plan.via_alias = false;
  if (dmabuf_policy_ != DmaBufPolicy::kAliasOnly) {
    absl::StatusOr<DeviceMapping> mapped = domain_->RegisterDmaBuf(
        DmaBufMemory{.fd = src.fd, .offset = plan.span.begin(), .length = plan.span.length()},
        plan.access);
    if (mapped.ok()) return mapped;
    attempts.emplace_back(mapped.status().message());
    code = mapped.status().code();
  }
  if (dmabuf_policy_ != DmaBufPolicy::kDmaBufOnly) {
    if (src.alias == nullptr) {
      attempts.emplace_back("no CPU alias to fall back on (the buffer's source has none)");
    } else {
      // The alias maps byte 0. Where each mapping is reached through its own
      // keys, the device sees the same IOVAs (offsets) as an import would
      // give; in one IOVA space (an IOMMU's) offsets of different buffers
      // would collide, so the domain picks.
      const DomainCapabilities& caps = domain_->capabilities();
      HostMemory host{static_cast<const char*>(src.alias) + plan.span.begin(), plan.span.length()};
      if (!caps.one_iova_space && caps.caller_iova) host.iova = plan.span.begin();
      absl::StatusOr<DeviceMapping> mapped = domain_->RegisterHost(host, plan.access);
      if (mapped.ok()) {
        plan.via_alias = true;
        return mapped;
      }
      attempts.push_back(absl::StrCat("through the CPU alias: ", mapped.status().message()));
      code = mapped.status().code();
    }
  }
  return absl::Status(
      code,
      absl::StrFormat("dma-buf %s [%#x, +%#x) on %s (policy %s): %s", plan.key->id->ToString(),
                      plan.span.begin(), plan.span.length(), domain_->name(),
                      DmaBufPolicyName(dmabuf_policy_), absl::StrJoin(attempts, "; then ")));
}

void CacheCore::IndexDmaBufLocked(Region* r, const DmaBufId& id) {
  index_.Insert(r, RangeIndex::SpaceOf(id));
  dmabuf_regions_[id].push_back(r);
}

void CacheCore::Unindex(Region* r) {
  if (r->dmabuf) {
    const DmaBufId id = pool_.DmaBufIdOf(r);
    index_.Remove(r, RangeIndex::SpaceOf(id));
    auto it = dmabuf_regions_.find(id);
    if (it != dmabuf_regions_.end()) {
      RegionList& list = it->second;
      list.erase(std::remove(list.begin(), list.end(), r), list.end());
      if (list.empty()) dmabuf_regions_.erase(it);
    }
  } else {
    index_.Remove(r, RangeIndex::kHostSpace);
  }
  RingRemove(r);
}

void CacheCore::InvalidateDmaBuf(DmaBufId id, std::optional<Range> span) {
  RegionList to_free;
  size_t freed = 0;
  {
    MutexLock lock(&mu_);
    ++counters_.invalidations;
    const Range range = span.value_or(*Range::FromBounds(0, UINT64_MAX));
    // For misses of this buffer in flight (the same check as a host span's).
    recent_.Record(range, RangeIndex::SpaceOf(id));
    RegionList victims;
    if (auto it = dmabuf_regions_.find(id); it != dmabuf_regions_.end()) {
      for (Region* r : it->second) {
        if (r->span().Overlaps(range)) victims.push_back(r);
      }
    }
    counters_.invalidated_regions += victims.size();
    RetireAll(victims, &to_free);
    if (fast_registration_) freed = FreeRegionsLocked(to_free);
  }
  DropRefs(freed);
  FreeRegions(to_free);
}

void CacheCore::Discard(Region* r) {
  RegionList to_free;
  {
    MutexLock lock(&mu_);
    if (r->indexed && (r->state.load(std::memory_order_relaxed) & kFlags) == 0) {
      RetireAll({r}, &to_free);
    }
  }
  FreeRegions(to_free);
}

}  // namespace dmareg::internal
