// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// c_handles.h: what the C API's opaque handles hold, and its error edge,
// shared by the core (src/capi/dmareg_c.cc) and the libraries that make
// domains for C callers (verbs, testing).
//
//   int dmareg_x_domain_open(..., struct dmareg_domain** out) {
//     if (out == nullptr) return dmareg::internal::CFail(EINVAL, "x: out is NULL");
//     auto d = XDomain::Open(...);
//     if (!d.ok()) return dmareg::internal::CFail("x", d.status());
//     return dmareg::internal::NewCDomain(*std::move(d), out);
//   }
#ifndef DMAREG_SRC_CAPI_C_HANDLES_H_
#define DMAREG_SRC_CAPI_C_HANDLES_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "dmareg/c/dmareg.h"
#include "dmareg/domain.h"

struct dmareg_domain {
  std::shared_ptr<dmareg::Domain> domain;
};

namespace dmareg::internal {

// The negative errno for `status` (see dmareg/c/dmareg.h for the mapping).
int StatusToNegErrno(const absl::Status& status);
// Records the message as this thread's last error; returns -err.
int CFail(int err, const std::string& message);
// Records the status, led by the C call that failed
// ("dmareg_verbs_domain_open: no RDMA device named ..."), as this thread's
// last error; returns the status's negative errno.
int CFail(const char* call, const absl::Status& status);
// Hands `domain` to C in *out; 0, or -ENOMEM.
int NewCDomain(std::shared_ptr<Domain> domain, dmareg_domain** out) noexcept;

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_CAPI_C_HANDLES_H_
