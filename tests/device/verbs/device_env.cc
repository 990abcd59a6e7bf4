// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "device/verbs/device_env.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"

namespace dmareg::device_test {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? std::string() : std::string(v);
}

bool InVm() { return Env("DMAREG_IN_VM") == "1"; }

std::string WantedRdmaDevice() { return Env("DMAREG_RXE_DEV"); }

Mapping::Mapping(size_t length, int prot) : length_(length) {
  void* p = mmap(nullptr, length, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p != MAP_FAILED) data_ = static_cast<char*>(p);
}

Mapping::~Mapping() {
  if (data_ != nullptr) munmap(data_, length_);
}

void FillPattern(void* p, size_t n, uint32_t seed, size_t first_index) {
  auto* b = static_cast<uint8_t*>(p);
  for (size_t i = 0; i < n; ++i) b[i] = PatternByte(seed, first_index + i);
}

ptrdiff_t FindMismatch(const void* p, size_t n, uint32_t seed, size_t first_index) {
  const auto* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i < n; ++i) {
    if (b[i] != PatternByte(seed, first_index + i)) return static_cast<ptrdiff_t>(i);
  }
  return -1;
}

void RdmaTest::SetUp() {
  const std::string wanted = WantedRdmaDevice();
  absl::StatusOr<std::vector<std::string>> names = VerbsDomain::ListDevices();
  ASSERT_TRUE(names.ok()) << names.status();
  const bool present =
      !names->empty() &&
      (wanted.empty() || std::find(names->begin(), names->end(), wanted) != names->end());
  if (!present) {
    if (InVm()) {
      const std::string what = wanted.empty() ? "there is no RDMA device"
                                              : "RDMA device " + wanted + " is missing";
      FAIL() << "DMAREG_IN_VM=1 but " << what << " (present: "
             << (names->empty() ? "none" : absl::StrJoin(*names, ", ")) << ")";
    }
    GTEST_SKIP() << kNoDeviceReason;
  }
  absl::StatusOr<std::shared_ptr<VerbsDomain>> domain = VerbsDomain::Open(wanted);
  ASSERT_TRUE(domain.ok()) << domain.status();
  domain_ = *domain;
  device_ = domain_->name();
  absl::StatusOr<std::unique_ptr<RegistrationCache>> cache = RegistrationCache::Create(domain_);
  ASSERT_TRUE(cache.ok()) << cache.status();
  cache_ = std::move(*cache);
}

void RdmaTest::TearDown() {
  if (cache_ == nullptr) return;
  // Whatever a test registered is gone once its handles and the cache are.
  cache_.reset();
  EXPECT_EQ(domain_->live_mrs(), 0) << "MRs leaked on " << device_;
  EXPECT_EQ(domain_->total_registrations(), domain_->total_deregistrations());
}

std::shared_ptr<VerbsDomain> RdmaTest::OpenDomain(VerbsDomainOptions options) {
  absl::StatusOr<std::shared_ptr<VerbsDomain>> d = VerbsDomain::Open(device_, options);
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? *d : nullptr;
}

}  // namespace dmareg::device_test
