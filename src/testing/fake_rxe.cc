// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/testing/fake_rxe.h"

#include <cerrno>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace dmareg::testing {

FakeRxe::FakeRxe(std::string name) : name_(std::move(name)) {}

absl::StatusOr<std::shared_ptr<VerbsDomain>> FakeRxe::Open(VerbsDomainOptions options) {
  return Open(FakeVerbsOps::RxeLike(name_), std::move(options));
}

absl::StatusOr<std::shared_ptr<VerbsDomain>> FakeRxe::Open(FakeVerbsOps::DeviceSpec spec,
                                                           VerbsDomainOptions options) {
  ops_->AddDevice(std::move(spec));
  options.ops = ops_;
  return VerbsDomain::Open(name_, std::move(options));
}

absl::StatusOr<ibv_pd*> FakeRxe::AppAllocPd(FakeVerbsOps::DeviceSpec spec) {
  if (context_ != nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("FakeRxe::AppAllocPd ", name_, ": the application's context is open"));
  }
  ops_->AddDevice(std::move(spec));
  int n = 0;
  ibv_device** list = ops_->GetDeviceList(&n);
  if (list == nullptr || n < 1) {
    if (list != nullptr) ops_->FreeDeviceList(list);
    return absl::NotFoundError(absl::StrCat("FakeRxe::AppAllocPd ", name_, ": no device"));
  }
  context_ = ops_->OpenDevice(list[n - 1]);  // the one just added
  ops_->FreeDeviceList(list);
  if (context_ == nullptr) {
    return absl::UnavailableError(absl::StrCat("ibv_open_device ", name_, " failed"));
  }
  ibv_pd* pd = ops_->AllocPd(context_);
  if (pd == nullptr) return absl::UnavailableError(absl::StrCat("ibv_alloc_pd ", name_, " failed"));
  return pd;
}

absl::Status FakeRxe::AppFree(ibv_pd* pd) {
  if (int err = ops_->DeallocPd(pd); err != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("ibv_dealloc_pd ", name_, " failed (errno ", err, "): an MR is left on it"));
  }
  if (ops_->CloseDevice(context_) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("ibv_close_device ", name_, " failed (errno ", errno, ")"));
  }
  context_ = nullptr;
  return absl::OkStatus();
}

absl::Status FakeRxe::CheckReleased() const {
  std::vector<std::string> left;
  if (ops_->live_mrs() != 0) left.push_back(absl::StrCat(ops_->live_mrs(), " live MRs"));
  if (ops_->mrs_created() != ops_->mrs_destroyed()) {
    left.push_back(absl::StrCat(ops_->mrs_created(), " MRs created but ", ops_->mrs_destroyed(),
                                " destroyed"));
  }
  if (ops_->live_pds() != 0) left.push_back(absl::StrCat(ops_->live_pds(), " live PDs"));
  if (ops_->live_contexts() != 0) {
    left.push_back(absl::StrCat(ops_->live_contexts(), " open contexts"));
  }
  if (left.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("fake ", name_, " not released: ", absl::StrJoin(left, ", ")));
}

}  // namespace dmareg::testing
