// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/testing/fake_verbs_ops.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>

namespace dmareg::testing {

FakeVerbsOps::~FakeVerbsOps() = default;

FakeVerbsOps::DeviceSpec FakeVerbsOps::RxeLike(std::string name) {
  DeviceSpec spec;
  spec.name = std::move(name);
  ibv_device_attr& a = spec.attr.orig_attr;
  std::strncpy(a.fw_ver, "6.1.0", sizeof(a.fw_ver) - 1);
  a.vendor_id = 0xffffff;
  a.max_mr_size = UINT64_MAX;
  a.page_size_cap = 0xfffff000;
  a.max_mr = 524287;
  a.phys_port_cnt = 1;
  return spec;
}

FakeVerbsOps::DeviceSpec FakeVerbsOps::OdpCapable(std::string name) {
  DeviceSpec spec = RxeLike(std::move(name));
  spec.attr.odp_caps.general_caps = IBV_ODP_SUPPORT;
  spec.attr.odp_caps.per_transport_caps.rc_odp_caps = IBV_ODP_SUPPORT_SEND | IBV_ODP_SUPPORT_RECV |
                                                      IBV_ODP_SUPPORT_WRITE | IBV_ODP_SUPPORT_READ |
                                                      IBV_ODP_SUPPORT_ATOMIC;
  return spec;
}

void FakeVerbsOps::AddDevice(DeviceSpec spec) {
  std::lock_guard<std::mutex> lock(mu_);
  auto dev = std::make_unique<ibv_device>();
  std::memset(dev.get(), 0, sizeof(ibv_device));
  std::strncpy(dev->name, spec.name.c_str(), sizeof(dev->name) - 1);
  devices_.push_back(std::move(dev));
  specs_.push_back(std::move(spec));
}

void FakeVerbsOps::FailNext(Call call, int err, int times) {
  std::lock_guard<std::mutex> lock(mu_);
  for (int i = 0; i < times; ++i) failures_[call].push_back(err);
}

int FakeVerbsOps::calls(Call call) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = calls_.find(call);
  return it == calls_.end() ? 0 : it->second;
}

int64_t FakeVerbsOps::live_contexts() const {
  std::lock_guard<std::mutex> lock(mu_);
  return live_contexts_;
}
int64_t FakeVerbsOps::live_pds() const {
  std::lock_guard<std::mutex> lock(mu_);
  return live_pds_;
}
int64_t FakeVerbsOps::live_mrs() const {
  std::lock_guard<std::mutex> lock(mu_);
  return live_mrs_;
}
int64_t FakeVerbsOps::mrs_created() const {
  std::lock_guard<std::mutex> lock(mu_);
  return mrs_created_;
}
int64_t FakeVerbsOps::mrs_destroyed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return mrs_destroyed_;
}
int64_t FakeVerbsOps::on_demand_mrs_created() const {
  std::lock_guard<std::mutex> lock(mu_);
  return on_demand_mrs_created_;
}
FakeVerbsOps::LastReg FakeVerbsOps::last_reg() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_;
}

int FakeVerbsOps::TakeFailure(Call call) {
  ++calls_[call];
  auto it = failures_.find(call);
  if (it == failures_.end() || it->second.empty()) return 0;
  const int err = it->second.front();
  it->second.erase(it->second.begin());
  return err;
}

const FakeVerbsOps::DeviceSpec* FakeVerbsOps::SpecOf(ibv_context* context) const {
  for (size_t i = 0; i < devices_.size(); ++i) {
    if (devices_[i].get() == context->device) return &specs_[i];
  }
  return nullptr;
}

ibv_device** FakeVerbsOps::GetDeviceList(int* num_devices) {
  std::lock_guard<std::mutex> lock(mu_);
  if (const int err = TakeFailure(Call::kGetDeviceList); err != 0) {
    errno = err;
    return nullptr;
  }
  auto** list = new ibv_device*[devices_.size() + 1];
  for (size_t i = 0; i < devices_.size(); ++i) list[i] = devices_[i].get();
  list[devices_.size()] = nullptr;
  if (num_devices != nullptr) *num_devices = static_cast<int>(devices_.size());
  return list;
}

void FakeVerbsOps::FreeDeviceList(ibv_device** list) { delete[] list; }

const char* FakeVerbsOps::GetDeviceName(ibv_device* device) { return device->name; }

ibv_context* FakeVerbsOps::OpenDevice(ibv_device* device) {
  std::lock_guard<std::mutex> lock(mu_);
  if (const int err = TakeFailure(Call::kOpenDevice); err != 0) {
    errno = err;
    return nullptr;
  }
  auto* ctx = new ibv_context();
  ctx->device = device;
  ctx->async_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  ++live_contexts_;
  contexts_.push_back(ctx);
  return ctx;
}

int FakeVerbsOps::CloseDevice(ibv_context* context) {
  std::lock_guard<std::mutex> lock(mu_);
  if (const int err = TakeFailure(Call::kCloseDevice); err != 0) {
    errno = err;
    return -1;
  }
  if (context->async_fd >= 0) close(context->async_fd);
  contexts_.erase(std::find(contexts_.begin(), contexts_.end(), context));
  delete context;
  --live_contexts_;
  return 0;
}

ibv_pd* FakeVerbsOps::AllocPd(ibv_context* context) {
  std::lock_guard<std::mutex> lock(mu_);
  if (const int err = TakeFailure(Call::kAllocPd); err != 0) {
    errno = err;
    return nullptr;
  }
  auto* pd = new ibv_pd();
  pd->context = context;
  ++live_pds_;
  return pd;
}

int FakeVerbsOps::DeallocPd(ibv_pd* pd) {
  std::lock_guard<std::mutex> lock(mu_);
  if (const int err = TakeFailure(Call::kDeallocPd); err != 0) return err;
  delete pd;
  --live_pds_;
  return 0;
}

int FakeVerbsOps::QueryDeviceEx(ibv_context* context, ibv_device_attr_ex* attr) {
  std::lock_guard<std::mutex> lock(mu_);
  if (const int err = TakeFailure(Call::kQueryDeviceEx); err != 0) return err;
  const DeviceSpec* spec = SpecOf(context);
  if (spec == nullptr) return ENODEV;
  *attr = spec->attr;
  return 0;
}

ibv_mr* FakeVerbsOps::NewMr(ibv_pd* pd, void* addr, size_t length) {
  auto* mr = new ibv_mr();
  mr->context = pd->context;
  mr->pd = pd;
  mr->addr = addr;
  mr->length = length;
  mr->lkey = next_key_++;
  mr->rkey = 0x8000'0000u | mr->lkey;
  ++live_mrs_;
  ++mrs_created_;
  return mr;
}

ibv_mr* FakeVerbsOps::RegMrIova2(ibv_pd* pd, void* addr, size_t length, uint64_t iova,
                                 unsigned int access) {
  std::lock_guard<std::mutex> lock(mu_);
  last_ = LastReg{addr, length, iova, 0, -1, access};
  if (const int err = TakeFailure(Call::kRegMr); err != 0) {
    errno = err;
    return nullptr;
  }
  if (std::find(removed_.begin(), removed_.end(), pd->context->device) != removed_.end()) {
    errno = EIO;
    return nullptr;
  }
  if ((access & IBV_ACCESS_ON_DEMAND) != 0) {
    const DeviceSpec* spec = SpecOf(pd->context);
    if (spec == nullptr || (spec->attr.odp_caps.general_caps & IBV_ODP_SUPPORT) == 0) {
      errno = spec != nullptr ? spec->on_demand_errno : EINVAL;
      return nullptr;
    }
    if (addr == nullptr && length == SIZE_MAX &&
        (spec->attr.odp_caps.general_caps & IBV_ODP_SUPPORT_IMPLICIT) == 0) {
      errno = EOPNOTSUPP;  // implicit ODP where the device has none
      return nullptr;
    }
    ++on_demand_mrs_created_;
  }
  ibv_mr* mr = NewMr(pd, addr, length);
  mr_access_[mr->lkey] = access;
  if (addr == nullptr && length == SIZE_MAX) implicit_[mr->lkey] = true;
  return mr;
}

ibv_mr* FakeVerbsOps::RegDmaBufMr(ibv_pd* pd, uint64_t offset, size_t length, uint64_t iova, int fd,
                                  int access) {
  std::lock_guard<std::mutex> lock(mu_);
  if (fd < 0) {  // the open-time probe: answer as the driver would
    ++calls_[Call::kRegDmaBufMr];
    const DeviceSpec* spec = SpecOf(pd->context);
    errno = spec != nullptr ? spec->dmabuf_probe_errno : EOPNOTSUPP;
    return nullptr;
  }
  last_ = LastReg{nullptr, length, iova, offset, fd, static_cast<unsigned int>(access)};
  if (const int err = TakeFailure(Call::kRegDmaBufMr); err != 0) {
    errno = err;
    return nullptr;
  }
  const DeviceSpec* spec = SpecOf(pd->context);
  if (spec == nullptr || spec->dmabuf_probe_errno != EBADF) {
    errno = EOPNOTSUPP;
    return nullptr;
  }
  return NewMr(pd, nullptr, length);
}

int FakeVerbsOps::DeregMr(ibv_mr* mr) {
  std::lock_guard<std::mutex> lock(mu_);
  if (const int err = TakeFailure(Call::kDeregMr); err != 0) return err;
  mr_access_.erase(mr->lkey);
  implicit_.erase(mr->lkey);
  delete mr;
  --live_mrs_;
  ++mrs_destroyed_;
  return 0;
}

bool FakeVerbsOps::RemoveDevice(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  ibv_device* device = nullptr;
  for (const auto& d : devices_) {
    if (name == d->name) device = d.get();
  }
  if (device == nullptr) return false;
  removed_.push_back(device);
  for (ibv_context* c : contexts_) {
    const uint64_t one = 1;
    if (c->device == device && c->async_fd >= 0) (void)!write(c->async_fd, &one, sizeof one);
  }
  return true;
}

int FakeVerbsOps::AsyncEventFd(ibv_context* context) { return context->async_fd; }

int FakeVerbsOps::GetAsyncEvent(ibv_context* context, ibv_async_event* event) {
  uint64_t n = 0;
  if (read(context->async_fd, &n, sizeof n) != static_cast<ssize_t>(sizeof n)) return -1;
  *event = ibv_async_event{};
  event->event_type = IBV_EVENT_DEVICE_FATAL;
  return 0;
}

void FakeVerbsOps::AckAsyncEvent(ibv_async_event*) {}

int FakeVerbsOps::AdviseMr(ibv_pd* pd, ibv_advise_mr_advice advice, uint32_t flags,
                           ibv_sge* sg_list, uint32_t num_sge) {
  std::lock_guard<std::mutex> lock(mu_);
  if (const int err = TakeFailure(Call::kAdviseMr); err != 0) return err;
  if (num_sge == 0 || sg_list == nullptr) return EINVAL;
  last_advice_ = LastAdvice{advice, flags, sg_list[0].addr, sg_list[0].length, sg_list[0].lkey};
  for (uint32_t i = 0; i < num_sge; ++i) {
    auto it = mr_access_.find(sg_list[i].lkey);
    if (it == mr_access_.end() || (it->second & IBV_ACCESS_ON_DEMAND) == 0) return EINVAL;
  }
  const DeviceSpec* spec = SpecOf(pd->context);
  return spec != nullptr ? spec->advise_errno : EOPNOTSUPP;
}

FakeVerbsOps::LastAdvice FakeVerbsOps::last_advice() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_advice_;
}

int64_t FakeVerbsOps::live_implicit_mrs() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(implicit_.size());
}

ibv_fork_status FakeVerbsOps::IsForkInitialized() {
  std::lock_guard<std::mutex> lock(mu_);
  return specs_.empty() ? IBV_FORK_DISABLED : specs_.front().fork_status;
}

}  // namespace dmareg::testing
