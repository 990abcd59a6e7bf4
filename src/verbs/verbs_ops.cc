// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/verbs/verbs_ops.h"

#include <infiniband/verbs.h>

#include <cerrno>
#include <memory>

namespace dmareg {

int VerbsOps::AdviseMr(ibv_pd*, ibv_advise_mr_advice, uint32_t, ibv_sge*, uint32_t) {
  return EOPNOTSUPP;
}
int VerbsOps::AsyncEventFd(ibv_context*) { return -1; }
int VerbsOps::GetAsyncEvent(ibv_context*, ibv_async_event*) {
  errno = ENOSYS;
  return -1;
}
void VerbsOps::AckAsyncEvent(ibv_async_event*) {}

namespace {

class RealVerbsOps final : public VerbsOps {
 public:
  ibv_device** GetDeviceList(int* num_devices) override { return ibv_get_device_list(num_devices); }
  void FreeDeviceList(ibv_device** list) override { ibv_free_device_list(list); }
  const char* GetDeviceName(ibv_device* device) override { return ibv_get_device_name(device); }
  ibv_context* OpenDevice(ibv_device* device) override { return ibv_open_device(device); }
  int CloseDevice(ibv_context* context) override { return ibv_close_device(context); }
  ibv_pd* AllocPd(ibv_context* context) override { return ibv_alloc_pd(context); }
  int DeallocPd(ibv_pd* pd) override { return ibv_dealloc_pd(pd); }
  int QueryDeviceEx(ibv_context* context, ibv_device_attr_ex* attr) override {
    return ibv_query_device_ex(context, nullptr, attr);
  }
  ibv_mr* RegMrIova2(ibv_pd* pd, void* addr, size_t length, uint64_t iova,
                     unsigned int access) override {
    return ibv_reg_mr_iova2(pd, addr, length, iova, access);
  }
  ibv_mr* RegDmaBufMr(ibv_pd* pd, uint64_t offset, size_t length, uint64_t iova, int fd,
                      int access) override {
    return ibv_reg_dmabuf_mr(pd, offset, length, iova, fd, access);
  }
  int DeregMr(ibv_mr* mr) override { return ibv_dereg_mr(mr); }
  int AdviseMr(ibv_pd* pd, ibv_advise_mr_advice advice, uint32_t flags, ibv_sge* sg_list,
               uint32_t num_sge) override {
    return ibv_advise_mr(pd, advice, flags, sg_list, num_sge);
  }
  ibv_fork_status IsForkInitialized() override { return ibv_is_fork_initialized(); }
  int AsyncEventFd(ibv_context* context) override { return context->async_fd; }
  int GetAsyncEvent(ibv_context* context, ibv_async_event* event) override {
    return ibv_get_async_event(context, event);
  }
  void AckAsyncEvent(ibv_async_event* event) override { ibv_ack_async_event(event); }
};

}  // namespace

std::shared_ptr<VerbsOps> LibibverbsOps() { return std::make_shared<RealVerbsOps>(); }

}  // namespace dmareg
