// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <limits>

#include "common/limited_memlock.h"
#include "dmareg/access.h"
#include "dmareg/domain.h"
#include "dmareg/errno_status.h"
#include "dmareg/memlock.h"
#include "dmareg/memory.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dmareg {
namespace {

using ::testing::AllOf;
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

// Memory the process may not access as asked, refused before any kernel
// pins it; what it may access, and what madvise cannot tell (not mapped,
// an empty span), passes to the registration.
TEST(CheckHostAccessTest, TheProgramsOwnProtectionDecides) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  char* p = static_cast<char*>(
      mmap(nullptr, 3 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(p, MAP_FAILED);
  ASSERT_EQ(mprotect(p + page, page, PROT_READ), 0);
  ASSERT_EQ(mprotect(p + 2 * page, page, PROT_NONE), 0);
  EXPECT_TRUE(CheckHostAccess(p + 10, page - 10, Access::kLocalWrite, "reg on dev0").ok());
  EXPECT_TRUE(CheckHostAccess(p, 2 * page, Access::kRemoteRead, "reg on dev0").ok());
  // Write into the read-only page: refused, the protection named.
  absl::Status s = CheckHostAccess(p + page - 1, 2, Access::kLocalWrite, "reg on dev0");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("reg on dev0: "), HasSubstr("not writable"),
                                 HasSubstr("mapped PROT_READ")));
  // Remote write and atomic imply local write.
  EXPECT_EQ(CheckHostAccess(p + page, page, Access::kRemoteAtomic, "x").code(),
            absl::StatusCode::kPermissionDenied);
  // Reading the PROT_NONE page, whatever the rights.
  s = CheckHostAccess(p + page, 2 * page, {}, "reg on dev0");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("not readable"), HasSubstr("mapped PROT_NONE")));
  EXPECT_TRUE(CheckHostAccess(p, 0, Access::kLocalWrite, "x").ok());
  ASSERT_EQ(munmap(p, 3 * page), 0);
  // Not mapped: the registration's to refuse (EFAULT from the kernel).
  EXPECT_TRUE(CheckHostAccess(p, page, {}, "x").ok());
}

// The limit as the kernel will check it, and the note the backends append
// to a refusal for it.
TEST(MemlockTest, ReadsTheLimitTheKernelChecks) {
  {
    test::LimitedMemlock limit(8 << 20);
    ASSERT_TRUE(limit.ok()) << limit.error();
    const MemlockLimit m = ReadMemlockLimit();
    EXPECT_EQ(m.soft, uint64_t{8} << 20);
    EXPECT_FALSE(m.cap_ipc_lock);
    EXPECT_TRUE(m.limited());
    EXPECT_TRUE(m.pinned.has_value() && m.locked.has_value()) << "VmPin, VmLck unread";
    EXPECT_THAT(MemlockNote(m),
                AllOf(::testing::StartsWith("RLIMIT_MEMLOCK soft 8 MiB, hard "),
                      HasSubstr(" pinned (VmPin), "), HasSubstr(" locked (VmLck)")));
  }
  EXPECT_EQ(MemlockNote(MemlockLimit{.soft = 4096, .hard = 3 << 20, .cap_ipc_lock = true}),
            "RLIMIT_MEMLOCK soft 4 KiB, hard 3 MiB (CAP_IPC_LOCK: not limited)");
  EXPECT_EQ(MemlockNote(MemlockLimit{}), "RLIMIT_MEMLOCK unlimited");
  EXPECT_FALSE((MemlockLimit{.soft = 4096, .cap_ipc_lock = true}).limited());
  EXPECT_EQ(BytesText(4097), "4097 bytes");
}

}  // namespace
}  // namespace dmareg
