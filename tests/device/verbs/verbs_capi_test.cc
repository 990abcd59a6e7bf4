// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The C API (dmareg/c/dmareg.h) on a real device: a domain opened by name
// through C, a cache, a miss, a hit on a slice, RDMA WRITE and READ on a
// loopback RC QP with the lkey/rkey the C calls returned, invalidation and
// the counters; errors as negative errno with a message naming the call;
// the kernel's MR count on the device back where it was once all is closed.
//
//   scripts/vm/run -- ctest -R device_verbs_capi_test --output-on-failure

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "device/verbs/device_env.h"
#include "dmareg/c/verbs.h"
#include "dmareg/c_bridge.h"
#include "dmareg/verbs/verbs_domain.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "verbs/rc_qp.h"

namespace dmareg::device_test {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr size_t kLen = 256 * 1024;
constexpr size_t kPage = 4096;

// The device the harness names; skips outside the VM when there is none,
// fails inside it.
class VerbsCApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::vector<std::string>> names = VerbsDomain::ListDevices();
    ASSERT_TRUE(names.ok()) << names.status();
    const std::string wanted = WantedRdmaDevice();
    for (const std::string& n : *names) {
      if (wanted.empty() || n == wanted) {
        device_ = n;
        break;
      }
    }
    if (device_.empty()) {
      if (InVm()) FAIL() << "DMAREG_IN_VM=1 but no RDMA device " << wanted;
      GTEST_SKIP() << kNoDeviceReason;
    }
    mrs_before_ = KernelMrCount(device_);
    // Inside the VM the kernel's count must be readable (rdma -j resource).
    if (InVm()) {
      ASSERT_GE(mrs_before_, 0) << "cannot read the MR count of " << device_;
    }
  }
  void TearDown() override {
    if (device_.empty()) return;
    if (mrs_before_ >= 0) {
      EXPECT_EQ(KernelMrCount(device_), mrs_before_) << "MRs left on " << device_;
    }
  }

  std::string device_;
  int64_t mrs_before_ = -1;
};

TEST_F(VerbsCApiTest, MovesBytesWithTheKeysTheCApiReturns) {
  dmareg_domain* dom = nullptr;
  ASSERT_EQ(dmareg_verbs_domain_open(device_.c_str(), &dom), 0) << dmareg_last_error();
  ASSERT_NE(dom, nullptr);
  // The QPs go on the domain's own PD, which only the C++ side can name.
  auto* verbs = dynamic_cast<VerbsDomain*>(dmareg::DomainOfC(dom).get());
  ASSERT_NE(verbs, nullptr);
  EXPECT_EQ(verbs->name(), device_);

  struct dmareg_cache_attr attr {};
  attr.monitoring = DMAREG_MONITOR_EXPLICIT;
  attr.no_environment = 1;
  dmareg_cache* cache = nullptr;
  ASSERT_EQ(dmareg_cache_create(dom, &attr, &cache), 0) << dmareg_last_error();
  {
    absl::StatusOr<rc::RcLoopback> pair =
        rc::ConnectLoopback(verbs->context(), verbs->pd(), device_);
    ASSERT_TRUE(pair.ok()) << pair.status();

    Mapping src(kLen), dst(kLen), back(kLen);
    FillPattern(src.data(), kLen, /*seed=*/41);
    dmareg_reg* s = nullptr;
    dmareg_reg* d = nullptr;
    dmareg_reg* b = nullptr;
    ASSERT_EQ(dmareg_acquire(cache, src.data(), kLen, DMAREG_ACCESS_REMOTE_READ, &s), 0)
        << dmareg_last_error();
    ASSERT_EQ(dmareg_acquire(cache, dst.data(), kLen, DMAREG_ACCESS_REMOTE_WRITE, &d), 0)
        << dmareg_last_error();
    ASSERT_EQ(dmareg_acquire(cache, back.data(), kLen, DMAREG_ACCESS_LOCAL_WRITE, &b), 0)
        << dmareg_last_error();
    EXPECT_NE(dmareg_reg_lkey(s), 0u);
    EXPECT_NE(dmareg_reg_rkey(d), 0u);

    // A slice of src hits src's registration: same keys, IOVA inside it.
    dmareg_reg* slice = nullptr;
    char* mid = static_cast<char*>(src.data()) + 3 * kPage;
    ASSERT_EQ(dmareg_acquire(cache, mid, kLen / 2, DMAREG_ACCESS_REMOTE_READ, &slice), 0)
        << dmareg_last_error();
    EXPECT_EQ(dmareg_reg_lkey(slice), dmareg_reg_lkey(s));
    EXPECT_EQ(dmareg_reg_rkey(slice), dmareg_reg_rkey(s));
    EXPECT_EQ(dmareg_reg_iova(slice, mid), dmareg_reg_iova(s, src.data()) + 3 * kPage);

    ASSERT_TRUE(pair->a
                    ->Write(src.data(), kLen, dmareg_reg_lkey(s), dmareg_reg_iova(d, dst.data()),
                            dmareg_reg_rkey(d))
                    .ok());
    EXPECT_EQ(FindMismatch(dst.data(), kLen, 41), -1);
    // READ back through the slice's rkey: only the bytes from mid on.
    ASSERT_TRUE(pair->b
                    ->Read(back.data(), kLen / 2, dmareg_reg_lkey(b), dmareg_reg_iova(slice, mid),
                           dmareg_reg_rkey(slice))
                    .ok());
    EXPECT_EQ(FindMismatch(back.data(), kLen / 2, 41, /*first_index=*/3 * kPage), -1);

    struct dmareg_cache_stats st {};
    ASSERT_EQ(dmareg_cache_stats(cache, &st), 0);
    EXPECT_EQ(st.misses, 3u);
    EXPECT_EQ(st.hits, 1u);
    EXPECT_EQ(st.live_regions, 3u);
    EXPECT_EQ(st.referenced_regions, 3u);
    EXPECT_EQ(verbs->live_mrs(), 3);
    if (mrs_before_ >= 0) {
      EXPECT_EQ(KernelMrCount(device_), mrs_before_ + 3) << "MRs the kernel holds on " << device_;
    }

    for (dmareg_reg* r : {slice, s, d, b}) dmareg_release(r);
    *pair = {};  // the QPs go before the domain's PD
    ASSERT_EQ(dmareg_invalidate(cache, src.data(), kLen), 0) << dmareg_last_error();
    ASSERT_EQ(dmareg_cache_stats(cache, &st), 0);
    EXPECT_EQ(st.invalidations, 1u);
    EXPECT_EQ(st.invalidated_regions, 1u);
    EXPECT_EQ(st.live_regions, 2u);
    EXPECT_EQ(verbs->live_mrs(), 2);
  }
  dmareg_cache_destroy(cache);
  EXPECT_EQ(verbs->live_mrs(), 0);
  dmareg_domain_close(dom);
}

TEST_F(VerbsCApiTest, ErrorsAreNegativeErrnoWithAMessageNamingTheCall) {
  dmareg_domain* dom = nullptr;
  EXPECT_LT(dmareg_verbs_domain_open("no_such_rdma_dev", &dom), 0);
  EXPECT_EQ(dom, nullptr);
  EXPECT_THAT(std::string(dmareg_last_error()), HasSubstr("no_such_rdma_dev"));

  ASSERT_EQ(dmareg_verbs_domain_open(device_.c_str(), &dom), 0) << dmareg_last_error();
  struct dmareg_cache_attr attr {};
  attr.monitoring = DMAREG_MONITOR_EXPLICIT;
  attr.no_environment = 1;
  dmareg_cache* cache = nullptr;
  ASSERT_EQ(dmareg_cache_create(dom, &attr, &cache), 0) << dmareg_last_error();
  Mapping buf(kLen);
  dmareg_reg* reg = nullptr;
  EXPECT_EQ(dmareg_acquire(cache, buf.data(), 0, DMAREG_ACCESS_LOCAL_WRITE, &reg), -EINVAL);
  EXPECT_EQ(reg, nullptr);
  EXPECT_THAT(std::string(dmareg_last_error()),
              AllOf(HasSubstr("dmareg_acquire"), HasSubstr("zero length")));
  EXPECT_EQ(dmareg_acquire(cache, buf.data(), kLen, 1u << 30, &reg), -EINVAL);
  EXPECT_EQ(reg, nullptr);
  EXPECT_THAT(std::string(dmareg_last_error()),
              AllOf(HasSubstr("dmareg_acquire"), HasSubstr("unknown access bits 0x40000000")));
  EXPECT_EQ(dmareg_invalidate(cache, buf.data(), 0), -EINVAL);
  EXPECT_THAT(std::string(dmareg_last_error()), HasSubstr("dmareg_invalidate"));
  // A failure registered nothing, and the cache still works afterwards.
  struct dmareg_cache_stats st {};
  ASSERT_EQ(dmareg_cache_stats(cache, &st), 0);
  EXPECT_EQ(st.live_regions, 0u);
  EXPECT_EQ(st.misses, 0u);
  ASSERT_EQ(dmareg_acquire(cache, buf.data(), kLen, DMAREG_ACCESS_LOCAL_WRITE, &reg), 0)
      << dmareg_last_error();
  dmareg_release(reg);
  dmareg_cache_destroy(cache);
  dmareg_domain_close(dom);
}

}  // namespace
}  // namespace dmareg::device_test
