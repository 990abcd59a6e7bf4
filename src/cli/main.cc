// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The `dmareg` command.
//
//   dmareg devices [--json]   RDMA devices with their probed capabilities,
//                             PCI devices bound to vfio-pci, dma-buf sources

#include <cstdio>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "cli/devices.h"

namespace {

constexpr char kUsage[] =
    "usage: dmareg <command> [options]\n"
    "\n"
    "commands:\n"
    "  devices [--json]  list RDMA devices (capabilities probed by opening each:\n"
    "                    dma-buf MRs, on-demand paging, MR limits, ports, GIDs)\n"
    "                    and PCI devices bound to vfio-pci: IOMMU group, and from\n"
    "                    opening them into one VFIO container its IOMMU type,\n"
    "                    IOVA ranges, dma_avail and page sizes; which RDMA\n"
    "                    devices import dma-bufs and what makes them here (DRM\n"
    "                    cards, udmabuf, heaps, CUDA: libcuda from $DMAREG_LIBCUDA\n"
    "                    or libcuda.so.1)\n"
    "  help              this text\n"
    "\n"
    "Exits 0 when the listing worked, also when there are no devices.\n";

int Devices(const std::vector<std::string_view>& args) {
  bool json = false;
  for (std::string_view a : args) {
    if (a == "--json") {
      json = true;
    } else if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return 0;
    } else {
      std::cerr << "dmareg devices: unknown option '" << a << "'\n" << kUsage;
      return 2;
    }
  }
  dmareg::cli::DevicesReport report;
  report.rdma = dmareg::cli::CollectRdmaDevices(&report.rdma_error);
  report.vfio = dmareg::cli::ScanVfioDevices("/sys", "/dev");
  dmareg::cli::ProbeVfioDevices(report.vfio);
  report.dmabuf = dmareg::cli::CollectDmaBufSources();
  std::cout << (json ? dmareg::cli::RenderJson(report) : dmareg::cli::RenderText(report));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string_view> args(argv + 1, argv + argc);
  if (args.empty()) {
    std::cerr << kUsage;
    return 2;
  }
  const std::string_view command = args.front();
  args.erase(args.begin());
  if (command == "--help" || command == "-h" || command == "help") {
    std::cout << kUsage;
    return 0;
  }
  if (command == "devices") return Devices(args);
  std::cerr << "dmareg: unknown command '" << command << "'\n" << kUsage;
  return 2;
}
