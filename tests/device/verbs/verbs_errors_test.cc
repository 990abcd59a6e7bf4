// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// What the real kernel says when a registration cannot be done, and that it
// reaches the caller as a clear status (call, device, errno) with nothing
// leaked: dma-buf MRs on rxe, unmapped memory, write access to read-only
// memory, a remote WRITE into an MR that does not allow it. (ODP, refused
// by some kernels and served by others, is verbs_odp_test's.)

#include <drm.h>
#include <drm_mode.h>
#include <fcntl.h>
#include <infiniband/verbs.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xf86drm.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "device/verbs/device_env.h"
#include "dmareg/cache.h"
#include "dmareg/verbs/verbs_domain.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "verbs/rc_qp.h"

namespace dmareg::device_test {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr size_t kPage = 4096;

bool IsRxe(const std::string& device) { return absl::StartsWith(device, "rxe"); }

// A dumb buffer on a DRM device (vgem in the VM) exported as a dma-buf.
class VgemBuffer {
 public:
  ~VgemBuffer() {
    if (dmabuf_ >= 0) close(dmabuf_);
    if (card_ >= 0) close(card_);
  }
  // Empty string on success, else what failed.
  std::string Create(const std::string& card, size_t bytes) {
    card_ = open(card.c_str(), O_RDWR | O_CLOEXEC);
    if (card_ < 0) return "open " + card + ": " + std::strerror(errno);
    drm_mode_create_dumb create;
    std::memset(&create, 0, sizeof(create));
    create.width = 1024;
    create.bpp = 32;
    create.height = static_cast<uint32_t>(bytes / (create.width * 4));
    if (drmIoctl(card_, DRM_IOCTL_MODE_CREATE_DUMB, &create) != 0) {
      return std::string("DRM_IOCTL_MODE_CREATE_DUMB: ") + std::strerror(errno);
    }
    size_ = create.size;
    if (drmPrimeHandleToFD(card_, create.handle, DRM_CLOEXEC | DRM_RDWR, &dmabuf_) != 0) {
      return std::string("drmPrimeHandleToFD: ") + std::strerror(errno);
    }
    return "";
  }
  int fd() const { return dmabuf_; }
  size_t size() const { return size_; }

 private:
  int card_ = -1;
  int dmabuf_ = -1;
  size_t size_ = 0;
};

// Shows in the test log what a caller would see.
void Show(const absl::Status& s) { std::printf("  status: %s\n", s.ToString().c_str()); }

class VerbsErrorsTest : public RdmaTest {
 protected:
  void ExpectNothingRegistered() {
    EXPECT_EQ(cache_->stats().live_regions, 0u);
    EXPECT_EQ(domain_->live_mrs(), 0);
  }
};

TEST_F(VerbsErrorsTest, DmaBufOnADeviceWithoutSupportIsUnimplemented) {
  if (domain_->capabilities().dmabuf_import) {
    GTEST_SKIP() << device_ << " implements dma-buf MRs; this test is for devices that do not";
  }
  if (IsRxe(device_)) {
    EXPECT_EQ(domain_->device_info().dmabuf_probe_errno, EOPNOTSUPP);
  }

  // A real dma-buf when the harness gave us a DRM card; else a memfd, which
  // the cache refuses before the driver is asked.
  VgemBuffer vgem;
  std::optional<int> memfd;
  int fd = -1;
  size_t len = 16 * kPage;
  const std::string card = Env("DMAREG_DRM_CARD");
  if (!card.empty()) {
    const std::string err = vgem.Create(card, len);
    ASSERT_EQ(err, "") << card;
    fd = vgem.fd();
    len = vgem.size();
  } else {
    ASSERT_FALSE(InVm()) << "DMAREG_IN_VM=1 but DMAREG_DRM_CARD is not set";
    memfd = memfd_create("not-a-dmabuf", MFD_CLOEXEC);
    ASSERT_GE(*memfd, 0);
    fd = *memfd;
  }

  auto reg =
      cache_->Acquire(DmaBufMemory{.fd = fd, .offset = 0, .length = len}, Access::kLocalWrite);
  ASSERT_FALSE(reg.ok());
  Show(reg.status());
  if (card.empty()) {
    EXPECT_EQ(reg.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(reg.status().message(), HasSubstr("is not a dma-buf"));
    ExpectNothingRegistered();
    return;
  }
  EXPECT_EQ(reg.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(reg.status().message(),
              AllOf(HasSubstr("ibv_reg_dmabuf_mr on " + device_), HasSubstr("EOPNOTSUPP")));
  ExpectNothingRegistered();

  if (!card.empty()) {
    // The probe's verdict holds for a real dma-buf too: ask the kernel directly.
    errno = 0;
    ibv_mr* mr = ibv_reg_dmabuf_mr(domain_->pd(), 0, len, 0, fd, IBV_ACCESS_LOCAL_WRITE);
    EXPECT_EQ(mr, nullptr);
    EXPECT_EQ(errno, EOPNOTSUPP);
    if (mr != nullptr) ibv_dereg_mr(mr);

    // Its CPU mapping is PFN-mapped and cannot be pinned: EFAULT, as a status.
    void* cpu = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ASSERT_NE(cpu, MAP_FAILED) << std::strerror(errno);
    auto host = cache_->Acquire(cpu, len, Access::kLocalWrite);
    ASSERT_FALSE(host.ok());
    Show(host.status());
    EXPECT_EQ(host.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(host.status().message(),
                AllOf(HasSubstr("ibv_reg_mr_iova2 on " + device_), HasSubstr("EFAULT")));
    munmap(cpu, len);
    ExpectNothingRegistered();
  }
  if (memfd) close(*memfd);
}

TEST_F(VerbsErrorsTest, UnmappedMemoryIsEfault) {
  // Reserve a range, then give back all but a guard page at each end:
  // nothing is mapped in between, and no later mapping (the cache's own,
  // say) is small enough to land there.
  char* guarded =
      static_cast<char*>(mmap(nullptr, 10 * kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(guarded, MAP_FAILED);
  char* const hole = guarded + kPage;
  ASSERT_EQ(munmap(hole, 8 * kPage), 0);
  struct Unmap {
    char* p;
    ~Unmap() {
      munmap(p, kPage);
      munmap(p + 9 * kPage, kPage);
    }
  } unmap_guards{guarded};

  auto reg = cache_->Acquire(hole, 8 * kPage, Access::kLocalWrite);
  ASSERT_FALSE(reg.ok());
  Show(reg.status());
  EXPECT_EQ(reg.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(reg.status().message(),
              AllOf(HasSubstr("ibv_reg_mr_iova2 on " + device_), HasSubstr("EFAULT")));
  EXPECT_EQ(cache_->stats().registration_failures, 1u);
  ExpectNothingRegistered();
}

TEST_F(VerbsErrorsTest, RequestsTouchingTheLastPageAreRefusedBeforeTheDevice) {
  // Before the fix, (2^64 - 4096, 1) passed the front door with a rounded
  // end of 0: with a mapping cached it was "covered" by that mapping.
  Mapping buf(4 * kPage);
  ASSERT_TRUE(buf.ok());
  auto held = cache_->Acquire(buf.data(), buf.size(), Access::kLocalWrite);
  ASSERT_TRUE(held.ok()) << held.status();
  const uintptr_t last_page = ~uintptr_t{0} & ~uintptr_t{kPage - 1};
  for (auto [addr, len] :
       {std::pair{last_page, size_t{1}}, std::pair{last_page - kPage, kPage + 1}}) {
    auto reg = cache_->Acquire(reinterpret_cast<void*>(addr), len, Access::kLocalWrite);
    ASSERT_FALSE(reg.ok());
    Show(reg.status());
    EXPECT_EQ(reg.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(reg.status().message(), HasSubstr("last page"));
  }
  EXPECT_EQ(cache_->stats().hits, 0u);
  EXPECT_EQ(domain_->live_mrs(), 1);
  EXPECT_EQ(domain_->total_registrations(), 1);
}

TEST_F(VerbsErrorsTest, WriteAccessToReadOnlyMemoryIsRefused) {
  Mapping ro(8 * kPage, PROT_READ);
  ASSERT_TRUE(ro.ok());

  // Refused before the kernel is asked, the protection named.
  auto reg = cache_->Acquire(ro.data(), ro.size(), Access::kLocalWrite);
  ASSERT_FALSE(reg.ok());
  Show(reg.status());
  EXPECT_EQ(reg.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(reg.status().message(),
              AllOf(HasSubstr("ibv_reg_mr_iova2 on " + device_), HasSubstr("not writable"),
                    HasSubstr("mapped PROT_READ")));
  ExpectNothingRegistered();
  // Remote write implies local write: the same.
  reg = cache_->Acquire(ro.data(), kPage, Access::kRemoteWrite);
  EXPECT_EQ(reg.status().code(), absl::StatusCode::kPermissionDenied);
  ExpectNothingRegistered();

  // Read-only rights on read-only memory are fine.
  auto read_only = cache_->Acquire(ro.data(), ro.size(), Access::kRemoteRead);
  ASSERT_TRUE(read_only.ok()) << read_only.status();
  EXPECT_EQ(domain_->live_mrs(), 1);
}

// Linux 6.1 pins a read-only MR over PROT_NONE memory (FOLL_FORCE) and
// 7.x refuses it: dmareg refuses it on both, before the kernel is asked,
// for any rights (the device would read what the program may not).
TEST_F(VerbsErrorsTest, MemoryTheProgramCannotReadIsRefusedOnEveryKernel) {
  Mapping none(4 * kPage, PROT_NONE);
  ASSERT_TRUE(none.ok());
  for (AccessFlags access : {AccessFlags(Access::kNone), AccessFlags(Access::kRemoteRead),
                             AccessFlags(Access::kLocalWrite)}) {
    auto reg = cache_->Acquire(none.data() + 100, 2 * kPage, access);
    ASSERT_FALSE(reg.ok()) << AccessToString(access);
    Show(reg.status());
    EXPECT_EQ(reg.status().code(), absl::StatusCode::kPermissionDenied);
    EXPECT_THAT(reg.status().message(),
                AllOf(HasSubstr("ibv_reg_mr_iova2 on " + device_), HasSubstr("mapped PROT_NONE")));
    ExpectNothingRegistered();
  }
  // Made readable, the same range registers.
  ASSERT_EQ(mprotect(none.data(), none.size(), PROT_READ), 0);
  auto reg = cache_->Acquire(none.data() + 100, 2 * kPage, Access::kRemoteRead);
  ASSERT_TRUE(reg.ok()) << reg.status();
  EXPECT_EQ(domain_->live_mrs(), 1);
}

TEST_F(VerbsErrorsTest, RemoteWriteIntoAnMrWithoutTheRightFailsRemotely) {
  Mapping src(4 * kPage), dst(4 * kPage);
  ASSERT_TRUE(src.ok() && dst.ok());
  FillPattern(src.data(), src.size(), 9);
  std::memset(dst.data(), 0, dst.size());
  {
    absl::StatusOr<rc::RcLoopback> pair =
        rc::ConnectLoopback(domain_->context(), domain_->pd(), device_);
    ASSERT_TRUE(pair.ok()) << pair.status();
    auto s = cache_->Acquire(src.data(), src.size(), {});
    auto d = cache_->Acquire(dst.data(), dst.size(), Access::kRemoteRead);  // no write
    ASSERT_TRUE(s.ok() && d.ok());
    absl::Status w =
        pair->a->Write(src.data(), src.size(), s->lkey(), d->IovaFor(dst.data()), d->rkey());
    EXPECT_FALSE(w.ok());
    Show(w);
    EXPECT_THAT(w.message(), AllOf(HasSubstr(device_), HasSubstr("remote")));
    // Not one byte landed.
    for (size_t i = 0; i < dst.size(); ++i) ASSERT_EQ(dst.data()[i], 0) << i;
  }
  cache_->Flush();
  ExpectNothingRegistered();
}

}  // namespace
}  // namespace dmareg::device_test
