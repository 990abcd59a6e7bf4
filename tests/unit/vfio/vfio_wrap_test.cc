// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// VfioContainer::Wrap over FakeVfioOps: a container fd the test (the
// "application") opened, bare or already set up with a group and an IOMMU
// type. dmareg never closes it, unmaps all it mapped, and reports a clash
// with a mapping the application made itself clearly.

#include <fcntl.h>
#include <linux/vfio.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "dmareg/cache.h"
#include "dmareg/testing/fake_vfio_ops.h"
#include "dmareg/vfio/vfio_domain.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dmareg {
namespace {

using ::dmareg::testing::FakeVfioOps;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::SizeIs;
using Call = FakeVfioOps::Call;

constexpr char kEdu[] = "0000:00:03.0";
constexpr size_t kLen = 64 * 1024;
constexpr uint64_t kAppIova = 0x100000;  // where the application maps its own buffer

class VfioWrapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ops_->AddDevice({.address = kEdu, .group = 5});
    buf_ = mmap(nullptr, kLen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(buf_, MAP_FAILED);
    container_fd_ = ops_->Open("/dev/vfio/vfio", O_RDWR);
    ASSERT_GE(container_fd_, 0);
  }
  void TearDown() override {
    // dmareg is gone; the fd is still the application's, and works.
    EXPECT_EQ(ops_->GetApiVersion(container_fd_), VFIO_API_VERSION);
    if (group_fd_ >= 0) {
      EXPECT_EQ(ops_->Close(group_fd_), 0);
    }
    EXPECT_EQ(ops_->Close(container_fd_), 0);
    EXPECT_EQ(ops_->live_fds(), 0);
    EXPECT_EQ(ops_->live_containers(), 0);
    munmap(buf_, kLen);
  }
  // The application joins the edu's group and sets the IOMMU itself, and
  // maps a buffer of its own at kAppIova.
  void AppSetUp() {
    group_fd_ = ops_->Open("/dev/vfio/5", O_RDWR);
    ASSERT_GE(group_fd_, 0);
    ASSERT_EQ(ops_->GroupSetContainer(group_fd_, container_fd_), 0);
    ASSERT_EQ(ops_->SetIommu(container_fd_, VFIO_TYPE1v2_IOMMU), 0);
    vfio_iommu_type1_dma_map map{};
    map.argsz = sizeof(map);
    map.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
    map.vaddr = reinterpret_cast<uintptr_t>(app_buf_);
    map.iova = kAppIova;
    map.size = 4096;
    ASSERT_EQ(ops_->MapDma(container_fd_, &map), 0);
  }
  // The group fd passes to the domain (it takes it): the application's is
  // gone, as if it had handed over a dup and closed its own.
  int HandOverGroup() { return std::exchange(group_fd_, -1); }
  char* buf() { return static_cast<char*>(buf_); }

  std::shared_ptr<FakeVfioOps> ops_ = std::make_shared<FakeVfioOps>();
  void* buf_ = nullptr;
  alignas(4096) char app_buf_[4096] = {};
  int container_fd_ = -1;
  int group_fd_ = -1;
};

TEST_F(VfioWrapTest, BadArgumentsAreRefused) {
  auto c = VfioContainer::Wrap(-1, 0, {.ops = ops_});
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  c = VfioContainer::Wrap(container_fd_, 7, {.ops = ops_});
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("IOMMU type 7"));
  c = VfioContainer::Wrap(999, 0, {.ops = ops_});  // not an fd the kernel knows
  EXPECT_THAT(c.status().message(),
              AllOf(HasSubstr("VFIO_GET_API_VERSION"), HasSubstr("container fd 999")));
  EXPECT_EQ(dmareg::VfioContainer::Wrap(-1).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(VfioWrapTest, ABareContainerGetsItsIommuFromTheFirstDomain) {
  auto c = VfioContainer::Wrap(container_fd_, 0, {.ops = ops_});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE((*c)->owns_fd());
  EXPECT_EQ((*c)->fd(), container_fd_);
  EXPECT_FALSE((*c)->iommu_set());
  {
    auto d = VfioDomain::Open(kEdu, {.container = *c, .dma_address_bits = 28});
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ(ops_->iommu_type(container_fd_), VFIO_TYPE1v2_IOMMU);
    auto cache = RegistrationCache::Create(*d, {.monitoring = Monitoring::kExplicitOnly});
    ASSERT_TRUE(cache.ok()) << cache.status();
    auto r = (*cache)->Acquire(buf(), kLen, Access::kLocalWrite);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_THAT(ops_->kernel_mappings(container_fd_), SizeIs(1));
  }
  EXPECT_THAT(ops_->kernel_mappings(container_fd_), SizeIs(0));
  c->reset();
  EXPECT_EQ(ops_->live_fds(), 1);  // the application's container fd, not closed by dmareg
}

TEST_F(VfioWrapTest, ASetUpContainerIsUsedAsItIsAndLeftAsItWas) {
  AppSetUp();
  auto c = VfioContainer::Wrap(container_fd_, 0, {.ops = ops_});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE((*c)->iommu_set());
  const VfioContainerInfo before = (*c)->info();
  EXPECT_EQ(before.iommu_type, VFIO_TYPE1v2_IOMMU);
  EXPECT_EQ(before.dma_avail, 65534u);    // the application's one mapping
  EXPECT_TRUE((*c)->mappings().empty());  // unknown to dmareg
  auto d = VfioDomain::Open(kEdu,
                            {.container = *c, .dma_address_bits = 28, .group_fd = HandOverGroup()});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(ops_->calls(Call::kSetIommu), 1);      // the application's only
  EXPECT_EQ(ops_->calls(Call::kSetContainer), 1);  // likewise
  {
    auto cache = RegistrationCache::Create(*d, {.monitoring = Monitoring::kExplicitOnly});
    ASSERT_TRUE(cache.ok()) << cache.status();
    auto r = (*cache)->Acquire(buf(), kLen, Access::kLocalWrite);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_NE(r->IovaFor(buf()), kAppIova);
    EXPECT_THAT(ops_->kernel_mappings(container_fd_), SizeIs(2));
    EXPECT_EQ((*c)->info().dma_avail, 65533u);
  }
  // Only the application's mapping is left; dma_avail is back.
  auto left = ops_->kernel_mappings(container_fd_);
  ASSERT_THAT(left, SizeIs(1));
  EXPECT_EQ(left[0].iova, kAppIova);
  EXPECT_EQ((*c)->info().dma_avail, before.dma_avail);
  d->reset();
  c->reset();
}

TEST_F(VfioWrapTest, AMapOverTheApplicationsOwnMappingIsReportedClearly) {
  AppSetUp();
  auto c = VfioContainer::Wrap(container_fd_, 0, {.ops = ops_});
  ASSERT_TRUE(c.ok()) << c.status();
  auto d = VfioDomain::Open(kEdu, {.container = *c, .group_fd = HandOverGroup()});
  ASSERT_TRUE(d.ok()) << d.status();
  auto m = (*d)->RegisterHost(HostMemory{buf(), 8192, kAppIova}, Access::kLocalWrite);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(m.status().message(),
              AllOf(HasSubstr("VFIO_IOMMU_MAP_DMA"), HasSubstr("the application made itself"),
                    HasSubstr("VfioContainer::Wrap")));
  EXPECT_TRUE((*c)->mappings().empty());
  EXPECT_THAT(ops_->kernel_mappings(container_fd_), SizeIs(1));
}

TEST_F(VfioWrapTest, TheApplicationsGroupMustBeHandedOver) {
  AppSetUp();
  auto c = VfioContainer::Wrap(container_fd_, 0, {.ops = ops_});
  ASSERT_TRUE(c.ok()) << c.status();
  auto d = VfioDomain::Open(kEdu, {.container = *c});
  EXPECT_THAT(d.status().message(), AllOf(HasSubstr("EBUSY"), HasSubstr("group_fd")));
}

TEST_F(VfioWrapTest, TheNamedIommuTypeIsBelieved) {
  group_fd_ = ops_->Open("/dev/vfio/5", O_RDWR);
  ASSERT_EQ(ops_->GroupSetContainer(group_fd_, container_fd_), 0);
  ASSERT_EQ(ops_->SetIommu(container_fd_, VFIO_TYPE1_IOMMU), 0);
  auto c = VfioContainer::Wrap(container_fd_, VFIO_TYPE1_IOMMU, {.ops = ops_});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->info().iommu_type, VFIO_TYPE1_IOMMU);
}

TEST_F(VfioWrapTest, AGetInfoFailureOtherThanNotSetIsAnError) {
  ops_->FailNext(Call::kGetInfo, EIO);
  auto c = VfioContainer::Wrap(container_fd_, 0, {.ops = ops_});
  EXPECT_THAT(c.status().message(), AllOf(HasSubstr("VFIO_IOMMU_GET_INFO"), HasSubstr("EIO")));
}

}  // namespace
}  // namespace dmareg
