// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// Runs the C cases of capi_test.c (each returns 0 or the failing line).
#include <gtest/gtest.h>

#include <cerrno>

#include "absl/status/status.h"
#include "capi/c_handles.h"
#include "dmareg/errno_status.h"

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

TEST(CApi, StatusToErrno) {
  using dmareg::internal::StatusToNegErrno;
  EXPECT_EQ(StatusToNegErrno(absl::OkStatus()), 0);
  EXPECT_EQ(StatusToNegErrno(absl::InvalidArgumentError("x")), -EINVAL);
  EXPECT_EQ(StatusToNegErrno(absl::NotFoundError("x")), -ENOENT);
  EXPECT_EQ(StatusToNegErrno(absl::FailedPreconditionError("x")), -EPERM);
  EXPECT_EQ(StatusToNegErrno(absl::ResourceExhaustedError("x")), -ENOMEM);
  EXPECT_EQ(StatusToNegErrno(absl::UnimplementedError("x")), -EOPNOTSUPP);
  EXPECT_EQ(StatusToNegErrno(absl::InternalError("x")), -EIO);
  // The errno payload wins over the code.
  EXPECT_EQ(StatusToNegErrno(dmareg::ErrnoStatus(EFAULT, "ibv_reg_mr", "fake")), -EFAULT);
}

}  // namespace
