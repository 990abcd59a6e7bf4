// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// Hot-plug on a real device: the edu is removed from the PCI bus and added
// back (sysfs remove, rescan, rebind to vfio-pci); re-attaching its domain
// restores every mapping of the container's table, whether the container
// emptied in between (dmareg replays the table) or another device kept it
// alive (the kernel kept the mappings). The edu's DMA engine checks the bytes.
#include <sched.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "common/test_memory.h"
#include "device/vfio/vfio_env.h"
#include "dmareg/external_memory.h"
#include "gtest/gtest.h"

namespace dmareg::device_test {
namespace {

constexpr size_t kPage = 4096;
constexpr size_t kLen = 2048;
constexpr uint64_t kSrcIova = 0x100000;
constexpr uint64_t kDstIova = 0x200000;
constexpr uint64_t kLateIova = 0x300000;

// Polls for a condition the kernel brings about asynchronously (a device
// node appearing), with a deadline.
template <typename F>
bool Eventually(F done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    sched_yield();
  }
  return true;
}

// Brings `address` back onto the PCI bus (rescan) and binds it to vfio-pci
// where it is not; waits for its group's /dev/vfio node.
void EnsureBound(const std::string& address) {
  const std::string dev = "/sys/bus/pci/devices/" + address;
  if (access(dev.c_str(), F_OK) != 0) {
    ASSERT_TRUE(WriteFile("/sys/bus/pci/rescan", "1").ok());
    ASSERT_TRUE(Eventually([&] { return access(dev.c_str(), F_OK) == 0; }))
        << address << " did not come back after a rescan";
  }
  if (access((dev + "/driver").c_str(), F_OK) != 0) {
    ASSERT_TRUE(WriteFile(dev + "/driver_override", "vfio-pci").ok());
    // drivers_probe answers an error for a device that is already bound.
    (void)WriteFile("/sys/bus/pci/drivers_probe", address);
  }
  ASSERT_TRUE(Eventually([&] {
    char link[256];
    const ssize_t n = readlink((dev + "/iommu_group").c_str(), link, sizeof link - 1);
    if (n <= 0) return false;
    link[n] = 0;
    const std::string g = std::string(link).substr(std::string(link).rfind('/') + 1);
    return access(("/dev/vfio/" + g).c_str(), F_OK) == 0 &&
           access((dev + "/driver").c_str(), F_OK) == 0;
  })) << address
      << " did not bind to vfio-pci";
}

// Takes `address` off the PCI bus and brings it back bound to vfio-pci.
void RemoveAndReAdd(const std::string& address) {
  const std::string dev = "/sys/bus/pci/devices/" + address;
  ASSERT_TRUE(WriteFile(dev + "/remove", "1").ok());
  ASSERT_TRUE(Eventually([&] { return access(dev.c_str(), F_OK) != 0; }))
      << address << " is still on the bus";
  EnsureBound(address);
}

class VfioHotplugTest : public VfioTest {
 protected:
  void TearDown() override {
    // Whatever a failed test left behind, the next test finds the devices
    // on the bus and bound.
    edu_.reset();
    VfioTest::TearDown();
    for (const std::string& d : devices_) EnsureBound(d);
  }
  void MapPair(ExternalMemoryRegistry& registry, const Mapping& src, const Mapping& dst) {
    ASSERT_TRUE(registry.Register(src.data(), src.size(), kPage).ok());
    ASSERT_TRUE(registry.Register(dst.data(), dst.size(), kPage).ok());
    ASSERT_TRUE(registry.DmaMap(domain_, src.data(), kSrcIova, kPage, AccessFlags()).ok());
    ASSERT_TRUE(
        registry.DmaMap(domain_, dst.data(), kDstIova, kPage, AccessFlags(Access::kLocalWrite))
            .ok());
  }
  void UnmapPair(ExternalMemoryRegistry& registry, const Mapping& src, const Mapping& dst) {
    EXPECT_TRUE(registry.DmaUnmap(domain_, src.data(), kSrcIova, kPage).ok());
    EXPECT_TRUE(registry.DmaUnmap(domain_, dst.data(), kDstIova, kPage).ok());
  }
  void ReopenEdu() {
    auto edu = EduDevice::Open(domain_);
    ASSERT_TRUE(edu.ok()) << edu.status();
    edu_ = std::move(*edu);
  }
};

TEST_F(VfioHotplugTest, TableReplayedWhenTheContainerEmptied) {
  Mapping src(kPage), dst(kPage), late(kPage);
  ExternalMemoryRegistry registry;
  MapPair(registry, src, dst);
  ExpectRoundTrip(*edu_, src, kSrcIova, dst, kDstIova, kLen, 41);

  edu_.reset();  // its BAR mapping goes with the device fd
  ASSERT_TRUE(domain_->Detach().ok());
  EXPECT_FALSE(domain_->attached());
  EXPECT_TRUE(container_->groups().empty());
  EXPECT_EQ(container_->mappings().size(), 2u);
  // While detached: clear statuses, and a new mapping waits in the table.
  EXPECT_EQ(domain_->MapRegion(0).status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(registry.Register(late.data(), late.size(), kPage).ok());
  ASSERT_TRUE(
      registry.DmaMap(domain_, late.data(), kLateIova, kPage, AccessFlags(Access::kLocalWrite))
          .ok());
  EXPECT_EQ(container_->mappings().size(), 3u);

  ASSERT_NO_FATAL_FAILURE(RemoveAndReAdd(devices_[0]));
  absl::Status s = domain_->Reattach();
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_TRUE(domain_->attached());
  ASSERT_NO_FATAL_FAILURE(ReopenEdu());
  ExpectRoundTrip(*edu_, src, kSrcIova, dst, kDstIova, kLen, 42);
  ExpectRoundTrip(*edu_, src, kSrcIova, late, kLateIova, kLen, 43);

  UnmapPair(registry, src, dst);
  EXPECT_TRUE(registry.DmaUnmap(domain_, late.data(), kLateIova, kPage).ok());
}

TEST_F(VfioHotplugTest, ReattachBeforeTheDeviceIsBackFailsAndKeepsTheTable) {
  Mapping src(kPage), dst(kPage);
  ExternalMemoryRegistry registry;
  MapPair(registry, src, dst);
  edu_.reset();
  ASSERT_TRUE(domain_->Detach().ok());
  const std::string dev = "/sys/bus/pci/devices/" + devices_[0];
  ASSERT_TRUE(WriteFile(dev + "/remove", "1").ok());
  absl::Status s = domain_->Reattach();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find(devices_[0]), std::string::npos) << s;
  EXPECT_EQ(container_->mappings().size(), 2u);
  ASSERT_NO_FATAL_FAILURE(EnsureBound(devices_[0]));  // back on the bus
  ASSERT_TRUE(domain_->Reattach().ok());
  ASSERT_NO_FATAL_FAILURE(ReopenEdu());
  ExpectRoundTrip(*edu_, src, kSrcIova, dst, kDstIova, kLen, 44);
  UnmapPair(registry, src, dst);
}

// The kernel asks the process to let go of a device it is removing (sysfs
// remove holds until every fd and mapping of it is closed): the domain
// follows by itself. The application's callback drops its BAR mapping, the
// domain detaches keeping its table, the removal finishes; when the device
// is bound to vfio-pci again the domain re-attaches and replays the table
// (the container had emptied, so the kernel had dropped the mappings), and
// the edu moves bytes through the same IOVAs. No Detach or Reattach call of
// the test's.
TEST_F(VfioHotplugTest, ARemovalRequestIsFollowedAndTheReturnReattachesWithTheTable) {
  ASSERT_GE(devices_.size(), 2u);
  edu_.reset();
  ASSERT_TRUE(domain_->Detach().ok());  // the container empties with the other
  std::mutex mu;
  std::unique_ptr<EduDevice> edu;  // guarded by mu: the callback drops it
  VfioDomainOptions options;
  options.container = container_;
  options.dma_address_bits = EduDevice::kDmaAddressBits;
  options.on_release_request = [&] {
    std::lock_guard<std::mutex> lock(mu);
    edu.reset();
  };
  auto domain = VfioDomain::Open(devices_[1], options);
  ASSERT_TRUE(domain.ok()) << domain.status();
  {
    auto e = EduDevice::Open(*domain);
    ASSERT_TRUE(e.ok()) << e.status();
    std::lock_guard<std::mutex> lock(mu);
    edu = std::move(*e);
  }
  Mapping src(kPage), dst(kPage);
  ExternalMemoryRegistry registry;
  ASSERT_TRUE(registry.Register(src.data(), src.size(), kPage).ok());
  ASSERT_TRUE(registry.Register(dst.data(), dst.size(), kPage).ok());
  ASSERT_TRUE(registry.DmaMap(*domain, src.data(), kSrcIova, kPage, AccessFlags()).ok());
  ASSERT_TRUE(
      registry.DmaMap(*domain, dst.data(), kDstIova, kPage, AccessFlags(Access::kLocalWrite)).ok());
  {
    std::lock_guard<std::mutex> lock(mu);
    ExpectRoundTrip(*edu, src, kSrcIova, dst, kDstIova, kLen, 46);
  }

  // The removal, from another program (exec'd: a forked copy of this one
  // would hold the device's fd and BAR mapping itself): its write returns
  // once the kernel has the device, which it gets only if we let go.
  const std::string remove = "echo 1 > /sys/bus/pci/devices/" + devices_[1] + "/remove";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", remove.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  EXPECT_EQ(test::ChildExitCode(pid), 0) << "the removal of " << devices_[1];
  EXPECT_FALSE((*domain)->attached());
  EXPECT_GE((*domain)->release_requests(), 1);
  EXPECT_EQ(container_->mappings().size(), 2u) << "the table goes with the domain, not the device";
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(edu, nullptr) << "the callback did not run";
  }

  ASSERT_NO_FATAL_FAILURE(EnsureBound(devices_[1]));
  ASSERT_TRUE(Eventually([&] { return (*domain)->attached(); }))
      << devices_[1] << " is back but its domain did not re-attach";
  EXPECT_EQ((*domain)->automatic_reattaches(), 1);
  {
    auto e = EduDevice::Open(*domain);
    ASSERT_TRUE(e.ok()) << e.status();
    std::lock_guard<std::mutex> lock(mu);
    edu = std::move(*e);
    ExpectRoundTrip(*edu, src, kSrcIova, dst, kDstIova, kLen, 47);
    edu.reset();
  }
  EXPECT_TRUE(registry.DmaUnmap(*domain, src.data(), kSrcIova, kPage).ok());
  EXPECT_TRUE(registry.DmaUnmap(*domain, dst.data(), kDstIova, kPage).ok());
}

TEST_F(VfioHotplugTest, KernelKeepsMappingsWhileAnotherDeviceHoldsTheContainer) {
  ASSERT_GE(devices_.size(), 2u);
  std::shared_ptr<VfioDomain> second = OpenDomain(devices_[1]);
  ASSERT_NE(second, nullptr);
  Mapping src(kPage), dst(kPage);
  ExternalMemoryRegistry registry;
  MapPair(registry, src, dst);
  edu_.reset();
  ASSERT_TRUE(domain_->Detach().ok());
  EXPECT_EQ(container_->groups().size(), 1u);
  ASSERT_NO_FATAL_FAILURE(RemoveAndReAdd(devices_[0]));
  ASSERT_TRUE(domain_->Reattach().ok());
  ASSERT_NO_FATAL_FAILURE(ReopenEdu());
  ExpectRoundTrip(*edu_, src, kSrcIova, dst, kDstIova, kLen, 45);
  UnmapPair(registry, src, dst);
}

}  // namespace
}  // namespace dmareg::device_test
