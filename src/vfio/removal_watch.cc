// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "vfio/removal_watch.h"

#include <linux/netlink.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>

namespace dmareg::internal {

namespace {

int OpenUeventSocket() {
  const int fd =
      socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_KOBJECT_UEVENT);
  if (fd < 0) return -1;
  sockaddr_nl addr{};
  addr.nl_family = AF_NETLINK;
  addr.nl_groups = 1;  // the kernel's own messages (udev re-sends on 2)
  if (bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

std::unique_ptr<RemovalWatch> RemovalWatch::Start(int request_fd, std::string address,
                                                  std::function<void()> on_request,
                                                  std::function<void()> on_bound) {
  std::unique_ptr<RemovalWatch> watch(new RemovalWatch(request_fd, OpenUeventSocket(),
                                                       std::move(address), std::move(on_request),
                                                       std::move(on_bound)));
  if (!watch->thread_.Start([w = watch.get()] { w->Run(); })) return nullptr;
  return watch;
}

RemovalWatch::RemovalWatch(int request_fd, int uevent_fd, std::string address,
                           std::function<void()> on_request, std::function<void()> on_bound)
    : request_fd_(request_fd),
      uevent_fd_(uevent_fd),
      address_(std::move(address)),
      on_request_(std::move(on_request)),
      on_bound_(std::move(on_bound)) {}

RemovalWatch::~RemovalWatch() {
  thread_.Stop();  // it polls the socket closed here
  if (uevent_fd_ >= 0) close(uevent_fd_);
}

bool RemovalWatch::IsVfioBind(std::string_view message, std::string_view address) {
  bool bind = false, pci = false, vfio = false, ours = false;
  size_t at = message.find('\0');  // past the "action@devpath" header
  while (at != std::string_view::npos && at + 1 < message.size()) {
    const size_t end = message.find('\0', at + 1);
    const std::string_view kv = message.substr(
        at + 1, end == std::string_view::npos ? std::string_view::npos : end - at - 1);
    if (kv == "ACTION=bind") bind = true;
    if (kv == "SUBSYSTEM=pci") pci = true;
    if (kv == "DRIVER=vfio-pci") vfio = true;
    if (kv.substr(0, 8) == "DEVPATH=" && kv.size() > address.size() &&
        kv.substr(kv.size() - address.size()) == address &&
        kv[kv.size() - address.size() - 1] == '/') {
      ours = true;
    }
    at = end;
  }
  return bind && pci && vfio && ours;
}

void RemovalWatch::Run() {
  pollfd fds[3] = {{.fd = thread_.wake_fd(), .events = POLLIN, .revents = 0},
                   {.fd = request_fd_, .events = POLLIN, .revents = 0},
                   {.fd = uevent_fd_, .events = POLLIN, .revents = 0}};
  const nfds_t n = uevent_fd_ >= 0 ? 3 : 2;
  for (;;) {
    if (poll(fds, n, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[0].revents != 0) return;  // the watch is going
    if (fds[1].revents & POLLIN) {
      uint64_t count = 0;
      if (read(request_fd_, &count, sizeof count) == static_cast<ssize_t>(sizeof count)) {
        on_request_();
      }
    }
    if (n == 3 && (fds[2].revents & POLLIN)) {
      char buf[8192];
      for (;;) {
        const ssize_t got = recv(uevent_fd_, buf, sizeof buf, 0);
        if (got <= 0) break;  // EAGAIN: drained (ENOBUFS: some were lost)
        if (IsVfioBind(std::string_view(buf, static_cast<size_t>(got)), address_)) on_bound_();
      }
    }
  }
}

}  // namespace dmareg::internal
