// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/memlock.h"

#include <sys/resource.h>

#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace dmareg {
namespace {

// "   2048 kB" (a /proc/self/status value) in bytes.
std::optional<uint64_t> Kilobytes(absl::string_view text) {
  text = absl::StripAsciiWhitespace(text);
  uint64_t kib = 0;
  if (!absl::ConsumeSuffix(&text, "kB") ||
      !absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &kib)) {
    return std::nullopt;
  }
  return kib * 1024;
}

}  // namespace

MemlockLimit ReadMemlockLimit() {
  MemlockLimit m;
  struct rlimit r {};
  if (getrlimit(RLIMIT_MEMLOCK, &r) == 0) {
    if (r.rlim_cur != RLIM_INFINITY) m.soft = r.rlim_cur;
    if (r.rlim_max != RLIM_INFINITY) m.hard = r.rlim_max;
  }
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    absl::string_view rest = line;
    if (absl::ConsumePrefix(&rest, "CapEff:")) {
      uint64_t caps = 0;
      // CAP_IPC_LOCK is capability 14.
      if (absl::SimpleHexAtoi(absl::StripAsciiWhitespace(rest), &caps)) {
        m.cap_ipc_lock = ((caps >> 14) & 1) != 0;
      }
    } else if (absl::ConsumePrefix(&rest, "VmPin:")) {
      m.pinned = Kilobytes(rest);
    } else if (absl::ConsumePrefix(&rest, "VmLck:")) {
      m.locked = Kilobytes(rest);
    }
  }
  return m;
}

std::string BytesText(uint64_t b) {
  constexpr uint64_t kMiB = uint64_t{1} << 20;
  if (b >= kMiB && b % kMiB == 0) return absl::StrCat(b / kMiB, " MiB");
  if (b >= 1024 && b % 1024 == 0) return absl::StrCat(b / 1024, " KiB");
  return absl::StrCat(b, " bytes");
}

std::string MemlockNote(const MemlockLimit& m) {
  auto limit = [](const std::optional<uint64_t>& v) {
    return v ? BytesText(*v) : std::string("unlimited");
  };
  std::string out = (!m.soft && !m.hard) ? std::string("RLIMIT_MEMLOCK unlimited")
                                         : absl::StrCat("RLIMIT_MEMLOCK soft ", limit(m.soft),
                                                        ", hard ", limit(m.hard));
  if (m.cap_ipc_lock) absl::StrAppend(&out, " (CAP_IPC_LOCK: not limited)");
  std::vector<std::string> now;
  if (m.pinned) now.push_back(absl::StrCat(BytesText(*m.pinned), " pinned (VmPin)"));
  if (m.locked) now.push_back(absl::StrCat(BytesText(*m.locked), " locked (VmLck)"));
  if (!now.empty()) absl::StrAppend(&out, "; now ", absl::StrJoin(now, ", "));
  return out;
}

}  // namespace dmareg
