// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// Many threads acquire, release and invalidate over one shared range at
// once. Run under ThreadSanitizer by scripts/test. Checks, per thread, what
// can be checked without a global order: every handle covers its request
// with the access asked; after a thread's own Invalidate returns, no Acquire
// of that thread returns a mapping that was live before the Invalidate; a
// held handle's mapping stays registered; and at the end the books agree
// and nothing leaks.

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "dmareg/cache.h"
#include "dmareg/testing/fake_domain.h"
#include "gtest/gtest.h"

namespace dmareg {
namespace {

using testing::FakeDomain;

const uintptr_t kPage = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
constexpr size_t kPages = 256;  // small: threads collide often
constexpr int kThreads = 8;
constexpr int kOpsPerThread = 50000;

TEST(CacheStressTest, ConcurrentAcquireReleaseInvalidate) {
  auto fake = std::make_shared<FakeDomain>();
  auto cache =
      RegistrationCache::Create(fake, {.max_regions = 64, .monitoring = Monitoring::kExplicitOnly})
          .value();
  char* base = static_cast<char*>(
      mmap(nullptr, kPages * kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  ASSERT_NE(base, MAP_FAILED);
  const uintptr_t b0 = reinterpret_cast<uintptr_t>(base);
  std::atomic<int> failures{0};

  auto worker = [&](int id) {
    std::mt19937_64 rng(id * 7919 + 1);
    std::vector<Registration> held;
    absl::flat_hash_set<uint32_t> forbidden;  // live before my Invalidate
    for (int op = 0; op < kOpsPerThread; ++op) {
      const unsigned kind = rng() % 100;
      const uintptr_t addr = b0 + (rng() % (kPages - 8)) * kPage + rng() % kPage;
      const size_t len = 1 + rng() % (4 * kPage);
      if (kind < 70) {
        const AccessFlags want = AccessFlags::FromBits(rng() % 16);
        auto r = cache->Acquire(reinterpret_cast<void*>(addr), len, want);
        if (!r.ok()) {
          // Every other thread may hold its 8 handles: the cache can be full.
          if (r.status().code() != absl::StatusCode::kResourceExhausted) failures++;
          continue;
        }
        const uintptr_t a = reinterpret_cast<uintptr_t>(r->addr());
        if (a > addr || a + r->length() < addr + len) failures++;
        if (!AccessSatisfies(r->access(), NormalizeAccess(want))) failures++;
        if (forbidden.contains(r->lkey())) failures++;
        FakeDomain::LiveMapping live;
        if (!fake->Lookup(r->lkey(), &live)) failures++;
        if (held.size() < 8) held.push_back(std::move(*r));
      } else if (kind < 90) {
        if (!held.empty()) {
          FakeDomain::LiveMapping live;
          if (!fake->Lookup(held.back().lkey(), &live)) failures++;
          held.pop_back();
        }
      } else {
        // Mappings this thread holds over the range (registered before the
        // Invalidate, so certainly covered by it) must never come back.
        const uintptr_t ia = addr & ~(kPage - 1);
        const uintptr_t ib = (addr + len + kPage - 1) & ~(kPage - 1);
        std::vector<uint32_t> before;
        for (const Registration& h : held) {
          const uintptr_t a = reinterpret_cast<uintptr_t>(h.addr());
          if (a < ib && ia < a + h.length()) before.push_back(h.lkey());
        }
        if (!cache->Invalidate(reinterpret_cast<void*>(addr), len).ok()) failures++;
        forbidden.insert(before.begin(), before.end());
      }
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) threads.emplace_back(worker, i);
  for (auto& t : threads) t.join();

  EXPECT_EQ(failures.load(), 0);
  const CacheStats s = cache->stats();
  EXPECT_EQ(static_cast<int64_t>(s.live_regions), fake->live_registrations());
  EXPECT_EQ(s.referenced_regions, 0u);
  EXPECT_LE(s.live_regions, 64u);
  EXPECT_GT(s.hits, 0u);
  cache.reset();
  EXPECT_EQ(fake->live_registrations(), 0);
  munmap(base, kPages * kPage);
}

// Handles released on other threads than the one that acquired them, while
// the owner destroys the cache: the last release must still clean up.
TEST(CacheStressTest, HandlesReleasedElsewhereWhileTheCacheGoes) {
  auto fake = std::make_shared<FakeDomain>();
  auto cache = RegistrationCache::Create(fake, {.monitoring = Monitoring::kExplicitOnly}).value();
  std::vector<char> buf(64 * kPage);
  std::vector<Registration> regs;
  for (int i = 0; i < 32; ++i) {
    regs.push_back(cache->Acquire(buf.data() + i * 2 * kPage, kPage, {}).value());
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    std::vector<Registration> mine;
    for (int i = t; i < 32; i += 4) mine.push_back(std::move(regs[i]));
    threads.emplace_back([m = std::move(mine)]() mutable { m.clear(); });
  }
  cache.reset();
  for (auto& t : threads) t.join();
  EXPECT_EQ(fake->live_registrations(), 0);
}

}  // namespace
}  // namespace dmareg
