// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// Multiprocess VFIO on a real device: a primary serves its container and
// group fds over a Unix socket; a secondary process (this binary run again,
// see main) receives them, maps its own memory through the shared container
// with dmareg's public API and lets the edu DMA engine check the bytes. A
// peer of another uid is refused; a group without vfio-pci gets NO_FD.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/test_memory.h"
#include "device/vfio/vfio_env.h"
#include "dmareg/external_memory.h"
#include "dmareg/vfio/fd_sharing.h"
#include "gtest/gtest.h"

extern char** environ;

namespace dmareg::device_test {
namespace {

constexpr size_t kPage = 4096;
constexpr size_t kLen = 2048;
constexpr char kRoleEnv[] = "DMAREG_VFIO_SECONDARY_ROLE";
constexpr char kSocketEnv[] = "DMAREG_VFIO_SECONDARY_SOCKET";

// ---- the secondary: exit 0 when what it checks holds, else 1 with why.

int Fail(const std::string& why) {
  std::cerr << "secondary: " << why << "\n";
  return 1;
}

int SecondaryMapsThroughSharedContainer(const std::string& socket) {
  const std::string address = VfioDevices().at(0);
  absl::StatusOr<int> type = RequestVfioIommuType(socket);
  if (!type.ok()) return Fail(type.status().ToString());
  absl::StatusOr<int> cfd = RequestVfioContainerFd(socket);
  if (!cfd.ok()) return Fail(cfd.status().ToString());
  absl::StatusOr<std::shared_ptr<VfioContainer>> container = VfioContainer::Adopt(*cfd, *type);
  if (!container.ok()) return Fail(container.status().ToString());
  const int group = std::atoi(Env("DMAREG_VFIO_GROUP").c_str());
  absl::StatusOr<int> gfd = RequestVfioGroupFd(socket, group);
  if (!gfd.ok()) return Fail(gfd.status().ToString());
  VfioDomainOptions options;
  options.container = *container;
  options.dma_address_bits = EduDevice::kDmaAddressBits;
  options.group_fd = *gfd;
  absl::StatusOr<std::shared_ptr<VfioDomain>> domain = VfioDomain::Open(address, options);
  if (!domain.ok()) return Fail(domain.status().ToString());
  absl::StatusOr<std::unique_ptr<EduDevice>> edu = EduDevice::Open(*domain);
  if (!edu.ok()) return Fail(edu.status().ToString());

  test::Mapping src(kPage), dst(kPage);
  ExternalMemoryRegistry registry;
  const uint64_t src_iova = 0x700000, dst_iova = 0x800000;  // clear of the primary's
  for (auto* m : {&src, &dst}) {
    if (absl::Status s = registry.Register(m->data(), m->size(), kPage); !s.ok()) {
      return Fail(s.ToString());
    }
  }
  auto a = registry.DmaMap(*domain, src.data(), src_iova, kPage, AccessFlags());
  if (!a.ok()) return Fail(a.status().ToString());
  auto b = registry.DmaMap(*domain, dst.data(), dst_iova, kPage, AccessFlags(Access::kLocalWrite));
  if (!b.ok()) return Fail(b.status().ToString());
  test::FillPattern(src.data(), kLen, 51);
  std::memset(dst.data(), 0, dst.size());
  if (absl::Status s = (*edu)->ToDevice(src_iova, kLen); !s.ok()) return Fail(s.ToString());
  if (absl::Status s = (*edu)->FromDevice(dst_iova, kLen); !s.ok()) return Fail(s.ToString());
  if (test::FindMismatch(dst.data(), kLen, 51) != -1) {
    return Fail("bytes copied through the shared container differ");
  }
  // The primary's mapping at its IOVA is in the shared IOMMU domain: this
  // process's table does not know it, the kernel does.
  test::Mapping clash(kPage);
  (void)registry.Register(clash.data(), clash.size(), kPage);
  absl::Status s = registry.DmaMap(*domain, clash.data(), 0x100000, kPage, AccessFlags()).status();
  if (s.code() != absl::StatusCode::kAlreadyExists) {
    return Fail("mapping over the primary's IOVA: want AlreadyExists, got " + s.ToString());
  }
  if (!registry.DmaUnmap(*domain, src.data(), src_iova, kPage).ok() ||
      !registry.DmaUnmap(*domain, dst.data(), dst_iova, kPage).ok()) {
    return Fail("unmap failed");
  }
  return 0;
}

int SecondaryOfAnotherUidIsRefused(const std::string& socket) {
  if (setresgid(65534, 65534, 65534) != 0 || setresuid(65534, 65534, 65534) != 0) {
    return Fail(absl::StrCat("cannot become uid 65534: ", std::strerror(errno)));
  }
  absl::StatusOr<int> fd = RequestVfioContainerFd(socket);
  if (fd.ok()) return Fail("a peer of another uid was given the container fd");
  if (fd.status().code() != absl::StatusCode::kPermissionDenied) {
    return Fail("want PermissionDenied, got " + fd.status().ToString());
  }
  return 0;
}

// ---- the primary

int RunSecondary(const std::string& role, const std::string& socket) {
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
  env_strings.push_back(absl::StrCat(kRoleEnv, "=", role));
  env_strings.push_back(absl::StrCat(kSocketEnv, "=", socket));
  std::vector<char*> env;
  for (auto& s : env_strings) env.push_back(s.data());
  env.push_back(nullptr);
  char self[] = "/proc/self/exe";
  char* argv[] = {self, nullptr};
  pid_t pid = -1;
  if (posix_spawn(&pid, self, nullptr, nullptr, argv, env.data()) != 0) return -1;
  return test::ChildExitCode(pid);
}

class VfioMultiprocessTest : public VfioTest {
 protected:
  void SetUp() override {
    VfioTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    socket_ = absl::StrCat("@dmareg-vfio-test-", getpid());
    VfioFdServerOptions options;
    options.socket = socket_;
    auto server = VfioFdServer::Start(container_, options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }
  void TearDown() override {
    server_.reset();
    VfioTest::TearDown();
  }
  std::string socket_;
  std::unique_ptr<VfioFdServer> server_;
};

TEST_F(VfioMultiprocessTest, SecondaryMapsItsOwnMemoryThroughTheSharedContainer) {
  // The primary maps too, and keeps using the device afterwards.
  Mapping src(kPage), dst(kPage);
  ExternalMemoryRegistry registry;
  ASSERT_TRUE(registry.Register(src.data(), src.size(), kPage).ok());
  ASSERT_TRUE(registry.Register(dst.data(), dst.size(), kPage).ok());
  ASSERT_TRUE(registry.DmaMap(domain_, src.data(), 0x100000, kPage, AccessFlags()).ok());
  ASSERT_TRUE(
      registry.DmaMap(domain_, dst.data(), 0x200000, kPage, AccessFlags(Access::kLocalWrite)).ok());
  EXPECT_EQ(RunSecondary("map", socket_), 0);
  ExpectRoundTrip(*edu_, src, 0x100000, dst, 0x200000, kLen, 52);
  EXPECT_TRUE(registry.DmaUnmap(domain_, src.data(), 0x100000, kPage).ok());
  EXPECT_TRUE(registry.DmaUnmap(domain_, dst.data(), 0x200000, kPage).ok());
}

TEST_F(VfioMultiprocessTest, PeerOfAnotherUidIsRefused) {
  ASSERT_EQ(geteuid(), 0u) << "the VM runs the tests as root";
  EXPECT_EQ(RunSecondary("other-uid", socket_), 0);
}

TEST_F(VfioMultiprocessTest, GroupWithoutVfioPciGetsNoFd) {
  const std::string unbound = Env("DMAREG_VFIO_UNBOUND_GROUP");
  ASSERT_FALSE(unbound.empty()) << "the harness names a group left without vfio-pci";
  absl::StatusOr<int> fd = RequestVfioGroupFd(socket_, std::atoi(unbound.c_str()));
  ASSERT_FALSE(fd.ok());
  EXPECT_EQ(fd.status().code(), absl::StatusCode::kFailedPrecondition) << fd.status();
  EXPECT_NE(fd.status().message().find("vfio-pci"), std::string::npos) << fd.status();
  // A group number that does not exist at all is an error, not NO_FD.
  fd = RequestVfioGroupFd(socket_, 99999);
  ASSERT_FALSE(fd.ok());
  EXPECT_NE(fd.status().code(), absl::StatusCode::kFailedPrecondition) << fd.status();
}

}  // namespace
}  // namespace dmareg::device_test

// Run with DMAREG_VFIO_SECONDARY_ROLE set, this binary is the secondary.
int main(int argc, char** argv) {
  using namespace dmareg::device_test;
  const std::string role = Env(kRoleEnv), socket = Env(kSocketEnv);
  if (role == "map") return SecondaryMapsThroughSharedContainer(socket);
  if (role == "other-uid") return SecondaryOfAnotherUidIsRefused(socket);
  if (!role.empty()) return Fail("unknown role " + role);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
