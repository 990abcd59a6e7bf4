// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The dma-buf sources on the booted kernel: vgem dumb buffers (every
// kernel), udmabuf and the system DMA-BUF heap where the kernel has them
// (7.x; on 6.1 the clear refusal naming the path). A udmabuf's memfd alias
// registered on rxe carries real RDMA WRITE and READ, every byte checked
// through the dma-buf's own mmap, also after the dma-buf fd is closed.

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "common/vm_env.h"
#include "device/dmabuf/dmabuf_env.h"
#include "device/verbs/device_env.h"
#include "dmareg/dmabuf/dma_heap.h"
#include "dmareg/dmabuf/dmabuf.h"
#include "dmareg/dmabuf/drm_device.h"
#include "dmareg/dmabuf/sources_probe.h"
#include "dmareg/dmabuf/udmabuf.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dmareg::device_test {
namespace {

using dmabuf_test::FillThroughMapping;
using dmabuf_test::MismatchThroughMapping;
using dmabuf_test::OpenFds;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr size_t kPage = 4096;
constexpr size_t kLen = 64 * 1024;  // small: under TCG every byte is slow

// Skips outside the VM when `var` is unset; inside, the harness always sets it.
#define REQUIRE_HARNESS_VAR(var)                                            \
  if (getenv(var) == nullptr) {                                             \
    if (InVm()) FAIL() << "DMAREG_IN_VM=1 but " << var << " is not set";    \
    GTEST_SKIP() << var << " unset: run scripts/vm/run -- ctest -L device"; \
  }

TEST(DmaBufSourcesDevice, VgemDumbBuffersMapAndRefuseBadSizes) {
  REQUIRE_HARNESS_VAR("DMAREG_DRM_CARD");
  const std::string card = Env("DMAREG_DRM_CARD");
  const int fds = OpenFds();
  {
    absl::StatusOr<DrmDevice> drm = DrmDevice::Open(card);
    ASSERT_TRUE(drm.ok()) << drm.status();
    EXPECT_EQ(drm->driver(), "vgem");
    EXPECT_EQ(drm->card(), card);
    absl::StatusOr<DmaBuf> buf = drm->Allocate(kLen + 1);  // rounded up to whole rows
    ASSERT_TRUE(buf.ok()) << buf.status();
    EXPECT_GE(buf->size(), kLen + 1);
    EXPECT_EQ(buf->alias(), nullptr);
    EXPECT_EQ(buf->source(), "vgem (" + card + ")");
    FillThroughMapping(buf->fd(), buf->size(), 7);
    EXPECT_EQ(MismatchThroughMapping(buf->fd(), buf->size(), 7), -1);
    // The dma-buf outlives its DrmDevice and its GEM handle.
    DrmDevice gone = std::move(*drm);
    { DrmDevice drop = std::move(gone); }
    EXPECT_EQ(MismatchThroughMapping(buf->fd(), buf->size(), 7), -1);

    absl::StatusOr<DrmDevice> again = DrmDevice::Open(card);
    ASSERT_TRUE(again.ok()) << again.status();
    absl::Status zero = again->Allocate(0).status();
    EXPECT_EQ(zero.code(), absl::StatusCode::kInvalidArgument) << zero;
    EXPECT_THAT(zero.message(), HasSubstr(card));
    EXPECT_EQ(again->Allocate(~uint64_t{0}).status().code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(OpenFds(), fds) << "fds leaked";
}

TEST(DmaBufSourcesDevice, DmaHeapOrItsRefusal) {
  REQUIRE_HARNESS_VAR("DMAREG_DMA_HEAP");
  const int fds = OpenFds();
  const std::string heap = Env("DMAREG_DMA_HEAP");
  test::RecordBranch("dma_heap", !heap.empty());
  if (heap.empty()) {
    absl::StatusOr<DmaHeap> h = DmaHeap::Open("system");
    EXPECT_EQ(h.status().code(), absl::StatusCode::kNotFound) << h.status();
    EXPECT_THAT(h.status().message(), HasSubstr("/dev/dma_heap/system"));
    EXPECT_TRUE(ProbeDmaBufSources().heaps.empty());
  } else {
    absl::StatusOr<DmaHeap> h = DmaHeap::Open(heap);
    ASSERT_TRUE(h.ok()) << h.status();
    absl::StatusOr<DmaBuf> a = h->Allocate(kLen - 100);  // whole pages come back
    absl::StatusOr<DmaBuf> b = h->Allocate(kLen);
    ASSERT_TRUE(a.ok() && b.ok()) << a.status() << " " << b.status();
    EXPECT_EQ(a->size(), kLen);
    EXPECT_EQ(a->source(), "heap " + heap);
    EXPECT_EQ(a->alias(), nullptr);
    FillThroughMapping(a->fd(), a->size(), 11);
    FillThroughMapping(b->fd(), b->size(), 12);
    EXPECT_EQ(MismatchThroughMapping(a->fd(), a->size(), 11), -1);
    EXPECT_EQ(MismatchThroughMapping(b->fd(), b->size(), 12), -1);
    // A second fd of one buffer maps the same bytes.
    const int dup_fd = fcntl(a->fd(), F_DUPFD_CLOEXEC, 0);
    ASSERT_GE(dup_fd, 0);
    EXPECT_EQ(MismatchThroughMapping(dup_fd, a->size(), 11), -1);
    close(dup_fd);
    EXPECT_EQ(h->Allocate(0).status().code(), absl::StatusCode::kInvalidArgument);
    DmaBufSources s = ProbeDmaBufSources();
    EXPECT_THAT(s.heaps, ::testing::Contains(heap));
  }
  EXPECT_EQ(OpenFds(), fds) << "fds leaked";
}

class UdmabufDeviceTest : public RcLoopbackTest {
 protected:
  void SetUp() override {
    REQUIRE_HARNESS_VAR("DMAREG_UDMABUF");
    RcLoopbackTest::SetUp();
  }
};

TEST_F(UdmabufDeviceTest, AliasCarriesRdmaAndOutlivesTheFd) {
  const int fds = OpenFds();
  test::RecordBranch("udmabuf", !Env("DMAREG_UDMABUF").empty());
  if (Env("DMAREG_UDMABUF").empty()) {
    absl::StatusOr<UdmabufDevice> dev = UdmabufDevice::Open();
    EXPECT_EQ(dev.status().code(), absl::StatusCode::kNotFound) << dev.status();
    EXPECT_THAT(dev.status().message(), HasSubstr("/dev/udmabuf"));
    EXPECT_FALSE(ProbeDmaBufSources().udmabuf);
    EXPECT_EQ(OpenFds(), fds);
    return;
  }
  {
    absl::StatusOr<UdmabufDevice> dev = UdmabufDevice::Open(Env("DMAREG_UDMABUF"));
    ASSERT_TRUE(dev.ok()) << dev.status();
    EXPECT_TRUE(ProbeDmaBufSources().udmabuf);
    EXPECT_EQ(dev->Allocate(kPage + 1).status().code(), absl::StatusCode::kInvalidArgument);
    absl::StatusOr<DmaBuf> buf = dev->Allocate(kLen);
    ASSERT_TRUE(buf.ok()) << buf.status();
    ASSERT_NE(buf->alias(), nullptr);
    EXPECT_EQ(buf->source(), "udmabuf");
    // The alias and the dma-buf are the same pages.
    test::FillPattern(buf->alias(), kLen, 3);
    EXPECT_EQ(MismatchThroughMapping(buf->fd(), kLen, 3), -1);

    Mapping src(kLen), back(kLen);
    ASSERT_TRUE(src.ok() && back.ok());
    test::FillPattern(src.data(), kLen, 21);
    std::memset(back.data(), 0, kLen);
    auto s = cache_->Acquire(src.data(), kLen, {});
    auto b = cache_->Acquire(back.data(), kLen, Access::kLocalWrite);
    auto t = cache_->Acquire(buf->alias(), kLen,
                             Access::kRemoteWrite | Access::kRemoteRead | Access::kLocalWrite);
    ASSERT_TRUE(s.ok() && b.ok() && t.ok()) << s.status() << b.status() << t.status();
    const uint64_t base = t->IovaFor(buf->alias());
    // WRITE pieces that start and end mid-page; check through the dma-buf.
    for (auto [off, len] :
         {std::pair<size_t, size_t>{0, 1}, {1, kPage * 3 + 5}, {kPage * 3 + 6, 0}}) {
      if (len == 0) len = kLen - off;
      absl::Status w = pair_.a->Write(src.data() + off, len, s->lkey(), base + off, t->rkey());
      ASSERT_TRUE(w.ok()) << w;
    }
    EXPECT_EQ(MismatchThroughMapping(buf->fd(), kLen, 21), -1);

    // Closing the dma-buf fd leaves the registration (and its pages) intact.
    const int fd = buf->fd();
    close(buf->ReleaseFd());
    EXPECT_EQ(fcntl(fd, F_GETFD), -1);
    absl::Status r = pair_.b->Read(back.data(), kLen, b->lkey(), base, t->rkey());
    ASSERT_TRUE(r.ok()) << r;
    EXPECT_EQ(test::FindMismatch(back.data(), kLen, 21), -1);
    *buf = DmaBuf();  // the alias goes; the MR still holds the pages
    std::memset(back.data(), 0, kLen);
    r = pair_.b->Read(back.data(), kLen / 2, b->lkey(), base + kLen / 4, t->rkey());
    ASSERT_TRUE(r.ok()) << r;
    EXPECT_EQ(test::FindMismatch(back.data(), kLen / 2, 21, kLen / 4), -1);
  }
  EXPECT_EQ(OpenFds(), fds) << "fds leaked";
}

}  // namespace
}  // namespace dmareg::device_test
