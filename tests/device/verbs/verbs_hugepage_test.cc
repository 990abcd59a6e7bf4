// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// Huge pages on a real RDMA device. Hugetlb memory (2 MiB and 1 GiB pages,
// which the VM harness reserves) is registered in whole huge pages: the
// kernel maps and unmaps it in no less, so a request for a few bytes gets
// the huge page around them, a request anywhere in it hits, and an unmap of
// the page (seen by the cache's default monitor) retires the mapping, so the
// pages mapped there next are the ones the device reads. Transparent huge
// pages live in base-page mappings: registered in base pages, and a partial
// munmap (which splits the huge page) retires just what it touched.
// RDMA WRITE and READ through every mapping, every byte checked.

#include <sys/mman.h>

#include <cstdint>
#include <cstring>

#include "device/verbs/device_env.h"
#include "dmareg/cache.h"
#include "dmareg/verbs/verbs_domain.h"
#include "gtest/gtest.h"
#include "verbs/rc_qp.h"

namespace dmareg::device_test {
namespace {

constexpr size_t kPage = 4096;
constexpr size_t k2M = size_t{2} << 20;
constexpr size_t k1G = size_t{1} << 30;
constexpr size_t kMove = 64 * 1024;  // bytes moved per check: TCG is slow

int Hugetlb(int shift) { return MAP_HUGETLB | (shift << MAP_HUGE_SHIFT); }

class VerbsHugePageTest : public RcLoopbackTest {
 protected:
  // Reads kMove bytes at `at` through `reg` into a local buffer and checks
  // them against pattern `seed` at `index` of it.
  void ExpectRead(const Registration& reg, const char* at, uint32_t seed, size_t index) {
    Mapping local(kMove);
    ASSERT_TRUE(local.ok());
    std::memset(local.data(), 0, kMove);
    auto l = cache_->Acquire(local.data(), kMove, Access::kLocalWrite);
    ASSERT_TRUE(l.ok()) << l.status();
    absl::Status r = pair_.b->Read(local.data(), kMove, l->lkey(), reg.IovaFor(at), reg.rkey());
    ASSERT_TRUE(r.ok()) << r;
    EXPECT_EQ(FindMismatch(local.data(), kMove, seed, index), -1);
  }
  // Writes kMove bytes of pattern `seed` to `at` through `reg`.
  void Write(const Registration& reg, char* at, uint32_t seed) {
    Mapping local(kMove);
    ASSERT_TRUE(local.ok());
    FillPattern(local.data(), kMove, seed);
    auto l = cache_->Acquire(local.data(), kMove, {});
    ASSERT_TRUE(l.ok()) << l.status();
    absl::Status w = pair_.a->Write(local.data(), kMove, l->lkey(), reg.IovaFor(at), reg.rkey());
    ASSERT_TRUE(w.ok()) << w;
    EXPECT_EQ(FindMismatch(at, kMove, seed), -1);
  }
};

TEST_F(VerbsHugePageTest, HugetlbIsRegisteredHitAndRetiredInWholeHugePages) {
  Mapping huge(2 * k2M, PROT_READ | PROT_WRITE, Hugetlb(21));
  ASSERT_TRUE(huge.ok()) << "no 2 MiB huge pages: the VM harness reserves them";
  char* const first = huge.data();
  char* const second = first + k2M;
  FillPattern(first, 2 * k2M, 11);
  const int64_t mrs = domain_->live_mrs();

  // A few bytes deep in the second page: that whole page.
  auto a = cache_->Acquire(second + 300 * 1024 + 5, 100, Access::kRemoteRead);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->addr(), second);
  EXPECT_EQ(a->length(), k2M);
  // Anywhere else in it: a hit.
  const uint64_t hits = cache_->stats().hits;
  auto b = cache_->Acquire(second + k2M - kPage, kPage, Access::kRemoteRead);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_TRUE(b->SameMapping(*a));
  EXPECT_EQ(cache_->stats().hits, hits + 1);
  ExpectRead(*b, second + k2M - kMove, 11, 2 * k2M - kMove);

  // Across the boundary, for writing: both pages, one MR; WRITE across it.
  auto c = cache_->Acquire(second - 10, 20, Access::kRemoteWrite);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->addr(), first);
  EXPECT_EQ(c->length(), 2 * k2M);
  Write(*c, second - kMove / 2, 12);
  ExpectRead(*c, second - kMove / 2, 12, 0);

  // The second page unmapped (the kernel takes no less) and a new one mapped
  // there: the cache saw the unmap, so the device reads the new page.
  a->Reset();
  b->Reset();
  c->Reset();
  ASSERT_EQ(munmap(second, k2M), 0);
  ASSERT_EQ(mmap(second, k2M, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | Hugetlb(21), -1, 0),
            second);
  FillPattern(second, k2M, 13);
  auto fresh = cache_->Acquire(second + 4 * kPage, kPage, Access::kRemoteRead);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(fresh->addr(), second);
  EXPECT_EQ(fresh->length(), k2M);
  ExpectRead(*fresh, second + 4 * kPage, 13, 4 * kPage);
  fresh->Reset();
  cache_->Flush();
  EXPECT_EQ(domain_->live_mrs(), mrs) << "MRs left behind";
}

TEST_F(VerbsHugePageTest, AGigabytePageIsOneMrAndMovesBytesAnywhereInIt) {
  Mapping huge(k1G, PROT_READ | PROT_WRITE, Hugetlb(30));
  ASSERT_TRUE(huge.ok()) << "no 1 GiB huge page: the VM harness reserves one";
  char* const at = huge.data() + 700 * (size_t{1} << 20) + 12345;
  auto w = cache_->Acquire(at, kMove, Access::kRemoteWrite | Access::kRemoteRead);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->addr(), huge.data());
  EXPECT_EQ(w->length(), k1G);
  Write(*w, at, 21);
  ExpectRead(*w, at, 21, 0);
  // The page's last bytes, through the same MR.
  auto tail = cache_->Acquire(huge.data() + k1G - kMove, kMove, Access::kRemoteRead);
  ASSERT_TRUE(tail.ok()) << tail.status();
  EXPECT_TRUE(tail->SameMapping(*w));
  Write(*w, huge.data() + k1G - kMove, 22);
  ExpectRead(*tail, huge.data() + k1G - kMove, 22, 0);
}

TEST_F(VerbsHugePageTest, TransparentHugePagesAreBasePagesAndSplitOnAPartialUnmap) {
  // A 2 MiB-aligned stretch the kernel may back with a transparent huge page.
  Mapping area(2 * k2M);
  ASSERT_TRUE(area.ok());
  char* const thp = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(area.data()) + k2M - 1) &
                                            ~uintptr_t{k2M - 1});
  ASSERT_EQ(madvise(thp, k2M, MADV_HUGEPAGE), 0);
  FillPattern(thp, k2M, 31);
  auto r = cache_->Acquire(thp + 64 * kPage + 7, 100, Access::kRemoteRead);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->addr(), thp + 64 * kPage);
  EXPECT_EQ(r->length(), kPage);
  auto wide = cache_->Acquire(thp, k2M, Access::kRemoteRead);
  ASSERT_TRUE(wide.ok()) << wide.status();
  ExpectRead(*wide, thp + k2M / 2, 31, k2M / 2);
  // One base page of it replaced (munmap splits a huge page there).
  r->Reset();
  wide->Reset();
  char* const page = thp + 100 * kPage;
  ASSERT_TRUE(test::ReplacePages(page, kPage));
  FillPattern(page, kPage, 32);
  auto again = cache_->Acquire(thp, k2M, Access::kRemoteRead);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->SameMapping(*wide)) << "the unmap inside the huge page went unseen";
  Mapping local(kPage);
  ASSERT_TRUE(local.ok());
  auto l = cache_->Acquire(local.data(), kPage, Access::kLocalWrite);
  ASSERT_TRUE(l.ok()) << l.status();
  ASSERT_TRUE(
      pair_.b->Read(local.data(), kPage, l->lkey(), again->IovaFor(page), again->rkey()).ok());
  EXPECT_EQ(FindMismatch(local.data(), kPage, 32), -1) << "the device read the old page";
}

}  // namespace
}  // namespace dmareg::device_test
