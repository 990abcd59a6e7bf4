// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// `dmareg bench` over a FakeDomain: every size measured, misses register
// and hits do not, nothing left registered, sizes parsed strictly. No
// timing is asserted (only that the table and the JSON carry the rows).

#include <memory>
#include <string>
#include <vector>

#include "cli/bench.h"
#include "dmareg/testing/fake_domain.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace dmareg::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ParseSizesTest, SuffixesAndErrors) {
  EXPECT_THAT(*ParseSizes("4K,64K,1M,16M"),
              ElementsAre(4096, 65536, uint64_t{1} << 20, uint64_t{16} << 20));
  EXPECT_THAT(*ParseSizes(" 1000 , 2g"), ElementsAre(1000, uint64_t{2} << 30));
  for (const char* bad : {"", "4K,", "0", "3Q", "K", "-4K", "65G", "99999999999999999999"}) {
    absl::StatusOr<std::vector<uint64_t>> s = ParseSizes(bad);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_THAT(s.status().message(), HasSubstr("bad size")) << bad;
  }
  EXPECT_EQ(SizeText(4096), "4K");
  EXPECT_EQ(SizeText(uint64_t{16} << 20), "16M");
  EXPECT_EQ(SizeText(1000), "1000");
  EXPECT_EQ(SizeText(uint64_t{3} << 30), "3G");
}

TEST(RegistrationBenchTest, MeasuresEverySizeAndLeavesNothingRegistered) {
  auto fake = std::make_shared<testing::FakeDomain>("fake0");
  absl::StatusOr<BenchReport> r = RunRegistrationBench(fake, {4096, 1 << 20, 8192}, 3);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->device, "fake0");
  EXPECT_EQ(r->iterations, 3);
  ASSERT_EQ(r->rows.size(), 3u);
  EXPECT_EQ(r->rows[0].size, 4096u);
  EXPECT_EQ(r->rows[1].size, uint64_t{1} << 20);
  for (const BenchRow& row : r->rows) {
    EXPECT_GE(row.register_us, 0);
    EXPECT_GE(row.hit_us, 0);
  }
  EXPECT_TRUE(r->fitted);
  // Per size and iteration: one raw registration and one cache miss; the
  // hit registers nothing.
  EXPECT_EQ(fake->total_registrations(), 3 * 3 * 2);
  EXPECT_EQ(fake->total_deregistrations(), 3 * 3 * 2);
  EXPECT_EQ(fake->live_registrations(), 0);

  const std::string text = RenderBenchText(*r);
  EXPECT_THAT(text, HasSubstr("registration cost on fake0 (median of 3, microseconds)"));
  EXPECT_THAT(text, HasSubstr("\n      4K "));
  EXPECT_THAT(text, HasSubstr("\n      1M "));
  EXPECT_THAT(text, HasSubstr("register cost: overhead "));
  const nlohmann::json j = nlohmann::json::parse(RenderBenchJson(*r));
  EXPECT_EQ(j["schema_version"], 2);
  EXPECT_EQ(j["device"], "fake0");
  ASSERT_EQ(j["rows"].size(), 3u);
  EXPECT_EQ(j["rows"][2]["size"], 8192);
  EXPECT_TRUE(j["rows"][0]["miss_us"].is_number());
  EXPECT_TRUE(j["fit"]["per_mib_us"].is_number());
}

TEST(RegistrationBenchTest, AFailedRegistrationIsTheError) {
  auto fake = std::make_shared<testing::FakeDomain>();
  fake->FailNextRegistrations(1, absl::ResourceExhaustedError("ibv_reg_mr_iova2: ENOMEM"));
  absl::StatusOr<BenchReport> r = RunRegistrationBench(fake, {4096}, 2);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(fake->live_registrations(), 0);
  EXPECT_FALSE(RunRegistrationBench(fake, {4096}, 0).ok());
  EXPECT_FALSE(RunRegistrationBench(fake, {}, 1).ok());
  EXPECT_FALSE(RunRegistrationBench(nullptr, {4096}, 1).ok());
  // One size: no fit, and the JSON says so with null.
  r = RunRegistrationBench(fake, {4096}, 1);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->fitted);
  EXPECT_TRUE(nlohmann::json::parse(RenderBenchJson(*r))["fit"].is_null());
}

}  // namespace
}  // namespace dmareg::cli
