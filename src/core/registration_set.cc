// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// AcquireOnAll: the hits on the calling thread, the misses in parallel, and
// all or nothing.
#include "dmareg/registration_set.h"

#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/cache_core.h"

namespace dmareg {
namespace internal {

struct SetAccess {
  static CacheCore* Core(const RegistrationCache* c) { return c->core_; }
  static Registration Adopt(Region* r) { return Registration(r); }
};

namespace {

// One device's part of the request: a hit found on the calling thread, or
// a miss to register.
struct Part {
  CacheCore* core = nullptr;
  Region* region = nullptr;
  bool created = false;
  absl::Status status;
};

template <typename HitFn, typename MissFn>
absl::StatusOr<RegistrationSet> AcquireParts(absl::Span<RegistrationCache* const> caches,
                                             SetOptions options, HitFn hit, MissFn miss) {
  std::vector<Part> parts(caches.size());
  std::vector<size_t> misses;
  for (size_t i = 0; i < caches.size(); ++i) {
    parts[i].core = SetAccess::Core(caches[i]);
    absl::StatusOr<Region*> r = hit(*parts[i].core, i);
    if (!r.ok()) {
      parts[i].status = r.status();
    } else if (*r != nullptr) {
      parts[i].region = *r;
    } else {
      misses.push_back(i);
    }
  }
  auto run = [&](size_t i) {
    absl::StatusOr<Region*> r = miss(*parts[i].core, i, &parts[i].created);
    if (r.ok()) {
      parts[i].region = *r;
    } else {
      parts[i].status = r.status();
    }
  };
  if (options.parallel && misses.size() > 1) {
    std::vector<std::thread> threads;
    threads.reserve(misses.size() - 1);
    for (size_t k = 1; k < misses.size(); ++k) threads.emplace_back(run, misses[k]);
    run(misses[0]);
    for (std::thread& t : threads) t.join();
  } else {
    for (size_t i : misses) run(i);
  }

  std::vector<Registration> regs;
  regs.reserve(parts.size());
  const Part* failed = nullptr;
  for (const Part& p : parts) {
    if (!p.status.ok() && failed == nullptr) failed = &p;
  }
  for (Part& p : parts) {
    if (p.region == nullptr) continue;
    // Undo what this call registered; what was cached before stays.
    if (failed != nullptr && p.created) p.core->Discard(p.region);
    regs.push_back(SetAccess::Adopt(p.region));
  }
  if (failed != nullptr) {
    return absl::Status(
        failed->status.code(),
        absl::StrCat("AcquireOnAll on ", failed->core->domain().name(), " (", caches.size(),
                     " devices, nothing kept): ", failed->status.message()));
  }
  return RegistrationSet(std::move(regs));
}

absl::Status CheckCaches(absl::Span<RegistrationCache* const> caches) {
  if (caches.empty()) return absl::InvalidArgumentError("AcquireOnAll: no caches");
  for (size_t i = 0; i < caches.size(); ++i) {
    if (caches[i] == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("AcquireOnAll: cache ", i, " is null"));
    }
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace internal

absl::StatusOr<RegistrationSet> AcquireOnAll(absl::Span<RegistrationCache* const> caches,
                                             const HostMemory& memory, AccessFlags access,
                                             SetOptions options) {
  using internal::CacheCore;
  using internal::Region;
  if (absl::Status s = internal::CheckCaches(caches); !s.ok()) return s;
  const CacheCore& first = *internal::SetAccess::Core(caches[0]);
  const uintptr_t addr = reinterpret_cast<uintptr_t>(memory.addr);
  const std::optional<Range> span = Range::PagesHolding(addr, memory.length, first.page_size());
  if (addr == 0 || !span || memory.iova || (access.bits() & ~kAllAccess.bits()) != 0) {
    // The front door's own answer (it fails before touching anything).
    return caches[0]->Acquire(memory, access).status();
  }
  const AccessFlags want = NormalizeAccess(access);
  return internal::AcquireParts(
      caches, options,
      [&](CacheCore& core, size_t) -> absl::StatusOr<Region*> { return core.TryHit(*span, want); },
      [&](CacheCore& core, size_t, bool* created) {
        return core.AcquireHost(*span, want, created);
      });
}

absl::StatusOr<RegistrationSet> AcquireOnAll(absl::Span<RegistrationCache* const> caches,
                                             const DmaBufMemory& memory, AccessFlags access,
                                             SetOptions options) {
  using internal::CacheCore;
  using internal::DmaBufKey;
  using internal::Region;
  if (absl::Status s = internal::CheckCaches(caches); !s.ok()) return s;
  if (absl::Status s = ValidateDmaBufMemory(memory); !s.ok()) return s;
  if (absl::Status s = ValidateAccess(access); !s.ok()) return s;
  if (memory.iova) return caches[0]->Acquire(memory, access).status();
  const AccessFlags want = NormalizeAccess(access);
  // Each cache may have an inspector of its own: each resolves the fd.
  std::vector<std::optional<DmaBufKey>> keys(caches.size());
  const internal::DmaBufSource source{.fd = memory.fd, .alias = memory.alias};
  return internal::AcquireParts(
      caches, options,
      [&](CacheCore& core, size_t i) -> absl::StatusOr<Region*> {
        absl::StatusOr<DmaBufKey> key = core.ResolveDmaBuf(memory);
        if (!key.ok()) return key.status();
        keys[i] = *key;
        return core.TryHitDmaBuf(*key, want);
      },
      [&](CacheCore& core, size_t i, bool* created) {
        return core.AcquireDmaBuf(*keys[i], source, want, created);
      });
}

absl::StatusOr<RegistrationSet> AcquireOnAll(absl::Span<RegistrationCache* const> caches,
                                             const ImportedDmaBuf& buffer, uint64_t offset,
                                             size_t length, AccessFlags access,
                                             SetOptions options) {
  using internal::CacheCore;
  using internal::DmaBufKey;
  using internal::Region;
  if (absl::Status s = internal::CheckCaches(caches); !s.ok()) return s;
  if (length == 0 || (access.bits() & ~kAllAccess.bits()) != 0) {
    return caches[0]->Acquire(buffer, offset, length, access).status();
  }
  const CacheCore& first = *internal::SetAccess::Core(caches[0]);
  absl::StatusOr<DmaBufKey> key =
      first.DmaBufKeyOf(buffer.id(), buffer.size(), offset, length, buffer.fd());
  if (!key.ok()) return key.status();
  const AccessFlags want = NormalizeAccess(access);
  const internal::DmaBufSource source{.fd = buffer.fd(), .alias = buffer.alias()};
  return internal::AcquireParts(
      caches, options,
      [&](CacheCore& core, size_t) -> absl::StatusOr<Region*> {
        return core.TryHitDmaBuf(*key, want);
      },
      [&](CacheCore& core, size_t, bool* created) {
        return core.AcquireDmaBuf(*key, source, want, created);
      });
}

}  // namespace dmareg
