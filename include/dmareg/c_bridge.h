// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// c_bridge.h: between the C API (dmareg/c/dmareg.h) and C++, for a library
// that gives C callers a domain of its own: dmareg's backends (their
// dmareg_<backend>_domain_open, dmareg/c/verbs.h) and yours. A C handle,
// `struct dmareg_domain*`, holds a reference on a C++ `Domain`; these make
// one, read one back, and fail the way every C entry point does (a negative
// errno, with the message dmareg_last_error() returns on this thread).
//
//   extern "C" int mydev_domain_open(const char* name, struct dmareg_domain** out) {
//     if (out == nullptr) return dmareg::CFail(EINVAL, "mydev_domain_open: out is NULL");
//     *out = nullptr;
//     absl::StatusOr<std::shared_ptr<MyDomain>> d = MyDomain::Open(name);
//     if (!d.ok()) return dmareg::CFail("mydev_domain_open", d.status());
//     return dmareg::NewCDomain(*std::move(d), out);   // dmareg_domain_close frees it
//   }
//
//   // and back, for a C++ part that needs the domain behind a C handle:
//   std::shared_ptr<dmareg::Domain> domain = dmareg::DomainOfC(handle);

#ifndef DMAREG_C_BRIDGE_H_
#define DMAREG_C_BRIDGE_H_

#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "dmareg/c/dmareg.h"
#include "dmareg/domain.h"

#pragma GCC visibility push(default)

namespace dmareg {

// Hands `domain` to a C caller: *out becomes a new handle holding it (the
// caller closes it with dmareg_domain_close). 0; or -ENOMEM, recorded as
// this thread's last error, with *out untouched.
int NewCDomain(std::shared_ptr<Domain> domain, dmareg_domain** out) noexcept;

// The domain a C handle holds; null for a null handle.
std::shared_ptr<Domain> DomainOfC(const dmareg_domain* domain) noexcept;

// Records "<call>: <status>" as this thread's last error (dmareg_last_error)
// and returns the status's negative errno: the errno of an ErrnoStatus
// (dmareg/errno_status.h), else by code as dmareg/c/dmareg.h lists; 0 for OK.
int CFail(const char* call, const absl::Status& status);
// Records `message` as this thread's last error; returns -err.
int CFail(int err, std::string_view message);

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_C_BRIDGE_H_
