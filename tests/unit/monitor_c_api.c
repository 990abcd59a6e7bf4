/* Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
 *
 * Compiled as C: proves monitor_c.h is a C header and the call links from C. */
#include "dmareg/monitor_c.h"

int dmareg_test_notify_from_c(struct dmareg_monitor* m, const void* addr, size_t length) {
  return dmareg_monitor_notify(m, addr, length);
}
