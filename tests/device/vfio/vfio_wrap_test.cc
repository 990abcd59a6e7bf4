// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// VfioContainer::Wrap on a real edu device: the test opens /dev/vfio/vfio,
// joins the edu's group and sets the IOMMU type itself, then hands the
// container to dmareg; a cache over it lets the edu engine copy bytes,
// checked. Once dmareg is gone the container fd is still the test's and
// works, and dma_avail is back where it was (no mapping left).

#include <fcntl.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "device/vfio/vfio_env.h"
#include "dmareg/cache.h"
#include "dmareg/vfio/vfio_domain.h"
#include "gtest/gtest.h"

namespace dmareg::device_test {
namespace {

constexpr size_t kLen = 2048;

// dma_avail as plain VFIO_IOMMU_GET_INFO reports it; nullopt when the
// ioctl fails or the capability is absent.
std::optional<uint32_t> DmaAvail(int container_fd) {
  alignas(8) uint8_t buf[4096] = {};
  auto* info = reinterpret_cast<vfio_iommu_type1_info*>(buf);
  info->argsz = sizeof(buf);
  if (ioctl(container_fd, VFIO_IOMMU_GET_INFO, info) != 0) return std::nullopt;
  if ((info->flags & VFIO_IOMMU_INFO_CAPS) == 0) return std::nullopt;
  for (uint32_t off = info->cap_offset;
       off != 0 && off + sizeof(vfio_info_cap_header) <= sizeof(buf);) {
    const auto* h = reinterpret_cast<const vfio_info_cap_header*>(buf + off);
    if (h->id == VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL) {
      return reinterpret_cast<const vfio_iommu_type1_info_dma_avail*>(h)->avail;
    }
    if (h->next <= off) break;
    off = h->next;
  }
  return std::nullopt;
}

TEST(VfioWrapTest, AContainerTheTestSetUpCarriesDmaAndIsLeftAsItWas) {
  const std::vector<std::string> devices = VfioDevices();
  if (devices.empty()) {
    if (InVm()) FAIL() << "DMAREG_IN_VM=1 but DMAREG_VFIO_DEVICES names no edu device";
    GTEST_SKIP() << kNoVfioReason;
  }
  const std::string& address = devices[0];
  // The application's own set-up, with plain VFIO.
  char link[256] = {};
  const std::string group_link = "/sys/bus/pci/devices/" + address + "/iommu_group";
  ASSERT_GT(readlink(group_link.c_str(), link, sizeof(link) - 1), 0) << group_link;
  const std::string group = std::strrchr(link, '/') + 1;
  const int container_fd = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
  ASSERT_GE(container_fd, 0) << std::strerror(errno);
  const int group_fd = open(("/dev/vfio/" + group).c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(group_fd, 0) << "/dev/vfio/" << group << ": " << std::strerror(errno);
  ASSERT_EQ(ioctl(group_fd, VFIO_GROUP_SET_CONTAINER, &container_fd), 0) << std::strerror(errno);
  ASSERT_EQ(ioctl(container_fd, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU), 0) << std::strerror(errno);
  const std::optional<uint32_t> avail_before = DmaAvail(container_fd);
  ASSERT_TRUE(avail_before.has_value());

  {
    absl::StatusOr<std::shared_ptr<VfioContainer>> container = VfioContainer::Wrap(container_fd);
    ASSERT_TRUE(container.ok()) << container.status();
    EXPECT_TRUE((*container)->iommu_set());
    EXPECT_FALSE((*container)->owns_fd());
    VfioDomainOptions options;
    options.container = *container;
    options.dma_address_bits = EduDevice::kDmaAddressBits;
    options.group_fd = fcntl(group_fd, F_DUPFD_CLOEXEC, 0);  // taken by the domain
    ASSERT_GE(options.group_fd, 0);
    absl::StatusOr<std::shared_ptr<VfioDomain>> domain = VfioDomain::Open(address, options);
    ASSERT_TRUE(domain.ok()) << domain.status();
    absl::StatusOr<std::unique_ptr<EduDevice>> edu = EduDevice::Open(*domain);
    ASSERT_TRUE(edu.ok()) << edu.status();
    auto cache = RegistrationCache::Create(*domain);
    ASSERT_TRUE(cache.ok()) << cache.status();
    Mapping src(4096), dst(4096);
    auto r = (*cache)->Acquire(src.data(), src.size(), Access::kRemoteRead);
    auto w = (*cache)->Acquire(dst.data(), dst.size(), Access::kLocalWrite);
    ASSERT_TRUE(r.ok() && w.ok()) << r.status() << w.status();
    EXPECT_EQ(DmaAvail(container_fd), *avail_before - 2);
    ExpectRoundTrip(**edu, src, r->IovaFor(src.data()), dst, w->IovaFor(dst.data()), kLen, 14);
    // The handles, the cache, the edu, the domain and the container go here.
  }
  // The container fd is still the test's: it answers, the IOMMU is still
  // set (the test's group is still joined) and nothing dmareg mapped is left.
  EXPECT_EQ(ioctl(container_fd, VFIO_GET_API_VERSION), VFIO_API_VERSION) << std::strerror(errno);
  EXPECT_EQ(DmaAvail(container_fd), avail_before);
  vfio_group_status status{};
  status.argsz = sizeof(status);
  ASSERT_EQ(ioctl(group_fd, VFIO_GROUP_GET_STATUS, &status), 0);
  EXPECT_NE(status.flags & VFIO_GROUP_FLAGS_CONTAINER_SET, 0u);
  EXPECT_EQ(ioctl(group_fd, VFIO_GROUP_UNSET_CONTAINER), 0) << std::strerror(errno);
  EXPECT_EQ(close(group_fd), 0);
  EXPECT_EQ(close(container_fd), 0);
}

}  // namespace
}  // namespace dmareg::device_test
