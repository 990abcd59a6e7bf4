// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The verbs backends of the on-demand IOVA cache over a fake VerbsOps, under
// an OdpRegion: one on-demand MR per window (or the implicit one for local
// windows) with prefetching links; a pinned MR registered again at the same
// IOVA after each invalidation.

#include <infiniband/verbs.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "common/test_memory.h"
#include "dmareg/odp/odp_region.h"
#include "dmareg/odp/verbs_backend.h"
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

constexpr size_t kPage = 4096;
constexpr size_t kLen = 16 * kPage;

class OdpVerbsTest : public ::testing::Test {
 protected:
  void TearDown() override {
    domain_.reset();
    EXPECT_EQ(rxe_.CheckReleased(), absl::OkStatus());
  }
  void Open(FakeVerbsOps::DeviceSpec spec) {
    auto domain = rxe_.Open(std::move(spec));
    ASSERT_TRUE(domain.ok()) << domain.status();
    domain_ = *domain;
  }
  std::unique_ptr<OdpRegion> Region(std::shared_ptr<OdpBackend> backend, AccessFlags access) {
    auto r = OdpRegion::Create(std::move(backend), mem_.data(), kLen, access, {.read_pfns = false});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *std::move(r) : nullptr;
  }
  static FakeVerbsOps::DeviceSpec Odp(uint64_t extra_general = 0, int advise = EOPNOTSUPP) {
    FakeVerbsOps::DeviceSpec spec = FakeVerbsOps::OdpCapable("rxe0");
    spec.attr.odp_caps.general_caps |= extra_general;
    spec.advise_errno = advise;
    return spec;
  }
  uintptr_t va() { return reinterpret_cast<uintptr_t>(mem_.data()); }

  test::Mapping mem_{kLen};
  testing::FakeRxe rxe_;
  std::shared_ptr<FakeVerbsOps> ops_ = rxe_.ops();
  std::shared_ptr<VerbsDomain> domain_;
};

TEST_F(OdpVerbsTest, CreateNeedsADomainAndOdp) {
  EXPECT_EQ(OdpVerbsBackend::Create(nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OdpVerbsPinnedBackend::Create(nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  Open(FakeVerbsOps::RxeLike("rxe0"));
  auto b = OdpVerbsBackend::Create(domain_);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(b.status().message(),
              AllOf(HasSubstr("rxe0"), HasSubstr("no ODP for RC"), HasSubstr("Pinned")));
  EXPECT_TRUE(OdpVerbsPinnedBackend::Create(domain_).ok());
}

TEST_F(OdpVerbsTest, OneOnDemandMrPerWindowPrefetchedByTheCpuWhereAdviseIsRefused) {
  Open(Odp());
  auto backend = OdpVerbsBackend::Create(domain_).value();
  EXPECT_TRUE(backend->device_faults());
  EXPECT_FALSE(backend->implicit());
  test::FillPattern(mem_.data(), kLen, 7);
  {
    auto region = Region(backend, Access::kRemoteWrite);
    ASSERT_NE(region, nullptr);
    EXPECT_EQ(ops_->on_demand_mrs_created(), 1);
    EXPECT_EQ(ops_->last_reg().iova, va());
    EXPECT_EQ(ops_->last_reg().length, kLen);
    EXPECT_EQ(region->iova(), va());
    EXPECT_NE(region->rkey(), 0u);
    const uint32_t rkey = region->rkey();
    ASSERT_TRUE(region->Fault(mem_.data() + kPage, kPage, /*write=*/true).ok());
    EXPECT_EQ(backend->prefetch(), OdpVerbsBackend::Prefetch::kCpuTouch);
    EXPECT_EQ(ops_->calls(Call::kAdviseMr), 1);  // asked once, then never again
    EXPECT_EQ(region->stats().link_calls, 1u);   // one chunk: the window
    EXPECT_EQ(region->page_entry(0) & (kOdpValid | kOdpWrite), kOdpValid | kOdpWrite);
    EXPECT_EQ(test::FindMismatch(mem_.data(), kLen, 7), -1) << "the pre-touch changed bytes";
    // Invalidation: nothing for the NIC to do; the MR, IOVA and keys stay.
    ASSERT_TRUE(region->Invalidate(mem_.data(), kLen).ok());
    EXPECT_EQ(region->page_entry(0), 0u);
    EXPECT_EQ(ops_->live_mrs(), 1);
    ASSERT_TRUE(region->Fault(mem_.data(), kLen, /*write=*/false).ok());
    EXPECT_EQ(region->rkey(), rkey);
    EXPECT_EQ(region->IovaFor(mem_.data() + 5), va() + 5);
    EXPECT_EQ(ops_->calls(Call::kAdviseMr), 1);
    EXPECT_EQ(backend->window_mrs(), 1);
  }
  EXPECT_EQ(backend->window_mrs(), 0);
  EXPECT_EQ(ops_->live_mrs(), 0);
}

TEST_F(OdpVerbsTest, AdviseMrPrefetchesWhereItWorks) {
  Open(Odp(0, /*advise=*/0));
  auto backend = OdpVerbsBackend::Create(domain_).value();
  auto region = Region(backend, Access::kLocalWrite);
  ASSERT_NE(region, nullptr);
  ASSERT_TRUE(region->Fault(mem_.data() + 2 * kPage, kPage, /*write=*/true).ok());
  EXPECT_EQ(backend->prefetch(), OdpVerbsBackend::Prefetch::kAdviseMr);
  const FakeVerbsOps::LastAdvice a = ops_->last_advice();
  EXPECT_EQ(a.advice, IBV_ADVISE_MR_ADVICE_PREFETCH_WRITE);
  EXPECT_EQ(a.flags, static_cast<uint32_t>(IBV_ADVISE_MR_FLAG_FLUSH));
  EXPECT_EQ(a.addr, va());  // the whole window is one chunk
  EXPECT_EQ(a.length, kLen);
  EXPECT_EQ(a.lkey, region->lkey());
  ASSERT_TRUE(region->Invalidate(mem_.data(), kLen).ok());
  ASSERT_TRUE(region->Fault(mem_.data(), kPage, /*write=*/false).ok());
  EXPECT_EQ(ops_->last_advice().advice, IBV_ADVISE_MR_ADVICE_PREFETCH);
  // Any other failure of advise_mr is the link's error.
  ASSERT_TRUE(region->Invalidate(mem_.data(), kLen).ok());
  ops_->FailNext(Call::kAdviseMr, EFAULT);
  absl::Status s = region->Fault(mem_.data(), kPage, /*write=*/false);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("ibv_advise_mr on rxe0"), HasSubstr("EFAULT")));
  EXPECT_NE(region->page_entry(0) & kOdpError, 0u);
  EXPECT_EQ(backend->prefetch(), OdpVerbsBackend::Prefetch::kAdviseMr);
}

TEST_F(OdpVerbsTest, ImplicitOdpServesLocalWindowsOnly) {
  Open(Odp(IBV_ODP_SUPPORT_IMPLICIT));
  auto backend = OdpVerbsBackend::Create(domain_).value();
  ASSERT_TRUE(backend->implicit());
  EXPECT_EQ(ops_->live_implicit_mrs(), 1);
  test::Mapping other(kLen);
  ASSERT_TRUE(other.ok());
  {
    auto local = Region(backend, Access::kLocalWrite);
    ASSERT_NE(local, nullptr);
    EXPECT_EQ(backend->window_mrs(), 0);  // the implicit MR's lkey
    EXPECT_EQ(local->rkey(), 0u);
    EXPECT_NE(local->lkey(), 0u);
    auto remote =
        OdpRegion::Create(backend, other.data(), kLen, Access::kRemoteRead, {.read_pfns = false});
    ASSERT_TRUE(remote.ok()) << remote.status();
    EXPECT_EQ(backend->window_mrs(), 1);  // its rkey covers its window only
    EXPECT_NE((*remote)->rkey(), 0u);
    EXPECT_NE((*remote)->lkey(), local->lkey());
    ASSERT_TRUE(local->Fault(mem_.data(), kLen, true).ok());
  }
  EXPECT_EQ(ops_->live_mrs(), 1);  // the implicit MR, until the backend goes
  backend.reset();
  EXPECT_EQ(ops_->live_implicit_mrs(), 0);
}

TEST_F(OdpVerbsTest, ImplicitRefusedLeavesPerWindowMrs) {
  Open(Odp(IBV_ODP_SUPPORT_IMPLICIT));
  ops_->FailNext(Call::kRegMr, EOPNOTSUPP);  // rxe on 7.3.4 answers so
  auto backend = OdpVerbsBackend::Create(domain_).value();
  EXPECT_FALSE(backend->implicit());
  auto region = Region(backend, Access::kLocalWrite);
  ASSERT_NE(region, nullptr);
  EXPECT_EQ(backend->window_mrs(), 1);
}

TEST_F(OdpVerbsTest, PreTouchOfUnmappedMemoryIsAnError) {
  Open(Odp());
  auto backend = OdpVerbsBackend::Create(domain_).value();
  auto region = Region(backend, Access::kLocalWrite);
  ASSERT_NE(region, nullptr);
  ASSERT_EQ(munmap(mem_.data(), kLen), 0);
  absl::Status s = region->Fault(mem_.data(), kPage, /*write=*/true);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), AllOf(HasSubstr("MADV_POPULATE_WRITE"), HasSubstr("rxe0")));
  EXPECT_NE(region->page_entry(0) & kOdpError, 0u);
  // Read-only regions refuse write faults before the backend.
  auto ro = OdpVerbsBackend::Create(domain_).value();
  test::Mapping again(kLen);
  auto r = OdpRegion::Create(ro, again.data(), kLen, Access::kRemoteRead, {.read_pfns = false});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->Fault(again.data(), kPage, true).code(), absl::StatusCode::kInvalidArgument);
  OdpWindow bad;
  EXPECT_EQ(ro->ReserveWindow(va() + 1, kLen, Access::kLocalWrite).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ro->ReserveWindow(va(), 0, Access::kLocalWrite).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ro->Link(bad, 0, kPage, false).code(), absl::StatusCode::kNotFound);
}

TEST_F(OdpVerbsTest, PinnedRegistersAgainAtTheSameIovaWithNewKeys) {
  Open(FakeVerbsOps::RxeLike("rxe0"));
  auto backend = OdpVerbsPinnedBackend::Create(domain_).value();
  EXPECT_FALSE(backend->device_faults());
  {
    auto region = Region(backend, Access::kRemoteWrite | Access::kRemoteRead);
    ASSERT_NE(region, nullptr);
    EXPECT_EQ(ops_->mrs_created(), 0);  // nothing until the first access
    EXPECT_EQ(region->iova(), va());
    EXPECT_EQ(region->rkey(), 0u);
    ASSERT_TRUE(region->Fault(mem_.data() + kPage, 10, /*write=*/false).ok());
    EXPECT_EQ(ops_->last_reg().iova, va());
    EXPECT_EQ(ops_->last_reg().addr, mem_.data());
    EXPECT_EQ(ops_->last_reg().length, kLen);
    EXPECT_EQ(ops_->last_reg().access & IBV_ACCESS_ON_DEMAND, 0u);
    EXPECT_NE(ops_->last_reg().access & IBV_ACCESS_REMOTE_WRITE, 0u);
    const uint32_t rkey = region->rkey();
    EXPECT_NE(rkey, 0u);
    // A write upgrade costs nothing: the MR has the window's maximum access.
    ASSERT_TRUE(region->Fault(mem_.data(), kLen, /*write=*/true).ok());
    EXPECT_EQ(backend->registrations(), 1);
    ASSERT_TRUE(region->Invalidate(mem_.data() + 3 * kPage, kPage).ok());
    EXPECT_EQ(ops_->live_mrs(), 0);
    EXPECT_EQ(region->rkey(), 0u);
    ASSERT_TRUE(region->Fault(mem_.data(), kPage, /*write=*/true).ok());
    EXPECT_EQ(ops_->last_reg().iova, va());  // the SAME IOVA
    EXPECT_NE(region->rkey(), rkey);         // new keys
    EXPECT_EQ(region->iova(), va());
    EXPECT_EQ(backend->registrations(), 2);
    EXPECT_EQ(backend->live_mrs(), 1);
  }
  EXPECT_EQ(backend->live_mrs(), 0);
  EXPECT_EQ(ops_->live_mrs(), 0);
}

TEST_F(OdpVerbsTest, PinnedFailuresLeaveAConsistentWindow) {
  Open(FakeVerbsOps::RxeLike("rxe0"));
  auto backend = OdpVerbsPinnedBackend::Create(domain_).value();
  auto region = Region(backend, Access::kLocalWrite);
  ASSERT_NE(region, nullptr);
  ops_->FailNext(Call::kRegMr, ENOMEM);
  absl::Status s = region->Fault(mem_.data(), kPage, true);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("ibv_reg_mr_iova2 on rxe0"), HasSubstr("ENOMEM")));
  EXPECT_NE(region->page_entry(0) & kOdpError, 0u);
  EXPECT_EQ(ops_->live_mrs(), 0);
  ASSERT_TRUE(region->Fault(mem_.data(), kPage, true).ok());
  const uint32_t lkey = region->lkey();
  // A deregistration the kernel refuses keeps the MR (and its keys) linked.
  ops_->FailNext(Call::kDeregMr, EBUSY);
  EXPECT_FALSE(region->Invalidate(mem_.data(), kLen).ok());
  EXPECT_EQ(region->lkey(), lkey);
  EXPECT_EQ(ops_->live_mrs(), 1);
  ASSERT_TRUE(region->Invalidate(mem_.data(), kLen).ok());
  EXPECT_EQ(ops_->live_mrs(), 0);
  // Windows are whole pages.
  EXPECT_EQ(backend->ReserveWindow(va() + 1, kPage, Access::kLocalWrite).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend->ReserveWindow(UINTPTR_MAX - kPage + 1, 2 * kPage, Access::kLocalWrite)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

// A read-only window is populated for write before it is pinned, so the
// MR does not hold the shared zero page the program's first write leaves.
TEST_F(OdpVerbsTest, PinnedReadOnlyWindowIsPopulatedFirst) {
  Open(FakeVerbsOps::RxeLike("rxe0"));
  auto backend = OdpVerbsPinnedBackend::Create(domain_).value();
  auto region = Region(backend, Access::kRemoteRead);
  ASSERT_NE(region, nullptr);
  unsigned char vec[kLen / kPage] = {};
  ASSERT_EQ(mincore(mem_.data(), kLen, vec), 0);
  EXPECT_EQ(vec[0] & 1, 0) << "fresh memory should not be resident yet";
  ASSERT_TRUE(region->Fault(mem_.data(), kPage, false).ok());
  ASSERT_EQ(mincore(mem_.data(), kLen, vec), 0);
  for (size_t i = 0; i < kLen / kPage; ++i) EXPECT_EQ(vec[i] & 1, 1) << "page " << i;
  EXPECT_EQ(ops_->last_reg().access & IBV_ACCESS_LOCAL_WRITE, 0u);
}

}  // namespace
}  // namespace dmareg
