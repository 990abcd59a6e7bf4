// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// What the device tests read from the VM harness's environment.
//
//   if (!test::InVm()) GTEST_SKIP() << "...";   // inside the VM: FAIL instead
//   std::string dev = test::Env("DMAREG_RXE_DEV");
//   test::RecordBranch("odp", supported);       // before branching on it
#ifndef DMAREG_TESTS_COMMON_VM_ENV_H_
#define DMAREG_TESTS_COMMON_VM_ENV_H_

#include <string>

#include "gtest/gtest.h"

namespace dmareg::test {

// The value of environment variable `name`, or "".
std::string Env(const char* name);
// DMAREG_IN_VM=1: set by the VM harness, where every device must be present.
bool InVm();

// Says which branch of a test that branches on a kernel capability ran:
// property "branch.<capability>" of the test's XML result, "positive" or
// "refusal". scripts/test fails the newer kernel's run if any test there
// took the refusal branch (that kernel has every capability they probe).
inline void RecordBranch(const std::string& capability, bool positive) {
  ::testing::Test::RecordProperty("branch." + capability, positive ? "positive" : "refusal");
}

}  // namespace dmareg::test

#endif  // DMAREG_TESTS_COMMON_VM_ENV_H_
