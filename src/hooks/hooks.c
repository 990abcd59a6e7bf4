/* Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
 *
 * libdmareg_hooks: symbol interposition of the calls that take memory away
 * (hooks.h says which), telling subscribers BEFORE the call proceeds.
 *
 * Why symbol interposition and not patching libc's code: two libraries that
 * patch the same entry points lose each other's hooks; two that interpose
 * symbols chain through dlsym(RTLD_NEXT).
 *
 * Why no locks and no allocation anywhere on the hooked path: a hooked call
 * may come from a thread holding any lock (malloc's own, the application's),
 * from a signal handler, or from a child right after fork. Dispatch is two
 * atomic counters per sink; the next definitions are resolved once, at load.
 *
 * Written in C so that the library needs nothing but libc: it may be
 * preloaded into any program.
 */
#define _GNU_SOURCE
#include "dmareg/c/hooks.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

/* ---- Subscribers ------------------------------------------------------ */

struct sink_slot {
  _Atomic(dmareg_hooks_sink) sink;
  _Atomic(void*) context;
  atomic_uint in_flight; /* dispatches inside this slot's sink */
  atomic_int taken;      /* claimed by a subscriber */
};

static struct sink_slot g_sinks[DMAREG_HOOKS_MAX_SINKS];
static atomic_int g_subscribers;
static _Atomic uint64_t g_events[DMAREG_HOOKS_KINDS];

static void dispatch(int kind, uintptr_t begin, uintptr_t end) {
  if (end <= begin) return;
  atomic_fetch_add_explicit(&g_events[kind], 1, memory_order_relaxed);
  if (atomic_load_explicit(&g_subscribers, memory_order_acquire) == 0) return;
  for (int i = 0; i < DMAREG_HOOKS_MAX_SINKS; ++i) {
    struct sink_slot* s = &g_sinks[i];
    if (atomic_load_explicit(&s->taken, memory_order_relaxed) == 0) continue;
    /* Enter before looking: unsubscribe clears the sink, then waits for
     * in_flight to drain (both sequentially consistent: one of us sees the
     * other). */
    atomic_fetch_add(&s->in_flight, 1);
    dmareg_hooks_sink sink = atomic_load(&s->sink);
    if (sink != NULL) sink(atomic_load(&s->context), kind, begin, end);
    atomic_fetch_sub_explicit(&s->in_flight, 1, memory_order_release);
  }
}

EXPORT int dmareg_hooks_subscribe(dmareg_hooks_sink sink, void* context) {
  if (sink == NULL) return -EINVAL;
  for (int i = 0; i < DMAREG_HOOKS_MAX_SINKS; ++i) {
    int free_slot = 0;
    if (!atomic_compare_exchange_strong(&g_sinks[i].taken, &free_slot, 1)) continue;
    atomic_store(&g_sinks[i].context, context);
    atomic_store(&g_sinks[i].sink, sink);
    atomic_fetch_add(&g_subscribers, 1);
    return i;
  }
  return -ENOSPC;
}

EXPORT void dmareg_hooks_unsubscribe(int id) {
  if (id < 0 || id >= DMAREG_HOOKS_MAX_SINKS) return;
  struct sink_slot* s = &g_sinks[id];
  if (atomic_load(&s->sink) == NULL) return;
  atomic_store(&s->sink, NULL);
  while (atomic_load(&s->in_flight) != 0) sched_yield();
  atomic_store(&s->context, NULL);
  atomic_fetch_sub(&g_subscribers, 1);
  atomic_store(&s->taken, 0);
}

EXPORT uint64_t dmareg_hooks_events(int kind) {
  if (kind < 0 || kind >= DMAREG_HOOKS_KINDS) return 0;
  return atomic_load_explicit(&g_events[kind], memory_order_relaxed);
}

/* ---- The next definitions --------------------------------------------- */

typedef void* (*mmap_fn)(void*, size_t, int, int, int, off_t);
typedef int (*munmap_fn)(void*, size_t);
typedef void* (*mremap_fn)(void*, size_t, size_t, int, ...);
typedef int (*madvise_fn)(void*, size_t, int);
typedef void* (*shmat_fn)(int, const void*, int);
typedef int (*shmdt_fn)(const void*);
typedef int (*brk_fn)(void*);
typedef void* (*sbrk_fn)(intptr_t);
typedef void (*free_fn)(void*);
typedef void* (*realloc_fn)(void*, size_t);
typedef void* (*reallocarray_fn)(void*, size_t, size_t);
typedef int (*malloc_trim_fn)(size_t);

static struct {
  _Atomic(mmap_fn) mmap;
  _Atomic(mmap_fn) mmap64;
  _Atomic(munmap_fn) munmap;
  _Atomic(mremap_fn) mremap;
  _Atomic(madvise_fn) madvise;
  _Atomic(shmat_fn) shmat;
  _Atomic(shmdt_fn) shmdt;
  _Atomic(brk_fn) brk;
  _Atomic(sbrk_fn) sbrk;
  _Atomic(free_fn) free;
  _Atomic(realloc_fn) realloc;
  _Atomic(reallocarray_fn) reallocarray;
  _Atomic(malloc_trim_fn) malloc_trim;
} g_next;

static atomic_int g_resolved;           /* 0 not yet, 1 in progress, 2 done */
static atomic_int g_decodes_malloc;     /* written before g_resolved = 2 */
static _Atomic uintptr_t g_page = 4096; /* likewise */
static _Atomic uintptr_t g_first_break; /* likewise: where the main heap starts */
/* The thread resolving: its own calls made inside dlsym fall back. */
static __thread int t_resolving __attribute__((tls_model("initial-exec")));

extern void* __libc_realloc(void*, size_t);
extern void* __libc_malloc(size_t);

static void resolve(void) {
  if (atomic_load_explicit(&g_resolved, memory_order_acquire) == 2) return;
  if (t_resolving) return; /* dlsym called back into us: fall back */
  int expected = 0;
  if (!atomic_compare_exchange_strong(&g_resolved, &expected, 1)) {
    while (atomic_load_explicit(&g_resolved, memory_order_acquire) != 2) sched_yield();
    return;
  }
  t_resolving = 1;
  long page = sysconf(_SC_PAGESIZE);
  if (page > 0) atomic_store(&g_page, (uintptr_t)page);
  atomic_store(&g_next.mmap, (mmap_fn)dlsym(RTLD_NEXT, "mmap"));
  atomic_store(&g_next.mmap64, (mmap_fn)dlsym(RTLD_NEXT, "mmap64"));
  atomic_store(&g_next.munmap, (munmap_fn)dlsym(RTLD_NEXT, "munmap"));
  atomic_store(&g_next.mremap, (mremap_fn)dlsym(RTLD_NEXT, "mremap"));
  atomic_store(&g_next.madvise, (madvise_fn)dlsym(RTLD_NEXT, "madvise"));
  atomic_store(&g_next.shmat, (shmat_fn)dlsym(RTLD_NEXT, "shmat"));
  atomic_store(&g_next.shmdt, (shmdt_fn)dlsym(RTLD_NEXT, "shmdt"));
  atomic_store(&g_next.brk, (brk_fn)dlsym(RTLD_NEXT, "brk"));
  atomic_store(&g_next.sbrk, (sbrk_fn)dlsym(RTLD_NEXT, "sbrk"));
  free_fn next_free = (free_fn)dlsym(RTLD_NEXT, "free");
  atomic_store(&g_next.realloc, (realloc_fn)dlsym(RTLD_NEXT, "realloc"));
  atomic_store(&g_next.reallocarray, (reallocarray_fn)dlsym(RTLD_NEXT, "reallocarray"));
  atomic_store(&g_next.malloc_trim, (malloc_trim_fn)dlsym(RTLD_NEXT, "malloc_trim"));
  sbrk_fn next_sbrk = atomic_load(&g_next.sbrk);
  if (next_sbrk != NULL) atomic_store(&g_first_break, (uintptr_t)next_sbrk(0));
  /* Chunk headers mean something only to glibc's malloc: the process's
   * malloc must be libc's own (a wrapper of free alone, ahead of us or
   * behind, changes nothing; an allocator that replaces malloc does).
   * libc's malloc is __libc_malloc, one function under two names. Not
   * found through dlopen: a sanitizer's dlopen interceptor, entered from
   * its own start-up's mmap, waits on a lock that start-up holds (GCC's
   * ASan hung so before main). */
  atomic_store(&g_decodes_malloc,
               (uintptr_t)dlsym(RTLD_DEFAULT, "malloc") == (uintptr_t)&__libc_malloc);
  atomic_store(&g_next.free, next_free);
  t_resolving = 0;
  atomic_store_explicit(&g_resolved, 2, memory_order_release);
}

__attribute__((constructor(101))) static void dmareg_hooks_init(void) { resolve(); }

#define NEXT(name) (resolve(), atomic_load_explicit(&g_next.name, memory_order_relaxed))

static int decodes_malloc(void) {
  return atomic_load_explicit(&g_decodes_malloc, memory_order_relaxed);
}
static uintptr_t page_size(void) { return atomic_load_explicit(&g_page, memory_order_relaxed); }

EXPORT int dmareg_hooks_decodes_malloc(void) {
  resolve();
  return decodes_malloc();
}

static uintptr_t page_down(uintptr_t a) { return a & ~(page_size() - 1); }
static uintptr_t page_up(uintptr_t a) {
  return a > UINTPTR_MAX - (page_size() - 1) ? UINTPTR_MAX & ~(page_size() - 1)
                                             : page_down(a + page_size() - 1);
}
static uintptr_t end_of(const void* p, size_t len) {
  uintptr_t a = (uintptr_t)p;
  return len > UINTPTR_MAX - a ? UINTPTR_MAX : a + len;
}

/* ---- Memory-map calls ------------------------------------------------- */

EXPORT int munmap(void* addr, size_t len) {
  dispatch(DMAREG_HOOKS_MUNMAP, (uintptr_t)addr, end_of(addr, len));
  munmap_fn next = NEXT(munmap);
  if (next != NULL) return next(addr, len);
  return (int)syscall(SYS_munmap, addr, len);
}

static void* hooked_mmap(mmap_fn next, void* addr, size_t len, int prot, int flags, int fd,
                         off_t off) {
  /* MAP_FIXED replaces what was there; MAP_FIXED_NOREPLACE fails instead. */
  if ((flags & MAP_FIXED) != 0 && (flags & MAP_FIXED_NOREPLACE) == 0) {
    dispatch(DMAREG_HOOKS_MMAP_FIXED, (uintptr_t)addr, end_of(addr, len));
  }
  if (next != NULL) return next(addr, len, prot, flags, fd, off);
  return (void*)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
}

EXPORT void* mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  return hooked_mmap(NEXT(mmap), addr, len, prot, flags, fd, off);
}

EXPORT void* mmap64(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  return hooked_mmap(NEXT(mmap64), addr, len, prot, flags, fd, off);
}

EXPORT void* mremap(void* old, size_t old_len, size_t new_len, int flags, ...) {
  void* target = NULL;
  if ((flags & MREMAP_FIXED) != 0) {
    va_list ap;
    va_start(ap, flags);
    target = va_arg(ap, void*);
    va_end(ap);
  }
  const uintptr_t a = (uintptr_t)old;
  if ((flags & (MREMAP_MAYMOVE | MREMAP_FIXED)) != 0 || (flags & MREMAP_DONTUNMAP) != 0) {
    /* The pages may leave (or, with DONTUNMAP, be replaced by empty ones). */
    dispatch(DMAREG_HOOKS_MREMAP, a, end_of(old, old_len));
  } else if (new_len < old_len) {
    dispatch(DMAREG_HOOKS_MREMAP, a + new_len, end_of(old, old_len));
  }
  if (target != NULL) dispatch(DMAREG_HOOKS_MREMAP, (uintptr_t)target, end_of(target, new_len));
  mremap_fn next = NEXT(mremap);
  if (next != NULL) return next(old, old_len, new_len, flags, target);
  return (void*)syscall(SYS_mremap, old, old_len, new_len, flags, target);
}

#ifndef MADV_DONTNEED_LOCKED
#define MADV_DONTNEED_LOCKED 24
#endif

EXPORT int madvise(void* addr, size_t len, int advice) {
  if (advice == MADV_DONTNEED || advice == MADV_DONTNEED_LOCKED || advice == MADV_FREE ||
      advice == MADV_REMOVE) {
    dispatch(DMAREG_HOOKS_MADVISE, (uintptr_t)addr, end_of(addr, len));
  }
  madvise_fn next = NEXT(madvise);
  if (next != NULL) return next(addr, len, advice);
  return (int)syscall(SYS_madvise, addr, len, advice);
}

/* ---- System V shared memory ------------------------------------------ */

EXPORT void* shmat(int id, const void* addr, int flags) {
  if ((flags & SHM_REMAP) != 0 && addr != NULL) {
    struct shmid_ds ds;
    /* shmctl is a plain system call: async-signal-safe, no allocation. */
    if (syscall(SYS_shmctl, id, IPC_STAT, &ds) == 0) {
      uintptr_t a = (uintptr_t)addr;
      if ((flags & SHM_RND) != 0) a &= ~(uintptr_t)(SHMLBA - 1);
      dispatch(DMAREG_HOOKS_SHMAT, a, page_up(end_of((const void*)a, ds.shm_segsz)));
    } else {
      /* Unknown size: everything from addr may be replaced. The call will
       * most likely fail anyway (bad id). */
      dispatch(DMAREG_HOOKS_SHMAT, (uintptr_t)addr, UINTPTR_MAX);
    }
  }
  shmat_fn next = NEXT(shmat);
  if (next != NULL) return next(id, addr, flags);
  return (void*)syscall(SYS_shmat, id, addr, flags);
}

/* Parses one /proc/self/maps line: "start-end perms offset dev inode ...". */
static int parse_maps_line(const char* s, uintptr_t* start, uintptr_t* end, uint64_t* dev_ino) {
  uintptr_t v[2] = {0, 0};
  for (int f = 0; f < 2; ++f) {
    int digits = 0;
    for (;; ++s, ++digits) {
      const char c = *s;
      int d;
      if (c >= '0' && c <= '9')
        d = c - '0';
      else if (c >= 'a' && c <= 'f')
        d = c - 'a' + 10;
      else
        break;
      v[f] = (v[f] << 4) | (uintptr_t)d;
    }
    if (digits == 0 || *s != (f == 0 ? '-' : ' ')) return 0;
    ++s;
  }
  /* perms, offset: skip; then dev "maj:min" and inode, hashed together. */
  for (int skip = 0; skip < 2; ++skip) {
    while (*s != ' ' && *s != '\0') ++s;
    while (*s == ' ') ++s;
  }
  uint64_t h = 1469598103934665603ull;
  int spaces = 0;
  for (; *s != '\0' && spaces < 2; ++s) {
    if (*s == ' ') {
      ++spaces;
      while (s[1] == ' ') ++s;
    }
    h = (h ^ (unsigned char)*s) * 1099511628211ull;
  }
  *start = v[0];
  *end = v[1];
  *dev_ino = h;
  return 1;
}

/* The end of what shmdt(addr) detaches: the mapping that starts at addr and
 * the contiguous ones of the same segment after it (mprotect may have split
 * it). 0 if no mapping starts at addr. Reads /proc/self/maps with plain
 * system calls into a stack buffer. */
static uintptr_t attached_end(uintptr_t addr) {
  const int fd = (int)syscall(SYS_openat, AT_FDCWD, "/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[1024];
  char line[160];
  size_t used = 0;
  uintptr_t found_end = 0;
  uint64_t found_id = 0;
  for (;;) {
    const long n = syscall(SYS_read, fd, buf, sizeof buf);
    if (n <= 0) break;
    for (long i = 0; i < n; ++i) {
      if (buf[i] != '\n') {
        /* Only the first fields matter: the rest of a long line is dropped. */
        if (used + 1 < sizeof line) line[used++] = buf[i];
        continue;
      }
      line[used] = '\0';
      used = 0;
      uintptr_t b, e;
      uint64_t id;
      if (!parse_maps_line(line, &b, &e, &id)) continue;
      if (found_end == 0) {
        if (b == addr) {
          found_end = e;
          found_id = id;
        }
      } else if (b == found_end && id == found_id) {
        found_end = e;
      } else if (b >= found_end) {
        syscall(SYS_close, fd);
        return found_end;
      }
    }
  }
  syscall(SYS_close, fd);
  return found_end;
}

EXPORT int shmdt(const void* addr) {
  const uintptr_t end = attached_end((uintptr_t)addr);
  if (end != 0) dispatch(DMAREG_HOOKS_SHMDT, (uintptr_t)addr, end);
  shmdt_fn next = NEXT(shmdt);
  if (next != NULL) return next(addr);
  return (int)syscall(SYS_shmdt, addr);
}

/* ---- The heap's break ------------------------------------------------- */

static uintptr_t current_break(void) {
  sbrk_fn next = NEXT(sbrk);
  if (next != NULL) {
    void* b = next(0);
    if (b != (void*)-1) return (uintptr_t)b;
  }
  return (uintptr_t)syscall(SYS_brk, 0);
}

EXPORT int brk(void* addr) {
  const uintptr_t now = current_break();
  if ((uintptr_t)addr < now) dispatch(DMAREG_HOOKS_BRK, page_up((uintptr_t)addr), page_up(now));
  brk_fn next = NEXT(brk);
  if (next != NULL) return next(addr);
  const long r = syscall(SYS_brk, addr);
  if ((uintptr_t)r != (uintptr_t)addr) {
    errno = ENOMEM;
    return -1;
  }
  return 0;
}

EXPORT void* sbrk(intptr_t increment) {
  if (increment < 0) {
    const uintptr_t now = current_break();
    const uintptr_t cut = (uintptr_t)-increment;
    dispatch(DMAREG_HOOKS_BRK, page_up(cut > now ? 0 : now - cut), page_up(now));
  }
  sbrk_fn next = NEXT(sbrk);
  if (next != NULL) return next(increment);
  errno = ENOMEM;
  return (void*)-1;
}

/* ---- glibc's malloc --------------------------------------------------- */

/* An mmap-backed chunk of glibc's malloc: the size word before the user
 * pointer has IS_MMAPPED (2), and the word before it is the offset from the
 * mapping's start (malloc.c, munmap_chunk). */
static int mmapped_chunk(const void* p, uintptr_t* begin, uintptr_t* end) {
  const size_t* words = (const size_t*)p;
  const size_t size = words[-1];
  if ((size & 2) == 0) return 0;
  const size_t offset = words[-2];
  const size_t total = offset + (size & ~(size_t)7);
  const uintptr_t start = (uintptr_t)p - 2 * sizeof(size_t) - offset;
  if (((start | total) & (page_size() - 1)) != 0 || total == 0) return 0;
  *begin = start;
  *end = start + total;
  return 1;
}

/* Whether a free or realloc should watch the break: only glibc's malloc,
 * only when someone listens (two sbrk(0) calls, no system call). */
static int watch_trim(void) {
  return decodes_malloc() && atomic_load_explicit(&g_subscribers, memory_order_relaxed) != 0;
}

EXPORT void free(void* p) {
  free_fn next = atomic_load_explicit(&g_next.free, memory_order_relaxed);
  if (next == NULL) {
    resolve();
    next = atomic_load_explicit(&g_next.free, memory_order_relaxed);
    if (next == NULL) return; /* inside dlsym, before libc's free is known: leak */
  }
  if (p == NULL) return;
  uintptr_t b, e;
  if (decodes_malloc() && mmapped_chunk(p, &b, &e)) {
    dispatch(DMAREG_HOOKS_FREE, b, e);
    next(p);
    return;
  }
  if (!watch_trim()) {
    next(p);
    return;
  }
  const uintptr_t before = current_break();
  next(p);
  const uintptr_t after = current_break();
  if (after < before) dispatch(DMAREG_HOOKS_TRIM, after, before);
}

EXPORT void* realloc(void* p, size_t n) {
  realloc_fn next = atomic_load_explicit(&g_next.realloc, memory_order_relaxed);
  if (next == NULL) {
    resolve();
    next = atomic_load_explicit(&g_next.realloc, memory_order_relaxed);
    if (next == NULL) return __libc_realloc(p, n);
  }
  uintptr_t b, e;
  if (p != NULL && decodes_malloc() && mmapped_chunk(p, &b, &e)) {
    /* glibc may move it with mremap, or copy it and unmap the old one. */
    dispatch(DMAREG_HOOKS_REALLOC, b, e);
    return next(p, n);
  }
  if (p == NULL || !watch_trim()) return next(p, n);
  const uintptr_t before = current_break();
  void* q = next(p, n);
  const uintptr_t after = current_break();
  if (after < before) dispatch(DMAREG_HOOKS_TRIM, after, before);
  return q;
}

EXPORT void* reallocarray(void* p, size_t n, size_t size) {
  reallocarray_fn next = NEXT(reallocarray);
  uintptr_t b, e;
  if (p != NULL && decodes_malloc() && mmapped_chunk(p, &b, &e)) {
    dispatch(DMAREG_HOOKS_REALLOC, b, e);
  }
  if (next != NULL) return next(p, n, size);
  errno = ENOMEM;
  return NULL;
}

/* malloc_trim gives back the main heap's top (brk) and the free pages inside
 * every heap (madvise): the main heap is reported whole, before. Other
 * arenas' heaps are not known here. */
EXPORT int malloc_trim(size_t pad) {
  if (decodes_malloc()) {
    const uintptr_t first = atomic_load_explicit(&g_first_break, memory_order_relaxed);
    const uintptr_t now = current_break();
    if (first != 0 && first != (uintptr_t)-1 && now > first) {
      dispatch(DMAREG_HOOKS_TRIM, page_down(first), page_up(now));
    }
  }
  malloc_trim_fn next = NEXT(malloc_trim);
  return next != NULL ? next(pad) : 0;
}
