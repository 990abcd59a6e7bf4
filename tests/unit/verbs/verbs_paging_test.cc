// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// On-demand paging over a fake VerbsOps: VerbsDomain::RegisterHost with Paging::kOnDemand
// and the cache's paging modes on an ODP-capable device (rxe on 7.x) and an
// rxe-like one without ODP, which refuses IBV_ACCESS_ON_DEMAND with EINVAL
// (6.1) or EOPNOTSUPP (newer kernels that refuse it).

#include <infiniband/verbs.h>

#include <cerrno>
#include <cstddef>
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

class VerbsPagingTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(buf_.ok()); }
  void TearDown() override {
    domain_.reset();
    EXPECT_EQ(rxe_.CheckReleased(), absl::OkStatus());
  }
  // A fresh fake device in place of the last one (which is not checked).
  void NewDevice() {
    rxe_ = testing::FakeRxe();
    ops_ = rxe_.ops();
  }
  void Open(FakeVerbsOps::DeviceSpec spec) {
    auto domain = rxe_.Open(std::move(spec));
    ASSERT_TRUE(domain.ok()) << domain.status();
    domain_ = *domain;
  }
  absl::StatusOr<std::unique_ptr<RegistrationCache>> MakeCache(Paging paging) {
    return RegistrationCache::Create(domain_,
                                     {.monitoring = Monitoring::kExplicitOnly, .paging = paging});
  }
  char* buf() { return buf_.data(); }
  static FakeVerbsOps::DeviceSpec Refusing(int err) {
    FakeVerbsOps::DeviceSpec spec = FakeVerbsOps::RxeLike("rxe0");
    spec.on_demand_errno = err;
    return spec;
  }

  test::Mapping buf_{kLen};
  testing::FakeRxe rxe_;
  std::shared_ptr<FakeVerbsOps> ops_ = rxe_.ops();
  std::shared_ptr<VerbsDomain> domain_;
};

TEST_F(VerbsPagingTest, OnDemandPagingSetsTheFlag) {
  Open(FakeVerbsOps::OdpCapable("rxe0"));
  EXPECT_TRUE(domain_->capabilities().on_demand_paging);
  auto m = domain_->RegisterHost(HostMemory{buf(), kLen}, Access::kRemoteWrite, Paging::kOnDemand);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->iova, reinterpret_cast<uintptr_t>(buf()));
  EXPECT_NE(ops_->last_reg().access & IBV_ACCESS_ON_DEMAND, 0u);
  EXPECT_NE(ops_->last_reg().access & IBV_ACCESS_REMOTE_WRITE, 0u);
  EXPECT_EQ(domain_->live_mrs(), 1);
  // A chosen IOVA is honoured, as for pinned MRs.
  auto at = domain_->RegisterHost(HostMemory{buf(), 4096, 0x5a5a00000000}, Access::kLocalWrite,
                                  Paging::kOnDemand);
  ASSERT_TRUE(at.ok()) << at.status();
  EXPECT_EQ(at->iova, 0x5a5a00000000u);
  EXPECT_EQ(ops_->last_reg().iova, 0x5a5a00000000u);
  // The two-argument RegisterHost is pinned.
  auto pinned = domain_->RegisterHost(HostMemory{buf(), 4096}, Access::kLocalWrite);
  ASSERT_TRUE(pinned.ok()) << pinned.status();
  EXPECT_EQ(ops_->last_reg().access & IBV_ACCESS_ON_DEMAND, 0u);
  EXPECT_EQ(ops_->on_demand_mrs_created(), 2);
  for (const DeviceMapping& x : {*m, *at, *pinned}) EXPECT_TRUE(domain_->Deregister(x).ok());
}

TEST_F(VerbsPagingTest, RefusalsNameTheCallAndTheProbe) {
  struct Case {
    int err;
    absl::StatusCode code;
    const char* name;
  };
  for (const Case c : {Case{EINVAL, absl::StatusCode::kInvalidArgument, "EINVAL"},
                       Case{EOPNOTSUPP, absl::StatusCode::kUnimplemented, "EOPNOTSUPP"}}) {
    SCOPED_TRACE(c.name);
    NewDevice();
    Open(Refusing(c.err));
    EXPECT_FALSE(domain_->capabilities().on_demand_paging);
    auto m = domain_->RegisterHost(HostMemory{buf(), kLen}, Access::kLocalWrite, Paging::kOnDemand);
    ASSERT_FALSE(m.ok());
    EXPECT_EQ(m.status().code(), c.code);
    EXPECT_THAT(m.status().message(),
                AllOf(HasSubstr("ibv_reg_mr_iova2 on rxe0"), HasSubstr(c.name),
                      HasSubstr("IBV_ACCESS_ON_DEMAND"), HasSubstr("no ODP support for RC")));
    EXPECT_EQ(domain_->live_mrs(), 0);
    domain_.reset();
  }
  // Where the probe found ODP, a failure says so.
  NewDevice();
  Open(FakeVerbsOps::OdpCapable("rxe0"));
  ops_->FailNext(Call::kRegMr, ENOMEM);
  auto m = domain_->RegisterHost(HostMemory{buf(), kLen}, Access::kLocalWrite, Paging::kOnDemand);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(m.status().message(),
              AllOf(HasSubstr("ENOMEM"), HasSubstr("probe found ODP support for RC")));
}

// The implicit ODP MR is an on-demand registration of the whole address
// space; nothing else may name a null address.
TEST_F(VerbsPagingTest, OnDemandOverTheWholeAddressSpaceIsTheImplicitMr) {
  FakeVerbsOps::DeviceSpec spec = FakeVerbsOps::OdpCapable("rxe0");
  spec.attr.odp_caps.general_caps |= IBV_ODP_SUPPORT_IMPLICIT;
  Open(spec);
  auto m = domain_->RegisterHost(VerbsDomain::WholeAddressSpace(), Access::kLocalWrite,
                                 Paging::kOnDemand);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->iova, 0u);
  EXPECT_EQ(m->length, SIZE_MAX);
  EXPECT_EQ(ops_->live_implicit_mrs(), 1);
  EXPECT_EQ(ops_->last_reg().addr, nullptr);
  EXPECT_EQ(ops_->last_reg().length, SIZE_MAX);
  EXPECT_EQ(ops_->last_reg().access, unsigned{IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_ON_DEMAND});
  EXPECT_TRUE(domain_->Deregister(*m).ok());
  EXPECT_EQ(ops_->live_implicit_mrs(), 0);

  const int calls = ops_->calls(Call::kRegMr);
  struct Case {
    const char* what;
    HostMemory memory;
    Paging paging;
  };
  for (const Case& c : {
           Case{"pinned", VerbsDomain::WholeAddressSpace(), Paging::kPinned},
           Case{"not the whole space", HostMemory{nullptr, kLen}, Paging::kOnDemand},
           Case{"a caller's IOVA", HostMemory{nullptr, SIZE_MAX, 0}, Paging::kOnDemand},
       }) {
    SCOPED_TRACE(c.what);
    auto bad = domain_->RegisterHost(c.memory, Access::kLocalWrite, c.paging);
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(bad.status().message(),
                AllOf(HasSubstr("ibv_reg_mr_iova2 on rxe0"), HasSubstr("null address")));
  }
  EXPECT_EQ(ops_->calls(Call::kRegMr), calls);
}

TEST_F(VerbsPagingTest, ImplicitMrWithoutTheProbesSupportIsUnimplementedUnasked) {
  Open(FakeVerbsOps::OdpCapable("rxe0"));  // ODP for RC, no IBV_ODP_SUPPORT_IMPLICIT
  auto m = domain_->RegisterHost(VerbsDomain::WholeAddressSpace(), Access::kLocalWrite,
                                 Paging::kOnDemand);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(m.status().message(),
              AllOf(HasSubstr("rxe0"), HasSubstr("IBV_ODP_SUPPORT_IMPLICIT")));
  EXPECT_EQ(ops_->calls(Call::kRegMr), 0);
}

TEST_F(VerbsPagingTest, OnDemandCacheOnAnOdpDevice) {
  Open(FakeVerbsOps::OdpCapable("rxe0"));
  auto cache = MakeCache(Paging::kOnDemand);
  ASSERT_TRUE(cache.ok()) << cache.status();
  auto reg = (*cache)->Acquire(buf(), kLen, Access::kRemoteRead);
  ASSERT_TRUE(reg.ok()) << reg.status();
  EXPECT_NE(ops_->last_reg().access & IBV_ACCESS_ON_DEMAND, 0u);
  EXPECT_EQ(reg->IovaFor(buf() + 100), reinterpret_cast<uintptr_t>(buf() + 100));
  EXPECT_EQ((*cache)->stats().on_demand_registrations, 1u);
  EXPECT_EQ(ops_->on_demand_mrs_created(), 1);
  reg->Reset();
  cache->reset();
  EXPECT_EQ(domain_->live_mrs(), 0);
}

TEST_F(VerbsPagingTest, OnDemandCacheOnRxeWithoutOdpIsRefusedAtCreate) {
  Open(FakeVerbsOps::RxeLike("rxe0"));
  auto cache = MakeCache(Paging::kOnDemand);
  ASSERT_FALSE(cache.ok());
  EXPECT_EQ(cache.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(cache.status().message(), AllOf(HasSubstr("rxe0"), HasSubstr("on-demand")));
  EXPECT_EQ(ops_->calls(Call::kRegMr), 0);
}

TEST_F(VerbsPagingTest, AutomaticFallsBackToPinnedOnRxeWithoutOdp) {
  for (const int err : {EINVAL, EOPNOTSUPP}) {
    SCOPED_TRACE(err);
    NewDevice();
    Open(Refusing(err));
    {
      auto cache = MakeCache(Paging::kAutomatic);
      ASSERT_TRUE(cache.ok()) << cache.status();
      auto reg = (*cache)->Acquire(buf(), kLen, Access::kRemoteWrite);
      ASSERT_TRUE(reg.ok()) << reg.status();
      EXPECT_EQ(ops_->calls(Call::kRegMr), 2);  // refused, then pinned
      EXPECT_EQ(ops_->last_reg().access & IBV_ACCESS_ON_DEMAND, 0u);
      EXPECT_EQ((*cache)->paging(), Paging::kPinned);
      auto more = (*cache)->Acquire(buf() + kLen / 2, 4096, Access::kRemoteWrite);
      ASSERT_TRUE(more.ok()) << more.status();  // a hit
      ASSERT_TRUE((*cache)->Invalidate(buf(), kLen).ok());
      auto again = (*cache)->Acquire(buf(), 4096, Access::kLocalWrite);
      ASSERT_TRUE(again.ok()) << again.status();
      EXPECT_EQ(ops_->calls(Call::kRegMr), 3);  // pinned straight away
      const CacheStats s = (*cache)->stats();
      EXPECT_EQ(s.on_demand_fallbacks, 1u);
      EXPECT_EQ(s.on_demand_registrations, 0u);
      EXPECT_EQ(s.registration_failures, 0u);
      EXPECT_EQ(ops_->on_demand_mrs_created(), 0);
    }
    EXPECT_EQ(domain_->live_mrs(), 0);
    domain_.reset();
  }
}

TEST_F(VerbsPagingTest, AutomaticOnAnOdpDeviceStaysOnDemand) {
  Open(FakeVerbsOps::OdpCapable("rxe0"));
  auto cache = MakeCache(Paging::kAutomatic);
  ASSERT_TRUE(cache.ok()) << cache.status();
  auto reg = (*cache)->Acquire(buf(), kLen, Access::kLocalWrite);
  ASSERT_TRUE(reg.ok()) << reg.status();
  EXPECT_EQ((*cache)->paging(), Paging::kOnDemand);
  // An ordinary failure is returned, not a reason to pin (twice: the merged
  // span, then the request alone).
  ops_->FailNext(Call::kRegMr, ENOMEM, 2);
  auto other = (*cache)->Acquire(buf() + kLen - 4096, 4096, Access::kRemoteWrite);
  ASSERT_FALSE(other.ok());
  EXPECT_EQ((*cache)->paging(), Paging::kOnDemand);
  EXPECT_EQ((*cache)->stats().on_demand_fallbacks, 0u);
  reg->Reset();
  cache->reset();
  EXPECT_EQ(domain_->live_mrs(), 0);
}

}  // namespace
}  // namespace dmareg
