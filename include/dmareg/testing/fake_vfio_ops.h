// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// testing/fake_vfio_ops.h: a VfioOps (dmareg/vfio/vfio_ops.h) with no kernel
// behind it (library dmareg::testing) that models the type1 IOMMU as vfio_iommu_type1.c does:
//   MAP_DMA: EINVAL without READ/WRITE, for a zero, unaligned (smallest IOMMU
//     page) or wrapping extent, or an IOVA outside the ranges; EEXIST for any
//     IOVA overlap; ENOSPC once dma_avail (dma_entry_limit at SET_IOMMU) is spent;
//   UNMAP_DMA (type1v2): EINVAL when the range bisects a mapping (nothing is
//     removed); otherwise every mapping inside goes, and `size` says how many
//     bytes (0 when none). type1 (v1): a range starting inside a mapping
//     unmaps nothing (size 0), one covering a mapping's first IOVA unmaps it whole;
//   the last group leaving a container releases the IOMMU (type unset,
//     mappings dropped); a group joining a container whose IOMMU is set sees
//     its mappings (the kernel replays them);
//   a removed device (hot-unplug) vanishes from sysfs and its open fds answer
//     ENODEV; a group can be made not viable.
// Every fd, mapping and region mmap is counted so tests can check for leaks,
// and any call can be told to fail with an errno.
//
//   auto ops = std::make_shared<FakeVfioOps>();
//   ops->AddDevice({.address = "0000:00:03.0", .group = 5});
//   auto d = dmareg::VfioDomain::Open("0000:00:03.0", {.ops = ops}).value();
//   ops->FailNext(FakeVfioOps::Call::kMapDma, EFAULT);
//   ...
//   d.reset();
//   EXPECT_EQ(ops->live_fds(), 0);

#ifndef DMAREG_TESTING_FAKE_VFIO_OPS_H_
#define DMAREG_TESTING_FAKE_VFIO_OPS_H_

#include <linux/vfio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "dmareg/vfio/vfio_ops.h"

#pragma GCC visibility push(default)

namespace dmareg::testing {

class FakeVfioOps final : public VfioOps {
 public:
  enum class Call {
    kOpen,
    kSetIommu,
    kGetInfo,
    kMapDma,
    kUnmapDma,
    kGroupGetStatus,
    kSetContainer,
    kUnsetContainer,
    kGetDeviceFd,
    kRegionInfo,
    kMmap,
    kPread,
    kPwrite,
  };

  // The IOMMU every container gets; defaults are what a q35 VM with an
  // intel-iommu reports.
  struct IommuSpec {
    bool type1v2 = true;
    bool type1 = true;
    uint64_t page_sizes = 0x40201000;  // 4 KiB, 2 MiB, 1 GiB
    // Inclusive, as the kernel reports them; the MSI window is a hole.
    std::vector<vfio_iova_range> ranges = {{0, 0xfedfffff}, {0xfef00000, 0x7fffffffff}};
    bool report_ranges = true;     // the IOVA range capability
    bool report_dma_avail = true;  // the DMA avail capability
    uint32_t dma_entry_limit = 65535;
  };

  struct DeviceSpec {
    std::string address{};
    int group = 5;                    // -1: in no IOMMU group (no IOMMU)
    std::string driver = "vfio-pci";  // "" = bound to none
    uint32_t id = 0x11e81234;         // config dword 0 (edu); sysfs vendor and device
    uint64_t bar0_size = 1 << 20;
    uint32_t bar0_word0 = 0x010000ed;  // what BAR0's first register reads
  };

  // One mapping in a container's IOMMU.
  struct KernelMapping {
    uint64_t vaddr = 0;
    uint64_t iova = 0;
    uint64_t size = 0;
    uint32_t flags = 0;  // VFIO_DMA_MAP_FLAG_*
  };

  FakeVfioOps() : FakeVfioOps(IommuSpec{}) {}
  explicit FakeVfioOps(IommuSpec spec);
  ~FakeVfioOps() override;

  void AddDevice(DeviceSpec spec);
  // Hot-unplug: gone from sysfs; fds open on it answer ENODEV from now on.
  void RemoveDevice(const std::string& address);
  void SetDriver(const std::string& address, const std::string& driver);
  void SetGroupViable(int group, bool viable);
  // For containers whose IOMMU is set from now on (the module parameter).
  void SetDmaEntryLimit(uint32_t limit);
  // GET_INFO answers exactly these bytes from now on (malformed chains).
  void SetRawInfo(std::vector<uint8_t> bytes);
  // A mapping made by someone else (another process) in the container of `container_fd`.
  void InjectMapping(int container_fd, uint64_t iova, uint64_t size);

  // The next `times` calls of `call` fail with `err` and change nothing.
  void FailNext(Call call, int err, int times = 1);
  // Every `call` from now on runs `hook` first, outside the fake's own
  // lock, so it may block: a test can hold a caller inside a call (and
  // whatever locks it holds) while other threads go on. Empty: none.
  void SetHook(Call call, std::function<void()> hook);

  int calls(Call call) const;
  int64_t live_fds() const;
  int64_t live_mmaps() const;
  int64_t live_containers() const;  // containers the kernel still holds
  // The IOMMU of the container `container_fd` refers to (empty when the fd is unknown).
  std::vector<KernelMapping> kernel_mappings(int container_fd) const;
  int iommu_type(int container_fd) const;  // 0: not set
  std::vector<int> container_groups(int container_fd) const;
  std::vector<uint8_t> config(const std::string& address) const;

  int Open(const std::string& path, int flags) override;
  int Close(int fd) override;
  int GetApiVersion(int container_fd) override;
  int CheckExtension(int container_fd, int extension) override;
  int SetIommu(int container_fd, int iommu_type) override;
  int IommuGetInfo(int container_fd, vfio_iommu_type1_info* info) override;
  int MapDma(int container_fd, const vfio_iommu_type1_dma_map* map) override;
  int UnmapDma(int container_fd, vfio_iommu_type1_dma_unmap* unmap) override;
  int GroupGetStatus(int group_fd, vfio_group_status* status) override;
  int GroupSetContainer(int group_fd, int container_fd) override;
  int GroupUnsetContainer(int group_fd) override;
  int GroupGetDeviceFd(int group_fd, const std::string& device) override;
  int DeviceGetInfo(int device_fd, vfio_device_info* info) override;
  int DeviceGetRegionInfo(int device_fd, vfio_region_info* info) override;
  void* Mmap(size_t length, int prot, int fd, off_t offset) override;
  int Munmap(void* addr, size_t length) override;
  // Counts the calls (populate_calls()); memory is the test's own.
  int PopulateWrite(uint64_t va, uint64_t length) override;
  int populate_calls() const;
  ssize_t Pread(int fd, void* buf, size_t count, off_t offset) override;
  ssize_t Pwrite(int fd, const void* buf, size_t count, off_t offset) override;
  int ReadLink(const std::string& path, std::string* target) override;
  int ListDir(const std::string& path, std::vector<std::string>* names) override;
  bool PathExists(const std::string& path) override;
  // A device's vendor and device (sysfs writes "0x1234\n").
  int ReadFile(const std::string& path, std::string* contents) override;

 private:
  struct Container {
    int type = 0;
    uint32_t avail = 0;
    std::map<uint64_t, KernelMapping> maps{};  // by IOVA
    std::set<int> groups{};
    int fds = 0;  // the container lives while fds or groups refer to it
  };
  struct Group {
    bool viable = true;
    bool open = false;
    int container = -1;  // container id
  };
  struct Device {
    DeviceSpec spec{};
    bool present = true;
    int generation = 0;  // bumped on removal: older fds are dead
    std::vector<uint8_t> config{};
  };
  enum class Kind { kContainer, kGroup, kDevice };
  struct Fd {
    Kind kind{};
    int id = -1;  // container id or group number
    std::string device{};
    int generation = 0;
  };

  void RunHook(Call call);     // mu_ not held
  int TakeFailure(Call call);  // 0, or the errno to fail with
  int Fail(int err);           // sets errno, returns -1
  Container* ContainerOf(int fd);
  Group* GroupOf(int fd, int* number);
  Device* LiveDevice(int fd);
  void Leave(int group_number);  // a group leaves its container
  void MaybeRelease(int container_id);

  mutable std::mutex mu_;
  int populate_calls_ = 0;  // guarded by mu_
  IommuSpec spec_;
  std::vector<uint8_t> raw_info_;
  std::map<std::string, Device> devices_;
  std::map<int, Group> groups_;
  std::map<int, Container> containers_;
  std::map<int, Fd> fds_;
  std::map<void*, size_t> mmaps_;
  std::map<Call, std::vector<int>> failures_;
  std::map<Call, std::function<void()>> hooks_;
  std::atomic<bool> any_hook_{false};  // a hook was ever set: calls look them up
  std::map<Call, int> calls_;
  int next_fd_ = 100;
  int next_container_ = 1;
};

}  // namespace dmareg::testing

#pragma GCC visibility pop

#endif  // DMAREG_TESTING_FAKE_VFIO_OPS_H_
