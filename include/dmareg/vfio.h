// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// vfio.h: the VFIO backend: a device behind an IOMMU, driven from user space
// through the kernel's vfio-pci driver and a type1 IOMMU container.
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
// device's DMA mask, else the container's allocator picks one. Every check
// (alignment to the smallest IOMMU page, the mask, the ranges, overlaps) is
// done before the kernel is asked, and every failure is a status naming the
// ioctl, the device and the range.
//
// Thread safety: every method may be called from several threads at once.

#ifndef DMAREG_VFIO_H_
#define DMAREG_VFIO_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
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

namespace dmareg {

namespace internal {
class ContainerFdProvider;  // serves the container to other processes (vfio_fd_sharing.h)
}  // namespace internal
namespace testing {
class VfioOps;     // the seam over the kernel: dmareg/testing/vfio_ops.h
class VfioAccess;  // opens containers and domains over a given VfioOps
}  // namespace testing

// One entry of a container's mapping table (the source of truth).
struct VfioMapping {
  uint64_t va = 0;
  uint64_t iova = 0;
  uint64_t length = 0;
  bool writable = false;
  uint32_t refs = 0;
};

struct VfioContainerInfo {
  int iommu_type = 0;  // VFIO_TYPE1v2_IOMMU (3) or VFIO_TYPE1_IOMMU (1); 0 = not set yet
  std::vector<Range> iova_ranges;  // VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE; empty = kernel gave none
  std::optional<uint32_t> dma_avail;  // VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL (when the IOMMU was set)
  uint64_t page_sizes = 0;            // iova_pgsizes
};

// A VFIO container: one IOMMU address space shared by the groups attached to
// it. No hidden per-process default: the caller creates one and opens every
// device into it ("one per process", as DPDK does, is the caller's choice).
//
//   auto c = dmareg::VfioContainer::Open().value();
//   ... VfioDomain::Open(address, {.container = c}) ...
//   c->Map(va, iova, len, /*writable=*/true);     // whole IOMMU pages
//   c->Unmap(iova, len);                          // the exact extent
class VfioContainer {
 public:
  // /dev/vfio/vfio, API version checked, type1v2 (else type1) supported.
  static absl::StatusOr<std::shared_ptr<VfioContainer>> Open();
  // Secondary process: adopts a container fd received from a primary
  // (ownership taken, also on failure); its IOMMU type is already set
  // (`iommu_type` as the primary told). Its table starts empty (this
  // process's maps).
  static absl::StatusOr<std::shared_ptr<VfioContainer>> Adopt(int container_fd, int iommu_type);
  // A container the application opened itself (/dev/vfio/vfio), borrowed:
  // dmareg never closes `container_fd`, which must stay open until the
  // container and every domain and cache over it are gone (as a wrapped
  // VerbsDomain's PD must). Either bare (no group yet: the first VfioDomain
  // to join sets the IOMMU, `iommu_type` or the best the kernel offers) or
  // already set up (groups joined and the IOMMU type set; `iommu_type` says
  // which, 0 = type1v2 where the kernel offers it: the kernel cannot be
  // asked). A domain for a device whose group the application already
  // joined needs that group's fd (VfioDomainOptions::group_fd, a dup: it is
  // taken), as /dev/vfio/N opens once. The table starts empty: the kernel
  // cannot list mappings, so what the application mapped itself is unknown
  // to dmareg; a map overlapping it is refused by the kernel (EEXIST), and
  // reported as AlreadyExists saying so. dmareg unmaps all it mapped when
  // its domains and caches go, so the application's dma_avail is back
  // where it was. InvalidArgument for a negative fd or a type that is not
  // type1/type1v2; the ioctl's errno for an fd that is not a VFIO container.
  static absl::StatusOr<std::shared_ptr<VfioContainer>> Wrap(int container_fd, int iommu_type = 0);

  // Closes the container fd (the kernel then drops its mappings) unless it
  // was wrapped (then the application's). Domains hold their container, so
  // it outlives them.
  ~VfioContainer();
  VfioContainer(const VfioContainer&) = delete;
  VfioContainer& operator=(const VfioContainer&) = delete;

  int fd() const { return fd_; }
  bool owns_fd() const { return owns_fd_; }  // false: made by Wrap
  bool iommu_set() const;                    // a group attached and the IOMMU type set
  // Refreshed (dma_avail re-read) on each call when set.
  VfioContainerInfo info() const;

  // Maps [va, va+length) at iova (whole IOMMU pages). Rules:
  //  - identical (va, iova, length, writable) again: success, refs++ (Unmap
  //    drops one ref; the kernel unmap happens at 0);
  //  - any other overlap of the IOVA range with the table: AlreadyExists
  //    naming both mappings, no kernel call;
  //  - kernel EEXIST with no table entry (e.g. another process sharing the
  //    container): AlreadyExists saying so;
  //  - ENOSPC: ResourceExhausted naming dma_avail/dma_entry_limit; outside
  //    the IOVA ranges: InvalidArgument (checked before the kernel);
  //  - not writable: mapped read-only (VFIO_DMA_MAP_FLAG_READ only);
  //  - no group attached yet: recorded in the table, applied when the first
  //    group attaches (if that fails, the attach fails).
  absl::Status Map(uint64_t va, uint64_t iova, uint64_t length, bool writable);
  // Exact extent of one table entry; a partial unmap (type1 cannot split) is
  // InvalidArgument saying so, nothing changed. NotFound for no entry.
  absl::Status Unmap(uint64_t iova, uint64_t length);
  std::vector<VfioMapping> mappings() const;  // sorted by iova
  std::vector<int> groups() const;            // attached group numbers

  // The IOVA allocator's window: the IOMMU's ranges below the narrowest DMA
  // mask of any device that has joined (empty before the IOMMU is set).
  // Automatic picks always land there, so every device of the container can
  // reach them (see the .cc for why one allocator and not one per mask).
  std::vector<Range> allocator_ranges() const;
  int allocator_address_bits() const;

  // Reserves `length` bytes (rounded up to IOMMU pages) of IOVA space from
  // the allocator, at a multiple of `alignment` (0: the IOMMU page), for
  // the caller to Map into at fixed IOVAs (an on-demand window). Automatic
  // picks (MapAnywhere, IOVA = VA) never land inside a reserved range.
  // FailedPrecondition before a group has joined; ResourceExhausted when no
  // space is left.
  absl::StatusOr<Range> ReserveIova(uint64_t length, uint64_t alignment = 0);
  // Gives back exactly a range ReserveIova returned (its mappings are the
  // caller's to unmap first). NotFound for anything else.
  absl::Status ReleaseIova(Range iova);
  std::vector<Range> reserved_iova() const;  // sorted

 private:
  friend class VfioDomain;
  friend class testing::VfioAccess;
  friend class internal::ContainerFdProvider;
  struct State;

  static absl::StatusOr<std::shared_ptr<VfioContainer>> OpenWith(
      std::shared_ptr<testing::VfioOps> ops);
  static absl::StatusOr<std::shared_ptr<VfioContainer>> AdoptWith(
      std::shared_ptr<testing::VfioOps> ops, int container_fd, int iommu_type);
  static absl::StatusOr<std::shared_ptr<VfioContainer>> WrapWith(
      std::shared_ptr<testing::VfioOps> ops, int container_fd, int iommu_type);
  // The IOMMU is set on `c` (adopted or wrapped): read its info and build
  // the allocator.
  static absl::Status ReadAdoptedInfo(VfioContainer& c, int iommu_type);
  VfioContainer(std::shared_ptr<testing::VfioOps> ops, int fd, int preferred_type,
                bool owns_fd = true);

  // For VfioDomain. Joins `group_fd` (group number `group`) to the container
  // (VFIO_GROUP_SET_CONTAINER unless `already_joined`): the first group sets
  // the IOMMU type, reads the info and applies the table; on any failure the
  // group is taken out again and nothing changed. `address_bits`: the
  // device's DMA mask, narrowing the allocator's window.
  absl::Status AttachGroup(int group_fd, int group, int address_bits, bool already_joined);
  // VFIO_GROUP_UNSET_CONTAINER; the last group out empties the kernel's
  // mappings (the table is kept for the next attach).
  absl::Status DetachGroup(int group_fd, int group);
  // Maps with no caller IOVA: IOVA = VA when free, inside the ranges and
  // below 2^address_bits, else the allocator's pick. Returns the IOVA.
  absl::StatusOr<uint64_t> MapAnywhere(uint64_t va, uint64_t length, bool writable,
                                       int address_bits);
  const std::shared_ptr<testing::VfioOps>& ops() const { return ops_; }
  // A close-on-exec duplicate of attached group `group`'s fd, made under
  // the lock so a concurrent Detach cannot close it in between; NotFound
  // when the group is not attached here.
  absl::StatusOr<int> DupGroupFd(int group) const;
  // The IOMMU type set on the container; FailedPrecondition before it is.
  absl::StatusOr<int> IommuType() const;

  const std::shared_ptr<testing::VfioOps> ops_;
  const int fd_;
  const bool owns_fd_;
  // The table, groups, info and allocator: src/vfio/vfio_container.cc.
  // Lock order: VfioDomain's lock, then this one, then the allocator's
  // (a leaf). Held across the kernel calls so the table and the kernel
  // change together.
  std::unique_ptr<State> state_;
};

struct VfioDomainOptions {
  std::shared_ptr<VfioContainer> container;  // null: a new container of its own
  int dma_address_bits = 64;  // the device's DMA mask width (edu: 28); VFIO cannot know it
  int group_fd = -1;          // secondary: a group fd received from the primary (ownership taken)
};

struct VfioDeviceInfo {  // from sysfs
  std::string address;
  int group = -1;
  std::string driver;
};

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
  VfioRegionMap(std::shared_ptr<testing::VfioOps> ops, void* data, size_t size, int index,
                bool writable);
  void Reset();

  std::shared_ptr<testing::VfioOps> ops_;
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
  // PCI devices bound to vfio-pci.
  static absl::StatusOr<std::vector<VfioDeviceInfo>> ListDevices();
  // Group from /sys/bus/pci/devices/ADDR/iommu_group; checks
  // VFIO_GROUP_FLAGS_VIABLE; sets the container (type1v2, type1 where v2 is
  // absent) when it is the first group; VFIO_GROUP_GET_DEVICE_FD.
  // InvalidArgument for a malformed address ("DDDD:BB:DD.F"); NotFound,
  // listing the vfio-pci devices, when absent; FailedPrecondition when the
  // device is not bound to vfio-pci or its group is not viable.
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

  // IOVA = memory.iova if given; else IOVA = VA when the range lies inside
  // the ranges and below 2^dma_address_bits and is free; else from the
  // container's IOVA allocator. addr, length and iova must be whole IOMMU
  // pages. IOVAs beyond the mask or outside the ranges are refused before
  // any kernel call.
  absl::StatusOr<DeviceMapping> RegisterHost(const HostMemory& memory, AccessFlags access) override;
  // Exact extent of a mapping this domain returned. Works while detached
  // (the table entry goes; the cache calls it exactly once per mapping).
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

  int64_t live_mappings() const { return live_.load(std::memory_order_relaxed); }
  int64_t total_maps() const { return total_maps_.load(std::memory_order_relaxed); }
  int64_t total_unmaps() const { return total_unmaps_.load(std::memory_order_relaxed); }

 private:
  friend class testing::VfioAccess;
  struct State;

  static absl::StatusOr<std::shared_ptr<VfioDomain>> OpenWith(std::shared_ptr<testing::VfioOps> ops,
                                                              std::string_view pci_address,
                                                              VfioDomainOptions options);
  static absl::StatusOr<std::vector<VfioDeviceInfo>> ListDevicesWith(
      std::shared_ptr<testing::VfioOps> ops);

  VfioDomain(std::shared_ptr<testing::VfioOps> ops, std::string address,
             std::shared_ptr<VfioContainer> container, int dma_address_bits);
  // Opens the group (or takes `given_group_fd`), checks it is viable, joins
  // the container and opens the device; on failure every fd is closed and
  // the container is as it was. Called with the domain's lock held.
  absl::Status AttachLocked(int group, int given_group_fd);

  const std::shared_ptr<testing::VfioOps> ops_;
  const std::string address_;
  const std::string name_;
  const std::shared_ptr<VfioContainer> container_;
  const int dma_address_bits_;
  DomainCapabilities caps_;  // written by Open before publication, read-only after
  // Group and device fds, attached flag, this domain's mappings:
  // src/vfio/vfio_domain.cc. Lock order: this lock, then the container's.
  std::unique_ptr<State> state_;
  std::atomic<int64_t> live_{0};
  std::atomic<int64_t> total_maps_{0};
  std::atomic<int64_t> total_unmaps_{0};
};

}  // namespace dmareg

#endif  // DMAREG_VFIO_H_
