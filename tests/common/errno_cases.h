// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The errnos a registration call fails with in practice, the status code
// each must become, and its name as the message must spell it. Tests of
// every backend's registration path loop over the same table:
//
//   for (const ErrnoCase& c : kRegistrationErrnos) {
//     SCOPED_TRACE(c.name);
//     ... make the call fail with c.err ...
//     EXPECT_EQ(status.code(), c.code);
//     EXPECT_THAT(status.message(), HasSubstr(c.name));
//   }

#ifndef DMAREG_TESTS_COMMON_ERRNO_CASES_H_
#define DMAREG_TESTS_COMMON_ERRNO_CASES_H_

#include <cerrno>

#include "absl/status/status.h"

namespace dmareg::test {

struct ErrnoCase {
  int err;
  const char* name;
  absl::StatusCode code;
};

inline constexpr ErrnoCase kRegistrationErrnos[] = {
    {ENOMEM, "ENOMEM", absl::StatusCode::kResourceExhausted},
    {EFAULT, "EFAULT", absl::StatusCode::kInvalidArgument},
    {EOPNOTSUPP, "EOPNOTSUPP", absl::StatusCode::kUnimplemented},
    {EINVAL, "EINVAL", absl::StatusCode::kInvalidArgument},
};

}  // namespace dmareg::test

#endif  // DMAREG_TESTS_COMMON_ERRNO_CASES_H_
