// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The seam between VerbsDomain and libibverbs: one virtual function per verbs
// call the domain makes, with libibverbs' own error conventions, so unit
// tests can fake a device (capabilities, errno of each call) without one.
//
//   auto domain = VerbsDomain::Open(std::make_shared<MyFakeOps>(), "mlx5_0");
//
// `MakeRealVerbsOps()` forwards every call to libibverbs unchanged.

#ifndef DMAREG_SRC_VERBS_VERBS_OPS_H_
#define DMAREG_SRC_VERBS_VERBS_OPS_H_

#include <infiniband/verbs.h>

#include <cstddef>
#include <cstdint>
#include <memory>

namespace dmareg::internal {

class VerbsOps {
 public:
  virtual ~VerbsOps() = default;

  // Error conventions are libibverbs' own, per call:
  //   pointer results: nullptr with errno set;
  //   CloseDevice: -1 with errno set;
  //   DeallocPd, DeregMr, QueryDeviceEx: the errno value itself (0 = OK).
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
  virtual ibv_mr* RegDmaBufMr(ibv_pd* pd, uint64_t offset, size_t length,
                              uint64_t iova, int fd, int access) = 0;
  virtual int DeregMr(ibv_mr* mr) = 0;
  virtual ibv_fork_status IsForkInitialized() = 0;
};

// A new, stateless VerbsOps calling libibverbs.
std::shared_ptr<VerbsOps> MakeRealVerbsOps();

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_VERBS_VERBS_OPS_H_
