// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The C face of FakeDomain (dmareg/testing/fake_domain_c.h).
#include <cerrno>
#include <memory>

#include "dmareg/c/testing.h"
#include "dmareg/c_bridge.h"
#include "dmareg/testing/fake_domain.h"

using dmareg::CFail;

extern "C" {

int dmareg_fake_domain_create(struct dmareg_domain** out) {
  if (out == nullptr) return CFail(EINVAL, "dmareg_fake_domain_create: out is NULL");
  *out = nullptr;
  try {
    return dmareg::NewCDomain(std::make_shared<dmareg::testing::FakeDomain>(), out);
  } catch (...) {
    return CFail(ENOMEM, "dmareg_fake_domain_create: out of memory");
  }
}

int64_t dmareg_fake_domain_live_registrations(const struct dmareg_domain* domain) {
  const auto* fake =
      dynamic_cast<const dmareg::testing::FakeDomain*>(dmareg::DomainOfC(domain).get());
  if (fake == nullptr) {
    return CFail(EINVAL, "dmareg_fake_domain_live_registrations: not a fake domain");
  }
  return fake->live_registrations();
}

}  // extern "C"
