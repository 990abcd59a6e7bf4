// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// vfio/vfio_ops.h: the VFIO backend's seam over the kernel (component
// `vfio`).
//
// `VfioOps` has one virtual function per system call the backend makes: the
// opens of /dev/vfio/*, each VFIO ioctl it issues (typed, with the kernel's
// structs), mmap/munmap of device regions, pread/pwrite of config space, and
// the sysfs reads that find a device's IOMMU group and driver. Each keeps the
// kernel's error convention. `KernelVfioOps()` makes the calls themselves and
// is what every container and domain uses unless its options name another
// (VfioContainerOptions::ops, VfioDomainOptions::ops): a stand-in lets a test
// play the kernel (IOMMU ranges, dma_avail, a group that is not viable, a
// device that vanishes) without VFIO. testing::FakeVfioOps
// (dmareg/testing/fake_vfio_ops.h, library dmareg::testing) is a ready-made
// one.
//
//   auto ops = std::make_shared<dmareg::testing::FakeVfioOps>();
//   ops->AddDevice({.address = "0000:00:03.0", .group = 5});
//   auto domain = dmareg::VfioDomain::Open("0000:00:03.0", {.dma_address_bits = 28, .ops = ops});

#ifndef DMAREG_VFIO_VFIO_OPS_H_
#define DMAREG_VFIO_VFIO_OPS_H_

#include <linux/vfio.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#pragma GCC visibility push(default)

namespace dmareg {

// Called from several threads at once (an implementation keeps its own
// state safe); each call answers as the kernel would.
class VfioOps {
 public:
  virtual ~VfioOps() = default;

  // open(2)/close(2): a new fd, or -1 with errno set.
  virtual int Open(const std::string& path, int flags) = 0;
  virtual int Close(int fd) = 0;

  // The ioctls, one each; like ioctl(2): >= 0 on success (an fd for
  // GroupGetDeviceFd, the answer for GetApiVersion/CheckExtension), -1 with
  // errno set on failure. Structs are in/out as the kernel treats them;
  // IommuGetInfo's `info` points at a buffer of info->argsz bytes.
  virtual int GetApiVersion(int container_fd) = 0;
  virtual int CheckExtension(int container_fd, int extension) = 0;
  virtual int SetIommu(int container_fd, int iommu_type) = 0;
  virtual int IommuGetInfo(int container_fd, vfio_iommu_type1_info* info) = 0;
  virtual int MapDma(int container_fd, const vfio_iommu_type1_dma_map* map) = 0;
  virtual int UnmapDma(int container_fd, vfio_iommu_type1_dma_unmap* unmap) = 0;
  virtual int GroupGetStatus(int group_fd, vfio_group_status* status) = 0;
  virtual int GroupSetContainer(int group_fd, int container_fd) = 0;
  virtual int GroupUnsetContainer(int group_fd) = 0;
  virtual int GroupGetDeviceFd(int group_fd, const std::string& device) = 0;
  virtual int DeviceGetInfo(int device_fd, vfio_device_info* info) = 0;
  virtual int DeviceGetRegionInfo(int device_fd, vfio_region_info* info) = 0;
  // VFIO_DEVICE_GET_IRQ_INFO and VFIO_DEVICE_SET_IRQS (`set` points at
  // set->argsz bytes). Defaults: -1 with ENOTTY, a device with no
  // interrupts to offer (and so no removal request to follow).
  virtual int DeviceGetIrqInfo(int device_fd, vfio_irq_info* info);
  virtual int DeviceSetIrqs(int device_fd, const vfio_irq_set* set);

  // mmap(2) of a device region (MAP_SHARED): MAP_FAILED with errno set on
  // failure; munmap(2): 0, or -1 with errno set.
  virtual void* Mmap(size_t length, int prot, int fd, off_t offset) = 0;
  virtual int Munmap(void* addr, size_t length) = 0;
  // madvise(MADV_POPULATE_WRITE): gives [va, va + length) private pages of
  // its own, content kept, before a read-only pin. 0 or -1 with errno.
  virtual int PopulateWrite(uint64_t va, uint64_t length) = 0;
  // pread(2)/pwrite(2): bytes transferred, or -1 with errno set.
  virtual ssize_t Pread(int fd, void* buf, size_t count, off_t offset) = 0;
  virtual ssize_t Pwrite(int fd, const void* buf, size_t count, off_t offset) = 0;

  // sysfs. Each returns 0 or the errno value itself (ENOENT: no such path).
  // ReadLink: the target of a symlink (iommu_group, driver).
  virtual int ReadLink(const std::string& path, std::string* target) = 0;
  // The entry names of a directory, "." and ".." left out.
  virtual int ListDir(const std::string& path, std::vector<std::string>* names) = 0;
  // True if `path` exists (a device folder, /sys/kernel/iommu_groups/N,
  // /dev/vfio/N).
  virtual bool PathExists(const std::string& path) = 0;
  // The contents of a small file (a sysfs attribute: a device's vendor).
  virtual int ReadFile(const std::string& path, std::string* contents) = 0;
};

// The kernel: the system calls themselves. Stateless, and the same object on
// every call, so options that name it and options that name none agree.
std::shared_ptr<VfioOps> KernelVfioOps();

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_VFIO_VFIO_OPS_H_
