/* Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
 *
 * c/dmareg.h: the core's C API (library dmareg): the registration
 * cache for C callers (rdma-core, UCX and libfabric providers are C), and
 * the explicit notification of a memory monitor. Opaque handles; every call
 * that can fail returns 0 or a negative errno, and dmareg_last_error() then
 * says why. A domain comes from a backend's C header (dmareg/c/verbs.h).
 *
 *   struct dmareg_domain* dom;   // from a backend: dmareg/c/verbs.h
 *   struct dmareg_cache* cache;
 *   struct dmareg_reg* reg;
 *   if (dmareg_verbs_domain_open("rxe0", &dom) != 0 ||       // "" or NULL: first device
 *       dmareg_cache_create(dom, NULL, &cache) != 0) {        // NULL: defaults + DMAREG_*
 *     fprintf(stderr, "dmareg: %s\n", dmareg_last_error());
 *     return 1;
 *   }
 *   if (dmareg_acquire(cache, buf, len, DMAREG_ACCESS_LOCAL_WRITE, &reg) == 0) {
 *     sge.lkey = dmareg_reg_lkey(reg);
 *     sge.addr = dmareg_reg_iova(reg, buf);
 *     ...post, wait for the completion...
 *     dmareg_release(reg);
 *   }
 *   dmareg_cache_destroy(cache);
 *   dmareg_domain_close(dom);
 *
 * absl::Status codes map to errno as follows: the errno the failing system
 * call reported when there is one; otherwise InvalidArgument -EINVAL,
 * OutOfRange -ERANGE, NotFound -ENOENT, AlreadyExists -EEXIST,
 * PermissionDenied -EACCES, FailedPrecondition -EPERM (the operation is not
 * permitted in this state, e.g. a monitor the kernel refuses),
 * ResourceExhausted -ENOMEM, Unimplemented -EOPNOTSUPP, Unavailable -EAGAIN,
 * Aborted and Cancelled -ECANCELED, DeadlineExceeded -ETIMEDOUT, anything
 * else -EIO. A call that fails sets its out-parameter (where not NULL) to
 * NULL, whatever the reason.
 *
 * Thread safety: as the C++ API. A cache may be used from many threads; a
 * registration handle belongs to one thread at a time. Handles are released
 * in any order: a registration outlives its cache, a cache its domain.
 *
 * Misuse: releasing, destroying or closing a handle twice, or a pointer that
 * was never a handle, logs a warning and does nothing else (the library
 * keeps the set of live handles). Any other use of a released handle is
 * undefined, as with free(). A zeroed dmareg_cache_attr and a NULL attr
 * mean the same: the defaults, adjusted by the DMAREG_* environment.
 */
#ifndef DMAREG_C_DMAREG_H_
#define DMAREG_C_DMAREG_H_

#include <stddef.h>
#include <stdint.h>

#include "dmareg/version.h" /* DMAREG_VERSION*, dmareg_version() */

#pragma GCC visibility push(default)

#ifdef __cplusplus
extern "C" {
#endif

struct dmareg_domain;
struct dmareg_cache;
struct dmareg_reg;
struct dmareg_monitor;

/* Access rights, as dmareg::Access: each equals its IBV_ACCESS_* value, so
 * libibverbs' constants may be passed as they are. Any other bit (among them
 * IBV_ACCESS_ON_DEMAND: paging is dmareg_cache_attr.paging) is -EINVAL. */
#define DMAREG_ACCESS_LOCAL_WRITE (1u << 0)       /* IBV_ACCESS_LOCAL_WRITE */
#define DMAREG_ACCESS_REMOTE_WRITE (1u << 1)      /* IBV_ACCESS_REMOTE_WRITE */
#define DMAREG_ACCESS_REMOTE_READ (1u << 2)       /* IBV_ACCESS_REMOTE_READ */
#define DMAREG_ACCESS_REMOTE_ATOMIC (1u << 3)     /* IBV_ACCESS_REMOTE_ATOMIC */
#define DMAREG_ACCESS_RELAXED_ORDERING (1u << 20) /* IBV_ACCESS_RELAXED_ORDERING */

/* dmareg_cache_attr.monitoring: how the cache learns that memory went away. */
/* Every kind but EXPLICIT is the process's one shared monitor. */
#define DMAREG_MONITOR_AUTOMATIC 0   /* hooks+userfaultfd if interposed, else userfaultfd */
#define DMAREG_MONITOR_EXPLICIT 1    /* only dmareg_invalidate */
#define DMAREG_MONITOR_HOOKS 2       /* the libdmareg_hooks interposer (+userfaultfd) */
#define DMAREG_MONITOR_USERFAULTFD 3 /* the userfaultfd alone */

/* dmareg_cache_attr.paging */
#define DMAREG_PAGING_PINNED 0
#define DMAREG_PAGING_ON_DEMAND 1
#define DMAREG_PAGING_AUTOMATIC 2 /* on-demand when the device offers it */

/* Zero-initialize, then set what differs. As with a NULL attr, the DMAREG_*
 * environment (dmareg(7)) then fills every field left at zero, so a program
 * can be tuned without rebuilding it, as UCX's UCX_* variables tune UCX; a
 * field set here wins over the environment. Set no_environment for the
 * built-in defaults whatever the environment says. */
struct dmareg_cache_attr {
  size_t max_regions;   /* 0: no limit */
  size_t max_bytes;     /* 0: no limit */
  int monitoring;       /* DMAREG_MONITOR_* */
  int paging;           /* DMAREG_PAGING_* */
  int no_environment;   /* nonzero: ignore the DMAREG_* environment */
  uint64_t reserved[4]; /* must be zero */
};

/* The main counters of dmareg::CacheStats. */
struct dmareg_cache_stats {
  uint64_t hits;
  uint64_t misses; /* requests that registered */
  uint64_t evictions;
  uint64_t invalidations;       /* dmareg_invalidate calls */
  uint64_t invalidated_regions; /* mappings those retired */
  uint64_t registration_failures;
  uint64_t monitor_events;
  uint64_t uncached_registrations;
  uint64_t live_regions; /* mappings held on the device now */
  uint64_t registered_bytes;
  uint64_t referenced_regions; /* of them, with a handle out */
  uint64_t dmabuf_hits;
  uint64_t dmabuf_misses;
};

/* Drops the caller's reference; caches made from it keep theirs. NULL: no-op. */
void dmareg_domain_close(struct dmareg_domain* domain);

/* attr NULL: as a zeroed attr (the defaults, adjusted by the DMAREG_*
 * environment). A bad DMAREG_* value is -EINVAL naming the variable. */
int dmareg_cache_create(struct dmareg_domain* domain, const struct dmareg_cache_attr* attr,
                        struct dmareg_cache** out);
void dmareg_cache_destroy(struct dmareg_cache* cache); /* NULL: no-op */

/* A registration covering [addr, addr+len) with at least `access`. */
int dmareg_acquire(struct dmareg_cache* cache, const void* addr, size_t len, uint32_t access,
                   struct dmareg_reg** out);
/* A registration of a dma-buf slice; the caller keeps the fd. */
int dmareg_acquire_dmabuf(struct dmareg_cache* cache, int fd, uint64_t offset, size_t len,
                          uint32_t access, struct dmareg_reg** out);
uint32_t dmareg_reg_lkey(const struct dmareg_reg* reg); /* 0 for NULL */
uint32_t dmareg_reg_rkey(const struct dmareg_reg* reg);
/* The device address of `addr` (host memory) or of dma-buf offset
 * (uintptr_t)addr (dma-buf registrations). 0 for NULL. */
uint64_t dmareg_reg_iova(const struct dmareg_reg* reg, const void* addr);
void dmareg_release(struct dmareg_reg* reg); /* NULL: no-op */

/* Retires mappings over [addr, addr+len) now. */
int dmareg_invalidate(struct dmareg_cache* cache, const void* addr, size_t len);
int dmareg_cache_stats(struct dmareg_cache* cache, struct dmareg_cache_stats* out);
/* The monitor that feeds `cache` (the userfaultfd, the hooks or an explicit
 * one, as attr.monitoring chose), for dmareg_monitor_notify below; valid
 * while the cache lives. NULL for a NULL cache. */
struct dmareg_monitor* dmareg_cache_monitor(struct dmareg_cache* cache);

/* Explicit notification (e.g. a custom allocator written in C that recycles
 * memory the kernel cannot tell dmareg about): [addr, addr+length) was
 * unmapped or its pages replaced. Once it returns 0, no cache fed by that
 * monitor hands out a mapping over the old pages. Lock-free: it never blocks
 * on a device, a cache's lock or another caller, and for a valid range it is
 * async-signal-safe. The monitor's handle comes from dmareg_cache_monitor
 * (or dmareg::MemoryMonitor::c_handle() in C++). */
/* 0 on success; -EINVAL for a null monitor, a zero length or a range that
 * wraps around the address space. */
int dmareg_monitor_notify(struct dmareg_monitor* monitor, const void* addr, size_t length);

/* The message of this thread's last failed call ("" if none); successful
 * calls leave it. Valid until this thread's next dmareg call. */
const char* dmareg_last_error(void);

#ifdef __cplusplus
}  // extern "C"
#endif

#pragma GCC visibility pop

#endif /* DMAREG_C_DMAREG_H_ */
