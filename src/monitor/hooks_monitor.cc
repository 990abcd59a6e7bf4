// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// HooksMonitor: subscribes to libdmareg_hooks, found at run time (the core
// never links it: a program opts in by linking or preloading it).
//
// The sink runs inside munmap, free and the rest, on any thread, possibly in
// a signal handler: it reads two atomics (the watched span) and publishes
// into the lock-free log. Nothing else.
#include <dlfcn.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "dmareg/c/hooks.h"
#include "dmareg/monitor.h"
#include "monitor/invalidation_log.h"
#include "monitor/monitor_access.h"

namespace dmareg {

namespace {

// The library's entry points, looked up in the global scope.
struct HooksApi {
  decltype(&dmareg_hooks_subscribe) subscribe = nullptr;
  decltype(&dmareg_hooks_unsubscribe) unsubscribe = nullptr;
  decltype(&dmareg_hooks_events) events = nullptr;
};

absl::StatusOr<HooksApi> FindHooks() {
  HooksApi api;
  api.subscribe =
      reinterpret_cast<decltype(api.subscribe)>(dlsym(RTLD_DEFAULT, "dmareg_hooks_subscribe"));
  api.unsubscribe =
      reinterpret_cast<decltype(api.unsubscribe)>(dlsym(RTLD_DEFAULT, "dmareg_hooks_unsubscribe"));
  api.events = reinterpret_cast<decltype(api.events)>(dlsym(RTLD_DEFAULT, "dmareg_hooks_events"));
  if (api.subscribe == nullptr || api.unsubscribe == nullptr || api.events == nullptr) {
    return absl::FailedPreconditionError(
        "hooks monitor: libdmareg_hooks is not loaded in this process; link it into the program "
        "(-ldmareg_hooks) or run it with LD_PRELOAD=libdmareg_hooks.so");
  }
  // The library must be the munmap the program calls: one loaded with
  // dlopen (RTLD_LOCAL) is found above but interposes nothing. Our own
  // munmap call is resolved like the program's.
  const uint64_t before = api.events(DMAREG_HOOKS_MUNMAP);
  void* probe = mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (probe != MAP_FAILED) munmap(probe, 4096);
  if (probe == MAP_FAILED || api.events(DMAREG_HOOKS_MUNMAP) == before) {
    return absl::FailedPreconditionError(
        "hooks monitor: libdmareg_hooks is loaded but does not interpose munmap (was it "
        "loaded with dlopen?); link it into the program or preload it");
  }
  return api;
}

// Which 2 MiB granules of the address space hold watched memory: one bit
// each, in a lazily touched anonymous mapping (8 MiB of address space for
// 47 bits; untouched pages read as zero). Bits are set by Watch and never
// cleared, so an event is dropped only where nothing was ever watched.
class WatchedGranules {
 public:
  static constexpr int kShift = 21;
  static constexpr uintptr_t kTop = uintptr_t{1} << 47;
  static constexpr size_t kWords = (kTop >> kShift) / 64;

  WatchedGranules() {
    void* p = mmap(nullptr, kWords * sizeof(uint64_t), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p != MAP_FAILED) words_ = static_cast<std::atomic<uint64_t>*>(p);
  }
  ~WatchedGranules() {
    if (words_ != nullptr) munmap(words_, kWords * sizeof(uint64_t));
  }
  WatchedGranules(const WatchedGranules&) = delete;
  WatchedGranules& operator=(const WatchedGranules&) = delete;

  void Add(Range r) {
    if (words_ == nullptr || r.end() > kTop) {
      beyond_.store(true, std::memory_order_seq_cst);
      if (words_ == nullptr || r.begin() >= kTop) return;
    }
    const uintptr_t last = (std::min<uintptr_t>(r.end(), kTop) - 1) >> kShift;
    for (uintptr_t g = r.begin() >> kShift; g <= last; ++g) {
      std::atomic<uint64_t>& w = words_[g / 64];
      const uint64_t bit = uint64_t{1} << (g % 64);
      if ((w.load(std::memory_order_relaxed) & bit) == 0)
        w.fetch_or(bit, std::memory_order_seq_cst);
    }
  }
  // Async-signal-safe: loads only.
  bool Touches(uintptr_t begin, uintptr_t end) const {
    if (words_ == nullptr) return true;
    if (end > kTop) {
      if (beyond_.load(std::memory_order_seq_cst)) return true;
      if (begin >= kTop) return false;
      end = kTop;
    }
    const uintptr_t first = begin >> kShift;
    const uintptr_t last = (end - 1) >> kShift;
    for (uintptr_t g = first; g <= last;) {
      const uint64_t w = words_[g / 64].load(std::memory_order_seq_cst);
      const uintptr_t word_end = (g / 64 + 1) * 64;  // first granule of the next word
      const uintptr_t upto = std::min<uintptr_t>(last + 1, word_end);
      const int lo = static_cast<int>(g % 64);
      const int n = static_cast<int>(upto - g);
      const uint64_t mask = n == 64 ? ~uint64_t{0} : ((uint64_t{1} << n) - 1) << lo;
      if ((w & mask) != 0) return true;
      g = upto;
    }
    return false;
  }

 private:
  std::atomic<uint64_t>* words_ = nullptr;
  std::atomic<bool> beyond_{false};  // something watched above kTop
};

}  // namespace

struct HooksMonitor::State {
  HooksApi api;
  int id = -1;
  internal::InvalidationLog* log = nullptr;
  WatchedGranules watched;
  std::atomic<uint64_t> published{0};

  static void Sink(void* context, int /*kind*/, uintptr_t begin, uintptr_t end) {
    auto* s = static_cast<State*>(context);
    if (!s->watched.Touches(begin, end)) return;
    if (std::optional<Range> r = Range::FromBounds(begin, end)) {
      s->log->Publish(*r);
      s->published.fetch_add(1, std::memory_order_relaxed);
    }
  }
};

absl::StatusOr<std::shared_ptr<HooksMonitor>> HooksMonitor::Create(HooksMonitorOptions options) {
  absl::StatusOr<HooksApi> api = FindHooks();
  if (!api.ok()) return api.status();
  std::shared_ptr<UserfaultfdMonitor> uffd;
  if (options.userfaultfd != HooksUserfaultfd::kNever) {
    absl::StatusOr<std::shared_ptr<UserfaultfdMonitor>> u = UserfaultfdMonitor::Create();
    if (u.ok()) {
      uffd = *std::move(u);
    } else if (options.userfaultfd == HooksUserfaultfd::kRequired) {
      return absl::FailedPreconditionError(
          absl::StrCat("hooks monitor with a userfaultfd: ", u.status().message()));
    }
  }
  auto state = std::make_shared<State>();
  state->api = *api;
  std::shared_ptr<HooksMonitor> monitor(new HooksMonitor(uffd, state));
  state->log = &internal::LogOf(*monitor);
  state->id = state->api.subscribe(&State::Sink, state.get());
  if (state->id < 0) {
    return absl::ResourceExhaustedError(
        absl::StrCat("hooks monitor: libdmareg_hooks takes ", DMAREG_HOOKS_MAX_SINKS,
                     " subscribers at most; share one HooksMonitor between caches"));
  }
  return monitor;
}

// Composed: one log, the userfaultfd monitor's (the aliasing pointer keeps
// that monitor alive as long as the log is used).
HooksMonitor::HooksMonitor(std::shared_ptr<UserfaultfdMonitor> uffd, std::shared_ptr<State> state)
    : MemoryMonitor(uffd != nullptr ? internal::MonitorAccess::SharedLogOf(*uffd)
                                    : std::make_shared<internal::InvalidationLog>()),
      uffd_(std::move(uffd)),
      state_(std::move(state)) {}

HooksMonitor::~HooksMonitor() {
  // Returns once no hooked call is inside the sink.
  if (state_->id >= 0) state_->api.unsubscribe(state_->id);
}

absl::string_view HooksMonitor::name() const {
  return uffd_ != nullptr ? "hooks+userfaultfd" : "hooks";
}

MonitorCoverage HooksMonitor::coverage() const {
  MonitorCoverage c = uffd_ != nullptr ? uffd_->coverage() : MonitorCoverage{};
  c.munmap = c.mremap = c.madvise_dontneed = true;
  c.anonymous = c.shared_memory = true;
  return c;
}

uint64_t HooksMonitor::hook_events() const {
  return state_->published.load(std::memory_order_relaxed);
}

absl::Status HooksMonitor::Watch(const void* addr, size_t length) {
  const std::optional<Range> r = Range::FromLength(reinterpret_cast<uintptr_t>(addr), length);
  if (!r || r->empty()) {
    return absl::InvalidArgumentError(absl::StrCat("hooks monitor: Watch of ", length, " bytes at ",
                                                   absl::Hex(addr), " is empty or wraps around"));
  }
  // Before the caller registers: an unmap from now on passes the filter.
  state_->watched.Add(*r);
  if (uffd_ != nullptr) return uffd_->Watch(addr, length);
  return absl::OkStatus();
}

}  // namespace dmareg
