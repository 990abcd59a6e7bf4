/* Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
 *
 * libibverbs' own IBV_ACCESS_* constants through the C API, from C: the
 * DMAREG_ACCESS_* bits are the same values, so a caller used to ibv_reg_mr
 * gets the rights it names. verbs_capi_access_test.cc runs the cases over a
 * VerbsDomain on a fake device; each returns 0 or the failing line.
 */
#include <errno.h>
#include <infiniband/verbs.h>
#include <stddef.h>
#include <string.h>

#include "dmareg/c/dmareg.h"

_Static_assert(DMAREG_ACCESS_LOCAL_WRITE == IBV_ACCESS_LOCAL_WRITE, "local write");
_Static_assert(DMAREG_ACCESS_REMOTE_WRITE == IBV_ACCESS_REMOTE_WRITE, "remote write");
_Static_assert(DMAREG_ACCESS_REMOTE_READ == IBV_ACCESS_REMOTE_READ, "remote read");
_Static_assert(DMAREG_ACCESS_REMOTE_ATOMIC == IBV_ACCESS_REMOTE_ATOMIC, "remote atomic");
_Static_assert(DMAREG_ACCESS_RELAXED_ORDERING == IBV_ACCESS_RELAXED_ORDERING, "relaxed ordering");

#define CHECK(cond)  \
  do {               \
    if (!(cond)) {   \
      rc = __LINE__; \
      goto out;      \
    }                \
  } while (0)

/* A cache over `dom` (explicit monitoring, no environment) and a
 * registration of [buf, buf + len) asked for with IBV_ACCESS_LOCAL_WRITE |
 * IBV_ACCESS_REMOTE_WRITE; the caller releases both. */
int verbs_capi_acquire_ibv_remote_write(struct dmareg_domain* dom, void* buf, size_t len,
                                        struct dmareg_cache** cache, struct dmareg_reg** reg) {
  struct dmareg_cache_attr attr;
  int rc = 0;
  memset(&attr, 0, sizeof(attr));
  attr.monitoring = DMAREG_MONITOR_EXPLICIT;
  attr.no_environment = 1;
  *cache = NULL;
  *reg = NULL;
  CHECK(dmareg_cache_create(dom, &attr, cache) == 0);
  CHECK(dmareg_acquire(*cache, buf, len, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE, reg) ==
        0);
  CHECK(dmareg_reg_rkey(*reg) != 0);
out:
  return rc;
}

/* With that registration held: remote write was granted (a request for it
 * is a hit), remote read was not (a request for it registers anew); an
 * IBV_ACCESS_* bit dmareg has no right for is refused. */
int verbs_capi_rights_as_named(struct dmareg_cache* cache, void* buf, size_t len) {
  struct dmareg_reg* write = NULL;
  struct dmareg_reg* read = NULL;
  struct dmareg_reg* bad = NULL;
  struct dmareg_cache_stats st;
  int rc = 0;
  CHECK(dmareg_acquire(cache, buf, len, DMAREG_ACCESS_REMOTE_WRITE, &write) == 0);
  CHECK(dmareg_cache_stats(cache, &st) == 0);
  CHECK(st.hits == 1 && st.misses == 1);
  CHECK(dmareg_acquire(cache, buf, len, IBV_ACCESS_REMOTE_READ, &read) == 0);
  CHECK(dmareg_cache_stats(cache, &st) == 0);
  CHECK(st.hits == 1 && st.misses == 2);
  CHECK(dmareg_reg_rkey(read) != dmareg_reg_rkey(write));
  CHECK(dmareg_acquire(cache, buf, len, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_ON_DEMAND, &bad) ==
        -EINVAL);
  CHECK(bad == NULL && strstr(dmareg_last_error(), "unknown access bits") != NULL);
out:
  dmareg_release(write);
  dmareg_release(read);
  return rc;
}
