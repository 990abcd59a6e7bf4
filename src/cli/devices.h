// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// `dmareg devices`: what DMA-capable devices this machine has and what dmareg
// probed on them. Collection and rendering are separate so tests can render
// a made-up report, scan a made-up sysfs tree, and list VFIO devices over a
// stand-in for the kernel (the VFIO library's own listing and rules).
//
//   DevicesReport report;
//   absl::Status s = CollectRdma("/sys", /*only=*/"", report);  // NotFound: no such device
//   report.vfio = ScanVfioDevices();
//   ProbeVfioDevices(report.vfio);
//   report.dmabuf = CollectDmaBufSources();
//   std::cout << (json ? RenderJson(report) : RenderText(report));

#ifndef DMAREG_SRC_CLI_DEVICES_H_
#define DMAREG_SRC_CLI_DEVICES_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "dmareg/domain.h"
#include "dmareg/memlock.h"
#include "dmareg/range.h"
#include "dmareg/verbs/verbs_domain.h"
#include "verbs/rc_qp.h"

namespace dmareg {
class VfioOps;  // the VFIO backend's seam over the kernel: dmareg/vfio/vfio_ops.h
}  // namespace dmareg

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
  // Host byte order; from ibv_query_device, or sysfs node_guid when the
  // device does not open. Absent: neither said.
  std::optional<uint64_t> node_guid;
  std::vector<std::string> netdevs;  // the network interfaces under it, sorted
  DomainCapabilities caps;
  VerbsDeviceInfo info;
  std::vector<PortReport> ports;
};

// What opening a VFIO device into a container found (ProbeVfioDevices).
struct VfioProbeReport {
  std::string error;         // why it could not be opened; empty when it was
  std::string iommu_type;    // as the container reports it: IommuTypeName ("type1v2", "type1")
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

// Why the RDMA list is what it is: a kernel without RDMA support is not a
// machine without devices.
enum class RdmaStatus {
  kOk,               // one or more devices
  kNoDevices,        // the kernel has RDMA support, no device is there
  kNoKernelSupport,  // no /sys/class/infiniband, or libibverbs says ENOSYS
  kError,            // listing failed otherwise (the reason says how)
};
absl::string_view RdmaStatusName(RdmaStatus s);  // "ok", "no-devices", ...

struct RdmaListing {
  RdmaStatus status = RdmaStatus::kNoDevices;
  std::string reason;  // empty when kOk
};
// `class_dir_exists`: /sys/class/infiniband exists; `list_errno`: errno of
// ibv_get_device_list when it returned NULL, 0 when it returned a list of
// `devices` entries.
RdmaListing ClassifyRdma(bool class_dir_exists, int list_errno, size_t devices);

// JSON schema. 1 (implicit, no field): "rdma" was a list. 2: "rdma" is
// {status, reason, devices}; ids are numbers, 64-bit values and masks hex
// strings; node_guid and netdevs added; later memlock (readers ignore
// fields they do not know, so the version stays).
inline constexpr int kDevicesSchemaVersion = 2;

struct DevicesReport {
  std::vector<RdmaDeviceReport> rdma;
  RdmaListing rdma_listing;
  bool vfio_collected = true;  // false with -d: only that RDMA device
  std::vector<VfioDeviceReport> vfio;
  // Which NICs import dma-bufs comes from `rdma`; absent: not collected.
  std::optional<DmaBufSourcesReport> dmabuf;
  // The process's pinning limit (every pinned MR and VFIO mapping counts
  // against it); absent: not collected.
  std::optional<MemlockLimit> memlock;
};

// Below this a memlock limit is reported as small (containers often give 8 MiB).
inline constexpr uint64_t kSmallMemlockBytes = uint64_t{64} << 20;
bool MemlockIsSmall(const MemlockLimit& m);

// Lists the RDMA devices (classified as above), opens each once
// (VerbsDomain::Open), queries its ports, and reads its node GUID and
// netdevs under `sysfs_root`. `only` non-empty: that device alone, NotFound
// (naming those present) when it is not there.
absl::Status CollectRdma(const std::string& sysfs_root, const std::string& only,
                         DevicesReport& report);

// The netdevs of RDMA device `device`: <sysfs>/class/infiniband/<device>/
// device/net/*, the names in ports/*/gid_attrs/ndevs/* (RoCE, rxe and siw
// have them), and rxe's `parent` file; sorted, each once.
std::vector<std::string> RdmaNetdevs(const std::string& sysfs_root, const std::string& device);

// <sysfs>/class/infiniband/<device>/node_guid ("0002:c903:0012:3456"), in
// host byte order; absent when missing or malformed.
std::optional<uint64_t> ReadNodeGuid(const std::string& sysfs_root, const std::string& device);

// "0002:c903:0012:3456", as ibv_devinfo and sysfs write a GUID.
std::string GuidText(uint64_t guid);

// Devices bound to vfio-pci, in PCI address order, as the VFIO library lists
// them (VfioDomain::ListDevices: its address rules), with whether each
// group's /dev/vfio node exists. `ops`: the kernel's when null (tests pass
// a FakeVfioOps). Empty when dmareg is built without VFIO, or the listing
// fails.
std::vector<VfioDeviceReport> ScanVfioDevices(std::shared_ptr<VfioOps> ops = nullptr);

// Opens each device that has a group node into one container over `ops`
// (null: the kernel's), as a process using them all would, and records the
// container's IOMMU facts (or why it could not: a group busy in another
// process, not viable, ...).
void ProbeVfioDevices(std::vector<VfioDeviceReport>& devices,
                      std::shared_ptr<VfioOps> ops = nullptr);

// dma-buf sources (the dmabuf component's probe) and CUDA (libcuda loaded
// at run time); each part says why it is missing when it is.
DmaBufSourcesReport CollectDmaBufSources();

std::string RenderText(const DevicesReport& report);
std::string RenderJson(const DevicesReport& report);

}  // namespace dmareg::cli

#endif  // DMAREG_SRC_CLI_DEVICES_H_
