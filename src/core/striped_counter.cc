// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "core/striped_counter.h"

namespace dmareg::internal {

thread_local size_t tls_stripe __attribute__((tls_model("initial-exec"))) = 0;

size_t AssignThreadStripe() {
  static std::atomic<size_t> next{0};
  tls_stripe = next.fetch_add(1, std::memory_order_relaxed) + 1;
  return tls_stripe - 1;
}

}  // namespace dmareg::internal
