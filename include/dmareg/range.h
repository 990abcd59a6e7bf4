// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// range.h: a half-open range of addresses, [begin, end): virtual addresses,
// IOVAs, and offsets into a buffer alike.
//
// A `Range` can only be made by the factories below, which refuse anything
// whose end would pass the top of the 64-bit space, so `begin() <= end()`
// always holds and no arithmetic on a Range wraps. The price: the very last
// byte (2^64 - 1) is in no Range, and no page-rounded Range holds the last
// page; neither is usable memory on any platform dmareg runs on.
//
//   std::optional<dmareg::Range> r = dmareg::Range::FromLength(addr, len);
//   if (!r) return absl::InvalidArgumentError("wraps");
//   std::optional<dmareg::Range> pages = r->RoundOut(4096);  // whole pages
//   if (pages && pages->Overlaps(other)) ...
//
// Cheap to copy (two words); every member is constexpr.

#ifndef DMAREG_RANGE_H_
#define DMAREG_RANGE_H_

#include <cstdint>
#include <optional>
#include <string>

#pragma GCC visibility push(default)

namespace dmareg {

class Range {
 public:
  // The empty range at 0.
  constexpr Range() = default;

  // [begin, begin + length); nullopt if the end passes 2^64 - 1.
  static constexpr std::optional<Range> FromLength(uint64_t begin, uint64_t length) {
    if (length > UINT64_MAX - begin) return std::nullopt;
    return Range(begin, begin + length);
  }
  // [begin, end); nullopt if end < begin.
  static constexpr std::optional<Range> FromBounds(uint64_t begin, uint64_t end) {
    if (end < begin) return std::nullopt;
    return Range(begin, end);
  }
  // The whole pages (`page` a power of two) holding [begin, begin + length),
  // in one test: nullopt for a zero length, a range that wraps, or one that
  // touches the last page of the address space (whose end no Range can
  // hold). The hit path's front door; see RoundOut for the general case.
  static constexpr std::optional<Range> PagesHolding(uint64_t begin, uint64_t length,
                                                     uint64_t page) {
    const uint64_t end = begin + length;
    // end <= 2^64 - page: the rounded end is representable (and nonzero).
    if (length == 0 || end < begin || end > ~(page - 1)) return std::nullopt;
    return Range(begin & ~(page - 1), (end + page - 1) & ~(page - 1));
  }

  constexpr uint64_t begin() const { return begin_; }
  constexpr uint64_t end() const { return end_; }
  constexpr uint64_t length() const { return end_ - begin_; }
  constexpr bool empty() const { return begin_ == end_; }

  constexpr bool Contains(uint64_t x) const { return begin_ <= x && x < end_; }
  // True for an empty `r` anywhere inside (or at the end of) this range.
  constexpr bool Contains(Range r) const { return begin_ <= r.begin_ && r.end_ <= end_; }
  // Share at least one address (an empty range overlaps nothing).
  constexpr bool Overlaps(Range r) const {
    return (begin_ > r.begin_ ? begin_ : r.begin_) < (end_ < r.end_ ? end_ : r.end_);
  }

  // The addresses in both; empty (at this range's begin) when disjoint.
  constexpr Range Intersect(Range r) const {
    const uint64_t b = begin_ > r.begin_ ? begin_ : r.begin_;
    const uint64_t e = end_ < r.end_ ? end_ : r.end_;
    return b < e ? Range(b, e) : Range(begin_, begin_);
  }
  // The smallest range holding both.
  constexpr Range Hull(Range r) const {
    return Range(begin_ < r.begin_ ? begin_ : r.begin_, end_ > r.end_ ? end_ : r.end_);
  }

  // Out to whole pages (`page` a power of two); nullopt if the rounded end
  // would pass the top (the range touches the last page).
  constexpr std::optional<Range> RoundOut(uint64_t page) const {
    if (end_ > ~(page - 1)) return std::nullopt;
    return Range(begin_ & ~(page - 1), (end_ + page - 1) & ~(page - 1));
  }
  // Out to whole pages, less the last page of the address space (which no
  // page-rounded range can hold, so nothing registered lies there): what an
  // invalidation of this range must cover. Empty if only the last page is left.
  constexpr Range RoundOutBelowLastPage(uint64_t page) const {
    const uint64_t top = ~(page - 1);  // start of the last page
    const uint64_t b = begin_ & ~(page - 1);
    const uint64_t e = end_ > top ? top : (end_ + page - 1) & ~(page - 1);
    return Range(b, e);  // b <= e: b <= begin_ <= end_, and b <= top
  }
  // True if both ends are multiples of `page` (a power of two).
  constexpr bool PageAligned(uint64_t page) const { return ((begin_ | end_) & (page - 1)) == 0; }

  constexpr bool operator==(const Range&) const = default;

  // "[0x1000, 0x3000)".
  std::string ToString() const;

 private:
  constexpr Range(uint64_t begin, uint64_t end) : begin_(begin), end_(end) {}

  uint64_t begin_ = 0;
  uint64_t end_ = 0;  // >= begin_
};

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_RANGE_H_
