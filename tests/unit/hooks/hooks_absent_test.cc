// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// A program that neither links nor preloads libdmareg_hooks: the hooks
// monitor, and a cache asking for one, fail with FailedPrecondition naming
// the library; loaded later with dlopen, the library interposes nothing and
// is refused as well.
#include <dlfcn.h>

#include <memory>

#include "dmareg/cache.h"
#include "dmareg/monitor.h"
#include "dmareg/testing/fake_domain.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dmareg {
namespace {

using ::testing::HasSubstr;

TEST(HooksAbsentTest, MonitoringHooksNeedsTheLibrary) {
  ASSERT_EQ(dlsym(RTLD_DEFAULT, "dmareg_hooks_subscribe"), nullptr)
      << "this binary must not have the hooks library";
  auto cache = RegistrationCache::Create(std::make_shared<testing::FakeDomain>(),
                                         {.monitoring = Monitoring::kHooks});
  ASSERT_FALSE(cache.ok());
  EXPECT_EQ(cache.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(cache.status().message(), HasSubstr("libdmareg_hooks"));
  auto monitor = HooksMonitor::Create({.userfaultfd = HooksUserfaultfd::kNever});
  ASSERT_FALSE(monitor.ok());
  EXPECT_EQ(monitor.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(monitor.status().message(), HasSubstr("libdmareg_hooks"));

  // dlopen'ed, even into the global scope, it comes after libc: its munmap
  // is not the one the program calls.
  void* lib = dlopen(DMAREG_HOOKS_LIBRARY, RTLD_NOW | RTLD_GLOBAL);
  ASSERT_NE(lib, nullptr) << dlerror();
  ASSERT_NE(dlsym(RTLD_DEFAULT, "dmareg_hooks_subscribe"), nullptr);
  monitor = HooksMonitor::Create({.userfaultfd = HooksUserfaultfd::kNever});
  ASSERT_FALSE(monitor.ok());
  EXPECT_EQ(monitor.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(monitor.status().message(), HasSubstr("does not interpose"));
}

}  // namespace
}  // namespace dmareg
