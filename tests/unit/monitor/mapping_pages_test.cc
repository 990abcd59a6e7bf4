// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The page size of the mapping behind an address, both ways the kernel
// tells it (PROCMAP_QUERY, /proc/self/maps + smaps), which must agree. The
// hugetlb cases need huge pages reserved (vm.nr_hugepages); the VM's device
// tests always have them.
#include "monitor/mapping_pages.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <optional>

#include "common/test_memory.h"
#include "gtest/gtest.h"

namespace dmareg::internal {
namespace {

constexpr uint64_t k2M = uint64_t{2} << 20;
const uint64_t kPage = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));

uint64_t Addr(const void* p) { return reinterpret_cast<uint64_t>(p); }

class MappingPagesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fd_ = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd_, 0);
  }
  void TearDown() override { close(fd_); }

  // Every way there is on this kernel, checked to agree; the answer.
  std::optional<MappingPages> Both(uint64_t addr) {
    bool unsupported = false;
    std::optional<MappingPages> query = MappingPagesByQuery(fd_, addr, &unsupported);
    std::optional<MappingPages> maps = MappingPagesFromMaps(fd_, addr);
    if (!unsupported) {
      EXPECT_EQ(query.has_value(), maps.has_value()) << std::hex << addr;
      if (query && maps) {
        EXPECT_EQ(query->page_size, maps->page_size) << std::hex << addr;
        EXPECT_EQ(query->start, maps->start) << std::hex << addr;
        EXPECT_EQ(query->end, maps->end) << std::hex << addr;
      }
    }
    std::optional<MappingPages> at = MappingPagesAt(addr);
    EXPECT_EQ(at.has_value(), maps.has_value());
    return maps;
  }

  int fd_ = -1;
};

TEST_F(MappingPagesTest, AnonymousMemoryIsInBasePages) {
  test::Mapping buf(16 * kPage);
  ASSERT_TRUE(buf.ok());
  std::optional<MappingPages> p = Both(Addr(buf.data() + 5 * kPage));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->page_size, kPage);
  EXPECT_LE(p->start, Addr(buf.data()));
  EXPECT_GE(p->end, Addr(buf.data()) + buf.size());
  const Range span = *Range::FromLength(Addr(buf.data() + kPage), kPage);
  EXPECT_EQ(RoundOutToMappingPages(span), span);
}

TEST_F(MappingPagesTest, FileMemoryThatIsNotHugetlbIsInBasePages) {
  test::SharedMemfd memfd("mapping-pages", 8 * kPage);
  ASSERT_TRUE(memfd.ok());
  std::optional<MappingPages> p = Both(Addr(memfd.data() + kPage));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->page_size, kPage);
}

TEST_F(MappingPagesTest, TransparentHugePagesAreNotHugePagesHere) {
  // THP lives in a base-page mapping, and a partial munmap splits it.
  test::Mapping buf(4 * k2M);
  ASSERT_TRUE(buf.ok());
  (void)madvise(buf.data(), buf.size(), MADV_HUGEPAGE);
  buf.data()[0] = 1;
  std::optional<MappingPages> p = Both(Addr(buf.data()));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->page_size, kPage);
}

TEST_F(MappingPagesTest, NothingMappedIsNoAnswer) {
  test::Mapping buf(3 * kPage);
  ASSERT_TRUE(buf.ok());
  ASSERT_EQ(munmap(buf.data() + kPage, kPage), 0);  // a hole in the middle
  EXPECT_FALSE(Both(Addr(buf.data() + kPage)));
  const Range span = *Range::FromLength(Addr(buf.data() + kPage), kPage);
  EXPECT_EQ(RoundOutToMappingPages(span), span);
  ASSERT_EQ(munmap(buf.data(), kPage), 0);
  ASSERT_EQ(munmap(buf.data() + 2 * kPage, kPage), 0);
  buf.Release();
}

TEST_F(MappingPagesTest, HugetlbMemoryIsInHugePagesAndSpansRoundOutToThem) {
  test::Mapping huge(2 * k2M, PROT_READ | PROT_WRITE, MAP_HUGETLB | (21 << MAP_HUGE_SHIFT));
  if (!huge.ok()) GTEST_SKIP() << "no 2 MiB huge pages reserved (vm.nr_hugepages)";
  huge.data()[0] = 1;
  std::optional<MappingPages> p = Both(Addr(huge.data() + k2M + kPage));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->page_size, k2M);
  EXPECT_EQ(p->start, Addr(huge.data()));
  EXPECT_EQ(p->end, Addr(huge.data()) + 2 * k2M);
  // A page inside the second huge page: that huge page.
  EXPECT_EQ(RoundOutToMappingPages(*Range::FromLength(Addr(huge.data() + k2M + kPage), kPage)),
            *Range::FromLength(Addr(huge.data() + k2M), k2M));
  // Across the two: both.
  EXPECT_EQ(RoundOutToMappingPages(*Range::FromLength(Addr(huge.data() + k2M - kPage), 2 * kPage)),
            *Range::FromLength(Addr(huge.data()), 2 * k2M));
}

TEST_F(MappingPagesTest, ASpanFromBasePagesIntoHugetlbRoundsOnlyItsHugeEnd) {
  // Base pages right below a hugetlb mapping: a span across the boundary
  // keeps its base-page start and ends on the huge page's end.
  char* area = static_cast<char*>(
      mmap(nullptr, 3 * k2M, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  ASSERT_NE(area, MAP_FAILED);
  char* const aligned = reinterpret_cast<char*>((Addr(area) + k2M - 1) & ~(k2M - 1));
  char* const huge = aligned + (aligned == area ? k2M : 0);
  void* h =
      mmap(huge, k2M, PROT_READ | PROT_WRITE,
           MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_HUGETLB | (21 << MAP_HUGE_SHIFT), -1, 0);
  char* const below = huge - kPage;
  void* b =
      mmap(below, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  if (h == MAP_FAILED) {
    munmap(area, 3 * k2M);
    GTEST_SKIP() << "no 2 MiB huge pages reserved (vm.nr_hugepages)";
  }
  ASSERT_NE(b, MAP_FAILED);
  huge[0] = 1;
  EXPECT_EQ(RoundOutToMappingPages(*Range::FromLength(Addr(below), 2 * kPage)),
            *Range::FromBounds(Addr(below), Addr(huge) + k2M));
  munmap(area, 3 * k2M);
}

}  // namespace
}  // namespace dmareg::internal
