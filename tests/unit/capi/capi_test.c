/* Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
 *
 * The C API (dmareg/c/dmareg.h) called from C over the fake domain. Each
 * case returns 0, or the line of the first check that failed;
 * capi_test.cc runs them under GoogleTest.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dmareg/c/dmareg.h"
#include "dmareg/c/testing.h"

#define CHECK(cond)  \
  do {               \
    if (!(cond)) {   \
      rc = __LINE__; \
      goto out;      \
    }                \
  } while (0)

enum { kLen = 3 * 4096 };

static int make_cache(struct dmareg_domain** dom, struct dmareg_cache** cache) {
  struct dmareg_cache_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.monitoring = DMAREG_MONITOR_EXPLICIT;
  attr.no_environment = 1;
  if (dmareg_fake_domain_create(dom) != 0) return -1;
  if (dmareg_cache_create(*dom, &attr, cache) != 0) {
    dmareg_domain_close(*dom);
    return -1;
  }
  return 0;
}

int capi_acquire_hit_invalidate(void) {
  struct dmareg_domain* dom = NULL;
  struct dmareg_cache* cache = NULL;
  struct dmareg_reg* a = NULL;
  struct dmareg_reg* b = NULL;
  struct dmareg_cache_stats st;
  char* buf = aligned_alloc(4096, kLen);
  int rc = 0;
  CHECK(buf != NULL);
  CHECK(make_cache(&dom, &cache) == 0);

  CHECK(dmareg_acquire(cache, buf, kLen, DMAREG_ACCESS_LOCAL_WRITE, &a) == 0);
  CHECK(dmareg_reg_lkey(a) != 0);
  CHECK(dmareg_reg_iova(a, buf + 100) == dmareg_reg_iova(a, buf) + 100);
  CHECK(dmareg_acquire(cache, buf + 4096, 4096, DMAREG_ACCESS_LOCAL_WRITE, &b) == 0);
  CHECK(dmareg_reg_lkey(b) == dmareg_reg_lkey(a));
  CHECK(dmareg_cache_stats(cache, &st) == 0);
  CHECK(st.hits == 1 && st.misses == 1 && st.live_regions == 1 && st.referenced_regions == 1);
  CHECK(dmareg_fake_domain_live_registrations(dom) == 1);
  dmareg_release(a);
  a = NULL;
  dmareg_release(b);
  b = NULL;

  CHECK(dmareg_invalidate(cache, buf, kLen) == 0);
  CHECK(dmareg_fake_domain_live_registrations(dom) == 0);
  CHECK(dmareg_acquire(cache, buf, kLen, DMAREG_ACCESS_REMOTE_READ, &a) == 0);
  CHECK(dmareg_cache_stats(cache, &st) == 0);
  CHECK(st.misses == 2 && st.hits == 1 && st.invalidations == 1 && st.invalidated_regions == 1);
  CHECK(dmareg_fake_domain_live_registrations(dom) == 1);

out:
  dmareg_release(a);
  dmareg_release(b);
  dmareg_cache_destroy(cache);
  if (rc == 0 && dom != NULL && dmareg_fake_domain_live_registrations(dom) != 0) rc = __LINE__;
  dmareg_domain_close(dom);
  free(buf);
  return rc;
}

/* A registration may outlive its cache and its domain handle. */
int capi_release_after_destroy(void) {
  struct dmareg_domain* dom = NULL;
  struct dmareg_cache* cache = NULL;
  struct dmareg_reg* a = NULL;
  char* buf = aligned_alloc(4096, kLen);
  int rc = 0;
  CHECK(buf != NULL);
  CHECK(make_cache(&dom, &cache) == 0);
  CHECK(dmareg_acquire(cache, buf, kLen, DMAREG_ACCESS_LOCAL_WRITE, &a) == 0);
  dmareg_cache_destroy(cache);
  cache = NULL;
  CHECK(dmareg_reg_lkey(a) != 0);
out:
  dmareg_release(a);
  dmareg_cache_destroy(cache);
  if (rc == 0 && dmareg_fake_domain_live_registrations(dom) != 0) rc = __LINE__;
  dmareg_domain_close(dom);
  free(buf);
  return rc;
}

static int has(const char* needle) { return strstr(dmareg_last_error(), needle) != NULL; }

int capi_bad_input(void) {
  struct dmareg_domain* dom = NULL;
  struct dmareg_cache* cache = NULL;
  struct dmareg_reg* r = NULL;
  struct dmareg_cache_attr attr;
  char* buf = aligned_alloc(4096, kLen);
  int rc = 0;
  CHECK(buf != NULL);
  CHECK(make_cache(&dom, &cache) == 0);

  /* A failure clears the out-parameter, whatever was refused (the fuzzer
   * found a NULL cache leaving it as it was). */
  r = (struct dmareg_reg*)buf;
  CHECK(dmareg_acquire(NULL, buf, kLen, 0, &r) == -EINVAL && has("NULL") && r == NULL);
  r = (struct dmareg_reg*)buf;
  CHECK(dmareg_acquire(cache, NULL, kLen, 0, &r) == -EINVAL && has("NULL") && r == NULL);
  r = (struct dmareg_reg*)buf;
  CHECK(dmareg_acquire_dmabuf(NULL, 3, 0, kLen, 0, &r) == -EINVAL && r == NULL);
  CHECK(dmareg_acquire(cache, buf, kLen, 0, NULL) == -EINVAL && has("NULL"));
  CHECK(dmareg_acquire(cache, buf, 0, 0, &r) == -EINVAL && has("zero length"));
  CHECK(dmareg_acquire(cache, buf, kLen, 1u << 30, &r) == -EINVAL && has("unknown access"));
  CHECK(r == NULL);
  CHECK(dmareg_acquire_dmabuf(cache, -1, 0, kLen, 0, &r) == -EINVAL && has("bad fd"));
  CHECK(dmareg_invalidate(cache, buf, 0) == -EINVAL && has("zero length"));
  CHECK(dmareg_cache_stats(cache, NULL) == -EINVAL);
  {
    struct dmareg_cache* other = cache;
    CHECK(dmareg_cache_create(NULL, NULL, &other) == -EINVAL && other == NULL);
  }
  memset(&attr, 0, sizeof(attr));
  attr.monitoring = 7;
  CHECK(dmareg_invalidate(NULL, buf, kLen) == -EINVAL);
  {
    struct dmareg_cache* other = NULL;
    CHECK(dmareg_cache_create(dom, &attr, &other) == -EINVAL && has("monitoring"));
    CHECK(other == NULL);
    /* Just past the last kind, and below the first. */
    attr.monitoring = DMAREG_MONITOR_USERFAULTFD + 1;
    CHECK(dmareg_cache_create(dom, &attr, &other) == -EINVAL && has("monitoring"));
    attr.monitoring = -1;
    CHECK(dmareg_cache_create(dom, &attr, &other) == -EINVAL && has("monitoring"));
    CHECK(other == NULL);
  }
  CHECK(dmareg_fake_domain_create(NULL) == -EINVAL);
  CHECK(dmareg_fake_domain_live_registrations(NULL) == -EINVAL);
  CHECK(dmareg_reg_lkey(NULL) == 0 && dmareg_reg_iova(NULL, buf) == 0);
  dmareg_release(NULL);
  dmareg_cache_destroy(NULL);
  dmareg_domain_close(NULL);
  /* Success leaves the last error. */
  CHECK(dmareg_acquire(cache, buf, kLen, DMAREG_ACCESS_LOCAL_WRITE, &r) == 0 &&
        has("not a fake domain"));
  CHECK(dmareg_fake_domain_live_registrations(dom) == 1);
out:
  dmareg_release(r);
  dmareg_cache_destroy(cache);
  if (rc == 0 && dmareg_fake_domain_live_registrations(dom) != 0) rc = __LINE__;
  dmareg_domain_close(dom);
  free(buf);
  return rc;
}

/* The cache's own monitor, from C: a notification through it retires the
 * cached mapping over the range; one still held stays usable. */
int capi_cache_monitor_notify(void) {
  struct dmareg_domain* dom = NULL;
  struct dmareg_cache* cache = NULL;
  struct dmareg_reg* a = NULL;
  struct dmareg_reg* held = NULL;
  struct dmareg_monitor* monitor = NULL;
  struct dmareg_cache_stats st;
  char* buf = aligned_alloc(4096, 2 * kLen);
  int rc = 0;
  CHECK(buf != NULL);
  CHECK(dmareg_cache_monitor(NULL) == NULL);
  CHECK(make_cache(&dom, &cache) == 0);
  monitor = dmareg_cache_monitor(cache);
  CHECK(monitor != NULL && monitor == dmareg_cache_monitor(cache));

  CHECK(dmareg_acquire(cache, buf, kLen, DMAREG_ACCESS_LOCAL_WRITE, &a) == 0);
  dmareg_release(a); /* cached, idle */
  a = NULL;
  CHECK(dmareg_acquire(cache, buf + kLen, kLen, DMAREG_ACCESS_LOCAL_WRITE, &held) == 0);
  CHECK(dmareg_fake_domain_live_registrations(dom) == 2);

  CHECK(dmareg_monitor_notify(monitor, buf, 2 * kLen) == 0);
  CHECK(dmareg_monitor_notify(monitor, buf, 0) == -EINVAL);
  /* The next request applies the event: a miss, over a new mapping. */
  CHECK(dmareg_acquire(cache, buf, kLen, DMAREG_ACCESS_LOCAL_WRITE, &a) == 0);
  CHECK(dmareg_cache_stats(cache, &st) == 0);
  CHECK(st.hits == 0 && st.misses == 3 && st.monitor_events >= 1);
  /* The idle mapping is gone; the held one lives until its release. */
  CHECK(dmareg_fake_domain_live_registrations(dom) == 2);
  CHECK(dmareg_reg_lkey(held) != 0);
  dmareg_release(held);
  held = NULL;
  CHECK(dmareg_fake_domain_live_registrations(dom) == 1);

out:
  dmareg_release(a);
  dmareg_release(held);
  dmareg_cache_destroy(cache);
  if (rc == 0 && dom != NULL && dmareg_fake_domain_live_registrations(dom) != 0) rc = __LINE__;
  dmareg_domain_close(dom);
  free(buf);
  return rc;
}

/* A zeroed attr, like a NULL one, reads the DMAREG_* environment (a bad
 * value there fails naming it); no_environment ignores it. */
int capi_attr_reads_the_environment(void) {
  struct dmareg_domain* dom = NULL;
  struct dmareg_cache* cache = NULL;
  struct dmareg_cache_attr attr;
  int rc = 0;
  CHECK(dmareg_fake_domain_create(&dom) == 0);
  CHECK(setenv("DMAREG_MAX_REGIONS", "many", 1) == 0);
  memset(&attr, 0, sizeof(attr));
  attr.monitoring = DMAREG_MONITOR_EXPLICIT;
  CHECK(dmareg_cache_create(dom, &attr, &cache) == -EINVAL && has("DMAREG_MAX_REGIONS"));
  CHECK(cache == NULL);
  attr.no_environment = 1;
  CHECK(dmareg_cache_create(dom, &attr, &cache) == 0);
  dmareg_cache_destroy(cache);
  cache = NULL;
  CHECK(setenv("DMAREG_MAX_REGIONS", "7", 1) == 0);
  CHECK(setenv("DMAREG_MONITOR", "explicit", 1) == 0);
  CHECK(dmareg_cache_create(dom, NULL, &cache) == 0);
out:
  unsetenv("DMAREG_MAX_REGIONS");
  unsetenv("DMAREG_MONITOR");
  dmareg_cache_destroy(cache);
  dmareg_domain_close(dom);
  return rc;
}
