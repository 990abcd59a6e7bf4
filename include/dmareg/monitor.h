// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// monitor.h: how a registration cache learns that registered memory was
// unmapped or replaced.
//
// A device mapping pins the physical pages that were mapped when it was
// made. If the application then unmaps that memory (munmap, free() of a
// large block, mremap, madvise(MADV_DONTNEED)) and new memory appears at the
// same addresses, a cached mapping would point the device at the old pages:
// a silent stale translation. A `MemoryMonitor` tells the cache about such
// events so it never hands one out.
//
//   // By default every cache of the process is fed by one shared monitor
//   // (a range can be watched by one userfaultfd only); nothing to write:
//   auto cache = dmareg::RegistrationCache::Create(domain, {.max_regions = 4096});
//   // The same monitor, for code of one's own (MonitorReader below):
//   auto monitor = dmareg::SharedMonitor();
//   if (!monitor.ok()) return monitor.status();   // says why (kernel, sysctl)
//
//   // A custom allocator recycling memory the kernel cannot see:
//   (*monitor)->Notify(block, block_size);        // or dmareg_monitor_notify()
//
// The guarantee, per monitor kind. "Covered" means: no `Acquire` of a cache
// fed by the monitor returns a mapping over the old pages. Mappings already
// handed out stay valid for their holders (the device keeps the old pages)
// and are deregistered with their last handle.
//
// - `HooksMonitor` ("hooks"; the default when the program links or preloads
//   libdmareg_hooks): covered from the moment the unmapping call STARTS.
//   Its hooks publish the range inside munmap, mremap, madvise(DONTNEED,
//   FREE, REMOVE), mmap(MAP_FIXED), shmat(SHM_REMAP), shmdt, brk/sbrk
//   shrinking, malloc_trim, and free()/realloc() of glibc's mmap-backed
//   blocks, before the call proceeds; so no thread can get those addresses
//   back and acquire them first, and shmat(SHM_REMAP) is seen. It does not
//   see raw system calls, glibc-internal calls other than those (a
//   non-main arena returning pages with madvise inside free()), other
//   allocators' unmaps that bypass the dynamic linker, nor file truncation;
//   brk trimming inside free() is published when free() returns. Composed
//   with a userfaultfd monitor (the default where the kernel allows one),
//   those are covered as that monitor covers them.
// - `UserfaultfdMonitor` (the default without the hooks): covered once the
//   unmapping call has RETURNED (in that thread, or in one that synchronised
//   with it). The
//   kernel frees the addresses before it delivers the event, so a thread that
//   maps new memory at those addresses while the munmap is in flight and
//   acquires it at once may be served the old mapping. Ordinary programs
//   meet this window: glibc's free() of a large block calls munmap with no
//   lock held, so another thread's malloc may get the same addresses and
//   acquire them while that munmap is in flight (tests reproduce it). It
//   watches every range the cache registers, in write-protect mode with no
//   page ever write-protected (the application's accesses take no extra
//   fault), and sees munmap (also glibc's own inside free(), brk trimming,
//   mmap(MAP_FIXED) over a range), mremap and madvise(DONTNEED/FREE/REMOVE)
//   of anonymous and shared memory (memfd, MAP_SHARED|MAP_ANONYMOUS;
//   hugetlbfs untested). It cannot watch regular files' page cache or device
//   memory: such ranges are registered per request and never cached. It does
//   not see a shared file truncated or hole-punched, nor shmat(SHM_REMAP)
//   over watched memory (the kernel maps the segment without an unmap event;
//   a test asserts it stays unseen, so a kernel that starts reporting it is
//   noticed).
// - `ExplicitMonitor`: covered once `Notify` of the range has returned; it
//   sees nothing else. For custom allocators and for caches over fake or
//   device memory.
// - No monitor at all, with on-demand paging (CacheOptions::paging, where
//   the NIC has ODP): nothing to cover. The device follows the process's
//   page tables and the kernel invalidates its translations before the pages
//   are freed, so there is no window and shmat(SHM_REMAP) is followed too.
// - Whatever the monitor, the PFN check (CacheOptions::pfn_check_every,
//   RegistrationCache::CheckPfns) is a debugging switch that finds cached
//   pinned mappings whose pages were replaced behind every monitor's back.
//
// The default (`CacheOptions::monitor` left empty, `monitoring` automatic)
// is the process's shared monitor (SharedMonitor below): the hooks monitor
// composed with a userfaultfd when libdmareg_hooks is interposed (programs
// built against the installed package link it), the userfaultfd monitor
// alone otherwise.
//
// Thread safety: every method may be called from any thread. Publishing an
// event (the hooks, the userfaultfd reader, `Notify` of a valid range) is
// lock-free: it never waits for a device, a cache's lock or another
// publisher, so it may run under any lock of the caller's (an allocator's)
// and inside a signal handler.

#ifndef DMAREG_MONITOR_H_
#define DMAREG_MONITOR_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "dmareg/range.h"

#pragma GCC visibility push(default)

struct dmareg_monitor;  // C handle, see dmareg/c/dmareg.h

namespace dmareg {

class MemoryMonitor;
namespace internal {
class InvalidationLog;
class MonitorAccess;  // the library's own way into a monitor (src/monitor/monitor_access.h)
}  // namespace internal

// What a monitor learns by itself (without `Notify`).
struct MonitorCoverage {
  bool munmap = false;            // munmap, brk shrinking, mmap(MAP_FIXED) over a range
  bool mremap = false;            // the old range of an mremap that moves
  bool madvise_dontneed = false;  // MADV_DONTNEED, MADV_FREE, MADV_REMOVE
  bool anonymous = false;         // private anonymous memory (heap, mmap)
  bool shared_memory = false;     // shmem: memfd, MAP_SHARED|MAP_ANONYMOUS, /dev/shm
  bool file_backed = false;       // regular files' page cache
};

class MemoryMonitor {
 public:
  virtual ~MemoryMonitor();
  MemoryMonitor(const MemoryMonitor&) = delete;
  MemoryMonitor& operator=(const MemoryMonitor&) = delete;

  virtual absl::string_view name() const = 0;
  virtual MonitorCoverage coverage() const = 0;

  // Report unmaps of [addr, addr + length) (page-aligned) from now on. A
  // cache calls it before each registration; an error means unmaps there
  // would go unseen, and the cache then registers that request without
  // caching it.
  virtual absl::Status Watch(const void* addr, size_t length) = 0;

  // [addr, addr + length) was unmapped or its pages replaced. Call it after
  // the change and before the range is used again. InvalidArgument for a
  // zero or wrapping length.
  absl::Status Notify(const void* addr, size_t length);

  // Events published so far, from every source.
  uint64_t events() const;

  // The C handle of this monitor (lives as long as it does).
  dmareg_monitor* c_handle();

 protected:
  MemoryMonitor();

  // For monitors that learn of events asynchronously: bracket every moment
  // at which the kernel may let an unmapping thread go before its range is
  // published (BeginEvents before reading events, EndEvents after
  // publishing them). Caches wait for the bracket to close before serving.
  void BeginEvents();
  void EndEvents();
  // `r` (bytes, not empty) changed. Never blocks on anything but a short copy.
  void Publish(Range r);

 private:
  friend class internal::MonitorAccess;
  std::shared_ptr<internal::InvalidationLog> log_;

  friend class HooksMonitor;  // shares a userfaultfd monitor's log
  explicit MemoryMonitor(std::shared_ptr<internal::InvalidationLog> log);
};

// Learns only what it is told (`Notify`); every range is watchable.
class ExplicitMonitor final : public MemoryMonitor {
 public:
  static std::shared_ptr<ExplicitMonitor> Create();
  // Out of line: the class's key function, so its vtable and type info are
  // the library's, exported once (not copies each user may drop).
  ~ExplicitMonitor() override;

  absl::string_view name() const override { return "explicit"; }
  MonitorCoverage coverage() const override { return {}; }
  absl::Status Watch(const void*, size_t) override { return absl::OkStatus(); }

 private:
  ExplicitMonitor() = default;
};

// Learns of unmaps from the kernel through a userfaultfd and one thread
// that reads its events and only publishes them (it takes no lock that an
// unmapping thread could hold, and allocates nothing).
class UserfaultfdMonitor final : public MemoryMonitor {
 public:
  // Opens the userfaultfd (user-mode-only when unprivileged, which Linux
  // 5.11+ allows with vm.unprivileged_userfaultfd=0) and starts the reader.
  // FailedPrecondition naming the reason if the kernel refuses.
  static absl::StatusOr<std::shared_ptr<UserfaultfdMonitor>> Create();
  ~UserfaultfdMonitor() override;

  absl::string_view name() const override { return "userfaultfd"; }
  MonitorCoverage coverage() const override;
  // UFFDIO_REGISTER in write-protect mode, of the whole mappings holding
  // the range (registering part of a mapping would split it, and the
  // application's mremap of it would then fail). InvalidArgument for memory
  // it cannot watch (file page cache, device memory) or that is not mapped,
  // FailedPrecondition if another userfaultfd owns the range.
  absl::Status Watch(const void* addr, size_t length) override;

  // Ranges registered with the kernel so far (successful Watch calls).
  uint64_t watches() const;

 private:
  struct State;  // the descriptors, the reader thread, the watched set
  friend class internal::MonitorAccess;
  explicit UserfaultfdMonitor(std::unique_ptr<State> state);
  void ReadLoop();
  void ReadEvents();  // one read(), published
  // Drops what the log's new events touch from the watched set.
  void PruneWatched();
  std::unique_ptr<State> state_;
};

// Reads one monitor's events at its own pace, as a cache does, for code that
// keeps device mappings of its own and must drop those over unmapped memory
// (the on-demand IOVA cache, odp/odp_region.h; a cache of your own). It
// starts at the monitor's newest event: earlier ones concern nothing it has.
//
//   dmareg::MonitorReader reader(monitor);
//   ... map [p, p + n), after monitor->Watch(p, n) ...
//   reader.WaitQuiet();               // an unmap that returned is now readable
//   std::vector<dmareg::Range> gone;
//   if (!reader.Read(&gone)) DropEverything();   // fell behind: overrun
//   for (dmareg::Range r : gone) DropOverlapping(r);
//
// Not thread-safe (one reader, one position); any number of readers may
// follow one monitor.
class MonitorReader {
 public:
  // InvalidArgument-free: a null monitor reads nothing, ever.
  explicit MonitorReader(std::shared_ptr<MemoryMonitor> monitor);
  ~MonitorReader();
  MonitorReader(MonitorReader&&) noexcept;
  MonitorReader& operator=(MonitorReader&&) noexcept;

  // True if events past this reader's position exist or may be about to
  // (two loads of a line written only when events arrive: for hot paths).
  bool Pending() const;
  // Appends the ranges (bytes) published since the last Read to `out` and
  // moves past them. False, appending nothing, when more than the log's
  // capacity arrived meanwhile (an overrun): the caller must then treat
  // everything it maps as changed.
  bool Read(std::vector<Range>* out);
  // Returns once no asynchronous producer is between taking an event from
  // the kernel and publishing it; call it before a Read that must see every
  // unmap that has already returned (see the guarantees above).
  void WaitQuiet() const;

  MemoryMonitor* monitor() const { return monitor_.get(); }

 private:
  std::shared_ptr<MemoryMonitor> monitor_;
  uint64_t cursor_ = 0;
};

// Whether a HooksMonitor also opens a userfaultfd monitor feeding the same
// log (for what the hooks cannot see: glibc's heap trimming inside free(),
// raw system calls).
enum class HooksUserfaultfd {
  kIfAvailable,  // when the kernel allows one; hooks alone otherwise
  kRequired,     // Create fails if the kernel refuses one
  kNever,        // hooks alone
};

struct HooksMonitorOptions {
  HooksUserfaultfd userfaultfd = HooksUserfaultfd::kIfAvailable;
};

// Learns of unmaps from libdmareg_hooks (dmareg/c/hooks.h), inside the
// unmapping call and BEFORE it proceeds: munmap, mremap, madvise(DONTNEED,
// FREE, REMOVE), mmap(MAP_FIXED), shmat(SHM_REMAP), shmdt, brk/sbrk
// shrinking, and free()/realloc() of glibc's mmap-backed chunks. So no thread
// can map new memory at those addresses before every cache fed by this
// monitor has the range: the window of asynchronous monitors is gone for
// what the hooks see.
//
//   // The program links libdmareg_hooks (or runs with
//   // LD_PRELOAD=libdmareg_hooks.so); then:
//   auto monitor = dmareg::HooksMonitor::Create();
//   if (!monitor.ok()) return monitor.status();   // e.g. the library is absent
//   auto cache = dmareg::RegistrationCache::Create(domain, {.monitor = *monitor});
//
// The hooks publish from inside the hooked call without a lock or an
// allocation (InvalidationLog::Publish is lock-free), so they are safe in
// signal handlers, after fork and under any lock the caller holds. A range
// outside everything this monitor was asked to Watch is dropped at once.
class HooksMonitor final : public MemoryMonitor {
 public:
  // Subscribes to libdmareg_hooks, found in the process at run time.
  // FailedPrecondition if it is not loaded, or loaded without interposing
  // (dlopen'ed: its munmap is not the one the program calls), or (with
  // kRequired) if the kernel refuses a userfaultfd.
  static absl::StatusOr<std::shared_ptr<HooksMonitor>> Create(HooksMonitorOptions options = {});
  ~HooksMonitor() override;

  // "hooks", or "hooks+userfaultfd" when composed.
  absl::string_view name() const override;
  MonitorCoverage coverage() const override;
  // Widens the span the hooks report to include [addr, addr + length), then
  // asks the userfaultfd monitor, when composed (its answer decides whether
  // the range may be cached, as for a UserfaultfdMonitor alone).
  absl::Status Watch(const void* addr, size_t length) override;

  // The composed userfaultfd monitor, or null.
  const std::shared_ptr<UserfaultfdMonitor>& userfaultfd() const { return uffd_; }
  // Ranges the hooks published into the log so far (after the filter).
  uint64_t hook_events() const;

 private:
  struct State;  // what the hooks' sink reads: the log, the watched span
  HooksMonitor(std::shared_ptr<UserfaultfdMonitor> uffd, std::shared_ptr<State> state);
  std::shared_ptr<UserfaultfdMonitor> uffd_;
  std::shared_ptr<State> state_;
};

// The process's shared monitor: what every cache with no monitor of its own
// and Monitoring::kAutomatic (the default), kHooks or kUserfaultfd is fed by.
// A HooksMonitor (composed with a userfaultfd where the kernel allows one)
// when libdmareg_hooks is interposed, a UserfaultfdMonitor otherwise. Made
// on the first call, alive while anything holds it (a later call after the
// last holder let go makes a new one); a child of fork gets its own.
// FailedPrecondition naming both reasons when neither can be made.
absl::StatusOr<std::shared_ptr<MemoryMonitor>> SharedMonitor();

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_MONITOR_H_
