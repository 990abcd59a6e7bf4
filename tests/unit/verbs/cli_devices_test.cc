// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// `dmareg devices` without devices: scanning a made-up sysfs tree for
// vfio-pci devices, and rendering a made-up report as text and JSON.

#include <infiniband/verbs.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <string>

#include "cli/devices.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dmareg::cli {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class FakeSysfs {
 public:
  FakeSysfs() {
    char tmpl[] = "/tmp/dmareg-sysfs-XXXXXX";
    root_ = mkdtemp(tmpl);
    fs::create_directories(root_ / "sys/bus/pci/drivers/vfio-pci");
    fs::create_directories(root_ / "sys/kernel/iommu_groups/4");
    fs::create_directories(root_ / "dev/vfio");
  }
  ~FakeSysfs() { fs::remove_all(root_); }

  // A PCI device bound to vfio-pci, optionally in an IOMMU group.
  void AddDevice(const std::string& addr, const std::string& vendor, const std::string& device,
                 const std::string& group) {
    const fs::path dev = root_ / "sys/devices/pci0000:00" / addr;
    fs::create_directories(dev);
    std::ofstream(dev / "vendor") << vendor << "\n";
    std::ofstream(dev / "device") << device << "\n";
    if (!group.empty()) {
      fs::create_directories(root_ / "sys/kernel/iommu_groups" / group);
      fs::create_directory_symlink("../../../kernel/iommu_groups/" + group, dev / "iommu_group");
    }
    fs::create_directory_symlink(dev, root_ / "sys/bus/pci/drivers/vfio-pci" / addr);
  }
  void AddGroupNode(const std::string& group) { std::ofstream(root_ / "dev/vfio" / group); }
  std::string sys() const { return (root_ / "sys").string(); }
  std::string dev() const { return (root_ / "dev").string(); }
  const fs::path& root() const { return root_; }

 private:
  fs::path root_;
};

TEST(ScanVfioDevicesTest, FindsBoundDevicesAndTheirGroups) {
  FakeSysfs fake;
  fake.AddDevice("0000:00:04.0", "0x1234", "0x11e8", "4");
  fake.AddDevice("0000:00:03.0", "0x8086", "0x10d3", "");
  fake.AddGroupNode("4");
  // Driver control files are not devices.
  std::ofstream(fake.root() / "sys/bus/pci/drivers/vfio-pci/new_id");
  std::ofstream(fake.root() / "sys/bus/pci/drivers/vfio-pci/bind");

  const std::vector<VfioDeviceReport> found = ScanVfioDevices(fake.sys(), fake.dev());
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(found[0].pci_address, "0000:00:03.0");
  EXPECT_EQ(found[0].iommu_group, "");
  EXPECT_FALSE(found[0].group_node);
  EXPECT_EQ(found[1].pci_address, "0000:00:04.0");
  EXPECT_EQ(found[1].vendor, "0x1234");
  EXPECT_EQ(found[1].device, "0x11e8");
  EXPECT_EQ(found[1].iommu_group, "4");
  EXPECT_TRUE(found[1].group_node);
}

TEST(ScanVfioDevicesTest, NoDriverDirectoryMeansNoDevices) {
  EXPECT_TRUE(ScanVfioDevices("/nonexistent-sysfs", "/nonexistent-dev").empty());
}

DevicesReport SampleReport() {
  DevicesReport r;
  RdmaDeviceReport d;
  d.name = "rxe0";
  d.caps.device_name = "rxe0";
  d.info.page_size_cap = 0xfffff000;
  d.info.max_mr = 524287;
  d.info.dmabuf_probe_errno = EOPNOTSUPP;
  d.info.phys_port_cnt = 1;
  PortReport p;
  p.port = 1;
  p.state = "PORT_ACTIVE";
  p.link_layer = "Ethernet";
  p.active_mtu = 1024;
  rc::GidEntry g;
  g.index = 1;
  g.gid = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1};
  g.type = IBV_GID_TYPE_ROCE_V2;
  p.gids.push_back(g);
  d.ports.push_back(p);
  r.rdma.push_back(d);
  RdmaDeviceReport broken;
  broken.name = "mlx5_\"0\"";
  broken.error = "ibv_open_device on mlx5_0: Permission denied (EACCES)";
  r.rdma.push_back(broken);
  r.vfio.push_back(VfioDeviceReport{"0000:00:04.0", "0x1234", "0x11e8", "4", true});
  VfioProbeReport probe;
  probe.iommu_type = "type1v2";
  probe.container_groups = 2;
  probe.iova_ranges = {*Range::FromBounds(0, 0xfee00000),
                       *Range::FromBounds(0xfef00000, 1ull << 39)};
  probe.dma_avail = 65533;
  probe.page_sizes = 0x40201000;
  r.vfio.back().probe = probe;
  r.vfio.push_back(VfioDeviceReport{"0000:00:05.0", "0x1234", "0x11e8", "7", true});
  r.vfio.back().probe = VfioProbeReport{.error = "VFIO group 7 is busy"};
  return r;
}

TEST(RenderTest, TextNamesCapabilitiesPortsAndGroups) {
  const std::string text = RenderText(SampleReport());
  EXPECT_THAT(text, HasSubstr("RDMA devices: 2"));
  EXPECT_THAT(text, HasSubstr("dma-buf MR: no (probe: EOPNOTSUPP)"));
  EXPECT_THAT(text, HasSubstr("gid[1] ::ffff:10.0.0.1 (RoCE v2)"));
  EXPECT_THAT(text, HasSubstr("cannot open: ibv_open_device on mlx5_0"));
  EXPECT_THAT(text, HasSubstr("0000:00:04.0  vendor 0x1234 device 0x11e8  iommu group 4"));
  EXPECT_THAT(text, HasSubstr("container: type1v2, 2 group(s); dma_avail 65533; page sizes "
                              "0x40201000"));
  EXPECT_THAT(text, HasSubstr("IOVA ranges: [0, 0xfee00000) [0xfef00000, 0x8000000000)"));
  EXPECT_THAT(text, HasSubstr("cannot open: VFIO group 7 is busy"));
}

TEST(RenderTest, JsonIsEscapedAndComplete) {
  const std::string json = RenderJson(SampleReport());
  EXPECT_THAT(json, HasSubstr("\"name\":\"rxe0\""));
  EXPECT_THAT(json, HasSubstr("\"dmabuf_mr\":false"));
  EXPECT_THAT(json, HasSubstr("\"dmabuf_probe\":\"EOPNOTSUPP\""));
  EXPECT_THAT(json, HasSubstr("\"gid\":\"::ffff:10.0.0.1\",\"type\":\"RoCE v2\""));
  EXPECT_THAT(json, HasSubstr("\"name\":\"mlx5_\\\"0\\\"\""));
  EXPECT_THAT(json, HasSubstr("\"iommu_group\":\"4\",\"group_node\":true"));
  EXPECT_THAT(json, HasSubstr("\"container\":{\"iommu_type\":\"type1v2\",\"groups\":2}"));
  EXPECT_THAT(json, HasSubstr("\"iova_ranges\":[{\"begin\":\"0x0\",\"end\":\"0xfee00000\"}"));
  EXPECT_THAT(json, HasSubstr("\"dma_avail\":65533,\"page_sizes\":\"0x40201000\""));
  EXPECT_THAT(json, HasSubstr("\"group_node\":true,\"error\":\"VFIO group 7 is busy\""));
  EXPECT_EQ(RenderJson(DevicesReport{}), "{\"rdma\":[],\"vfio\":[]}\n");
}

// dma-buf: the importing NICs come from the RDMA part, sources from the probe.
DevicesReport DmaBufReport(bool sources_probed) {
  DevicesReport r = SampleReport();
  RdmaDeviceReport mlx;
  mlx.name = "mlx5_1";
  mlx.caps.dmabuf_import = true;
  r.rdma.push_back(mlx);
  DmaBufSourcesReport d;
  d.sources_probed = sources_probed;
  if (sources_probed) {
    d.drm_cards = {{"/dev/dri/card0", "vgem"}};
    d.heaps = {"system"};
  }
  d.cuda = true;
  d.cuda_detail = "driver 13.0 (libcuda.so.1), 1 device: 0: H200 (dma-buf export: yes)";
  r.dmabuf = d;
  return r;
}

TEST(RenderTest, DmaBufImportersAndSources) {
  const std::string text = RenderText(DmaBufReport(true));
  EXPECT_THAT(text, HasSubstr("dma-buf:\n  importing RDMA devices: mlx5_1\n"));
  EXPECT_THAT(text, HasSubstr("  DRM: /dev/dri/card0 (vgem)\n  udmabuf: no\n  heaps: system\n"));
  EXPECT_THAT(text, HasSubstr("  CUDA: yes (driver 13.0 (libcuda.so.1), 1 device: 0: H200"));
  EXPECT_THAT(RenderText(DmaBufReport(false)), HasSubstr("DRM, udmabuf, heaps: not probed"));
  const std::string json = RenderJson(DmaBufReport(true));
  EXPECT_THAT(json,
              HasSubstr("\"dmabuf\":{\"importers\":[\"mlx5_1\"],\"drm\":[{\"card\":"
                        "\"/dev/dri/card0\",\"driver\":\"vgem\"}],\"udmabuf\":false,"
                        "\"heaps\":[\"system\"],\"cuda\":true,\"cuda_detail\":\"driver 13.0"));
  EXPECT_THAT(RenderJson(DmaBufReport(false)),
              HasSubstr("\"dmabuf\":{\"importers\":[\"mlx5_1\"],\"cuda\":true,"));
  DevicesReport none;
  none.dmabuf = DmaBufSourcesReport{.cuda_detail = "CUDA driver libcuda.so.1 does not load"};
  EXPECT_THAT(RenderText(none), HasSubstr("importing RDMA devices: none"));
  EXPECT_THAT(RenderText(none), HasSubstr("CUDA: no (CUDA driver libcuda.so.1 does not load)"));
}

}  // namespace
}  // namespace dmareg::cli
