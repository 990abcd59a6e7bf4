// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The verbs backends of the on-demand IOVA cache (dmareg/odp_verbs.h): one
// on-demand MR per window (or a shared implicit one) with prefetching links,
// and a pinned MR per window registered again at the same IOVA.

#include "dmareg/odp/verbs_backend.h"

#include <infiniband/verbs.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "dmareg/errno_status.h"
#include "odp/odp_mutex.h"

namespace dmareg {

namespace {

bool WholePages(uintptr_t va, uint64_t length) {
  const auto page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  return length != 0 && va % page == 0 && length % page == 0 && va + length > va;
}

absl::Status BadWindow(const std::string& name, uintptr_t va, uint64_t length) {
  return absl::InvalidArgumentError(absl::StrFormat(
      "%s: window for va %#x + %#x: not whole pages, empty or wrapping", name, va, length));
}

bool Writes(AccessFlags access) {
  access = NormalizeAccess(access);
  return access.Has(Access::kLocalWrite);
}

// Faults [p, p + length) in as the CPU would, without changing a byte.
absl::Status PreTouch(const std::string& device, uintptr_t p, uint64_t length, bool write) {
  const int advice = write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ;
  if (::madvise(reinterpret_cast<void*>(p), length, advice) == 0) return absl::OkStatus();
  const int err = errno;
  return ErrnoStatus(err, write ? "madvise(MADV_POPULATE_WRITE)" : "madvise(MADV_POPULATE_READ)",
                     device, absl::StrFormat("pre-touch of [%#x, +%#x)", p, length));
}

}  // namespace

// --- OdpVerbsBackend ---

struct OdpVerbsBackend::Impl {
  struct Window {
    DeviceMapping mr;
    AccessFlags access;
    bool implicit = false;  // mr is the shared implicit one
  };
  mutable odp_internal::Mutex mu;
  std::map<uint64_t, Window> windows ABSL_GUARDED_BY(mu);  // by handle
  uint64_t next_handle ABSL_GUARDED_BY(mu) = 1;
  std::optional<DeviceMapping> implicit_mr;  // set at Create, then read-only
  std::atomic<Prefetch> prefetch{Prefetch::kNone};
  std::atomic<int64_t> window_mrs{0};
};

OdpVerbsBackend::OdpVerbsBackend(std::shared_ptr<VerbsDomain> domain)
    : domain_(std::move(domain)),
      name_(absl::StrCat("odp-verbs(", domain_->name(), ")")),
      impl_(std::make_unique<Impl>()) {}

OdpVerbsBackend::~OdpVerbsBackend() {
  odp_internal::MutexLock lock(&impl_->mu);
  for (auto& [handle, w] : impl_->windows) {
    if (!w.implicit) (void)domain_->Deregister(w.mr);
  }
  if (impl_->implicit_mr) (void)domain_->Deregister(*impl_->implicit_mr);
}

absl::StatusOr<std::shared_ptr<OdpVerbsBackend>> OdpVerbsBackend::Create(
    std::shared_ptr<VerbsDomain> domain) {
  if (domain == nullptr) return absl::InvalidArgumentError("OdpVerbsBackend: null domain");
  if (!domain->capabilities().on_demand_paging) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "OdpVerbsBackend on %s: the device reports no ODP for RC (general caps %#x, RC caps "
        "%#x); use OdpVerbsPinnedBackend",
        domain->name(), domain->device_info().odp_general_caps, domain->device_info().odp_rc_caps));
  }
  std::shared_ptr<OdpVerbsBackend> b(new OdpVerbsBackend(std::move(domain)));
  if ((b->domain_->device_info().odp_general_caps & IBV_ODP_SUPPORT_IMPLICIT) != 0) {
    // Local access only: see the header. A refusal leaves per-window MRs.
    absl::StatusOr<DeviceMapping> mr = b->domain_->RegisterHost(
        VerbsDomain::WholeAddressSpace(), Access::kLocalWrite, Paging::kOnDemand);
    if (mr.ok()) b->impl_->implicit_mr = *mr;
  }
  return b;
}

absl::StatusOr<OdpWindow> OdpVerbsBackend::ReserveWindow(uintptr_t va, uint64_t length,
                                                         AccessFlags max_access) {
  if (!WholePages(va, length)) return BadWindow(name_, va, length);
  max_access = NormalizeAccess(max_access);
  const bool remote = max_access.Has(Access::kRemoteRead) || max_access.Has(Access::kRemoteWrite) ||
                      max_access.Has(Access::kRemoteAtomic);
  Impl::Window w{.access = max_access};
  if (impl_->implicit_mr && !remote) {
    w.mr = *impl_->implicit_mr;
    w.implicit = true;
  } else {
    absl::StatusOr<DeviceMapping> mr = domain_->RegisterHost(
        HostMemory{reinterpret_cast<const void*>(va), length}, max_access, Paging::kOnDemand);
    if (!mr.ok()) return mr.status();
    w.mr = *mr;
    impl_->window_mrs.fetch_add(1, std::memory_order_relaxed);
  }
  odp_internal::MutexLock lock(&impl_->mu);
  const uint64_t handle = impl_->next_handle++;
  impl_->windows.emplace(handle, w);
  return OdpWindow{.va = va,
                   .iova = va,
                   .length = length,
                   .lkey = w.mr.lkey,
                   .rkey = w.implicit ? 0 : w.mr.rkey,
                   .handle = handle};
}

void OdpVerbsBackend::ReleaseWindow(OdpWindow& window) {
  std::optional<DeviceMapping> mr;
  {
    odp_internal::MutexLock lock(&impl_->mu);
    auto it = impl_->windows.find(window.handle);
    if (it == impl_->windows.end()) return;
    if (!it->second.implicit) mr = it->second.mr;
    impl_->windows.erase(it);
  }
  if (mr) {
    (void)domain_->Deregister(*mr);
    impl_->window_mrs.fetch_sub(1, std::memory_order_relaxed);
  }
  window.handle = 0;
  window.lkey = window.rkey = 0;
}

absl::Status OdpVerbsBackend::Link(OdpWindow& window, uint64_t offset, uint64_t length,
                                   bool write) {
  Impl::Window w;
  {
    odp_internal::MutexLock lock(&impl_->mu);
    auto it = impl_->windows.find(window.handle);
    if (it == impl_->windows.end()) {
      return absl::NotFoundError(absl::StrFormat("%s: no window %u", name_, window.handle));
    }
    w = it->second;
  }
  if (length == 0 || offset > window.length || length > window.length - offset) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: link of [%#x, +%#x) outside the window of %#x bytes", name_, offset,
                        length, window.length));
  }
  if (write && !Writes(w.access)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: link for write of a window with access %s", name_, AccessToString(w.access)));
  }
  const uintptr_t p = window.va + offset;
  if (impl_->prefetch.load(std::memory_order_relaxed) != Prefetch::kCpuTouch) {
    absl::Status s = domain_->Prefetch(w.mr, p, length, write);
    if (s.ok()) {
      impl_->prefetch.store(Prefetch::kAdviseMr, std::memory_order_relaxed);
      return s;
    }
    if (s.code() != absl::StatusCode::kUnimplemented) return s;
    // No advise_mr in this provider: the CPU brings the pages in instead.
    impl_->prefetch.store(Prefetch::kCpuTouch, std::memory_order_relaxed);
  }
  return PreTouch(domain_->name(), p, length, write);
}

absl::Status OdpVerbsBackend::Unlink(OdpWindow&, uint64_t, uint64_t) {
  // The NIC follows the page tables: the kernel already invalidated its
  // translations when the pages changed.
  return absl::OkStatus();
}

OdpVerbsBackend::Prefetch OdpVerbsBackend::prefetch() const {
  return impl_->prefetch.load(std::memory_order_relaxed);
}
bool OdpVerbsBackend::implicit() const { return impl_->implicit_mr.has_value(); }
int64_t OdpVerbsBackend::window_mrs() const {
  return impl_->window_mrs.load(std::memory_order_relaxed);
}

// --- OdpVerbsPinnedBackend ---

struct OdpVerbsPinnedBackend::Impl {
  struct Window {
    AccessFlags access;
    std::optional<DeviceMapping> mr;  // registered now
  };
  mutable odp_internal::Mutex mu;
  std::map<uint64_t, Window> windows ABSL_GUARDED_BY(mu);
  uint64_t next_handle ABSL_GUARDED_BY(mu) = 1;
  std::atomic<int64_t> registrations{0};
  std::atomic<int64_t> live{0};
};

OdpVerbsPinnedBackend::OdpVerbsPinnedBackend(std::shared_ptr<VerbsDomain> domain)
    : domain_(std::move(domain)),
      name_(absl::StrCat("odp-verbs-pinned(", domain_->name(), ")")),
      impl_(std::make_unique<Impl>()) {}

OdpVerbsPinnedBackend::~OdpVerbsPinnedBackend() {
  odp_internal::MutexLock lock(&impl_->mu);
  for (auto& [handle, w] : impl_->windows) {
    if (w.mr) (void)domain_->Deregister(*w.mr);
  }
}

absl::StatusOr<std::shared_ptr<OdpVerbsPinnedBackend>> OdpVerbsPinnedBackend::Create(
    std::shared_ptr<VerbsDomain> domain) {
  if (domain == nullptr) return absl::InvalidArgumentError("OdpVerbsPinnedBackend: null domain");
  return std::shared_ptr<OdpVerbsPinnedBackend>(new OdpVerbsPinnedBackend(std::move(domain)));
}

absl::StatusOr<OdpWindow> OdpVerbsPinnedBackend::ReserveWindow(uintptr_t va, uint64_t length,
                                                               AccessFlags max_access) {
  if (!WholePages(va, length)) return BadWindow(name_, va, length);
  if (length > domain_->capabilities().max_mapping_bytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: window of %#x bytes exceeds max_mr_size %#x", name_, length,
                        domain_->capabilities().max_mapping_bytes));
  }
  odp_internal::MutexLock lock(&impl_->mu);
  const uint64_t handle = impl_->next_handle++;
  impl_->windows.emplace(handle, Impl::Window{.access = NormalizeAccess(max_access)});
  // Nothing registered yet: the first Link does it, at IOVA = VA.
  return OdpWindow{.va = va, .iova = va, .length = length, .handle = handle};
}

void OdpVerbsPinnedBackend::ReleaseWindow(OdpWindow& window) {
  std::optional<DeviceMapping> mr;
  {
    odp_internal::MutexLock lock(&impl_->mu);
    auto it = impl_->windows.find(window.handle);
    if (it == impl_->windows.end()) return;
    mr = it->second.mr;
    impl_->windows.erase(it);
  }
  if (mr) {
    (void)domain_->Deregister(*mr);
    impl_->live.fetch_sub(1, std::memory_order_relaxed);
  }
  window.handle = 0;
  window.lkey = window.rkey = 0;
}

absl::Status OdpVerbsPinnedBackend::Link(OdpWindow& window, uint64_t offset, uint64_t length,
                                         bool write) {
  AccessFlags access;
  {
    odp_internal::MutexLock lock(&impl_->mu);
    auto it = impl_->windows.find(window.handle);
    if (it == impl_->windows.end()) {
      return absl::NotFoundError(absl::StrFormat("%s: no window %u", name_, window.handle));
    }
    access = it->second.access;
    if (write && !Writes(access)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: link for write of a window with access %s", name_, AccessToString(access)));
    }
    if (it->second.mr) return absl::OkStatus();  // registered with its maximum access
  }
  if (offset != 0 || length != window.length) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: link of [%#x, +%#x): the pinned backend links whole windows (%#x)",
                        name_, offset, length, window.length));
  }
  if (!Writes(access)) {
    // A read-only pin of never-written memory would hold the shared zero
    // page, and the next CPU write would move away from it: populate for
    // write first (contents kept). A read-only mapping cannot be written
    // anyway, so its failure is harmless.
    (void)PreTouch(domain_->name(), window.va, window.length, /*write=*/true);
  }
  absl::StatusOr<DeviceMapping> mr = domain_->RegisterHost(
      HostMemory{reinterpret_cast<const void*>(window.va), window.length, window.iova}, access);
  if (!mr.ok()) return mr.status();
  impl_->registrations.fetch_add(1, std::memory_order_relaxed);
  impl_->live.fetch_add(1, std::memory_order_relaxed);
  {
    odp_internal::MutexLock lock(&impl_->mu);
    impl_->windows[window.handle].mr = *mr;
  }
  window.lkey = mr->lkey;
  window.rkey = mr->rkey;
  return absl::OkStatus();
}

absl::Status OdpVerbsPinnedBackend::Unlink(OdpWindow& window, uint64_t, uint64_t) {
  std::optional<DeviceMapping> mr;
  {
    odp_internal::MutexLock lock(&impl_->mu);
    auto it = impl_->windows.find(window.handle);
    if (it == impl_->windows.end() || !it->second.mr) return absl::OkStatus();
    mr = it->second.mr;
  }
  if (absl::Status s = domain_->Deregister(*mr); !s.ok()) return s;  // still registered
  {
    odp_internal::MutexLock lock(&impl_->mu);
    impl_->windows[window.handle].mr.reset();
  }
  impl_->live.fetch_sub(1, std::memory_order_relaxed);
  window.lkey = window.rkey = 0;
  return absl::OkStatus();
}

int64_t OdpVerbsPinnedBackend::registrations() const {
  return impl_->registrations.load(std::memory_order_relaxed);
}
int64_t OdpVerbsPinnedBackend::live_mrs() const {
  return impl_->live.load(std::memory_order_relaxed);
}

}  // namespace dmareg
