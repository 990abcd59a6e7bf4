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

  // Precondition for every accessor below: valid().
  uint32_t lkey() const { return info_->lkey; }
  uint32_t rkey() const { return info_->rkey; }
  uint64_t iova() const { return info_->iova; }
  const void* addr() const { return reinterpret_cast<const void*>(info_->addr); }
  size_t length() const { return info_->length; }
  AccessFlags access() const { return info_->access; }
  bool is_dmabuf() const { return info_->dmabuf; }
  // A dma-buf slice the device reaches through the buffer's CPU alias (the
  // fallback of DmaBufPolicy); the keys and IOVA work alike.
  bool via_alias() const { return info_->via_alias; }
  const RegistrationInfo& info() const { return *info_; }

  // The device address of host byte `p` (which must lie inside the span).
  uint64_t IovaFor(const void* p) const {
    return info_->iova + (reinterpret_cast<uintptr_t>(p) - info_->addr);
  }
  // The device address of dma-buf offset `offset` (dma-buf handles).
  uint64_t IovaForOffset(uint64_t offset) const { return info_->iova + (offset - info_->addr); }

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
