// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// Model-based randomized test of RegistrationCache over the fake domain.
// A simple reference model tracks what the cache may and may not do; after
// every operation the cache's observable state is checked against it:
// - every returned registration covers the request with at least the access;
// - nothing overlapping an invalidated range is returned afterwards;
// - a held, still-current mapping that covers a request makes it a hit;
// - a held mapping is never deregistered under its holder;
// - the fake's live registrations equal the cache's; limits are kept;
// - nothing is left registered at teardown.

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "dmareg/cache.h"
#include "dmareg/testing/fake_dmabuf.h"
#include "dmareg/testing/fake_domain.h"
#include "gtest/gtest.h"

namespace dmareg {
namespace {

using testing::FakeDomain;

const uintptr_t kPage = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
constexpr size_t kPages = 4096;
constexpr int kOps = 200000;

struct Span {
  uintptr_t a, b;  // [a, b), page-rounded
  bool Overlaps(uintptr_t x, uintptr_t y) const { return a < y && x < b; }
  bool Covers(uintptr_t x, uintptr_t y) const { return a <= x && y <= b; }
};

class CacheModelTest : public ::testing::TestWithParam<uint64_t> {};

TEST_P(CacheModelTest, RandomOperationsAgreeWithTheModel) {
  std::mt19937_64 rng(GetParam());
  auto fake = std::make_shared<FakeDomain>();
  testing::FakeDmaBufs bufs;
  auto cache = RegistrationCache::Create(fake, {.monitoring = Monitoring::kExplicitOnly,
                                                .inspect_dmabuf = bufs.Inspector()})
                   .value();
  const testing::FakeDmaBufs::Buffer dmabuf = bufs.Create(16 * kPage).value();
  char* base = static_cast<char*>(
      mmap(nullptr, kPages * kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  ASSERT_NE(base, MAP_FAILED);
  const uintptr_t b0 = reinterpret_cast<uintptr_t>(base);

  struct Held {
    Registration reg;
    Span span;
  };
  std::vector<Held> held;
  // Mappings (by lkey; the fake never reuses one) the cache must not return.
  absl::flat_hash_set<uint32_t> retired;
  // Span of every host mapping the cache has registered, by lkey.
  absl::flat_hash_map<uint32_t, std::pair<Span, AccessFlags>> known;
  CacheOptions limits;
  int64_t last_total = 0;

  auto round = [](uintptr_t x, size_t len) {
    return Span{x & ~(kPage - 1), (x + len + kPage - 1) & ~(kPage - 1)};
  };
  auto random_access = [&] {
    AccessFlags f = AccessFlags::FromBits(static_cast<uint32_t>(rng()) & kAllAccess.bits());
    if (rng() % 4 != 0) f = f.Without(Access::kRelaxedOrdering);
    return f;
  };

  for (int op = 0; op < kOps; ++op) {
    SCOPED_TRACE(absl::StrCat("op ", op, " seed ", GetParam()));
    const unsigned kind = rng() % 100;
    if (kind < 55) {  // Acquire
      const uintptr_t addr = b0 + (rng() % (kPages - 80)) * kPage + rng() % kPage;
      const size_t len = 1 + rng() % (rng() % 8 == 0 ? 64 * kPage : 3 * kPage);
      const AccessFlags want = random_access();
      const Span req = round(addr, len);
      // A held mapping that is still current and covers the request: a hit.
      bool must_hit = false;
      for (const Held& h : held) {
        if (!retired.contains(h.reg.lkey()) && h.span.Covers(req.a, req.b) &&
            AccessSatisfies(h.reg.access(), NormalizeAccess(want))) {
          must_hit = true;
        }
      }
      absl::StatusOr<Registration> r = cache->Acquire(reinterpret_cast<void*>(addr), len, want);
      const int64_t total = fake->total_registrations();
      if (!r.ok()) {
        ASSERT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
        ASSERT_FALSE(must_hit);
        ASSERT_EQ(total, last_total) << "a failed Acquire left a registration behind";
        continue;
      }
      const Span got{reinterpret_cast<uintptr_t>(r->addr()),
                     reinterpret_cast<uintptr_t>(r->addr()) + r->length()};
      ASSERT_TRUE(got.Covers(addr, addr + len)) << "registration does not cover the request";
      ASSERT_TRUE(AccessSatisfies(r->access(), NormalizeAccess(want)))
          << AccessToString(r->access()) << " for " << AccessToString(want);
      ASSERT_FALSE(retired.contains(r->lkey())) << "returned a retired mapping";
      FakeDomain::LiveMapping live;
      ASSERT_TRUE(fake->Lookup(r->lkey(), &live)) << "returned a deregistered mapping";
      ASSERT_EQ(live.addr, got.a);
      ASSERT_EQ(live.length, got.b - got.a);
      if (must_hit) {
        ASSERT_EQ(total, last_total) << "a covered request registered again";
      }
      if (total != last_total) {
        // A new mapping retires every known one it overlaps (merge).
        for (auto& [lkey, sa] : known) {
          if (sa.first.Overlaps(got.a, got.b)) retired.insert(lkey);
        }
        known[r->lkey()] = {got, r->access()};
        if (limits.max_regions != 0) {
          ASSERT_LE(cache->stats().live_regions, limits.max_regions);
        }
        if (limits.max_bytes != 0) {
          ASSERT_LE(cache->stats().registered_bytes, limits.max_bytes);
        }
      }
      last_total = total;
      if (rng() % 3 != 0 && held.size() < 64) {
        held.push_back(Held{std::move(*r), got});
      }
    } else if (kind < 80) {  // Release a held handle
      if (held.empty()) continue;
      const size_t i = rng() % held.size();
      FakeDomain::LiveMapping live;
      ASSERT_TRUE(fake->Lookup(held[i].reg.lkey(), &live)) << "deregistered while held";
      held[i] = std::move(held.back());
      held.pop_back();
    } else if (kind < 93) {  // Invalidate
      const uintptr_t addr = b0 + (rng() % kPages) * kPage + rng() % kPage;
      const size_t len = 1 + rng() % (16 * kPage);
      const Span inv = round(addr, std::min<size_t>(len, b0 + kPages * kPage - addr));
      ASSERT_TRUE(cache->Invalidate(reinterpret_cast<void*>(addr), inv.b - addr).ok());
      for (auto& [lkey, sa] : known) {
        if (sa.first.Overlaps(inv.a, inv.b)) retired.insert(lkey);
      }
    } else if (kind < 96) {  // New limits
      limits =
          CacheOptions{rng() % 2 ? 0 : 1 + rng() % 48, rng() % 2 ? 0 : (1 + rng() % 256) * kPage};
      absl::Status s = cache->SetLimits(limits);
      ASSERT_TRUE(s.ok() || s.code() == absl::StatusCode::kResourceExhausted) << s;
    } else if (kind < 97) {  // Flush
      cache->Flush();
    } else {  // dma-buf: cached beside the host ranges, under the same limits
      auto d = cache->Acquire(
          DmaBufMemory{.fd = dmabuf.fd, .offset = (rng() % 16) * kPage, .length = kPage},
          Access::kRemoteRead);
      if (d.ok()) {
        ASSERT_TRUE(d->is_dmabuf());
      } else {
        ASSERT_EQ(d.status().code(), absl::StatusCode::kResourceExhausted);
      }
      last_total = fake->total_registrations();
    }
    // The books agree after every step.
    const CacheStats s = cache->stats();
    ASSERT_EQ(static_cast<int64_t>(s.live_regions), fake->live_registrations());
    if ((op & 63) == 0) {
      for (const Held& h : held) {
        FakeDomain::LiveMapping live;
        ASSERT_TRUE(fake->Lookup(h.reg.lkey(), &live)) << "a held mapping was deregistered";
      }
    }
    // Forget mappings the fake no longer has (keeps `known` small).
    if ((op & 1023) == 0) {
      absl::erase_if(known, [&](const auto& kv) {
        FakeDomain::LiveMapping live;
        return !fake->Lookup(kv.first, &live);
      });
    }
  }
  const CacheStats s = cache->stats();
  EXPECT_GT(s.hits, 0u);
  EXPECT_GT(s.misses, 0u);
  EXPECT_GT(s.invalidated_regions, 0u);
  held.clear();
  cache.reset();
  EXPECT_EQ(fake->live_registrations(), 0) << "registrations leaked at teardown";
  munmap(base, kPages * kPage);
  close(dmabuf.fd);
}

INSTANTIATE_TEST_SUITE_P(Seeds, CacheModelTest, ::testing::Values(1, 20251121));

}  // namespace
}  // namespace dmareg
