// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The C API over RegistrationCache (dmareg/c/dmareg.h). No exception and no
// absl::Status crosses into C: each entry point turns them into a negative
// errno and a thread-local message.
#include <cerrno>
#include <exception>
#include <initializer_list>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "capi/c_handles.h"
#include "capi/live_handles.h"
#include "dmareg/c/dmareg.h"
#include "dmareg/cache.h"
#include "dmareg/errno_status.h"
#include "dmareg/registration.h"

struct dmareg_cache {
  std::unique_ptr<dmareg::RegistrationCache> cache;
};

struct dmareg_reg {
  dmareg::Registration reg;
};

static_assert(DMAREG_MONITOR_USERFAULTFD == static_cast<int>(dmareg::Monitoring::kUserfaultfd));
static_assert(DMAREG_MONITOR_HOOKS == static_cast<int>(dmareg::Monitoring::kHooks));
static_assert(DMAREG_ACCESS_LOCAL_WRITE == static_cast<uint32_t>(dmareg::Access::kLocalWrite));
static_assert(DMAREG_ACCESS_REMOTE_READ == static_cast<uint32_t>(dmareg::Access::kRemoteRead));
static_assert(DMAREG_ACCESS_REMOTE_WRITE == static_cast<uint32_t>(dmareg::Access::kRemoteWrite));
static_assert(DMAREG_ACCESS_REMOTE_ATOMIC == static_cast<uint32_t>(dmareg::Access::kRemoteAtomic));
static_assert(DMAREG_ACCESS_RELAXED_ORDERING ==
              static_cast<uint32_t>(dmareg::Access::kRelaxedOrdering));

namespace dmareg::internal {
namespace {

// Per thread by nature: dmareg_last_error reports the calling thread's call.
std::string& LastError() {
  thread_local std::string message;
  return message;
}

// Makes the message and records it as this thread's last error; a message
// that cannot be made (out of memory) leaves it empty rather than stale.
template <typename MakeMessage>
void RecordLastError(MakeMessage&& make) noexcept {
  try {
    LastError() = make();
  } catch (...) {
    LastError().clear();
  }
}

int CFailCurrentException(const char* call) noexcept {
  try {
    throw;
  } catch (const std::bad_alloc&) {
    return CFail(ENOMEM, absl::StrCat(call, ": out of memory"));
  } catch (const std::exception& e) {
    return CFail(EIO, absl::StrCat(call, ": ", e.what()));
  } catch (...) {
    return CFail(EIO, absl::StrCat(call, ": unknown exception"));
  }
}

// -EINVAL naming the call and its pointer arguments when any is NULL, else 0.
int CheckNotNull(const char* call, const char* names, std::initializer_list<const void*> args) {
  for (const void* p : args) {
    if (p == nullptr) return CFail(EINVAL, absl::StrCat(call, ": ", names, " is NULL"));
  }
  return 0;
}

// -EINVAL naming the call for a zero length, else 0.
int CheckLength(const char* call, size_t len) {
  return len == 0 ? CFail(EINVAL, absl::StrCat(call, ": zero length")) : 0;
}

// -EINVAL naming the call and the bits dmareg does not know, else 0.
int CheckAccess(const char* call, uint32_t access) {
  if (const uint32_t unknown = access & ~kAllAccess.bits(); unknown != 0) {
    return CFail(EINVAL, absl::StrCat(call, ": unknown access bits 0x", absl::Hex(unknown)));
  }
  return 0;
}

// Runs `body` (which returns 0 or a negative errno) with no exception
// escaping into C: one becomes -ENOMEM or -EIO naming the call.
template <typename Body>
int Guarded(const char* call, Body&& body) noexcept {
  try {
    return body();
  } catch (...) {
    return CFailCurrentException(call);
  }
}

// Hands a registration to C in *out, or fails naming the call.
int NewReg(const char* call, absl::StatusOr<Registration> reg, dmareg_reg** out) {
  if (!reg.ok()) return CFail(call, reg.status());
  *out = LiveHandles::New<dmareg_reg>(*std::move(reg));
  return 0;
}

int StatusToNegErrno(const absl::Status& status) {
  if (status.ok()) return 0;
  if (auto err = ErrnoOf(status); err && *err > 0) return -*err;
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
      return -EINVAL;
    case absl::StatusCode::kOutOfRange:
      return -ERANGE;
    case absl::StatusCode::kNotFound:
      return -ENOENT;
    case absl::StatusCode::kAlreadyExists:
      return -EEXIST;
    case absl::StatusCode::kPermissionDenied:
      return -EACCES;
    case absl::StatusCode::kFailedPrecondition:
      return -EPERM;
    case absl::StatusCode::kResourceExhausted:
      return -ENOMEM;
    case absl::StatusCode::kUnimplemented:
      return -EOPNOTSUPP;
    case absl::StatusCode::kUnavailable:
      return -EAGAIN;
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kCancelled:
      return -ECANCELED;
    case absl::StatusCode::kDeadlineExceeded:
      return -ETIMEDOUT;
    default:
      return -EIO;
  }
}

}  // namespace
}  // namespace dmareg::internal

// The bridge (dmareg/c_bridge.h).
namespace dmareg {

int CFail(const char* call, const absl::Status& status) {
  internal::RecordLastError([&] { return absl::StrCat(call, ": ", status.ToString()); });
  return internal::StatusToNegErrno(status);
}

int CFail(int err, std::string_view message) {
  internal::RecordLastError([&] { return std::string(message); });
  return -err;
}

int NewCDomain(std::shared_ptr<Domain> domain, dmareg_domain** out) noexcept {
  try {
    *out = internal::LiveHandles::New<dmareg_domain>(std::move(domain));
    return 0;
  } catch (...) {
    return internal::CFailCurrentException("dmareg domain");
  }
}

std::shared_ptr<Domain> DomainOfC(const dmareg_domain* domain) noexcept {
  return domain == nullptr ? nullptr : domain->domain;
}

}  // namespace dmareg

using dmareg::CFail;
using dmareg::internal::CheckAccess;
using dmareg::internal::CheckLength;
using dmareg::internal::CheckNotNull;
using dmareg::internal::Guarded;
using dmareg::internal::NewReg;
namespace LiveHandles = dmareg::internal::LiveHandles;

extern "C" {

void dmareg_domain_close(struct dmareg_domain* domain) {
  LiveHandles::Delete(domain, "dmareg_domain_close");
}

int dmareg_cache_create(struct dmareg_domain* domain, const struct dmareg_cache_attr* attr,
                        struct dmareg_cache** out) {
  constexpr char kCall[] = "dmareg_cache_create";
  if (out != nullptr) *out = nullptr;  // on every failure, as the header says
  if (int rc = CheckNotNull(kCall, "domain or out", {domain, out}); rc != 0) return rc;
  return Guarded(kCall, [&] {
    dmareg::CacheOptions options;
    if (attr != nullptr) {
      for (uint64_t r : attr->reserved) {
        if (r != 0) return CFail(EINVAL, absl::StrCat(kCall, ": attr->reserved must be zero"));
      }
      if (attr->monitoring < DMAREG_MONITOR_AUTOMATIC ||
          attr->monitoring > DMAREG_MONITOR_USERFAULTFD) {
        return CFail(EINVAL, absl::StrCat(kCall, ": unknown monitoring ", attr->monitoring));
      }
      if (attr->paging < DMAREG_PAGING_PINNED || attr->paging > DMAREG_PAGING_AUTOMATIC) {
        return CFail(EINVAL, absl::StrCat(kCall, ": unknown paging ", attr->paging));
      }
      options.max_regions = attr->max_regions;
      options.max_bytes = attr->max_bytes;
      options.monitoring = static_cast<dmareg::Monitoring>(attr->monitoring);
      options.paging = static_cast<dmareg::Paging>(attr->paging);
      options.use_environment = attr->no_environment == 0;
    }
    auto cache = dmareg::RegistrationCache::Create(domain->domain, std::move(options));
    if (!cache.ok()) return CFail(kCall, cache.status());
    *out = LiveHandles::New<dmareg_cache>(*std::move(cache));
    return 0;
  });
}

void dmareg_cache_destroy(struct dmareg_cache* cache) {
  LiveHandles::Delete(cache, "dmareg_cache_destroy");
}

int dmareg_acquire(struct dmareg_cache* cache, const void* addr, size_t len, uint32_t access,
                   struct dmareg_reg** out) {
  constexpr char kCall[] = "dmareg_acquire";
  if (out != nullptr) *out = nullptr;  // on every failure, as the header says
  if (int rc = CheckNotNull(kCall, "cache, addr or out", {cache, addr, out}); rc != 0) return rc;
  if (int rc = CheckLength(kCall, len); rc != 0) return rc;
  if (int rc = CheckAccess(kCall, access); rc != 0) return rc;
  return Guarded(kCall, [&] {
    return NewReg(kCall, cache->cache->Acquire(addr, len, dmareg::AccessFlags::FromBits(access)),
                  out);
  });
}

int dmareg_acquire_dmabuf(struct dmareg_cache* cache, int fd, uint64_t offset, size_t len,
                          uint32_t access, struct dmareg_reg** out) {
  constexpr char kCall[] = "dmareg_acquire_dmabuf";
  if (out != nullptr) *out = nullptr;  // on every failure, as the header says
  if (int rc = CheckNotNull(kCall, "cache or out", {cache, out}); rc != 0) return rc;
  if (fd < 0) return CFail(EINVAL, absl::StrCat(kCall, ": bad fd ", fd));
  if (int rc = CheckLength(kCall, len); rc != 0) return rc;
  if (int rc = CheckAccess(kCall, access); rc != 0) return rc;
  return Guarded(kCall, [&] {
    dmareg::DmaBufMemory memory;
    memory.fd = fd;
    memory.offset = offset;
    memory.length = len;
    return NewReg(kCall, cache->cache->Acquire(memory, dmareg::AccessFlags::FromBits(access)), out);
  });
}

uint32_t dmareg_reg_lkey(const struct dmareg_reg* reg) {
  return reg == nullptr ? 0 : reg->reg.lkey();
}

uint32_t dmareg_reg_rkey(const struct dmareg_reg* reg) {
  return reg == nullptr ? 0 : reg->reg.rkey();
}

uint64_t dmareg_reg_iova(const struct dmareg_reg* reg, const void* addr) {
  if (reg == nullptr) return 0;
  if (reg->reg.is_dmabuf()) return reg->reg.IovaForOffset(reinterpret_cast<uintptr_t>(addr));
  return reg->reg.IovaFor(addr);
}

void dmareg_release(struct dmareg_reg* reg) { LiveHandles::Delete(reg, "dmareg_release"); }

int dmareg_invalidate(struct dmareg_cache* cache, const void* addr, size_t len) {
  constexpr char kCall[] = "dmareg_invalidate";
  if (int rc = CheckNotNull(kCall, "cache or addr", {cache, addr}); rc != 0) return rc;
  if (int rc = CheckLength(kCall, len); rc != 0) return rc;
  return Guarded(kCall, [&] {
    if (auto s = cache->cache->Invalidate(addr, len); !s.ok()) return CFail(kCall, s);
    return 0;
  });
}

int dmareg_cache_stats(struct dmareg_cache* cache, struct dmareg_cache_stats* out) {
  if (int rc = CheckNotNull("dmareg_cache_stats", "cache or out", {cache, out}); rc != 0) {
    return rc;
  }
  const dmareg::CacheStats s = cache->cache->stats();
  *out = {};
  out->hits = s.hits;
  out->misses = s.misses;
  out->evictions = s.evictions;
  out->invalidations = s.invalidations;
  out->invalidated_regions = s.invalidated_regions;
  out->registration_failures = s.registration_failures;
  out->monitor_events = s.monitor_events;
  out->uncached_registrations = s.uncached_registrations;
  out->live_regions = s.live_regions;
  out->registered_bytes = s.registered_bytes;
  out->referenced_regions = s.referenced_regions;
  out->dmabuf_hits = s.dmabuf_hits;
  out->dmabuf_misses = s.dmabuf_misses;
  return 0;
}

struct dmareg_monitor* dmareg_cache_monitor(struct dmareg_cache* cache) {
  return cache == nullptr ? nullptr : cache->cache->monitor().c_handle();
}

const char* dmareg_last_error(void) { return dmareg::internal::LastError().c_str(); }

}  // extern "C"
