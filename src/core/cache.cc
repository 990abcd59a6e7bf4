// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// RegistrationCache: validate once at the front door, then dispatch to the
// core.
#include "dmareg/cache.h"

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/cache_core.h"
#include "core/config.h"
#include "monitor/shared_monitor.h"
#include "runtime/log.h"

namespace dmareg {

const char* DmaBufPolicyName(DmaBufPolicy policy) {
  switch (policy) {
    case DmaBufPolicy::kPreferDmaBuf:
      return "prefer-dmabuf";
    case DmaBufPolicy::kDmaBufOnly:
      return "dmabuf-only";
    case DmaBufPolicy::kAliasOnly:
      return "alias-only";
  }
  return "unknown";
}

const char* MonitoringName(Monitoring monitoring) {
  switch (monitoring) {
    case Monitoring::kAutomatic:
      return "automatic";
    case Monitoring::kExplicitOnly:
      return "explicit";
    case Monitoring::kHooks:
      return "hooks";
    case Monitoring::kUserfaultfd:
      return "userfaultfd";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<RegistrationCache>> RegistrationCache::Create(
    std::shared_ptr<Domain> domain, CacheOptions options) {
  if (domain == nullptr) return absl::InvalidArgumentError("RegistrationCache needs a domain");
  // The environment, read now (not at load time): fields left at their
  // default take its values; a bad value fails here.
  std::string from_env;
  if (options.use_environment) {
    absl::StatusOr<internal::Environment> env = internal::ReadEnvironment(std::move(options));
    if (!env.ok()) return env.status();
    internal::SetEnvironmentLogLevel(env->log_level);
    internal::LogUnknownVariablesOnce();
    options = std::move(env->options);
    if (!env->applied.empty())
      from_env = absl::StrCat(" (from the environment: ", env->applied, ")");
  }
  if (options.paging == Paging::kOnDemand && !domain->capabilities().on_demand_paging) {
    return absl::FailedPreconditionError(
        absl::StrCat("RegistrationCache on ", domain->name(),
                     ": paging = on-demand, but the domain has no on-demand paging; use "
                     "Paging::kAutomatic to fall back to pinned registrations",
                     from_env));
  }
  std::shared_ptr<MemoryMonitor> monitor = options.monitor;
  // On-demand mappings follow the page tables: a userfaultfd would watch
  // for nothing.
  if (monitor == nullptr && options.paging == Paging::kOnDemand) {
    options.monitoring = Monitoring::kExplicitOnly;
  }
  if (monitor == nullptr && options.monitoring == Monitoring::kExplicitOnly) {
    monitor = ExplicitMonitor::Create();
  } else if (monitor == nullptr) {
    absl::StatusOr<std::shared_ptr<MemoryMonitor>> shared =
        internal::SharedMonitorFor(options.monitoring);
    if (!shared.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "RegistrationCache on ", domain->name(),
          ": monitoring = ", MonitoringName(options.monitoring), ": ", shared.status().message(),
          options.monitoring == Monitoring::kAutomatic
              ? "; or pass monitoring = kExplicitOnly and report unmaps yourself"
              : "",
          from_env));
    }
    monitor = *std::move(shared);
  }
  options.monitor = nullptr;  // the core keeps its own share
  internal::Log(LogLevel::kInfo,
                "cache on %s: monitor %s (monitoring = %s), paging %s, max_regions %u, "
                "max_bytes %u, dma-buf policy %s, PFN check every %u%s",
                domain->name(), monitor->name(), MonitoringName(options.monitoring),
                PagingName(options.paging), options.max_regions, options.max_bytes,
                DmaBufPolicyName(options.dmabuf_policy), options.pfn_check_every, from_env);
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
  if (memory.iova) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "host range [%p, +%#x) names IOVA %#x: the cache picks IOVAs itself; map at a "
        "chosen IOVA with Domain::RegisterHost",
        memory.addr, memory.length, *memory.iova));
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("host range [%p, +%#x) touches the last page of the address space, "
                      "which no mapping can hold",
                      memory.addr, memory.length));
}
}  // namespace

absl::StatusOr<Registration> RegistrationCache::Acquire(const HostMemory& memory,
                                                        AccessFlags access) {
  const uintptr_t addr = reinterpret_cast<uintptr_t>(memory.addr);
  // The whole pages holding the request; none if it is empty, wraps, or
  // touches the last page (whose rounded end would wrap to 0).
  const std::optional<Range> span = Range::PagesHolding(addr, memory.length, core_->page_size());
  // One test for every bad request: null, no span, a caller's IOVA (the
  // cache picks them), unknown access bits.
  if (addr == 0 || !span || memory.iova || (access.bits() & ~kAllAccess.bits()) != 0) [[unlikely]] {
    return InvalidHostRequest(memory, access);
  }
  const AccessFlags want = NormalizeAccess(access);
  if (internal::Region* r = core_->TryHit(*span, want)) [[likely]]
    return Registration(r);
  absl::StatusOr<internal::Region*> r = core_->AcquireHost(*span, want);
  if (!r.ok()) return r.status();
  return Registration(*r);
}

namespace {
[[gnu::cold]] absl::Status InvalidDmaBufRequest(const DmaBufMemory& memory, AccessFlags access) {
  if (absl::Status s = ValidateDmaBufMemory(memory); !s.ok()) return s;
  if (absl::Status s = ValidateAccess(access); !s.ok()) return s;
  if (!memory.iova) return absl::InvalidArgumentError("a dma-buf import that was moved from");
  return absl::InvalidArgumentError(absl::StrFormat(
      "dma-buf slice [%#x, +%#x) of fd %d names IOVA %#x: the cache picks IOVAs itself; map "
      "at a chosen IOVA with Domain::RegisterDmaBuf",
      memory.offset, memory.length, memory.fd, *memory.iova));
}
}  // namespace

absl::StatusOr<Registration> RegistrationCache::Acquire(const DmaBufMemory& memory,
                                                        AccessFlags access) {
  if (memory.fd < 0 || memory.length == 0 || memory.length > UINT64_MAX - memory.offset ||
      memory.iova || (access.bits() & ~kAllAccess.bits()) != 0) [[unlikely]] {
    return InvalidDmaBufRequest(memory, access);
  }
  absl::StatusOr<DmaBufInfo> info = core_->InspectFd(memory.fd);  // the fstat
  if (!info.ok()) return info.status();
  if (!internal::CacheCore::SliceInside(info->size, memory.offset, memory.length)) [[unlikely]] {
    return internal::CacheCore::SlicePastEnd(info->id, info->size, memory.offset, memory.length,
                                             memory.fd);
  }
  const internal::DmaBufKey key =
      core_->SliceKey(info->id, info->size, memory.offset, memory.length);
  const AccessFlags want = NormalizeAccess(access);
  if (internal::Region* r = core_->TryHitDmaBuf(key, want)) [[likely]]
    return Registration(r);
  absl::StatusOr<internal::Region*> r =
      core_->AcquireDmaBuf(key, {.fd = memory.fd, .alias = memory.alias}, want);
  if (!r.ok()) return r.status();
  return Registration(*r);
}

absl::StatusOr<Registration> RegistrationCache::Acquire(const ImportedDmaBuf& buffer,
                                                        uint64_t offset, size_t length,
                                                        AccessFlags access) {
  if (length == 0 || length > UINT64_MAX - offset || buffer.fd() < 0 ||
      (access.bits() & ~kAllAccess.bits()) != 0) [[unlikely]] {
    return InvalidDmaBufRequest(DmaBufMemory{.fd = buffer.fd(), .offset = offset, .length = length},
                                access);
  }
  const uint64_t size = buffer.size();
  if (!internal::CacheCore::SliceInside(size, offset, length)) [[unlikely]] {
    return internal::CacheCore::SlicePastEnd(buffer.id(), size, offset, length, buffer.fd());
  }
  const internal::DmaBufKey key = core_->SliceKey(buffer.id(), size, offset, length);
  const AccessFlags want = NormalizeAccess(access);
  if (internal::Region* r = core_->TryHitDmaBuf(key, want)) [[likely]]
    return Registration(r);
  absl::StatusOr<internal::Region*> r =
      core_->AcquireDmaBuf(key, {.fd = buffer.fd(), .alias = buffer.alias()}, want);
  if (!r.ok()) return r.status();
  return Registration(*r);
}

absl::Status RegistrationCache::Invalidate(const DmaBufMemory& memory) {
  if (absl::Status s = ValidateDmaBufMemory(memory); !s.ok()) return s;
  absl::StatusOr<internal::DmaBufKey> key = core_->ResolveDmaBuf(memory);
  if (!key.ok()) return key.status();
  core_->InvalidateDmaBuf(key->id, key->span);
  return absl::OkStatus();
}

void RegistrationCache::Invalidate(DmaBufId buffer) {
  core_->InvalidateDmaBuf(buffer, std::nullopt);
}

absl::Status RegistrationCache::Invalidate(const void* addr, size_t length) {
  if (absl::Status s = ValidateHostMemory(HostMemory{addr, length}); !s.ok()) return s;
  // Validated: the range does not wrap. Its last page, if it reaches the
  // top, holds no mapping (Acquire refuses it), so it is left out.
  const Range bytes = *Range::FromLength(reinterpret_cast<uintptr_t>(addr), length);
  core_->Invalidate(bytes.RoundOutBelowLastPage(core_->page_size()));
  return absl::OkStatus();
}

absl::Status RegistrationCache::SetLimits(CacheOptions options) {
  return core_->SetLimits(options);
}
CacheOptions RegistrationCache::limits() const { return core_->limits(); }
void RegistrationCache::Flush() { core_->Flush(); }
absl::StatusOr<PfnReport> RegistrationCache::CheckPfns() { return core_->CheckPfns(); }
Paging RegistrationCache::paging() const { return core_->paging(); }
void RegistrationCache::ApplyMonitorEvents() { (void)core_->CatchUp(); }
MemoryMonitor& RegistrationCache::monitor() const { return core_->monitor(); }
CacheStats RegistrationCache::stats() const { return core_->stats(); }
Domain& RegistrationCache::domain() const { return core_->domain(); }

}  // namespace dmareg
