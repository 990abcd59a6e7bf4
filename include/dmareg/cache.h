// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// cache.h: the registration cache, dmareg's front door.
//
// `RegistrationCache` sits in front of one `Domain` and answers "give me a
// device mapping for [addr, addr + len) with these rights". The first request
// registers through the domain (tens of microseconds to milliseconds in the
// kernel); later requests inside an already registered span are hits that
// take no lock and cost nanoseconds.
//
//   std::shared_ptr<dmareg::Domain> domain = ...;   // e.g. VerbsDomain::Open
//   auto cache = dmareg::RegistrationCache::Create(domain, {.max_regions = 4096});
//   if (!cache.ok()) return cache.status();
//
//   absl::StatusOr<dmareg::Registration> reg = (*cache)->Acquire(
//       dmareg::HostMemory{buf, len}, dmareg::Access::kLocalWrite);
//   ...post work requests with reg->lkey() / reg->rkey() / reg->IovaFor(buf)...
//   // the handle's destructor drops the reference.
//
//   // munmap/mremap/madvise of cached memory is noticed by the cache's
//   // monitor (userfaultfd by default, see monitor.h). Memory changed in a
//   // way no monitor sees (a recycled custom-allocator block, a truncated
//   // shared file):
//   (*cache)->Invalidate(p, n);
//
// Guarantees
// - Every returned handle covers the request (spans are rounded out to pages)
//   with at least the asked access (see `AccessSatisfies`).
// - From the moment `Invalidate(addr, len)` returns, no `Acquire` (one that
//   starts after it returned) hands out a mapping overlapping that range; the
//   old mappings are deregistered when their last handle goes away, never
//   under a holder's feet. A registration that was in flight while the range
//   was invalidated is discarded and redone.
// - Asking for more access than a cached span has registers the union (span
//   and rights) and retires the old mapping once unreferenced.
// - Limits (`max_regions`, `max_bytes`) are kept by evicting unreferenced
//   mappings, least recently used first (CLOCK: a hit marks a mapping used, so
//   a mapping is evicted only after a full sweep found it unused). Referenced
//   mappings are never evicted; when nothing can be evicted the request fails
//   with ResourceExhausted and nothing is lost.
// - Unmapped memory: once munmap, mremap or madvise(MADV_DONTNEED) of a
//   cached range has returned, no Acquire returns a mapping over the old
//   pages (the monitor, see monitor.h, reports it; the next Acquire applies
//   it). Memory the monitor cannot watch is registered per request instead
//   of cached.
// - Fork: a child never uses its parent's mappings. In a forked child every
//   Acquire fails with FailedPrecondition, and dropping inherited handles or
//   the cache makes no device call (the child shares the parent's verbs
//   descriptors: a deregistration would destroy the parent's mapping). The
//   parent is unaffected. A child that needs RDMA opens its own domain and
//   cache.
// - dma-buf memory is cached by the buffer's identity (dmabuf_id.h: the
//   dma-buf file's device and inode, never the fd number) and the slice's
//   pages: two fds of one buffer share a mapping, a new buffer that got a
//   recycled fd number is a miss. Sub-slices hit, more access merges, the
//   limits and eviction count dma-buf mappings like host ones. A cached
//   mapping keeps its buffer alive (the kernel's MR holds a reference), so
//   the caller may close its fd; Invalidate, eviction or Flush let it go.
//   Hits on dma-buf slices take no lock, like host hits: by fd they cost an
//   fstat plus a host hit, on an ImportedDmaBuf (dmabuf_id.h) no system
//   call at all. Where the kernel may reuse a dma-buf's inode (before Linux
//   5.18) dma-bufs are registered per request and deregistered with their
//   handle.
// - A dma-buf the domain cannot import is registered through the slice's CPU
//   alias where it has one, as `CacheOptions::dmabuf_policy` allows; a
//   failure names every attempt with its errno.
//
// Thread safety: every method may be called from any thread. Hits take no
// lock and, on Linux with membarrier(2), no atomic read-modify-write either
// (a per-thread reference count; elsewhere one compare-and-swap); misses take
// a mutex that no hit needs, and never hold it across a device call (but
// for domains whose registrations make no system call,
// DomainCapabilities::fast_registration, where one critical section is
// cheaper than two).
//
// Invalidation is one family of calls, Invalidate: of host memory, of a
// dma-buf slice, of a whole dma-buf. (A monitor's Notify, monitor.h, tells
// every cache fed by it at once.)

#ifndef DMAREG_CACHE_H_
#define DMAREG_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dmareg/access.h"
#include "dmareg/cache_options.h"  // IWYU pragma: export
#include "dmareg/dmabuf_id.h"
#include "dmareg/domain.h"
#include "dmareg/memory.h"
#include "dmareg/monitor.h"
#include "dmareg/registration.h"

#pragma GCC visibility push(default)

namespace dmareg {

namespace internal {
class CacheCore;
struct SetAccess;
}  // namespace internal

// A registration whose pages are no longer the ones the process sees
// (RegistrationCache::CheckPfns).
struct StaleRegistration {
  uintptr_t addr = 0;  // the registered span
  size_t length = 0;
  uint32_t lkey = 0;
  uintptr_t first_stale_page = 0;  // the first page whose frame changed
};
struct PfnReport {
  uint64_t checked_regions = 0;
  uint64_t checked_pages = 0;
  std::vector<StaleRegistration> stale{};  // retired by the check
};

class RegistrationCache {
 public:
  // InvalidArgument if `domain` is null; FailedPrecondition if monitoring is
  // automatic and the kernel refuses a userfaultfd (the message says why).
  static absl::StatusOr<std::unique_ptr<RegistrationCache>> Create(std::shared_ptr<Domain> domain,
                                                                   CacheOptions options = {});

  // Drops every unreferenced mapping now; referenced ones go with their
  // last handle.
  ~RegistrationCache();
  RegistrationCache(const RegistrationCache&) = delete;
  RegistrationCache& operator=(const RegistrationCache&) = delete;

  absl::StatusOr<Registration> Acquire(const HostMemory& memory, AccessFlags access);
  absl::StatusOr<Registration> Acquire(const void* addr, size_t length, AccessFlags access) {
    return Acquire(HostMemory{addr, length}, access);
  }
  // A slice of a dma-buf. `memory.fd` is the caller's and may be closed
  // once this returns. InvalidArgument if the fd is not a dma-buf (naming
  // what it is) or the slice reaches past the buffer's end. One fstat per
  // call, hit or miss.
  absl::StatusOr<Registration> Acquire(const DmaBufMemory& memory, AccessFlags access);
  // [offset, offset + length) of an imported dma-buf: no system call on a
  // hit. InvalidArgument for a zero length or a slice past the buffer's end.
  absl::StatusOr<Registration> Acquire(const ImportedDmaBuf& buffer, uint64_t offset, size_t length,
                                       AccessFlags access);

  // Retires every cached mapping overlapping [addr, addr + length).
  absl::Status Invalidate(const void* addr, size_t length);
  // Retires the cached mappings of that dma-buf slice.
  absl::Status Invalidate(const DmaBufMemory& memory);
  // Retires every cached mapping of the buffer (its fds may all be closed:
  // ImportedDmaBuf::id(), InspectDmaBuf(fd)->id).
  void Invalidate(DmaBufId buffer);

  // New limits; evicts unreferenced mappings until inside them. Returns
  // ResourceExhausted (with the limits applied) if referenced mappings alone
  // exceed them.
  absl::Status SetLimits(CacheOptions options);
  CacheOptions limits() const;

  // Evicts every unreferenced mapping.
  void Flush();

  // The PFN check, on demand: re-reads the page frames under every cached
  // pinned host registration and retires those that no longer match what
  // the process has mapped (memory replaced behind every monitor's back: a
  // shared file truncated and refilled, a custom allocator's reuse).
  // FailedPrecondition where /proc/self/pagemap hides PFNs, or when the
  // cache was created without `pfn_check_every` (nothing was recorded).
  absl::StatusOr<PfnReport> CheckPfns();
  // The paging in effect (kAutomatic resolves to one of the others on the
  // first registration).
  Paging paging() const;

  // Applies the monitor's pending unmap events now. Acquire does it itself;
  // an application that stops acquiring may call it to let go of the pages
  // that mappings of unmapped memory still pin.
  void ApplyMonitorEvents();
  MemoryMonitor& monitor() const;

  CacheStats stats() const;
  Domain& domain() const;

 private:
  friend struct internal::SetAccess;  // registration_set.cc
  explicit RegistrationCache(internal::CacheCore* core);
  internal::CacheCore* core_;  // owned jointly with outstanding mappings
};

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_CACHE_H_
