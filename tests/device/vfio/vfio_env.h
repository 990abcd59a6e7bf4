// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// What the VFIO device tests share: the harness's edu devices (skip outside
// the VM when there are none, fail inside it), a fixture that opens the
// first one in a container of its own with the edu DMA engine on top, and
// a round trip RAM -> edu -> RAM whose bytes are checked.
//
//   class MyTest : public dmareg::device_test::VfioTest {};
//   TEST_F(MyTest, Works) {
//     Mapping src(4096), dst(4096);
//     ... map them at IOVAs a and b through dmareg ...
//     ExpectRoundTrip(*edu_, src, a, dst, b, 2048);
//   }
#ifndef DMAREG_TESTS_DEVICE_VFIO_VFIO_ENV_H_
#define DMAREG_TESTS_DEVICE_VFIO_VFIO_ENV_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/test_memory.h"
#include "common/vm_env.h"
#include "dmareg/testing/edu_device.h"
#include "dmareg/vfio/vfio_domain.h"
#include "gtest/gtest.h"

namespace dmareg::device_test {

using test::Env;
using test::FillPattern;
using test::FindMismatch;
using test::InVm;
using test::Mapping;
using testing::EduDevice;

inline constexpr char kNoVfioReason[] = "no VFIO edu device; run scripts/vm/run -- ctest -L device";

// DMAREG_VFIO_DEVICES: the edu devices bound to vfio-pci, in slot order.
std::vector<std::string> VfioDevices();

// Writes `value` to a sysfs (or procfs) file; the status names the file.
absl::Status WriteFile(const std::string& path, const std::string& value);
std::string ReadTrimmed(const std::string& path);

// Fills `src` with the pattern `seed`, zeroes `dst`, lets the edu copy
// `length` bytes from IOVA `src_iova` into its buffer and back out to
// IOVA `dst_iova`, and checks every byte of `dst` (the rest stays zero).
void ExpectRoundTrip(EduDevice& edu, const Mapping& src, uint64_t src_iova, const Mapping& dst,
                     uint64_t dst_iova, size_t length, uint32_t seed);

// Opens the first edu device in a container of its own (container_,
// domain_, edu_). Skips outside the VM when there is none; fails inside.
class VfioTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;
  // Opens `address` into container_ with the edu's 28-bit mask.
  std::shared_ptr<VfioDomain> OpenDomain(const std::string& address);

  std::vector<std::string> devices_;
  std::shared_ptr<VfioContainer> container_;
  std::shared_ptr<VfioDomain> domain_;
  std::unique_ptr<EduDevice> edu_;
};

}  // namespace dmareg::device_test

#endif  // DMAREG_TESTS_DEVICE_VFIO_VFIO_ENV_H_
