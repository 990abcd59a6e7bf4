// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The verbs backends of the on-demand IOVA cache on the real device, under
// an OdpRegion. Pinned (every device): the memory is replaced, the region
// invalidated, and the next fault registers again at the SAME IOVA with a
// new rkey; an RDMA READ there sees the new pages. On-demand (where the
// device has ODP for RC, else Create is refused clearly): one ODP MR per
// window whose IOVA and keys survive the replacement, READ sees the new
// pages after the relink (a prefetch).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>

#include "absl/status/status.h"
#include "device/verbs/device_env.h"
#include "dmareg/odp/odp_region.h"
#include "dmareg/odp/verbs_backend.h"
#include "dmareg/verbs/verbs_domain.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "verbs/rc_qp.h"

namespace dmareg::device_test {
namespace {

using ::testing::HasSubstr;

constexpr size_t kPage = 4096;
constexpr size_t kLen = 16 * kPage;

class VerbsOdpBackendTest : public RcLoopbackTest {};

TEST_F(VerbsOdpBackendTest, PinnedBackendRegistersAgainAtTheSameIova) {
  const int64_t mrs_before = domain_->live_mrs();
  auto backend = OdpVerbsPinnedBackend::Create(domain_);
  ASSERT_TRUE(backend.ok()) << backend.status();
  Mapping src(kLen), dst(kLen);
  ASSERT_TRUE(src.ok() && dst.ok());
  auto d = cache_->Acquire(dst.data(), kLen, Access::kLocalWrite);
  ASSERT_TRUE(d.ok()) << d.status();
  {
    auto region = OdpRegion::Create(*backend, src.data(), kLen, Access::kRemoteRead);
    ASSERT_TRUE(region.ok()) << region.status();
    OdpRegion& r = **region;
    const uint64_t iova = r.IovaFor(src.data());
    FillPattern(src.data(), kLen, 61);
    ASSERT_TRUE(r.Fault(src.data(), kLen, /*write=*/false).ok());
    const uint32_t rkey = r.rkey();
    const uint64_t pfn0 = r.page_entry(0) & kOdpPfnMask;
    absl::Status rd = pair_.b->Read(dst.data(), kLen, d->lkey(), iova, rkey);
    ASSERT_TRUE(rd.ok()) << rd;
    EXPECT_EQ(FindMismatch(dst.data(), kLen, 61), -1);

    ASSERT_TRUE(test::ReplacePages(src.data(), kLen));
    FillPattern(src.data(), kLen, 62);
    ASSERT_TRUE(r.Invalidate(src.data(), kLen).ok());
    EXPECT_EQ(r.rkey(), 0u);
    ASSERT_TRUE(r.Fault(src.data(), kPage, /*write=*/false).ok());
    EXPECT_EQ(r.IovaFor(src.data()), iova) << "the IOVA moved";
    EXPECT_NE(r.rkey(), rkey) << "registered again: new keys";
    if (r.pfns_visible()) {  // the old frames are still pinned: the new ones differ
      EXPECT_NE(r.page_entry(0) & kOdpPfnMask, pfn0) << "same page frame";
    }
    std::memset(dst.data(), 0, kLen);
    rd = pair_.b->Read(dst.data(), kLen, d->lkey(), iova, r.rkey());
    ASSERT_TRUE(rd.ok()) << rd;
    EXPECT_EQ(FindMismatch(dst.data(), kLen, 62), -1) << "READ at the same IOVA saw old pages";
    EXPECT_EQ((*backend)->registrations(), 2);
    EXPECT_EQ((*backend)->live_mrs(), 1);
    std::printf("  pinned window: IOVA %#llx, rkey %#x -> %#x, PFNs %s\n",
                static_cast<unsigned long long>(iova), rkey, r.rkey(),
                r.pfns_visible() ? "visible" : "hidden");
  }
  EXPECT_EQ((*backend)->live_mrs(), 0);
  d->Reset();
  cache_->Flush();
  EXPECT_EQ(domain_->live_mrs(), mrs_before);
}

// rxe's on-demand path moves one packet at the start of a page (see
// verbs_odp_test.cc): READ each page's first chunk.
ptrdiff_t ReadChunks(rc::RcLoopback& pair, const OdpRegion& r, char* from, char* into,
                     uint32_t lkey, uint32_t seed) {
  const size_t chunk = std::min(kPage, size_t{128} << pair.a->endpoint().mtu);
  std::memset(into, 0, kLen);
  for (size_t p = 0; p < kLen / kPage; ++p) {
    absl::Status s =
        pair.b->Read(into + p * kPage, chunk, lkey, r.IovaFor(from + p * kPage), r.rkey());
    EXPECT_TRUE(s.ok()) << "page " << p << ": " << s;
    if (!s.ok()) return 0;
  }
  for (size_t i = 0; i < kLen; ++i) {
    const uint8_t want = i % kPage < chunk ? PatternByte(seed, i) : 0;
    if (static_cast<uint8_t>(into[i]) != want) return static_cast<ptrdiff_t>(i);
  }
  return -1;
}

TEST_F(VerbsOdpBackendTest, OnDemandBackendWhereSupported) {
  auto backend = OdpVerbsBackend::Create(domain_);
  if (!domain_->capabilities().on_demand_paging) {
    ASSERT_FALSE(backend.ok());
    std::printf("  on-demand backend: %s\n", backend.status().ToString().c_str());
    EXPECT_EQ(backend.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(backend.status().message(), HasSubstr("no ODP for RC"));
    return;
  }
  ASSERT_TRUE(backend.ok()) << backend.status();
  const int64_t mrs_before = domain_->live_mrs();
  Mapping src(kLen), dst(kLen);
  ASSERT_TRUE(src.ok() && dst.ok());
  auto d = cache_->Acquire(dst.data(), kLen, Access::kLocalWrite);
  ASSERT_TRUE(d.ok()) << d.status();
  {
    auto region = OdpRegion::Create(*backend, src.data(), kLen, Access::kRemoteRead);
    ASSERT_TRUE(region.ok()) << region.status();
    OdpRegion& r = **region;
    EXPECT_EQ(domain_->live_mrs(), mrs_before + 2);  // the window's MR and dst's
    const uint64_t iova = r.IovaFor(src.data());
    const uint32_t rkey = r.rkey();
    FillPattern(src.data(), kLen, 71);
    ASSERT_TRUE(r.Fault(src.data(), kLen, /*write=*/false).ok());
    std::printf("  on-demand window: implicit ODP %s, prefetch by %s\n",
                (*backend)->implicit() ? "yes" : "no",
                (*backend)->prefetch() == OdpVerbsBackend::Prefetch::kAdviseMr ? "ibv_advise_mr"
                                                                               : "CPU pre-touch");
    EXPECT_EQ(ReadChunks(pair_, r, src.data(), dst.data(), d->lkey(), 71), -1);

    ASSERT_TRUE(test::ReplacePages(src.data(), kLen));
    FillPattern(src.data(), kLen, 72);
    ASSERT_TRUE(r.Invalidate(src.data(), kLen).ok());
    ASSERT_TRUE(r.Fault(src.data(), kLen, /*write=*/false).ok());
    EXPECT_EQ(r.IovaFor(src.data()), iova);
    EXPECT_EQ(r.rkey(), rkey) << "the on-demand MR stays";
    EXPECT_EQ(ReadChunks(pair_, r, src.data(), dst.data(), d->lkey(), 72), -1)
        << "READ after the replacement saw old pages";
  }
  EXPECT_EQ((*backend)->window_mrs(), 0);
  d->Reset();
  cache_->Flush();
  EXPECT_EQ(domain_->live_mrs(), mrs_before);
}

}  // namespace
}  // namespace dmareg::device_test
