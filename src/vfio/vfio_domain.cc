// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/vfio/vfio_domain.h"

#include <fcntl.h>
#include <linux/vfio.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/mutex.h"
#include "dmareg/errno_status.h"
#include "dmareg/vfio/vfio_ops.h"
#include "vfio/iommu_info.h"
#include "vfio/pci_sysfs.h"
#include "vfio/removal_watch.h"

namespace dmareg {

// The device's side only: its mappings are the container's (one table, one
// reference count per mapping, each reference naming the domain that holds
// it); the domain keeps counters.
struct VfioDomain::State {
  // Lock order: after ExternalMemoryRegistry's; before the container's
  // (VfioContainer::State), then its allocator's. Taken by the attach path
  // (Open, Detach, Reattach, the destructor) and device access, never by
  // RegisterHost or Deregister: the container's lock alone orders a map
  // against an attach or a detach.
  mutable internal::Mutex mu;
  bool attached ABSL_GUARDED_BY(mu) = false;
  int group ABSL_GUARDED_BY(mu) = -1;
  int group_fd ABSL_GUARDED_BY(mu) = -1;
  int device_fd ABSL_GUARDED_BY(mu) = -1;
  uint64_t config_offset ABSL_GUARDED_BY(mu) = 0;  // config space region
  uint64_t config_size ABSL_GUARDED_BY(mu) = 0;
  // The eventfd each attach registers as the device's request interrupt
  // (follow_removal), or -1; written once by Open, closed by the destructor.
  int request_fd = -1;
  bool request_armed ABSL_GUARDED_BY(mu) = false;  // on the current device fd
  // Detached by a removal request (not by the application): the device's
  // return re-attaches it.
  bool detached_by_request ABSL_GUARDED_BY(mu) = false;
  std::function<void()> on_release_request;  // written once by Open
  std::atomic<int64_t> release_requests{0};
  std::atomic<int64_t> automatic_reattaches{0};
};

namespace {

// Registers `request_fd` as `device_fd`'s request interrupt; false where the
// device has none (or the kernel refuses).
bool ArmRequest(VfioOps& ops, int device_fd, int request_fd) {
  vfio_irq_info irq{};
  irq.argsz = sizeof irq;
  irq.index = VFIO_PCI_REQ_IRQ_INDEX;
  if (ops.DeviceGetIrqInfo(device_fd, &irq) != 0 || irq.count < 1 ||
      (irq.flags & VFIO_IRQ_INFO_EVENTFD) == 0) {
    return false;
  }
  alignas(vfio_irq_set) unsigned char buf[sizeof(vfio_irq_set) + sizeof(int32_t)] = {};
  vfio_irq_set set{};
  set.argsz = sizeof buf;
  set.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
  set.index = VFIO_PCI_REQ_IRQ_INDEX;
  set.start = 0;
  set.count = 1;
  const int32_t fd = request_fd;
  std::memcpy(buf, &set, sizeof set);
  std::memcpy(buf + sizeof set, &fd, sizeof fd);
  return ops.DeviceSetIrqs(device_fd, reinterpret_cast<const vfio_irq_set*>(buf)) == 0;
}

std::string DetachedMessage(const std::string& name, absl::string_view what) {
  return absl::StrCat(what, " on ", name, ": device ", name,
                      " is detached (Reattach() it once it is back)");
}

// The IOMMU's ranges below 2^bits; [0, 2^bits) when the kernel gave none.
std::vector<Range> ClipToMask(const std::vector<Range>& ranges, int bits) {
  if (bits >= 64) return ranges;
  const Range window = *Range::FromBounds(0, uint64_t{1} << bits);
  if (ranges.empty()) return {window};
  std::vector<Range> out;
  for (const Range& r : ranges) {
    if (r.Overlaps(window)) out.push_back(r.Intersect(window));
  }
  return out;
}

}  // namespace

// ---- VfioRegionMap ----

VfioRegionMap::VfioRegionMap(std::shared_ptr<VfioOps> ops, void* data, size_t size, int index,
                             bool writable)
    : ops_(std::move(ops)), data_(data), size_(size), index_(index), writable_(writable) {}

VfioRegionMap::VfioRegionMap(VfioRegionMap&& other) noexcept
    : ops_(std::move(other.ops_)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      index_(std::exchange(other.index_, -1)),
      writable_(other.writable_) {}

VfioRegionMap& VfioRegionMap::operator=(VfioRegionMap&& other) noexcept {
  if (this != &other) {
    Reset();
    ops_ = std::move(other.ops_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    index_ = std::exchange(other.index_, -1);
    writable_ = other.writable_;
  }
  return *this;
}

VfioRegionMap::~VfioRegionMap() { Reset(); }

void VfioRegionMap::Reset() {
  if (data_ != nullptr && ops_ != nullptr) ops_->Munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

// ---- VfioDomain ----

VfioDomain::VfioDomain(std::shared_ptr<VfioOps> ops, std::string address,
                       std::shared_ptr<VfioContainer> container, int dma_address_bits)
    : ops_(std::move(ops)),
      address_(std::move(address)),
      name_(absl::StrCat("vfio:", address_)),
      register_where_(absl::StrCat("RegisterHost on ", name_)),
      container_(std::move(container)),
      dma_address_bits_(dma_address_bits),
      state_(std::make_unique<State>()) {}

VfioDomain::~VfioDomain() {
  watch_.reset();  // its callbacks use the state below
  // Whatever was not deregistered leaves the container's table with us;
  // what other domains of the container hold stays.
  container_->ReleaseHolder(this);
  State& s = *state_;
  internal::MutexLock lock(&s.mu);
  if (s.attached) {
    ops_->Close(s.device_fd);
    (void)container_->DetachGroup(s.group_fd, s.group);
    ops_->Close(s.group_fd);
  }
  if (s.request_fd >= 0) close(s.request_fd);
}

namespace {

// The options' ops, else the container's (a device joins its container
// through the container's own seam), else the kernel's.
std::shared_ptr<VfioOps> OpsOf(const VfioDomainOptions& options) {
  if (options.ops != nullptr) return options.ops;
  if (options.container != nullptr) return options.container->ops();
  return KernelVfioOps();
}

}  // namespace

absl::StatusOr<std::vector<VfioDeviceInfo>> VfioDomain::ListDevices(
    const VfioDomainOptions& options) {
  return internal::ListVfioPciDevices(*OpsOf(options));
}

namespace {

// Checks sysfs before any fd is opened: the device is there, bound to
// vfio-pci, in an IOMMU group. Returns the group.
absl::StatusOr<int> CheckDevice(VfioOps& ops, const std::string& address) {
  if (!ops.PathExists(internal::PciDevicePath(address))) {
    absl::StatusOr<std::vector<VfioDeviceInfo>> present = internal::ListVfioPciDevices(ops);
    std::string listing = "(none)";
    if (present.ok() && !present->empty()) {
      listing = absl::StrJoin(*present, ", ", [](std::string* out, const VfioDeviceInfo& d) {
        absl::StrAppend(out, d.address, " (group ", d.group, ")");
      });
    }
    return absl::NotFoundError(
        absl::StrCat("no PCI device ", address, "; devices bound to vfio-pci: ", listing));
  }
  absl::StatusOr<std::string> driver = internal::ReadPciDriver(ops, address);
  if (!driver.ok()) return driver.status();
  if (*driver != internal::kVfioPciDriver) {
    return absl::FailedPreconditionError(
        absl::StrCat("PCI device ", address, " is ",
                     driver->empty() ? "bound to no driver" : absl::StrCat("bound to ", *driver),
                     ", not vfio-pci: write vfio-pci to ", internal::PciDevicePath(address),
                     "/driver_override and the address to /sys/bus/pci/drivers_probe"));
  }
  return internal::ReadIommuGroup(ops, address);
}

}  // namespace

absl::StatusOr<std::shared_ptr<VfioDomain>> VfioDomain::Open(std::string_view address_view,
                                                             VfioDomainOptions options) {
  const std::string pci_address(address_view);
  const std::shared_ptr<VfioOps> ops = OpsOf(options);
  // A group fd given to us is ours from here, also on failure.
  int given_group_fd = options.group_fd;
  auto close_given = [&] {
    if (given_group_fd >= 0) ops->Close(given_group_fd);
    given_group_fd = -1;
  };
  if (absl::Status st = ValidatePciAddress(pci_address); !st.ok()) {
    close_given();
    return st;
  }
  if (options.dma_address_bits < 12 || options.dma_address_bits > 64) {
    close_given();
    return absl::InvalidArgumentError(absl::StrCat("VFIO device ", pci_address,
                                                   ": dma_address_bits ", options.dma_address_bits,
                                                   " is not in 12..64"));
  }
  if (options.container != nullptr && options.container->ops() != ops) {
    close_given();
    return absl::InvalidArgumentError(
        absl::StrCat("VFIO device ", pci_address, ": the container was opened over other VfioOps"));
  }
  absl::StatusOr<int> group = CheckDevice(*ops, pci_address);
  if (!group.ok()) {
    close_given();
    return group.status();
  }
  std::shared_ptr<VfioContainer> container = options.container;
  if (container == nullptr) {
    absl::StatusOr<std::shared_ptr<VfioContainer>> c = VfioContainer::Open({.ops = ops});
    if (!c.ok()) {
      close_given();
      return c.status();
    }
    container = *std::move(c);
  }
  std::shared_ptr<VfioDomain> domain(
      new VfioDomain(ops, pci_address, std::move(container), options.dma_address_bits));
  bool armed = false;
  {
    State& s = *domain->state_;
    if (options.follow_removal) {
      s.request_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      s.on_release_request = std::move(options.on_release_request);
    }
    internal::MutexLock lock(&s.mu);
    const int fd = std::exchange(given_group_fd, -1);  // AttachLocked owns it now
    if (absl::Status st = domain->AttachLocked(*group, fd); !st.ok()) return st;
    armed = s.request_armed;
  }
  if (armed) {
    VfioDomain* d = domain.get();
    domain->watch_ = internal::RemovalWatch::Start(
        domain->state_->request_fd, domain->address_, [d] { d->FollowReleaseRequest(); },
        [d] { d->FollowReturn(); });
  }
  const VfioContainerInfo info = domain->container_->info();
  DomainCapabilities& caps = domain->caps_;
  caps.device_name = domain->name_;
  caps.kind = DeviceKind::kVfio;
  caps.iova_ranges = ClipToMask(info.iova_ranges, options.dma_address_bits);
  caps.dma_address_bits = options.dma_address_bits;
  caps.max_mappings = info.dma_avail.value_or(0);
  caps.page_sizes = info.page_sizes != 0 ? info.page_sizes : 4096;
  caps.caller_iova = true;
  caps.one_iova_space = true;  // the container's IOMMU space
  caps.byte_granular = false;  // the IOMMU maps pages
  caps.dmabuf_import = false;
  return domain;
}

absl::Status VfioDomain::AttachLocked(int group, int given_group_fd) {
  State& s = *state_;
  s.mu.AssertHeld();  // the caller's lock (the header cannot name it)
  const std::string dev_path = absl::StrCat("/dev/vfio/", group);
  int group_fd = given_group_fd;
  if (group_fd < 0) {
    group_fd = ops_->Open(dev_path, O_RDWR);
    if (group_fd < 0) {
      const int err = errno;
      std::string why;
      if (err == ENOENT) why = "the group has no device bound to vfio-pci";
      if (err == EBUSY) {
        why =
            "the group is already open (another process or domain; or the application's own: "
            "pass a dup of its fd as VfioDomainOptions::group_fd)";
      }
      return ErrnoStatus(err, "open", dev_path, why);
    }
  }
  auto close_group = [&] { ops_->Close(group_fd); };
  vfio_group_status status{};
  status.argsz = sizeof(status);
  if (ops_->GroupGetStatus(group_fd, &status) != 0) {
    const int err = errno;
    close_group();
    return ErrnoStatus(err, "VFIO_GROUP_GET_STATUS", dev_path, name_);
  }
  if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE)) {
    close_group();
    return absl::FailedPreconditionError(absl::StrFormat(
        "VFIO group %d of %s is not viable: every device in /sys/kernel/iommu_groups/%d/devices "
        "must be bound to vfio-pci or to no driver",
        group, name_, group));
  }
  const bool already_joined = (status.flags & VFIO_GROUP_FLAGS_CONTAINER_SET) != 0;
  if (absl::Status st = container_->AttachGroup(group_fd, group, dma_address_bits_, already_joined);
      !st.ok()) {
    close_group();
    return st;
  }
  auto leave = [&] {
    (void)container_->DetachGroup(group_fd, group);
    close_group();
  };
  const int device_fd = ops_->GroupGetDeviceFd(group_fd, address_);
  if (device_fd < 0) {
    const int err = errno;
    leave();
    return ErrnoStatus(err, "VFIO_GROUP_GET_DEVICE_FD", name_, absl::StrCat("group ", group));
  }
  vfio_region_info config{};
  config.argsz = sizeof(config);
  config.index = VFIO_PCI_CONFIG_REGION_INDEX;
  if (ops_->DeviceGetRegionInfo(device_fd, &config) != 0) {
    const int err = errno;
    ops_->Close(device_fd);
    leave();
    return ErrnoStatus(err, "VFIO_DEVICE_GET_REGION_INFO", name_, "config space region");
  }
  s.attached = true;
  s.group = group;
  s.group_fd = group_fd;
  s.device_fd = device_fd;
  s.request_armed = s.request_fd >= 0 && ArmRequest(*ops_, device_fd, s.request_fd);
  s.config_offset = config.offset;
  s.config_size = config.size;
  return absl::OkStatus();
}

absl::Status VfioDomain::Detach() {
  State& s = *state_;
  internal::MutexLock lock(&s.mu);
  if (!s.attached) {
    return absl::FailedPreconditionError(absl::StrCat("Detach of ", name_, ": already detached"));
  }
  s.detached_by_request = false;  // the application's now: it re-attaches
  DetachLocked();
  return absl::OkStatus();
}

void VfioDomain::FollowReleaseRequest() {
  State& s = *state_;
  // The application lets go of what it holds of the device (its BAR
  // mappings) first: the removal waits for those too.
  if (s.on_release_request) s.on_release_request();
  internal::MutexLock lock(&s.mu);
  s.release_requests.fetch_add(1, std::memory_order_relaxed);
  if (!s.attached) return;  // detached already; the kernel repeats itself
  DetachLocked();
  s.detached_by_request = true;
}

void VfioDomain::FollowReturn() {
  State& s = *state_;
  internal::MutexLock lock(&s.mu);
  if (s.attached || !s.detached_by_request) return;
  absl::StatusOr<int> group = CheckDevice(*ops_, address_);
  if (!group.ok() || !AttachLocked(*group, -1).ok()) return;  // the next bind may do
  s.detached_by_request = false;
  s.automatic_reattaches.fetch_add(1, std::memory_order_relaxed);
}

int64_t VfioDomain::release_requests() const {
  return state_->release_requests.load(std::memory_order_relaxed);
}
int64_t VfioDomain::automatic_reattaches() const {
  return state_->automatic_reattaches.load(std::memory_order_relaxed);
}

void VfioDomain::DetachLocked() {
  State& s = *state_;
  s.mu.AssertHeld();
  ops_->Close(s.device_fd);
  // Closing the group fd takes it out of the container even when the unset
  // fails (a device that is gone): the container forgets it either way.
  (void)container_->DetachGroup(s.group_fd, s.group);
  ops_->Close(s.group_fd);
  s.attached = false;
  s.device_fd = -1;
  s.group_fd = -1;
  s.request_armed = false;
}

absl::Status VfioDomain::Reattach() {
  State& s = *state_;
  internal::MutexLock lock(&s.mu);
  if (s.attached) {
    return absl::FailedPreconditionError(absl::StrCat("Reattach of ", name_, ": attached"));
  }
  absl::StatusOr<int> group = CheckDevice(*ops_, address_);
  if (!group.ok()) return group.status();
  return AttachLocked(*group, -1);
}

bool VfioDomain::attached() const {
  internal::MutexLock lock(&state_->mu);
  return state_->attached;
}

int VfioDomain::group() const {
  internal::MutexLock lock(&state_->mu);
  return state_->group;
}

int VfioDomain::device_fd() const {
  internal::MutexLock lock(&state_->mu);
  return state_->device_fd;
}

absl::StatusOr<DeviceMapping> VfioDomain::RegisterHost(const HostMemory& memory, AccessFlags access,
                                                       Paging paging) {
  if (paging != Paging::kPinned) {
    return absl::Status(paging == Paging::kOnDemand ? absl::StatusCode::kUnimplemented
                                                    : absl::StatusCode::kInvalidArgument,
                        absl::StrCat("RegisterHost on ", name_, ": ", PagingName(paging),
                                     " paging: an IOMMU mapping pins its pages"));
  }
  if (absl::Status st = ValidateAccess(access); !st.ok()) return st;
  if (absl::Status st = ValidateHostMemory(memory); !st.ok()) return st;
  const uint64_t va = reinterpret_cast<uintptr_t>(memory.addr);
  const uint64_t length = memory.length;
  if (memory.iova) {
    // The rules of a caller's IOVA, applied here once: the container is
    // handed a request that is already valid and does not check it again.
    if (absl::Status st = CheckIovaPlacement(caps_, va, *memory.iova, length, register_where_);
        !st.ok()) {
      return st;
    }
  } else if (const uint64_t page = caps_.page_sizes & (~caps_.page_sizes + 1);
             ((va | length) & (page - 1)) != 0) {
    // The IOVA is ours to pick, the pages are still the IOMMU's.
    return absl::InvalidArgumentError(
        absl::StrFormat("RegisterHost on %s: VA %#x, %#x bytes: not whole %#x-byte pages, which "
                        "%s maps",
                        name_, va, length, page, name_));
  }
  const bool writable = NormalizeAccess(access).Has(Access::kLocalWrite);
  if (absl::Status st = CheckHostAccess(memory.addr, length, access, register_where_); !st.ok()) {
    return st;
  }

  // No lock of the domain's: the container's orders this against an attach
  // or a detach. Detached, the mapping still goes into the container's
  // table: the kernel gets it now if another device keeps the container in
  // use, else when a device attaches again (DPDK refuses mappings with no
  // device).
  uint64_t iova = 0;
  if (memory.iova) {
    if (absl::Status st = container_->MapValidated(va, *memory.iova, length, writable, this);
        !st.ok()) {
      return st;
    }
    iova = *memory.iova;
  } else {
    absl::StatusOr<uint64_t> picked =
        container_->MapAnywhere(va, length, writable, dma_address_bits_, this);
    if (!picked.ok()) return picked.status();
    iova = *picked;
  }
  live_.fetch_add(1, std::memory_order_relaxed);
  total_maps_.fetch_add(1, std::memory_order_relaxed);
  return DeviceMapping{.iova = iova, .length = length, .handle = va};
}

absl::Status VfioDomain::Deregister(const DeviceMapping& mapping) {
  // The container's table says whether this is a mapping of ours (exact
  // extent: NotFound, InvalidArgument), as it holds its only reference count.
  if (absl::Status st = container_->UnmapHeld(mapping.iova, mapping.length, this); !st.ok()) {
    return absl::Status(st.code(), absl::StrCat("Deregister on ", name_, ": ", st.message()));
  }
  live_.fetch_sub(1, std::memory_order_relaxed);
  total_unmaps_.fetch_add(1, std::memory_order_relaxed);
  return absl::OkStatus();
}

absl::StatusOr<VfioRegionMap> VfioDomain::MapRegion(int index) {
  State& s = *state_;
  internal::MutexLock lock(&s.mu);
  if (!s.attached) return absl::FailedPreconditionError(DetachedMessage(name_, "MapRegion"));
  if (index < 0) {
    return absl::InvalidArgumentError(absl::StrCat("MapRegion on ", name_, ": index ", index));
  }
  vfio_region_info info{};
  info.argsz = sizeof(info);
  info.index = static_cast<uint32_t>(index);
  if (ops_->DeviceGetRegionInfo(s.device_fd, &info) != 0) {
    return ErrnoStatus(errno, "VFIO_DEVICE_GET_REGION_INFO", name_, absl::StrCat("region ", index));
  }
  if (info.size == 0) {
    return absl::NotFoundError(
        absl::StrCat("MapRegion on ", name_, ": region ", index, " is not implemented"));
  }
  if (!(info.flags & VFIO_REGION_INFO_FLAG_MMAP)) {
    return absl::FailedPreconditionError(
        absl::StrCat("MapRegion on ", name_, ": region ", index, " cannot be mmapped"));
  }
  const bool writable = (info.flags & VFIO_REGION_INFO_FLAG_WRITE) != 0;
  int prot = 0;
  if (info.flags & VFIO_REGION_INFO_FLAG_READ) prot |= PROT_READ;
  if (writable) prot |= PROT_WRITE;
  void* p = ops_->Mmap(info.size, prot, s.device_fd, static_cast<off_t>(info.offset));
  if (p == MAP_FAILED) {
    return ErrnoStatus(errno, "mmap", name_,
                       absl::StrFormat("region %d, %#x bytes", index, info.size));
  }
  return VfioRegionMap(ops_, p, info.size, index, writable);
}

absl::Status VfioDomain::ReadConfig(uint64_t offset, void* data, size_t len) {
  State& s = *state_;
  internal::MutexLock lock(&s.mu);
  if (!s.attached) return absl::FailedPreconditionError(DetachedMessage(name_, "ReadConfig"));
  if (len == 0 || data == nullptr || offset > s.config_size || len > s.config_size - offset) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ReadConfig on %s: offset %#x, %u bytes: outside the %#x-byte config space",
                        name_, offset, len, s.config_size));
  }
  const ssize_t n =
      ops_->Pread(s.device_fd, data, len, static_cast<off_t>(s.config_offset + offset));
  if (n < 0) {
    return ErrnoStatus(errno, "pread", name_, absl::StrFormat("config %#x", offset));
  }
  if (static_cast<size_t>(n) != len) {
    return absl::UnavailableError(
        absl::StrFormat("pread on %s: config %#x: %d of %u bytes", name_, offset, n, len));
  }
  return absl::OkStatus();
}

absl::Status VfioDomain::WriteConfig(uint64_t offset, const void* data, size_t len) {
  State& s = *state_;
  internal::MutexLock lock(&s.mu);
  if (!s.attached) return absl::FailedPreconditionError(DetachedMessage(name_, "WriteConfig"));
  if (len == 0 || data == nullptr || offset > s.config_size || len > s.config_size - offset) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "WriteConfig on %s: offset %#x, %u bytes: outside the %#x-byte config space", name_, offset,
        len, s.config_size));
  }
  const ssize_t n =
      ops_->Pwrite(s.device_fd, data, len, static_cast<off_t>(s.config_offset + offset));
  if (n < 0) {
    return ErrnoStatus(errno, "pwrite", name_, absl::StrFormat("config %#x", offset));
  }
  if (static_cast<size_t>(n) != len) {
    return absl::UnavailableError(
        absl::StrFormat("pwrite on %s: config %#x: %d of %u bytes", name_, offset, n, len));
  }
  return absl::OkStatus();
}

}  // namespace dmareg
