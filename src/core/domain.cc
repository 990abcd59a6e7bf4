// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/domain.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "dmareg/errno_status.h"
#include "monitor/vma.h"

namespace dmareg {

std::string_view DeviceKindName(DeviceKind kind) {
  switch (kind) {
    case DeviceKind::kRdma:
      return "rdma";
    case DeviceKind::kVfio:
      return "vfio";
    case DeviceKind::kFake:
      break;
  }
  return "fake";
}

const char* PagingName(Paging paging) {
  switch (paging) {
    case Paging::kPinned:
      return "pinned";
    case Paging::kOnDemand:
      return "on-demand";
    case Paging::kAutomatic:
      return "automatic";
  }
  return "unknown";
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace {

// The protection of the first mapping under [begin, end) that lacks
// `want` ('r' or 'w'), as /proc/self/maps writes it ("r--"); else empty.
std::string WeakestProtection(uintptr_t begin, uintptr_t end, char want) {
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    const std::optional<internal::MapsLine> m = internal::ParseMapsLine(line);
    if (!m || m->perms.size() < 3 || m->end <= begin) continue;
    if (m->start >= end) break;
    if (m->perms.substr(0, 3).find(want) == absl::string_view::npos) {
      return std::string(m->perms.substr(0, 3));
    }
  }
  return "";
}

std::string ProtName(const std::string& perms) {
  std::vector<std::string> p;
  if (perms[0] == 'r') p.push_back("PROT_READ");
  if (perms[1] == 'w') p.push_back("PROT_WRITE");
  if (perms[2] == 'x') p.push_back("PROT_EXEC");
  return p.empty() ? "PROT_NONE" : absl::StrJoin(p, "|");
}

}  // namespace

absl::Status CheckHostAccess(const void* addr, uint64_t length, AccessFlags access,
                             std::string_view where) {
  if (length == 0) return absl::OkStatus();
  const bool write = NormalizeAccess(access).Has(Access::kLocalWrite);
  const uintptr_t first = reinterpret_cast<uintptr_t>(addr);
  if (first + length < first) return absl::OkStatus();  // wraps: the caller's to refuse
  // madvise wants a page-aligned start; pages are at least 4 KiB.
  const uintptr_t begin = first & ~uintptr_t{4095};
  const uintptr_t end = first + length;
  if (madvise(reinterpret_cast<void*>(begin), end - begin,
              write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ) == 0) {
    return absl::OkStatus();
  }
  const int err = errno;
  // EINVAL is a protection that does not allow the access, memory madvise
  // does not populate (VM_IO, VM_PFNMAP) or a kernel before 5.14; the
  // mappings' own protections tell them apart. EFAULT: the access would
  // raise SIGSEGV or SIGBUS. ENOMEM (not mapped), EINTR, ...: the
  // registration's to report.
  std::string weakest;
  if (err == EINVAL) {
    weakest = WeakestProtection(begin, end, write ? 'w' : 'r');
    if (weakest.empty() && write) weakest = WeakestProtection(begin, end, 'r');
    if (weakest.empty()) return absl::OkStatus();
  } else if (err != EFAULT) {
    return absl::OkStatus();
  }
  return absl::PermissionDeniedError(absl::StrFormat(
      "%s: [%p, +%#x) is not %s by this process (%s): the device may not %s what the program "
      "may not; change its protection, or ask for %s",
      where, addr, length, write ? "writable" : "readable",
      weakest.empty() ? absl::StrCat(ErrnoName(err), " from madvise(",
                                     write ? "MADV_POPULATE_WRITE" : "MADV_POPULATE_READ", ")")
                      : absl::StrCat("mapped ", ProtName(weakest)),
      write ? "write" : "read",
      write ? "read-only access (no local write, remote write or atomic)" : "other memory"));
}

absl::Status CheckIovaPlacement(const DomainCapabilities& caps, uint64_t va, uint64_t iova,
                                uint64_t length, std::string_view where) {
  const std::optional<Range> vr = Range::FromLength(va, length);
  const std::optional<Range> ir = Range::FromLength(iova, length);
  const auto say = [&](absl::StatusCode code, std::string_view why) {
    return absl::Status(
        code, absl::StrFormat("%s: VA %#x, IOVA %#x, %#x bytes: %s", where, va, iova, length, why));
  };
  if (length == 0) return say(absl::StatusCode::kInvalidArgument, "a zero length");
  if (!vr) return say(absl::StatusCode::kInvalidArgument, "the VA range wraps around");
  if (!ir) return say(absl::StatusCode::kInvalidArgument, "the IOVA range wraps around");
  if (!caps.caller_iova) {
    return say(absl::StatusCode::kFailedPrecondition,
               absl::StrCat(caps.device_name, " cannot place a mapping at a caller's IOVA"));
  }
  if (caps.dma_address_bits > 0 && caps.dma_address_bits < 64 &&
      ir->end() > (uint64_t{1} << caps.dma_address_bits)) {
    return say(absl::StatusCode::kOutOfRange,
               absl::StrFormat("the IOVAs pass %s's %d-bit DMA mask", caps.device_name,
                               caps.dma_address_bits));
  }
  if (!caps.iova_ranges.empty() && std::none_of(caps.iova_ranges.begin(), caps.iova_ranges.end(),
                                                [&](const Range& r) { return r.Contains(*ir); })) {
    return say(
        absl::StatusCode::kOutOfRange,
        absl::StrCat("the IOVAs lie outside ", caps.device_name, "'s IOVA ranges ",
                     absl::StrJoin(caps.iova_ranges, ", ", [](std::string* out, const Range& r) {
                       out->append(r.ToString());
                     })));
  }
  const uint64_t page = caps.page_sizes & (~caps.page_sizes + 1);  // the smallest
  if (page != 0 && ((va - iova) & (page - 1)) != 0) {
    return say(absl::StatusCode::kInvalidArgument,
               absl::StrFormat("VA and IOVA differ in their offset within %s's %#x-byte pages",
                               caps.device_name, page));
  }
  if (page != 0 && !caps.byte_granular && ((va | length) & (page - 1)) != 0) {
    return say(absl::StatusCode::kInvalidArgument,
               absl::StrFormat("not whole %#x-byte pages, which %s maps", page, caps.device_name));
  }
  return absl::OkStatus();
}

absl::Status Domain::LostStatus(std::string_view call) const {
  return absl::UnavailableError(absl::StrFormat("%s on %s: the device is gone", call, name()));
}

absl::StatusOr<DeviceMapping> Domain::RegisterDmaBuf(const DmaBufMemory&, AccessFlags) {
  return absl::UnimplementedError(
      absl::StrCat("dma-buf registration is not supported by domain ", name()));
}

}  // namespace dmareg
