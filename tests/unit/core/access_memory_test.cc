// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include <cerrno>
#include <cstdint>
#include <limits>

#include "dmareg/access.h"
#include "dmareg/errno_status.h"
#include "dmareg/memory.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dmareg {
namespace {

using ::testing::HasSubstr;

TEST(AccessTest, KnownBitsValidateUnknownDoNot) {
  EXPECT_TRUE(ValidateAccess(kAllAccess).ok());
  EXPECT_TRUE(ValidateAccess({}).ok());
  absl::Status s = ValidateAccess(AccessFlags::FromBits(1u << 30 | 1));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("0x40000000"));
}

TEST(AccessTest, RemoteWriteImpliesLocalWrite) {
  EXPECT_TRUE(NormalizeAccess(Access::kRemoteWrite).Has(Access::kLocalWrite));
  EXPECT_TRUE(NormalizeAccess(Access::kRemoteAtomic).Has(Access::kLocalWrite));
  EXPECT_FALSE(NormalizeAccess(Access::kRemoteRead).Has(Access::kLocalWrite));
}

TEST(AccessTest, SatisfiesIsRightsSupersetAndStrictOrderServesRelaxed) {
  const AccessFlags rw = Access::kLocalWrite | Access::kRemoteWrite;
  EXPECT_TRUE(AccessSatisfies(rw, Access::kLocalWrite));
  EXPECT_FALSE(AccessSatisfies(AccessFlags(Access::kLocalWrite), rw));
  // A strictly ordered mapping serves a request that allows relaxed ordering...
  EXPECT_TRUE(AccessSatisfies(rw, rw | Access::kRelaxedOrdering));
  // ...but a relaxed one does not serve a request that needs strict ordering.
  EXPECT_FALSE(AccessSatisfies(rw | Access::kRelaxedOrdering, rw));
  EXPECT_EQ(AccessUnion(rw | Access::kRelaxedOrdering, Access::kRemoteRead),
            rw | Access::kRemoteRead);
  EXPECT_EQ(AccessUnion(AccessFlags(Access::kRelaxedOrdering), Access::kRelaxedOrdering),
            AccessFlags(Access::kRelaxedOrdering));
}

TEST(AccessTest, ToString) {
  EXPECT_EQ(AccessToString({}), "NONE");
  EXPECT_EQ(AccessToString(Access::kLocalWrite | Access::kRemoteRead), "LOCAL_WRITE|REMOTE_READ");
  EXPECT_THAT(AccessToString(AccessFlags::FromBits(1u << 30)), HasSubstr("40000000"));
}

TEST(MemoryTest, HostValidation) {
  char buf[16];
  EXPECT_TRUE(ValidateHostMemory({buf, sizeof(buf)}).ok());
  EXPECT_EQ(ValidateHostMemory({buf, 0}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateHostMemory({nullptr, 8}).code(), absl::StatusCode::kInvalidArgument);
  const void* high = reinterpret_cast<const void*>(std::numeric_limits<uintptr_t>::max() - 10);
  absl::Status wrap = ValidateHostMemory({high, 100});
  EXPECT_EQ(wrap.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wrap.message(), HasSubstr("wraps"));
  // A caller's IOVA must leave room for the whole length too.
  EXPECT_TRUE(ValidateHostMemory({buf, sizeof(buf), UINT64_MAX - sizeof(buf)}).ok());
  absl::Status iova = ValidateHostMemory({buf, sizeof(buf), UINT64_MAX - 4});
  EXPECT_EQ(iova.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(iova.message(), HasSubstr("IOVA"));
}

TEST(MemoryTest, DmaBufValidation) {
  EXPECT_TRUE(ValidateDmaBufMemory({.fd = 3, .offset = 0, .length = 4096}).ok());
  EXPECT_EQ(ValidateDmaBufMemory({.fd = -1, .offset = 0, .length = 4096}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateDmaBufMemory({.fd = 3, .offset = 0, .length = 0}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateDmaBufMemory({.fd = 3, .offset = UINT64_MAX - 1, .length = 4}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateDmaBufMemory({.fd = 3, .offset = 0, .length = 4, .iova = UINT64_MAX}).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ErrnoStatusTest, NamesCallDeviceAndErrno) {
  absl::Status s = ErrnoStatus(EFAULT, "ibv_reg_mr_iova2", "rxe0");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("ibv_reg_mr_iova2 on rxe0"));
  EXPECT_THAT(s.message(), HasSubstr("EFAULT"));
  EXPECT_EQ(ErrnoStatus(ENOMEM, "x", "d").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ErrnoStatus(EOPNOTSUPP, "x", "d").code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(ErrnoStatus(ENODEV, "x", "d").code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(ErrnoStatus(0, "x", "d").ok());
  EXPECT_THAT(ErrnoStatus(4242, "x", "d").message(), HasSubstr("errno 4242"));
}

}  // namespace
}  // namespace dmareg
