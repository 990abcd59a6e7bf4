// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// OdpRegion over a fake backend that records its calls: a fixed IOVA across
// invalidations, links on demand of only what is not linked, upgrades, the
// error bit, chunk granularity, monitor-driven unlinks, bad input, stats and
// the table's size.

#include "dmareg/odp/odp_region.h"

#include <unistd.h>

#include <cstdint>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "common/test_memory.h"
#include "dmareg/monitor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dmareg {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const uint64_t kPage = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
constexpr uint64_t kWindowIova = 0x10000000;

// Records Link/Unlink as (offset, length, write); `chunk_pages` per chunk.
class FakeOdpBackend final : public OdpBackend {
 public:
  explicit FakeOdpBackend(uint64_t chunk_pages = 1) : chunk_(chunk_pages * kPage) {}
  const std::string& name() const override { return name_; }
  absl::StatusOr<OdpWindow> ReserveWindow(uintptr_t va, uint64_t length, AccessFlags) override {
    if (!reserve_error.ok()) return reserve_error;
    ++windows;
    OdpWindow w;
    w.va = va;
    w.iova = kWindowIova;
    w.length = length;
    w.handle = 7;
    return w;
  }
  void ReleaseWindow(OdpWindow& w) override {
    EXPECT_EQ(w.handle, 7u);
    --windows;
  }
  uint64_t ChunkBytes(const OdpWindow&) const override { return chunk_; }
  absl::Status Link(OdpWindow& w, uint64_t offset, uint64_t length, bool write) override {
    EXPECT_EQ(w.iova, kWindowIova);
    EXPECT_EQ(offset % chunk_, 0u);
    links.emplace_back(offset, length, write);
    if (!link_error.ok()) return link_error;
    return absl::OkStatus();
  }
  absl::Status Unlink(OdpWindow&, uint64_t offset, uint64_t length) override {
    unlinks.emplace_back(offset, length, false);
    return absl::OkStatus();
  }

  std::string name_ = "fake-odp";
  uint64_t chunk_;
  int windows = 0;
  absl::Status reserve_error;
  absl::Status link_error;
  std::vector<std::tuple<uint64_t, uint64_t, bool>> links;
  std::vector<std::tuple<uint64_t, uint64_t, bool>> unlinks;
};

using Call = std::tuple<uint64_t, uint64_t, bool>;

class OdpRegionTest : public ::testing::Test {
 protected:
  void Make(uint64_t chunk_pages, AccessFlags access = Access::kLocalWrite, OdpOptions o = {}) {
    backend_ = std::make_shared<FakeOdpBackend>(chunk_pages);
    auto r = OdpRegion::Create(backend_, mem_.data(), mem_.size(), access, std::move(o));
    ASSERT_TRUE(r.ok()) << r.status();
    region_ = *std::move(r);
    EXPECT_EQ(backend_->windows, 1);
  }
  char* Page(size_t i) { return mem_.data() + i * kPage; }

  test::Mapping mem_{16 * kPage};
  std::shared_ptr<FakeOdpBackend> backend_;
  std::unique_ptr<OdpRegion> region_;
};

TEST_F(OdpRegionTest, FirstFaultLinksOnlyWhatIsNotLinked) {
  Make(1);
  EXPECT_EQ(region_->pages(), 16u);
  EXPECT_EQ(region_->iova(), kWindowIova);
  EXPECT_EQ(region_->IovaFor(Page(3) + 5), kWindowIova + 3 * kPage + 5);
  ASSERT_TRUE(region_->Fault(Page(2), 2 * kPage, false).ok());
  EXPECT_THAT(backend_->links,
              ElementsAre(Call{2 * kPage, kPage, false}, Call{3 * kPage, kPage, false}));
  // Overlapping again: only page 4 is new.
  ASSERT_TRUE(region_->Fault(Page(3), 2 * kPage, false).ok());
  EXPECT_EQ(backend_->links.size(), 3u);
  EXPECT_EQ(backend_->links.back(), (Call{4 * kPage, kPage, false}));
  ASSERT_TRUE(region_->Fault(Page(2) + 1, 100, false).ok());
  EXPECT_EQ(backend_->links.size(), 3u);
  const uint64_t w = region_->page_entry(3);
  EXPECT_NE(w & kOdpValid, 0u);
  EXPECT_NE(w & kOdpDmaMapped, 0u);
  EXPECT_EQ(w & kOdpWrite, 0u);
  EXPECT_EQ(w & kOdpError, 0u);
  EXPECT_EQ(region_->page_entry(5), 0u);
  const OdpStats s = region_->stats();
  EXPECT_EQ(s.faults, 3u);
  EXPECT_EQ(s.linked_pages, 3u);
  EXPECT_EQ(s.link_calls, 3u);
}

TEST_F(OdpRegionTest, IovaStaysAcrossInvalidationsAndRelinks) {
  Make(1);
  ASSERT_TRUE(region_->Fault(Page(0), 4 * kPage, true).ok());
  const uint64_t iova = region_->IovaFor(Page(1));
  ASSERT_TRUE(region_->Invalidate(Page(1), 1).ok());  // rounds out to the page
  EXPECT_THAT(backend_->unlinks, ElementsAre(Call{kPage, kPage, false}));
  EXPECT_EQ(region_->page_entry(1), 0u);
  EXPECT_NE(region_->page_entry(2) & kOdpDmaMapped, 0u);
  EXPECT_EQ(region_->IovaFor(Page(1)), iova);
  ASSERT_TRUE(region_->Fault(Page(0), 4 * kPage, true).ok());
  EXPECT_EQ(backend_->links.size(), 5u);
  EXPECT_EQ(backend_->links.back(), (Call{kPage, kPage, true}));
  EXPECT_EQ(region_->IovaFor(Page(1)), iova);
  const OdpStats s = region_->stats();
  EXPECT_EQ(s.invalidations, 1u);
  EXPECT_EQ(s.unlinked_pages, 1u);
  EXPECT_EQ(s.unlink_calls, 1u);
  EXPECT_EQ(s.linked_pages, 4u);
}

TEST_F(OdpRegionTest, WriteFaultUpgradesReadOnlyPages) {
  Make(1);
  ASSERT_TRUE(region_->Fault(Page(0), 2 * kPage, false).ok());
  ASSERT_TRUE(region_->Fault(Page(1), 2 * kPage, true).ok());
  EXPECT_THAT(backend_->links, ElementsAre(Call{0, kPage, false}, Call{kPage, kPage, false},
                                           Call{kPage, kPage, true}, Call{2 * kPage, kPage, true}));
  EXPECT_NE(region_->page_entry(1) & kOdpWrite, 0u);
  EXPECT_EQ(region_->page_entry(0) & kOdpWrite, 0u);
  // Writable pages serve reads and writes without another link.
  ASSERT_TRUE(region_->Fault(Page(1), 2 * kPage, false).ok());
  ASSERT_TRUE(region_->Fault(Page(1), 2 * kPage, true).ok());
  EXPECT_EQ(backend_->links.size(), 4u);
  const OdpStats s = region_->stats();
  EXPECT_EQ(s.upgrades, 1u);
  EXPECT_EQ(s.linked_pages, 3u);
}

TEST_F(OdpRegionTest, FailedLinkSetsTheErrorBitAndReturnsTheStatus) {
  Make(2);
  ASSERT_TRUE(region_->Fault(Page(0), kPage, false).ok());
  backend_->link_error = absl::ResourceExhaustedError("no dma_avail left");
  absl::Status st = region_->Fault(Page(4), kPage, false);
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(st.message(), HasSubstr("no dma_avail left"));
  EXPECT_EQ(region_->page_entry(4), kOdpError);
  EXPECT_EQ(region_->page_entry(5), kOdpError);
  EXPECT_NE(region_->page_entry(0) & kOdpDmaMapped, 0u);
  // A failed upgrade leaves the chunk unlinked, with the error bit.
  st = region_->Fault(Page(0), kPage, true);
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(region_->page_entry(0), kOdpError);
  EXPECT_EQ(region_->stats().linked_pages, 0u);
  backend_->link_error = absl::OkStatus();
  ASSERT_TRUE(region_->Fault(Page(4), kPage, false).ok());
  EXPECT_EQ(region_->page_entry(4) & (kOdpError | kOdpDmaMapped), kOdpDmaMapped);
}

TEST_F(OdpRegionTest, LinksAndUnlinksWholeChunks) {
  Make(4);                                                      // 4 chunks of 4 pages
  ASSERT_TRUE(region_->Fault(Page(3), 2 * kPage, false).ok());  // pages 3, 4: chunks 0 and 1
  EXPECT_THAT(backend_->links,
              ElementsAre(Call{0, 4 * kPage, false}, Call{4 * kPage, 4 * kPage, false}));
  for (size_t i = 0; i < 8; ++i) EXPECT_NE(region_->page_entry(i) & kOdpDmaMapped, 0u) << i;
  EXPECT_EQ(region_->page_entry(8), 0u);
  EXPECT_EQ(region_->stats().linked_pages, 8u);
  // One page of chunk 1 changed: the whole chunk goes.
  ASSERT_TRUE(region_->Invalidate(Page(6), kPage).ok());
  EXPECT_THAT(backend_->unlinks, ElementsAre(Call{4 * kPage, 4 * kPage, false}));
  for (size_t i = 4; i < 8; ++i) EXPECT_EQ(region_->page_entry(i), 0u) << i;
  EXPECT_EQ(region_->stats().unlinked_pages, 4u);
  // Unlinked chunks cost no backend call.
  ASSERT_TRUE(region_->Invalidate(Page(8), 8 * kPage).ok());
  EXPECT_EQ(backend_->unlinks.size(), 1u);
}

TEST_F(OdpRegionTest, LastChunkIsCutAtTheWindowEnd) {
  test::Mapping small(6 * kPage);
  auto backend = std::make_shared<FakeOdpBackend>(4);
  auto r = OdpRegion::Create(backend, small.data(), small.size(), Access::kLocalWrite);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE((*r)->Fault(small.data() + 5 * kPage, kPage, true).ok());
  EXPECT_THAT(backend->links, ElementsAre(Call{4 * kPage, 2 * kPage, true}));
}

TEST_F(OdpRegionTest, MonitorEventsUnlinkBeforeTheNextFault) {
  auto monitor = ExplicitMonitor::Create();
  ASSERT_TRUE(monitor->Notify(Page(0), kPage).ok());  // before the region: ignored
  Make(1, Access::kLocalWrite, {.monitor = monitor});
  ASSERT_TRUE(region_->Fault(Page(0), 8 * kPage, true).ok());
  ASSERT_TRUE(monitor->Notify(Page(2), 2 * kPage).ok());
  ASSERT_TRUE(monitor->Notify(mem_.data() + mem_.size(), kPage).ok());  // beyond it: ignored
  EXPECT_TRUE(backend_->unlinks.empty());                               // applied lazily
  ASSERT_TRUE(region_->Fault(Page(7), kPage, false).ok());
  EXPECT_THAT(backend_->unlinks,
              ElementsAre(Call{2 * kPage, kPage, false}, Call{3 * kPage, kPage, false}));
  EXPECT_EQ(region_->page_entry(2), 0u);
  EXPECT_EQ(region_->stats().invalidations, 1u);
  ASSERT_TRUE(region_->Fault(Page(2), kPage, true).ok());
  EXPECT_EQ(backend_->links.back(), (Call{2 * kPage, kPage, true}));
}

TEST_F(OdpRegionTest, BadInputIsRefused) {
  Make(1, Access::kRemoteRead);
  EXPECT_EQ(region_->Fault(Page(0), 0, false).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(region_->Fault(Page(0), SIZE_MAX, false).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(region_->Fault(Page(15), 2 * kPage, false).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(region_->Fault(mem_.data() - 1, 2, false).code(), absl::StatusCode::kInvalidArgument);
  absl::Status st = region_->Fault(Page(0), kPage, true);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("read-only"));
  EXPECT_EQ(region_->Invalidate(Page(0), 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(region_->Invalidate(Page(1), UINT64_MAX).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(backend_->links.empty());
  EXPECT_EQ(region_->stats().faults, 0u);

  auto backend = std::make_shared<FakeOdpBackend>(1);
  EXPECT_EQ(OdpRegion::Create(nullptr, Page(0), kPage, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OdpRegion::Create(backend, nullptr, kPage, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OdpRegion::Create(backend, Page(0), 0, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OdpRegion::Create(backend, Page(1), UINT64_MAX - 10, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      OdpRegion::Create(backend, Page(0), kPage, AccessFlags::FromBits(1u << 30)).status().code(),
      absl::StatusCode::kInvalidArgument);
  backend->reserve_error = absl::ResourceExhaustedError("no IOVA space");
  EXPECT_EQ(OdpRegion::Create(backend, Page(0), kPage, {}).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(backend->windows, 0);
}

TEST_F(OdpRegionTest, TableIsEightBytesPerPageAndWindowIsReleased) {
  Make(1);
  EXPECT_EQ(region_->table_bytes(), region_->pages() * sizeof(uint64_t));
  EXPECT_EQ(region_->table_bytes(), 16u * 8u);
  region_.reset();
  EXPECT_EQ(backend_->windows, 0);
}

TEST_F(OdpRegionTest, PfnsAreReadWhereVisible) {
  Make(1);
  mem_.data()[0] = 1;  // present
  ASSERT_TRUE(region_->Fault(Page(0), kPage, false).ok());
  const uint64_t pfn = region_->page_entry(0) & kOdpPfnMask;
  if (region_->pfns_visible()) {
    EXPECT_NE(pfn, 0u);
  } else {
    EXPECT_EQ(pfn, 0u);  // hidden (no CAP_SYS_ADMIN): no PFN, said by the flag
  }
  backend_ = std::make_shared<FakeOdpBackend>(1);
  auto r =
      OdpRegion::Create(backend_, mem_.data(), kPage, Access::kLocalWrite, {.read_pfns = false});
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE((*r)->pfns_visible());
  ASSERT_TRUE((*r)->Fault(mem_.data(), kPage, false).ok());
  EXPECT_EQ((*r)->page_entry(0) & kOdpPfnMask, 0u);
}

}  // namespace
}  // namespace dmareg
