// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// testing/fake_rxe.h: one rxe-like device behind a FakeVerbsOps, as the verbs unit
// tests set it up: a VerbsDomain opened on it, or the application's own
// context and PD for VerbsDomain::Wrap, and the check that nothing was left
// on the device once every domain over it is gone.
//
//   dmareg::testing::FakeRxe rxe;  // "rxe0"
//   std::shared_ptr<dmareg::VerbsDomain> domain =
//       rxe.Open(dmareg::testing::FakeVerbsOps::OdpCapable("rxe0")).value();
//   rxe.ops()->FailNext(dmareg::testing::FakeVerbsOps::Call::kRegMr, EFAULT);
//   ...
//   domain.reset();
//   EXPECT_TRUE(rxe.CheckReleased().ok());  // else: what was left behind
//
// Not thread-safe itself (FakeVerbsOps is): set up and check from one thread.

#ifndef DMAREG_TESTING_FAKE_RXE_H_
#define DMAREG_TESTING_FAKE_RXE_H_

#include <infiniband/verbs.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dmareg/testing/fake_verbs_ops.h"
#include "dmareg/verbs/verbs_domain.h"

#pragma GCC visibility push(default)

namespace dmareg::testing {

class FakeRxe {
 public:
  explicit FakeRxe(std::string name = "rxe0");

  const std::string& name() const { return name_; }
  const std::shared_ptr<FakeVerbsOps>& ops() const { return ops_; }

  // Adds the device as `spec` says (RxeLike(name()) when not given) and
  // opens a VerbsDomain on it by name(), over ops() (whatever
  // `options.ops` says).
  absl::StatusOr<std::shared_ptr<VerbsDomain>> Open(VerbsDomainOptions options = {});
  absl::StatusOr<std::shared_ptr<VerbsDomain>> Open(FakeVerbsOps::DeviceSpec spec,
                                                    VerbsDomainOptions options = {});

  // The application's own set-up, as rdma_cm or UCX would do it: adds the
  // device, opens it (context()) and allocates a PD, all through ops().
  absl::StatusOr<ibv_pd*> AppAllocPd(FakeVerbsOps::DeviceSpec spec);
  absl::StatusOr<ibv_pd*> AppAllocPd() { return AppAllocPd(FakeVerbsOps::RxeLike(name_)); }
  // The application's teardown: deallocates `pd`, closes context(); an
  // error names the call that failed (an MR left on the PD, say).
  absl::Status AppFree(ibv_pd* pd);
  ibv_context* context() const { return context_; }

  // OK when every MR made was destroyed and no PD or context is live; else
  // FailedPrecondition saying what is left. Call once the domains are gone.
  absl::Status CheckReleased() const;

 private:
  std::string name_;
  std::shared_ptr<FakeVerbsOps> ops_ = std::make_shared<FakeVerbsOps>();
  ibv_context* context_ = nullptr;
};

}  // namespace dmareg::testing

#pragma GCC visibility pop

#endif  // DMAREG_TESTING_FAKE_RXE_H_
