// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "cli/devices.h"

#include <infiniband/verbs.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/errno_status.h"

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

std::string ProbeErrno(int err) {
  return err == 0 ? "accepted" : std::string(internal::ErrnoName(err));
}

PortReport QueryPort(ibv_context* context, const std::string& device, int port) {
  PortReport p;
  p.port = port;
  ibv_port_attr attr;
  std::memset(&attr, 0, sizeof(attr));
  if (const int err = ibv_query_port(context, static_cast<uint8_t>(port), &attr); err != 0) {
    p.error = internal::ErrnoStatus(err, "ibv_query_port", device).ToString();
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

// "0000:00:03.0": domain:bus:device.function, all hex.
bool IsPciAddress(const std::string& s) {
  if (s.size() != 12 || s[4] != ':' || s[7] != ':' || s[10] != '.') return false;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i == 4 || i == 7 || i == 10) continue;
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(s[i]))) return false;
  }
  return true;
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          absl::StrAppendFormat(&out, "\\u%04x", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

const char* JsonBool(bool b) { return b ? "true" : "false"; }

}  // namespace

std::vector<RdmaDeviceReport> CollectRdmaDevices(std::string* error) {
  std::vector<RdmaDeviceReport> out;
  absl::StatusOr<std::vector<std::string>> names = VerbsDomain::ListDevices();
  if (!names.ok()) {
    if (error != nullptr) *error = names.status().ToString();
    return out;
  }
  for (const std::string& name : *names) {
    RdmaDeviceReport r;
    r.name = name;
    absl::StatusOr<std::shared_ptr<VerbsDomain>> domain = VerbsDomain::Open(name);
    if (!domain.ok()) {
      r.error = domain.status().ToString();
      out.push_back(std::move(r));
      continue;
    }
    r.caps = (*domain)->capabilities();
    r.info = (*domain)->device_info();
    for (uint32_t port = 1; port <= r.info.phys_port_cnt; ++port) {
      r.ports.push_back(QueryPort((*domain)->context(), name, static_cast<int>(port)));
    }
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<VfioDeviceReport> ScanVfioDevices(const std::string& sysfs_root,
                                              const std::string& dev_root) {
  std::vector<VfioDeviceReport> out;
  const fs::path driver = fs::path(sysfs_root) / "bus/pci/drivers/vfio-pci";
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(driver, ec)) {
    const std::string address = entry.path().filename().string();
    if (!IsPciAddress(address)) continue;  // bind, unbind, new_id, module, ...
    VfioDeviceReport d;
    d.pci_address = address;
    d.vendor = ReadTrimmed(entry.path() / "vendor");
    d.device = ReadTrimmed(entry.path() / "device");
    std::error_code link_ec;
    const fs::path group = fs::read_symlink(entry.path() / "iommu_group", link_ec);
    if (!link_ec) {
      d.iommu_group = group.filename().string();
      d.group_node = fs::exists(fs::path(dev_root) / "vfio" / d.iommu_group, link_ec);
    }
    out.push_back(std::move(d));
  }
  std::sort(out.begin(), out.end(), [](const VfioDeviceReport& a, const VfioDeviceReport& b) {
    return a.pci_address < b.pci_address;
  });
  return out;
}

std::string RenderText(const DevicesReport& report) {
  std::string out = absl::StrCat("RDMA devices: ", report.rdma.size(), "\n");
  if (!report.rdma_error.empty()) absl::StrAppend(&out, "  (", report.rdma_error, ")\n");
  for (const RdmaDeviceReport& r : report.rdma) {
    absl::StrAppend(&out, "  ", r.name, "\n");
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
  absl::StrAppend(&out, "VFIO devices: ", report.vfio.size(), "\n");
  for (const VfioDeviceReport& d : report.vfio) {
    absl::StrAppendFormat(&out, "  %s  vendor %s device %s  iommu group %s%s\n", d.pci_address,
                          d.vendor, d.device, d.iommu_group.empty() ? "-" : d.iommu_group,
                          d.group_node ? absl::StrCat(" (/dev/vfio/", d.iommu_group, ")") : "");
  }
  return out;
}

std::string RenderJson(const DevicesReport& report) {
  std::vector<std::string> rdma;
  for (const RdmaDeviceReport& r : report.rdma) {
    std::string o = absl::StrCat("{\"name\":", JsonString(r.name));
    if (!r.error.empty()) {
      rdma.push_back(absl::StrCat(o, ",\"error\":", JsonString(r.error), "}"));
      continue;
    }
    const DomainCapabilities& c = r.caps;
    const VerbsDeviceInfo& i = r.info;
    absl::StrAppend(
        &o, ",\"fw_ver\":", JsonString(i.fw_ver), ",\"vendor_id\":", i.vendor_id,
        ",\"vendor_part_id\":", i.vendor_part_id, ",\"dmabuf_mr\":", JsonBool(c.dmabuf_import),
        ",\"dmabuf_probe\":", JsonString(ProbeErrno(i.dmabuf_probe_errno)),
        ",\"odp\":", JsonBool(c.on_demand_paging), ",\"odp_general_caps\":", i.odp_general_caps,
        ",\"odp_rc_caps\":", i.odp_rc_caps, ",\"max_mr_size\":", i.max_mr_size,
        ",\"page_size_cap\":", i.page_size_cap, ",\"max_mr\":", i.max_mr,
        ",\"fork\":", JsonString(ForkName(i.fork_status)), ",\"ports\":[");
    std::vector<std::string> ports;
    for (const PortReport& p : r.ports) {
      std::vector<std::string> gids;
      for (const rc::GidEntry& g : p.gids) {
        gids.push_back(absl::StrCat("{\"index\":", g.index, ",\"gid\":", JsonString(g.ToString()),
                                    ",\"type\":", JsonString(std::string(g.TypeName())), "}"));
      }
      std::string po = absl::StrCat("{\"port\":", p.port, ",\"state\":", JsonString(p.state),
                                    ",\"link_layer\":", JsonString(p.link_layer),
                                    ",\"active_mtu\":", p.active_mtu, ",\"lid\":", p.lid,
                                    ",\"gids\":[", absl::StrJoin(gids, ","), "]");
      if (!p.error.empty()) absl::StrAppend(&po, ",\"error\":", JsonString(p.error));
      ports.push_back(po + "}");
    }
    rdma.push_back(absl::StrCat(o, absl::StrJoin(ports, ","), "]}"));
  }
  std::vector<std::string> vfio;
  for (const VfioDeviceReport& d : report.vfio) {
    vfio.push_back(absl::StrCat(
        "{\"pci_address\":", JsonString(d.pci_address), ",\"vendor\":", JsonString(d.vendor),
        ",\"device\":", JsonString(d.device),
        ",\"iommu_group\":", d.iommu_group.empty() ? "null" : JsonString(d.iommu_group),
        ",\"group_node\":", JsonBool(d.group_node), "}"));
  }
  std::string out = absl::StrCat("{\"rdma\":[", absl::StrJoin(rdma, ","), "]");
  if (!report.rdma_error.empty()) {
    absl::StrAppend(&out, ",\"rdma_error\":", JsonString(report.rdma_error));
  }
  absl::StrAppend(&out, ",\"vfio\":[", absl::StrJoin(vfio, ","), "]}\n");
  return out;
}

}  // namespace dmareg::cli
