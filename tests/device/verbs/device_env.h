// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// What the verbs device tests share: reading the harness's environment
// (skip outside the VM when there is no device, fail inside it), a fixture
// that opens the device with a cache in front, page-aligned mappings and
// byte patterns that can be checked everywhere.
//
//   class MyTest : public dmareg::device_test::RdmaTest {};
//   TEST_F(MyTest, Works) {
//     Mapping buf(64 * 1024);
//     auto reg = cache_->Acquire(buf.data(), buf.size(), Access::kRemoteRead);
//   }

#ifndef DMAREG_TESTS_DEVICE_VERBS_DEVICE_ENV_H_
#define DMAREG_TESTS_DEVICE_VERBS_DEVICE_ENV_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "common/test_memory.h"
#include "common/vm_env.h"
#include "dmareg/cache.h"
#include "dmareg/verbs/verbs_domain.h"
#include "gtest/gtest.h"
#include "verbs/rc_qp.h"

namespace dmareg::device_test {

inline constexpr char kNoDeviceReason[] = "no RDMA device; run scripts/vm/run -- ctest -L device";

// DMAREG_RXE_DEV, or "" for the first device.
std::string WantedRdmaDevice();

// MRs the kernel holds on `device` for every process, from `rdma -j
// resource show` (-1 if it cannot be read).
int64_t KernelMrCount(const std::string& device);

// The harness's environment, test memory and byte patterns (tests/common).
using test::Env;
using test::FillPattern;
using test::FindMismatch;
using test::InVm;
using test::Mapping;
using test::PatternByte;

// Opens the wanted RDMA device with a cache in front; skips (outside the VM)
// or fails (inside it) when there is none.
class RdmaTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;
  // Opens another domain on the same device with `options` (FAILs on error).
  std::shared_ptr<VerbsDomain> OpenDomain(VerbsDomainOptions options);

  std::string device_;
  std::shared_ptr<VerbsDomain> domain_;
  std::unique_ptr<RegistrationCache> cache_;
};

// RdmaTest with two RC QPs on the device connected to each other
// (loopback), torn down before the PD.
class RcLoopbackTest : public RdmaTest {
 protected:
  void SetUp() override;
  void TearDown() override;

  rc::RcLoopback pair_;
};

}  // namespace dmareg::device_test

#endif  // DMAREG_TESTS_DEVICE_VERBS_DEVICE_ENV_H_
