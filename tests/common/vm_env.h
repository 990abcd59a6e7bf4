// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// What the device tests read from the VM harness's environment.
//
//   if (!test::InVm()) GTEST_SKIP() << "...";   // inside the VM: FAIL instead
//   std::string dev = test::Env("DMAREG_RXE_DEV");
#ifndef DMAREG_TESTS_COMMON_VM_ENV_H_
#define DMAREG_TESTS_COMMON_VM_ENV_H_

#include <string>

namespace dmareg::test {

// The value of environment variable `name`, or "".
std::string Env(const char* name);
// DMAREG_IN_VM=1: set by the VM harness, where every device must be present.
bool InVm();

}  // namespace dmareg::test

#endif  // DMAREG_TESTS_COMMON_VM_ENV_H_
