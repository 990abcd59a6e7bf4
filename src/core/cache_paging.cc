// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The miss path's on-demand registrations (CacheOptions::paging): an
// on-demand mapping follows the process's page tables, so it is cached
// without a monitor Watch; in kAutomatic mode the domain's first refusal
// makes the cache pinned for good.
#include <cerrno>
#include <optional>

#include "core/cache_core.h"
#include "dmareg/errno_status.h"
#include "runtime/log.h"

namespace dmareg::internal {

namespace {
// The domain does not do on-demand paging at all (as opposed to failing
// this one span): no ODP in the domain (Unimplemented, EOPNOTSUPP), or a
// kernel that rejects the flag itself (rxe before ODP support: EINVAL).
bool RefusesOnDemand(const absl::Status& s) {
  const std::optional<int> err = ErrnoOf(s);
  return s.code() == absl::StatusCode::kUnimplemented || err == EOPNOTSUPP || err == EINVAL;
}
}  // namespace

absl::StatusOr<DeviceMapping> CacheCore::RegisterOnDemand(MissPlan& plan, bool* refused) {
  auto register_span = [&] {
    return domain_->RegisterHost(
        HostMemory{reinterpret_cast<const void*>(plan.span.begin()), plan.span.length()},
        plan.access, Paging::kOnDemand);
  };
  plan.cacheable = true;  // no monitor needed: nothing here can go stale
  absl::StatusOr<DeviceMapping> m = register_span();
  if (!m.ok() && plan.merged && !RefusesOnDemand(m.status())) {
    // As for pinned misses: the request alone may still register.
    plan.span = plan.key->request;
    plan.access = plan.want;
    plan.merged = false;
    m = register_span();
  }
  if (m.ok()) {
    plan.on_demand = true;
    if (paging_option_ == Paging::kAutomatic) {
      Paging expected = Paging::kAutomatic;
      paging_.compare_exchange_strong(expected, Paging::kOnDemand, std::memory_order_relaxed);
    }
    return m;
  }
  if (paging_option_ != Paging::kAutomatic || !RefusesOnDemand(m.status())) return m;
  *refused = true;
  // Several misses may be refused at once: one of them counts the switch.
  Paging now = paging_.load(std::memory_order_relaxed);
  while (now != Paging::kPinned) {
    if (paging_.compare_exchange_weak(now, Paging::kPinned, std::memory_order_relaxed)) {
      plan.fell_back = true;
      // Perhaps under mu_ (a miss past its optimistic attempts): queued,
      // passed on when the miss releases it.
      LogLater(LogLevel::kWarn,
               "cache on %s: on-demand paging refused for %s (%s); pinned registrations from "
               "now on",
               domain_->name(), plan.span.ToString(), m.status().ToString());
      break;
    }
  }
  return m;
}

}  // namespace dmareg::internal
