// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The PFN check: a pinned registration holds the page frames of the moment
// it was made; if the process's pages change behind every monitor's back
// (a shared file truncated and refilled, a custom allocator's reuse), the
// device keeps the old frames. With `pfn_check_every` set, each pinned host
// registration records its frames from /proc/self/pagemap; CheckPfns re-reads
// all of them and one hit in `pfn_check_every` re-reads its region's, and a
// region whose frames changed is retired as Invalidate would.
#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "core/cache_core.h"
#include "runtime/log.h"

namespace dmareg::internal {

void CacheCore::InitPfnCheck() {
  if (pfn_check_every_ == 0) {
    pfns_unavailable_ = absl::FailedPreconditionError(absl::StrFormat(
        "registration cache on %s was created without pfn_check_every: no page frames were "
        "recorded",
        domain_->name()));
    return;
  }
  absl::StatusOr<PagemapReader> pm = PagemapReader::Open();
  if (!pm.ok()) {
    pfns_unavailable_ = absl::FailedPreconditionError(absl::StrFormat(
        "the PFN check on %s cannot read page frames: %s", domain_->name(), pm.status().message()));
    return;
  }
  if (!pm->pfns_visible()) {
    pfns_unavailable_ = absl::FailedPreconditionError(absl::StrFormat(
        "the PFN check on %s cannot read page frames: %s", domain_->name(), pm->hidden_reason()));
  }
  pagemap_.emplace(*std::move(pm));
}

std::vector<uint64_t> CacheCore::ReadPfnsAfterRegistering(const MissPlan& plan) const {
  std::vector<uint64_t> frames;
  if (!PfnsReadable()) return frames;
  // A failed read (memory unmapped meanwhile: the monitor will say so)
  // leaves the region unrecorded, never checked.
  if (!pagemap_->ReadFrames(plan.span.begin(), plan.span.length() / page_size_, &frames).ok()) {
    frames.clear();
  }
  return frames;
}

void CacheCore::RecordPfnsLocked(const Region* r, std::vector<uint64_t> frames) {
  if (!r->indexed || frames.size() != r->length / page_size_) return;
  pfns_[r->index] = std::move(frames);
}

ptrdiff_t CacheCore::FirstStalePage(const Region* r, const std::vector<uint64_t>& now) const {
  auto it = pfns_.find(r->index);
  if (it == pfns_.end() || it->second.size() != now.size()) return -1;
  const std::vector<uint64_t>& then = it->second;
  for (size_t i = 0; i < then.size(); ++i) {
    // A page absent when recorded was not pinned (a fake domain's): no claim.
    if (PagePresent(then[i]) && then[i] != now[i]) return static_cast<ptrdiff_t>(i);
  }
  return -1;
}

Region* CacheCore::SampledPfnCheck(Region* r) {
  if (r == nullptr) return nullptr;
  // Hits 1..N-1 pass, the Nth is checked.
  if ((pfn_hits_.fetch_add(1, std::memory_order_relaxed) + 1) % pfn_check_every_ != 0) return r;
  if (!PfnsReadable()) return r;
  // Our reference keeps r's fields and its record in place.
  std::vector<uint64_t> now;
  if (!pagemap_->ReadFrames(r->addr, r->length / page_size_, &now).ok()) return r;
  RegionList to_free;
  {
    MutexLock lock(&mu_);
    if (pfns_.find(r->index) == pfns_.end()) return r;  // not recorded: not checked
    ++counters_.pfn_checks;
    const ptrdiff_t page = FirstStalePage(r, now);
    if (page < 0) return r;
    ++counters_.pfn_stale;
    LogLater(LogLevel::kWarn,
             "cache on %s: PFN check: [%#x, +%#x) (lkey %#x) is stale from page %#x: its pages "
             "changed behind the monitor; retired",
             domain_->name(), r->addr, r->length, r->lkey,
             r->addr + static_cast<size_t>(page) * page_size_);
    if (r->indexed) RetireAll({r}, &to_free);  // else already retired
  }
  // Not handed out: the request registers anew.
  FreeRegions(to_free);
  Release(r);
  return nullptr;
}

absl::StatusOr<PfnReport> CacheCore::CheckPfns() {
  if (!pfns_unavailable_.ok()) return pfns_unavailable_;
  if (absl::Status s = CatchUp(); !s.ok()) return s;  // and refused in a forked child
  PfnReport report;
  RegionList to_free;
  {
    // A debugging aid: the reads happen under mu_, which only misses wait on.
    MutexLock lock(&mu_);
    RegionList stale;
    std::vector<uint64_t> now;
    ForEachIndexed([&](Region* r) {
      mu_.AssertHeld();
      if (pfns_.find(r->index) == pfns_.end()) return;  // dma-buf, on-demand, unrecorded
      if (!pagemap_->ReadFrames(r->addr, r->length / page_size_, &now).ok()) return;
      ++report.checked_regions;
      report.checked_pages += now.size();
      const ptrdiff_t page = FirstStalePage(r, now);
      if (page < 0) return;
      LogLater(LogLevel::kWarn,
               "cache on %s: PFN check: [%#x, +%#x) (lkey %#x) is stale from page %#x: its "
               "pages changed behind the monitor; retired",
               domain_->name(), r->addr, r->length, r->lkey,
               r->addr + static_cast<size_t>(page) * page_size_);
      report.stale.push_back(StaleRegistration{
          .addr = r->addr,
          .length = r->length,
          .lkey = r->lkey,
          .first_stale_page = r->addr + static_cast<size_t>(page) * page_size_,
      });
      stale.push_back(r);
    });
    counters_.pfn_checks += report.checked_regions;
    counters_.pfn_stale += stale.size();
    RetireAll(stale, &to_free);
  }
  FreeRegions(to_free);
  std::sort(report.stale.begin(), report.stale.end(),
            [](const StaleRegistration& a, const StaleRegistration& b) { return a.addr < b.addr; });
  return report;
}

}  // namespace dmareg::internal
