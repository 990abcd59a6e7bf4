// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// OdpRegion: the window, the page table and link-on-demand (dmareg/odp/odp_region.h).
//
// Pages are linked a chunk (backend->ChunkBytes) at a time, so every page of
// a chunk has the same bits: a chunk is linked iff its first word has
// DMA_MAPPED, writable iff it has WRITE. The monitor's events are applied at
// the start of every Fault, as the cache applies them before a miss: wait
// for in-flight events (WaitQuiet), then unlink what the ranges since the
// cursor overlap.
//
//   auto region = OdpRegion::Create(backend, buf, len, Access::kLocalWrite).value();
//   region->Fault(buf, 4096, /*write=*/false);   // links the chunk holding it

#include "dmareg/odp/odp_region.h"

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "dmareg/pagemap.h"
#include "dmareg/range.h"
#include "odp/odp_mutex.h"

namespace dmareg {

struct OdpRegion::State {
  std::shared_ptr<OdpBackend> backend;
  std::shared_ptr<MemoryMonitor> monitor;
  bool writable = false;  // max_access lets the device write
  uint64_t page = 4096;
  Range span;         // the region's bytes (whole pages)
  uint64_t iova = 0;  // the window's first IOVA (fixed)
  uint64_t chunk = 0;
  bool read_pfns = true;
  std::optional<PagemapReader> pfns;  // set when PFNs are visible

  mutable odp_internal::Mutex mu;
  OdpWindow window ABSL_GUARDED_BY(mu);
  std::vector<uint64_t> table ABSL_GUARDED_BY(mu);  // one word per page
  // The monitor's events past those applied; reads nothing without one.
  MonitorReader events ABSL_GUARDED_BY(mu){nullptr};
  OdpStats stats ABSL_GUARDED_BY(mu);

  size_t pages_per_chunk() const { return static_cast<size_t>(chunk / page); }
  // The pages of `r`, clipped to the region ([first, last) indices).
  std::pair<size_t, size_t> PagesOf(Range r) const {
    const Range c = span.Intersect(r).RoundOutBelowLastPage(page);
    return {static_cast<size_t>((c.begin() - span.begin()) / page),
            static_cast<size_t>((c.end() - span.begin()) / page)};
  }
  absl::Status InvalidateLocked(Range r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  absl::Status ApplyEventsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  void FillLocked(size_t first, size_t last, bool write) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
};

namespace {

// [addr, addr + length) as bytes inside `span`: InvalidArgument otherwise.
absl::StatusOr<Range> Inside(Range span, const void* addr, size_t length, const char* what) {
  const uint64_t a = reinterpret_cast<uintptr_t>(addr);
  const std::optional<Range> r = Range::FromLength(a, length);
  if (length == 0 || !r) {
    return absl::InvalidArgumentError(
        absl::StrFormat("OdpRegion %s of %#x + %#x: empty or wraps", what, a, length));
  }
  if (!span.Contains(*r)) {
    return absl::InvalidArgumentError(absl::StrFormat("OdpRegion %s of %s: outside the region %s",
                                                      what, r->ToString(), span.ToString()));
  }
  return *r;
}

}  // namespace

absl::StatusOr<std::unique_ptr<OdpRegion>> OdpRegion::Create(std::shared_ptr<OdpBackend> backend,
                                                             const void* addr, size_t length,
                                                             AccessFlags max_access,
                                                             OdpOptions options) {
  if (backend == nullptr) return absl::InvalidArgumentError("OdpRegion: null backend");
  if (!kAllAccess.Has(max_access)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("OdpRegion: unknown access bits %#x", max_access.bits()));
  }
  auto s = std::make_unique<State>();
  s->page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t a = reinterpret_cast<uintptr_t>(addr);
  const std::optional<Range> span = Range::PagesHolding(a, length, s->page);
  if (addr == nullptr || length == 0 || !span) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "OdpRegion over %#x + %#x: null, empty, wrapping or in the last page", a, length));
  }
  s->span = *span;
  s->writable = max_access.Has(Access::kLocalWrite) || max_access.Has(Access::kRemoteWrite) ||
                max_access.Has(Access::kRemoteAtomic);
  s->backend = std::move(backend);
  s->read_pfns = options.read_pfns;
  if (s->read_pfns) {
    absl::StatusOr<PagemapReader> reader = PagemapReader::Open();
    if (reader.ok() && reader->pfns_visible()) s->pfns = std::move(*reader);
  }

  absl::StatusOr<OdpWindow> window =
      s->backend->ReserveWindow(span->begin(), span->length(), max_access);
  if (!window.ok()) return window.status();
  const uint64_t chunk = s->backend->ChunkBytes(*window);
  if (chunk == 0 || chunk % s->page != 0) {
    s->backend->ReleaseWindow(*window);
    return absl::InternalError(
        absl::StrFormat("OdpRegion: backend %s chose chunks of %#x bytes, "
                        "not a multiple of the page (%#x)",
                        s->backend->name(), chunk, s->page));
  }
  s->chunk = chunk;
  s->iova = window->iova;
  {
    odp_internal::MutexLock lock(&s->mu);
    s->window = *window;
    s->table = std::vector<uint64_t>(static_cast<size_t>(span->length() / s->page), 0);
  }

  if (options.monitor != nullptr) {
    s->monitor = std::move(options.monitor);
    {
      // Events from before the region concern none of its pages.
      odp_internal::MutexLock lock(&s->mu);
      s->events = MonitorReader(s->monitor);
    }
    if (absl::Status st =
            s->monitor->Watch(reinterpret_cast<const void*>(span->begin()), span->length());
        !st.ok()) {
      odp_internal::MutexLock lock(&s->mu);
      s->backend->ReleaseWindow(s->window);
      return st;
    }
  }
  return std::unique_ptr<OdpRegion>(new OdpRegion(std::move(s)));
}

OdpRegion::OdpRegion(std::unique_ptr<State> state) : state_(std::move(state)) {}

OdpRegion::~OdpRegion() {
  State& s = *state_;
  odp_internal::MutexLock lock(&s.mu);
  s.backend->ReleaseWindow(s.window);
}

absl::Status OdpRegion::State::InvalidateLocked(Range r) {
  if (!span.Overlaps(r)) return absl::OkStatus();
  const auto [first, last] = PagesOf(r);
  const size_t per = pages_per_chunk();
  absl::Status result;
  for (size_t c = first / per; c * per < last; ++c) {
    const size_t p0 = c * per;
    const size_t p1 = std::min(p0 + per, table.size());
    if ((table[p0] & kOdpDmaMapped) != 0) {
      absl::Status st = backend->Unlink(window, p0 * page, (p1 - p0) * page);
      ++stats.unlink_calls;
      if (!st.ok()) {
        result.Update(st);  // still linked: its bits stay
        continue;
      }
      stats.linked_pages -= p1 - p0;
      stats.unlinked_pages += p1 - p0;
    }
    std::fill(table.begin() + static_cast<ptrdiff_t>(p0),
              table.begin() + static_cast<ptrdiff_t>(p1), 0);
  }
  return result;
}

absl::Status OdpRegion::State::ApplyEventsLocked() {
  if (!events.Pending()) return absl::OkStatus();
  std::vector<Range> ranges;
  const bool overrun = !events.Read(&ranges);
  absl::Status result;
  if (overrun) {
    // Events were lost to us: any page may have changed.
    ++stats.invalidations;
    result.Update(InvalidateLocked(span));
  }
  bool hit = overrun;
  for (const Range& r : ranges) {
    if (!span.Overlaps(r)) continue;
    hit = true;
    ++stats.invalidations;
    result.Update(InvalidateLocked(r));
  }
  // New memory at these addresses must be watched again (a no-op for what
  // the monitor still watches).
  if (hit) {
    result.Update(monitor->Watch(reinterpret_cast<const void*>(span.begin()), span.length()));
  }
  return result;
}

void OdpRegion::State::FillLocked(size_t first, size_t last, bool write) {
  const uint64_t bits = kOdpValid | kOdpDmaMapped | (write ? kOdpWrite : 0);
  std::vector<uint64_t> words;
  if (pfns && !pfns->Read(span.begin() + first * page, last - first, &words).ok()) words.clear();
  for (size_t p = first; p < last; ++p) {
    const uint64_t w = words.empty() ? 0 : words[p - first];
    const uint64_t pfn = PagePresent(w) ? PagePfn(w) : 0;
    table[p] = bits | (pfn & kOdpPfnMask);
  }
}

absl::Status OdpRegion::Fault(const void* addr, size_t length, bool write) {
  State& s = *state_;
  absl::StatusOr<Range> r = Inside(s.span, addr, length, "fault");
  if (!r.ok()) return r.status();
  if (write && !s.writable) {
    return absl::InvalidArgumentError(
        absl::StrFormat("OdpRegion fault of %s for write: the region's maximum access is read-only",
                        r->ToString()));
  }
  odp_internal::MutexLock lock(&s.mu);
  // An unmap that has returned is in the log once this returns (it waits
  // for a copy in the reader, never for a lock of ours).
  s.events.WaitQuiet();
  ++s.stats.faults;
  if (absl::Status st = s.ApplyEventsLocked(); !st.ok()) return st;
  const auto [first, last] = s.PagesOf(*r);
  const size_t per = s.pages_per_chunk();
  for (size_t c = first / per; c * per < last; ++c) {
    const size_t p0 = c * per;
    const size_t p1 = std::min(p0 + per, s.table.size());
    const uint64_t w = s.table[p0];
    const bool mapped = (w & kOdpDmaMapped) != 0;
    if (mapped && (!write || (w & kOdpWrite) != 0)) continue;
    absl::Status st = s.backend->Link(s.window, p0 * s.page, (p1 - p0) * s.page, write);
    ++s.stats.link_calls;
    if (!st.ok()) {
      // A backend leaves a chunk it failed to link unlinked.
      std::fill(s.table.begin() + static_cast<ptrdiff_t>(p0),
                s.table.begin() + static_cast<ptrdiff_t>(p1), kOdpError);
      if (mapped) s.stats.linked_pages -= p1 - p0;
      return absl::Status(
          st.code(),
          absl::StrFormat(
              "OdpRegion link of %s at IOVA %#x (%s): %s",
              Range::FromLength(s.span.begin() + p0 * s.page, (p1 - p0) * s.page)->ToString(),
              s.iova + p0 * s.page, s.backend->name(), st.message()));
    }
    if (mapped) {
      s.stats.upgrades += p1 - p0;
    } else {
      s.stats.linked_pages += p1 - p0;
    }
    s.FillLocked(p0, p1, write);
  }
  return absl::OkStatus();
}

absl::Status OdpRegion::Invalidate(const void* addr, size_t length) {
  State& s = *state_;
  const uint64_t a = reinterpret_cast<uintptr_t>(addr);
  const std::optional<Range> r = Range::FromLength(a, length);
  if (length == 0 || !r) {
    return absl::InvalidArgumentError(
        absl::StrFormat("OdpRegion invalidate of %#x + %#x: empty or wraps", a, length));
  }
  odp_internal::MutexLock lock(&s.mu);
  ++s.stats.invalidations;
  return s.InvalidateLocked(*r);
}

uint64_t OdpRegion::iova() const { return state_->iova; }

uint64_t OdpRegion::IovaFor(const void* p) const {
  return state_->iova + (reinterpret_cast<uintptr_t>(p) - state_->span.begin());
}

uint32_t OdpRegion::lkey() const {
  odp_internal::MutexLock lock(&state_->mu);
  return state_->window.lkey;
}

uint32_t OdpRegion::rkey() const {
  odp_internal::MutexLock lock(&state_->mu);
  return state_->window.rkey;
}

size_t OdpRegion::pages() const {
  return static_cast<size_t>(state_->span.length() / state_->page);
}

uint64_t OdpRegion::page_entry(size_t i) const {
  odp_internal::MutexLock lock(&state_->mu);
  return i < state_->table.size() ? state_->table[i] : 0;
}

bool OdpRegion::pfns_visible() const { return state_->pfns.has_value(); }

size_t OdpRegion::table_bytes() const {
  odp_internal::MutexLock lock(&state_->mu);
  return state_->table.capacity() * sizeof(uint64_t);
}

OdpStats OdpRegion::stats() const {
  odp_internal::MutexLock lock(&state_->mu);
  return state_->stats;
}

const OdpBackend& OdpRegion::backend() const { return *state_->backend; }

}  // namespace dmareg
