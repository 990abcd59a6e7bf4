// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The `dmareg` command (man dmareg(1)).
//
//   dmareg devices [--json] [-d NAME]   RDMA devices (node GUID, netdevs,
//                                       probed capabilities, ports), vfio-pci
//                                       devices, dma-buf sources
//   dmareg bench [-d NAME] [--sizes=4K,64K,1M,16M] [--iterations=N] [--json]
//   dmareg config [--table=text|markdown|man]   the DMAREG_* variables
//   dmareg config --effective           their values now, and where each came from
//   dmareg help | --help | --version
//
// Flags are Abseil flags. PrepareArgs (args.h) runs first: it finds the
// command, turns `-d NAME` into `--device=NAME` and rejects what the command
// does not take, so every usage error exits 2; absl::ParseCommandLine then
// sets the values. Exit status: 0 done, 1 failed (no such device, no device
// to bench, listing failed, output not written), 2 usage error.

#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "cli/args.h"
#include "cli/bench.h"
#include "cli/config_effective.h"
#include "cli/config_table.h"
#include "cli/devices.h"
#include "cli/output.h"
#include "dmareg/version.h"

ABSL_FLAG(bool, json, false, "print JSON (schema in dmareg(1)) instead of text");
ABSL_FLAG(std::string, device, "", "only this RDMA device (devices), or the one to bench");
ABSL_FLAG(std::string, sizes, "4K,64K,1M,16M", "bench: buffer sizes, K/M/G = KiB/MiB/GiB");
ABSL_FLAG(int32_t, iterations, 5, "bench: measurements per size (the median is printed)");
ABSL_FLAG(bool, effective, false,
          "config: the values a cache created now would use, and where each came from");
ABSL_FLAG(std::string, table, "text",
          "config: text, markdown (the docs' table) or man (dmareg(7)'s)");

namespace {

constexpr char kUsage[] =
    "usage: dmareg <command> [options]\n"
    "\n"
    "commands:\n"
    "  devices [--json] [-d NAME | --device=NAME]\n"
    "      RDMA devices (node GUID, netdevs, capabilities probed by opening each:\n"
    "      dma-buf MRs, on-demand paging, MR limits, ports, GIDs); PCI devices\n"
    "      bound to vfio-pci (IOMMU group; IOMMU type, IOVA ranges, dma_avail and\n"
    "      page sizes from opening them into one container); which RDMA devices\n"
    "      import dma-bufs and what makes them here (DRM, udmabuf, heaps, CUDA).\n"
    "      -d: that RDMA device only (exit 1 if it is not there).\n"
    "  bench [-d NAME] [--sizes=4K,64K,1M,16M] [--iterations=5] [--json]\n"
    "      registration cost by size: register, deregister, cache miss, cache hit\n"
    "      (median microseconds) on the device (default: the first).\n"
    "  config [--table=text|markdown|man]\n"
    "      the DMAREG_* environment variables the library reads: values, default,\n"
    "      what each sets; markdown and man print the tables of the documentation.\n"
    "  config --effective\n"
    "      each variable's value now and where it came from (environment or\n"
    "      default), a bad value as the error a cache's Create would return,\n"
    "      DMAREG_ variables no library reads, the monitor a default cache gets,\n"
    "      and the memlock limit (exit 1 if the environment is refused).\n"
    "  help, --help      this text\n"
    "  --version         the version\n"
    "\n"
    "Exit status: 0 done (also when there are no devices to list), 1 failed,\n"
    "2 usage error. See dmareg(1).\n";

// Writes `text` to stdout; a failed write is the command's failure.
int Emit(const std::string& text) {
  if (absl::Status s = dmareg::cli::WriteAll(stdout, text, "standard output"); !s.ok()) {
    std::fprintf(stderr, "dmareg: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}

int Fail(const std::string& command, const absl::Status& status) {
  std::fprintf(stderr, "dmareg %s: %s\n", command.c_str(), std::string(status.message()).c_str());
  return 1;
}

int Devices() {
  dmareg::cli::DevicesReport report;
  report.memlock = dmareg::ReadMemlockLimit();
  const std::string only = absl::GetFlag(FLAGS_device);
  if (absl::Status s = dmareg::cli::CollectRdma("/sys", only, report); !s.ok()) {
    return Fail("devices", s);
  }
  if (only.empty()) {
    report.vfio = dmareg::cli::ScanVfioDevices();
    dmareg::cli::ProbeVfioDevices(report.vfio);
    report.dmabuf = dmareg::cli::CollectDmaBufSources();
  } else {
    report.vfio_collected = false;
  }
  const int rc = Emit(absl::GetFlag(FLAGS_json) ? dmareg::cli::RenderJson(report)
                                                : dmareg::cli::RenderText(report));
  if (rc != 0) return rc;
  // The listing itself failed (not "no devices"): said in the output, and a failure.
  return report.rdma_listing.status == dmareg::cli::RdmaStatus::kError ? 1 : 0;
}

int Config() {
  if (absl::GetFlag(FLAGS_effective)) {
    const dmareg::cli::EffectiveConfig config = dmareg::cli::CollectEffectiveConfig();
    const int rc = Emit(dmareg::cli::RenderEffectiveConfig(config));
    return rc != 0 ? rc : config.environment.ok() ? 0 : 1;
  }
  absl::StatusOr<dmareg::cli::TableFormat> format =
      dmareg::cli::ParseTableFormat(absl::GetFlag(FLAGS_table));
  if (!format.ok()) {
    std::fprintf(stderr, "dmareg config: %s\n%s", std::string(format.status().message()).c_str(),
                 kUsage);
    return 2;
  }
  return Emit(dmareg::cli::RenderEnvironmentTable(*format));
}

int Bench() {
  absl::StatusOr<std::vector<uint64_t>> sizes = dmareg::cli::ParseSizes(absl::GetFlag(FLAGS_sizes));
  if (!sizes.ok()) {
    std::fprintf(stderr, "dmareg bench: %s\n%s", std::string(sizes.status().message()).c_str(),
                 kUsage);
    return 2;
  }
  const int iterations = absl::GetFlag(FLAGS_iterations);
  if (iterations < 1 || iterations > 1000) {
    std::fprintf(stderr, "dmareg bench: --iterations=%d: want 1..1000\n%s", iterations, kUsage);
    return 2;
  }
  // NotFound names the devices present, or says there is no kernel support.
  absl::StatusOr<std::shared_ptr<dmareg::VerbsDomain>> domain =
      dmareg::VerbsDomain::Open(absl::GetFlag(FLAGS_device));
  if (!domain.ok()) return Fail("bench", domain.status());
  absl::StatusOr<dmareg::cli::BenchReport> report =
      dmareg::cli::RunRegistrationBench(*domain, *sizes, iterations);
  if (!report.ok()) return Fail("bench", report.status());
  return Emit(absl::GetFlag(FLAGS_json) ? dmareg::cli::RenderBenchJson(*report)
                                        : dmareg::cli::RenderBenchText(*report));
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  absl::FlagsUsageConfig config;
  // The library's version: the one this command runs with.
  config.version_string = [] { return "dmareg " + std::string(dmareg::Version()) + "\n"; };
  absl::SetFlagsUsageConfig(config);

  const std::vector<std::string> args(argv + 1, argv + argc);
  absl::StatusOr<dmareg::cli::PreparedArgs> prepared =
      dmareg::cli::PrepareArgs(argc > 0 ? argv[0] : "dmareg", args, dmareg::cli::DmaregCommands());
  if (!prepared.ok()) {
    std::fprintf(stderr, "dmareg: %s\n%s", std::string(prepared.status().message()).c_str(),
                 kUsage);
    return 2;
  }
  // A bad value (--iterations=x) is a usage error too: absl's own parser
  // checks it here, where absl::ParseCommandLine would exit 1.
  for (size_t i = 1; i < prepared->argv.size(); ++i) {
    const std::string& a = prepared->argv[i];
    const size_t eq = a.find('=');
    if (eq == std::string::npos) continue;  // --json, --nojson
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(a.substr(2, eq - 2));
    std::string error;
    if (flag == nullptr || !flag->ParseFrom(a.substr(eq + 1), &error)) {
      std::fprintf(stderr, "dmareg: %s\n%s", error.c_str(), kUsage);
      return 2;
    }
  }
  std::vector<char*> absl_argv;
  for (std::string& a : prepared->argv) absl_argv.push_back(a.data());
  absl::ParseCommandLine(static_cast<int>(absl_argv.size()), absl_argv.data());

  const std::string& command = prepared->command;
  if (command == "help") return Emit(kUsage);
  if (command == "version") return Emit(config.version_string());
  if (command == "devices") return Devices();
  if (command == "config") return Config();
  return Bench();
}
