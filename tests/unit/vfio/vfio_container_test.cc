// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// VfioContainer over FakeVfioOps: the mapping table's rules (refcounts,
// overlaps, exact unmaps, read-only maps, pending maps applied on the first
// attach), the IOMMU info and its capability chain, and nothing leaked.

#include <linux/vfio.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "dmareg/testing/fake_vfio_ops.h"
#include "dmareg/vfio/vfio_domain.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vfio/iommu_info.h"

namespace dmareg {
namespace {

using ::dmareg::testing::FakeVfioOps;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Call = FakeVfioOps::Call;

constexpr char kEdu[] = "0000:00:03.0";
constexpr uint64_t kPage = 4096;

class VfioContainerTest : public ::testing::Test {
 protected:
  void SetUp() override { ops_->AddDevice({.address = kEdu, .group = 5}); }
  void TearDown() override {
    domain_.reset();
    container_.reset();
    EXPECT_EQ(ops_->live_fds(), 0);
    EXPECT_EQ(ops_->live_containers(), 0);
  }
  // A container with the edu device's group in it (the IOMMU set).
  void OpenAttached() {
    auto c = VfioContainer::Open({.ops = ops_});
    ASSERT_TRUE(c.ok()) << c.status();
    container_ = *c;
    auto d = VfioDomain::Open(kEdu, {.container = container_});
    ASSERT_TRUE(d.ok()) << d.status();
    domain_ = *d;
  }
  std::vector<FakeVfioOps::KernelMapping> kernel() {
    return ops_->kernel_mappings(container_->fd());
  }

  std::shared_ptr<FakeVfioOps> ops_ = std::make_shared<FakeVfioOps>();
  std::shared_ptr<VfioContainer> container_;
  std::shared_ptr<VfioDomain> domain_;
};

TEST_F(VfioContainerTest, OpenedContainerHasNoIommuUntilAGroupJoins) {
  auto c = VfioContainer::Open({.ops = ops_});
  ASSERT_TRUE(c.ok()) << c.status();
  container_ = *c;
  EXPECT_FALSE(container_->iommu_set());
  EXPECT_EQ(container_->info().iommu_type, 0);
  auto d = VfioDomain::Open(kEdu, {.container = container_});
  ASSERT_TRUE(d.ok()) << d.status();
  domain_ = *d;
  EXPECT_TRUE(container_->iommu_set());
  const VfioContainerInfo info = container_->info();
  EXPECT_EQ(info.iommu_type, VFIO_TYPE1v2_IOMMU);
  EXPECT_EQ(info.page_sizes, 0x40201000u);
  EXPECT_EQ(info.dma_avail, 65535u);
  EXPECT_THAT(info.iova_ranges, ElementsAre(*Range::FromBounds(0, 0xfee00000),
                                            *Range::FromBounds(0xfef00000, 0x8000000000)));
  EXPECT_THAT(container_->groups(), ElementsAre(5));
}

TEST_F(VfioContainerTest, Type1WhereV2IsAbsent) {
  FakeVfioOps::IommuSpec spec;
  spec.type1v2 = false;
  ops_ = std::make_shared<FakeVfioOps>(spec);
  ops_->AddDevice({.address = kEdu, .group = 5});
  OpenAttached();
  EXPECT_EQ(container_->info().iommu_type, VFIO_TYPE1_IOMMU);
  EXPECT_EQ(ops_->iommu_type(container_->fd()), VFIO_TYPE1_IOMMU);
}

TEST_F(VfioContainerTest, NoType1AtAllIsFailedPrecondition) {
  FakeVfioOps::IommuSpec spec;
  spec.type1v2 = false;
  spec.type1 = false;
  ops_ = std::make_shared<FakeVfioOps>(spec);
  auto c = VfioContainer::Open({.ops = ops_});
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ops_->live_fds(), 0);
}

TEST_F(VfioContainerTest, IdenticalMapsAreRefcountedAndUnmappedAtZero) {
  OpenAttached();
  ASSERT_TRUE(container_->Map(0x10000000, 0x100000, 2 * kPage, true).ok());
  ASSERT_TRUE(container_->Map(0x10000000, 0x100000, 2 * kPage, true).ok());
  EXPECT_EQ(ops_->calls(Call::kMapDma), 1);
  ASSERT_EQ(container_->mappings().size(), 1u);
  EXPECT_EQ(container_->mappings()[0].refs, 2u);
  ASSERT_TRUE(container_->Unmap(0x100000, 2 * kPage).ok());
  EXPECT_EQ(kernel().size(), 1u);
  ASSERT_TRUE(container_->Unmap(0x100000, 2 * kPage).ok());
  EXPECT_TRUE(kernel().empty());
  EXPECT_TRUE(container_->mappings().empty());
  EXPECT_EQ(container_->Unmap(0x100000, 2 * kPage).code(), absl::StatusCode::kNotFound);
}

TEST_F(VfioContainerTest, OverlapIsAlreadyExistsNamingBothWithoutAKernelCall) {
  OpenAttached();
  ASSERT_TRUE(container_->Map(0x10000000, 0x100000, 4 * kPage, true).ok());
  const int maps = ops_->calls(Call::kMapDma);
  // Same IOVA, different VA; and a partial overlap; and same triple read-only.
  for (auto [va, iova, len, w] : std::vector<std::tuple<uint64_t, uint64_t, uint64_t, bool>>{
           {0x20000000, 0x100000, 4 * kPage, true},
           {0x10003000, 0x103000, 2 * kPage, true},
           {0x10000000, 0x100000, 4 * kPage, false}}) {
    absl::Status st = container_->Map(va, iova, len, w);
    EXPECT_EQ(st.code(), absl::StatusCode::kAlreadyExists) << st;
    EXPECT_THAT(st.message(), AllOf(HasSubstr("0x100000"), HasSubstr("overlaps mapping")));
  }
  EXPECT_EQ(ops_->calls(Call::kMapDma), maps);
  EXPECT_EQ(kernel().size(), 1u);
}

TEST_F(VfioContainerTest, KernelEexistWithoutTableEntrySaysAnotherProcess) {
  OpenAttached();
  ops_->InjectMapping(container_->fd(), 0x200000, kPage);
  absl::Status st = container_->Map(0x10000000, 0x200000, kPage, true);
  EXPECT_EQ(st.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(st.message(), HasSubstr("another process"));
  EXPECT_TRUE(container_->mappings().empty());
}

TEST_F(VfioContainerTest, PartialUnmapIsInvalidArgumentAndChangesNothing) {
  OpenAttached();
  ASSERT_TRUE(container_->Map(0x10000000, 0x100000, 4 * kPage, true).ok());
  ASSERT_TRUE(container_->Map(0x20000000, 0x104000, 4 * kPage, true).ok());
  for (auto [iova, len] : std::vector<std::pair<uint64_t, uint64_t>>{
           {0x100000, kPage}, {0x101000, 3 * kPage}, {0x100000, 8 * kPage}}) {
    absl::Status st = container_->Unmap(iova, len);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    EXPECT_THAT(st.message(), HasSubstr("cannot split"));
  }
  EXPECT_EQ(ops_->calls(Call::kUnmapDma), 0);
  EXPECT_EQ(kernel().size(), 2u);
  EXPECT_EQ(container_->mappings().size(), 2u);
}

TEST_F(VfioContainerTest, NotWritableIsMappedReadOnly) {
  OpenAttached();
  ASSERT_TRUE(container_->Map(0x10000000, 0x100000, kPage, false).ok());
  ASSERT_TRUE(container_->Map(0x10001000, 0x101000, kPage, true).ok());
  ASSERT_EQ(kernel().size(), 2u);
  EXPECT_EQ(kernel()[0].flags, uint32_t{VFIO_DMA_MAP_FLAG_READ});
  EXPECT_EQ(kernel()[1].flags, uint32_t{VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE});
}

TEST_F(VfioContainerTest, EnospcIsResourceExhaustedNamingTheLimit) {
  ops_->SetDmaEntryLimit(2);
  OpenAttached();
  EXPECT_EQ(container_->info().dma_avail, 2u);
  ASSERT_TRUE(container_->Map(0x10000000, 0x100000, kPage, true).ok());
  ASSERT_TRUE(container_->Map(0x10001000, 0x101000, kPage, true).ok());
  EXPECT_EQ(container_->info().dma_avail, 0u);
  absl::Status st = container_->Map(0x10002000, 0x102000, kPage, true);
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(st.message(), HasSubstr("dma_entry_limit"));
  EXPECT_EQ(container_->mappings().size(), 2u);
}

TEST_F(VfioContainerTest, BadExtentsAreRefusedBeforeTheKernel) {
  OpenAttached();
  EXPECT_EQ(container_->Map(0x10000000, 0x100000, 0, true).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(container_->Map(0x10000000, 0x100800, kPage, true).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(container_->Map(0x10000000, UINT64_MAX - kPage + 1, kPage, true).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(container_->Map(0x10000000, 0x100000, 100, true).code(),
            absl::StatusCode::kInvalidArgument);
  // The MSI window and beyond the last range: outside the IOMMU's reach,
  // the code a domain gives for them too.
  absl::Status msi = container_->Map(0x10000000, 0xfee00000, kPage, true);
  EXPECT_EQ(msi.code(), absl::StatusCode::kOutOfRange) << msi;
  EXPECT_THAT(msi.message(), HasSubstr("outside VFIO container"));
  EXPECT_EQ(container_->Map(0x10000000, 0x8000000000, kPage, true).code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(ops_->calls(Call::kMapDma), 0);
  EXPECT_TRUE(container_->mappings().empty());
}

TEST_F(VfioContainerTest, PendingMappingsAreAppliedOnFirstAttach) {
  auto c = VfioContainer::Open({.ops = ops_});
  ASSERT_TRUE(c.ok());
  container_ = *c;
  ASSERT_TRUE(container_->Map(0x10000000, 0x100000, kPage, true).ok());
  EXPECT_EQ(ops_->calls(Call::kMapDma), 0);
  ASSERT_EQ(container_->mappings().size(), 1u);
  auto d = VfioDomain::Open(kEdu, {.container = container_});
  ASSERT_TRUE(d.ok()) << d.status();
  domain_ = *d;
  ASSERT_EQ(kernel().size(), 1u);
  EXPECT_EQ(kernel()[0].iova, 0x100000u);
  // The allocator avoids it.
  auto m =
      domain_->RegisterHost({reinterpret_cast<void*>(0x7f0000000000), kPage}, Access::kLocalWrite);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_NE(m->iova, 0x100000u);
  ASSERT_TRUE(domain_->Deregister(*m).ok());
}

TEST_F(VfioContainerTest, PendingMappingThatCannotApplyFailsTheAttachAndChangesNothing) {
  auto c = VfioContainer::Open({.ops = ops_});
  ASSERT_TRUE(c.ok());
  container_ = *c;
  ASSERT_TRUE(container_->Map(0x10000000, 0x100000, kPage, true).ok());
  ASSERT_TRUE(container_->Map(0x10001000, 0xfee00000, kPage, true).ok());  // MSI hole
  auto d = VfioDomain::Open(kEdu, {.container = container_});
  EXPECT_EQ(d.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(d.status().message(), HasSubstr("pending mapping"));
  EXPECT_FALSE(container_->iommu_set());
  EXPECT_TRUE(container_->groups().empty());
  EXPECT_EQ(container_->mappings().size(), 2u);
  EXPECT_EQ(ops_->live_fds(), 1);  // the container's own
  // A kernel failure half-way is undone too.
  ASSERT_TRUE(container_->Unmap(0xfee00000, kPage).ok());
  ASSERT_TRUE(container_->Map(0x10002000, 0x102000, kPage, true).ok());
  ops_->FailNext(Call::kMapDma, 0);       // the first replay succeeds,
  ops_->FailNext(Call::kMapDma, ENOMEM);  // the second fails
  auto again = VfioDomain::Open(kEdu, {.container = container_});
  EXPECT_FALSE(again.ok());
  EXPECT_FALSE(container_->iommu_set());
  EXPECT_EQ(container_->mappings().size(), 2u);
  // And then it works.
  auto ok = VfioDomain::Open(kEdu, {.container = container_});
  ASSERT_TRUE(ok.ok()) << ok.status();
  domain_ = *ok;
  EXPECT_EQ(kernel().size(), 2u);
}

TEST_F(VfioContainerTest, AllocatorWindowClipsToTheNarrowestMask) {
  ops_->AddDevice({.address = "0000:00:04.0", .group = 6});
  OpenAttached();
  EXPECT_EQ(container_->allocator_address_bits(), 64);
  auto narrow = VfioDomain::Open("0000:00:04.0", {.container = container_, .dma_address_bits = 28});
  ASSERT_TRUE(narrow.ok()) << narrow.status();
  EXPECT_EQ(container_->allocator_address_bits(), 28);
  for (const Range& r : container_->allocator_ranges()) EXPECT_LE(r.end(), uint64_t{1} << 28);
  // A wide device's automatic pick lands below the narrow mask too.
  auto m = domain_->RegisterHost({reinterpret_cast<void*>(0x7f0000000000), kPage}, {});
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_LT(m->iova, uint64_t{1} << 28);
  ASSERT_TRUE(domain_->Deregister(*m).ok());
}

// Huge pages stay huge in the IOMMU only at an IOVA as aligned as the VA:
// the allocator's pick is, even right after a small mapping that a plain
// first-fit pick would follow.
TEST_F(VfioContainerTest, PickedIovasAreAsAlignedAsTheVaAndLength) {
  constexpr uint64_t k2M = uint64_t{2} << 20;
  ops_->AddDevice({.address = "0000:00:04.0", .group = 6});
  OpenAttached();
  auto narrow = VfioDomain::Open("0000:00:04.0", {.container = container_, .dma_address_bits = 28});
  ASSERT_TRUE(narrow.ok()) << narrow.status();
  auto small = domain_->RegisterHost({reinterpret_cast<void*>(0x7f0000001000), kPage}, {});
  ASSERT_TRUE(small.ok()) << small.status();
  auto huge = domain_->RegisterHost({reinterpret_cast<void*>(0x7f0000200000), 2 * k2M}, {});
  ASSERT_TRUE(huge.ok()) << huge.status();
  EXPECT_EQ(huge->iova % k2M, 0u) << std::hex << huge->iova;
  EXPECT_LT(huge->iova, uint64_t{1} << 28);
  // Only as aligned as the length: a 4 KiB tail needs no more than 4 KiB.
  auto tail = domain_->RegisterHost({reinterpret_cast<void*>(0x7f0000600000), kPage}, {});
  ASSERT_TRUE(tail.ok()) << tail.status();
  for (const auto& m : {*small, *huge, *tail}) ASSERT_TRUE(domain_->Deregister(m).ok());
}

// ---- GET_INFO parsing ----

std::vector<uint8_t> InfoWithCap(const std::vector<uint8_t>& cap, uint32_t cap_offset) {
  std::vector<uint8_t> b(sizeof(vfio_iommu_type1_info) + cap.size());
  vfio_iommu_type1_info info{};
  info.argsz = static_cast<uint32_t>(b.size());
  info.flags = VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS;
  info.iova_pgsizes = 4096;
  info.cap_offset = cap_offset;
  std::memcpy(b.data(), &info, sizeof(info));
  if (!cap.empty()) std::memcpy(b.data() + sizeof(info), cap.data(), cap.size());
  return b;
}

std::vector<uint8_t> Header(uint16_t id, uint32_t next) {
  std::vector<uint8_t> h(sizeof(vfio_info_cap_header));
  vfio_info_cap_header hdr{id, 1, next};
  std::memcpy(h.data(), &hdr, sizeof(hdr));
  return h;
}

TEST(IommuInfoTest, MalformedChainsAreStatusesNotCrashes) {
  const uint32_t base = sizeof(vfio_iommu_type1_info);
  // A loop, a header past the end, a range count that does not fit, and a
  // cap pointing into the fixed header.
  std::vector<std::vector<uint8_t>> bad = {
      InfoWithCap(Header(99, base), base),
      InfoWithCap({}, base),
      InfoWithCap(Header(99, 0), base + 4),
      InfoWithCap(Header(99, 0), 4),
  };
  std::vector<uint8_t> ranges = Header(VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, 0);
  const uint32_t huge = 0x10000000;
  ranges.resize(16);
  std::memcpy(ranges.data() + 8, &huge, 4);
  bad.push_back(InfoWithCap(ranges, base));
  for (const auto& b : bad) {
    auto info = internal::ParseIommuInfo(b.data(), b.size());
    EXPECT_EQ(info.status().code(), absl::StatusCode::kInvalidArgument) << info.status();
  }
  EXPECT_FALSE(internal::ParseIommuInfo(bad[0].data(), 8).ok());
}

TEST_F(VfioContainerTest, MalformedKernelAnswerFailsTheAttachCleanly) {
  const uint32_t base = sizeof(vfio_iommu_type1_info);
  ops_->SetRawInfo(InfoWithCap(Header(99, base), base));
  auto d = VfioDomain::Open(kEdu, {.ops = ops_});
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(d.status().message(), HasSubstr("capability chain"));
}

TEST_F(VfioContainerTest, NoCapsMeansNoRangesAndUnknownAvail) {
  FakeVfioOps::IommuSpec spec;
  spec.report_ranges = false;
  spec.report_dma_avail = false;
  ops_ = std::make_shared<FakeVfioOps>(spec);
  ops_->AddDevice({.address = kEdu, .group = 5});
  OpenAttached();
  const VfioContainerInfo info = container_->info();
  EXPECT_TRUE(info.iova_ranges.empty());
  EXPECT_FALSE(info.dma_avail.has_value());
  EXPECT_EQ(domain_->capabilities().max_mappings, 0u);
  // Attach, Open's caps, this info(): one call each, no retry without caps.
  EXPECT_EQ(ops_->calls(Call::kGetInfo), 3);
}

TEST_F(VfioContainerTest, GetInfoGrowsItsBufferForTheCaps) {
  OpenAttached();
  const int before = ops_->calls(Call::kGetInfo);
  (void)container_->info();
  EXPECT_EQ(ops_->calls(Call::kGetInfo) - before, 2);  // too small, then right
}

// ---- the fake's type1 semantics the backend relies on ----

TEST_F(VfioContainerTest, FakeUnmapFollowsTheKernel) {
  OpenAttached();
  ASSERT_TRUE(container_->Map(0x10000000, 0x100000, 2 * kPage, true).ok());
  vfio_iommu_type1_dma_unmap u{sizeof(u), 0, 0x101000, kPage};
  EXPECT_EQ(ops_->UnmapDma(container_->fd(), &u), -1);  // bisects: EINVAL, v2
  EXPECT_EQ(errno, EINVAL);
  vfio_iommu_type1_dma_unmap none{sizeof(none), 0, 0x400000, kPage};
  EXPECT_EQ(ops_->UnmapDma(container_->fd(), &none), 0);
  EXPECT_EQ(none.size, 0u);
  EXPECT_EQ(kernel().size(), 1u);
}

}  // namespace
}  // namespace dmareg
