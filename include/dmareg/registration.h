// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// registration.h: a handle on a cached device mapping.
//
// A `Registration` is what `RegistrationCache::Acquire()` returns: the keys
// and IOVA a device uses for a span of memory that covers the request. It
// holds one reference on the cached mapping; the mapping is never evicted or
// deregistered while a handle refers to it, and an invalidated mapping is
// deregistered when its last handle goes away. Movable, not copyable; an
// empty (moved-from or default) handle refers to nothing.
//
//   absl::StatusOr<dmareg::Registration> reg = cache->Acquire(
//       dmareg::HostMemory{buf, len}, dmareg::Access::kLocalWrite);
//   if (!reg.ok()) return reg.status();
//   sge.lkey = reg->lkey();
//   sge.addr = reg->IovaFor(buf);   // the device address of `buf`
//
// A handle must not outlive the `Domain` it came from. It may outlive the
// cache: the mapping is then released when the handle goes.

#ifndef DMAREG_REGISTRATION_H_
#define DMAREG_REGISTRATION_H_

#include <cstddef>
#include <cstdint>
#include <utility>

#include "dmareg/access.h"

#pragma GCC visibility push(default)

namespace dmareg {

// The immutable description of one cached mapping. Read through a handle.
struct RegistrationInfo {
  uintptr_t addr = 0;  // first byte covered (page-aligned for host memory)
  size_t length = 0;   // bytes covered
  uint64_t iova = 0;   // device address of `addr`
  uint32_t lkey = 0;
  uint32_t rkey = 0;
  AccessFlags access{};    // what the mapping was registered with
  bool dmabuf = false;     // a dma-buf slice; `addr` is then the slice offset
  bool via_alias = false;  // a dma-buf slice registered through its CPU alias
};

namespace internal {
struct SetAccess;
}  // namespace internal

class Registration {
 public:
  Registration() = default;
  Registration(Registration&& other) noexcept : info_(std::exchange(other.info_, nullptr)) {}
  Registration& operator=(Registration&& other) noexcept {
    if (this != &other) {
      Reset();
      info_ = std::exchange(other.info_, nullptr);
    }
    return *this;
  }
  Registration(const Registration&) = delete;
  Registration& operator=(const Registration&) = delete;
  ~Registration() { Reset(); }

  // Drops the reference now; the handle becomes empty.
  void Reset() noexcept {
    if (info_ != nullptr) Release(std::exchange(info_, nullptr));
  }

  bool valid() const { return info_ != nullptr; }
  explicit operator bool() const { return valid(); }

  // An empty handle reads as a mapping of nothing: keys, IOVA, address and
  // length 0, no access (as the C API's accessors answer for NULL). So a
  // forgotten check yields a key the device refuses, never a crash.
  uint32_t lkey() const { return info_ != nullptr ? info_->lkey : 0; }
  uint32_t rkey() const { return info_ != nullptr ? info_->rkey : 0; }
  uint64_t iova() const { return info_ != nullptr ? info_->iova : 0; }
  const void* addr() const {
    return info_ != nullptr ? reinterpret_cast<const void*>(info_->addr) : nullptr;
  }
  size_t length() const { return info_ != nullptr ? info_->length : 0; }
  AccessFlags access() const { return info_ != nullptr ? info_->access : AccessFlags(); }
  bool is_dmabuf() const { return info_ != nullptr && info_->dmabuf; }
  // A dma-buf slice the device reaches through the buffer's CPU alias (the
  // fallback of DmaBufPolicy); the keys and IOVA work alike.
  bool via_alias() const { return info_ != nullptr && info_->via_alias; }
  // All of the above at once (a copy: all zero from an empty handle).
  RegistrationInfo info() const { return info_ != nullptr ? *info_ : RegistrationInfo{}; }

  // The device address of host byte `p` (which must lie inside the span);
  // 0 from an empty handle.
  uint64_t IovaFor(const void* p) const {
    return info_ == nullptr ? 0 : info_->iova + (reinterpret_cast<uintptr_t>(p) - info_->addr);
  }
  // The device address of dma-buf offset `offset` (dma-buf handles); 0
  // from an empty handle.
  uint64_t IovaForOffset(uint64_t offset) const {
    return info_ == nullptr ? 0 : info_->iova + (offset - info_->addr);
  }

  // True if both handles refer to the same cached mapping.
  bool SameMapping(const Registration& o) const { return info_ == o.info_; }

 private:
  friend class RegistrationCache;
  friend struct internal::SetAccess;
  explicit Registration(const RegistrationInfo* info) : info_(info) {}
  // Drops the reference `info` holds (defined by the cache). Exported: the
  // inline Reset of every program calls it (docs/abi.md).
  static void Release(const RegistrationInfo* info) noexcept;
  const RegistrationInfo* info_ = nullptr;
};

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_REGISTRATION_H_
