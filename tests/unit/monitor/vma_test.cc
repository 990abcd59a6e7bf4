// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "monitor/vma.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "gtest/gtest.h"

namespace dmareg::internal {
namespace {

constexpr char kMaps[] =
    "00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/dbus-daemon\n"
    "00651000-00652000 r--p 00051000 08:02 173521      /usr/bin/dbus-daemon\n"
    "00652000-00655000 rw-p 00052000 08:02 173521      /usr/bin/dbus-daemon\n"
    "00e03000-00e24000 rw-p 00000000 00:00 0           [heap]\n"
    "not a line\n"
    "7ffd0000-7fff0000 rw-p 00000000 00:00 0           [stack]\n";

Range R(uint64_t b, uint64_t e) { return *Range::FromBounds(b, e); }

TEST(MappingSpanTest, SpansTheWholeMappingsHoldingTheRange) {
  // Inside one mapping: that mapping.
  absl::StatusOr<Range> s = MappingSpan(kMaps, R(0x401000, 0x402000));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(*s, R(0x400000, 0x452000));
  // Across two adjacent mappings: both.
  s = MappingSpan(kMaps, R(0x651800, 0x653000));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(*s, R(0x651000, 0x655000));
  // Ending exactly at a mapping's end; malformed lines are skipped.
  s = MappingSpan(kMaps, R(0x7ffe0000, 0x7fff0000));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(*s, R(0x7ffd0000, 0x7fff0000));
}

TEST(MappingSpanTest, AHoleOrAnUnmappedRangeIsNotFound) {
  // The gap between 0x452000 and 0x651000 is not mapped.
  EXPECT_EQ(MappingSpan(kMaps, R(0x451000, 0x652000)).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(MappingSpan(kMaps, R(0x500000, 0x501000)).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(MappingSpan(kMaps, R(0x7fff0000, 0x7fff1000)).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(MappingSpan("", R(0x1000, 0x2000)).status().code(), absl::StatusCode::kNotFound);
}

TEST(MappingSpanTest, ReadsThisProcessesMaps) {
  const long page = sysconf(_SC_PAGESIZE);
  void* p = mmap(nullptr, 4 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  const int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  const auto a = reinterpret_cast<uint64_t>(p);
  absl::StatusOr<Range> s = MappingSpanOfSelf(fd, R(a + page, a + 2 * page));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->Contains(R(a, a + 4 * page))) << s->ToString();
  ASSERT_EQ(munmap(p, 4 * page), 0);
  EXPECT_FALSE(MappingSpanOfSelf(fd, R(a + page, a + 2 * page)).ok());
  close(fd);
}

}  // namespace
}  // namespace dmareg::internal
