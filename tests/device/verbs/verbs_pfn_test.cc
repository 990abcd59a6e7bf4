// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The PFN check on a real device: a shared-memory file registered through
// the cache (userfaultfd monitor), then truncated to nothing and refilled.
// No monitor sees that: the cached MR keeps the old pages, and an RDMA READ
// through it returns the OLD bytes. CheckPfns finds it, retires it, and the
// next Acquire registers the new pages, which the device then reads.

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "device/verbs/device_env.h"
#include "dmareg/cache.h"
#include "gtest/gtest.h"

namespace dmareg::device_test {
namespace {

constexpr size_t kLen = 64 * 1024;

class VerbsPfnTest : public RcLoopbackTest {
 protected:
  void SetUp() override {
    RcLoopbackTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    auto cache = RegistrationCache::Create(domain_, {.pfn_check_every = 1000});
    ASSERT_TRUE(cache.ok()) << cache.status();
    pfn_cache_ = *std::move(cache);
    ASSERT_EQ(pfn_cache_->monitor().name(), "userfaultfd");
    ASSERT_TRUE(file_.ok()) << std::strerror(errno);
  }
  void TearDown() override {
    pfn_cache_.reset();
    RcLoopbackTest::TearDown();
  }
  // The file's bytes, written through the file (not the mapping).
  void WriteFile(uint32_t seed) {
    std::vector<char> bytes(kLen);
    FillPattern(bytes.data(), kLen, seed);
    ASSERT_EQ(pwrite(file_.fd(), bytes.data(), kLen, 0), static_cast<ssize_t>(kLen))
        << std::strerror(errno);
  }
  // RDMA READ of the whole buffer through `reg` into `dst`.
  void ReadInto(const Mapping& dst, const Registration& d, const Registration& reg) {
    std::memset(dst.data(), 0, kLen);
    absl::Status r =
        pair_.b->Read(dst.data(), kLen, d.lkey(), reg.IovaFor(file_.data()), reg.rkey());
    ASSERT_TRUE(r.ok()) << r;
  }

  test::SharedMemfd file_{"verbs_pfn_test", kLen};
  std::unique_ptr<RegistrationCache> pfn_cache_;
};

TEST_F(VerbsPfnTest, TruncatedAndRefilledFileIsFoundStale) {
  const int64_t mrs_at_start = domain_->live_mrs();
  WriteFile(1);
  Mapping dst(kLen);
  ASSERT_TRUE(dst.ok());
  auto d = pfn_cache_->Acquire(dst.data(), kLen, Access::kLocalWrite);
  ASSERT_TRUE(d.ok()) << d.status();
  uint32_t old_rkey = 0, old_lkey = 0;
  {
    auto reg = pfn_cache_->Acquire(file_.data(), kLen, Access::kRemoteRead);
    ASSERT_TRUE(reg.ok()) << reg.status();
    old_rkey = reg->rkey();
    old_lkey = reg->lkey();
    ReadInto(dst, *d, *reg);
    ASSERT_EQ(FindMismatch(dst.data(), kLen, 1), -1) << "the first read is wrong";
  }
  absl::StatusOr<PfnReport> clean = pfn_cache_->CheckPfns();
  if (!InVm() && !clean.ok()) {
    // A real NIC on a host where this process cannot see PFNs: the refusal.
    EXPECT_EQ(clean.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(clean.status().message().find("CAP_SYS_ADMIN"), absl::string_view::npos);
    return;
  }
  ASSERT_TRUE(clean.ok()) << clean.status();
  EXPECT_EQ(clean->checked_regions, 2u);
  EXPECT_EQ(clean->checked_pages, 2 * kLen / static_cast<size_t>(getpagesize()));
  EXPECT_TRUE(clean->stale.empty()) << "untouched memory reported stale";

  // Truncate to nothing and refill: the pages under the mapping are new.
  ASSERT_EQ(ftruncate(file_.fd(), 0), 0) << std::strerror(errno);
  ASSERT_EQ(ftruncate(file_.fd(), kLen), 0) << std::strerror(errno);
  WriteFile(2);
  ASSERT_EQ(FindMismatch(file_.data(), kLen, 2), -1) << "the CPU does not see the refill";

  const uint64_t misses = pfn_cache_->stats().misses;
  {
    auto cached = pfn_cache_->Acquire(file_.data(), kLen, Access::kRemoteRead);
    ASSERT_TRUE(cached.ok()) << cached.status();
    EXPECT_EQ(cached->rkey(), old_rkey) << "a monitor saw the truncation after all";
    EXPECT_EQ(pfn_cache_->stats().misses, misses);
    ReadInto(dst, *d, *cached);
    EXPECT_EQ(FindMismatch(dst.data(), kLen, 1), -1)
        << "the cached MR should still hold the OLD pages (that is the bug caught here)";
    EXPECT_NE(FindMismatch(dst.data(), kLen, 2), -1);
  }

  const int64_t mrs = domain_->live_mrs();
  absl::StatusOr<PfnReport> report = pfn_cache_->CheckPfns();
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->checked_regions, 2u);
  ASSERT_EQ(report->stale.size(), 1u) << "the truncated file's MR was not found";
  EXPECT_EQ(report->stale[0].addr, reinterpret_cast<uintptr_t>(file_.data()));
  EXPECT_EQ(report->stale[0].length, kLen);
  EXPECT_EQ(report->stale[0].lkey, old_lkey);
  EXPECT_EQ(report->stale[0].first_stale_page, reinterpret_cast<uintptr_t>(file_.data()));
  EXPECT_EQ(domain_->live_mrs(), mrs - 1) << "the stale MR was not deregistered";
  EXPECT_EQ(pfn_cache_->stats().pfn_stale, 1u);

  {
    auto fresh = pfn_cache_->Acquire(file_.data(), kLen, Access::kRemoteRead);
    ASSERT_TRUE(fresh.ok()) << fresh.status();
    EXPECT_NE(fresh->rkey(), old_rkey);
    EXPECT_EQ(pfn_cache_->stats().misses, misses + 1);
    ReadInto(dst, *d, *fresh);
    EXPECT_EQ(FindMismatch(dst.data(), kLen, 2), -1) << "the device must read the new bytes";
  }
  absl::StatusOr<PfnReport> after = pfn_cache_->CheckPfns();
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(after->stale.empty());
  d->Reset();
  pfn_cache_.reset();
  EXPECT_EQ(domain_->live_mrs(), mrs_at_start) << "MRs left behind";
}

}  // namespace
}  // namespace dmareg::device_test
