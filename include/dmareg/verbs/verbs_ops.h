// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// verbs/verbs_ops.h: the seam between VerbsDomain and libibverbs (library
// dmareg::verbs).
//
// `VerbsOps` has one virtual function per verbs call the domain makes, with
// libibverbs' own error conventions. `LibibverbsOps()` forwards every call
// to libibverbs unchanged; it is what a VerbsDomain uses unless
// `VerbsDomainOptions::ops` names another. Another implementation stands in
// for a device (its attributes, the errno of each call) in a test, or
// routes the calls through a wrapper of the application's own (tracing,
// a provider loaded some other way). dmareg::testing::FakeVerbsOps
// (testing/fake_verbs_ops.h) is a ready-made stand-in.
//
//   auto ops = std::make_shared<dmareg::testing::FakeVerbsOps>();
//   ops->AddDevice("mlx5_0");
//   auto domain = dmareg::VerbsDomain::Open("mlx5_0", {.ops = ops});
//
// Thread safety: a domain calls its ops from any thread, several at once,
// as it calls libibverbs; an implementation must allow that.

#ifndef DMAREG_VERBS_VERBS_OPS_H_
#define DMAREG_VERBS_VERBS_OPS_H_

#include <infiniband/verbs.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#pragma GCC visibility push(default)

namespace dmareg {

class VerbsOps {
 public:
  virtual ~VerbsOps() = default;

  // Error conventions are libibverbs' own, per call:
  //   pointer results: nullptr with errno set;
  //   CloseDevice: -1 with errno set;
  //   DeallocPd, DeregMr, QueryDeviceEx, AdviseMr: the errno value itself (0 = OK).
  virtual ibv_device** GetDeviceList(int* num_devices) = 0;
  virtual void FreeDeviceList(ibv_device** list) = 0;
  virtual const char* GetDeviceName(ibv_device* device) = 0;
  virtual ibv_context* OpenDevice(ibv_device* device) = 0;
  virtual int CloseDevice(ibv_context* context) = 0;
  virtual ibv_pd* AllocPd(ibv_context* context) = 0;
  virtual int DeallocPd(ibv_pd* pd) = 0;
  virtual int QueryDeviceEx(ibv_context* context, ibv_device_attr_ex* attr) = 0;
  virtual ibv_mr* RegMrIova2(ibv_pd* pd, void* addr, size_t length, uint64_t iova,
                             unsigned int access) = 0;
  virtual ibv_mr* RegDmaBufMr(ibv_pd* pd, uint64_t offset, size_t length, uint64_t iova, int fd,
                              int access) = 0;
  virtual int DeregMr(ibv_mr* mr) = 0;
  // ibv_advise_mr. Default: EOPNOTSUPP, as rdma-core answers for providers
  // without it.
  virtual int AdviseMr(ibv_pd* pd, ibv_advise_mr_advice advice, uint32_t flags, ibv_sge* sg_list,
                       uint32_t num_sge);
  virtual ibv_fork_status IsForkInitialized() = 0;
  // The context's asynchronous events, which tell a domain that opened the
  // context when its device is removed (IBV_EVENT_DEVICE_FATAL): the
  // descriptor to poll (context->async_fd), ibv_get_async_event (0, or -1
  // with errno set) and ibv_ack_async_event. Defaults: no descriptor (-1),
  // so an implementation without events never reports a device gone.
  virtual int AsyncEventFd(ibv_context* context);
  virtual int GetAsyncEvent(ibv_context* context, ibv_async_event* event);
  virtual void AckAsyncEvent(ibv_async_event* event);
};

// A new, stateless VerbsOps calling libibverbs (ibv_get_device_list, ...,
// ibv_reg_mr_iova2, ibv_reg_dmabuf_mr, ibv_advise_mr).
std::shared_ptr<VerbsOps> LibibverbsOps();

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_VERBS_VERBS_OPS_H_
