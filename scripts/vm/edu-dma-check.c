// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// End-to-end check of the VFIO set-up that scripts/vm/run provides: maps two
// host buffers into the edu device's IOMMU domain through VFIO (type1 v2),
// lets the edu DMA engine copy RAM -> device -> RAM, and compares.
// Used by scripts/vm/selftest; also an example of driving qemu's edu device.
//
//   cc -O2 -o edu-dma-check edu-dma-check.c
//   scripts/vm/run -- ./edu-dma-check     (reads DMAREG_VFIO_GROUP/DEVICE)
//
// edu facts: BAR0 0x00 ident (0x010000ed), 0x04 liveness (returns ~value),
// 0x80 DMA source, 0x88 destination, 0x90 count, 0x98 command (bit 0 start /
// busy, bit 1 device -> RAM). Its buffer is at device address 0x40000, 4 KiB;
// its DMA mask is 28 bits (IOVAs below 256 MiB). qemu 7.2 kills the VM on a
// transfer that ends exactly at the end of the buffer: stay strictly inside.
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define FAIL(...)                                                 \
  do {                                                            \
    fprintf(stderr, "edu-dma-check: " __VA_ARGS__);               \
    fprintf(stderr, " (errno %d: %s)\n", errno, strerror(errno)); \
    exit(1);                                                      \
  } while (0)

enum { kEduBuf = 0x40000, kLen = 2048, kSrcIova = 0x100000, kDstIova = 0x200000 };

static volatile uint8_t *bar;
static uint64_t rd64(unsigned off) { return *(volatile uint64_t *)(bar + off); }
static void wr64(unsigned off, uint64_t v) { *(volatile uint64_t *)(bar + off) = v; }
static uint32_t rd32(unsigned off) { return *(volatile uint32_t *)(bar + off); }
static void wr32(unsigned off, uint32_t v) { *(volatile uint32_t *)(bar + off) = v; }

static void dma(uint64_t src, uint64_t dst, uint64_t cmd) {
  wr64(0x80, src);
  wr64(0x88, dst);
  wr64(0x90, kLen);
  wr64(0x98, cmd | 1);
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  while (rd64(0x98) & 1) {
    clock_gettime(CLOCK_MONOTONIC, &t);
    if (t.tv_sec - t0.tv_sec > 10) FAIL("DMA did not finish in 10 s");
  }
}

static void map(int container, void *p, uint64_t iova) {
  struct vfio_iommu_type1_dma_map m = {.argsz = sizeof m,
                                       .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
                                       .vaddr = (uintptr_t)p,
                                       .iova = iova,
                                       .size = 4096};
  if (ioctl(container, VFIO_IOMMU_MAP_DMA, &m))
    FAIL("VFIO_IOMMU_MAP_DMA iova 0x%llx", (unsigned long long)iova);
}

static void unmap(int container, uint64_t iova) {
  struct vfio_iommu_type1_dma_unmap u = {.argsz = sizeof u, .iova = iova, .size = 4096};
  if (ioctl(container, VFIO_IOMMU_UNMAP_DMA, &u)) FAIL("VFIO_IOMMU_UNMAP_DMA");
}

int main(void) {
  const char *group_no = getenv("DMAREG_VFIO_GROUP"), *bdf = getenv("DMAREG_VFIO_DEVICE");
  if (!group_no || !bdf) {
    fprintf(stderr, "edu-dma-check: DMAREG_VFIO_GROUP/DMAREG_VFIO_DEVICE not set\n");
    return 77;
  }
  int container = open("/dev/vfio/vfio", O_RDWR);
  if (container < 0) FAIL("open /dev/vfio/vfio");
  if (ioctl(container, VFIO_GET_API_VERSION) != VFIO_API_VERSION) FAIL("VFIO API version");
  if (ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) != 1) FAIL("no TYPE1v2 IOMMU");
  char path[64];
  snprintf(path, sizeof path, "/dev/vfio/%s", group_no);
  int group = open(path, O_RDWR);
  if (group < 0) FAIL("open %s", path);
  struct vfio_group_status gs = {.argsz = sizeof gs};
  if (ioctl(group, VFIO_GROUP_GET_STATUS, &gs) || !(gs.flags & VFIO_GROUP_FLAGS_VIABLE))
    FAIL("group not viable");
  if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container)) FAIL("VFIO_GROUP_SET_CONTAINER");
  if (ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU)) FAIL("VFIO_SET_IOMMU");
  int dev = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, bdf);
  if (dev < 0) FAIL("VFIO_GROUP_GET_DEVICE_FD %s", bdf);

  struct vfio_region_info cfg = {.argsz = sizeof cfg, .index = VFIO_PCI_CONFIG_REGION_INDEX};
  if (ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &cfg)) FAIL("config region info");
  uint16_t command;
  if (pread(dev, &command, 2, cfg.offset + 4) != 2) FAIL("read PCI command");
  command |= 1u << 2;  // bus master
  if (pwrite(dev, &command, 2, cfg.offset + 4) != 2) FAIL("write PCI command");

  struct vfio_region_info r0 = {.argsz = sizeof r0, .index = VFIO_PCI_BAR0_REGION_INDEX};
  if (ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &r0)) FAIL("BAR0 region info");
  bar = mmap(NULL, r0.size, PROT_READ | PROT_WRITE, MAP_SHARED, dev, (off_t)r0.offset);
  if (bar == MAP_FAILED) FAIL("mmap BAR0");
  uint32_t ident = rd32(0x00);
  if ((ident & 0xff) != 0xed) FAIL("not an edu device: ident 0x%08x", ident);
  wr32(0x04, 0x12345678);
  if (rd32(0x04) != (uint32_t)~0x12345678u) FAIL("liveness register wrong");

  uint8_t *src = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  uint8_t *dst = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (src == MAP_FAILED || dst == MAP_FAILED) FAIL("mmap buffers");
  for (int i = 0; i < 4096; i++) src[i] = (uint8_t)(i * 7 + 3);
  memset(dst, 0, 4096);
  map(container, src, kSrcIova);
  map(container, dst, kDstIova);
  dma(kSrcIova, kEduBuf, 0);  // RAM -> device
  dma(kEduBuf, kDstIova, 2);  // device -> RAM
  if (memcmp(src, dst, kLen) != 0) FAIL("data copied through the edu device differs");
  for (int i = kLen; i < 4096; i++)
    if (dst[i] != 0) FAIL("edu wrote past the transfer");
  unmap(container, kSrcIova);
  unmap(container, kDstIova);
  printf("edu-dma-check: ok: ident 0x%08x, %d bytes RAM -> edu -> RAM through IOVAs 0x%x/0x%x\n",
         ident, kLen, kSrcIova, kDstIova);
  return 0;
}
