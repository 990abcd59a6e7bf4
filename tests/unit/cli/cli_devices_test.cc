// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// `dmareg devices` without devices: listing vfio-pci devices through the
// VFIO library over a stand-in kernel (FakeVfioOps), scanning a made-up
// sysfs tree for RDMA netdevs and GUIDs, telling "no kernel support" from
// "no devices", and rendering a made-up report as text and JSON (schema 2).

#include <infiniband/verbs.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <string>

#include "cli/devices.h"
#ifdef DMAREG_CLI_HAVE_VFIO
#include "dmareg/testing/fake_vfio_ops.h"
#endif
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace dmareg::cli {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// A made-up /sys for the RDMA part, removed afterwards.
class FakeSysfs {
 public:
  FakeSysfs() {
    char tmpl[] = "/tmp/dmareg-sysfs-XXXXXX";
    root_ = mkdtemp(tmpl);
  }
  ~FakeSysfs() { fs::remove_all(root_); }
  std::string sys() const { return (root_ / "sys").string(); }
  const fs::path& root() const { return root_; }

 private:
  fs::path root_;
};

#ifdef DMAREG_CLI_HAVE_VFIO
using ::dmareg::testing::FakeVfioOps;

// The VFIO library's listing (VfioDomain::ListDevices) under the CLI: what
// is bound to vfio-pci, by address, its IDs and group, and the group's node.
TEST(ScanVfioDevicesTest, ListsTheLibrarysDevicesAndTheirGroups) {
  auto ops = std::make_shared<FakeVfioOps>();
  ops->AddDevice({.address = "0000:00:04.0", .group = 4, .id = 0x11e81234});
  ops->AddDevice({.address = "0000:00:03.0", .group = -1, .id = 0x10d38086});   // no IOMMU group
  ops->AddDevice({.address = "0000:00:05.0", .group = 6, .driver = "e1000e"});  // not vfio-pci
  ops->AddDevice({.address = "0000:00:06.0", .group = 7, .driver = ""});        // no driver

  const std::vector<VfioDeviceReport> found = ScanVfioDevices(ops);
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(found[0].pci_address, "0000:00:03.0");
  EXPECT_EQ(found[0].vendor, "0x8086");
  EXPECT_EQ(found[0].device, "0x10d3");
  EXPECT_EQ(found[0].iommu_group, "");
  EXPECT_FALSE(found[0].group_node);
  EXPECT_EQ(found[1].pci_address, "0000:00:04.0");
  EXPECT_EQ(found[1].vendor, "0x1234");
  EXPECT_EQ(found[1].device, "0x11e8");
  EXPECT_EQ(found[1].iommu_group, "4");
  EXPECT_TRUE(found[1].group_node);
}

TEST(ScanVfioDevicesTest, NoDevicesIsAnEmptyList) {
  EXPECT_TRUE(ScanVfioDevices(std::make_shared<FakeVfioOps>()).empty());
}

// Every device with a node goes into one container, whose IOMMU type is
// named as the container reports it (type1 here: no type1v2 on this kernel).
TEST(ProbeVfioDevicesTest, OneContainerWithTheTypeItReports) {
  FakeVfioOps::IommuSpec spec;
  spec.type1v2 = false;
  auto ops = std::make_shared<FakeVfioOps>(spec);
  ops->AddDevice({.address = "0000:00:04.0", .group = 4});
  ops->AddDevice({.address = "0000:00:05.0", .group = 5});
  ops->AddDevice({.address = "0000:00:06.0", .group = -1});
  std::vector<VfioDeviceReport> devices = ScanVfioDevices(ops);
  ASSERT_EQ(devices.size(), 3u);
  ProbeVfioDevices(devices, ops);
  for (int i : {0, 1}) {
    ASSERT_TRUE(devices[i].probe.has_value());
    EXPECT_EQ(devices[i].probe->error, "") << devices[i].pci_address;
    EXPECT_EQ(devices[i].probe->iommu_type, "type1");
    EXPECT_EQ(devices[i].probe->container_groups, 2);
    EXPECT_EQ(devices[i].probe->dma_avail, 65535u);
  }
  EXPECT_THAT(devices[2].probe->error, HasSubstr("no /dev/vfio/"));
  EXPECT_EQ(ops->live_fds(), 0);  // the probe closed all it opened
}
#endif

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
  EXPECT_THAT(json, HasSubstr("\"iommu_group\":4,\"group_node\":true"));
  EXPECT_THAT(json, HasSubstr("\"container\":{\"iommu_type\":\"type1v2\",\"groups\":2}"));
  EXPECT_THAT(json, HasSubstr("\"iova_ranges\":[{\"begin\":\"0x0\",\"end\":\"0xfee00000\"}"));
  EXPECT_THAT(json, HasSubstr("\"dma_avail\":65533,\"page_sizes\":\"0x40201000\""));
  EXPECT_THAT(json, HasSubstr("\"group_node\":true,\"error\":\"VFIO group 7 is busy\""));
  EXPECT_EQ(RenderJson(DevicesReport{}),
            "{\"schema_version\":2,\"rdma\":{\"status\":\"no-devices\",\"reason\":\"\","
            "\"devices\":[]},\"vfio\":[]}\n");
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

// An RDMA device's sysfs directory: node_guid, a PCI parent's net/, RoCE
// GID ndevs (one unused entry: empty), rxe's parent file.
TEST(RdmaSysfsTest, NetdevsAndNodeGuid) {
  FakeSysfs fake;
  const fs::path mlx = fake.root() / "sys/class/infiniband/mlx5_0";
  fs::create_directories(mlx / "device/net/enp1s0f0");
  fs::create_directories(mlx / "ports/1/gid_attrs/ndevs");
  std::ofstream(mlx / "ports/1/gid_attrs/ndevs/0") << "enp1s0f0\n";
  std::ofstream(mlx / "ports/1/gid_attrs/ndevs/1") << "vlan7\n";
  std::ofstream(mlx / "ports/1/gid_attrs/ndevs/2");  // unused entry
  std::ofstream(mlx / "node_guid") << "0002:c903:0012:3456\n";
  const fs::path rxe = fake.root() / "sys/class/infiniband/rxe0";
  fs::create_directories(rxe);
  std::ofstream(rxe / "parent") << "eth0\n";
  std::ofstream(rxe / "node_guid") << "5054:00ff:fe12:34\n";  // malformed

  EXPECT_THAT(RdmaNetdevs(fake.sys(), "mlx5_0"), ::testing::ElementsAre("enp1s0f0", "vlan7"));
  EXPECT_THAT(RdmaNetdevs(fake.sys(), "rxe0"), ::testing::ElementsAre("eth0"));
  EXPECT_TRUE(RdmaNetdevs(fake.sys(), "nosuch").empty());
  EXPECT_EQ(ReadNodeGuid(fake.sys(), "mlx5_0"), std::optional<uint64_t>(0x0002c90300123456));
  EXPECT_EQ(ReadNodeGuid(fake.sys(), "rxe0"), std::nullopt);
  EXPECT_EQ(ReadNodeGuid(fake.sys(), "nosuch"), std::nullopt);
  EXPECT_EQ(GuidText(0x0002c90300123456), "0002:c903:0012:3456");
}

TEST(ClassifyRdmaTest, NoKernelSupportIsNotNoDevices) {
  EXPECT_EQ(ClassifyRdma(false, ENOSYS, 0).status, RdmaStatus::kNoKernelSupport);
  EXPECT_THAT(ClassifyRdma(false, 0, 0).reason, HasSubstr("no /sys/class/infiniband"));
  const RdmaListing no_uverbs = ClassifyRdma(true, ENOSYS, 0);
  EXPECT_EQ(no_uverbs.status, RdmaStatus::kNoKernelSupport);
  EXPECT_THAT(no_uverbs.reason, HasSubstr("ibv_get_device_list"));
  EXPECT_THAT(no_uverbs.reason, HasSubstr("ENOSYS"));
  EXPECT_EQ(ClassifyRdma(true, 0, 0).status, RdmaStatus::kNoDevices);
  EXPECT_EQ(ClassifyRdma(true, ENODEV, 0).status, RdmaStatus::kNoDevices);
  const RdmaListing denied = ClassifyRdma(true, EACCES, 0);
  EXPECT_EQ(denied.status, RdmaStatus::kError);
  EXPECT_THAT(denied.reason, HasSubstr("EACCES"));
  EXPECT_EQ(ClassifyRdma(true, 0, 2).status, RdmaStatus::kOk);
  EXPECT_EQ(ClassifyRdma(true, 0, 2).reason, "");

  DevicesReport none;
  none.rdma_listing = ClassifyRdma(false, ENOSYS, 0);
  EXPECT_THAT(RenderText(none), HasSubstr("RDMA devices: 0\n  (no-kernel-support: no /sys"));
  const nlohmann::json j = nlohmann::json::parse(RenderJson(none));
  EXPECT_EQ(j["rdma"]["status"], "no-kernel-support");
  none.rdma_listing = ClassifyRdma(true, 0, 0);
  EXPECT_EQ(nlohmann::json::parse(RenderJson(none))["rdma"]["status"], "no-devices");
}

// The memlock limit leads the report; under 64 MiB it is a warning, unless
// CAP_IPC_LOCK lifts it.
TEST(RenderTest, MemlockLimitAndItsWarning) {
  DevicesReport r;
  r.memlock = MemlockLimit{.soft = 8 << 20, .hard = 16 << 20, .pinned = 4096};
  std::string text = RenderText(r);
  EXPECT_THAT(text, ::testing::StartsWith("memlock: RLIMIT_MEMLOCK soft 8 MiB, hard 16 MiB; now 4 "
                                          "KiB pinned (VmPin)\n  warning: small: "));
  nlohmann::json j = nlohmann::json::parse(RenderJson(r));
  EXPECT_EQ(j["memlock"]["soft"], 8 << 20);
  EXPECT_EQ(j["memlock"]["hard"], 16 << 20);
  EXPECT_EQ(j["memlock"]["small"], true);
  EXPECT_EQ(j["memlock"]["cap_ipc_lock"], false);

  r.memlock->cap_ipc_lock = true;
  text = RenderText(r);
  EXPECT_THAT(text, HasSubstr("(CAP_IPC_LOCK: not limited)"));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("warning")));
  r.memlock = MemlockLimit{};
  text = RenderText(r);
  EXPECT_THAT(text, ::testing::StartsWith("memlock: RLIMIT_MEMLOCK unlimited\nRDMA devices: "));
  j = nlohmann::json::parse(RenderJson(r));
  EXPECT_TRUE(j["memlock"]["soft"].is_null());
  EXPECT_EQ(j["memlock"]["small"], false);
  // Not collected (as in the older tests): no line, no field.
  r.memlock.reset();
  EXPECT_THAT(RenderText(r), ::testing::StartsWith("RDMA devices: "));
  EXPECT_FALSE(nlohmann::json::parse(RenderJson(r)).contains("memlock"));
}

// Schema 2: a version; 64-bit values and masks as "0x" strings whatever
// their value; ids as numbers everywhere (RDMA and VFIO alike).
TEST(RenderTest, JsonSchemaTwoTypes) {
  DevicesReport r = SampleReport();
  r.rdma_listing = {RdmaStatus::kOk, ""};
  r.rdma[0].node_guid = 0x505400fffe123456;
  r.rdma[0].netdevs = {"eth0"};
  r.rdma[0].info.vendor_id = 0x2c9;
  r.rdma[0].info.max_mr_size = ~uint64_t{0};  // past 2^53: a double would round it
  r.rdma[0].info.odp_general_caps = 0x3;
  const nlohmann::json j = nlohmann::json::parse(RenderJson(r));
  EXPECT_EQ(j["schema_version"], 2);
  EXPECT_EQ(j["rdma"]["status"], "ok");
  const nlohmann::json& d = j["rdma"]["devices"][0];
  EXPECT_EQ(d["node_guid"], "0x505400fffe123456");
  EXPECT_EQ(d["netdevs"], nlohmann::json::array({"eth0"}));
  EXPECT_EQ(d["max_mr_size"], "0xffffffffffffffff");
  EXPECT_EQ(d["page_size_cap"], "0xfffff000");
  EXPECT_EQ(d["odp_general_caps"], "0x3");
  EXPECT_EQ(d["odp_rc_caps"], "0x0");
  EXPECT_EQ(d["vendor_id"], 0x2c9);
  EXPECT_EQ(d["vendor_part_id"], 0);
  EXPECT_TRUE(j["rdma"]["devices"][1]["node_guid"].is_null());
  EXPECT_EQ(j["vfio"][0]["vendor"], 0x1234);
  EXPECT_EQ(j["vfio"][0]["device"], 0x11e8);
  EXPECT_EQ(j["vfio"][0]["iommu_group"], 4);

  const std::string text = RenderText(r);
  EXPECT_THAT(text, HasSubstr("  rxe0\n    node GUID 5054:00ff:fe12:3456, netdev eth0\n"));
  EXPECT_THAT(text, HasSubstr("  mlx5_\"0\"\n    node GUID -, netdev -\n    cannot open"));
}

// -d: only that RDMA device; the VFIO part is not collected, so not shown.
TEST(RenderTest, OneDeviceOmitsVfio) {
  DevicesReport r = SampleReport();
  r.rdma.resize(1);
  r.vfio.clear();
  r.vfio_collected = false;
  EXPECT_THAT(RenderText(r), ::testing::Not(HasSubstr("VFIO")));
  EXPECT_FALSE(nlohmann::json::parse(RenderJson(r)).contains("vfio"));
}

// A device that is not there is NotFound, naming it, on any machine: this
// one has none, the VM has rxe0.
TEST(CollectRdmaTest, UnknownDeviceIsNotFound) {
  DevicesReport r;
  const absl::Status s = CollectRdma("/sys", "no-such-rdma-device", r);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("no RDMA device 'no-such-rdma-device'"));
  EXPECT_TRUE(r.rdma.empty());
}

}  // namespace
}  // namespace dmareg::cli
