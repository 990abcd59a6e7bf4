// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The built `dmareg` binary: exit status (0 done, 1 failed, 2 usage), usage
// on stderr, --version, JSON that parses, and a failed write to stdout
// (/dev/full) is a failure. Holds on any machine: device names used here
// do not exist, and the JSON checks accept every RDMA status.

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "cli/output.h"
#include "dmareg/version.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace dmareg::cli {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

struct CliRun {
  int status = -1;
  std::string out;
  std::string err;
};

std::string Slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs the binary with `args` (shell words); stdout to `stdout_path` when
// given, else captured.
CliRun Dmareg(const std::string& args, const std::string& stdout_path = "") {
  char tmpl[] = "/tmp/dmareg-cli-XXXXXX";
  const fs::path dir = mkdtemp(tmpl);
  const std::string out = stdout_path.empty() ? (dir / "out").string() : stdout_path;
  const std::string cmd =
      std::string(DMAREG_CLI_PATH) + " " + args + " >" + out + " 2>" + (dir / "err").string();
  const int raw = std::system(cmd.c_str());
  CliRun r;
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  if (stdout_path.empty()) r.out = Slurp(dir / "out");
  r.err = Slurp(dir / "err");
  fs::remove_all(dir);
  return r;
}

TEST(DmaregCommandTest, Version) {
  const CliRun r = Dmareg("--version");
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.out, std::string("dmareg ") + DMAREG_VERSION_STRING + "\n");
}

TEST(DmaregCommandTest, UsageErrorsExitTwoWithUsageOnStderr) {
  for (const char* args :
       {"", "frob", "--bogus", "devices --bogus", "devices -x", "devices --sizes=4K",
        "bench --iterations=x", "bench --sizes=3Q", "devices --json=maybe", "config --table=xml",
        "config --json", "devices --table=man", "devices --effective"}) {
    const CliRun r = Dmareg(args);
    EXPECT_EQ(r.status, 2) << args;
    EXPECT_EQ(r.out, "") << args;
    EXPECT_THAT(r.err, HasSubstr("usage: dmareg <command>")) << args;
  }
  const CliRun help = Dmareg("help");
  EXPECT_EQ(help.status, 0);
  EXPECT_THAT(help.out, StartsWith("usage: dmareg <command>"));
}

TEST(DmaregCommandTest, ConfigPrintsTheEnvironmentTable) {
  CliRun r = Dmareg("config");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_THAT(r.out, AllOf(StartsWith("DMAREG_MAX_REGIONS\n"), HasSubstr("DMAREG_LOG_LEVEL\n")));
  r = Dmareg("config --table=man");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_THAT(r.out, AllOf(StartsWith(".TS\n"), HasSubstr("DMAREG_PAGING\tT{\n")));
  r = Dmareg("config --table markdown");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_THAT(r.out, AllOf(StartsWith("| Variable |"), HasSubstr("| `DMAREG_PAGING` |")));
}

// Each variable's value and where it came from; a typo named; a bad value
// is the error Create would return, and exit 1.
TEST(DmaregCommandTest, ConfigEffectiveSaysWhereEachValueCameFrom) {
  setenv("DMAREG_MAX_REGIONS", "4096", 1);
  setenv("DMAREG_MAX_REGION", "1", 1);
  CliRun r = Dmareg("config --effective");
  unsetenv("DMAREG_MAX_REGION");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::ContainsRegex("\nDMAREG_PAGING +pinned  \\(default\\)\n"));
  EXPECT_THAT(r.out,
              ::testing::ContainsRegex("(^|\n)DMAREG_MAX_REGIONS +4096  \\(environment\\)\n"));
  EXPECT_THAT(r.out, HasSubstr("unknown: DMAREG_MAX_REGION is read by no dmareg library (did you "
                               "mean DMAREG_MAX_REGIONS?)\n"));
  EXPECT_THAT(r.out, HasSubstr("\nmonitor: a cache with default options in this command gets "));
  EXPECT_THAT(r.out, HasSubstr("\nmemlock: RLIMIT_MEMLOCK "));
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("REFUSED")));

  setenv("DMAREG_PAGING", "sideways", 1);
  r = Dmareg("config --effective");
  unsetenv("DMAREG_PAGING");
  unsetenv("DMAREG_MAX_REGIONS");
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.out, AllOf(HasSubstr("DMAREG_PAGING"), HasSubstr("sideways  (environment)"),
                           HasSubstr("environment: REFUSED: "), HasSubstr("sideways")));
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("\nmonitor: ")));
}

TEST(DmaregCommandTest, UnknownDeviceExitsOne) {
  CliRun r = Dmareg("devices -d no-such-rdma-device");
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_THAT(r.err, HasSubstr("no RDMA device 'no-such-rdma-device'"));
  r = Dmareg("bench --device=no-such-rdma-device");
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.err, HasSubstr("dmareg bench: "));
  EXPECT_THAT(r.err, HasSubstr("no-such-rdma-device"));
}

TEST(DmaregCommandTest, JsonParsesWithSchemaAndStatus) {
  const CliRun r = Dmareg("devices --json");
  ASSERT_EQ(r.status, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["schema_version"], 2);
  const std::string status = j["rdma"]["status"];
  EXPECT_THAT(status, ::testing::AnyOf("ok", "no-devices", "no-kernel-support"));
  EXPECT_EQ(status == "ok", !j["rdma"]["devices"].empty());
  EXPECT_EQ(status == "ok", j["rdma"]["reason"] == "");
}

TEST(DmaregCommandTest, FailedWriteToStdoutIsAFailure) {
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  for (const char* args : {"devices", "devices --json", "help", "--version", "config"}) {
    const CliRun r = Dmareg(args, "/dev/full");
    EXPECT_EQ(r.status, 1) << args;
    EXPECT_THAT(r.err, HasSubstr("standard output: No space left on device")) << args;
  }
}

TEST(WriteAllTest, ReportsTheErrno) {
  std::FILE* full = std::fopen("/dev/full", "w");
  if (full == nullptr) GTEST_SKIP() << "no /dev/full";
  const absl::Status s = WriteAll(full, "x", "/dev/full");
  std::fclose(full);
  EXPECT_THAT(s.message(), HasSubstr("/dev/full: No space left on device (ENOSPC)"));
  std::FILE* null = std::fopen("/dev/null", "w");
  ASSERT_NE(null, nullptr);
  EXPECT_TRUE(WriteAll(null, "x", "/dev/null").ok());
  std::fclose(null);
}

}  // namespace
}  // namespace dmareg::cli
