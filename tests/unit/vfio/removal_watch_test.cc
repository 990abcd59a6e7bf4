// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The uevent a domain waits for to re-attach: its device bound to vfio-pci,
// told apart from every other message the kernel sends on the socket.
#include "vfio/removal_watch.h"

#include <string>
#include <string_view>

#include "gtest/gtest.h"

namespace dmareg::internal {
namespace {

std::string Message(std::string_view action, std::string_view devpath, std::string_view subsystem,
                    std::string_view driver) {
  std::string m = std::string(action) + "@" + std::string(devpath);
  m.push_back('\0');
  for (std::string kv : {"ACTION=" + std::string(action), "DEVPATH=" + std::string(devpath),
                         "SUBSYSTEM=" + std::string(subsystem), "DRIVER=" + std::string(driver),
                         std::string("SEQNUM=1234")}) {
    m += kv;
    m.push_back('\0');
  }
  return m;
}

constexpr char kAddress[] = "0000:00:11.0";
constexpr char kPath[] = "/devices/pci0000:00/0000:00:11.0";

TEST(RemovalWatchTest, OnlyABindOfThisDeviceToVfioPciCounts) {
  EXPECT_TRUE(RemovalWatch::IsVfioBind(Message("bind", kPath, "pci", "vfio-pci"), kAddress));
  EXPECT_FALSE(RemovalWatch::IsVfioBind(Message("add", kPath, "pci", "vfio-pci"), kAddress));
  EXPECT_FALSE(RemovalWatch::IsVfioBind(Message("unbind", kPath, "pci", "vfio-pci"), kAddress));
  EXPECT_FALSE(RemovalWatch::IsVfioBind(Message("bind", kPath, "pci", "edu"), kAddress));
  EXPECT_FALSE(RemovalWatch::IsVfioBind(Message("bind", kPath, "vfio", "vfio-pci"), kAddress));
  // Another device, and one whose address merely ends the same way.
  EXPECT_FALSE(RemovalWatch::IsVfioBind(
      Message("bind", "/devices/pci0000:00/0000:00:12.0", "pci", "vfio-pci"), kAddress));
  EXPECT_FALSE(RemovalWatch::IsVfioBind(
      Message("bind", "/devices/pci0000:00/10000:00:11.0", "pci", "vfio-pci"), kAddress));
  // Truncated and empty messages are no bind.
  const std::string whole = Message("bind", kPath, "pci", "vfio-pci");
  EXPECT_FALSE(RemovalWatch::IsVfioBind(whole.substr(0, whole.find("DRIVER")), kAddress));
  EXPECT_FALSE(RemovalWatch::IsVfioBind("", kAddress));
  EXPECT_FALSE(RemovalWatch::IsVfioBind(std::string_view("bind@x\0", 7), kAddress));
}

}  // namespace
}  // namespace dmareg::internal
