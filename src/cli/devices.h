// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// `dmareg devices`: what DMA-capable devices this machine has and what dmareg
// probed on them. Collection and rendering are separate so tests can render
// a made-up report and scan a made-up sysfs tree.
//
//   DevicesReport report;
//   report.rdma = CollectRdmaDevices();
//   report.vfio = ScanVfioDevices("/sys", "/dev");
//   report.dmabuf = CollectDmaBufSources();
//   std::cout << (json ? RenderJson(report) : RenderText(report));

#ifndef DMAREG_SRC_CLI_DEVICES_H_
#define DMAREG_SRC_CLI_DEVICES_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dmareg/domain.h"
#include "dmareg/range.h"
#include "dmareg/verbs_domain.h"
#include "verbs/rc_qp.h"

namespace dmareg::cli {

struct PortReport {
  int port = 0;
  std::string state;       // "PORT_ACTIVE", ...
  std::string link_layer;  // "Ethernet", "InfiniBand"
  int active_mtu = 0;      // bytes
  uint16_t lid = 0;
  std::vector<rc::GidEntry> gids;
  std::string error;  // why the port could not be queried, if it could not
};

struct RdmaDeviceReport {
  std::string name;
  std::string error;  // why VerbsDomain::Open failed; empty when it worked
  DomainCapabilities caps;
  VerbsDeviceInfo info;
  std::vector<PortReport> ports;
};

// What opening a VFIO device into a container found (ProbeVfioDevices).
struct VfioProbeReport {
  std::string error;         // why it could not be opened; empty when it was
  std::string iommu_type;    // "type1v2", "type1"
  int container_groups = 0;  // groups in the container it joined
  std::vector<Range> iova_ranges;
  std::optional<uint32_t> dma_avail;
  uint64_t page_sizes = 0;  // bit N set: IOMMU pages of 2^N bytes
};

struct VfioDeviceReport {
  std::string pci_address;               // "0000:00:03.0"
  std::string vendor;                    // "0x1234"
  std::string device;                    // "0x11e8"
  std::string iommu_group;               // "3"; empty when the device has none
  bool group_node = false;               // /dev/vfio/<group> exists
  std::optional<VfioProbeReport> probe;  // absent: not probed
};

// What the machine can make dma-bufs from (dmabuf.h, cuda.h).
struct DmaBufSourcesReport {
  struct Drm {
    std::string card;    // /dev/dri/cardN
    std::string driver;  // "vgem"; "" if unknown
  };
  bool sources_probed = false;  // false: built without the kernel sources' probe
  std::vector<Drm> drm_cards;
  bool udmabuf = false;
  std::vector<std::string> heaps;
  bool cuda = false;        // libcuda loads and a device exports dma-bufs
  std::string cuda_detail;  // the driver and devices, or why not
};

struct DevicesReport {
  std::vector<RdmaDeviceReport> rdma;
  std::vector<VfioDeviceReport> vfio;
  std::string rdma_error;  // listing the RDMA devices itself failed
  // Which NICs import dma-bufs comes from `rdma`; absent: not collected.
  std::optional<DmaBufSourcesReport> dmabuf;
};

// Opens every RDMA device once (VerbsDomain::Open) and queries its ports.
std::vector<RdmaDeviceReport> CollectRdmaDevices(std::string* error);

// Devices bound to vfio-pci under `sysfs_root`/bus/pci/drivers/vfio-pci, in
// PCI address order; group nodes looked up under `dev_root`/vfio.
std::vector<VfioDeviceReport> ScanVfioDevices(const std::string& sysfs_root,
                                              const std::string& dev_root);

// Opens each device that has a group node into one container, as a process
// using them all would, and records the container's IOMMU facts (or why it
// could not: a group busy in another process, not viable, ...).
void ProbeVfioDevices(std::vector<VfioDeviceReport>& devices);

// dma-buf sources (the dmabuf component's probe) and CUDA (libcuda loaded
// at run time); each part says why it is missing when it is.
DmaBufSourcesReport CollectDmaBufSources();

std::string RenderText(const DevicesReport& report);
std::string RenderJson(const DevicesReport& report);

}  // namespace dmareg::cli

#endif  // DMAREG_SRC_CLI_DEVICES_H_
