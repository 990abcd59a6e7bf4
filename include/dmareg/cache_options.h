// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// cache_options.h: what a `RegistrationCache` is configured with
// (`CacheOptions`) and what it reports (`CacheStats`); cache.h has the cache.
//
//   auto cache = dmareg::RegistrationCache::Create(
//       domain, {.max_regions = 4096, .max_bytes = size_t{1} << 30});
//   dmareg::CacheStats s = (*cache)->stats();
//   printf("%llu hits, %llu misses\n", (unsigned long long)s.hits,
//          (unsigned long long)s.misses);

#ifndef DMAREG_CACHE_OPTIONS_H_
#define DMAREG_CACHE_OPTIONS_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "dmareg/dmabuf_id.h"
#include "dmareg/domain.h"  // Paging

#pragma GCC visibility push(default)

namespace dmareg {

class MemoryMonitor;

// Where a cache learns of unmapped memory when no monitor is given. Every
// choice but kExplicitOnly is the process's shared monitor (SharedMonitor,
// monitor.h): one per process, fed to every cache, so caches on several
// devices over the same memory all cache it.
enum class Monitoring {
  kAutomatic,     // the strongest available: hooks+userfaultfd when
                  // libdmareg_hooks is interposed, else the userfaultfd alone
                  // (logged once, naming the fix); Create fails if neither
  kExplicitOnly,  // an ExplicitMonitor of the cache's own: the application
                  // calls Invalidate (or the monitor's Notify) itself
  kHooks,         // hooks (with a userfaultfd where the kernel allows one);
                  // Create fails if libdmareg_hooks is not interposed
  kUserfaultfd,   // the userfaultfd alone, by choice (no log line); Create
                  // fails if the kernel refuses one
};

// "automatic", "explicit", "hooks", "userfaultfd" (DMAREG_MONITOR's words).
const char* MonitoringName(Monitoring monitoring);

// How a cache registers a dma-buf slice it has no mapping for.
enum class DmaBufPolicy {
  // The domain's dma-buf import (ibv_reg_dmabuf_mr); where it fails, the
  // slice's CPU alias (DmaBufMemory::alias) registered as host memory.
  kPreferDmaBuf,
  kDmaBufOnly,  // the dma-buf import or nothing
  kAliasOnly,   // the CPU alias or nothing
};
// "prefer-dmabuf", "dmabuf-only", "alias-only".
const char* DmaBufPolicyName(DmaBufPolicy policy);

struct CacheOptions {
  size_t max_regions = 0;  // 0: no limit
  size_t max_bytes = 0;    // 0: no limit
  // The monitor feeding this cache. Empty: as `monitoring` says (by default
  // the process's shared monitor, so caches over the same memory all cache
  // it). Fixed at Create; SetLimits ignores both fields.
  std::shared_ptr<MemoryMonitor> monitor{};
  Monitoring monitoring = Monitoring::kAutomatic;
  DmaBufPolicy dmabuf_policy = DmaBufPolicy::kPreferDmaBuf;
  // How the cache's mappings hold their pages, the one place paging is
  // chosen (domain.h). kOnDemand: every miss registers on demand, no monitor
  // is opened unless one is given, and Create fails where the domain has no
  // on-demand paging. kAutomatic: on-demand while the domain accepts it; its
  // first refusal (Unimplemented, EOPNOTSUPP, EINVAL) makes the cache pinned
  // for good, that request included (CacheStats::on_demand_fallbacks says
  // so; paging() then says kPinned). Other errors are the request's own.
  Paging paging = Paging::kPinned;
  // The PFN check, a debugging aid: record the page frames under every
  // pinned host registration, and re-read them on one hit in
  // `pfn_check_every` (0: never; RegistrationCache::CheckPfns checks all on
  // demand). A stale registration found on a hit is retired and the request
  // registered again. Needs PFNs in /proc/self/pagemap (CAP_SYS_ADMIN).
  uint32_t pfn_check_every = 0;
  // Tells dma-bufs apart (identity and size of an fd's buffer). Empty:
  // InspectDmaBuf. For tests, and for fds that stand for buffers some other
  // way. Fixed at Create, like the monitor.
  DmaBufInspector inspect_dmabuf{};
  // RegistrationCache::Create reads the DMAREG_* variables (config.h):
  // each applies to a field left at its default here, and a bad value fails
  // Create. false: this cache ignores the environment (a field left at its
  // default stays so).
  bool use_environment = true;
};

struct CacheStats {
  uint64_t hits = 0;
  uint64_t misses = 0;                      // requests that registered
  uint64_t evictions = 0;                   // mappings evicted to keep the limits
  uint64_t invalidations = 0;               // Invalidate() calls
  uint64_t invalidated_regions = 0;         // mappings those calls retired
  uint64_t registration_failures = 0;       // domain refused a registration
  uint64_t retried_registrations = 0;       // raced with Invalidate, redone
  uint64_t dmabuf_hits = 0;                 // of `hits`, on dma-buf slices
  uint64_t dmabuf_misses = 0;               // of `misses`, dma-buf slices registered
  uint64_t dmabuf_alias_registrations = 0;  // of those, through the CPU alias
  uint64_t dmabuf_registrations = 0;        // per request, uncached (kernel < 5.18)
  uint64_t monitor_events = 0;              // unmap events applied from the monitor
  uint64_t monitor_overruns = 0;            // fell behind the monitor's log: dropped all
  uint64_t uncached_registrations = 0;      // memory the monitor cannot watch: not cached
  uint64_t on_demand_registrations = 0;     // of `misses`, registered with on-demand paging
  uint64_t on_demand_fallbacks = 0;         // kAutomatic: the domain refused on-demand (0 or 1)
  uint64_t live_regions = 0;                // mappings held on the device now
  uint64_t registered_bytes = 0;            // bytes those cover
  uint64_t dmabuf_regions = 0;              // of live_regions, dma-buf slices
  uint64_t dmabuf_bytes = 0;                // bytes those cover
  uint64_t referenced_regions = 0;          // of them, with a handle out
  uint64_t pfn_checks = 0;                  // regions whose frames were re-read (PFN check)
  uint64_t pfn_stale = 0;                   // of them, found replaced and retired
};

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_CACHE_OPTIONS_H_
