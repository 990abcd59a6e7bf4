// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The cache's paging modes on the real device, decided by what it reports:
// with ODP for RC (rxe on 7.x) a cache in on-demand mode with NO memory
// monitor moves bytes by RDMA WRITE and READ and keeps serving its cached
// MRs after the memory under them is replaced (munmap + mmap, MADV_DONTNEED,
// mremap): the device follows the page tables, so the READ sees the new
// bytes. Without it (rxe on 6.1) on-demand mode is refused at Create and
// automatic mode falls back to pinned MRs, which carry RDMA.

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>

#include "absl/status/status.h"
#include "common/vm_env.h"
#include "device/verbs/device_env.h"
#include "dmareg/cache.h"
#include "dmareg/verbs/verbs_domain.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "verbs/rc_qp.h"

namespace dmareg::device_test {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr size_t kPage = 4096;
constexpr size_t kLen = 16 * kPage;  // small: under TCG every byte is slow
constexpr size_t kPages = kLen / kPage;

class VerbsPagingTest : public RcLoopbackTest {
 protected:
  void ExpectOnDemandWithoutMonitor();
  void ExpectRefusedAndFallback();

  // rxe's on-demand path moves one packet to or from the start of a page
  // (see verbs_odp_test.cc), so every message is one chunk of at most a
  // path MTU at the start of a page; the rest of each page must stay zero.
  size_t Chunk() const {
    return std::min(kPage, size_t{128} << pair_.a->endpoint().mtu);  // IBV_MTU_256 is 1
  }
  static ptrdiff_t FindChunkMismatch(const char* buf, size_t chunk, uint32_t seed) {
    for (size_t i = 0; i < kLen; ++i) {
      const uint8_t want = i % kPage < chunk ? PatternByte(seed, i) : 0;
      if (static_cast<uint8_t>(buf[i]) != want) return static_cast<ptrdiff_t>(i);
    }
    return -1;
  }
  // RDMA READ of every page's chunk of `from` (through `reg`) into `into`
  // (through `local`, zeroed first), then the check against `seed`.
  ptrdiff_t ReadChunks(const Registration& reg, char* from, const Registration& local, char* into,
                       uint32_t seed) {
    std::memset(into, 0, kLen);
    for (size_t p = 0; p < kPages; ++p) {
      absl::Status r = pair_.b->Read(into + p * kPage, Chunk(), local.lkey(),
                                     reg.IovaFor(from + p * kPage), reg.rkey());
      EXPECT_TRUE(r.ok()) << "page " << p << ": " << r;
      if (!r.ok()) return 0;
    }
    return FindChunkMismatch(into, Chunk(), seed);
  }
};

void VerbsPagingTest::ExpectOnDemandWithoutMonitor() {
  const int64_t mrs_before = domain_->live_mrs();
  {
    auto made = RegistrationCache::Create(
        domain_, {.monitoring = Monitoring::kExplicitOnly, .paging = Paging::kOnDemand});
    ASSERT_TRUE(made.ok()) << made.status();
    RegistrationCache& cache = **made;
    ASSERT_EQ(cache.monitor().name(), "explicit");
    Mapping src(kLen), dst(kLen), back(kLen), other(kLen);
    ASSERT_TRUE(src.ok() && dst.ok() && back.ok() && other.ok());
    auto s = cache.Acquire(src.data(), kLen, Access::kRemoteRead);
    auto d = cache.Acquire(dst.data(), kLen, Access::kRemoteWrite);
    auto b = cache.Acquire(back.data(), kLen, Access::kLocalWrite);
    ASSERT_TRUE(s.ok()) << s.status();
    ASSERT_TRUE(d.ok()) << d.status();
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ(domain_->live_mrs(), mrs_before + 3);
    EXPECT_EQ(cache.stats().on_demand_registrations, 3u);

    // WRITE a -> b, one chunk per page, then READ it back: every byte checked.
    const size_t chunk = Chunk();
    FillPattern(src.data(), kLen, 41);
    for (size_t p = 0; p < kPages; ++p) {
      absl::Status w = pair_.a->Write(src.data() + p * kPage, chunk, s->lkey(),
                                      d->IovaFor(dst.data() + p * kPage), d->rkey());
      ASSERT_TRUE(w.ok()) << "page " << p << ": " << w;
    }
    EXPECT_EQ(FindChunkMismatch(dst.data(), chunk, 41), -1) << "WRITE of " << chunk << " bytes";
    EXPECT_EQ(ReadChunks(*s, src.data(), *b, back.data(), 41), -1) << "READ";
    const uint32_t rkey = s->rkey();
    s->Reset();

    char* const addr = src.data();
    // 1. munmap + mmap at the same address; nobody tells the cache.
    ASSERT_TRUE(test::ReplacePages(addr, kLen));
    FillPattern(addr, kLen, 42);
    auto s1 = cache.Acquire(addr, kLen, Access::kRemoteRead);
    ASSERT_TRUE(s1.ok()) << s1.status();
    EXPECT_EQ(s1->rkey(), rkey) << "no monitor: the cached MR is a hit";
    EXPECT_EQ(ReadChunks(*s1, addr, *b, back.data(), 42), -1) << "READ after munmap + mmap";
    s1->Reset();

    // 2. MADV_DONTNEED: the old pages go, new zero pages come on the write.
    ASSERT_EQ(madvise(addr, kLen, MADV_DONTNEED), 0);
    FillPattern(addr, kLen, 43);
    auto s2 = cache.Acquire(addr + kPage, kPage, Access::kRemoteRead);
    ASSERT_TRUE(s2.ok()) << s2.status();
    EXPECT_EQ(s2->rkey(), rkey);
    EXPECT_EQ(ReadChunks(*s2, addr, *b, back.data(), 43), -1) << "READ after MADV_DONTNEED";
    s2->Reset();

    // 3. mremap of other memory onto the registered range.
    FillPattern(other.data(), kLen, 44);
    void* moved = mremap(other.data(), kLen, kLen, MREMAP_MAYMOVE | MREMAP_FIXED, addr);
    ASSERT_EQ(moved, static_cast<void*>(addr)) << std::strerror(errno);
    auto s3 = cache.Acquire(addr, kLen, Access::kRemoteRead);
    ASSERT_TRUE(s3.ok()) << s3.status();
    EXPECT_EQ(s3->rkey(), rkey);
    EXPECT_EQ(ReadChunks(*s3, addr, *b, back.data(), 44), -1) << "READ after mremap";
    s3->Reset();
    // `other`'s old range is unmapped now; its destructor's munmap is harmless.

    const CacheStats st = cache.stats();
    std::printf("  on-demand, no monitor: %u misses, %u hits, %u on-demand registrations\n",
                static_cast<unsigned>(st.misses), static_cast<unsigned>(st.hits),
                static_cast<unsigned>(st.on_demand_registrations));
    EXPECT_EQ(st.misses, 3u);
    EXPECT_EQ(st.hits, 3u);
    EXPECT_EQ(st.monitor_events, 0u);
    EXPECT_EQ(st.invalidations, 0u);
    EXPECT_EQ(cache.paging(), Paging::kOnDemand);
    d->Reset();
    b->Reset();
  }
  EXPECT_EQ(domain_->live_mrs(), mrs_before);

  // Automatic resolves to on-demand here.
  auto automatic = RegistrationCache::Create(
      domain_, {.monitoring = Monitoring::kExplicitOnly, .paging = Paging::kAutomatic});
  ASSERT_TRUE(automatic.ok()) << automatic.status();
  Mapping buf(kPage);
  ASSERT_TRUE(buf.ok());
  auto r = (*automatic)->Acquire(buf.data(), kPage, Access::kLocalWrite);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*automatic)->paging(), Paging::kOnDemand);
  EXPECT_EQ((*automatic)->stats().on_demand_fallbacks, 0u);
}

void VerbsPagingTest::ExpectRefusedAndFallback() {
  const int64_t mrs_before = domain_->live_mrs();
  auto refused = RegistrationCache::Create(
      domain_, {.monitoring = Monitoring::kExplicitOnly, .paging = Paging::kOnDemand});
  ASSERT_FALSE(refused.ok());
  std::printf("  on-demand: %s\n", refused.status().ToString().c_str());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), AllOf(HasSubstr(device_), HasSubstr("on-demand")));

  // Automatic: the kernel refuses the first on-demand MR; pinned from then on.
  auto made = RegistrationCache::Create(domain_, {.paging = Paging::kAutomatic});
  ASSERT_TRUE(made.ok()) << made.status();
  RegistrationCache& cache = **made;
  Mapping src(kLen), dst(kLen);
  ASSERT_TRUE(src.ok() && dst.ok());
  auto s = cache.Acquire(src.data(), kLen, Access::kLocalWrite);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(cache.paging(), Paging::kPinned);
  auto d = cache.Acquire(dst.data(), kLen, Access::kRemoteWrite | Access::kRemoteRead);
  ASSERT_TRUE(d.ok()) << d.status();
  CacheStats st = cache.stats();
  std::printf("  automatic: %s after %u fallback(s)\n", PagingName(cache.paging()),
              static_cast<unsigned>(st.on_demand_fallbacks));
  EXPECT_EQ(st.on_demand_fallbacks, 1u);
  EXPECT_EQ(st.on_demand_registrations, 0u);
  EXPECT_EQ(st.registration_failures, 0u);
  EXPECT_EQ(domain_->live_mrs(), mrs_before + 2);
  // Pinned MRs carry any message: one WRITE of the whole buffer, then READ.
  FillPattern(src.data(), kLen, 51);
  absl::Status w = pair_.a->Write(src.data(), kLen, s->lkey(), d->IovaFor(dst.data()), d->rkey());
  ASSERT_TRUE(w.ok()) << w;
  EXPECT_EQ(FindMismatch(dst.data(), kLen, 51), -1);
  std::memset(src.data(), 0, kLen);
  absl::Status r = pair_.a->Read(src.data(), kLen, s->lkey(), d->IovaFor(dst.data()), d->rkey());
  ASSERT_TRUE(r.ok()) << r;
  EXPECT_EQ(FindMismatch(src.data(), kLen, 51), -1);
  s->Reset();
  d->Reset();
  made->reset();
  EXPECT_EQ(domain_->live_mrs(), mrs_before);
}

TEST_F(VerbsPagingTest, OnDemandWithoutMonitorWhereSupportedAutomaticFallbackElsewhere) {
  const bool odp = domain_->capabilities().on_demand_paging;
  std::printf("  %s: ODP for RC %s\n", device_.c_str(), odp ? "supported" : "not supported");
  test::RecordBranch("odp", odp);
  if (odp) {
    ExpectOnDemandWithoutMonitor();
  } else {
    ExpectRefusedAndFallback();
  }
}

}  // namespace
}  // namespace dmareg::device_test
