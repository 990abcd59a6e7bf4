/* Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
 *
 * monitor_c.h: the explicit-notification API for C callers, e.g. a custom
 * allocator written in C that recycles memory the kernel cannot tell dmareg
 * about.
 *
 *   // C++ side, once: hand the allocator the monitor's C handle.
 *   struct dmareg_monitor* m = monitor->c_handle();
 *
 *   // C side, after a block's pages were unmapped or replaced and before
 *   // the block is handed out again:
 *   if (dmareg_monitor_notify(m, block, size) != 0) abort();
 *
 * Once dmareg_monitor_notify returns 0, no cache fed by that monitor hands
 * out a mapping over the old pages. The call is lock-free: it never blocks
 * on a device, a cache's lock or another caller, and for a valid range it is
 * async-signal-safe.
 */
#ifndef DMAREG_MONITOR_C_H_
#define DMAREG_MONITOR_C_H_

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct dmareg_monitor;

/* 0 on success; -EINVAL for a null monitor, a zero length or a range that
 * wraps around the address space. */
int dmareg_monitor_notify(struct dmareg_monitor* monitor, const void* addr, size_t length);

#ifdef __cplusplus
}
#endif

#endif /* DMAREG_MONITOR_C_H_ */
