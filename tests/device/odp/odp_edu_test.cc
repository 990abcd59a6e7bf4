// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The on-demand IOVA cache over VFIO on qemu's edu DMA engine: the first
// access links, the edu copies through the window and every byte is
// checked; the memory is replaced at the same address, the monitor's event
// unlinks, the next fault relinks, and DMA at the SAME IOVA sees the new
// pages. A read-only link keeps the device from writing until a write
// fault upgrades it. dma_avail is read before and after.
#include <sys/mman.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>

#include "absl/status/status.h"
#include "device/vfio/vfio_env.h"
#include "dmareg/monitor.h"
#include "dmareg/odp/odp_region.h"
#include "dmareg/odp/vfio_backend.h"
#include "gtest/gtest.h"

namespace dmareg::device_test {
namespace {

constexpr size_t kPage = 4096;
constexpr size_t kLen = 2048;  // edu transfers stay inside its 4 KiB buffer
constexpr size_t kPages = 4;   // page 0: the device reads; page 2: it writes

// Anonymous memory that the test replaces at the same address.
struct Anon {
  Anon() {
    void* p =
        mmap(nullptr, kPages * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    base = p == MAP_FAILED ? nullptr : static_cast<char*>(p);
  }
  ~Anon() {
    if (base != nullptr) munmap(base, kPages * kPage);
  }
  // munmap + mmap at the same address; false if another mapping took it.
  bool Replace() {
    if (munmap(base, kPages * kPage) != 0) return false;
    void* p = mmap(base, kPages * kPage, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (p != base) {
      if (p != MAP_FAILED) munmap(p, kPages * kPage);
      base = nullptr;
      return false;
    }
    return true;
  }
  char* page(size_t i) const { return base + i * kPage; }
  char* base = nullptr;
};

class OdpEduTest : public VfioTest {
 protected:
  void SetUp() override {
    VfioTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    auto b = OdpVfioBackend::Create(container_);
    ASSERT_TRUE(b.ok()) << b.status();
    backend_ = *b;
    ASSERT_NE(mem_.base, nullptr);
    avail_before_ = container_->info().dma_avail.value_or(0);
    ASSERT_GT(avail_before_, 0u) << "the kernel reports no dma_avail";
  }
  void TearDown() override {
    region_.reset();
    if (backend_) {
      EXPECT_EQ(backend_->windows(), 0u);
      EXPECT_TRUE(container_->mappings().empty());
      EXPECT_TRUE(container_->reserved_iova().empty());
      EXPECT_EQ(container_->info().dma_avail.value_or(0), avail_before_);
    }
    backend_.reset();
    VfioTest::TearDown();
  }
  uint32_t Avail() { return container_->info().dma_avail.value_or(0); }
  // The edu reads page 0 at its IOVA and writes page 2 at its IOVA; page 2
  // must then hold `seed`'s pattern.
  void ExpectCopy(uint32_t seed) {
    FillPattern(mem_.page(0), kLen, seed);
    std::memset(mem_.page(2), 0, kPage);
    ASSERT_TRUE(edu_->ToDevice(region_->IovaFor(mem_.page(0)), kLen).ok());
    ASSERT_TRUE(edu_->FromDevice(region_->IovaFor(mem_.page(2)), kLen).ok());
    EXPECT_EQ(FindMismatch(mem_.page(2), kLen, seed), -1);
  }

  Anon mem_;
  std::shared_ptr<OdpVfioBackend> backend_;
  std::unique_ptr<OdpRegion> region_;
  uint32_t avail_before_ = 0;
};

TEST_F(OdpEduTest, ReplacedMemoryIsRelinkedAtTheSameIova) {
  // Decided by capability: the kernel's unmap events where userfaultfd is
  // offered, else the test tells an explicit monitor.
  std::shared_ptr<MemoryMonitor> monitor;
  auto uffd = UserfaultfdMonitor::Create();
  const bool kernel_events = uffd.ok();
  if (kernel_events) {
    monitor = *uffd;
  } else {
    monitor = ExplicitMonitor::Create();
    std::fprintf(stderr, "userfaultfd refused (%s): explicit monitor\n",
                 uffd.status().ToString().c_str());
  }
  auto r = OdpRegion::Create(backend_, mem_.base, kPages * kPage, Access::kLocalWrite,
                             {.monitor = monitor});
  ASSERT_TRUE(r.ok()) << r.status();
  region_ = *std::move(r);
  const uint64_t iova = region_->iova();
  EXPECT_LT(iova + kPages * kPage, uint64_t{1} << EduDevice::kDmaAddressBits);

  ASSERT_TRUE(region_->Fault(mem_.page(0), kPage, /*write=*/false).ok());
  ASSERT_TRUE(region_->Fault(mem_.page(2), kPage, /*write=*/true).ok());
  EXPECT_EQ(container_->mappings().size(), 2u);
  EXPECT_EQ(Avail(), avail_before_ - 2);
  if (region_->pfns_visible()) {
    EXPECT_NE(region_->page_entry(0) & kOdpPfnMask, 0u);
  }
  ExpectCopy(1);

  ASSERT_TRUE(mem_.Replace()) << "the address was taken meanwhile";
  if (!kernel_events) {
    ASSERT_TRUE(monitor->Notify(mem_.base, kPages * kPage).ok());
  }
  // The event is applied by the next fault: both chunks unlinked, then
  // relinked at the same IOVAs over the new pages.
  ASSERT_TRUE(region_->Fault(mem_.page(0), kPage, false).ok());
  ASSERT_TRUE(region_->Fault(mem_.page(2), kPage, true).ok());
  const OdpStats s = region_->stats();
  EXPECT_GE(s.invalidations, 1u);
  EXPECT_EQ(s.unlinked_pages, 2u);
  EXPECT_EQ(s.link_calls, 4u);
  EXPECT_EQ(region_->iova(), iova);
  EXPECT_EQ(container_->mappings().size(), 2u);
  EXPECT_EQ(Avail(), avail_before_ - 2);
  ExpectCopy(2);  // the same IOVAs reach the new pages
}

TEST_F(OdpEduTest, ReadOnlyLinkThenWriteUpgrade) {
  auto r = OdpRegion::Create(backend_, mem_.base, kPages * kPage, Access::kLocalWrite);
  ASSERT_TRUE(r.ok()) << r.status();
  region_ = *std::move(r);
  ASSERT_TRUE(region_->Fault(mem_.page(0), kPage, false).ok());
  ASSERT_TRUE(region_->Fault(mem_.page(2), kPage, false).ok());  // read-only
  EXPECT_EQ(region_->page_entry(2) & kOdpWrite, 0u);
  FillPattern(mem_.page(0), kLen, 3);
  std::memset(mem_.page(2), 0x5a, kPage);
  ASSERT_TRUE(edu_->ToDevice(region_->IovaFor(mem_.page(0)), kLen).ok());
  ASSERT_TRUE(edu_->FromDevice(region_->IovaFor(mem_.page(2)), kLen).ok());  // IOMMU faults it
  for (size_t i = 0; i < kPage; ++i) {
    ASSERT_EQ(static_cast<uint8_t>(mem_.page(2)[i]), 0x5a) << "the device wrote byte " << i;
  }
  ASSERT_TRUE(region_->Fault(mem_.page(2), kPage, true).ok());  // upgrade
  EXPECT_NE(region_->page_entry(2) & kOdpWrite, 0u);
  EXPECT_EQ(region_->stats().upgrades, 1u);
  EXPECT_EQ(Avail(), avail_before_ - 2);
  ExpectCopy(4);
}

}  // namespace
}  // namespace dmareg::device_test
