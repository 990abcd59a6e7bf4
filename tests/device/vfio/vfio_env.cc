// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "device/vfio/vfio_env.h"

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace dmareg::device_test {

std::vector<std::string> VfioDevices() {
  return absl::StrSplit(Env("DMAREG_VFIO_DEVICES"), ' ', absl::SkipEmpty());
}

absl::Status WriteFile(const std::string& path, const std::string& value) {
  std::ofstream f(path);
  f << value << std::flush;
  if (!f) return absl::InternalError("cannot write '" + value + "' to " + path);
  return absl::OkStatus();
}

std::string ReadTrimmed(const std::string& path) {
  std::ifstream f(path);
  std::string s;
  std::getline(f, s);
  return std::string(absl::StripAsciiWhitespace(s));
}

void ExpectRoundTrip(EduDevice& edu, const Mapping& src, uint64_t src_iova, const Mapping& dst,
                     uint64_t dst_iova, size_t length, uint32_t seed) {
  FillPattern(src.data(), length, seed);
  std::memset(dst.data(), 0, dst.size());
  ASSERT_TRUE(edu.ToDevice(src_iova, length).ok());
  ASSERT_TRUE(edu.FromDevice(dst_iova, length).ok());
  EXPECT_EQ(FindMismatch(dst.data(), length, seed), -1)
      << "bytes copied by " << edu.domain()->name() << " through IOVAs 0x" << std::hex << src_iova
      << " -> 0x" << dst_iova << " differ";
  for (size_t i = length; i < dst.size(); ++i) {
    if (dst.data()[i] != 0) {
      ADD_FAILURE() << "the device wrote past the transfer, at byte " << i;
      break;
    }
  }
}

void VfioTest::SetUp() {
  devices_ = VfioDevices();
  if (devices_.empty()) {
    if (InVm()) FAIL() << "DMAREG_IN_VM=1 but DMAREG_VFIO_DEVICES names no edu device";
    GTEST_SKIP() << kNoVfioReason;
  }
  absl::StatusOr<std::shared_ptr<VfioContainer>> c = VfioContainer::Open();
  ASSERT_TRUE(c.ok()) << c.status();
  container_ = *c;
  domain_ = OpenDomain(devices_[0]);
  ASSERT_NE(domain_, nullptr);
  absl::StatusOr<std::unique_ptr<EduDevice>> edu = EduDevice::Open(domain_);
  ASSERT_TRUE(edu.ok()) << edu.status();
  edu_ = std::move(*edu);
}

void VfioTest::TearDown() {
  edu_.reset();
  if (container_ != nullptr) {
    EXPECT_TRUE(container_->mappings().empty())
        << container_->mappings().size() << " mappings left in the container";
  }
}

std::shared_ptr<VfioDomain> VfioTest::OpenDomain(const std::string& address) {
  VfioDomainOptions options;
  options.container = container_;
  options.dma_address_bits = EduDevice::kDmaAddressBits;
  absl::StatusOr<std::shared_ptr<VfioDomain>> d = VfioDomain::Open(address, options);
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? *d : nullptr;
}

}  // namespace dmareg::device_test
