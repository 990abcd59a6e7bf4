// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The dma-buf sources where no device is needed: DmaBuf's ownership of its
// fd and alias (a memfd stands in for the dma-buf), slices, the refusals of
// every source for missing devices and bad sizes, and the probe.

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <utility>

#include "dmareg/dmabuf/dma_heap.h"
#include "dmareg/dmabuf/dmabuf.h"
#include "dmareg/dmabuf/drm_device.h"
#include "dmareg/dmabuf/sources_probe.h"
#include "dmareg/dmabuf/udmabuf.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dmareg {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

bool FdOpen(int fd) { return fcntl(fd, F_GETFD) != -1; }
bool Mapped(void* p, size_t len) { return msync(p, len, MS_ASYNC) == 0; }

int OpenFds() {
  int n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

int NewMemfd(size_t size) {
  const int fd = memfd_create("dmabuf-test", MFD_CLOEXEC);
  if (fd >= 0 && ftruncate(fd, static_cast<off_t>(size)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

class DmaBufSourcesTest : public ::testing::Test {
 protected:
  void SetUp() override { fds_before_ = OpenFds(); }
  void TearDown() override { EXPECT_EQ(OpenFds(), fds_before_) << "fds leaked"; }
  int fds_before_ = 0;
};

TEST_F(DmaBufSourcesTest, OwnsItsFdAndAlias) {
  const int fd = NewMemfd(8192);
  ASSERT_GE(fd, 0);
  void* alias = mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(alias, MAP_FAILED);
  const int alias_fd = dup(fd);
  ASSERT_GE(alias_fd, 0);
  {
    DmaBuf buf(fd, 8192, "memfd", alias, 8192, alias_fd);
    EXPECT_TRUE(buf.valid());
    EXPECT_EQ(buf.fd(), fd);
    EXPECT_EQ(buf.size(), 8192u);
    EXPECT_EQ(buf.alias(), alias);
    EXPECT_EQ(buf.source(), "memfd");
  }
  EXPECT_FALSE(FdOpen(fd));
  EXPECT_FALSE(FdOpen(alias_fd));
  EXPECT_FALSE(Mapped(alias, 8192));
}

TEST_F(DmaBufSourcesTest, MovesLeaveTheSourceEmpty) {
  const int fd = NewMemfd(4096);
  ASSERT_GE(fd, 0);
  DmaBuf a(fd, 4096, "memfd");
  DmaBuf b(std::move(a));
  EXPECT_FALSE(a.valid());  // NOLINT(bugprone-use-after-move): checked on purpose
  EXPECT_EQ(a.size(), 0u);
  EXPECT_EQ(b.fd(), fd);
  EXPECT_TRUE(FdOpen(fd));

  // Assignment closes what the target held.
  const int fd2 = NewMemfd(4096);
  ASSERT_GE(fd2, 0);
  DmaBuf c(fd2, 4096, "memfd");
  c = std::move(b);
  EXPECT_FALSE(FdOpen(fd2));
  EXPECT_EQ(c.fd(), fd);
  EXPECT_FALSE(b.valid());  // NOLINT(bugprone-use-after-move)
  DmaBuf d;
  EXPECT_FALSE(d.valid());
  d = std::move(c);
  EXPECT_EQ(d.fd(), fd);
  EXPECT_TRUE(FdOpen(fd));
}

TEST_F(DmaBufSourcesTest, ReleaseFdGivesUpTheFdButKeepsTheAlias) {
  const int fd = NewMemfd(4096);
  ASSERT_GE(fd, 0);
  void* alias = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(alias, MAP_FAILED);
  int released = -1;
  {
    DmaBuf buf(fd, 4096, "memfd", alias, 4096);
    released = buf.ReleaseFd();
    EXPECT_EQ(released, fd);
    EXPECT_FALSE(buf.valid());
    EXPECT_EQ(buf.ReleaseFd(), -1);
    EXPECT_EQ(buf.alias(), alias);
  }
  EXPECT_TRUE(FdOpen(released));
  EXPECT_FALSE(Mapped(alias, 4096));
  close(released);
}

TEST_F(DmaBufSourcesTest, SliceCarriesFdOffsetLengthAndAlias) {
  const int fd = NewMemfd(16384);
  ASSERT_GE(fd, 0);
  void* alias = mmap(nullptr, 16384, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(alias, MAP_FAILED);
  DmaBuf buf(fd, 16384, "memfd", alias, 16384);
  DmaBufMemory s = buf.Slice(4096, 100);
  EXPECT_EQ(s.fd, fd);
  EXPECT_EQ(s.offset, 4096u);
  EXPECT_EQ(s.length, 100u);
  EXPECT_EQ(s.alias, alias);  // the alias is of byte 0, whatever the offset
  EXPECT_FALSE(s.iova.has_value());
  DmaBufMemory all = buf.All();
  EXPECT_EQ(all.offset, 0u);
  EXPECT_EQ(all.length, 16384u);
  EXPECT_TRUE(ValidateDmaBufMemory(all).ok());

  DmaBuf no_alias(NewMemfd(4096), 4096, "memfd");
  EXPECT_EQ(no_alias.All().alias, nullptr);
  // A released buffer's slice has no fd: validation refuses it.
  close(no_alias.ReleaseFd());
  EXPECT_EQ(ValidateDmaBufMemory(no_alias.All()).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(DmaBufSourcesTest, MissingDevicesAreNotFoundNamingThePath) {
  absl::StatusOr<DrmDevice> drm = DrmDevice::Open("/nonexistent/dri/card7");
  EXPECT_EQ(drm.status().code(), absl::StatusCode::kNotFound) << drm.status();
  EXPECT_THAT(drm.status().message(), HasSubstr("/nonexistent/dri/card7"));
  EXPECT_THAT(drm.status().message(), HasSubstr("ENOENT"));

  absl::StatusOr<UdmabufDevice> u = UdmabufDevice::Open("/nonexistent/udmabuf");
  EXPECT_EQ(u.status().code(), absl::StatusCode::kNotFound) << u.status();
  EXPECT_THAT(u.status().message(), HasSubstr("/nonexistent/udmabuf"));
  EXPECT_THAT(u.status().message(), HasSubstr("udmabuf"));

  absl::StatusOr<DmaHeap> h = DmaHeap::Open("no-such-heap-for-dmareg");
  EXPECT_EQ(h.status().code(), absl::StatusCode::kNotFound) << h.status();
  EXPECT_THAT(h.status().message(), HasSubstr("/dev/dma_heap/no-such-heap-for-dmareg"));
}

TEST_F(DmaBufSourcesTest, BadHeapNamesAreRefusedBeforeAnyOpen) {
  for (const char* name : {"", "..", ".", "../../dev/null", "a/b"}) {
    absl::StatusOr<DmaHeap> h = DmaHeap::Open(name);
    EXPECT_EQ(h.status().code(), absl::StatusCode::kInvalidArgument) << name << ": " << h.status();
  }
}

TEST_F(DmaBufSourcesTest, ANonDrmFileIsNoCard) {
  absl::StatusOr<DrmDevice> drm = DrmDevice::Open("/dev/null");
  EXPECT_EQ(drm.status().code(), absl::StatusCode::kFailedPrecondition) << drm.status();
  EXPECT_THAT(drm.status().message(), HasSubstr("/dev/null"));
}

// /dev/null opens like any device node: what udmabuf refuses before the
// ioctl, and the ioctl's own refusal, with the memfd closed again.
TEST_F(DmaBufSourcesTest, UdmabufAllocateChecksTheSize) {
  absl::StatusOr<UdmabufDevice> dev = UdmabufDevice::Open("/dev/null");
  ASSERT_TRUE(dev.ok()) << dev.status();
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  for (uint64_t size : {uint64_t{0}, page - 1, page + 1, ~uint64_t{0} & ~(page - 1)}) {
    absl::StatusOr<DmaBuf> buf = dev->Allocate(size);
    EXPECT_EQ(buf.status().code(), absl::StatusCode::kInvalidArgument) << size;
    EXPECT_THAT(buf.status().message(), HasSubstr(std::to_string(size) + " bytes"));
  }
  absl::StatusOr<DmaBuf> buf = dev->Allocate(page);
  EXPECT_FALSE(buf.ok());
  EXPECT_THAT(std::string(buf.status().message()), StartsWith("UDMABUF_CREATE on /dev/udmabuf"));
  EXPECT_THAT(buf.status().message(), HasSubstr(std::to_string(page) + " bytes"));
}

TEST_F(DmaBufSourcesTest, MappingThroughTheFd) {
  EXPECT_EQ(DmaBufMapping::Map(-1, 4096, false).status().code(),
            absl::StatusCode::kInvalidArgument);
  const int fd = NewMemfd(8192);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(DmaBufMapping::Map(fd, 0, false).status().code(), absl::StatusCode::kInvalidArgument);
  {
    absl::StatusOr<DmaBufMapping> m = DmaBufMapping::Map(fd, 8192, true);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->size(), 8192u);
    std::memcpy(m->data() + 4096, "dmabuf", 6);
    char back[6] = {};
    ASSERT_EQ(pread(fd, back, 6, 4096), 6);
    EXPECT_EQ(std::memcmp(back, "dmabuf", 6), 0);
    // A memfd is no dma-buf: the sync ioctl is refused, naming it.
    absl::Status s = m->BeginCpuAccess(true);
    EXPECT_FALSE(s.ok());
    EXPECT_THAT(s.message(), HasSubstr("DMA_BUF_IOCTL_SYNC"));
    EXPECT_THAT(s.message(), HasSubstr("fd " + std::to_string(fd)));
    uint8_t* data = m->data();
    DmaBufMapping moved = std::move(*m);
    EXPECT_EQ(moved.data(), data);
    EXPECT_EQ(m->data(), nullptr);  // NOLINT(bugprone-use-after-move)
    EXPECT_TRUE(Mapped(data, 8192));
  }
  // A pipe cannot be mapped: the error names the call and the fd.
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  absl::StatusOr<DmaBufMapping> m = DmaBufMapping::Map(p[0], 4096, false);
  EXPECT_FALSE(m.ok());
  EXPECT_THAT(m.status().message(), HasSubstr("mmap on dma-buf fd " + std::to_string(p[0])));
  EXPECT_THAT(m.status().message(), HasSubstr("4096 bytes"));
  close(p[0]);
  close(p[1]);
  close(fd);
}

TEST_F(DmaBufSourcesTest, ProbeReportsWhatThisMachineHas) {
  DmaBufSources s = ProbeDmaBufSources();
  for (const DmaBufSources::Drm& c : s.drm_cards) EXPECT_THAT(c.card, StartsWith("/dev/dri/card"));
  EXPECT_EQ(s.udmabuf, access("/dev/udmabuf", F_OK) == 0 && UdmabufDevice::Open().ok());
  EXPECT_EQ(!s.heaps.empty(), std::filesystem::exists("/dev/dma_heap") &&
                                  !std::filesystem::is_empty("/dev/dma_heap"));
  EXPECT_FALSE(s.cuda);
  EXPECT_FALSE(s.cuda_detail.empty());
}

}  // namespace
}  // namespace dmareg
