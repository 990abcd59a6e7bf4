// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// Watches an RDMA device context's asynchronous events for the one that
// ends it: IBV_EVENT_DEVICE_FATAL, which the kernel sends when the device
// is removed (`rdma link delete`, a hot-unplug, a driver unbind) and
// disassociates the context: its MRs, QPs and PD are destroyed, and every
// later command fails with EIO. Other events are acknowledged and left.
//
// One thread per watched context, blocked in poll(2) until an event comes
// or the watch is destroyed (an eventfd wakes it). Only a domain that opened
// its context watches it: a wrapped context's events are the application's.
//
//   auto watch = DeviceWatch::Start(ops, context, "rxe0");
//   if (watch && watch->lost()) return watch->LostStatus("ibv_reg_mr");
#ifndef DMAREG_SRC_VERBS_DEVICE_WATCH_H_
#define DMAREG_SRC_VERBS_DEVICE_WATCH_H_

#include <infiniband/verbs.h>

#include <atomic>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "base/wakeable_thread.h"
#include "dmareg/verbs/verbs_ops.h"

namespace dmareg::internal {

class DeviceWatch {
 public:
  // nullptr where `ops` gives the context no event descriptor (a stand-in
  // without events) or the thread cannot start: the device is then never
  // reported gone, as before.
  static std::unique_ptr<DeviceWatch> Start(VerbsOps& ops, ibv_context* context,
                                            std::string device);
  ~DeviceWatch();  // stops and joins the thread
  DeviceWatch(const DeviceWatch&) = delete;
  DeviceWatch& operator=(const DeviceWatch&) = delete;

  // Set, once and for good, when the device is gone (release: the status
  // below is written first).
  const std::atomic<bool>& lost() const { return lost_; }
  // Unavailable: "`call` on rxe0: the device was removed ...".
  absl::Status LostStatus(std::string_view call) const;

 private:
  DeviceWatch(VerbsOps& ops, ibv_context* context, std::string device, int async_fd);
  void Run();

  VerbsOps& ops_;
  ibv_context* const context_;
  const std::string device_;
  const int async_fd_;  // the context's; not ours to close
  std::atomic<bool> lost_{false};
  WakeableThread thread_;  // last: stopped before the rest goes
};

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_VERBS_DEVICE_WATCH_H_
