/* Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
 *
 * c/verbs.h: verbs domains for C callers (library dmareg_verbs), the
 * domains that dmareg/c/dmareg.h's caches register through.
 *
 *   struct dmareg_domain* dom;
 *   if (dmareg_verbs_domain_open("rxe0", &dom) != 0)   // "" or NULL: first device
 *     fprintf(stderr, "dmareg: %s\n", dmareg_last_error());
 *
 * Errors as in dmareg/c/dmareg.h: 0 or a negative errno, the message in
 * dmareg_last_error().
 */
#ifndef DMAREG_C_VERBS_H_
#define DMAREG_C_VERBS_H_

#include "dmareg/c/dmareg.h"

#pragma GCC visibility push(default)

#ifdef __cplusplus
extern "C" {
#endif

struct ibv_pd;

/* Verbs domains (libdmareg_verbs). device: NULL or "" for the first one.
 * wrap: the PD stays the caller's; release every registration, destroy
 * every cache and close the domain before ibv_dealloc_pd. */
int dmareg_verbs_domain_open(const char* device, struct dmareg_domain** out);
int dmareg_verbs_domain_wrap(struct ibv_pd* pd, struct dmareg_domain** out);

#ifdef __cplusplus
}  // extern "C"
#endif

#pragma GCC visibility pop

#endif /* DMAREG_C_VERBS_H_ */
