/* Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
 *
 * A preload library that, like libdmareg_hooks, defines munmap and free,
 * counts the calls and forwards them with dlsym(RTLD_NEXT): the kind of
 * interposer (a profiler, another cache) the hooks must compose with, in
 * either preload order.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef int (*munmap_fn)(void*, size_t);
typedef void (*free_fn)(void*);

static _Atomic(munmap_fn) g_next_munmap;
static _Atomic(free_fn) g_next_free;
static atomic_ulong g_munmaps;
static atomic_ulong g_frees;

__attribute__((constructor)) static void other_interposer_init(void) {
  atomic_store(&g_next_munmap, (munmap_fn)dlsym(RTLD_NEXT, "munmap"));
  atomic_store(&g_next_free, (free_fn)dlsym(RTLD_NEXT, "free"));
}

/* Calls of munmap (which == 0) or free (1) so far. */
__attribute__((visibility("default"))) unsigned long other_interposer_calls(int which) {
  return atomic_load(which == 0 ? &g_munmaps : &g_frees);
}

__attribute__((visibility("default"))) int munmap(void* addr, size_t len) {
  atomic_fetch_add(&g_munmaps, 1);
  munmap_fn next = atomic_load(&g_next_munmap);
  if (next != NULL) return next(addr, len);
  return (int)syscall(SYS_munmap, addr, len);
}

__attribute__((visibility("default"))) void free(void* p) {
  atomic_fetch_add(&g_frees, 1);
  free_fn next = atomic_load(&g_next_free);
  if (next != NULL) next(p); /* before the constructor ran (inside dlsym): leak */
}
