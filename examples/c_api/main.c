/* Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
 *
 * c_api: the registration cache from C (dmareg/c/dmareg.h).
 *
 *   c_api            # over the fake domain: no device needed
 *   c_api rxe0       # over a verbs device
 *
 * Registers a buffer, hits on a slice of it, invalidates it (as an
 * allocator would before unmapping it) and prints the cache's counters.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dmareg/c/testing.h"
#include "dmareg/c/verbs.h"

enum { kLen = 1 << 20 };

static int fail(const char* what, int rc) {
  fprintf(stderr, "c_api: %s: %s (%s)\n", what, strerror(-rc), dmareg_last_error());
  return 1;
}

int main(int argc, char** argv) {
  struct dmareg_domain* dom = NULL;
  struct dmareg_cache* cache = NULL;
  struct dmareg_reg* reg = NULL;
  struct dmareg_cache_attr attr;
  struct dmareg_cache_stats st;
  int rc;
  int status = 1;
  char* buf = aligned_alloc(4096, kLen);
  if (buf == NULL) return 1;
  memset(buf, 0, kLen);

  rc = argc > 1 ? dmareg_verbs_domain_open(argv[1], &dom) : dmareg_fake_domain_create(&dom);
  if (rc != 0) {
    status = fail("open the domain", rc);
    goto out;
  }
  /* The application tells the cache when memory goes (dmareg_invalidate). */
  memset(&attr, 0, sizeof(attr));
  attr.monitoring = DMAREG_MONITOR_EXPLICIT;
  if ((rc = dmareg_cache_create(dom, &attr, &cache)) != 0) {
    status = fail("dmareg_cache_create", rc);
    goto out;
  }

  for (int i = 0; i < 2; i++) { /* a miss, then a hit on a slice */
    const char* p = buf + i * 4096;
    if ((rc = dmareg_acquire(cache, p, kLen / 2 - i * 4096, DMAREG_ACCESS_LOCAL_WRITE, &reg)) !=
        0) {
      status = fail("dmareg_acquire", rc);
      goto out;
    }
    printf("lkey 0x%x iova 0x%llx\n", dmareg_reg_lkey(reg),
           (unsigned long long)dmareg_reg_iova(reg, p));
    dmareg_release(reg);
    reg = NULL;
  }
  if ((rc = dmareg_invalidate(cache, buf, kLen)) != 0) {
    status = fail("dmareg_invalidate", rc);
    goto out;
  }
  if ((rc = dmareg_cache_stats(cache, &st)) != 0) {
    status = fail("dmareg_cache_stats", rc);
    goto out;
  }
  printf("hits %llu misses %llu invalidated %llu live %llu\n", (unsigned long long)st.hits,
         (unsigned long long)st.misses, (unsigned long long)st.invalidated_regions,
         (unsigned long long)st.live_regions);
  status = st.hits == 1 && st.live_regions == 0 ? 0 : 1;

out:
  dmareg_cache_destroy(cache);
  dmareg_domain_close(dom);
  free(buf);
  return status;
}
