// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// VfioContainer's mapping table: Map and the domains' maps (at a caller's
// IOVA, or anywhere: IOVA = VA, else an allocator pick), the reserved IOVA
// windows, and the unmaps that drop a reference or a holder's all.
//
// Mappings not picked by the allocator (IOVA = VA, caller IOVAs) enter it
// only when a pick lands on them (PickFree), so a caller's map+unmap costs
// the allocator nothing; when AttachGroup rebuilds the allocator empty
// (vfio_container.cc), the table's entries re-enter it the same way.

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/mutex.h"
#include "dmareg/domain.h"
#include "dmareg/range.h"
#include "dmareg/vfio/vfio_domain.h"
#include "vfio/container_state.h"
#include "vfio/iova_allocator.h"

namespace dmareg {

namespace internal {

// The placement rules of the container itself (container_state.h).
DomainCapabilities PlacementCaps(const VfioContainerInfo& info, bool set, int fd) {
  DomainCapabilities caps;
  caps.device_name = absl::StrCat("VFIO container (fd ", fd, ")");
  caps.kind = DeviceKind::kVfio;
  if (set) caps.iova_ranges = info.iova_ranges;
  caps.page_sizes = set && info.page_sizes != 0 ? info.page_sizes : 4096;
  caps.caller_iova = true;
  caps.one_iova_space = true;
  caps.byte_granular = false;
  return caps;
}

}  // namespace internal

using Entry = internal::VfioTableEntry;
using internal::DescribeMapping;
using internal::InsideOne;
using internal::KernelMap;
using internal::KernelUnmap;
using internal::PartsInside;
using internal::PlacementCaps;
using internal::RangesString;

absl::Status VfioContainer::Map(uint64_t va, uint64_t iova, uint64_t length, bool writable) {
  State& s = *state_;
  internal::MutexLock lock(&s.mu);
  // A backend-level entry point of its own: the rules every domain applies.
  if (absl::Status st = CheckIovaPlacement(PlacementCaps(s.info, s.info.iommu_type != 0, fd_), va,
                                           iova, length, "VFIO map");
      !st.ok()) {
    return st;
  }
  return MapLocked(va, iova, length, writable, /*holder=*/nullptr);
}

absl::Status VfioContainer::MapValidated(uint64_t va, uint64_t iova, uint64_t length, bool writable,
                                         const void* holder) {
  internal::MutexLock lock(&state_->mu);
  return MapLocked(va, iova, length, writable, holder);
}

absl::Status VfioContainer::MapLocked(uint64_t va, uint64_t iova, uint64_t length, bool writable,
                                      const void* holder) {
  State& s = *state_;
  s.mu.AssertHeld();  // the caller's lock (the header cannot name it)
  const bool set = s.info.iommu_type != 0;
  const Range r = *Range::FromLength(iova, length);

  // The table first: an identical entry is a reference, any other overlap a conflict.
  auto it = s.table.upper_bound(iova);
  if (it != s.table.begin()) --it;
  for (; it != s.table.end() && it->first < r.end(); ++it) {
    Entry& e = it->second;
    if (!Range::FromLength(it->first, e.length)->Overlaps(r)) continue;
    if (it->first == iova && e.length == length && e.va == va && e.writable == writable) {
      e.taken_by.push_back(holder);
      return absl::OkStatus();
    }
    return absl::AlreadyExistsError(
        absl::StrCat("VFIO map ", DescribeMapping(va, iova, length, writable), " overlaps mapping ",
                     DescribeMapping(e.va, it->first, e.length, e.writable)));
  }
  Entry entry{va, length, writable, {holder}, {}};
  if (set) {
    if (absl::Status st = KernelMap(*ops_, fd_, s.info, s.table.size(), va, iova, length, writable);
        !st.ok()) {
      return st;
    }
    // The allocator learns of this IOVA only if a pick lands on it
    // (MapAnywhere): a caller's map+unmap costs no allocator work.
  }  // Not set: pending, applied by the first AttachGroup.
  s.table.emplace(iova, std::move(entry));
  return absl::OkStatus();
}

// An allocator window that no table entry overlaps. Mappings not placed by
// the allocator (caller IOVAs, IOVA = VA) enter it lazily: when a pick lands
// on one, its parts are reserved (and held by its entry, freed with it) and
// the pick is retried; each retry reserves at least one more entry.
namespace {

absl::StatusOr<Range> PickFree(internal::IovaAllocator& allocator, std::map<uint64_t, Entry>& table,
                               uint64_t length, uint64_t alignment = 0) {
  for (;;) {
    absl::StatusOr<Range> picked = allocator.Allocate(length, alignment);
    if (!picked.ok()) return picked.status();
    bool clash = false;
    auto it = table.upper_bound(picked->begin());
    if (it != table.begin()) --it;
    for (; it != table.end() && it->first < picked->end(); ++it) {
      Entry& e = it->second;
      if (!e.held.empty() || !Range::FromLength(it->first, e.length)->Overlaps(*picked)) continue;
      if (!clash) (void)allocator.Free(*picked);
      clash = true;
      for (const Range& part : PartsInside(allocator, *Range::FromLength(it->first, e.length))) {
        if (absl::Status st = allocator.Reserve(part); !st.ok()) return st;
        e.held.push_back(part);
      }
    }
    if (!clash) return *picked;
  }
}

}  // namespace

absl::StatusOr<uint64_t> VfioContainer::MapAnywhere(uint64_t va, uint64_t length, bool writable,
                                                    int address_bits, const void* holder) {
  State& s = *state_;
  internal::MutexLock lock(&s.mu);
  if (s.info.iommu_type == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "VFIO container (fd ", fd_, "): no group attached, so no IOVA can be chosen yet"));
  }
  const Range identity = *Range::FromLength(va, length);

  // IOVA = VA: inside the ranges, below the mask, not page 0, and free.
  bool free = identity.begin() != 0 && InsideOne(s.info.iova_ranges, identity) &&
              (address_bits >= 64 || identity.end() <= (uint64_t{1} << address_bits));
  if (free) {
    auto it = s.table.upper_bound(identity.begin());
    if (it != s.table.begin()) --it;
    for (; it != s.table.end() && it->first < identity.end(); ++it) {
      if (Range::FromLength(it->first, it->second.length)->Overlaps(identity)) free = false;
    }
    // Nor inside a reserved window: its IOVAs are its owner's to map.
    auto r = s.reserved.upper_bound(identity.begin());
    if (r != s.reserved.begin() && std::prev(r)->second > identity.begin()) free = false;
    if (r != s.reserved.end() && r->first < identity.end()) free = false;
  }
  Entry entry{va, length, writable, {holder}, {}};
  uint64_t iova = 0;
  if (free) {
    iova = va;
    if (absl::Status st = KernelMap(*ops_, fd_, s.info, s.table.size(), va, iova, length, writable);
        !st.ok()) {
      return st;
    }
  } else {
    if (!s.allocator) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "VFIO container (fd %d): va %#x + %#x cannot be mapped at IOVA = VA and no IOVA "
          "space is left below the %d-bit mask in the ranges %s",
          fd_, va, length, s.narrowest_bits, RangesString(s.info.iova_ranges)));
    }
    // An IOVA as aligned as the VA and length are (up to 1 GiB) lets the
    // IOMMU map huge pages as huge pages; an IOVA space too fragmented for
    // that still gets the mapping, in small pages.
    const uint64_t aligned = std::min({va & (~va + 1), length & (~length + 1), uint64_t{1} << 30});
    const bool align = aligned > s.allocator->page_size();
    absl::StatusOr<Range> picked = PickFree(*s.allocator, s.table, length, align ? aligned : 0);
    if (!picked.ok() && align) picked = PickFree(*s.allocator, s.table, length);
    if (!picked.ok()) return picked.status();
    iova = picked->begin();
    if (absl::Status st = KernelMap(*ops_, fd_, s.info, s.table.size(), va, iova, length, writable);
        !st.ok()) {
      (void)s.allocator->Free(*picked);
      return st;
    }
    entry.held.push_back(*picked);
  }
  s.table.emplace(iova, std::move(entry));
  return iova;
}

absl::StatusOr<Range> VfioContainer::ReserveIova(uint64_t length, uint64_t alignment) {
  State& s = *state_;
  internal::MutexLock lock(&s.mu);
  if (s.info.iommu_type == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "VFIO container (fd ", fd_, "): no group attached, so no IOVA can be reserved yet"));
  }
  if (length == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("VFIO container (fd ", fd_, "): reserving 0 bytes of IOVA space"));
  }
  if (!s.allocator) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("VFIO container (fd %d): no IOVA space below the %d-bit mask in %s", fd_,
                        s.narrowest_bits, RangesString(s.info.iova_ranges)));
  }
  absl::StatusOr<Range> picked = PickFree(*s.allocator, s.table, length, alignment);
  if (!picked.ok()) return picked.status();
  s.reserved.emplace(picked->begin(), picked->end());
  return *picked;
}

absl::Status VfioContainer::ReleaseIova(Range iova) {
  State& s = *state_;
  internal::MutexLock lock(&s.mu);
  auto it = s.reserved.find(iova.begin());
  if (it == s.reserved.end() || it->second != iova.end()) {
    return absl::NotFoundError(
        absl::StrFormat("VFIO container (fd %d): IOVA %s was not reserved", fd_, iova.ToString()));
  }
  s.reserved.erase(it);
  if (s.allocator) {
    for (const Range& part : PartsInside(*s.allocator, iova)) (void)s.allocator->Free(part);
  }
  return absl::OkStatus();
}

std::vector<Range> VfioContainer::reserved_iova() const {
  internal::MutexLock lock(&state_->mu);
  std::vector<Range> out;
  for (const auto& [begin, end] : state_->reserved) out.push_back(*Range::FromBounds(begin, end));
  return out;
}

absl::Status VfioContainer::Unmap(uint64_t iova, uint64_t length) {
  internal::MutexLock lock(&state_->mu);
  return UnmapLocked(iova, length, /*holder=*/nullptr, /*any=*/true);
}

absl::Status VfioContainer::UnmapHeld(uint64_t iova, uint64_t length, const void* holder) {
  internal::MutexLock lock(&state_->mu);
  return UnmapLocked(iova, length, holder, /*any=*/false);
}

absl::Status VfioContainer::UnmapLocked(uint64_t iova, uint64_t length, const void* holder,
                                        bool any) {
  State& s = *state_;
  s.mu.AssertHeld();  // the caller's lock (the header cannot name it)
  const std::optional<Range> r = Range::FromLength(iova, length);
  if (length == 0 || !r) {
    return absl::InvalidArgumentError(
        absl::StrFormat("VFIO unmap of iova %#x, %#x bytes: empty or wraps", iova, length));
  }
  auto exact = s.table.find(iova);
  if (exact != s.table.end() && exact->second.length == length) {
    Entry& e = exact->second;
    // The reference that goes: `holder`'s own, else (any) the last taken.
    auto ref = std::find(e.taken_by.rbegin(), e.taken_by.rend(), holder);
    if (ref == e.taken_by.rend()) {
      if (!any) {
        return absl::NotFoundError(absl::StrFormat(
            "VFIO unmap of iova [%#x, %#x): mapped in container fd %d, but not through this "
            "domain (another device's domain or VfioContainer::Map holds it)",
            iova, iova + length, fd_));
      }
      ref = e.taken_by.rbegin();
    }
    if (e.taken_by.size() > 1) {
      e.taken_by.erase(std::next(ref).base());
      return absl::OkStatus();
    }
    if (s.info.iommu_type != 0) {
      absl::StatusOr<uint64_t> unmapped = KernelUnmap(*ops_, fd_, iova, length);
      if (!unmapped.ok()) return unmapped.status();
      if (*unmapped != length) {
        // The kernel did not hold what the table says (another process
        // unmapped it?). The table follows the request: the entry goes.
        if (s.allocator) {
          for (const Range& h : e.held) (void)s.allocator->Free(h);
        }
        s.table.erase(exact);
        return absl::InternalError(absl::StrFormat(
            "VFIO_IOMMU_UNMAP_DMA on VFIO container (fd %d): iova [%#x, %#x) unmapped %#x "
            "bytes, the table held %#x",
            fd_, iova, iova + length, *unmapped, length));
      }
    }
    if (s.allocator) {
      for (const Range& h : e.held) (void)s.allocator->Free(h);
    }
    s.table.erase(exact);
    return absl::OkStatus();
  }
  // Not an exact entry: name what it touches.
  std::vector<std::string> touched;
  auto it = s.table.upper_bound(iova);
  if (it != s.table.begin()) --it;
  for (; it != s.table.end() && it->first < r->end(); ++it) {
    if (Range::FromLength(it->first, it->second.length)->Overlaps(*r)) {
      touched.push_back(
          DescribeMapping(it->second.va, it->first, it->second.length, it->second.writable));
    }
  }
  if (touched.empty()) {
    return absl::NotFoundError(absl::StrFormat(
        "VFIO unmap of iova [%#x, %#x): nothing mapped there", iova, iova + length));
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "VFIO unmap of iova [%#x, %#x) is not the exact extent of one mapping (it touches %s); "
      "the type1 IOMMU cannot split a mapping: unmap each one whole",
      iova, iova + length, absl::StrJoin(touched, ", ")));
}

void VfioContainer::ReleaseHolder(const void* holder) {
  State& s = *state_;
  internal::MutexLock lock(&s.mu);
  for (auto it = s.table.begin(); it != s.table.end();) {
    Entry& e = it->second;
    std::erase(e.taken_by, holder);
    if (!e.taken_by.empty()) {
      ++it;
      continue;
    }
    if (s.info.iommu_type != 0 && !KernelUnmap(*ops_, fd_, it->first, e.length).ok()) {
      // Still in the kernel: the container keeps it as its own, so the
      // table still says what is mapped (and an Unmap may retry).
      e.taken_by.push_back(nullptr);
      ++it;
      continue;
    }
    if (s.allocator) {
      for (const Range& h : e.held) (void)s.allocator->Free(h);
    }
    it = s.table.erase(it);
  }
}

}  // namespace dmareg
