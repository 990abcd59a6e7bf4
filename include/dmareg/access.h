// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// access.h: the rights a device mapping grants.
//
// `AccessFlags` is a small bit set. Local read is always granted; everything
// else is asked for explicitly. Unknown bits are rejected by
// `ValidateAccess()` (and by every entry point that takes access flags), so a
// caller built against a newer header never gets silently weaker mappings.
//
// Example:
//
//   dmareg::AccessFlags access =
//       dmareg::Access::kLocalWrite | dmareg::Access::kRemoteWrite;
//   auto reg = cache->Acquire(dmareg::HostMemory{buf, len}, access);
//
// Remote write and remote atomic imply local write (the verbs rule), and the
// library adds it for you: see `NormalizeAccess()`.
//
// Relaxed ordering is a hint, not a right: a mapping registered *without* it
// serves a request that asks for it, never the other way round.
//
// The bits are libibverbs' own IBV_ACCESS_* values (the C API's
// DMAREG_ACCESS_* too), so flags written for ibv_reg_mr mean the same here
// and a mix-up cannot swap remote read and remote write. The core does not
// include <infiniband/verbs.h>; the verbs backend checks the values at
// compile time. Paging is not an access bit: IBV_ACCESS_ON_DEMAND and the
// other IBV_ACCESS_* bits dmareg does not know are refused as unknown.

#ifndef DMAREG_ACCESS_H_
#define DMAREG_ACCESS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"

#pragma GCC visibility push(default)

namespace dmareg {

// Values: IBV_ACCESS_LOCAL_WRITE, _REMOTE_WRITE, _REMOTE_READ,
// _REMOTE_ATOMIC and _RELAXED_ORDERING.
enum class Access : uint32_t {
  kNone = 0,
  kLocalWrite = 1u << 0,
  kRemoteWrite = 1u << 1,
  kRemoteRead = 1u << 2,
  kRemoteAtomic = 1u << 3,
  kRelaxedOrdering = 1u << 20,
};

// A set of `Access` bits. Trivially copyable; compares by value.
class AccessFlags {
 public:
  constexpr AccessFlags() = default;
  constexpr AccessFlags(Access a) : bits_(static_cast<uint32_t>(a)) {}  // NOLINT
  static constexpr AccessFlags FromBits(uint32_t bits) {
    AccessFlags f;
    f.bits_ = bits;
    return f;
  }

  constexpr uint32_t bits() const { return bits_; }
  constexpr bool Has(AccessFlags other) const { return (bits_ & other.bits_) == other.bits_; }
  constexpr bool empty() const { return bits_ == 0; }

  constexpr AccessFlags operator|(AccessFlags o) const { return FromBits(bits_ | o.bits_); }
  constexpr AccessFlags operator&(AccessFlags o) const { return FromBits(bits_ & o.bits_); }
  constexpr AccessFlags Without(AccessFlags o) const { return FromBits(bits_ & ~o.bits_); }
  constexpr AccessFlags& operator|=(AccessFlags o) {
    bits_ |= o.bits_;
    return *this;
  }
  constexpr bool operator==(const AccessFlags&) const = default;

 private:
  uint32_t bits_ = 0;
};

constexpr AccessFlags operator|(Access a, Access b) { return AccessFlags(a) | b; }

// Every bit this version of the library knows.
inline constexpr AccessFlags kAllAccess = Access::kLocalWrite | Access::kRemoteRead |
                                          Access::kRemoteWrite | Access::kRemoteAtomic |
                                          Access::kRelaxedOrdering;

// The rights part (everything but the ordering hint).
inline constexpr AccessFlags kAccessRights = kAllAccess.Without(Access::kRelaxedOrdering);

// InvalidArgument naming the unknown bits, or OK.
absl::Status ValidateAccess(AccessFlags access);

// Adds the rights that others imply (remote write/atomic need local write).
constexpr AccessFlags NormalizeAccess(AccessFlags a) {
  if (a.bits() & (AccessFlags(Access::kRemoteWrite) | Access::kRemoteAtomic).bits()) {
    a |= Access::kLocalWrite;
  }
  return a;
}

// True when a mapping registered with `have` may serve a request for `want`:
// every right of `want` is in `have`, and `have` is not relaxed-ordered
// unless `want` allows it.
constexpr bool AccessSatisfies(AccessFlags have, AccessFlags want) {
  if (!(have & kAccessRights).Has(want & kAccessRights)) return false;
  return !have.Has(Access::kRelaxedOrdering) || want.Has(Access::kRelaxedOrdering);
}

// The weakest flags that satisfy both `a` and `b`.
constexpr AccessFlags AccessUnion(AccessFlags a, AccessFlags b) {
  AccessFlags rights = (a | b) & kAccessRights;
  if (a.Has(Access::kRelaxedOrdering) && b.Has(Access::kRelaxedOrdering)) {
    rights |= Access::kRelaxedOrdering;
  }
  return rights;
}

// "LOCAL_WRITE|REMOTE_READ", "NONE", with unknown bits as hex.
std::string AccessToString(AccessFlags access);

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_ACCESS_H_
