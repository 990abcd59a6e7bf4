// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// vfio/vfio_domain.h: the VFIO backend (component `vfio`): a device behind an
// IOMMU, driven from user space through the kernel's vfio-pci driver and a type1 IOMMU container.
//
// `VfioContainer` is one IOMMU address space. It keeps the table of what is
// mapped in it (the source of truth: the kernel cannot be asked), chooses
// IOVAs for callers that name none, and replays the table when a group joins
// an empty container. `VfioDomain` is a `Domain` over one PCI device bound to
// vfio-pci: it joins the device's IOMMU group to a container, maps host
// memory for DMA, and gives drivers built on top access to the device's
// regions and config space. Several domains may share one container (one
// address space for all their devices), as DPDK does:
//
//   auto container = dmareg::VfioContainer::Open().value();
//   auto edu = dmareg::VfioDomain::Open("0000:00:03.0",
//                                       {.container = container, .dma_address_bits = 28});
//   if (!edu.ok()) return edu.status();
//   auto cache = dmareg::RegistrationCache::Create(*edu).value();
//   auto reg = cache->Acquire(dmareg::HostMemory{buf, len}, dmareg::Access::kLocalWrite);
//   auto bar0 = (*edu)->MapRegion(0).value();        // RAII; unmapped when dropped
//   // program the device with reg->IovaFor(buf) through bar0.data()
//
// IOVAs: a caller-chosen IOVA (`HostMemory::iova`) is honoured; otherwise
// IOVA = VA where the range is free, inside the IOMMU's ranges and below the
// device's DMA mask, else the container's allocator picks one. A caller's
// IOVA obeys CheckIovaPlacement (dmareg/domain.h: whole IOMMU pages, the
// mask and the ranges, each violation with its one code), checked once
// before the container's table (overlaps) and the kernel are asked; every
// failure is a status naming the ioctl, the device and the range.
//
// Thread safety: every method may be called from several threads at once.

#ifndef DMAREG_VFIO_VFIO_DOMAIN_H_
#define DMAREG_VFIO_VFIO_DOMAIN_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dmareg/access.h"
#include "dmareg/domain.h"
#include "dmareg/memory.h"
#include "dmareg/range.h"
#include "dmareg/vfio/vfio_container.h"

#pragma GCC visibility push(default)

namespace dmareg {

namespace internal {
class RemovalWatch;
}  // namespace internal

struct VfioDomainOptions {
  std::shared_ptr<VfioContainer> container{};  // null: a new container of its own
  int dma_address_bits = 64;  // the device's DMA mask width (edu: 28); VFIO cannot know it
  int group_fd = -1;          // secondary: a group fd received from the primary (ownership taken)
  // The kernel's calls go through these (dmareg/vfio/vfio_ops.h); null: the
  // container's, or KernelVfioOps() for a new container. A container opened
  // over other ops is InvalidArgument.
  std::shared_ptr<VfioOps> ops{};
  // The kernel's request to let go of the device (VFIO_PCI_REQ_IRQ_INDEX:
  // sysfs remove, a hot-unplug, an unbind), which holds the removal until
  // every fd and mapping of the device is closed. true: the domain follows
  // it by itself. It calls `on_release_request` (from a thread of its own:
  // unmap the device's regions there, or the removal keeps waiting for
  // them), detaches with its mapping table kept, and once the device is
  // bound to vfio-pci again (its uevent) re-attaches and replays the table.
  // false: the removal waits for the application's Detach.
  bool follow_removal = true;
  std::function<void()> on_release_request{};
};

struct VfioDeviceInfo {   // from sysfs
  std::string address{};  // "0000:00:03.0"
  int group = -1;         // its IOMMU group; -1: none (no IOMMU)
  std::string driver{};
  uint16_t vendor_id = 0;  // PCI IDs (edu: 0x1234, 0x11e8); 0: unreadable
  uint16_t device_id = 0;
};

// A PCI address as sysfs spells it, the form VfioDomain::Open takes:
// "DDDD:BB:DD.F" in lower-case hex, device < 0x20, function < 8.
// InvalidArgument saying so otherwise.
absl::Status ValidatePciAddress(std::string_view address);

// A device region mapped into the process (BARs): unmapped when dropped.
// Move-only.
//
//   auto bar0 = domain->MapRegion(0).value();
//   uint32_t id = static_cast<volatile uint32_t*>(bar0.data())[0];
class VfioRegionMap {
 public:
  VfioRegionMap() = default;
  VfioRegionMap(VfioRegionMap&& other) noexcept;
  VfioRegionMap& operator=(VfioRegionMap&& other) noexcept;
  VfioRegionMap(const VfioRegionMap&) = delete;
  VfioRegionMap& operator=(const VfioRegionMap&) = delete;
  ~VfioRegionMap();

  void* data() const { return data_; }
  size_t size() const { return size_; }
  int index() const { return index_; }
  bool writable() const { return writable_; }

 private:
  friend class VfioDomain;
  VfioRegionMap(std::shared_ptr<VfioOps> ops, void* data, size_t size, int index, bool writable);
  void Reset();

  std::shared_ptr<VfioOps> ops_;
  void* data_ = nullptr;
  size_t size_ = 0;
  int index_ = -1;
  bool writable_ = false;
};

// A Domain over one PCI device behind VFIO. name() == "vfio:0000:00:03.0".
// caps: kind kVfio, iova_ranges (clipped to the mask), dma_address_bits,
// max_mappings = dma_avail at open (0 if unknown), page_sizes = iova_pgsizes,
// caller_iova = true, dmabuf_import = false. A mapping is writable by the
// device when the access has kLocalWrite (remote write implies it), else
// read-only. `DeviceMapping::handle` is the host address mapped.
class VfioDomain final : public Domain {
 public:
  // PCI devices bound to vfio-pci, by address, as seen through
  // `options.ops` (or its container's; the kernel's when neither is given).
  // Nothing else in `options` is used.
  static absl::StatusOr<std::vector<VfioDeviceInfo>> ListDevices(
      const VfioDomainOptions& options = {});
  // Group from /sys/bus/pci/devices/ADDR/iommu_group; checks
  // VFIO_GROUP_FLAGS_VIABLE; sets the container (type1v2, type1 where v2 is
  // absent) when it is the first group; VFIO_GROUP_GET_DEVICE_FD.
  // InvalidArgument for a malformed address ("DDDD:BB:DD.F"); NotFound,
  // listing the vfio-pci devices, when absent; FailedPrecondition when the
  // device is not bound to vfio-pci or its group is not viable;
  // InvalidArgument for `options.ops` other than the container's.
  static absl::StatusOr<std::shared_ptr<VfioDomain>> Open(std::string_view pci_address,
                                                          VfioDomainOptions options = {});

  // Closes the device, takes the group out of the container and unmaps what
  // this domain mapped and did not deregister.
  ~VfioDomain() override;
  VfioDomain(const VfioDomain&) = delete;
  VfioDomain& operator=(const VfioDomain&) = delete;

  const std::string& name() const override { return name_; }
  const DomainCapabilities& capabilities() const override { return caps_; }
  const std::string& address() const { return address_; }

  // IOVA = memory.iova if given (CheckIovaPlacement: InvalidArgument for
  // an extent that is not whole IOMMU pages, OutOfRange beyond the mask or
  // outside the ranges, before any kernel call); else IOVA = VA when the
  // range lies inside the ranges and below 2^dma_address_bits and is free;
  // else from the container's IOVA allocator. addr and length must be whole
  // IOMMU pages.
  // Paging::kOnDemand: Unimplemented (an IOMMU mapping pins).
  using Domain::RegisterHost;
  absl::StatusOr<DeviceMapping> RegisterHost(const HostMemory& memory, AccessFlags access,
                                             Paging paging) override;
  // Exact extent of a mapping this domain returned, as the container's
  // table has it (NotFound: none there, or one only other domains hold;
  // InvalidArgument: part of one). Works while detached (the table entry
  // goes; the cache calls it exactly once per mapping).
  absl::Status Deregister(const DeviceMapping& mapping) override;

  // Device access, for drivers built on top.
  absl::StatusOr<VfioRegionMap> MapRegion(int index);  // GET_REGION_INFO + mmap; BAR0 = 0
  absl::Status ReadConfig(uint64_t offset, void* data, size_t len);
  absl::Status WriteConfig(uint64_t offset, const void* data, size_t len);

  int group() const;
  int device_fd() const;
  const std::shared_ptr<VfioContainer>& container() const { return container_; }

  // Hot-plug: Detach closes the device fd and takes the group out of the
  // container (the table is kept; when the container empties, the kernel
  // drops its IOMMU mappings). Reattach re-reads the group from sysfs,
  // re-opens it, joins the container again and replays the table if the
  // container had emptied (the kernel replays it itself into a group joining
  // a non-empty container). While detached, RegisterHost and device access
  // answer FailedPrecondition "device ... is detached".
  absl::Status Detach();
  absl::Status Reattach();
  bool attached() const;
  // Requests to let go that the domain followed (VfioDomainOptions::
  // follow_removal), and the re-attaches that followed the device's return.
  int64_t release_requests() const;
  int64_t automatic_reattaches() const;

  int64_t live_mappings() const { return live_.load(std::memory_order_relaxed); }
  int64_t total_maps() const { return total_maps_.load(std::memory_order_relaxed); }
  int64_t total_unmaps() const { return total_unmaps_.load(std::memory_order_relaxed); }

 private:
  struct State;

  VfioDomain(std::shared_ptr<VfioOps> ops, std::string address,
             std::shared_ptr<VfioContainer> container, int dma_address_bits);
  // Opens the group (or takes `given_group_fd`), checks it is viable, joins
  // the container and opens the device; on failure every fd is closed and
  // the container is as it was. Called with the domain's lock held.
  absl::Status AttachLocked(int group, int given_group_fd);
  // Closes the device and group fds, the group out of the container (the
  // table kept). Called with the domain's lock held.
  void DetachLocked();
  // The removal watch's callbacks: let go when the kernel asks, and attach
  // again (the table replayed) when the device is back after that.
  void FollowReleaseRequest();
  void FollowReturn();

  const std::shared_ptr<VfioOps> ops_;
  const std::string address_;
  const std::string name_;
  const std::string register_where_;  // "RegisterHost on <name>", made once
  const std::shared_ptr<VfioContainer> container_;
  const int dma_address_bits_;
  DomainCapabilities caps_;  // written by Open before publication, read-only after
  // Group and device fds, the attached flag: src/vfio/vfio_domain.cc. Its
  // mappings are the container's table's alone (each reference there names
  // the domain holding it); the domain keeps only the counters below.
  // Lock order: ExternalMemoryRegistry's lock, then this one, then the
  // container's; this one is never held on the map path.
  std::unique_ptr<State> state_;
  // Follows the kernel's removal requests (src/vfio/removal_watch.h); null
  // without follow_removal or where the device has no request interrupt.
  std::unique_ptr<internal::RemovalWatch> watch_;
  std::atomic<int64_t> live_{0};
  std::atomic<int64_t> total_maps_{0};
  std::atomic<int64_t> total_unmaps_{0};
};

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_VFIO_VFIO_DOMAIN_H_
