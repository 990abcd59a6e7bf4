/* Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
 *
 * Compiled as C: proves dmareg/c/dmareg.h is a C header and the call links from C. */
#include "dmareg/c/dmareg.h"

int dmareg_test_notify_from_c(struct dmareg_monitor* m, const void* addr, size_t length) {
  return dmareg_monitor_notify(m, addr, length);
}
