// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// Hugetlb memory through VFIO: a cache over the edu device maps whole 2 MiB
// pages (the VM harness reserves them) at IOVAs aligned to them, so the
// IOMMU can map them as huge pages too; a request anywhere in a mapped page
// hits; an unmap of the page retires its mapping, and the page mapped there
// next is the one the edu reads. Every byte the edu moves is checked.
#include <sys/mman.h>

#include <cstdint>
#include <cstring>
#include <memory>

#include "device/vfio/vfio_env.h"
#include "dmareg/cache.h"
#include "gtest/gtest.h"

namespace dmareg::device_test {
namespace {

constexpr size_t kPage = 4096;
constexpr size_t k2M = size_t{2} << 20;
constexpr size_t kLen = 2048;  // edu transfers stay inside its 4 KiB buffer
constexpr int kHugetlb2M = MAP_HUGETLB | (21 << MAP_HUGE_SHIFT);

class VfioHugePageTest : public VfioTest {};

TEST_F(VfioHugePageTest, HugetlbIsMappedWholeAtAlignedIovasAndRetiredWhole) {
  Mapping huge(2 * k2M, PROT_READ | PROT_WRITE, kHugetlb2M);
  ASSERT_TRUE(huge.ok()) << "no 2 MiB huge pages: the VM harness reserves them";
  Mapping dst(kPage);
  ASSERT_TRUE(dst.ok());
  char* const first = huge.data();
  char* const second = first + k2M;
  auto cache = RegistrationCache::Create(domain_);
  ASSERT_TRUE(cache.ok()) << cache.status();
  auto w = (*cache)->Acquire(dst.data(), kPage, Access::kLocalWrite);
  ASSERT_TRUE(w.ok()) << w.status();

  FillPattern(first, 2 * k2M, 41);
  char* const from = second + (size_t{1} << 20) + 100;
  auto r = (*cache)->Acquire(from, kLen, {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->addr(), second);
  EXPECT_EQ(r->length(), k2M);
  EXPECT_EQ(r->IovaFor(second) % k2M, 0u) << std::hex << r->IovaFor(second);
  EXPECT_EQ(r->IovaFor(second) >> EduDevice::kDmaAddressBits, 0u);
  const size_t mapped = container_->mappings().size();
  std::memset(dst.data(), 0, kPage);
  ASSERT_TRUE(edu_->ToDevice(r->IovaFor(from), kLen).ok());
  ASSERT_TRUE(edu_->FromDevice(w->IovaFor(dst.data()), kLen).ok());
  EXPECT_EQ(FindMismatch(dst.data(), kLen, 41, k2M + (size_t{1} << 20) + 100), -1);

  // Elsewhere in the page: a hit, no new mapping.
  auto hit = (*cache)->Acquire(second + k2M - kLen, kLen, {});
  ASSERT_TRUE(hit.ok()) << hit.status();
  EXPECT_TRUE(hit->SameMapping(*r));
  EXPECT_EQ(container_->mappings().size(), mapped);

  // The edu writes into the first page, at an offset deep inside it.
  char* const to = first + 300 * kPage + 8;
  auto into = (*cache)->Acquire(to, kLen, Access::kLocalWrite);
  ASSERT_TRUE(into.ok()) << into.status();
  EXPECT_EQ(into->addr(), first);
  EXPECT_EQ(into->IovaFor(first) % k2M, 0u);
  FillPattern(dst.data(), kLen, 42);
  std::memset(to, 0, kLen);
  ASSERT_TRUE(edu_->ToDevice(w->IovaFor(dst.data()), kLen).ok());
  ASSERT_TRUE(edu_->FromDevice(into->IovaFor(to), kLen).ok());
  EXPECT_EQ(FindMismatch(to, kLen, 42), -1);

  // The second page unmapped and mapped anew: the edu reads the new one.
  r->Reset();
  hit->Reset();
  ASSERT_EQ(munmap(second, k2M), 0);
  ASSERT_EQ(mmap(second, k2M, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | kHugetlb2M, -1, 0),
            second);
  FillPattern(second, k2M, 43);
  auto fresh = (*cache)->Acquire(from, kLen, {});
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(fresh->length(), k2M);
  std::memset(dst.data(), 0, kPage);
  ASSERT_TRUE(edu_->ToDevice(fresh->IovaFor(from), kLen).ok());
  ASSERT_TRUE(edu_->FromDevice(w->IovaFor(dst.data()), kLen).ok());
  EXPECT_EQ(FindMismatch(dst.data(), kLen, 43, (size_t{1} << 20) + 100), -1)
      << "the edu read the unmapped page";

  fresh->Reset();
  into->Reset();
  w->Reset();
  cache->reset();
  EXPECT_TRUE(container_->mappings().empty()) << "mappings left behind";
}

}  // namespace
}  // namespace dmareg::device_test
