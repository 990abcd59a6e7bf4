// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "device/verbs/device_env.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace dmareg::device_test {

int64_t KernelMrCount(const std::string& device) {
  FILE* p = popen("rdma -j resource show 2>&1", "r");
  if (p == nullptr) return -1;
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  pclose(p);
  const size_t dev = out.find(absl::StrFormat("\"ifname\":\"%s\"", device));
  if (dev == std::string::npos) return -1;
  const size_t mr = out.find("\"mr\":", dev);
  if (mr == std::string::npos) return -1;
  int64_t n = -1;
  const size_t end = out.find_first_of(",}", mr);
  if (!absl::SimpleAtoi(out.substr(mr + 5, end - mr - 5), &n)) return -1;
  return n;
}

std::string WantedRdmaDevice() { return Env("DMAREG_RXE_DEV"); }

void RdmaTest::SetUp() {
  const std::string wanted = WantedRdmaDevice();
  absl::StatusOr<std::vector<std::string>> names = VerbsDomain::ListDevices();
  ASSERT_TRUE(names.ok()) << names.status();
  const bool present = !names->empty() && (wanted.empty() || std::find(names->begin(), names->end(),
                                                                       wanted) != names->end());
  if (!present) {
    if (InVm()) {
      const std::string what =
          wanted.empty() ? "there is no RDMA device" : "RDMA device " + wanted + " is missing";
      FAIL() << "DMAREG_IN_VM=1 but " << what
             << " (present: " << (names->empty() ? "none" : absl::StrJoin(*names, ", ")) << ")";
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

void RcLoopbackTest::SetUp() {
  RdmaTest::SetUp();
  if (IsSkipped() || HasFatalFailure()) return;
  absl::StatusOr<rc::RcLoopback> pair =
      rc::ConnectLoopback(domain_->context(), domain_->pd(), device_);
  ASSERT_TRUE(pair.ok()) << pair.status();
  pair_ = std::move(*pair);
}

void RcLoopbackTest::TearDown() {
  pair_ = {};  // QPs go before the PD
  RdmaTest::TearDown();
}

}  // namespace dmareg::device_test
