// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// VerbsDomain::Wrap over a fake VerbsOps: a domain over a PD the test (the
// "application") allocated. dmareg never deallocates the PD nor closes the
// context, deregisters every MR it made before it goes, and probes the
// device as Open does.

#include <infiniband/verbs.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "common/test_memory.h"
#include "dmareg/cache.h"
#include "dmareg/testing/fake_rxe.h"
#include "dmareg/testing/fake_verbs_ops.h"
#include "dmareg/verbs/verbs_domain.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dmareg {
namespace {

using ::dmareg::testing::FakeVerbsOps;
using ::testing::AllOf;
using ::testing::HasSubstr;
using Call = FakeVerbsOps::Call;

constexpr size_t kLen = 64 * 1024;

// The application's own set-up: device list, context and PD through `ops`.
class VerbsWrapTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(buf_.ok()); }

  // Opens the device and allocates a PD, as rdma_cm or UCX would.
  ibv_pd* AppAllocPd(FakeVerbsOps::DeviceSpec spec = FakeVerbsOps::RxeLike("rxe0")) {
    absl::StatusOr<ibv_pd*> pd = rxe_.AppAllocPd(std::move(spec));
    EXPECT_TRUE(pd.ok()) << pd.status();
    context_ = rxe_.context();
    return pd.value_or(nullptr);
  }
  // The application tears down; both calls must succeed, and nothing is left.
  void AppFree(ibv_pd* pd) {
    EXPECT_EQ(rxe_.AppFree(pd), absl::OkStatus());
    EXPECT_EQ(rxe_.CheckReleased(), absl::OkStatus());
  }
  char* buf() { return buf_.data(); }

  test::Mapping buf_{kLen};
  testing::FakeRxe rxe_;
  ibv_context* context_ = nullptr;
  std::shared_ptr<FakeVerbsOps> ops_ = rxe_.ops();
};

TEST_F(VerbsWrapTest, NullPdIsInvalidArgument) {
  auto d = VerbsDomain::Wrap(nullptr, {.ops = ops_});
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(d.status().message(), HasSubstr("null ibv_pd"));
  ibv_pd orphan{};  // no context
  d = VerbsDomain::Wrap(&orphan, {.ops = ops_});
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(d.status().message(), HasSubstr("no context"));
  EXPECT_EQ(dmareg::VerbsDomain::Wrap(nullptr).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(VerbsWrapTest, UsesTheApplicationsPdAndNeverFreesIt) {
  ibv_pd* pd = AppAllocPd();
  {
    auto d = VerbsDomain::Wrap(pd, {.ops = ops_});
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ((*d)->pd(), pd);
    EXPECT_EQ((*d)->context(), context_);
    EXPECT_FALSE((*d)->owns_pd());
    EXPECT_EQ((*d)->name(), "rxe0");
    EXPECT_EQ(ops_->calls(Call::kAllocPd), 1);     // the application's only
    EXPECT_EQ(ops_->calls(Call::kOpenDevice), 1);  // likewise
  }
  EXPECT_EQ(ops_->calls(Call::kDeallocPd), 0);
  EXPECT_EQ(ops_->calls(Call::kCloseDevice), 0);
  EXPECT_EQ(ops_->live_pds(), 1);
  EXPECT_EQ(ops_->live_contexts(), 1);
  AppFree(pd);
}

TEST_F(VerbsWrapTest, ProbesCapabilitiesAsOpenDoes) {
  FakeVerbsOps::DeviceSpec spec = FakeVerbsOps::OdpCapable("mlx5_0");
  spec.dmabuf_probe_errno = EBADF;  // dma-buf MRs implemented
  ibv_pd* pd = AppAllocPd(spec);
  {
    auto d = VerbsDomain::Wrap(pd, {.ops = ops_});
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ((*d)->name(), "mlx5_0");
    EXPECT_TRUE((*d)->capabilities().dmabuf_import);
    EXPECT_TRUE((*d)->capabilities().on_demand_paging);
    EXPECT_EQ((*d)->capabilities().max_mappings, 524287u);
    EXPECT_EQ(ops_->live_mrs(), 0);  // the probe keeps nothing
  }
  AppFree(pd);
}

TEST_F(VerbsWrapTest, AFailedProbeLeavesThePdToTheApplication) {
  ibv_pd* pd = AppAllocPd();
  ops_->FailNext(Call::kQueryDeviceEx, EIO);
  auto d = VerbsDomain::Wrap(pd, {.ops = ops_});
  EXPECT_THAT(d.status().message(), AllOf(HasSubstr("ibv_query_device_ex"), HasSubstr("rxe0")));
  EXPECT_EQ(ops_->calls(Call::kDeallocPd), 0);
  AppFree(pd);
}

TEST_F(VerbsWrapTest, ACacheOverTheWrappedPdDeregistersEveryMrBeforeItGoes) {
  ibv_pd* pd = AppAllocPd();
  {
    auto d = VerbsDomain::Wrap(pd, {.ops = ops_});
    ASSERT_TRUE(d.ok()) << d.status();
    auto cache = RegistrationCache::Create(*d, {.monitoring = Monitoring::kExplicitOnly});
    ASSERT_TRUE(cache.ok()) << cache.status();
    auto a = (*cache)->Acquire(buf(), kLen / 2, Access::kRemoteWrite);
    ASSERT_TRUE(a.ok()) << a.status();
    auto b = (*cache)->Acquire(buf() + kLen / 2, kLen / 2, Access::kRemoteRead);
    ASSERT_TRUE(b.ok()) << b.status();
    // The keys are the MRs' on the application's PD.
    EXPECT_NE(a->lkey(), b->lkey());
    EXPECT_EQ(a->rkey(), 0x8000'0000u | a->lkey());
    EXPECT_EQ(a->IovaFor(buf() + 8), reinterpret_cast<uintptr_t>(buf() + 8));
    EXPECT_EQ(ops_->live_mrs(), 2);
    // Handles still held, then the cache, then the domain go.
  }
  EXPECT_EQ(ops_->live_mrs(), 0);
  EXPECT_EQ(ops_->mrs_created(), 2);
  EXPECT_EQ(ops_->mrs_destroyed(), 2);
  AppFree(pd);  // succeeds: no MR is left on the PD
}

TEST_F(VerbsWrapTest, MrsRegisteredDirectlyAndLeftAreDeregisteredByTheDestructor) {
  ibv_pd* pd = AppAllocPd();
  {
    auto d = VerbsDomain::Wrap(pd, {.ops = ops_});
    ASSERT_TRUE(d.ok()) << d.status();
    auto kept = (*d)->RegisterHost(HostMemory{buf(), kLen}, Access::kLocalWrite);
    ASSERT_TRUE(kept.ok()) << kept.status();
    auto done = (*d)->RegisterHost(HostMemory{buf(), 4096}, Access::kLocalWrite);
    ASSERT_TRUE(done.ok()) << done.status();
    ASSERT_TRUE((*d)->Deregister(*done).ok());
    // A second deregistration is refused before libibverbs sees a freed MR.
    absl::Status again = (*d)->Deregister(*done);
    EXPECT_EQ(again.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(again.message(), HasSubstr("not an MR registered through this domain"));
    EXPECT_EQ(ops_->calls(Call::kDeregMr), 1);
    EXPECT_EQ((*d)->live_mrs(), 1);
    EXPECT_EQ(ops_->live_mrs(), 1);
  }
  EXPECT_EQ(ops_->live_mrs(), 0);
  AppFree(pd);
}

TEST_F(VerbsWrapTest, AFailedDeregistrationKeepsTheMrForTheDestructor) {
  ibv_pd* pd = AppAllocPd();
  {
    auto d = VerbsDomain::Wrap(pd, {.ops = ops_});
    ASSERT_TRUE(d.ok()) << d.status();
    auto m = (*d)->RegisterHost(HostMemory{buf(), kLen}, Access::kLocalWrite);
    ASSERT_TRUE(m.ok()) << m.status();
    ops_->FailNext(Call::kDeregMr, EBUSY);
    EXPECT_THAT((*d)->Deregister(*m).message(), HasSubstr("ibv_dereg_mr on rxe0"));
    EXPECT_EQ(ops_->live_mrs(), 1);
  }
  EXPECT_EQ(ops_->live_mrs(), 0);
  AppFree(pd);
}

TEST_F(VerbsWrapTest, AnOpenedDomainStillOwnsItsPd) {
  ops_->AddDevice("rxe0");
  {
    auto d = VerbsDomain::Open("rxe0", {.ops = ops_});
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_TRUE((*d)->owns_pd());
    ASSERT_TRUE((*d)->RegisterHost(HostMemory{buf(), kLen}, Access::kLocalWrite).ok());
  }
  // The MR left went first, then the PD and the context.
  EXPECT_EQ(ops_->live_mrs(), 0);
  EXPECT_EQ(ops_->live_pds(), 0);
  EXPECT_EQ(ops_->live_contexts(), 0);
}

}  // namespace
}  // namespace dmareg
