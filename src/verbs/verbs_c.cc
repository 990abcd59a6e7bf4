// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// dmareg_verbs_domain_open/_wrap (dmareg/c/verbs.h): the C API's verbs
// domains. Here, not in the core, so that the core needs no libibverbs.
#include <cerrno>
#include <string_view>
#include <utility>

#include "dmareg/c/verbs.h"
#include "dmareg/c_bridge.h"
#include "dmareg/verbs/verbs_domain.h"

using dmareg::CFail;

extern "C" {

int dmareg_verbs_domain_open(const char* device, struct dmareg_domain** out) {
  if (out == nullptr) return CFail(EINVAL, "dmareg_verbs_domain_open: out is NULL");
  *out = nullptr;
  try {
    auto domain = dmareg::VerbsDomain::Open(device == nullptr ? std::string_view() : device);
    if (!domain.ok()) return CFail("dmareg_verbs_domain_open", domain.status());
    return dmareg::NewCDomain(*std::move(domain), out);
  } catch (...) {
    return CFail(ENOMEM, "dmareg_verbs_domain_open: out of memory");
  }
}

int dmareg_verbs_domain_wrap(struct ibv_pd* pd, struct dmareg_domain** out) {
  if (out != nullptr) *out = nullptr;
  if (pd == nullptr || out == nullptr) {
    return CFail(EINVAL, "dmareg_verbs_domain_wrap: pd or out is NULL");
  }
  try {
    auto domain = dmareg::VerbsDomain::Wrap(pd);
    if (!domain.ok()) return CFail("dmareg_verbs_domain_wrap", domain.status());
    return dmareg::NewCDomain(*std::move(domain), out);
  } catch (...) {
    return CFail(ENOMEM, "dmareg_verbs_domain_wrap: out of memory");
  }
}

}  // extern "C"
