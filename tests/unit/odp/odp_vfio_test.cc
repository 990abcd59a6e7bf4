// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// OdpVfioBackend and VfioContainer::ReserveIova over FakeVfioOps: windows
// reserved from the allocator (automatic picks stay out), chunks mapped at
// fixed IOVAs (read-only, upgraded, unmapped, relinked at the same IOVA),
// chunk size against dma_avail, exhaustion, and nothing left behind.

#include <linux/vfio.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "common/test_memory.h"
#include "dmareg/odp/odp_region.h"
#include "dmareg/odp/vfio_backend.h"
#include "dmareg/testing/fake_vfio_ops.h"
#include "dmareg/vfio/vfio_domain.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dmareg {
namespace {

using ::dmareg::testing::FakeVfioOps;
using ::testing::HasSubstr;
using Call = FakeVfioOps::Call;

constexpr char kEdu[] = "0000:00:03.0";
const uint64_t kPage = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));

class OdpVfioTest : public ::testing::Test {
 protected:
  void SetUp() override { ops_->AddDevice({.address = kEdu, .group = 5}); }
  void TearDown() override {
    region_.reset();
    if (backend_) {
      EXPECT_EQ(backend_->windows(), 0u);
      EXPECT_EQ(backend_->linked_chunks(), 0u);
    }
    if (container_) {
      EXPECT_TRUE(container_->reserved_iova().empty());
      EXPECT_TRUE(kernel().empty());
    }
    backend_.reset();
    domain_.reset();
    container_.reset();
    EXPECT_EQ(ops_->live_fds(), 0);
    EXPECT_EQ(ops_->live_containers(), 0);
  }
  void Open(int bits = 28) {
    auto c = VfioContainer::Open({.ops = ops_});
    ASSERT_TRUE(c.ok()) << c.status();
    container_ = *c;
    auto d = VfioDomain::Open(kEdu, {.container = container_, .dma_address_bits = bits});
    ASSERT_TRUE(d.ok()) << d.status();
    domain_ = *d;
    auto b = OdpVfioBackend::Create(container_);
    ASSERT_TRUE(b.ok()) << b.status();
    backend_ = *b;
  }
  void MakeRegion(const test::Mapping& m, AccessFlags access = Access::kLocalWrite) {
    auto r = OdpRegion::Create(backend_, m.data(), m.size(), access);
    ASSERT_TRUE(r.ok()) << r.status();
    region_ = *std::move(r);
  }
  std::vector<FakeVfioOps::KernelMapping> kernel() {
    return ops_->kernel_mappings(container_->fd());
  }
  uint32_t avail() { return container_->info().dma_avail.value_or(0); }

  std::shared_ptr<FakeVfioOps> ops_ = std::make_shared<FakeVfioOps>();
  std::shared_ptr<VfioContainer> container_;
  std::shared_ptr<VfioDomain> domain_;
  std::shared_ptr<OdpVfioBackend> backend_;
  std::unique_ptr<OdpRegion> region_;
};

TEST_F(OdpVfioTest, ReservedIovaIsNeverPickedAutomatically) {
  Open(/*bits=*/40);
  // A window over low IOVAs; memory placed at a VA inside it must not get
  // IOVA = VA (that IOVA belongs to the window's owner).
  auto window = container_->ReserveIova(uint64_t{2} << 30, 2 << 20);
  ASSERT_TRUE(window.ok()) << window.status();
  EXPECT_THAT(container_->reserved_iova(), ::testing::ElementsAre(*window));
  const uint64_t hint = window->begin() + (uint64_t{1} << 30);
  void* p = mmap(reinterpret_cast<void*>(hint), 4 * kPage, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  ASSERT_NE(p, MAP_FAILED) << "address " << std::hex << hint << " taken";
  ASSERT_EQ(reinterpret_cast<uint64_t>(p), hint);
  auto m = domain_->RegisterHost(HostMemory{p, 4 * kPage}, Access::kLocalWrite);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_FALSE(window->Overlaps(*Range::FromLength(m->iova, 4 * kPage))) << std::hex << m->iova;
  // An allocator pick stays out too.
  test::Mapping other(kPage);
  auto m2 = domain_->RegisterHost(HostMemory{other.data(), kPage}, Access::kLocalWrite);
  ASSERT_TRUE(m2.ok()) << m2.status();
  EXPECT_FALSE(window->Overlaps(*Range::FromLength(m2->iova, kPage)));
  // A fixed map inside the window is what a link does.
  ASSERT_TRUE(
      container_->Map(reinterpret_cast<uint64_t>(other.data()), window->begin(), kPage, true).ok());
  ASSERT_TRUE(container_->Unmap(window->begin(), kPage).ok());
  ASSERT_TRUE(domain_->Deregister(*m).ok());
  ASSERT_TRUE(domain_->Deregister(*m2).ok());
  munmap(p, 4 * kPage);

  EXPECT_EQ(container_->ReleaseIova(*Range::FromLength(window->begin(), kPage)).code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(container_->ReleaseIova(*window).ok());
  EXPECT_EQ(container_->ReleaseIova(*window).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(container_->ReserveIova(0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(OdpVfioTest, ReserveNeedsAnAttachedGroupAndSpace) {
  auto c = VfioContainer::Open({.ops = ops_});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)->ReserveIova(kPage).status().code(), absl::StatusCode::kFailedPrecondition);
  auto b = OdpVfioBackend::Create(*c);
  ASSERT_TRUE(b.ok());
  test::Mapping m(kPage);
  EXPECT_EQ(OdpRegion::Create(*b, m.data(), m.size(), Access::kLocalWrite).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(OdpVfioBackend::Create(nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  c->reset();
  b->reset();

  Open(/*bits=*/28);  // 256 MiB of IOVA space
  const size_t big = size_t{512} << 20;
  void* p = mmap(nullptr, big, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  auto r = OdpRegion::Create(backend_, p, big, Access::kLocalWrite);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
  munmap(p, big);
  EXPECT_EQ(backend_->windows(), 0u);
}

TEST_F(OdpVfioTest, LinksAtFixedIovasUpgradesUnlinksAndRelinks) {
  Open();
  test::Mapping mem(8 * kPage);
  MakeRegion(mem);
  EXPECT_EQ(backend_->ChunkBytes({}), 0u);  // unknown window
  const uint64_t iova = region_->iova();
  EXPECT_LT(iova + mem.size(), uint64_t{1} << 28);
  const uint32_t before = avail();
  ASSERT_TRUE(region_->Fault(mem.data() + kPage, kPage, /*write=*/false).ok());
  auto k = kernel();
  ASSERT_EQ(k.size(), 1u);
  EXPECT_EQ(k[0].iova, iova + kPage);
  EXPECT_EQ(k[0].vaddr, reinterpret_cast<uint64_t>(mem.data() + kPage));
  EXPECT_EQ(k[0].size, kPage);
  EXPECT_EQ(k[0].flags, uint32_t{VFIO_DMA_MAP_FLAG_READ});
  EXPECT_EQ(avail(), before - 1);

  // Upgrade: unmapped and mapped again writable, at the same IOVA.
  const int maps = ops_->calls(Call::kMapDma);
  ASSERT_TRUE(region_->Fault(mem.data() + kPage, kPage, /*write=*/true).ok());
  EXPECT_EQ(ops_->calls(Call::kMapDma), maps + 1);
  k = kernel();
  ASSERT_EQ(k.size(), 1u);
  EXPECT_EQ(k[0].iova, iova + kPage);
  EXPECT_EQ(k[0].flags, uint32_t{VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE});
  EXPECT_EQ(region_->stats().upgrades, 1u);
  EXPECT_EQ(avail(), before - 1);

  // Invalidate: unmapped; the next fault maps the same IOVA again.
  ASSERT_TRUE(region_->Invalidate(mem.data(), mem.size()).ok());
  EXPECT_TRUE(kernel().empty());
  EXPECT_EQ(avail(), before);
  ASSERT_TRUE(region_->Fault(mem.data(), mem.size(), /*write=*/true).ok());
  k = kernel();
  ASSERT_EQ(k.size(), 8u);
  for (size_t i = 0; i < 8; ++i) EXPECT_EQ(k[i].iova, iova + i * kPage);
  EXPECT_EQ(region_->iova(), iova);
  EXPECT_EQ(avail(), before - 8);
  region_.reset();  // unmaps and releases the window (checked in TearDown)
  EXPECT_EQ(avail(), before);
}

TEST_F(OdpVfioTest, ChunksAreSizedAgainstDmaAvail) {
  ops_->SetDmaEntryLimit(64);
  Open();
  test::Mapping mem(64 * kPage);
  MakeRegion(mem);
  // A window may use a quarter of the 64 entries: 64 pages in 16 chunks of 4.
  const uint32_t before = avail();
  EXPECT_EQ(before, 64u);
  ASSERT_TRUE(region_->Fault(mem.data(), mem.size(), true).ok());
  EXPECT_EQ(region_->stats().link_calls, 16u);
  EXPECT_EQ(kernel().size(), 16u);
  for (const auto& k : kernel()) EXPECT_EQ(k.size, 4 * kPage);
  EXPECT_EQ(avail(), before - 16);
  EXPECT_EQ(backend_->linked_chunks(), 16u);
}

TEST_F(OdpVfioTest, ExhaustedDmaAvailIsAnErrorBitAndAStatus) {
  ops_->SetDmaEntryLimit(8);
  Open();
  test::Mapping mem(4 * kPage);
  MakeRegion(mem);  // 2 entries for 4 pages: chunks of 2 pages
  // Someone else spends the entries.
  std::vector<DeviceMapping> others;
  test::Mapping filler(8 * kPage);
  for (;;) {
    auto m = domain_->RegisterHost(HostMemory{filler.data() + others.size() * kPage, kPage},
                                   Access::kLocalWrite);
    if (!m.ok()) break;
    others.push_back(*m);
  }
  EXPECT_EQ(avail(), 0u);
  absl::Status st = region_->Fault(mem.data(), kPage, true);
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
  EXPECT_EQ(region_->page_entry(0), kOdpError);
  EXPECT_EQ(region_->page_entry(1), kOdpError);
  EXPECT_EQ(region_->page_entry(2), 0u);
  ASSERT_TRUE(domain_->Deregister(others.back()).ok());
  others.pop_back();
  ASSERT_TRUE(region_->Fault(mem.data(), kPage, true).ok());
  EXPECT_EQ(region_->page_entry(0) & (kOdpError | kOdpDmaMapped), kOdpDmaMapped);
  for (const DeviceMapping& m : others) ASSERT_TRUE(domain_->Deregister(m).ok());
}

TEST_F(OdpVfioTest, FailedUpgradeLeavesTheChunkUnlinked) {
  Open();
  test::Mapping mem(2 * kPage);
  MakeRegion(mem);
  ASSERT_TRUE(region_->Fault(mem.data(), kPage, false).ok());
  ops_->FailNext(Call::kMapDma, EFAULT);
  absl::Status st = region_->Fault(mem.data(), kPage, true);
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr("VFIO_IOMMU_MAP_DMA"));
  EXPECT_TRUE(kernel().empty());
  EXPECT_EQ(backend_->linked_chunks(), 0u);
  EXPECT_EQ(region_->page_entry(0), kOdpError);
  ASSERT_TRUE(region_->Fault(mem.data(), kPage, true).ok());
  EXPECT_EQ(kernel().size(), 1u);
}

TEST_F(OdpVfioTest, ReadOnlyRegionRefusesWriteFaults) {
  Open();
  test::Mapping mem(kPage);
  MakeRegion(mem, Access::kRemoteRead);
  EXPECT_EQ(region_->Fault(mem.data(), kPage, true).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(kernel().empty());
}

}  // namespace
}  // namespace dmareg
