// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// Runs the C cases of capi_test.c (each returns 0 or the failing line).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "dmareg/c/dmareg.h"
#include "dmareg/c/testing.h"
#include "dmareg/c_bridge.h"
#include "dmareg/errno_status.h"
#include "dmareg/log.h"
#include "dmareg/testing/fake_domain.h"

extern "C" {
int capi_acquire_hit_invalidate(void);
int capi_release_after_destroy(void);
int capi_bad_input(void);
int capi_cache_monitor_notify(void);
int capi_attr_reads_the_environment(void);
}

namespace {

TEST(CApi, AcquireHitInvalidate) {
  EXPECT_EQ(capi_acquire_hit_invalidate(), 0) << "capi_test.c line";
}
TEST(CApi, ReleaseAfterDestroy) {
  EXPECT_EQ(capi_release_after_destroy(), 0) << "capi_test.c line";
}
TEST(CApi, BadInput) { EXPECT_EQ(capi_bad_input(), 0) << "capi_test.c line"; }
TEST(CApi, CacheMonitorNotifyRetiresTheMapping) {
  EXPECT_EQ(capi_cache_monitor_notify(), 0) << "capi_test.c line";
}
TEST(CApi, AttrReadsTheEnvironmentUnlessTold) {
  EXPECT_EQ(capi_attr_reads_the_environment(), 0) << "capi_test.c line";
}

// The bridge's CFail (dmareg/c_bridge.h) maps a status as every C entry
// point does, and records it, led by the call, as the last error.
TEST(CApi, StatusToErrno) {
  const auto neg_errno = [](const absl::Status& status) { return dmareg::CFail("call", status); };
  EXPECT_EQ(neg_errno(absl::OkStatus()), 0);
  EXPECT_EQ(neg_errno(absl::InvalidArgumentError("x")), -EINVAL);
  EXPECT_EQ(neg_errno(absl::NotFoundError("x")), -ENOENT);
  EXPECT_EQ(neg_errno(absl::FailedPreconditionError("x")), -EPERM);
  EXPECT_EQ(neg_errno(absl::ResourceExhaustedError("x")), -ENOMEM);
  EXPECT_EQ(neg_errno(absl::UnimplementedError("x")), -EOPNOTSUPP);
  EXPECT_EQ(neg_errno(absl::InternalError("x")), -EIO);
  // The errno payload wins over the code.
  EXPECT_EQ(neg_errno(dmareg::ErrnoStatus(EFAULT, "ibv_reg_mr", "fake")), -EFAULT);
  EXPECT_EQ(std::string(dmareg_last_error()).rfind("call: ", 0), 0u) << dmareg_last_error();
  EXPECT_EQ(dmareg::CFail(EBUSY, "call: busy"), -EBUSY);
  EXPECT_STREQ(dmareg_last_error(), "call: busy");
}

// A library's own C domain: handed to C with NewCDomain, read back with
// DomainOfC; the handle holds a reference until dmareg_domain_close.
TEST(CApi, BridgeHandsADomainToCAndBack) {
  auto fake = std::make_shared<dmareg::testing::FakeDomain>();
  dmareg_domain* handle = nullptr;
  ASSERT_EQ(dmareg::NewCDomain(fake, &handle), 0);
  ASSERT_NE(handle, nullptr);
  EXPECT_EQ(dmareg::DomainOfC(handle), fake);
  EXPECT_EQ(dmareg::DomainOfC(nullptr), nullptr);
  EXPECT_EQ(fake.use_count(), 2);
  dmareg_domain_close(handle);
  EXPECT_EQ(fake.use_count(), 1);
}

// Releasing twice (and a pointer that never was a handle) is a warning,
// not a double free: each handle kind, with the count of registrations
// checked, and the warning naming the call.
void CollectWarnings(void* context, dmareg::LogLevel, std::string_view text) {
  static_cast<std::vector<std::string>*>(context)->emplace_back(text);
}

TEST(CApi, ReleasingTwiceIsAWarningNotADoubleFree) {
  std::vector<std::string> warnings;
  dmareg::SetLogSink(&CollectWarnings, &warnings);
  dmareg_domain* dom = nullptr;
  ASSERT_EQ(dmareg_fake_domain_create(&dom), 0);
  dmareg_cache_attr attr = {};
  attr.monitoring = DMAREG_MONITOR_EXPLICIT;
  dmareg_cache* cache = nullptr;
  ASSERT_EQ(dmareg_cache_create(dom, &attr, &cache), 0);
  static char buf[8192] __attribute__((aligned(4096)));
  dmareg_reg* reg = nullptr;
  ASSERT_EQ(dmareg_acquire(cache, buf, sizeof buf, DMAREG_ACCESS_LOCAL_WRITE, &reg), 0);
  dmareg_release(reg);
  dmareg_release(reg);  // ASan: a double free before the live-handle set
  int not_a_handle = 0;
  dmareg_release(reinterpret_cast<dmareg_reg*>(&not_a_handle));
  dmareg_cache_destroy(cache);
  dmareg_cache_destroy(cache);
  EXPECT_EQ(dmareg_fake_domain_live_registrations(dom), 0);
  dmareg_domain_close(dom);
  dmareg_domain_close(dom);
  dmareg::ResetLogging();
  ASSERT_EQ(warnings.size(), 4u);
  EXPECT_THAT(warnings[0], ::testing::HasSubstr("dmareg_release("));
  EXPECT_THAT(warnings[0], ::testing::HasSubstr("not a live handle"));
  EXPECT_THAT(warnings[1], ::testing::HasSubstr("dmareg_release("));
  EXPECT_THAT(warnings[2], ::testing::HasSubstr("dmareg_cache_destroy("));
  EXPECT_THAT(warnings[3], ::testing::HasSubstr("dmareg_domain_close("));
}

}  // namespace
