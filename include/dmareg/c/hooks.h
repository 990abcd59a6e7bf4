/* Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
 *
 * c/hooks.h: libdmareg_hooks, the interposition library behind the "hooks"
 * memory monitor (dmareg::HooksMonitor in monitor.h).
 *
 * The library defines munmap, mremap, madvise, mmap, shmat, shmdt, brk,
 * sbrk, free, realloc, reallocarray and malloc_trim. Linked into a program (before libc, which is
 * where a linker puts it) or preloaded (LD_PRELOAD=libdmareg_hooks.so), its
 * definitions come first; each tells its subscribers which range is about to
 * go, then calls the next definition (dlsym(RTLD_NEXT)): libc's, or another
 * interposer's. Nothing is patched, so it composes with other interposers.
 *
 * Most programs never call this API: a HooksMonitor subscribes for them.
 *
 *   static void on_unmap(void* ctx, int kind, uintptr_t begin, uintptr_t end) {
 *     my_cache_invalidate(ctx, begin, end);   // must be async-signal-safe
 *   }
 *   int id = dmareg_hooks_subscribe(on_unmap, my_cache);
 *   ...
 *   dmareg_hooks_unsubscribe(id);
 *
 * What it sees, before the call proceeds:
 *   - munmap; mmap with MAP_FIXED over existing memory;
 *   - mremap (the old range when it may move or shrinks; the target range
 *     of MREMAP_FIXED);
 *   - madvise MADV_DONTNEED, MADV_DONTNEED_LOCKED, MADV_FREE, MADV_REMOVE;
 *   - shmat with SHM_REMAP (the segment's range), shmdt (the attached range);
 *   - brk and sbrk that shrink the heap;
 *   - free, realloc and reallocarray of an mmap-backed chunk of glibc's
 *     malloc (glibc unmaps those with its own internal munmap, which no
 *     interposer sees);
 *   - malloc_trim: the whole main heap.
 * After the call returns: free/realloc that trimmed the main heap (brk).
 * What it cannot see: raw system calls, glibc-internal calls other than the
 * above (non-main arenas returning memory with madvise inside free), other
 * allocators' internal unmaps (they are seen where they call munmap through
 * the dynamic linker, as jemalloc and tcmalloc do), file truncation.
 */
#ifndef DMAREG_C_HOOKS_H_
#define DMAREG_C_HOOKS_H_

#include <stdint.h>

#pragma GCC visibility push(default)

#ifdef __cplusplus
extern "C" {
#endif

/* Which call an event came from (the sink's `kind`). */
enum dmareg_hooks_kind {
  DMAREG_HOOKS_MUNMAP = 0,
  DMAREG_HOOKS_MMAP_FIXED,
  DMAREG_HOOKS_MREMAP,
  DMAREG_HOOKS_MADVISE,
  DMAREG_HOOKS_SHMAT,
  DMAREG_HOOKS_SHMDT,
  DMAREG_HOOKS_BRK,     /* brk or sbrk shrinking the heap */
  DMAREG_HOOKS_FREE,    /* free of an mmap-backed glibc chunk */
  DMAREG_HOOKS_REALLOC, /* realloc of one */
  DMAREG_HOOKS_TRIM,    /* free/realloc trimmed the main heap (after the call), malloc_trim */
  DMAREG_HOOKS_KINDS
};

/* [begin, end) (bytes, not empty) is about to be unmapped or its pages
 * replaced. Called on the thread making the call, possibly inside a signal
 * handler, with any lock of that thread held: it must be async-signal-safe,
 * must not allocate and must not take a lock. */
typedef void (*dmareg_hooks_sink)(void* context, int kind, uintptr_t begin, uintptr_t end);

/* Adds a sink. Returns its id (>= 0), or -EINVAL for a null sink, -ENOSPC
 * when DMAREG_HOOKS_MAX_SINKS are subscribed. */
#define DMAREG_HOOKS_MAX_SINKS 16
int dmareg_hooks_subscribe(dmareg_hooks_sink sink, void* context);

/* Removes a sink; returns once no call to it is in flight (so its context
 * may be freed). Not from inside a sink or a signal handler. */
void dmareg_hooks_unsubscribe(int id);

/* Events seen of `kind` since the library was loaded, with or without
 * subscribers (for tests and benchmarks); 0 for an unknown kind. */
uint64_t dmareg_hooks_events(int kind);

/* 1 if the process's malloc is glibc's (libc's own malloc is the one the
 * program calls), so mmap-backed chunks can be recognised; 0 under another
 * allocator (a sanitizer's, jemalloc...), whose unmaps are seen only through
 * munmap. Another interposer that merely wraps free changes nothing. */
int dmareg_hooks_decodes_malloc(void);

#ifdef __cplusplus
}
#endif

#pragma GCC visibility pop

#endif /* DMAREG_C_HOOKS_H_ */
