// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// IovaAllocator against a page-bitmap model, and under concurrent callers.
// (The deterministic cases are in iova_allocator_test.cc.)
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <iterator>
#include <latch>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vfio/iova_allocator.h"

namespace dmareg::internal {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr uint64_t kPage = 0x1000;

Range R(uint64_t begin, uint64_t end) { return *Range::FromBounds(begin, end); }

std::unique_ptr<IovaAllocator> MakeOrDie(IovaAllocator::Options o) {
  absl::StatusOr<std::unique_ptr<IovaAllocator>> a = IovaAllocator::Create(std::move(o));
  EXPECT_TRUE(a.ok()) << a.status();
  return a.ok() ? *std::move(a) : nullptr;
}

// --- against a model ---

// The reference: one state per page of a 1 MiB space. Slow and obviously
// right: the lowest fit is a scan over every aligned start.
class PageModel {
 public:
  static constexpr uint64_t kPages = 256;
  enum State : uint8_t { kUnusable, kFree, kTaken };

  explicit PageModel(const std::vector<Range>& usable) : state_(kPages, kUnusable) {
    for (const Range& r : usable) Set(r, kFree);
  }
  void Set(Range r, State s) {
    for (uint64_t p = r.begin() / kPage; p < r.end() / kPage; ++p) state_[p] = s;
  }
  // Whether any page of r (page-aligned) is in state s; pages past the
  // space count as unusable.
  bool Any(Range r, State s) const {
    for (uint64_t p = r.begin() / kPage; p < r.end() / kPage; ++p) {
      if ((p < kPages ? state_[p] : kUnusable) == s) return true;
    }
    return false;
  }
  std::optional<Range> LowestFit(uint64_t pages, uint64_t align_pages) const {
    for (uint64_t p = 0; p + pages <= kPages; p += align_pages) {
      const Range r = R(p * kPage, (p + pages) * kPage);
      if (!Any(r, kUnusable) && !Any(r, kTaken)) return r;
    }
    return std::nullopt;
  }
  std::vector<Range> FreeRuns() const {
    std::vector<Range> runs;
    for (uint64_t p = 0; p < kPages; ++p) {
      if (state_[p] != kFree) continue;
      if (!runs.empty() && runs.back().end() == p * kPage) {
        runs.back() = R(runs.back().begin(), (p + 1) * kPage);
      } else {
        runs.push_back(R(p * kPage, (p + 1) * kPage));
      }
    }
    return runs;
  }
  uint64_t Bytes(State s) const { return std::count(state_.begin(), state_.end(), s) * kPage; }

 private:
  std::vector<State> state_;
};

TEST(IovaAllocatorModelTest, RandomOperationsMatchAPageBitmap) {
  IovaAllocator::Options o;
  o.address_bits = 20;  // 256 pages
  o.ranges = {R(0xf1000, 0x100000), R(0x80000, 0xf0000), R(0, 0x7a000), R(0x7c800, 0x7f800),
              R(0x100000, 0x200000)};
  auto a = MakeOrDie(o);
  ASSERT_TRUE(a);
  // Unsorted, touching, unaligned and past the mask, all normalised.
  ASSERT_THAT(a->usable(), ElementsAre(R(0x1000, 0x7a000), R(0x7d000, 0x7f000), R(0x80000, 0xf0000),
                                       R(0xf1000, 0x100000)));
  PageModel model(a->usable());
  std::map<uint64_t, uint64_t> live;  // begin -> end
  std::vector<Range> freed;
  std::mt19937_64 rng(20261201);
  int allocated = 0, exhausted = 0, reserved = 0, refused = 0;

  // What Free of `r` must answer, by the page states alone.
  const auto expected_free = [&](Range r) {
    auto it = live.find(r.begin());
    if (it != live.end() && it->second == r.end()) return absl::StatusCode::kOk;
    return model.Any(r, PageModel::kTaken) ? absl::StatusCode::kInvalidArgument
                                           : absl::StatusCode::kNotFound;
  };
  const auto free_one = [&](Range r) {
    const absl::StatusCode want = expected_free(r);
    absl::Status s = a->Free(r);
    ASSERT_EQ(s.code(), want) << r.ToString() << ": " << s;
    if (!s.ok()) return;
    live.erase(r.begin());
    model.Set(r, PageModel::kFree);
    freed.push_back(r);
  };

  for (int step = 0; step < 4000; ++step) {
    SCOPED_TRACE(step);
    const uint64_t op = rng() % 100;
    if (op < 45) {
      const uint64_t length = rng() % (12 * kPage) + 1;
      static constexpr uint64_t kAlignments[] = {0, 0x1000, 0x2000, 0x4000, 0x10000, 0x40000};
      const uint64_t alignment = kAlignments[rng() % std::size(kAlignments)];
      const uint64_t pages = (length + kPage - 1) / kPage;
      const std::optional<Range> want =
          model.LowestFit(pages, alignment == 0 ? 1 : alignment / kPage);
      absl::StatusOr<Range> r = a->Allocate(length, alignment);
      if (want) {
        ASSERT_TRUE(r.ok()) << r.status();
        ASSERT_EQ(*r, *want);
        live.emplace(r->begin(), r->end());
        model.Set(*r, PageModel::kTaken);
        ++allocated;
      } else {
        ASSERT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
        uint64_t largest = 0;
        for (const Range& run : model.FreeRuns()) largest = std::max(largest, run.length());
        ASSERT_THAT(r.status().message(),
                    HasSubstr(largest ? absl::StrFormat("the largest %#x bytes", largest)
                                      : std::string("no free space left")));
        ++exhausted;
      }
    } else if (op < 60) {
      const uint64_t begin = (rng() % 280) * kPage + (rng() % 20 == 0 ? 0x800 : 0);
      const Range r = R(begin, begin + (rng() % 8 + 1) * kPage);
      absl::StatusCode want = absl::StatusCode::kOk;
      if (!r.PageAligned(kPage) || model.Any(r, PageModel::kUnusable)) {
        want = absl::StatusCode::kInvalidArgument;
      } else if (model.Any(r, PageModel::kTaken)) {
        want = absl::StatusCode::kAlreadyExists;
      }
      absl::Status s = a->Reserve(r);
      ASSERT_EQ(s.code(), want) << r.ToString() << ": " << s;
      if (s.ok()) {
        live.emplace(r.begin(), r.end());
        model.Set(r, PageModel::kTaken);
        ++reserved;
      } else {
        ++refused;
      }
    } else if (op < 90) {
      if (live.empty()) continue;
      auto it = live.begin();
      std::advance(it, rng() % live.size());
      ASSERT_NO_FATAL_FAILURE(free_one(R(it->first, it->second)));
    } else if (op < 95) {
      const uint64_t begin = (rng() % 260) * kPage;
      ASSERT_NO_FATAL_FAILURE(free_one(R(begin, begin + (rng() % 6 + 1) * kPage)));
    } else {
      if (freed.empty()) continue;
      ASSERT_NO_FATAL_FAILURE(free_one(freed[rng() % freed.size()]));  // often a double free
    }
    // Every invariant, after every step (failed steps included).
    ASSERT_EQ(a->FreeExtents(), model.FreeRuns());
    ASSERT_EQ(a->free_bytes(), model.Bytes(PageModel::kFree));
    ASSERT_EQ(a->allocated_bytes(), model.Bytes(PageModel::kTaken));
    ASSERT_EQ(a->allocations(), live.size());
  }
  // The run visited what it should have.
  EXPECT_GT(allocated, 500);
  EXPECT_GT(exhausted, 50);
  EXPECT_GT(reserved, 50);
  EXPECT_GT(refused, 50);
  for (auto it = live.begin(); it != live.end(); it = live.begin()) {
    ASSERT_NO_FATAL_FAILURE(free_one(R(it->first, it->second)));
  }
  EXPECT_EQ(a->FreeExtents(), a->usable());
}

// --- threads ---

TEST(IovaAllocatorThreadTest, ConcurrentCallersNeverShareAPage) {
  constexpr int kThreads = 4;
  constexpr int kOps = 50000;
  constexpr uint64_t kPages = 2048;
  IovaAllocator::Options o;
  o.ranges = {R(kPage, (kPages + 1) * kPage)};
  auto a = MakeOrDie(o);
  ASSERT_TRUE(a);
  const uint64_t total = a->free_bytes();
  // Who holds each page, by the threads' own account: a page handed to two
  // threads at once shows up as an exchange that finds another owner.
  std::vector<std::atomic<int>> owner(kPages + 1);
  std::atomic<int> shared_pages{0}, wrong_answers{0}, exhausted{0};
  const auto claim = [&](Range r, int from, int to) {
    for (uint64_t p = r.begin() / kPage; p < r.end() / kPage; ++p) {
      if (owner[p].exchange(to) != from) shared_pages.fetch_add(1);
    }
  };
  std::latch start(kThreads + 1);  // all at once, so the calls overlap
  const auto worker = [&](int id) {
    start.arrive_and_wait();
    std::mt19937_64 rng(1000 + id);
    std::vector<Range> mine;
    const auto give_back = [&] {
      const size_t i = rng() % mine.size();
      const Range r = mine[i];
      mine[i] = mine.back();
      mine.pop_back();
      claim(r, id, 0);  // before Free: afterwards another thread may take it
      if (!a->Free(r).ok()) wrong_answers.fetch_add(1);
    };
    for (int i = 0; i < kOps; ++i) {
      const uint64_t op = rng() % 10;
      if (op < 6 || mine.empty()) {
        const uint64_t alignment = kPage << (rng() % 4);
        absl::StatusOr<Range> r = a->Allocate((rng() % 16 + 1) * kPage, alignment);
        if (r.ok()) {
          if (r->begin() % alignment != 0 || !a->Usable(*r)) wrong_answers.fetch_add(1);
          claim(*r, 0, id);
          mine.push_back(*r);
        } else if (r.status().code() == absl::StatusCode::kResourceExhausted) {
          exhausted.fetch_add(1);
          if (!mine.empty()) give_back();
        } else {
          wrong_answers.fetch_add(1);
        }
      } else if (op < 7) {
        const uint64_t begin = (rng() % kPages + 1) * kPage;
        const Range r = R(begin, std::min(begin + (rng() % 4 + 1) * kPage, (kPages + 1) * kPage));
        absl::Status s = a->Reserve(r);
        if (s.ok()) {
          claim(r, 0, id);
          mine.push_back(r);
        } else if (s.code() != absl::StatusCode::kAlreadyExists) {
          wrong_answers.fetch_add(1);
        }
      } else {
        give_back();
      }
    }
    while (!mine.empty()) give_back();
  };
  // A reader: every snapshot of the free extents is well formed.
  const auto reader = [&] {
    start.arrive_and_wait();
    for (int i = 0; i < kOps; ++i) {
      const std::vector<Range> extents = a->FreeExtents();
      for (size_t j = 0; j < extents.size(); ++j) {
        if (extents[j].empty() || !a->Usable(extents[j]) ||
            (j > 0 && extents[j - 1].end() >= extents[j].begin())) {
          wrong_answers.fetch_add(1);
        }
      }
      if (a->free_bytes() > total) wrong_answers.fetch_add(1);
    }
  };
  std::vector<std::thread> threads;
  for (int id = 1; id <= kThreads; ++id) threads.emplace_back(worker, id);
  threads.emplace_back(reader);
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(shared_pages.load(), 0);
  EXPECT_EQ(wrong_answers.load(), 0);
  EXPECT_GT(exhausted.load(), 0);  // the space ran out, so the threads contended for it
  EXPECT_EQ(a->allocations(), 0u);
  EXPECT_EQ(a->allocated_bytes(), 0u);
  EXPECT_EQ(a->FreeExtents(), a->usable());
}

}  // namespace
}  // namespace dmareg::internal
