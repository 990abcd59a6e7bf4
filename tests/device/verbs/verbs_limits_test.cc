// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The memlock limit on a real device, as an unprivileged process meets it
// (CAP_IPC_LOCK dropped, a small RLIMIT_MEMLOCK; a container's 8 MiB at a
// test's scale): rxe pins an MR's pages against it (pinned_vm), so past it
// ibv_reg_mr fails with ENOMEM. The cache lets go of what is unreferenced
// and retries once; with everything referenced the refusal names the limit
// and what the cache holds, and loses nothing; once the limit allows, the
// same request registers, and RDMA WRITE moves every byte through it.

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "common/limited_memlock.h"
#include "device/verbs/device_env.h"
#include "dmareg/cache.h"
#include "dmareg/errno_status.h"
#include "dmareg/memlock.h"
#include "dmareg/verbs/verbs_domain.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "verbs/rc_qp.h"

namespace dmareg::device_test {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr uint64_t kBuf = 512 * 1024;
constexpr uint64_t kMiB = 1 << 20;

class VerbsLimitsTest : public RcLoopbackTest {};

TEST_F(VerbsLimitsTest, MemlockRefusalEvictsRetriesNamesTheLimitAndRecovers) {
  Mapping a(kBuf), b(kBuf), c(kBuf), d(kBuf);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok() && d.ok());
  FillPattern(a.data(), kBuf, 4);
  std::memset(d.data(), 0, kBuf);
  // Room for two buffers beyond what the process pins already (the QPs'
  // queues are the kernel's, not pinned user memory).
  const uint64_t baseline = ReadMemlockLimit().pinned.value_or(0);
  test::LimitedMemlock limit(baseline + 2 * kBuf + 64 * 1024);
  ASSERT_TRUE(limit.ok()) << limit.error();
  ASSERT_TRUE(ReadMemlockLimit().limited()) << MemlockNote();

  auto held = cache_->Acquire(a.data(), kBuf, Access::kRemoteRead);
  ASSERT_TRUE(held.ok()) << held.status();
  ASSERT_TRUE(cache_->Acquire(b.data(), kBuf, Access::kRemoteRead).ok());  // then idle
  ASSERT_EQ(domain_->live_mrs(), 2);

  // A third is past the limit: the idle one goes, and the retry fits.
  auto third = cache_->Acquire(c.data(), kBuf, Access::kRemoteRead);
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(cache_->stats().evictions, 1u);
  EXPECT_EQ(cache_->stats().registration_failures, 1u);
  EXPECT_EQ(domain_->live_mrs(), 2);

  // Everything referenced: refused, named, nothing leaked.
  auto fourth = cache_->Acquire(d.data(), kBuf, Access::kRemoteWrite);
  ASSERT_FALSE(fourth.ok());
  std::printf("  status: %s\n", fourth.status().ToString().c_str());
  EXPECT_EQ(fourth.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ErrnoOf(fourth.status()), ENOMEM);
  EXPECT_THAT(std::string(fourth.status().message()),
              AllOf(HasSubstr("ibv_reg_mr_iova2 on " + device_), HasSubstr("RLIMIT_MEMLOCK soft "),
                    HasSubstr("pinned (VmPin)"),
                    HasSubstr("holds " + std::to_string(2 * kBuf) + " bytes in 2 mappings"),
                    HasSubstr("every one referenced")));
  EXPECT_EQ(domain_->live_mrs(), 2);
  EXPECT_EQ(cache_->stats().live_regions, 2u);

  // The limit allows: the same request registers and carries RDMA WRITE.
  ASSERT_TRUE(limit.SetSoft(baseline + 8 * kMiB)) << limit.error();
  fourth = cache_->Acquire(d.data(), kBuf, Access::kRemoteWrite);
  ASSERT_TRUE(fourth.ok()) << fourth.status();
  ASSERT_TRUE(
      pair_.a->Write(a.data(), kBuf, held->lkey(), fourth->IovaFor(d.data()), fourth->rkey()).ok());
  EXPECT_EQ(FindMismatch(d.data(), kBuf, 4), -1);
}

}  // namespace
}  // namespace dmareg::device_test
