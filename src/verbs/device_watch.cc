// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "verbs/device_watch.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <utility>

#include "absl/strings/str_format.h"

namespace dmareg::internal {

std::unique_ptr<DeviceWatch> DeviceWatch::Start(VerbsOps& ops, ibv_context* context,
                                                std::string device) {
  const int async_fd = ops.AsyncEventFd(context);
  if (async_fd < 0) return nullptr;
  std::unique_ptr<DeviceWatch> watch(new DeviceWatch(ops, context, std::move(device), async_fd));
  if (!watch->thread_.Start([w = watch.get()] { w->Run(); })) return nullptr;
  return watch;
}

DeviceWatch::DeviceWatch(VerbsOps& ops, ibv_context* context, std::string device, int async_fd)
    : ops_(ops), context_(context), device_(std::move(device)), async_fd_(async_fd) {}

DeviceWatch::~DeviceWatch() = default;

void DeviceWatch::Run() {
  pollfd fds[2] = {{.fd = async_fd_, .events = POLLIN, .revents = 0},
                   {.fd = thread_.wake_fd(), .events = POLLIN, .revents = 0}};
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;  // the watch is going
    if (fds[0].revents == 0) continue;
    ibv_async_event event{};
    if (ops_.GetAsyncEvent(context_, &event) != 0) {
      // Readable but no event: the descriptor failed (POLLERR/POLLHUP), or
      // another reader took it. Nothing more can be learnt from it.
      if (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) return;
      continue;
    }
    const bool fatal = event.event_type == IBV_EVENT_DEVICE_FATAL;
    ops_.AckAsyncEvent(&event);
    if (fatal) {
      lost_.store(true, std::memory_order_release);
      return;  // nothing comes after the end
    }
  }
}

absl::Status DeviceWatch::LostStatus(std::string_view call) const {
  return absl::UnavailableError(absl::StrFormat(
      "%s on %s: the device was removed (IBV_EVENT_DEVICE_FATAL: rdma link delete, a hot-unplug or "
      "a "
      "driver reset); the kernel destroyed its MRs, so releasing handles is all that is left to "
      "do; open the device again once it is back",
      call, device_));
}

}  // namespace dmareg::internal
