// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// verbs/verbs_ops.h: the seam between VerbsDomain and libibverbs, for tests
// (library dmareg::testing, pkg-config dmareg-testing).
//
// `VerbsOps` has one virtual function per verbs call the domain makes, with
// libibverbs' own error conventions, so a test can stand in for a device
// (its attributes, the errno of each call) without having one.
// `OpenVerbsDomain`, `WrapVerbsDomain` and `ListVerbsDevices` are
// `VerbsDomain::Open`, `Wrap` and `ListDevices` over such a stand-in; FakeVerbsOps
// (testing/fake_verbs_ops.h) is a ready-made one.
//
//   auto ops = std::make_shared<dmareg::testing::FakeVerbsOps>();
//   ops->AddDevice("mlx5_0");
//   auto domain = dmareg::testing::OpenVerbsDomain(ops, "mlx5_0");

#ifndef DMAREG_VERBS_VERBS_OPS_H_
#define DMAREG_VERBS_VERBS_OPS_H_

#include <infiniband/verbs.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "dmareg/verbs/verbs_domain.h"

#pragma GCC visibility push(default)

namespace dmareg::testing {

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
};

// VerbsDomain::Open over `ops` instead of libibverbs: the same device
// selection, probing and errors. InvalidArgument if `ops` is null.
absl::StatusOr<std::shared_ptr<VerbsDomain>> OpenVerbsDomain(std::shared_ptr<VerbsOps> ops,
                                                             std::string_view device_name = "",
                                                             VerbsDomainOptions options = {});

// VerbsDomain::Wrap over `ops`: `pd` is one the test allocated through
// `ops` (ops->AllocPd(ops->OpenDevice(...))) and deallocates itself.
absl::StatusOr<std::shared_ptr<VerbsDomain>> WrapVerbsDomain(std::shared_ptr<VerbsOps> ops,
                                                             ibv_pd* pd,
                                                             VerbsDomainOptions options = {});

// VerbsDomain::ListDevices over `ops`. InvalidArgument if `ops` is null.
absl::StatusOr<std::vector<std::string>> ListVerbsDevices(std::shared_ptr<VerbsOps> ops);

}  // namespace dmareg::testing

#pragma GCC visibility pop

#endif  // DMAREG_VERBS_VERBS_OPS_H_
