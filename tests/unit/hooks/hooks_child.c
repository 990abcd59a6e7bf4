/* Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
 *
 * Run by hooks_interposer_test with libdmareg_hooks and other_interposer
 * preloaded (it links neither): unmaps pages and frees large blocks, then
 * prints how many of those calls each library saw, and whether the hooks
 * decode glibc's chunks in this order. Exit 1 if either library is absent.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dmareg/c/hooks.h" /* the kinds only: the library is preloaded */

enum { kCalls = 8, kLarge = 1 << 20 };

int main(void) {
  unsigned long (*other)(int) =
      (unsigned long (*)(int))dlsym(RTLD_DEFAULT, "other_interposer_calls");
  uint64_t (*events)(int) = (uint64_t(*)(int))dlsym(RTLD_DEFAULT, "dmareg_hooks_events");
  int (*decodes)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "dmareg_hooks_decodes_malloc");
  if (other == NULL || events == NULL || decodes == NULL) {
    fprintf(stderr, "preloads missing: other %p hooks %p\n", (void*)other, (void*)events);
    return 1;
  }
  /* A fixed threshold: glibc would otherwise raise it after the first free,
   * and the next blocks would come from the heap. */
  mallopt(M_MMAP_THRESHOLD, 64 * 1024);
  const long page = sysconf(_SC_PAGESIZE);
  const unsigned long other_munmap = other(0), other_free = other(1);
  const uint64_t hooks_munmap = events(DMAREG_HOOKS_MUNMAP), hooks_free = events(DMAREG_HOOKS_FREE);
  for (int i = 0; i < kCalls; ++i) {
    void* p = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 2;
    munmap(p, (size_t)page);
    char* block = malloc(kLarge);
    if (block == NULL) return 2;
    memset(block, 1, kLarge);
    free(block);
  }
  printf("%lu %lu %lu %lu %d\n", other(0) - other_munmap, other(1) - other_free,
         (unsigned long)(events(DMAREG_HOOKS_MUNMAP) - hooks_munmap),
         (unsigned long)(events(DMAREG_HOOKS_FREE) - hooks_free), decodes());
  return 0;
}
