// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// MemoryMonitor's shared part (the log and Notify), ExplicitMonitor and the
// C notification API.
#include <cerrno>
#include <limits>
#include <utility>

#include "absl/strings/str_format.h"
#include "dmareg/c/dmareg.h"
#include "dmareg/monitor.h"
#include "monitor/invalidation_log.h"
#include "monitor/monitor_access.h"

namespace dmareg {

MemoryMonitor::MemoryMonitor() : log_(std::make_shared<internal::InvalidationLog>()) {}
MemoryMonitor::MemoryMonitor(std::shared_ptr<internal::InvalidationLog> log)
    : log_(std::move(log)) {}
MemoryMonitor::~MemoryMonitor() = default;

void MemoryMonitor::BeginEvents() { log_->BeginEvents(); }
void MemoryMonitor::EndEvents() { log_->EndEvents(); }
void MemoryMonitor::Publish(Range r) { log_->Publish(r); }
uint64_t MemoryMonitor::events() const { return log_->head(); }

absl::Status MemoryMonitor::Notify(const void* addr, size_t length) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(addr);
  if (length == 0 || length - 1 > std::numeric_limits<uintptr_t>::max() - a) {
    return absl::InvalidArgumentError(
        absl::StrFormat("Notify(%p, %u) on the %s monitor: the range is empty or wraps around",
                        addr, length, name()));
  }
  // Bytes, not pages: each cache rounds out to its own page size. A range
  // that ends at the top of the address space is clamped (b is exclusive).
  const uintptr_t last = a + (length - 1);
  constexpr uintptr_t kTop = std::numeric_limits<uintptr_t>::max();
  log_->Publish(*Range::FromBounds(a, last == kTop ? kTop : last + 1));
  return absl::OkStatus();
}

dmareg_monitor* MemoryMonitor::c_handle() { return reinterpret_cast<dmareg_monitor*>(this); }

MonitorReader::MonitorReader(std::shared_ptr<MemoryMonitor> monitor)
    : monitor_(std::move(monitor)),
      cursor_(monitor_ == nullptr ? 0 : internal::LogOf(*monitor_).head()) {}
MonitorReader::~MonitorReader() = default;
MonitorReader::MonitorReader(MonitorReader&&) noexcept = default;
MonitorReader& MonitorReader::operator=(MonitorReader&&) noexcept = default;

bool MonitorReader::Pending() const {
  return monitor_ != nullptr && internal::LogOf(*monitor_).Pending(cursor_);
}

bool MonitorReader::Read(std::vector<Range>* out) {
  if (monitor_ == nullptr) return true;
  bool overrun = false;
  cursor_ = internal::LogOf(*monitor_).ReadSince(cursor_, out, &overrun);
  return !overrun;
}

void MonitorReader::WaitQuiet() const {
  if (monitor_ != nullptr) internal::LogOf(*monitor_).WaitQuiet();
}

ExplicitMonitor::~ExplicitMonitor() = default;

std::shared_ptr<ExplicitMonitor> ExplicitMonitor::Create() {
  return std::shared_ptr<ExplicitMonitor>(new ExplicitMonitor());
}

}  // namespace dmareg

extern "C" int dmareg_monitor_notify(struct dmareg_monitor* monitor, const void* addr,
                                     size_t length) {
  if (monitor == nullptr) return -EINVAL;
  auto* m = reinterpret_cast<dmareg::MemoryMonitor*>(monitor);
  return m->Notify(addr, length).ok() ? 0 : -EINVAL;
}
