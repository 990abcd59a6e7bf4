/* Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
 *
 * libdmareg_hooks in a program built with a sanitizer (GCC's ASan or TSan,
 * linked with the hooks) or with both preloaded (LD_PRELOAD=libasan.so:
 * libdmareg_hooks.so): the hooks' first-call resolution once entered the
 * sanitizer's dlopen interceptor during its start-up and hung before main
 * (the test's timeout catches a hang). Here: the hooks are live, report
 * each munmap to a sink, and know the process's malloc is not libc's (a
 * sanitizer replaces it), so they do not decode its chunks.
 * Exit 0 if all holds.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dmareg/c/hooks.h" /* the API is looked up: linked or preloaded */

enum { kCalls = 16 };

static atomic_ulong g_seen;
static uintptr_t g_watch_begin, g_watch_end;

static void on_unmap(void* context, int kind, uintptr_t begin, uintptr_t end) {
  (void)context;
  if (kind == DMAREG_HOOKS_MUNMAP && begin <= g_watch_begin && end >= g_watch_end) {
    atomic_fetch_add(&g_seen, 1);
  }
}

int main(void) {
  int (*subscribe)(dmareg_hooks_sink, void*) =
      (int (*)(dmareg_hooks_sink, void*))dlsym(RTLD_DEFAULT, "dmareg_hooks_subscribe");
  void (*unsubscribe)(int) = (void (*)(int))dlsym(RTLD_DEFAULT, "dmareg_hooks_unsubscribe");
  int (*decodes)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "dmareg_hooks_decodes_malloc");
  if (subscribe == NULL || unsubscribe == NULL || decodes == NULL) {
    fprintf(stderr, "libdmareg_hooks is not in the process\n");
    return 1;
  }
  const int id = subscribe(on_unmap, NULL);
  if (id < 0) return 2;
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  for (int i = 0; i < kCalls; ++i) {
    char* p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 3;
    memset(p, i, page);
    g_watch_begin = (uintptr_t)p;
    g_watch_end = (uintptr_t)p + page;
    if (munmap(p, page) != 0) return 4;
  }
  char* block = malloc(1 << 20);
  if (block == NULL) return 5;
  memset(block, 1, 1 << 20);
  free(block);
  unsubscribe(id);
  const unsigned long seen = atomic_load(&g_seen);
  const int decoded = decodes();
  printf("munmaps seen %lu of %d; decodes malloc %d\n", seen, kCalls, decoded);
  if (seen != kCalls) return 6;
  if (decoded != 0) return 7; /* the sanitizer's malloc is not glibc's */
  return 0;
}
