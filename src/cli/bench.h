// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// `dmareg bench`: what a registration costs on a device by size, the way
// `ucx_info` reports a register cost. For each size, `iterations` times:
//
//   register    Domain::RegisterHost of the buffer, no cache
//   deregister  Domain::Deregister of that mapping
//   miss        RegistrationCache::Acquire of an uncached span (the cache's
//               lookup and insert plus the registration), then its Release
//   hit         Acquire of the span the cache already holds, then Release
//
// medians reported in microseconds, with a least-squares fit of register
// cost = overhead + per-MiB cost over the sizes. The buffer is touched
// before timing, so page faults are not counted.
//
//   auto domain = dmareg::VerbsDomain::Open("rxe0").value();
//   absl::StatusOr<BenchReport> r = RunRegistrationBench(domain, {4096, 1 << 20}, 5);
//   std::cout << RenderBenchText(*r);

#ifndef DMAREG_SRC_CLI_BENCH_H_
#define DMAREG_SRC_CLI_BENCH_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "dmareg/domain.h"

namespace dmareg::cli {

struct BenchRow {
  uint64_t size = 0;  // bytes
  double register_us = 0;
  double deregister_us = 0;
  double miss_us = 0;
  double hit_us = 0;
};

struct BenchReport {
  std::string device;
  int iterations = 0;
  std::vector<BenchRow> rows;
  // register_us ~= overhead_us + per_mib_us * size / 2^20; set with 2+ sizes.
  bool fitted = false;
  double overhead_us = 0;
  double per_mib_us = 0;
};

// "4K,64K,1M,16M" (K, M, G: powers of 1024; plain numbers are bytes) in
// the order given. InvalidArgument naming the bad item; sizes are > 0 and
// at most 64G.
absl::StatusOr<std::vector<uint64_t>> ParseSizes(absl::string_view text);

// "4K", "16M", "1000": the shortest exact form.
std::string SizeText(uint64_t size);

// Runs the measurement above on `domain`; the first failing call's status
// is returned (nothing stays registered either way). iterations >= 1.
absl::StatusOr<BenchReport> RunRegistrationBench(std::shared_ptr<Domain> domain,
                                                 const std::vector<uint64_t>& sizes,
                                                 int iterations);

std::string RenderBenchText(const BenchReport& report);
// {"schema_version": 2, "device": ..., "iterations": ..., "unit": "us",
//  "rows": [{"size": 4096, "register_us": ...}, ...], "fit": {...}}; sizes are
// numbers of bytes (ParseSizes bounds them far below 2^53).
std::string RenderBenchJson(const BenchReport& report);

}  // namespace dmareg::cli

#endif  // DMAREG_SRC_CLI_BENCH_H_
