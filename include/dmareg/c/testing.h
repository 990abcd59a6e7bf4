/* Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
 *
 * c/testing.h: a FakeDomain for tests of C code over dmareg/c/dmareg.h
 * (libdmareg_testing), with its count of live registrations.
 *
 *   struct dmareg_domain* dom;
 *   if (dmareg_fake_domain_create(&dom) != 0) return -1;
 *   ...dmareg_cache_create(dom, ...), acquire, release, destroy...
 *   assert(dmareg_fake_domain_live_registrations(dom) == 0);
 *   dmareg_domain_close(dom);
 */
#ifndef DMAREG_C_TESTING_H_
#define DMAREG_C_TESTING_H_

#include <stdint.h>

#include "dmareg/c/dmareg.h"

#pragma GCC visibility push(default)

#ifdef __cplusplus
extern "C" {
#endif

/* A domain over a new dmareg::testing::FakeDomain. */
int dmareg_fake_domain_create(struct dmareg_domain** out);
/* Registrations the fake holds now; -EINVAL if `domain` is no fake. */
int64_t dmareg_fake_domain_live_registrations(const struct dmareg_domain* domain);

#ifdef __cplusplus
}  // extern "C"
#endif

#pragma GCC visibility pop

#endif /* DMAREG_C_TESTING_H_ */
