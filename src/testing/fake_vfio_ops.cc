// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/testing/fake_vfio_ops.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace dmareg::testing {
namespace {

constexpr const char* kDevices = "/sys/bus/pci/devices/";
constexpr uint64_t kRegionShift = 40;  // vfio-pci: region index << 40 = its offset
constexpr size_t kConfigSize = 256;

bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

FakeVfioOps::FakeVfioOps(IommuSpec spec) : spec_(std::move(spec)) {}

FakeVfioOps::~FakeVfioOps() {
  for (const auto& [p, size] : mmaps_) ::munmap(p, size);
}

void FakeVfioOps::AddDevice(DeviceSpec spec) {
  std::lock_guard<std::mutex> lock(mu_);
  Device& d = devices_[spec.address];
  d.present = true;
  d.config.assign(kConfigSize, 0);
  std::memcpy(d.config.data(), &spec.id, sizeof(spec.id));
  if (spec.group >= 0) groups_.try_emplace(spec.group);
  d.spec = std::move(spec);
}

void FakeVfioOps::RemoveDevice(const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = devices_.find(address);
  if (it == devices_.end()) return;
  it->second.present = false;
  ++it->second.generation;
}

void FakeVfioOps::SetDriver(const std::string& address, const std::string& driver) {
  std::lock_guard<std::mutex> lock(mu_);
  devices_[address].spec.driver = driver;
}

void FakeVfioOps::SetGroupViable(int group, bool viable) {
  std::lock_guard<std::mutex> lock(mu_);
  groups_[group].viable = viable;
}

void FakeVfioOps::SetDmaEntryLimit(uint32_t limit) {
  std::lock_guard<std::mutex> lock(mu_);
  spec_.dma_entry_limit = limit;
}

void FakeVfioOps::SetRawInfo(std::vector<uint8_t> bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  raw_info_ = std::move(bytes);
}

void FakeVfioOps::InjectMapping(int container_fd, uint64_t iova, uint64_t size) {
  std::lock_guard<std::mutex> lock(mu_);
  if (Container* c = ContainerOf(container_fd)) {
    c->maps[iova] = KernelMapping{0, iova, size, VFIO_DMA_MAP_FLAG_READ};
    if (c->avail > 0) --c->avail;
  }
}

void FakeVfioOps::FailNext(Call call, int err, int times) {
  std::lock_guard<std::mutex> lock(mu_);
  for (int i = 0; i < times; ++i) failures_[call].push_back(err);
}

void FakeVfioOps::SetHook(Call call, std::function<void()> hook) {
  std::lock_guard<std::mutex> lock(mu_);
  hooks_[call] = std::move(hook);
  any_hook_.store(true, std::memory_order_release);
}

void FakeVfioOps::RunHook(Call call) {
  // Without hooks a call costs what it did before they existed (the
  // benchmarks over the fake kernel measure dmareg, not the fake).
  if (!any_hook_.load(std::memory_order_acquire)) return;
  std::function<void()> hook;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = hooks_.find(call);
    if (it != hooks_.end()) hook = it->second;
  }
  if (hook) hook();
}

int FakeVfioOps::calls(Call call) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = calls_.find(call);
  return it == calls_.end() ? 0 : it->second;
}

int64_t FakeVfioOps::live_fds() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(fds_.size());
}

int64_t FakeVfioOps::live_mmaps() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(mmaps_.size());
}

int64_t FakeVfioOps::live_containers() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(containers_.size());
}

std::vector<FakeVfioOps::KernelMapping> FakeVfioOps::kernel_mappings(int container_fd) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<KernelMapping> out;
  if (const Container* c = const_cast<FakeVfioOps*>(this)->ContainerOf(container_fd)) {
    for (const auto& [iova, m] : c->maps) out.push_back(m);
  }
  return out;
}

int FakeVfioOps::iommu_type(int container_fd) const {
  std::lock_guard<std::mutex> lock(mu_);
  const Container* c = const_cast<FakeVfioOps*>(this)->ContainerOf(container_fd);
  return c == nullptr ? 0 : c->type;
}

std::vector<int> FakeVfioOps::container_groups(int container_fd) const {
  std::lock_guard<std::mutex> lock(mu_);
  const Container* c = const_cast<FakeVfioOps*>(this)->ContainerOf(container_fd);
  return c == nullptr ? std::vector<int>{} : std::vector<int>(c->groups.begin(), c->groups.end());
}

std::vector<uint8_t> FakeVfioOps::config(const std::string& address) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = devices_.find(address);
  return it == devices_.end() ? std::vector<uint8_t>{} : it->second.config;
}

// ---- helpers (mu_ held) ----

int FakeVfioOps::TakeFailure(Call call) {
  ++calls_[call];
  auto it = failures_.find(call);
  if (it == failures_.end() || it->second.empty()) return 0;
  const int err = it->second.front();
  it->second.erase(it->second.begin());
  return err;
}

int FakeVfioOps::Fail(int err) {
  errno = err;
  return -1;
}

FakeVfioOps::Container* FakeVfioOps::ContainerOf(int fd) {
  auto it = fds_.find(fd);
  if (it == fds_.end() || it->second.kind != Kind::kContainer) return nullptr;
  auto c = containers_.find(it->second.id);
  return c == containers_.end() ? nullptr : &c->second;
}

FakeVfioOps::Group* FakeVfioOps::GroupOf(int fd, int* number) {
  auto it = fds_.find(fd);
  if (it == fds_.end() || it->second.kind != Kind::kGroup) return nullptr;
  *number = it->second.id;
  return &groups_[it->second.id];
}

FakeVfioOps::Device* FakeVfioOps::LiveDevice(int fd) {
  auto it = fds_.find(fd);
  if (it == fds_.end() || it->second.kind != Kind::kDevice) return nullptr;
  auto d = devices_.find(it->second.device);
  if (d == devices_.end() || !d->second.present || d->second.generation != it->second.generation) {
    return nullptr;
  }
  return &d->second;
}

void FakeVfioOps::Leave(int group_number) {
  Group& g = groups_[group_number];
  auto it = containers_.find(g.container);
  g.container = -1;
  if (it == containers_.end()) return;
  Container& c = it->second;
  c.groups.erase(group_number);
  if (c.groups.empty()) {  // the kernel releases the IOMMU with the last group
    c.type = 0;
    c.maps.clear();
    c.avail = 0;
  }
  MaybeRelease(it->first);
}

void FakeVfioOps::MaybeRelease(int container_id) {
  auto it = containers_.find(container_id);
  if (it != containers_.end() && it->second.fds == 0 && it->second.groups.empty()) {
    containers_.erase(it);
  }
}

// ---- the calls ----

int FakeVfioOps::Open(const std::string& path, int /*flags*/) {
  RunHook(Call::kOpen);
  std::lock_guard<std::mutex> lock(mu_);
  if (int err = TakeFailure(Call::kOpen)) return Fail(err);
  const int fd = next_fd_;
  if (path == "/dev/vfio/vfio") {
    const int id = next_container_++;
    containers_[id].fds = 1;
    fds_[fd] = Fd{Kind::kContainer, id, "", 0};
    ++next_fd_;
    return fd;
  }
  if (!StartsWith(path, "/dev/vfio/")) return Fail(ENOENT);
  int number = -1;
  try {
    number = std::stoi(path.substr(10));
  } catch (...) {
    return Fail(ENOENT);
  }
  // /dev/vfio/N exists while a device of the group is bound to vfio-pci.
  bool bound = false;
  for (const auto& [address, d] : devices_) {
    bound = bound || (d.present && d.spec.group == number && d.spec.driver == "vfio-pci");
  }
  if (!bound) return Fail(ENOENT);
  Group& g = groups_[number];
  if (g.open) return Fail(EBUSY);
  g.open = true;
  fds_[fd] = Fd{Kind::kGroup, number, "", 0};
  ++next_fd_;
  return fd;
}

int FakeVfioOps::Close(int fd) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = fds_.find(fd);
  if (it == fds_.end()) return Fail(EBADF);
  const Fd f = it->second;
  fds_.erase(it);
  if (f.kind == Kind::kContainer) {
    --containers_[f.id].fds;
    MaybeRelease(f.id);
  } else if (f.kind == Kind::kGroup) {
    Group& g = groups_[f.id];
    g.open = false;
    if (g.container >= 0) Leave(f.id);  // closing the group unsets its container
  }
  return 0;
}

int FakeVfioOps::GroupGetStatus(int group_fd, vfio_group_status* status) {
  RunHook(Call::kGroupGetStatus);
  std::lock_guard<std::mutex> lock(mu_);
  if (int err = TakeFailure(Call::kGroupGetStatus)) return Fail(err);
  int number = -1;
  Group* g = GroupOf(group_fd, &number);
  if (g == nullptr) return Fail(EBADF);
  status->flags = (g->viable ? VFIO_GROUP_FLAGS_VIABLE : 0) |
                  (g->container >= 0 ? VFIO_GROUP_FLAGS_CONTAINER_SET : 0);
  return 0;
}

int FakeVfioOps::GroupSetContainer(int group_fd, int container_fd) {
  RunHook(Call::kSetContainer);
  std::lock_guard<std::mutex> lock(mu_);
  if (int err = TakeFailure(Call::kSetContainer)) return Fail(err);
  int number = -1;
  Group* g = GroupOf(group_fd, &number);
  auto cfd = fds_.find(container_fd);
  if (g == nullptr || cfd == fds_.end() || cfd->second.kind != Kind::kContainer) {
    return Fail(EBADF);
  }
  if (g->container >= 0) return Fail(EINVAL);
  if (!g->viable) return Fail(EPERM);
  g->container = cfd->second.id;
  // With the IOMMU set, the kernel attaches the group and replays the
  // container's mappings into it: they stay in `maps`, visible to all.
  containers_[g->container].groups.insert(number);
  return 0;
}

int FakeVfioOps::GroupUnsetContainer(int group_fd) {
  RunHook(Call::kUnsetContainer);
  std::lock_guard<std::mutex> lock(mu_);
  if (int err = TakeFailure(Call::kUnsetContainer)) return Fail(err);
  int number = -1;
  Group* g = GroupOf(group_fd, &number);
  if (g == nullptr) return Fail(EBADF);
  if (g->container < 0) return Fail(EINVAL);
  Leave(number);
  return 0;
}

int FakeVfioOps::GroupGetDeviceFd(int group_fd, const std::string& device) {
  RunHook(Call::kGetDeviceFd);
  std::lock_guard<std::mutex> lock(mu_);
  if (int err = TakeFailure(Call::kGetDeviceFd)) return Fail(err);
  int number = -1;
  Group* g = GroupOf(group_fd, &number);
  if (g == nullptr) return Fail(EBADF);
  if (g->container < 0 || containers_[g->container].type == 0) return Fail(EINVAL);
  auto d = devices_.find(device);
  if (d == devices_.end() || !d->second.present || d->second.spec.group != number ||
      d->second.spec.driver != "vfio-pci") {
    return Fail(ENODEV);
  }
  const int fd = next_fd_++;
  fds_[fd] = Fd{Kind::kDevice, number, device, d->second.generation};
  return fd;
}

int FakeVfioOps::DeviceGetInfo(int device_fd, vfio_device_info* info) {
  std::lock_guard<std::mutex> lock(mu_);
  if (LiveDevice(device_fd) == nullptr) return Fail(fds_.count(device_fd) ? ENODEV : EBADF);
  info->flags = VFIO_DEVICE_FLAGS_PCI;
  info->num_regions = VFIO_PCI_NUM_REGIONS;
  info->num_irqs = VFIO_PCI_NUM_IRQS;
  return 0;
}

int FakeVfioOps::DeviceGetRegionInfo(int device_fd, vfio_region_info* info) {
  RunHook(Call::kRegionInfo);
  std::lock_guard<std::mutex> lock(mu_);
  if (int err = TakeFailure(Call::kRegionInfo)) return Fail(err);
  Device* d = LiveDevice(device_fd);
  if (d == nullptr) return Fail(fds_.count(device_fd) ? ENODEV : EBADF);
  if (info->index >= VFIO_PCI_NUM_REGIONS) return Fail(EINVAL);
  info->offset = uint64_t{info->index} << kRegionShift;
  info->flags = 0;
  info->size = 0;
  info->cap_offset = 0;
  if (info->index == VFIO_PCI_BAR0_REGION_INDEX) {
    info->size = d->spec.bar0_size;
    info->flags =
        VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE | VFIO_REGION_INFO_FLAG_MMAP;
  } else if (info->index == VFIO_PCI_CONFIG_REGION_INDEX) {
    info->size = kConfigSize;
    info->flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
  }
  return 0;
}

void* FakeVfioOps::Mmap(size_t length, int prot, int fd, off_t offset) {
  RunHook(Call::kMmap);
  std::lock_guard<std::mutex> lock(mu_);
  if (int err = TakeFailure(Call::kMmap)) {
    errno = err;
    return MAP_FAILED;
  }
  Device* d = LiveDevice(fd);
  if (d == nullptr || offset != 0 || length == 0 || length > d->spec.bar0_size) {
    errno = d == nullptr ? ENODEV : EINVAL;
    return MAP_FAILED;
  }
  // Plain memory standing in for BAR0, with its identification register.
  void* p = ::mmap(nullptr, length, prot | PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return p;
  if (prot & PROT_WRITE) {
    std::memcpy(p, &d->spec.bar0_word0, sizeof(d->spec.bar0_word0));
  }
  mmaps_[p] = length;
  return p;
}

int FakeVfioOps::Munmap(void* addr, size_t length) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = mmaps_.find(addr);
  if (it == mmaps_.end() || it->second != length) return Fail(EINVAL);
  ::munmap(addr, length);
  mmaps_.erase(it);
  return 0;
}

int FakeVfioOps::PopulateWrite(uint64_t, uint64_t) {
  std::lock_guard<std::mutex> lock(mu_);
  ++populate_calls_;
  return 0;
}

int FakeVfioOps::populate_calls() const {
  std::lock_guard<std::mutex> lock(mu_);
  return populate_calls_;
}

ssize_t FakeVfioOps::Pread(int fd, void* buf, size_t count, off_t offset) {
  RunHook(Call::kPread);
  std::lock_guard<std::mutex> lock(mu_);
  if (int err = TakeFailure(Call::kPread)) return Fail(err);
  Device* d = LiveDevice(fd);
  if (d == nullptr) return Fail(fds_.count(fd) ? ENODEV : EBADF);
  const uint64_t config = uint64_t{VFIO_PCI_CONFIG_REGION_INDEX} << kRegionShift;
  const uint64_t off = static_cast<uint64_t>(offset);
  if (off < config || off - config >= kConfigSize) return Fail(EINVAL);
  const size_t n = std::min<size_t>(count, kConfigSize - (off - config));
  std::memcpy(buf, d->config.data() + (off - config), n);
  return static_cast<ssize_t>(n);
}

ssize_t FakeVfioOps::Pwrite(int fd, const void* buf, size_t count, off_t offset) {
  RunHook(Call::kPwrite);
  std::lock_guard<std::mutex> lock(mu_);
  if (int err = TakeFailure(Call::kPwrite)) return Fail(err);
  Device* d = LiveDevice(fd);
  if (d == nullptr) return Fail(fds_.count(fd) ? ENODEV : EBADF);
  const uint64_t config = uint64_t{VFIO_PCI_CONFIG_REGION_INDEX} << kRegionShift;
  const uint64_t off = static_cast<uint64_t>(offset);
  if (off < config || off - config >= kConfigSize) return Fail(EINVAL);
  const size_t n = std::min<size_t>(count, kConfigSize - (off - config));
  std::memcpy(d->config.data() + (off - config), buf, n);
  return static_cast<ssize_t>(n);
}

int FakeVfioOps::ReadLink(const std::string& path, std::string* target) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!StartsWith(path, kDevices)) return ENOENT;
  const std::string rest = path.substr(std::strlen(kDevices));
  const size_t slash = rest.find('/');
  if (slash == std::string::npos) return EINVAL;  // the folder is no link
  auto d = devices_.find(rest.substr(0, slash));
  if (d == devices_.end() || !d->second.present) return ENOENT;
  const std::string leaf = rest.substr(slash + 1);
  if (leaf == "iommu_group") {
    if (d->second.spec.group < 0) return ENOENT;
    *target = "../../../kernel/iommu_groups/" + std::to_string(d->second.spec.group);
    return 0;
  }
  if (leaf == "driver") {
    if (d->second.spec.driver.empty()) return ENOENT;
    *target = "../../../bus/pci/drivers/" + d->second.spec.driver;
    return 0;
  }
  return ENOENT;
}

int FakeVfioOps::ListDir(const std::string& path, std::vector<std::string>* names) {
  std::lock_guard<std::mutex> lock(mu_);
  if (path + "/" != kDevices) return ENOENT;
  names->clear();
  for (const auto& [address, d] : devices_) {
    if (d.present) names->push_back(address);
  }
  return 0;
}

bool FakeVfioOps::PathExists(const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  if (StartsWith(path, kDevices)) {
    auto d = devices_.find(path.substr(std::strlen(kDevices)));
    return d != devices_.end() && d->second.present;
  }
  const std::string groups = "/sys/kernel/iommu_groups/";
  if (StartsWith(path, groups)) {
    const std::string n = path.substr(groups.size());
    for (const auto& [address, d] : devices_) {
      if (d.present && d.spec.group >= 0 && std::to_string(d.spec.group) == n) return true;
    }
  }
  // /dev/vfio/N exists while a device of the group is bound to vfio-pci.
  const std::string nodes = "/dev/vfio/";
  if (StartsWith(path, nodes)) {
    const std::string n = path.substr(nodes.size());
    for (const auto& [address, d] : devices_) {
      if (d.present && d.spec.group >= 0 && d.spec.driver == "vfio-pci" &&
          std::to_string(d.spec.group) == n) {
        return true;
      }
    }
  }
  return false;
}

int FakeVfioOps::ReadFile(const std::string& path, std::string* contents) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!StartsWith(path, kDevices)) return ENOENT;
  const std::string rest = path.substr(std::strlen(kDevices));
  const size_t slash = rest.find('/');
  if (slash == std::string::npos) return EISDIR;
  auto d = devices_.find(rest.substr(0, slash));
  if (d == devices_.end() || !d->second.present) return ENOENT;
  const std::string leaf = rest.substr(slash + 1);
  char text[16];
  if (leaf == "vendor") {
    std::snprintf(text, sizeof(text), "0x%04x\n", d->second.spec.id & 0xffff);
  } else if (leaf == "device") {
    std::snprintf(text, sizeof(text), "0x%04x\n", d->second.spec.id >> 16);
  } else {
    return ENOENT;
  }
  *contents = text;
  return 0;
}

}  // namespace dmareg::testing
