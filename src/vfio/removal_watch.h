// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// Follows a VFIO device's removal and return for its domain. The kernel asks
// user space to let go of a device it is removing (sysfs remove, hot-unplug,
// a driver unbind) by signalling the eventfd registered for
// VFIO_PCI_REQ_IRQ_INDEX, again every 10 s, and holds the removal until the
// device's fds and mappings are closed; DPDK's EAL answers it the same way.
// When the device is bound to vfio-pci again the kernel sends a "bind"
// uevent for its PCI address (NETLINK_KOBJECT_UEVENT), and the domain can
// attach again.
//
// One thread, blocked in poll(2) on the request eventfd, the uevent socket
// and an eventfd that the destructor writes. The domain's callbacks run on
// it, with no lock of the watch's held.
//
//   auto watch = RemovalWatch::Start(req_fd, "0000:00:03.0",
//                                    [&] { /* let go */ }, [&] { /* back */ });
#ifndef DMAREG_SRC_VFIO_REMOVAL_WATCH_H_
#define DMAREG_SRC_VFIO_REMOVAL_WATCH_H_

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "base/wakeable_thread.h"

namespace dmareg::internal {

class RemovalWatch {
 public:
  // `request_fd`: the eventfd the device signals (the domain's, not closed
  // here). `on_request` runs on each request, `on_bound` on each bind of
  // `address` to vfio-pci. nullptr if no thread could start. A process that
  // may not read uevents (a network namespace without them) still follows
  // requests; `follows_returns()` then says false.
  static std::unique_ptr<RemovalWatch> Start(int request_fd, std::string address,
                                             std::function<void()> on_request,
                                             std::function<void()> on_bound);
  ~RemovalWatch();  // stops and joins the thread (not in a forked child)
  RemovalWatch(const RemovalWatch&) = delete;
  RemovalWatch& operator=(const RemovalWatch&) = delete;

  bool follows_returns() const { return uevent_fd_ >= 0; }

  // Whether a kernel uevent message (NUL-separated "KEY=VALUE" after an
  // "action@devpath" header) says that the PCI device `address` was bound
  // to vfio-pci.
  static bool IsVfioBind(std::string_view message, std::string_view address);

 private:
  RemovalWatch(int request_fd, int uevent_fd, std::string address, std::function<void()> on_request,
               std::function<void()> on_bound);
  void Run();

  const int request_fd_;
  const int uevent_fd_;  // -1: returns are not followed
  const std::string address_;
  const std::function<void()> on_request_;
  const std::function<void()> on_bound_;
  WakeableThread thread_;  // last: stopped before the rest goes
};

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_VFIO_REMOVAL_WATCH_H_
