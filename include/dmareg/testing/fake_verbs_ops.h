// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// testing/fake_verbs_ops.h: a VerbsOps with no device behind it (library
// dmareg::testing): devices are described by their attributes and dma-buf
// probe answer, objects are heap structs, every call is counted, and any call
// can be told to fail with an errno.
//
//   auto ops = std::make_shared<FakeVerbsOps>();
//   ops->AddDevice("rxe0");
//   auto domain = dmareg::VerbsDomain::Open("rxe0", {.ops = ops}).value();
//   ops->FailNext(FakeVerbsOps::Call::kRegMr, EFAULT);
//   EXPECT_FALSE(domain->RegisterHost({buf, 4096}, {}).ok());
//   EXPECT_EQ(ops->live_mrs(), 0);

#ifndef DMAREG_TESTING_FAKE_VERBS_OPS_H_
#define DMAREG_TESTING_FAKE_VERBS_OPS_H_

#include <infiniband/verbs.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dmareg/verbs/verbs_ops.h"

#pragma GCC visibility push(default)

namespace dmareg::testing {

class FakeVerbsOps final : public ::dmareg::VerbsOps {
 public:
  enum class Call {
    kGetDeviceList,
    kOpenDevice,
    kCloseDevice,
    kAllocPd,
    kDeallocPd,
    kQueryDeviceEx,
    kRegMr,
    kRegDmaBufMr,
    kDeregMr,
    kAdviseMr,
  };

  struct DeviceSpec {
    std::string name{};
    ibv_device_attr_ex attr{};
    // What ibv_reg_dmabuf_mr answers for fd -1: EBADF = implemented.
    int dmabuf_probe_errno = EOPNOTSUPP;
    ibv_fork_status fork_status = IBV_FORK_DISABLED;
    // What IBV_ACCESS_ON_DEMAND gets where `attr` has no IBV_ODP_SUPPORT:
    // EINVAL (rxe on 6.1), EOPNOTSUPP (newer kernels that refuse it).
    int on_demand_errno = EINVAL;
    // What ibv_advise_mr answers on an ODP MR (0 = prefetched); EOPNOTSUPP
    // as bookworm's rdma-core for rxe. A pinned MR always gets EINVAL.
    int advise_errno = EOPNOTSUPP;
  };

  // The last ibv_advise_mr call.
  struct LastAdvice {
    ibv_advise_mr_advice advice = IBV_ADVISE_MR_ADVICE_PREFETCH;
    uint32_t flags = 0;
    uint64_t addr = 0;
    uint32_t length = 0;
    uint32_t lkey = 0;
  };

  // The arguments of the last registration call.
  struct LastReg {
    void* addr = nullptr;
    size_t length = 0;
    uint64_t iova = 0;
    uint64_t offset = 0;
    int fd = -1;
    unsigned int access = 0;
  };

  FakeVerbsOps() = default;
  ~FakeVerbsOps() override;

  // Attributes default to rxe's (max_mr 524287, page_size_cap 0xfffff000, no ODP).
  static DeviceSpec RxeLike(std::string name);
  // RxeLike with ODP for RC (send, recv, write, read, atomic), as rxe on 7.x.
  static DeviceSpec OdpCapable(std::string name);
  void AddDevice(DeviceSpec spec);
  void AddDevice(std::string name) { AddDevice(RxeLike(std::move(name))); }
  // The device goes away as `rdma link delete` takes it: each open context
  // of it gets IBV_EVENT_DEVICE_FATAL on its async_fd (an eventfd here),
  // and from then on its registrations fail with EIO while deregistration
  // succeeds (rdma-core treats EIO of a destroy as done). False: no such
  // device.
  bool RemoveDevice(const std::string& name);

  // The next `times` calls of `call` fail with `err` (and create nothing).
  void FailNext(Call call, int err, int times = 1);

  int calls(Call call) const;
  int64_t live_contexts() const;
  int64_t live_pds() const;
  int64_t live_mrs() const;
  int64_t mrs_created() const;            // registrations that succeeded (probe excluded)
  int64_t mrs_destroyed() const;          // deregistrations that succeeded
  int64_t on_demand_mrs_created() const;  // of mrs_created, with IBV_ACCESS_ON_DEMAND
  LastReg last_reg() const;
  LastAdvice last_advice() const;
  // Live MRs registered with IBV_ACCESS_ON_DEMAND over NULL, SIZE_MAX.
  int64_t live_implicit_mrs() const;

  ibv_device** GetDeviceList(int* num_devices) override;
  void FreeDeviceList(ibv_device** list) override;
  const char* GetDeviceName(ibv_device* device) override;
  ibv_context* OpenDevice(ibv_device* device) override;
  int CloseDevice(ibv_context* context) override;
  ibv_pd* AllocPd(ibv_context* context) override;
  int DeallocPd(ibv_pd* pd) override;
  int QueryDeviceEx(ibv_context* context, ibv_device_attr_ex* attr) override;
  ibv_mr* RegMrIova2(ibv_pd* pd, void* addr, size_t length, uint64_t iova,
                     unsigned int access) override;
  ibv_mr* RegDmaBufMr(ibv_pd* pd, uint64_t offset, size_t length, uint64_t iova, int fd,
                      int access) override;
  int DeregMr(ibv_mr* mr) override;
  int AdviseMr(ibv_pd* pd, ibv_advise_mr_advice advice, uint32_t flags, ibv_sge* sg_list,
               uint32_t num_sge) override;
  ibv_fork_status IsForkInitialized() override;
  int AsyncEventFd(ibv_context* context) override;
  int GetAsyncEvent(ibv_context* context, ibv_async_event* event) override;
  void AckAsyncEvent(ibv_async_event* event) override;

 private:
  // 0, or the errno the next `call` must fail with (consumes one failure).
  int TakeFailure(Call call);
  const DeviceSpec* SpecOf(ibv_context* context) const;
  ibv_mr* NewMr(ibv_pd* pd, void* addr, size_t length);

  mutable std::mutex mu_;
  std::vector<std::unique_ptr<ibv_device>> devices_;
  std::vector<DeviceSpec> specs_;  // parallel to devices_
  std::map<Call, std::vector<int>> failures_;
  std::map<Call, int> calls_;
  int64_t live_contexts_ = 0;
  std::vector<ibv_context*> contexts_;  // open ones
  std::vector<ibv_device*> removed_;    // by RemoveDevice
  int64_t live_pds_ = 0;
  int64_t live_mrs_ = 0;
  int64_t mrs_created_ = 0;
  int64_t mrs_destroyed_ = 0;
  int64_t on_demand_mrs_created_ = 0;
  std::map<uint32_t, unsigned int> mr_access_;  // lkey -> access flags, live MRs
  std::map<uint32_t, bool> implicit_;           // lkey -> implicit ODP, live MRs
  LastAdvice last_advice_;
  uint32_t next_key_ = 0x100;
  LastReg last_;
};

}  // namespace dmareg::testing

#pragma GCC visibility pop

#endif  // DMAREG_TESTING_FAKE_VERBS_OPS_H_
