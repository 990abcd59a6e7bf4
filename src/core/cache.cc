// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// RegistrationCache: validate once at the front door, then dispatch to the
// core.
#include "dmareg/cache.h"

#include <cstdint>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/cache_core.h"

namespace dmareg {

absl::StatusOr<std::unique_ptr<RegistrationCache>> RegistrationCache::Create(
    std::shared_ptr<Domain> domain, CacheOptions options) {
  if (domain == nullptr) return absl::InvalidArgumentError("RegistrationCache needs a domain");
  std::shared_ptr<MemoryMonitor> monitor = options.monitor;
  if (monitor == nullptr && options.monitoring == Monitoring::kAutomatic) {
    absl::StatusOr<std::shared_ptr<UserfaultfdMonitor>> uffd = UserfaultfdMonitor::Create();
    if (!uffd.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "RegistrationCache on ", domain->name(),
          ": automatic monitoring needs a userfaultfd: ", uffd.status().message(),
          "; or pass monitoring = kExplicitOnly and report unmaps yourself"));
    }
    monitor = *std::move(uffd);
  } else if (monitor == nullptr) {
    monitor = ExplicitMonitor::Create();
  }
  options.monitor = nullptr;  // the core keeps its own share
  return std::unique_ptr<RegistrationCache>(new RegistrationCache(
      new internal::CacheCore(std::move(domain), std::move(monitor), options)));
}

RegistrationCache::RegistrationCache(internal::CacheCore* core) : core_(core) {}

RegistrationCache::~RegistrationCache() { core_->Close(); }

namespace {
// Every bad request fails one combined test on the fast path; this says why.
[[gnu::cold]] absl::Status InvalidHostRequest(const HostMemory& memory, AccessFlags access) {
  if (absl::Status s = ValidateHostMemory(memory); !s.ok()) return s;
  if (absl::Status s = ValidateAccess(access); !s.ok()) return s;
  return absl::InvalidArgumentError(
      absl::StrFormat("host range [%#x, +%#x) ends in the last page of the address space",
                      reinterpret_cast<uintptr_t>(memory.addr), memory.length));
}
}  // namespace

absl::StatusOr<Registration> RegistrationCache::Acquire(const HostMemory& memory,
                                                        AccessFlags access) {
  const uintptr_t page = core_->page_size();
  const uintptr_t addr = reinterpret_cast<uintptr_t>(memory.addr);
  const uintptr_t last = addr + memory.length - 1;
  // Null, empty, wrapping, ending in the last page (whose end the rounded
  // span could not name), or unknown access bits.
  if (addr == 0 || memory.length == 0 || last < addr ||
      last > std::numeric_limits<uintptr_t>::max() - (page - 1) ||
      (access.bits() & ~kAllAccess.bits()) != 0) [[unlikely]] {
    return InvalidHostRequest(memory, access);
  }
  const uintptr_t a = addr & ~(page - 1);
  const uintptr_t b = (last + page) & ~(page - 1);
  const AccessFlags want = NormalizeAccess(access);
  if (internal::Region* r = core_->TryHit(a, b, want)) [[likely]] return Registration(r);
  absl::StatusOr<internal::Region*> r = core_->AcquireHost(a, b, want);
  if (!r.ok()) return r.status();
  return Registration(*r);
}

absl::StatusOr<Registration> RegistrationCache::Acquire(const DmaBufMemory& memory,
                                                        AccessFlags access) {
  if (absl::Status s = ValidateDmaBufMemory(memory); !s.ok()) return s;
  if (absl::Status s = ValidateAccess(access); !s.ok()) return s;
  absl::StatusOr<internal::Region*> r = core_->AcquireDmaBuf(memory, NormalizeAccess(access));
  if (!r.ok()) return r.status();
  return Registration(*r);
}

absl::Status RegistrationCache::Invalidate(const void* addr, size_t length) {
  if (absl::Status s = ValidateHostMemory(HostMemory{addr, length}); !s.ok()) return s;
  const uintptr_t first = reinterpret_cast<uintptr_t>(addr);
  const auto [a, b] = internal::PagesCovering(first, first + (length - 1), core_->page_size());
  core_->Invalidate(a, b);
  return absl::OkStatus();
}

absl::Status RegistrationCache::SetLimits(CacheOptions options) {
  return core_->SetLimits(options);
}
CacheOptions RegistrationCache::limits() const { return core_->limits(); }
void RegistrationCache::Flush() { core_->Flush(); }
void RegistrationCache::ApplyMonitorEvents() { (void)core_->CatchUp(); }
MemoryMonitor& RegistrationCache::monitor() const { return core_->monitor(); }
CacheStats RegistrationCache::stats() const { return core_->stats(); }
Domain& RegistrationCache::domain() const { return core_->domain(); }

}  // namespace dmareg
