// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "cli/bench.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "dmareg/cache.h"
#include "dmareg/errno_status.h"
#include "nlohmann/json.hpp"

namespace dmareg::cli {
namespace {

constexpr uint64_t kMaxSize = uint64_t{64} << 30;

using Clock = std::chrono::steady_clock;

double Micros(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// An anonymous mapping, touched, unmapped when it goes.
class Buffer {
 public:
  static absl::StatusOr<Buffer> Map(size_t length) {
    void* p = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      return ErrnoStatus(errno, "mmap", absl::StrCat(length, " bytes for the bench"));
    }
    std::memset(p, 0x5a, length);
    return Buffer(p, length);
  }
  Buffer(Buffer&& o) noexcept
      : addr_(std::exchange(o.addr_, nullptr)), length_(std::exchange(o.length_, 0)) {}
  Buffer& operator=(Buffer&&) = delete;
  ~Buffer() {
    if (addr_ != nullptr) munmap(addr_, length_);
  }
  void* addr() const { return addr_; }

 private:
  Buffer(void* addr, size_t length) : addr_(addr), length_(length) {}
  void* addr_;
  size_t length_;
};

}  // namespace

absl::StatusOr<std::vector<uint64_t>> ParseSizes(absl::string_view text) {
  std::vector<uint64_t> sizes;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    item = absl::StripAsciiWhitespace(item);
    uint64_t unit = 1;
    absl::string_view digits = item;
    if (!item.empty()) {
      switch (absl::ascii_toupper(static_cast<unsigned char>(item.back()))) {
        case 'K':
          unit = uint64_t{1} << 10;
          break;
        case 'M':
          unit = uint64_t{1} << 20;
          break;
        case 'G':
          unit = uint64_t{1} << 30;
          break;
        default:
          break;
      }
      if (unit != 1) digits.remove_suffix(1);
    }
    uint64_t n = 0;
    if (!absl::SimpleAtoi(digits, &n) || n == 0 || n > kMaxSize / unit) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bad size '", item, "' in '", text, "': want a count of bytes with K, M or G, 1..64G"));
    }
    sizes.push_back(n * unit);
  }
  return sizes;
}

std::string SizeText(uint64_t size) {
  for (const auto& [shift, suffix] : {std::pair{30, "G"}, std::pair{20, "M"}, std::pair{10, "K"}}) {
    if (size >= (uint64_t{1} << shift) && size % (uint64_t{1} << shift) == 0) {
      return absl::StrCat(size >> shift, suffix);
    }
  }
  return absl::StrCat(size);
}

absl::StatusOr<BenchReport> RunRegistrationBench(std::shared_ptr<Domain> domain,
                                                 const std::vector<uint64_t>& sizes,
                                                 int iterations) {
  if (domain == nullptr) return absl::InvalidArgumentError("bench: null domain");
  if (iterations < 1) {
    return absl::InvalidArgumentError(absl::StrCat("bench: iterations ", iterations, " < 1"));
  }
  if (sizes.empty()) return absl::InvalidArgumentError("bench: no sizes");
  BenchReport report;
  report.device = domain->name();
  report.iterations = iterations;
  const uint64_t largest = *std::max_element(sizes.begin(), sizes.end());
  absl::StatusOr<Buffer> buffer = Buffer::Map(largest);
  if (!buffer.ok()) return buffer.status();
  // Invalidated explicitly below: no userfaultfd needed.
  absl::StatusOr<std::unique_ptr<RegistrationCache>> cache =
      RegistrationCache::Create(domain, {.monitoring = Monitoring::kExplicitOnly});
  if (!cache.ok()) return cache.status();
  const Access access = Access::kRemoteWrite;

  for (const uint64_t size : sizes) {
    const HostMemory memory{buffer->addr(), size};
    std::vector<double> reg, dereg, miss, hit;
    for (int i = 0; i < iterations; ++i) {
      Clock::time_point t0 = Clock::now();
      absl::StatusOr<DeviceMapping> m = domain->RegisterHost(memory, access);
      Clock::time_point t1 = Clock::now();
      if (!m.ok()) return m.status();
      reg.push_back(Micros(t1 - t0));
      t0 = Clock::now();
      absl::Status s = domain->Deregister(*m);
      t1 = Clock::now();
      if (!s.ok()) return s;
      dereg.push_back(Micros(t1 - t0));

      t0 = Clock::now();
      absl::StatusOr<Registration> r = (*cache)->Acquire(memory, access);
      if (r.ok()) r->Reset();
      t1 = Clock::now();
      if (!r.ok()) return r.status();
      miss.push_back(Micros(t1 - t0));
      t0 = Clock::now();
      r = (*cache)->Acquire(memory, access);
      if (r.ok()) r->Reset();
      t1 = Clock::now();
      if (!r.ok()) return r.status();
      hit.push_back(Micros(t1 - t0));
      // Deregisters it (unreferenced), so the next miss is a miss.
      if (absl::Status inv = (*cache)->Invalidate(memory.addr, size); !inv.ok()) return inv;
    }
    report.rows.push_back({size, Median(reg), Median(dereg), Median(miss), Median(hit)});
  }

  // Least squares over (MiB, register_us).
  if (report.rows.size() >= 2) {
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    const double n = static_cast<double>(report.rows.size());
    for (const BenchRow& r : report.rows) {
      const double x = static_cast<double>(r.size) / (1 << 20);
      sx += x;
      sy += r.register_us;
      sxx += x * x;
      sxy += x * r.register_us;
    }
    const double det = n * sxx - sx * sx;
    if (det > 0) {
      report.fitted = true;
      report.per_mib_us = (n * sxy - sx * sy) / det;
      report.overhead_us = (sy - report.per_mib_us * sx) / n;
    }
  }
  return report;
}

std::string RenderBenchText(const BenchReport& report) {
  std::string out = absl::StrFormat(
      "registration cost on %s (median of %d, microseconds)\n"
      "%8s %12s %12s %12s %10s\n",
      report.device, report.iterations, "size", "register", "deregister", "miss", "hit");
  for (const BenchRow& r : report.rows) {
    absl::StrAppendFormat(&out, "%8s %12.2f %12.2f %12.2f %10.3f\n", SizeText(r.size),
                          r.register_us, r.deregister_us, r.miss_us, r.hit_us);
  }
  absl::StrAppend(&out,
                  "miss: Acquire through a RegistrationCache that does not hold the span "
                  "(registers it);\nhit: Acquire of a span it holds.\n");
  if (report.fitted) {
    absl::StrAppendFormat(&out, "register cost: overhead %.2f us + %.2f us/MiB\n",
                          report.overhead_us, report.per_mib_us);
  }
  return out;
}

std::string RenderBenchJson(const BenchReport& report) {
  using Json = nlohmann::ordered_json;
  Json rows = Json::array();
  for (const BenchRow& r : report.rows) {
    rows.push_back({{"size", r.size},
                    {"register_us", r.register_us},
                    {"deregister_us", r.deregister_us},
                    {"miss_us", r.miss_us},
                    {"hit_us", r.hit_us}});
  }
  Json out = {{"schema_version", 2},
              {"device", report.device},
              {"iterations", report.iterations},
              {"rows", std::move(rows)}};
  out["fit"] = report.fitted
                   ? Json{{"overhead_us", report.overhead_us}, {"per_mib_us", report.per_mib_us}}
                   : Json(nullptr);
  return out.dump() + "\n";
}

}  // namespace dmareg::cli
