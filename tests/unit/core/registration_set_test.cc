// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// AcquireOnAll: one buffer on several (fake) devices, all or nothing.
#include "dmareg/registration_set.h"

#include <unistd.h>

#include <memory>
#include <vector>

#include "common/test_memory.h"
#include "dmareg/testing/fake_dmabuf.h"
#include "dmareg/testing/fake_domain.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dmareg {
namespace {

using testing::FakeDmaBufs;
using testing::FakeDomain;
using ::testing::HasSubstr;

const uint64_t kPage = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));

class RegistrationSetTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    for (int i = 0; i < 3; ++i) {
      fakes_.push_back(std::make_shared<FakeDomain>("fake" + std::to_string(i)));
      caches_.push_back(
          RegistrationCache::Create(fakes_.back(), {.monitoring = Monitoring::kExplicitOnly,
                                                    .inspect_dmabuf = bufs_.Inspector()})
              .value());
      ptrs_.push_back(caches_.back().get());
    }
    buf_ = bufs_.Create(4 * kPage).value();
  }
  void TearDown() override {
    caches_.clear();
    for (const auto& f : fakes_) EXPECT_EQ(f->live_registrations(), 0) << f->name();
    close(buf_.fd);
  }
  SetOptions options() const { return {.parallel = GetParam()}; }
  int64_t Live(size_t i) const { return fakes_[i]->live_registrations(); }

  FakeDmaBufs bufs_;
  FakeDmaBufs::Buffer buf_;
  std::vector<std::shared_ptr<FakeDomain>> fakes_;
  std::vector<std::unique_ptr<RegistrationCache>> caches_;
  std::vector<RegistrationCache*> ptrs_;
};

TEST_P(RegistrationSetTest, OneDmaBufOnEveryDeviceWithItsOwnKeys) {
  auto set = AcquireOnAll(ptrs_, DmaBufMemory{.fd = buf_.fd, .offset = 0, .length = 4 * kPage},
                          Access::kRemoteRead, options());
  ASSERT_TRUE(set.ok()) << set.status();
  ASSERT_EQ(set->size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    const Registration& r = (*set)[i];
    ASSERT_TRUE(r.valid());
    EXPECT_TRUE(r.is_dmabuf());
    FakeDomain::LiveMapping live;
    ASSERT_TRUE(fakes_[i]->Lookup(r.lkey(), &live)) << "device " << i;
    EXPECT_EQ(live.fd, buf_.fd);
    EXPECT_EQ(Live(i), 1);
  }
  // A second set over the same slice hits everywhere.
  auto again = AcquireOnAll(ptrs_, DmaBufMemory{.fd = buf_.fd, .offset = kPage, .length = 10},
                            Access::kRemoteRead, options());
  ASSERT_TRUE(again.ok());
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE((*again)[i].SameMapping((*set)[i]));
    EXPECT_EQ(fakes_[i]->total_registrations(), 1);
  }
}

TEST_P(RegistrationSetTest, HostMemoryToo) {
  test::Mapping mem(2 * kPage);
  auto set = AcquireOnAll(ptrs_, HostMemory{mem.data(), 2 * kPage}, Access::kLocalWrite, options());
  ASSERT_TRUE(set.ok()) << set.status();
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ((*set)[i].addr(), mem.data());
    EXPECT_EQ(Live(i), 1);
  }
}

TEST_P(RegistrationSetTest, AFailureOnOneDeviceLeavesNothingItMadeOnTheOthers) {
  test::Mapping mem(4 * kPage);
  // Device 0 already has the first page cached: that stays.
  { ASSERT_TRUE(caches_[0]->Acquire(mem.data(), kPage, Access::kLocalWrite).ok()); }
  fakes_[2]->FailNextRegistrations(1, absl::ResourceExhaustedError("ENOMEM from the driver"));
  auto host = AcquireOnAll(ptrs_, HostMemory{mem.data(), kPage}, Access::kLocalWrite, options());
  // Device 1's miss and device 2's failure: device 1 is undone.
  ASSERT_FALSE(host.ok());
  EXPECT_EQ(host.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(host.status().message(), HasSubstr("fake2"));
  EXPECT_THAT(host.status().message(), HasSubstr("ENOMEM from the driver"));
  EXPECT_EQ(Live(0), 1);
  EXPECT_EQ(Live(1), 0);
  EXPECT_EQ(Live(2), 0);

  fakes_[1]->mutable_capabilities().dmabuf_import = false;
  auto dmabuf = AcquireOnAll(ptrs_, DmaBufMemory{.fd = buf_.fd, .length = kPage},
                             Access::kLocalWrite, options());
  ASSERT_FALSE(dmabuf.ok());
  EXPECT_EQ(dmabuf.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(dmabuf.status().message(), HasSubstr("fake1"));
  EXPECT_EQ(Live(0), 1);  // only the host page from before
  EXPECT_EQ(Live(1), 0);
  EXPECT_EQ(Live(2), 0);
}

TEST_P(RegistrationSetTest, BadInputIsTheFrontDoorsAnswer) {
  EXPECT_EQ(AcquireOnAll({}, HostMemory{&buf_, 1}, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<RegistrationCache*> with_null = {ptrs_[0], nullptr};
  EXPECT_THAT(AcquireOnAll(with_null, HostMemory{&buf_, 1}, {}).status().message(),
              HasSubstr("cache 1 is null"));
  EXPECT_EQ(AcquireOnAll(ptrs_, HostMemory{nullptr, 0}, {}, options()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(AcquireOnAll(ptrs_, DmaBufMemory{.fd = buf_.fd, .offset = 4 * kPage, .length = 1}, {},
                           options())
                  .status()
                  .message(),
              HasSubstr("past the end"));
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(fakes_[i]->total_registrations(), 0);
}

INSTANTIATE_TEST_SUITE_P(Threads, RegistrationSetTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? "Parallel" : "Sequential";
                         });

}  // namespace
}  // namespace dmareg
