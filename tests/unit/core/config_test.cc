// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// DMAREG_* configuration: each variable fills the field left at its
// default, explicit fields win, a bad value fails Create naming the
// variable and the value, use_environment = false ignores it all. The
// variables are set and unset on the test's own thread, with no other
// thread running.

#include "dmareg/config.h"

#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "dmareg/cache.h"
#include "dmareg/errno_status.h"
#include "dmareg/log.h"
#include "dmareg/monitor.h"
#include "dmareg/testing/fake_domain.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dmareg {
namespace {

using ::dmareg::testing::FakeDomain;
using ::testing::AllOf;
using ::testing::HasSubstr;

// Every variable of the library's table.
void UnsetAll() {
  for (const EnvironmentVariable& v : EnvironmentVariables()) unsetenv(std::string(v.name).c_str());
}

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override { UnsetAll(); }
  void TearDown() override {
    UnsetAll();
    ResetLogging();
  }
  static void Set(const char* name, const char* value) { ASSERT_EQ(setenv(name, value, 1), 0); }

  std::shared_ptr<FakeDomain> fake_ = std::make_shared<FakeDomain>("nic7");
};

TEST(ParseByteSizeTest, NumbersAndSuffixes) {
  EXPECT_EQ(*ParseByteSize("0"), 0u);
  EXPECT_EQ(*ParseByteSize("4096"), 4096u);
  EXPECT_EQ(*ParseByteSize("64K"), 64u << 10);
  EXPECT_EQ(*ParseByteSize("64k"), 64u << 10);
  EXPECT_EQ(*ParseByteSize("3M"), 3u << 20);
  EXPECT_EQ(*ParseByteSize("2G"), uint64_t{2} << 30);
  EXPECT_EQ(*ParseByteSize("1T"), uint64_t{1} << 40);
  EXPECT_EQ(*ParseByteSize("18446744073709551615"), UINT64_MAX);
  EXPECT_EQ(*ParseByteSize("16777215T"), uint64_t{16777215} << 40);
}

TEST(ParseByteSizeTest, RejectsAnythingElse) {
  for (const char* bad : {"", "K", "-1", "+1", " 1", "1 ", "1KB", "1.5G", "0x10", "1P", "ten",
                          "18446744073709551616", "16777216T", "99999999999999999999K"}) {
    absl::StatusOr<uint64_t> n = ParseByteSize(bad);
    EXPECT_EQ(n.status().code(), absl::StatusCode::kInvalidArgument) << '"' << bad << '"';
  }
}

TEST_F(ConfigTest, NothingSetChangesNothing) {
  absl::StatusOr<CacheOptions> o = CacheOptionsFromEnvironment({.max_regions = 5});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->max_regions, 5u);
  EXPECT_EQ(o->max_bytes, 0u);
  EXPECT_EQ(o->monitoring, Monitoring::kAutomatic);
  EXPECT_EQ(o->paging, Paging::kPinned);
  EXPECT_EQ(o->dmabuf_policy, DmaBufPolicy::kPreferDmaBuf);
  EXPECT_EQ(o->pfn_check_every, 0u);
}

TEST_F(ConfigTest, EachVariableFillsItsDefaultField) {
  Set("DMAREG_MAX_REGIONS", "4096");
  Set("DMAREG_MAX_BYTES", "1G");
  Set("DMAREG_MONITOR", "hooks");
  Set("DMAREG_PAGING", "automatic");
  Set("DMAREG_DMABUF_POLICY", "alias-only");
  Set("DMAREG_PFN_CHECK_EVERY", "100");
  absl::StatusOr<CacheOptions> o = CacheOptionsFromEnvironment({});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->max_regions, 4096u);
  EXPECT_EQ(o->max_bytes, size_t{1} << 30);
  EXPECT_EQ(o->monitoring, Monitoring::kHooks);
  EXPECT_EQ(o->paging, Paging::kAutomatic);
  EXPECT_EQ(o->dmabuf_policy, DmaBufPolicy::kAliasOnly);
  EXPECT_EQ(o->pfn_check_every, 100u);

  Set("DMAREG_MONITOR", "explicit");
  Set("DMAREG_PAGING", "on-demand");
  Set("DMAREG_DMABUF_POLICY", "dmabuf-only");
  o = CacheOptionsFromEnvironment({});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->monitoring, Monitoring::kExplicitOnly);
  EXPECT_EQ(o->paging, Paging::kOnDemand);
  EXPECT_EQ(o->dmabuf_policy, DmaBufPolicy::kDmaBufOnly);

  Set("DMAREG_MONITOR", "userfaultfd");
  o = CacheOptionsFromEnvironment({});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->monitoring, Monitoring::kUserfaultfd);
}

TEST_F(ConfigTest, ExplicitFieldsWin) {
  Set("DMAREG_MAX_REGIONS", "4096");
  Set("DMAREG_MAX_BYTES", "1G");
  Set("DMAREG_MONITOR", "hooks");
  Set("DMAREG_PAGING", "automatic");
  Set("DMAREG_DMABUF_POLICY", "alias-only");
  Set("DMAREG_PFN_CHECK_EVERY", "100");
  absl::StatusOr<CacheOptions> o = CacheOptionsFromEnvironment({
      .max_regions = 8,
      .max_bytes = 1 << 20,
      .monitoring = Monitoring::kExplicitOnly,
      .dmabuf_policy = DmaBufPolicy::kDmaBufOnly,
      .paging = Paging::kOnDemand,
      .pfn_check_every = 7,
  });
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->max_regions, 8u);
  EXPECT_EQ(o->max_bytes, size_t{1} << 20);
  EXPECT_EQ(o->monitoring, Monitoring::kExplicitOnly);
  EXPECT_EQ(o->paging, Paging::kOnDemand);
  EXPECT_EQ(o->dmabuf_policy, DmaBufPolicy::kDmaBufOnly);
  EXPECT_EQ(o->pfn_check_every, 7u);
}

TEST_F(ConfigTest, AGivenMonitorWinsOverDmaregMonitor) {
  Set("DMAREG_MONITOR", "hooks");
  std::shared_ptr<ExplicitMonitor> monitor = ExplicitMonitor::Create();
  absl::StatusOr<CacheOptions> o = CacheOptionsFromEnvironment({.monitor = monitor});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->monitoring, Monitoring::kAutomatic);
  EXPECT_EQ(o->monitor, monitor);
}

TEST_F(ConfigTest, AnEmptyVariableIsUnset) {
  Set("DMAREG_MAX_BYTES", "");
  Set("DMAREG_PAGING", "");
  absl::StatusOr<CacheOptions> o = CacheOptionsFromEnvironment({});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->max_bytes, 0u);
  EXPECT_EQ(o->paging, Paging::kPinned);
}

TEST_F(ConfigTest, BadValuesFailCreateNamingVariableAndValue) {
  struct Case {
    const char* name;
    const char* value;
  };
  const std::vector<Case> cases = {
      {"DMAREG_MAX_REGIONS", "lots"},
      {"DMAREG_MAX_REGIONS", "1K"},
      {"DMAREG_MAX_REGIONS", "-1"},
      {"DMAREG_MAX_REGIONS", "18446744073709551616"},
      {"DMAREG_MAX_BYTES", "12X"},
      {"DMAREG_MAX_BYTES", "16777216T"},
      {"DMAREG_MONITOR", "uffd"},
      {"DMAREG_MONITOR", "Hooks"},
      {"DMAREG_PAGING", "odp"},
      {"DMAREG_DMABUF_POLICY", "prefer"},
      {"DMAREG_PFN_CHECK_EVERY", "4294967296"},
      {"DMAREG_PFN_CHECK_EVERY", "1e3"},
      {"DMAREG_LOG_LEVEL", "verbose"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.name) + "=" + c.value);
    Set(c.name, c.value);
    // Even where an explicit field would win: a typo is never ignored.
    auto cache = RegistrationCache::Create(
        fake_, {.max_regions = 1, .max_bytes = 1, .monitoring = Monitoring::kExplicitOnly});
    EXPECT_EQ(cache.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(cache.status().message(),
                AllOf(HasSubstr(c.name), HasSubstr(std::string("\"") + c.value + "\"")));
    EXPECT_FALSE(CacheOptionsFromEnvironment({}).ok());
    unsetenv(c.name);
  }
  EXPECT_EQ(fake_->total_registrations(), 0);
}

TEST_F(ConfigTest, BadWordsListTheAcceptedOnes) {
  const struct {
    const char* name;
    const char* accepted;
  } cases[] = {
      {"DMAREG_MONITOR", "one of automatic, hooks, userfaultfd, explicit"},
      {"DMAREG_PAGING", "one of pinned, on-demand, automatic"},
      {"DMAREG_DMABUF_POLICY", "one of prefer-dmabuf, dmabuf-only, alias-only"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    Set(c.name, "none-of-these");
    absl::StatusOr<CacheOptions> o = CacheOptionsFromEnvironment({});
    EXPECT_EQ(o.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(o.status().message(), HasSubstr(c.accepted));
    unsetenv(c.name);
  }
}

TEST_F(ConfigTest, TheTableListsWhatTheParserReads) {
  std::vector<std::string> names;
  for (const EnvironmentVariable& v : EnvironmentVariables()) names.emplace_back(v.name);
  EXPECT_THAT(names, ::testing::IsSupersetOf({"DMAREG_MAX_REGIONS", "DMAREG_MAX_BYTES",
                                              "DMAREG_MONITOR", "DMAREG_PAGING",
                                              "DMAREG_DMABUF_POLICY", "DMAREG_PFN_CHECK_EVERY",
                                              "DMAREG_LOG_LEVEL", "DMAREG_LIBCUDA"}));
  for (const EnvironmentVariable& v : EnvironmentVariables()) {
    const std::string name(v.name);
    SCOPED_TRACE(name);
    if (name == "DMAREG_LIBCUDA") continue;  // CudaDriver::Load's, not the cache's
    // The table's default is accepted, and so is each of its words.
    Set(name.c_str(), std::string(v.default_value).c_str());
    EXPECT_TRUE(CacheOptionsFromEnvironment({}).ok()) << CacheOptionsFromEnvironment({}).status();
    for (std::string_view word : v.words) {
      Set(name.c_str(), std::string(word).c_str());
      EXPECT_TRUE(CacheOptionsFromEnvironment({}).ok()) << word;
    }
    // Anything else is refused with what the table says it accepts.
    Set(name.c_str(), "not-a-value");
    absl::StatusOr<CacheOptions> o = CacheOptionsFromEnvironment({});
    EXPECT_EQ(o.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(o.status().message(),
                AllOf(HasSubstr(name + "=\"not-a-value\""), HasSubstr(std::string(v.values))));
    unsetenv(name.c_str());
  }
}

TEST_F(ConfigTest, UseEnvironmentFalseIgnoresIt) {
  Set("DMAREG_MAX_REGIONS", "lots");
  Set("DMAREG_LOG_LEVEL", "debug");
  auto cache = RegistrationCache::Create(
      fake_, {.monitoring = Monitoring::kExplicitOnly, .use_environment = false});
  ASSERT_TRUE(cache.ok()) << cache.status();
  EXPECT_EQ((*cache)->limits().max_regions, 0u);
  EXPECT_EQ(GetLogLevel(), LogLevel::kWarn);
}

TEST_F(ConfigTest, CreateAppliesTheLimits) {
  Set("DMAREG_MAX_REGIONS", "2");
  Set("DMAREG_MONITOR", "explicit");  // no userfaultfd needed
  auto cache = RegistrationCache::Create(fake_);
  ASSERT_TRUE(cache.ok()) << cache.status();
  EXPECT_EQ((*cache)->limits().max_regions, 2u);
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  char* base = static_cast<char*>(
      mmap(nullptr, 8 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(base, MAP_FAILED);
  for (size_t i = 0; i < 4; ++i) {
    // Every other page: no two requests merge.
    ASSERT_TRUE((*cache)->Acquire(HostMemory{base + 2 * i * page, page}, {}).ok());
  }
  EXPECT_EQ((*cache)->stats().live_regions, 2u);
  EXPECT_EQ((*cache)->stats().evictions, 2u);
  cache->reset();
  EXPECT_EQ(fake_->live_registrations(), 0);
  munmap(base, 8 * page);
}

TEST_F(ConfigTest, ErrorsAboutAFieldSayItCameFromTheEnvironment) {
  Set("DMAREG_PAGING", "on-demand");  // the fake has no ODP
  auto cache = RegistrationCache::Create(fake_);
  EXPECT_EQ(cache.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(cache.status().message(),
              AllOf(HasSubstr("nic7"), HasSubstr("DMAREG_PAGING=on-demand")));
  // An explicit value wins: pinned over the fake is fine.
  Set("DMAREG_MONITOR", "explicit");
  EXPECT_TRUE(RegistrationCache::Create(fake_, {.paging = Paging::kAutomatic}).ok());
}

// A typo is named with the variable it resembles; a script's own DMAREG_
// variable is listed with no suggestion; the library's own are not listed.
TEST_F(ConfigTest, UnknownVariablesAreNamedWithTheirLikelyMeaning) {
  Set("DMAREG_MAX_REGION", "4");
  Set("DMAREG_MONTIOR", "hooks");
  Set("DMAREG_SOMETHING_ELSE_ENTIRELY", "1");
  Set("DMAREG_PAGING", "pinned");
  std::vector<UnknownVariable> unknown = UnknownEnvironmentVariables();
  unsetenv("DMAREG_MAX_REGION");
  unsetenv("DMAREG_MONTIOR");
  unsetenv("DMAREG_SOMETHING_ELSE_ENTIRELY");
  auto find = [&](const std::string& name) -> const UnknownVariable* {
    for (const UnknownVariable& v : unknown) {
      if (v.name == name) return &v;
    }
    return nullptr;
  };
  ASSERT_NE(find("DMAREG_MAX_REGION"), nullptr);
  EXPECT_EQ(find("DMAREG_MAX_REGION")->suggestion, "DMAREG_MAX_REGIONS");
  ASSERT_NE(find("DMAREG_MONTIOR"), nullptr);
  EXPECT_EQ(find("DMAREG_MONTIOR")->suggestion, "DMAREG_MONITOR");  // a swap is one edit
  ASSERT_NE(find("DMAREG_SOMETHING_ELSE_ENTIRELY"), nullptr);
  EXPECT_EQ(find("DMAREG_SOMETHING_ELSE_ENTIRELY")->suggestion, "");
  EXPECT_EQ(find("DMAREG_PAGING"), nullptr);
}

TEST_F(ConfigTest, LogLevelIsReadAtCreate) {
  EXPECT_EQ(GetLogLevel(), LogLevel::kWarn);
  Set("DMAREG_LOG_LEVEL", "debug");
  EXPECT_EQ(GetLogLevel(), LogLevel::kWarn);  // not before Create
  ASSERT_TRUE(RegistrationCache::Create(fake_, {.monitoring = Monitoring::kExplicitOnly}).ok());
  EXPECT_EQ(GetLogLevel(), LogLevel::kDebug);
  // SetLogLevel wins over the environment, at this Create and later ones.
  SetLogLevel(LogLevel::kError);
  ASSERT_TRUE(RegistrationCache::Create(fake_, {.monitoring = Monitoring::kExplicitOnly}).ok());
  EXPECT_EQ(GetLogLevel(), LogLevel::kError);
  // Unset again: the next Create forgets it.
  ResetLogging();
  ASSERT_TRUE(RegistrationCache::Create(fake_, {.monitoring = Monitoring::kExplicitOnly}).ok());
  EXPECT_EQ(GetLogLevel(), LogLevel::kDebug);
  unsetenv("DMAREG_LOG_LEVEL");
  ASSERT_TRUE(RegistrationCache::Create(fake_, {.monitoring = Monitoring::kExplicitOnly}).ok());
  EXPECT_EQ(GetLogLevel(), LogLevel::kWarn);
}

}  // namespace
}  // namespace dmareg
