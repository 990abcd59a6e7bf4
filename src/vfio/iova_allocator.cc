// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "vfio/iova_allocator.h"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/memory/memory.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace dmareg::internal {
namespace {

constexpr uint64_t kMinPageSize = 4096;
constexpr size_t kRangesShown = 8;  // in messages; a device reports a handful

int ClassOf(uint64_t length) { return std::bit_width(length) - 1; }  // length > 0

// The padding from `begin` up to the next multiple of `alignment` (a power
// of two).
uint64_t PadToAlign(uint64_t begin, uint64_t alignment) {
  return (alignment - (begin & (alignment - 1))) & (alignment - 1);
}

std::string RangesToString(const std::vector<Range>& ranges) {
  std::string out = "{";
  for (size_t i = 0; i < ranges.size() && i < kRangesShown; ++i) {
    absl::StrAppend(&out, i ? ", " : "", ranges[i].ToString());
  }
  if (ranges.size() > kRangesShown) {
    absl::StrAppend(&out, ", and ", ranges.size() - kRangesShown, " more");
  }
  return out + "}";
}

std::string MaskToString(int address_bits) {
  if (address_bits == 64) return "no address mask";
  return absl::StrFormat("a %d-bit address mask (IOVAs below %#x)", address_bits,
                         uint64_t{1} << address_bits);
}

}  // namespace

absl::StatusOr<std::unique_ptr<IovaAllocator>> IovaAllocator::Create(Options options) {
  const uint64_t page = options.page_size;
  // 4 KiB is the smallest page of every IOMMU (and CPU) dmareg runs on; a
  // smaller one would be a caller's mistake (a bitmap passed unmasked, bytes
  // for KiB), not a device.
  if (!std::has_single_bit(page) || page < kMinPageSize) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "IovaAllocator::Create: page_size %#x is not a power of two >= %#x", page, kMinPageSize));
  }
  if (options.address_bits < 1 || options.address_bits > 64) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "IovaAllocator::Create: address_bits %d is outside 1..64", options.address_bits));
  }

  // Merge what overlaps or touches: adjacent device ranges are one
  // contiguous stretch of IOVAs, and free extents may then merge across the
  // seam. Trimming afterwards loses no page at a seam.
  std::vector<Range> merged;
  if (options.ranges.empty()) {
    merged.push_back(*Range::FromBounds(0, UINT64_MAX));
  } else {
    std::vector<Range> sorted;
    for (const Range& r : options.ranges) {
      if (!r.empty()) sorted.push_back(r);
    }
    std::sort(sorted.begin(), sorted.end(),
              [](const Range& a, const Range& b) { return a.begin() < b.begin(); });
    for (const Range& r : sorted) {
      if (!merged.empty() && r.begin() <= merged.back().end()) {
        merged.back() = merged.back().Hull(r);
      } else {
        merged.push_back(r);
      }
    }
  }

  // Clip to [one page, 2^bits), then trim inward to whole pages. Merged
  // ranges are at least a byte apart, so trimmed ones are too: never touching.
  const uint64_t limit =
      options.address_bits == 64 ? UINT64_MAX : uint64_t{1} << options.address_bits;
  const Range window = *Range::FromBounds(page, std::max(page, limit));
  std::vector<Range> usable;
  for (const Range& r : merged) {
    const Range clipped = r.Intersect(window);
    if (clipped.empty()) continue;
    if (clipped.begin() > ~(page - 1)) continue;  // begins in the last page
    const uint64_t b = (clipped.begin() + page - 1) & ~(page - 1);
    const uint64_t e = clipped.end() & ~(page - 1);
    if (b < e) usable.push_back(*Range::FromBounds(b, e));
  }
  if (usable.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "IovaAllocator::Create: no usable IOVA space: ranges %s under %s, trimmed to whole "
        "%#x-byte pages, less the first page, leave nothing",
        options.ranges.empty() ? std::string("{the whole space}") : RangesToString(options.ranges),
        MaskToString(options.address_bits), page));
  }
  return absl::WrapUnique(new IovaAllocator(page, options.address_bits, std::move(usable)));
}

IovaAllocator::IovaAllocator(uint64_t page_size, int address_bits, std::vector<Range> usable)
    : page_size_(page_size), address_bits_(address_bits), usable_(std::move(usable)) {
  MutexLock lock(&mu_);
  for (const Range& r : usable_) AddExtent(r.begin(), r.end());
}

void IovaAllocator::AddExtent(uint64_t begin, uint64_t end) {
  const int k = ClassOf(end - begin);
  free_.emplace(begin, end);
  free_by_class_[k].emplace(begin, end);
  nonempty_classes_ |= uint64_t{1} << k;
  free_bytes_ += end - begin;
}

void IovaAllocator::RemoveExtent(uint64_t begin, uint64_t end) {
  const int k = ClassOf(end - begin);
  free_.erase(begin);
  free_by_class_[k].erase(begin);
  if (free_by_class_[k].empty()) nonempty_classes_ &= ~(uint64_t{1} << k);
  free_bytes_ -= end - begin;
}

void IovaAllocator::Carve(uint64_t fb, uint64_t fe, uint64_t begin, uint64_t end) {
  RemoveExtent(fb, fe);
  if (fb < begin) AddExtent(fb, begin);  // alignment padding stays free
  if (end < fe) AddExtent(end, fe);
  allocated_.emplace(begin, end);
  allocated_bytes_ += end - begin;
}

absl::StatusOr<Range> IovaAllocator::Allocate(uint64_t length, uint64_t alignment) {
  if (length == 0) {
    return absl::InvalidArgumentError("IovaAllocator::Allocate: zero length");
  }
  if (alignment == 0) alignment = page_size_;
  if (!std::has_single_bit(alignment) || alignment < page_size_) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "IovaAllocator::Allocate(length %#x): alignment %#x is not a power of two >= the "
        "page size %#x",
        length, alignment, page_size_));
  }
  MutexLock lock(&mu_);
  // Longer than any space once rounded: nothing can hold it.
  const bool too_long = length > ~(page_size_ - 1);
  const uint64_t need = too_long ? 0 : (length + page_size_ - 1) & ~(page_size_ - 1);
  // Free extents begin on a page, so padding is at most alignment - page:
  // an extent at least `sure` long holds the request wherever it begins.
  const uint64_t slack = alignment - page_size_;
  const uint64_t sure = need > UINT64_MAX - slack ? UINT64_MAX : need + slack;

  std::optional<std::pair<uint64_t, uint64_t>> best;  // the lowest fitting extent
  const auto below_best = [&](uint64_t begin) { return !best || begin < best->first; };
  // First the classes whose every extent fits: their first is their lowest.
  for (uint64_t bits = too_long ? 0 : nonempty_classes_; bits != 0; bits &= bits - 1) {
    const int k = std::countr_zero(bits);
    if ((uint64_t{1} << k) < sure) continue;
    const auto& [b, e] = *free_by_class_[k].begin();
    if (below_best(b)) best.emplace(b, e);
  }
  // Then the classes that may hold extents too short, only below `best`.
  for (uint64_t bits = too_long ? 0 : nonempty_classes_; bits != 0; bits &= bits - 1) {
    const int k = std::countr_zero(bits);
    const uint64_t longest_in_class = k == 63 ? UINT64_MAX : (uint64_t{2} << k) - 1;
    if (longest_in_class < need || (uint64_t{1} << k) >= sure) continue;
    for (const auto& [b, e] : free_by_class_[k]) {
      if (!below_best(b)) break;
      const uint64_t pad = PadToAlign(b, alignment);
      if (pad <= e - b && e - b - pad >= need) {
        best.emplace(b, e);
        break;
      }
    }
  }
  if (!best) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "IovaAllocator::Allocate(length %#x, alignment %#x): no free extent fits %s; %s", length,
        alignment,
        too_long ? std::string("a length past the top of the address space")
                 : absl::StrFormat("%#x bytes", need),
        FreeSummary()));
  }
  const auto [fb, fe] = *best;
  const uint64_t begin = fb + PadToAlign(fb, alignment);
  Carve(fb, fe, begin, begin + need);
  return *Range::FromLength(begin, need);
}

absl::Status IovaAllocator::Reserve(Range iova) {
  if (iova.empty() || !iova.PageAligned(page_size_)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("IovaAllocator::Reserve(%s): not a non-empty range of whole %#x-byte pages",
                        iova.ToString(), page_size_));
  }
  if (!Usable(iova)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "IovaAllocator::Reserve(%s): outside the usable IOVA space %s (the device's ranges "
        "under %s, in whole pages, less the first)",
        iova.ToString(), RangesToString(usable_), MaskToString(address_bits_)));
  }
  MutexLock lock(&mu_);
  auto it = free_.upper_bound(iova.begin());
  if (it != free_.begin()) {
    --it;
    const auto [fb, fe] = *it;
    if (fb <= iova.begin() && iova.end() <= fe) {
      Carve(fb, fe, iova.begin(), iova.end());
      return absl::OkStatus();
    }
  }
  // Usable, yet not inside one free extent: some of it is taken.
  const ExtentMap::value_type* taken = FirstAllocationOverlapping(iova);
  return absl::AlreadyExistsError(absl::StrFormat(
      "IovaAllocator::Reserve(%s): overlaps %s, already allocated or reserved", iova.ToString(),
      taken ? Range::FromBounds(taken->first, taken->second)->ToString()
            : std::string("an allocation")));
}

absl::Status IovaAllocator::Free(Range iova) {
  if (iova.empty()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("IovaAllocator::Free(%s): empty range", iova.ToString()));
  }
  MutexLock lock(&mu_);
  const auto it = allocated_.find(iova.begin());
  if (it == allocated_.end() || it->second != iova.end()) {
    const ExtentMap::value_type* overlap = FirstAllocationOverlapping(iova);
    if (overlap == nullptr) {
      return absl::NotFoundError(absl::StrFormat(
          "IovaAllocator::Free(%s): not allocated (never allocated, or already freed)",
          iova.ToString()));
    }
    return absl::InvalidArgumentError(absl::StrFormat(
        "IovaAllocator::Free(%s): not a range Allocate or Reserve handed out; it overlaps %s "
        "(free exactly what was allocated)",
        iova.ToString(), Range::FromBounds(overlap->first, overlap->second)->ToString()));
  }
  allocated_.erase(it);
  allocated_bytes_ -= iova.length();

  // Merge with the free neighbours that touch it.
  uint64_t begin = iova.begin(), end = iova.end();
  auto next = free_.lower_bound(end);
  if (next != free_.end() && next->first == end) {
    end = next->second;
    RemoveExtent(next->first, next->second);
  }
  auto prev = free_.lower_bound(begin);
  if (prev != free_.begin()) {
    --prev;
    if (prev->second == begin) {
      begin = prev->first;
      RemoveExtent(prev->first, prev->second);
    }
  }
  AddExtent(begin, end);
  return absl::OkStatus();
}

const IovaAllocator::ExtentMap::value_type* IovaAllocator::FirstAllocationOverlapping(
    Range r) const {
  auto it = allocated_.upper_bound(r.begin());
  if (it != allocated_.begin()) {
    auto prev = std::prev(it);
    if (prev->second > r.begin()) return &*prev;
  }
  if (it != allocated_.end() && it->first < r.end()) return &*it;
  return nullptr;
}

bool IovaAllocator::Usable(Range iova) const {
  if (iova.empty()) return false;
  auto it = std::upper_bound(usable_.begin(), usable_.end(), iova.begin(),
                             [](uint64_t a, const Range& r) { return a < r.begin(); });
  return it != usable_.begin() && std::prev(it)->Contains(iova);
}

uint64_t IovaAllocator::free_bytes() const {
  MutexLock lock(&mu_);
  return free_bytes_;
}

uint64_t IovaAllocator::allocated_bytes() const {
  MutexLock lock(&mu_);
  return allocated_bytes_;
}

size_t IovaAllocator::allocations() const {
  MutexLock lock(&mu_);
  return allocated_.size();
}

std::vector<Range> IovaAllocator::FreeExtents() const {
  MutexLock lock(&mu_);
  std::vector<Range> out;
  out.reserve(free_.size());
  for (const auto& [b, e] : free_) out.push_back(*Range::FromBounds(b, e));
  return out;
}

// "free 0x... bytes in N extents, the largest 0x... bytes at [...)": enough
// to tell fragmentation (much free, small largest) from exhaustion.
std::string IovaAllocator::FreeSummary() const {
  if (free_.empty()) return "no free space left";
  // The longest extent is in the highest non-empty class.
  const int k = 63 - std::countl_zero(nonempty_classes_);
  std::pair<uint64_t, uint64_t> longest{0, 0};
  for (const auto& [b, e] : free_by_class_[k]) {
    if (e - b > longest.second - longest.first) longest = {b, e};
  }
  return absl::StrFormat("free %#x bytes in %d extents, the largest %#x bytes at %s", free_bytes_,
                         free_.size(), longest.second - longest.first,
                         Range::FromBounds(longest.first, longest.second)->ToString());
}

}  // namespace dmareg::internal
