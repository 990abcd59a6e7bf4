// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// RegistrationCache over a VerbsDomain over a fake VerbsOps: what a failing
// ibv_reg_mr_iova2 looks like to a cache user, and that every MR the cache
// made is deregistered exactly once.

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <memory>
#include <thread>

#include "absl/status/status.h"
#include "common/errno_cases.h"
#include "common/sanitizers.h"
#include "common/test_memory.h"
#include "dmareg/cache.h"
#include "dmareg/testing/fake_dmabuf.h"
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

class VerbsCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(buf_.ok());
    auto domain = rxe_.Open();
    ASSERT_TRUE(domain.ok()) << domain.status();
    domain_ = *domain;
    auto cache = RegistrationCache::Create(
        domain_, {.monitoring = Monitoring::kExplicitOnly, .inspect_dmabuf = bufs_.Inspector()});
    ASSERT_TRUE(cache.ok()) << cache.status();
    cache_ = std::move(*cache);
  }
  void TearDown() override {
    cache_.reset();
    domain_.reset();
    EXPECT_EQ(rxe_.CheckReleased(), absl::OkStatus());
  }
  char* buf() { return buf_.data(); }

  test::Mapping buf_{kLen};
  testing::FakeDmaBufs bufs_;
  testing::FakeRxe rxe_;
  std::shared_ptr<FakeVerbsOps> ops_ = rxe_.ops();
  std::shared_ptr<VerbsDomain> domain_;
  std::unique_ptr<RegistrationCache> cache_;
};

TEST_F(VerbsCacheTest, SubRangeRequestsReuseTheMr) {
  auto whole = cache_->Acquire(buf(), kLen, Access::kRemoteWrite);
  ASSERT_TRUE(whole.ok()) << whole.status();
  auto part = cache_->Acquire(buf() + 4096, 8192, Access::kLocalWrite);
  ASSERT_TRUE(part.ok()) << part.status();
  EXPECT_EQ(part->rkey(), whole->rkey());
  EXPECT_EQ(part->IovaFor(buf() + 4096), reinterpret_cast<uintptr_t>(buf() + 4096));
  EXPECT_EQ(ops_->mrs_created(), 1);
  EXPECT_EQ(cache_->stats().hits, 1u);
  EXPECT_EQ(cache_->stats().misses, 1u);
}

TEST_F(VerbsCacheTest, FailedRegistrationsSurfaceThroughAcquire) {
  for (const test::ErrnoCase& c : test::kRegistrationErrnos) {
    SCOPED_TRACE(c.name);
    ops_->FailNext(Call::kRegMr, c.err);
    auto reg = cache_->Acquire(buf(), kLen, Access::kRemoteRead);
    ASSERT_FALSE(reg.ok());
    EXPECT_EQ(reg.status().code(), c.code);
    EXPECT_THAT(reg.status().message(),
                AllOf(HasSubstr("ibv_reg_mr_iova2"), HasSubstr("rxe0"), HasSubstr(c.name)));
    EXPECT_EQ(domain_->live_mrs(), 0);
    EXPECT_EQ(cache_->stats().live_regions, 0u);
  }
  EXPECT_EQ(cache_->stats().registration_failures, 4u);
  // The cache still works after the failures.
  auto reg = cache_->Acquire(buf(), kLen, Access::kRemoteRead);
  ASSERT_TRUE(reg.ok()) << reg.status();
  EXPECT_EQ(domain_->live_mrs(), 1);
}

TEST_F(VerbsCacheTest, InvalidateRetiresTheMrOnceUnreferenced) {
  auto reg = cache_->Acquire(buf(), kLen, Access::kRemoteRead);
  ASSERT_TRUE(reg.ok()) << reg.status();
  const uint32_t old_rkey = reg->rkey();
  ASSERT_TRUE(cache_->Invalidate(buf(), kLen).ok());
  EXPECT_EQ(domain_->live_mrs(), 1);  // still held
  auto again = cache_->Acquire(buf(), kLen, Access::kRemoteRead);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_NE(again->rkey(), old_rkey);
  reg->Reset();
  EXPECT_EQ(domain_->live_mrs(), 1);
  EXPECT_EQ(ops_->mrs_destroyed(), 1);
}

TEST_F(VerbsCacheTest, DmaBufOnRxeIsUnimplementedAndLeavesNothing) {
  testing::FakeDmaBufs::Buffer b = bufs_.Create(kLen).value();
  auto reg =
      cache_->Acquire(DmaBufMemory{.fd = b.fd, .offset = 0, .length = 4096}, Access::kLocalWrite);
  ASSERT_FALSE(reg.ok());
  EXPECT_EQ(reg.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(reg.status().message(), AllOf(HasSubstr("rxe0"), HasSubstr("ibv_reg_dmabuf_mr"),
                                            HasSubstr("EOPNOTSUPP"), HasSubstr("no CPU alias")));
  EXPECT_EQ(domain_->live_mrs(), 0);
  close(b.fd);
}

TEST_F(VerbsCacheTest, DmaBufFallsBackToTheAliasAtTheSameIova) {
  testing::FakeDmaBufs::Buffer b = bufs_.Create(kLen).value();
  auto reg = cache_->Acquire(
      DmaBufMemory{.fd = b.fd, .offset = 8192 + 16, .length = 100, .alias = b.alias},
      Access::kRemoteWrite);
  ASSERT_TRUE(reg.ok()) << reg.status();
  EXPECT_TRUE(reg->via_alias());
  const FakeVerbsOps::LastReg last = ops_->last_reg();
  EXPECT_EQ(last.addr, static_cast<char*>(b.alias) + 8192);
  EXPECT_EQ(last.length, 4096u);
  EXPECT_EQ(last.iova, 8192u);
  EXPECT_EQ(reg->IovaForOffset(8192 + 16), 8192u + 16);
  close(b.fd);
}

// A NIC whose driver imports dma-bufs (mlx5, efa, ...): the probe answered
// EBADF for fd -1.
TEST(VerbsDmaBufImportTest, RegistersTheSliceWithItsFdOffsetIovaAndAccess) {
  auto ops = std::make_shared<FakeVerbsOps>();
  FakeVerbsOps::DeviceSpec spec = FakeVerbsOps::RxeLike("mlx5_0");
  spec.dmabuf_probe_errno = EBADF;
  ops->AddDevice(spec);
  std::shared_ptr<VerbsDomain> domain = VerbsDomain::Open("mlx5_0", {.ops = ops}).value();
  ASSERT_TRUE(domain->capabilities().dmabuf_import);
  testing::FakeDmaBufs bufs;
  {
    auto cache = RegistrationCache::Create(domain, {.monitoring = Monitoring::kExplicitOnly,
                                                    .inspect_dmabuf = bufs.Inspector()})
                     .value();
    testing::FakeDmaBufs::Buffer b = bufs.Create(16 * 4096).value();
    auto reg = cache->Acquire(
        DmaBufMemory{.fd = b.fd, .offset = 3 * 4096 + 7, .length = 4096, .alias = b.alias},
        Access::kLocalWrite | Access::kRemoteRead);
    ASSERT_TRUE(reg.ok()) << reg.status();
    EXPECT_FALSE(reg->via_alias());
    const FakeVerbsOps::LastReg last = ops->last_reg();
    EXPECT_EQ(last.fd, b.fd);
    EXPECT_EQ(last.offset, 3u * 4096);
    EXPECT_EQ(last.length, 2u * 4096);
    EXPECT_EQ(last.iova, 3u * 4096);
    EXPECT_EQ(last.access, static_cast<unsigned>(IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ));
    EXPECT_EQ(ops->mrs_created(), 1);
    // The driver's refusal of one buffer is named with its errno.
    ops->FailNext(Call::kRegDmaBufMr, EINVAL);
    testing::FakeDmaBufs::Buffer other = bufs.Create(4096).value();
    auto refused = cache->Acquire(DmaBufMemory{.fd = other.fd, .length = 4096}, {});
    EXPECT_THAT(refused.status().message(),
                AllOf(HasSubstr("ibv_reg_dmabuf_mr"), HasSubstr("EINVAL"), HasSubstr("mlx5_0")));
    EXPECT_EQ(ops->live_mrs(), 1);
    close(b.fd);
    close(other.fd);
  }
  EXPECT_EQ(ops->live_mrs(), 0);
}

}  // namespace
}  // namespace dmareg

namespace dmareg {
namespace {

// Waits for the domain's watcher thread to see the removal: the flag is
// the event itself, not a guess at how long it takes.
bool WaitLost(const VerbsDomain& domain) {
  const std::atomic<bool>* lost = domain.lost_flag();
  if (lost == nullptr) return false;
  for (int i = 0; i < 10'000'000 && !lost->load(std::memory_order_acquire); ++i) {
    std::this_thread::yield();
  }
  return lost->load(std::memory_order_acquire);
}

// The device removed under a cache holding mappings and with a handle out
// (rdma link delete of rxe): every request is refused naming the device,
// a hit included; nothing reaches the kernel; the idle mapping goes at once,
// the held one with its handle; and the domain's own calls refuse too.
TEST_F(VerbsCacheTest, ARemovedDeviceRefusesEveryRequestAndLosesNothing) {
  test::Mapping other(kLen);
  ASSERT_TRUE(other.ok());
  auto held = cache_->Acquire(buf(), kLen, Access::kLocalWrite);
  ASSERT_TRUE(held.ok()) << held.status();
  ASSERT_TRUE(cache_->Acquire(other.data(), kLen, Access::kLocalWrite).ok());  // idle now
  EXPECT_EQ(ops_->live_mrs(), 2);
  ASSERT_NE(domain_->lost_flag(), nullptr);
  EXPECT_FALSE(domain_->lost_flag()->load());

  ASSERT_TRUE(ops_->RemoveDevice(rxe_.name()));
  ASSERT_TRUE(WaitLost(*domain_));
  const int reg_calls = ops_->calls(Call::kRegMr);
  for (char* p : {buf(), other.data(), buf() + 4096}) {
    auto r = cache_->Acquire(p, 4096, Access::kLocalWrite);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_THAT(r.status().message(), AllOf(HasSubstr(rxe_.name()), HasSubstr("removed")));
  }
  auto direct = domain_->RegisterHost({other.data(), kLen}, Access::kLocalWrite);
  EXPECT_EQ(direct.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ops_->calls(Call::kRegMr), reg_calls) << "a removed device was asked";
  EXPECT_EQ(ops_->live_mrs(), 1) << "the idle mapping stays registered";
  held->Reset();
  cache_->Flush();
  EXPECT_EQ(ops_->live_mrs(), 0);
}

// The watch's thread stays in the parent: a forked child that lets go of
// its copy of the domain does not wait for a thread it does not have.
TEST_F(VerbsCacheTest, AForkedChildDropsTheDomainWithoutWaitingForTheWatch) {
  if (testing::kThreadSanitizer) GTEST_SKIP() << "TSan cannot run a threaded fork's child";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    cache_.reset();
    domain_.reset();
    _exit(0);
  }
  EXPECT_EQ(test::ChildExitCode(pid), 0);
}

// A wrapped context's events are the application's: no watch, no flag.
TEST(VerbsDomainLossTest, AWrappedDomainDoesNotReadTheApplicationsEvents) {
  testing::FakeRxe rxe;
  absl::StatusOr<ibv_pd*> pd = rxe.AppAllocPd();
  ASSERT_TRUE(pd.ok()) << pd.status();
  auto domain = VerbsDomain::Wrap(*pd, {.ops = rxe.ops()});
  ASSERT_TRUE(domain.ok()) << domain.status();
  EXPECT_EQ((*domain)->lost_flag(), nullptr);
  domain->reset();
  EXPECT_EQ(rxe.AppFree(*pd), absl::OkStatus());
  EXPECT_EQ(rxe.CheckReleased(), absl::OkStatus());
}

}  // namespace
}  // namespace dmareg
