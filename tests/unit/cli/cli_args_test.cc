// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The `dmareg` command line before absl parses it: the command, -d, and
// every usage error (the command then exits 2).

#include <string>
#include <vector>

#include "cli/args.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dmareg::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

absl::StatusOr<PreparedArgs> Prepare(std::vector<std::string> args) {
  return PrepareArgs("dmareg", args, DmaregCommands());
}

TEST(PrepareArgsTest, ShortDeviceOptionBecomesAbslFlag) {
  absl::StatusOr<PreparedArgs> p = Prepare({"devices", "-d", "rxe0", "--json"});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->command, "devices");
  EXPECT_THAT(p->argv, ElementsAre("dmareg", "--device=rxe0", "--json"));
  p = Prepare({"-dmlx5_0", "devices"});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_THAT(p->argv, ElementsAre("dmareg", "--device=mlx5_0"));
  p = Prepare({"devices", "--device", "rxe0", "--nojson"});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_THAT(p->argv, ElementsAre("dmareg", "--device=rxe0", "--nojson"));
  p = Prepare({"bench", "--sizes=4K,1M", "--iterations", "3", "-device=rxe0"});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_THAT(p->argv, ElementsAre("dmareg", "--sizes=4K,1M", "--iterations=3", "--device=rxe0"));
}

TEST(PrepareArgsTest, HelpAndVersion) {
  EXPECT_EQ(Prepare({"help"})->command, "help");
  EXPECT_EQ(Prepare({"--help"})->command, "help");
  EXPECT_EQ(Prepare({"devices", "-h"})->command, "help");
  EXPECT_EQ(Prepare({"--version"})->command, "version");
  EXPECT_THAT(Prepare({"--version"})->argv, ElementsAre("dmareg"));
}

TEST(PrepareArgsTest, UsageErrors) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{}, "no command given"},
      {{"frob"}, "unknown command 'frob'"},
      {{"devices", "--bogus"}, "unknown option '--bogus'"},
      {{"devices", "--bogus=1"}, "unknown option '--bogus=1'"},
      {{"devices", "-x"}, "unknown option '-x'"},
      {{"devices", "-d"}, "option -d needs a device name"},
      {{"devices", "--device"}, "option --device needs a value"},
      {{"devices", "--sizes=4K"}, "devices: unknown option '--sizes'"},
      {{"devices", "extra"}, "devices: unexpected argument 'extra'"},
      {{"version", "--json"}, "version: unknown option '--json'"},
  };
  for (const auto& [args, message] : cases) {
    absl::StatusOr<PreparedArgs> p = Prepare(args);
    ASSERT_FALSE(p.ok()) << message;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(p.status().message(), HasSubstr(message));
  }
}

TEST(PrepareArgsTest, EverythingAfterDashDashIsPositional) {
  absl::StatusOr<PreparedArgs> p = Prepare({"--", "devices"});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->command, "devices");
  EXPECT_FALSE(Prepare({"devices", "--", "--json"}).ok());
}

}  // namespace
}  // namespace dmareg::cli
