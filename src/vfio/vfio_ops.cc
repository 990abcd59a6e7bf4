// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
// KernelVfioOps(): the VFIO backend's system calls, unchanged.
#include "dmareg/vfio/vfio_ops.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <memory>
#include <string>
#include <vector>

namespace dmareg {

int VfioOps::DeviceGetIrqInfo(int, vfio_irq_info*) {
  errno = ENOTTY;
  return -1;
}
int VfioOps::DeviceSetIrqs(int, const vfio_irq_set*) {
  errno = ENOTTY;
  return -1;
}

namespace {

class KernelOps final : public VfioOps {
 public:
  int Open(const std::string& path, int flags) override {
    return ::open(path.c_str(), flags | O_CLOEXEC);
  }
  int Close(int fd) override { return ::close(fd); }
  int GetApiVersion(int fd) override { return ::ioctl(fd, VFIO_GET_API_VERSION); }
  int CheckExtension(int fd, int extension) override {
    return ::ioctl(fd, VFIO_CHECK_EXTENSION, extension);
  }
  int SetIommu(int fd, int iommu_type) override { return ::ioctl(fd, VFIO_SET_IOMMU, iommu_type); }
  int IommuGetInfo(int fd, vfio_iommu_type1_info* info) override {
    return ::ioctl(fd, VFIO_IOMMU_GET_INFO, info);
  }
  int MapDma(int fd, const vfio_iommu_type1_dma_map* map) override {
    return ::ioctl(fd, VFIO_IOMMU_MAP_DMA, map);
  }
  int UnmapDma(int fd, vfio_iommu_type1_dma_unmap* unmap) override {
    return ::ioctl(fd, VFIO_IOMMU_UNMAP_DMA, unmap);
  }
  int GroupGetStatus(int group_fd, vfio_group_status* status) override {
    return ::ioctl(group_fd, VFIO_GROUP_GET_STATUS, status);
  }
  int GroupSetContainer(int group_fd, int container_fd) override {
    return ::ioctl(group_fd, VFIO_GROUP_SET_CONTAINER, &container_fd);
  }
  int GroupUnsetContainer(int group_fd) override {
    return ::ioctl(group_fd, VFIO_GROUP_UNSET_CONTAINER);
  }
  int GroupGetDeviceFd(int group_fd, const std::string& device) override {
    return ::ioctl(group_fd, VFIO_GROUP_GET_DEVICE_FD, device.c_str());
  }
  int DeviceGetInfo(int device_fd, vfio_device_info* info) override {
    return ::ioctl(device_fd, VFIO_DEVICE_GET_INFO, info);
  }
  int DeviceGetRegionInfo(int device_fd, vfio_region_info* info) override {
    return ::ioctl(device_fd, VFIO_DEVICE_GET_REGION_INFO, info);
  }
  int DeviceGetIrqInfo(int device_fd, vfio_irq_info* info) override {
    return ::ioctl(device_fd, VFIO_DEVICE_GET_IRQ_INFO, info);
  }
  int DeviceSetIrqs(int device_fd, const vfio_irq_set* set) override {
    return ::ioctl(device_fd, VFIO_DEVICE_SET_IRQS, set);
  }
  void* Mmap(size_t length, int prot, int fd, off_t offset) override {
    return ::mmap(nullptr, length, prot, MAP_SHARED, fd, offset);
  }
  int Munmap(void* addr, size_t length) override { return ::munmap(addr, length); }
  int PopulateWrite(uint64_t va, uint64_t length) override {
#ifndef MADV_POPULATE_WRITE
    constexpr int MADV_POPULATE_WRITE = 23;  // Linux 5.14; older headers lack it
#endif
    return ::madvise(reinterpret_cast<void*>(va), length, MADV_POPULATE_WRITE);
  }
  ssize_t Pread(int fd, void* buf, size_t count, off_t offset) override {
    return ::pread(fd, buf, count, offset);
  }
  ssize_t Pwrite(int fd, const void* buf, size_t count, off_t offset) override {
    return ::pwrite(fd, buf, count, offset);
  }
  int ReadLink(const std::string& path, std::string* target) override {
    char buf[PATH_MAX];
    const ssize_t n = ::readlink(path.c_str(), buf, sizeof(buf));
    if (n < 0) return errno;
    if (static_cast<size_t>(n) == sizeof(buf)) return ENAMETOOLONG;
    target->assign(buf, static_cast<size_t>(n));
    return 0;
  }
  int ListDir(const std::string& path, std::vector<std::string>* names) override {
    DIR* dir = ::opendir(path.c_str());
    if (dir == nullptr) return errno;
    names->clear();
    while (const dirent* e = ::readdir(dir)) {
      const std::string name = e->d_name;
      if (name != "." && name != "..") names->push_back(name);
    }
    ::closedir(dir);
    return 0;
  }
  bool PathExists(const std::string& path) override {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0;
  }
  int ReadFile(const std::string& path, std::string* contents) override {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno;
    char buf[4096];  // a sysfs attribute is at most a page
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    const int err = errno;
    ::close(fd);
    if (n < 0) return err;
    contents->assign(buf, static_cast<size_t>(n));
    return 0;
  }
};

}  // namespace

std::shared_ptr<VfioOps> KernelVfioOps() {
  // Shared, never destroyed: containers may outlive static destruction.
  static const std::shared_ptr<VfioOps>* const kernel =
      new std::shared_ptr<VfioOps>(std::make_shared<KernelOps>());
  return *kernel;
}

}  // namespace dmareg
