// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "cli/devices.h"

#include <endian.h>
#include <infiniband/verbs.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "dmareg/errno_status.h"
#ifdef DMAREG_CLI_HAVE_DMABUF
#include "dmareg/dmabuf/sources_probe.h"
#endif
#ifdef DMAREG_CLI_HAVE_VFIO
#include "dmareg/vfio/vfio_domain.h"
#include "dmareg/vfio/vfio_ops.h"
#endif
#include "nlohmann/json.hpp"

namespace dmareg::cli {
namespace {

namespace fs = std::filesystem;

std::string ForkName(VerbsDeviceInfo::ForkStatus s) {
  switch (s) {
    case VerbsDeviceInfo::ForkStatus::kEnabled:
      return "enabled";
    case VerbsDeviceInfo::ForkStatus::kUnneeded:
      return "unneeded";
    case VerbsDeviceInfo::ForkStatus::kDisabled:
      break;
  }
  return "disabled";
}

std::string ProbeErrno(int err) { return err == 0 ? "accepted" : std::string(ErrnoName(err)); }

PortReport QueryPort(ibv_context* context, const std::string& device, int port) {
  PortReport p;
  p.port = port;
  ibv_port_attr attr;
  std::memset(&attr, 0, sizeof(attr));
  if (const int err = ibv_query_port(context, static_cast<uint8_t>(port), &attr); err != 0) {
    p.error = ErrnoStatus(err, "ibv_query_port", device).ToString();
    return p;
  }
  p.state = ibv_port_state_str(attr.state);
  p.link_layer = attr.link_layer == IBV_LINK_LAYER_ETHERNET ? "Ethernet" : "InfiniBand";
  p.active_mtu = attr.active_mtu >= IBV_MTU_256 ? 128 << attr.active_mtu : 0;
  p.lid = attr.lid;
  absl::StatusOr<std::vector<rc::GidEntry>> gids =
      rc::ListGids(context, static_cast<uint8_t>(port), device);
  if (gids.ok()) {
    p.gids = std::move(*gids);
  } else {
    p.error = gids.status().ToString();
  }
  return p;
}

std::string ReadTrimmed(const fs::path& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return std::string(absl::StripAsciiWhitespace(s));
}

// The RDMA devices whose probe imported a dma-buf.
std::vector<std::string> DmaBufImporters(const DevicesReport& report) {
  std::vector<std::string> names;
  for (const RdmaDeviceReport& r : report.rdma) {
    if (r.error.empty() && r.caps.dmabuf_import) names.push_back(r.name);
  }
  return names;
}

std::string HexString(uint64_t v) { return absl::StrFormat("0x%x", v); }

// Fixed width for values that are 64-bit by nature (GUIDs).
std::string Hex64(uint64_t v) { return absl::StrFormat("0x%016x", v); }

// JSON ids are numbers (all fit in 32 bits); sysfs writes some as "0x1234".
nlohmann::ordered_json HexId(const std::string& s) {
  uint32_t v = 0;
  if (!absl::SimpleHexAtoi(s, &v)) return nullptr;
  return v;
}
nlohmann::ordered_json DecimalId(const std::string& s) {
  uint32_t v = 0;
  if (!absl::SimpleAtoi(s, &v)) return nullptr;
  return v;
}

std::string RangesText(const std::vector<Range>& ranges) {
  std::vector<std::string> parts;
  for (const Range& r : ranges) parts.push_back(r.ToString());
  return parts.empty() ? "(none reported)" : absl::StrJoin(parts, " ");
}

}  // namespace

absl::string_view RdmaStatusName(RdmaStatus s) {
  switch (s) {
    case RdmaStatus::kOk:
      return "ok";
    case RdmaStatus::kNoDevices:
      return "no-devices";
    case RdmaStatus::kNoKernelSupport:
      return "no-kernel-support";
    case RdmaStatus::kError:
      break;
  }
  return "error";
}

RdmaListing ClassifyRdma(bool class_dir_exists, int list_errno, size_t devices) {
  if (!class_dir_exists) {
    return {RdmaStatus::kNoKernelSupport,
            "no /sys/class/infiniband: the kernel has no RDMA core (ib_core not loaded or not "
            "built)"};
  }
  if (list_errno == ENOSYS) {
    return {RdmaStatus::kNoKernelSupport,
            absl::StrCat(ErrnoStatus(list_errno, "ibv_get_device_list", "(all devices)").message(),
                         ": no RDMA user-space access (ib_uverbs) in this kernel")};
  }
  if (list_errno == ENOENT || list_errno == ENODEV || list_errno == ENXIO) {
    return {
        RdmaStatus::kNoDevices,
        absl::StrCat(ErrnoStatus(list_errno, "ibv_get_device_list", "(all devices)").message())};
  }
  if (list_errno != 0) {
    return {RdmaStatus::kError,
            ErrnoStatus(list_errno, "ibv_get_device_list", "(all devices)").ToString()};
  }
  if (devices == 0) {
    return {RdmaStatus::kNoDevices,
            "the kernel supports RDMA but has no device (soft-RoCE: rdma link add rxe0 type rxe "
            "netdev <if>)"};
  }
  return {RdmaStatus::kOk, ""};
}

std::string GuidText(uint64_t guid) {
  return absl::StrFormat("%04x:%04x:%04x:%04x", (guid >> 48) & 0xffff, (guid >> 32) & 0xffff,
                         (guid >> 16) & 0xffff, guid & 0xffff);
}

std::optional<uint64_t> ReadNodeGuid(const std::string& sysfs_root, const std::string& device) {
  const std::string text =
      ReadTrimmed(fs::path(sysfs_root) / "class/infiniband" / device / "node_guid");
  const std::vector<std::string> parts = absl::StrSplit(text, ':');
  if (parts.size() != 4) return std::nullopt;
  uint64_t guid = 0;
  for (const std::string& p : parts) {
    uint32_t v = 0;
    if (p.size() != 4 || !absl::SimpleHexAtoi(p, &v)) return std::nullopt;
    guid = guid << 16 | v;
  }
  return guid;
}

std::vector<std::string> RdmaNetdevs(const std::string& sysfs_root, const std::string& device) {
  const fs::path dev = fs::path(sysfs_root) / "class/infiniband" / device;
  std::set<std::string> names;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dev / "device/net", ec)) {
    names.insert(e.path().filename().string());
  }
  for (const fs::directory_entry& port : fs::directory_iterator(dev / "ports", ec)) {
    std::error_code port_ec;
    for (const fs::directory_entry& e :
         fs::directory_iterator(port.path() / "gid_attrs/ndevs", port_ec)) {
      // Unused GID entries fail to read (EINVAL): nothing is added for them.
      if (std::string name = ReadTrimmed(e.path()); !name.empty()) names.insert(std::move(name));
    }
  }
  if (std::string parent = ReadTrimmed(dev / "parent"); !parent.empty()) {
    names.insert(std::move(parent));
  }
  return {names.begin(), names.end()};
}

absl::Status CollectRdma(const std::string& sysfs_root, const std::string& only,
                         DevicesReport& report) {
  int count = 0;
  errno = 0;
  ibv_device** list = ibv_get_device_list(&count);
  const int list_errno = list == nullptr ? (errno != 0 ? errno : ENOSYS) : 0;
  std::vector<std::string> names;
  for (int i = 0; list != nullptr && i < count; ++i)
    names.emplace_back(ibv_get_device_name(list[i]));
  if (list != nullptr) ibv_free_device_list(list);
  std::error_code ec;
  report.rdma_listing = ClassifyRdma(fs::exists(fs::path(sysfs_root) / "class/infiniband", ec),
                                     list_errno, names.size());
  if (!only.empty()) {
    if (std::find(names.begin(), names.end(), only) == names.end()) {
      return absl::NotFoundError(
          absl::StrCat("no RDMA device '", only, "' (",
                       names.empty() ? absl::StrCat(RdmaStatusName(report.rdma_listing.status),
                                                    ": ", report.rdma_listing.reason)
                                     : absl::StrCat("present: ", absl::StrJoin(names, ", ")),
                       ")"));
    }
    names = {only};
  }
  for (const std::string& name : names) {
    RdmaDeviceReport r;
    r.name = name;
    r.netdevs = RdmaNetdevs(sysfs_root, name);
    absl::StatusOr<std::shared_ptr<VerbsDomain>> domain = VerbsDomain::Open(name);
    if (!domain.ok()) {
      r.error = domain.status().ToString();
      r.node_guid = ReadNodeGuid(sysfs_root, name);
      report.rdma.push_back(std::move(r));
      continue;
    }
    r.caps = (*domain)->capabilities();
    r.info = (*domain)->device_info();
    r.node_guid = be64toh(r.info.node_guid);
    for (uint32_t port = 1; port <= r.info.phys_port_cnt; ++port) {
      r.ports.push_back(QueryPort((*domain)->context(), name, static_cast<int>(port)));
    }
    report.rdma.push_back(std::move(r));
  }
  return absl::OkStatus();
}

std::vector<VfioDeviceReport> ScanVfioDevices(std::shared_ptr<VfioOps> ops) {
  std::vector<VfioDeviceReport> out;
#ifdef DMAREG_CLI_HAVE_VFIO
  if (ops == nullptr) ops = KernelVfioOps();
  absl::StatusOr<std::vector<VfioDeviceInfo>> listed = VfioDomain::ListDevices({.ops = ops});
  if (!listed.ok()) return out;
  // IDs as sysfs writes them ("0x1234"); 0 is no vendor's.
  const auto id = [](uint16_t v) { return v == 0 ? std::string() : absl::StrFormat("0x%04x", v); };
  for (const VfioDeviceInfo& info : *listed) {
    VfioDeviceReport d;
    d.pci_address = info.address;
    d.vendor = id(info.vendor_id);
    d.device = id(info.device_id);
    if (info.group >= 0) {
      d.iommu_group = absl::StrCat(info.group);
      d.group_node = ops->PathExists(absl::StrCat("/dev/vfio/", info.group));
    }
    out.push_back(std::move(d));
  }
#else
  (void)ops;
#endif
  return out;
}

void ProbeVfioDevices(std::vector<VfioDeviceReport>& devices, std::shared_ptr<VfioOps> ops) {
#ifndef DMAREG_CLI_HAVE_VFIO
  (void)ops;
  for (VfioDeviceReport& d : devices)
    d.probe = VfioProbeReport{.error = "dmareg built without VFIO"};
#else
  std::shared_ptr<VfioContainer> container;
  std::vector<std::shared_ptr<VfioDomain>> opened;  // all stay in the container
  for (VfioDeviceReport& d : devices) {
    VfioProbeReport& p = d.probe.emplace();
    if (!d.group_node) {
      p.error = "no /dev/vfio/" + d.iommu_group;
      continue;
    }
    if (container == nullptr) {
      absl::StatusOr<std::shared_ptr<VfioContainer>> c = VfioContainer::Open({.ops = ops});
      if (!c.ok()) {
        p.error = c.status().ToString();
        continue;
      }
      container = *c;
    }
    VfioDomainOptions options;
    options.container = container;
    absl::StatusOr<std::shared_ptr<VfioDomain>> domain = VfioDomain::Open(d.pci_address, options);
    if (!domain.ok()) {
      p.error = domain.status().ToString();
      continue;
    }
    opened.push_back(*domain);
    const VfioContainerInfo info = container->info();
    p.iommu_type = std::string(IommuTypeName(info.iommu_type));
    p.iova_ranges = info.iova_ranges;
    p.dma_avail = info.dma_avail;
    p.page_sizes = info.page_sizes;
  }
  // Every device that opened shares the one container: say how many it holds.
  for (VfioDeviceReport& d : devices) {
    if (d.probe->error.empty()) d.probe->container_groups = static_cast<int>(opened.size());
  }
#endif
}

DmaBufSourcesReport CollectDmaBufSources() {
  DmaBufSourcesReport r;
#ifdef DMAREG_CLI_HAVE_DMABUF
  DmaBufSources s = ProbeDmaBufSources();
  r.sources_probed = true;
  for (const DmaBufSources::Drm& d : s.drm_cards) r.drm_cards.push_back({d.card, d.driver});
  r.udmabuf = s.udmabuf;
  r.heaps = s.heaps;
  r.cuda = s.cuda;
  r.cuda_detail = s.cuda_detail;
#else
  r.cuda_detail = "built without the dmabuf component";
#endif
  return r;
}

bool MemlockIsSmall(const MemlockLimit& m) { return m.limited() && *m.soft < kSmallMemlockBytes; }

std::string RenderText(const DevicesReport& report) {
  std::string out;
  if (report.memlock.has_value()) {
    absl::StrAppend(&out, "memlock: ", MemlockNote(*report.memlock), "\n");
    if (MemlockIsSmall(*report.memlock)) {
      absl::StrAppend(&out, "  warning: small: every pinned MR and VFIO mapping counts against ",
                      "it; raise it (ulimit -l, the container's memlock limit) or grant "
                      "CAP_IPC_LOCK\n");
    }
  }
  absl::StrAppend(&out, "RDMA devices: ", report.rdma.size(), "\n");
  if (report.rdma_listing.status != RdmaStatus::kOk) {
    absl::StrAppend(&out, "  (", RdmaStatusName(report.rdma_listing.status), ": ",
                    report.rdma_listing.reason, ")\n");
  }
  for (const RdmaDeviceReport& r : report.rdma) {
    absl::StrAppend(&out, "  ", r.name, "\n");
    absl::StrAppend(&out, "    node GUID ", r.node_guid ? GuidText(*r.node_guid) : "-", ", netdev ",
                    r.netdevs.empty() ? "-" : absl::StrJoin(r.netdevs, " "), "\n");
    if (!r.error.empty()) {
      absl::StrAppend(&out, "    cannot open: ", r.error, "\n");
      continue;
    }
    const DomainCapabilities& c = r.caps;
    const VerbsDeviceInfo& i = r.info;
    absl::StrAppendFormat(&out, "    fw %s, vendor %#x part %#x, %d port(s)\n",
                          i.fw_ver.empty() ? "-" : i.fw_ver, i.vendor_id, i.vendor_part_id,
                          i.phys_port_cnt);
    absl::StrAppendFormat(&out, "    dma-buf MR: %s (probe: %s)\n", c.dmabuf_import ? "yes" : "no",
                          ProbeErrno(i.dmabuf_probe_errno));
    absl::StrAppendFormat(&out, "    ODP (RC): %s (general caps %#x, rc caps %#x)\n",
                          c.on_demand_paging ? "yes" : "no", i.odp_general_caps, i.odp_rc_caps);
    absl::StrAppendFormat(&out, "    max_mr_size %#x, page_size_cap %#x, max_mr %d, fork %s\n",
                          i.max_mr_size, i.page_size_cap, i.max_mr, ForkName(i.fork_status));
    for (const PortReport& p : r.ports) {
      if (!p.error.empty() && p.state.empty()) {
        absl::StrAppend(&out, "    port ", p.port, ": ", p.error, "\n");
        continue;
      }
      absl::StrAppendFormat(&out, "    port %d: %s, %s, active MTU %d, lid %d\n", p.port, p.state,
                            p.link_layer, p.active_mtu, p.lid);
      for (const rc::GidEntry& g : p.gids) {
        absl::StrAppendFormat(&out, "      gid[%d] %s (%s)\n", g.index, g.ToString(),
                              std::string(g.TypeName()));
      }
      if (!p.error.empty()) absl::StrAppend(&out, "      (", p.error, ")\n");
    }
  }
  if (report.vfio_collected) absl::StrAppend(&out, "VFIO devices: ", report.vfio.size(), "\n");
  for (const VfioDeviceReport& d : report.vfio) {
    absl::StrAppendFormat(&out, "  %s  vendor %s device %s  iommu group %s%s\n", d.pci_address,
                          d.vendor, d.device, d.iommu_group.empty() ? "-" : d.iommu_group,
                          d.group_node ? absl::StrCat(" (/dev/vfio/", d.iommu_group, ")") : "");
    if (!d.probe.has_value()) continue;
    const VfioProbeReport& p = *d.probe;
    if (!p.error.empty()) {
      absl::StrAppend(&out, "    cannot open: ", p.error, "\n");
      continue;
    }
    absl::StrAppendFormat(&out, "    container: %s, %d group(s); dma_avail %s; page sizes %#x\n",
                          p.iommu_type, p.container_groups,
                          p.dma_avail ? absl::StrCat(*p.dma_avail) : "(not reported)",
                          p.page_sizes);
    absl::StrAppend(&out, "    IOVA ranges: ", RangesText(p.iova_ranges), "\n");
  }
  if (report.dmabuf.has_value()) {
    const DmaBufSourcesReport& d = *report.dmabuf;
    const std::vector<std::string> importers = DmaBufImporters(report);
    absl::StrAppend(&out, "dma-buf:\n  importing RDMA devices: ",
                    importers.empty() ? "none" : absl::StrJoin(importers, ", "), "\n");
    if (d.sources_probed) {
      std::vector<std::string> cards;
      for (const DmaBufSourcesReport::Drm& c : d.drm_cards) {
        cards.push_back(c.driver.empty() ? c.card : absl::StrCat(c.card, " (", c.driver, ")"));
      }
      absl::StrAppend(&out, "  DRM: ", cards.empty() ? "none" : absl::StrJoin(cards, ", "),
                      "\n  udmabuf: ", d.udmabuf ? "yes" : "no",
                      "\n  heaps: ", d.heaps.empty() ? "none" : absl::StrJoin(d.heaps, ", "), "\n");
    } else {
      absl::StrAppend(&out, "  DRM, udmabuf, heaps: not probed (built without them)\n");
    }
    absl::StrAppend(&out, "  CUDA: ", d.cuda ? "yes" : "no", " (", d.cuda_detail, ")\n");
  }
  return out;
}

std::string RenderJson(const DevicesReport& report) {
  // ordered_json: fields in the order written here, as a reader expects.
  using Json = nlohmann::ordered_json;
  Json rdma = Json::array();
  for (const RdmaDeviceReport& r : report.rdma) {
    Json o = {{"name", r.name},
              {"node_guid", r.node_guid ? Json(Hex64(*r.node_guid)) : Json(nullptr)},
              {"netdevs", r.netdevs}};
    if (!r.error.empty()) {
      o["error"] = r.error;
      rdma.push_back(std::move(o));
      continue;
    }
    const DomainCapabilities& c = r.caps;
    const VerbsDeviceInfo& i = r.info;
    o["fw_ver"] = i.fw_ver;
    o["vendor_id"] = i.vendor_id;
    o["vendor_part_id"] = i.vendor_part_id;
    o["dmabuf_mr"] = c.dmabuf_import;
    o["dmabuf_probe"] = ProbeErrno(i.dmabuf_probe_errno);
    o["odp"] = c.on_demand_paging;
    o["odp_general_caps"] = HexString(i.odp_general_caps);
    o["odp_rc_caps"] = HexString(i.odp_rc_caps);
    o["max_mr_size"] = HexString(i.max_mr_size);
    o["page_size_cap"] = HexString(i.page_size_cap);
    o["max_mr"] = i.max_mr;
    o["fork"] = ForkName(i.fork_status);
    Json ports = Json::array();
    for (const PortReport& p : r.ports) {
      Json gids = Json::array();
      for (const rc::GidEntry& g : p.gids) {
        gids.push_back(
            {{"index", g.index}, {"gid", g.ToString()}, {"type", std::string(g.TypeName())}});
      }
      Json po = {{"port", p.port},
                 {"state", p.state},
                 {"link_layer", p.link_layer},
                 {"active_mtu", p.active_mtu},
                 {"lid", p.lid},
                 {"gids", std::move(gids)}};
      if (!p.error.empty()) po["error"] = p.error;
      ports.push_back(std::move(po));
    }
    o["ports"] = std::move(ports);
    rdma.push_back(std::move(o));
  }
  Json vfio = Json::array();
  for (const VfioDeviceReport& d : report.vfio) {
    Json o = {{"pci_address", d.pci_address},
              {"vendor", HexId(d.vendor)},
              {"device", HexId(d.device)},
              {"iommu_group", DecimalId(d.iommu_group)}};
    o["group_node"] = d.group_node;
    if (d.probe.has_value()) {
      const VfioProbeReport& p = *d.probe;
      if (!p.error.empty()) {
        o["error"] = p.error;
      } else {
        Json ranges = Json::array();
        for (const Range& r : p.iova_ranges) {
          ranges.push_back({{"begin", HexString(r.begin())}, {"end", HexString(r.end())}});
        }
        o["container"] = {{"iommu_type", p.iommu_type}, {"groups", p.container_groups}};
        o["iova_ranges"] = std::move(ranges);
        o["dma_avail"] = p.dma_avail ? Json(*p.dma_avail) : Json(nullptr);
        o["page_sizes"] = HexString(p.page_sizes);
      }
    }
    vfio.push_back(std::move(o));
  }
  Json out = {{"schema_version", kDevicesSchemaVersion},
              {"rdma",
               {{"status", RdmaStatusName(report.rdma_listing.status)},
                {"reason", report.rdma_listing.reason},
                {"devices", std::move(rdma)}}}};
  if (report.vfio_collected) out["vfio"] = std::move(vfio);
  if (report.memlock.has_value()) {
    const MemlockLimit& m = *report.memlock;
    auto bytes = [](const std::optional<uint64_t>& b) { return b ? Json(*b) : Json(nullptr); };
    out["memlock"] = {{"soft", bytes(m.soft)},          {"hard", bytes(m.hard)},
                      {"cap_ipc_lock", m.cap_ipc_lock}, {"pinned", bytes(m.pinned)},
                      {"locked", bytes(m.locked)},      {"small", MemlockIsSmall(m)}};
  }
  if (report.dmabuf.has_value()) {
    const DmaBufSourcesReport& d = *report.dmabuf;
    Json o = {{"importers", DmaBufImporters(report)}};
    if (d.sources_probed) {
      Json cards = Json::array();
      for (const DmaBufSourcesReport::Drm& c : d.drm_cards) {
        cards.push_back({{"card", c.card}, {"driver", c.driver}});
      }
      o["drm"] = std::move(cards);
      o["udmabuf"] = d.udmabuf;
      o["heaps"] = d.heaps;
    }
    o["cuda"] = d.cuda;
    o["cuda_detail"] = d.cuda_detail;
    out["dmabuf"] = std::move(o);
  }
  return out.dump() + "\n";
}

}  // namespace dmareg::cli
