// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// vfio_dma: a device that is not an RDMA NIC, DMAing through dmareg.
//
// Opens a PCI device bound to vfio-pci (qemu's edu DMA engine) in a VFIO
// container and moves bytes RAM -> device -> RAM through mappings made the
// two ways dmareg offers, then checks every byte:
//   1. the device-level map: register the buffers as external memory, then
//      DmaMap(domain, va, iova, len) at IOVAs the program chooses;
//   2. the cache: Acquire(buf, len, access) on a RegistrationCache over the
//      VfioDomain, which picks IOVAs under the device's 28-bit DMA mask.
//
//   vfio_dma [--device 0000:00:10.0] [--rounds 8]
//
// Without VFIO on this machine: scripts/vm/run -- build/examples/vfio_dma/vfio_dma

#include <sys/mman.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "dmareg/cache.h"
#include "dmareg/external_memory.h"
#include "dmareg/testing/edu_device.h"
#include "dmareg/vfio/vfio_domain.h"

namespace {

constexpr size_t kPage = 4096;
constexpr size_t kLen = 2048;  // an edu transfer stays inside its 4 KiB buffer

int Fail(std::string_view what, const absl::Status& s) {
  std::fprintf(stderr, "vfio_dma: %.*s: %s\n", static_cast<int>(what.size()), what.data(),
               s.ToString().c_str());
  return 1;
}

// One page of anonymous memory.
struct Page {
  Page()
      : p(static_cast<uint8_t*>(
            mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0))) {}
  ~Page() { munmap(p, kPage); }
  uint8_t* p;
};

// The edu copies `src` (at src_iova) into its buffer and back out to `dst`.
bool RoundTrip(dmareg::testing::EduDevice& edu, Page& src, uint64_t src_iova, Page& dst,
               uint64_t dst_iova, int seed) {
  for (size_t i = 0; i < kLen; ++i) src.p[i] = static_cast<uint8_t>(i * 31 + seed);
  std::memset(dst.p, 0, kPage);
  if (!edu.ToDevice(src_iova, kLen).ok() || !edu.FromDevice(dst_iova, kLen).ok()) return false;
  return std::memcmp(src.p, dst.p, kLen) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string device;
  int rounds = 8;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string_view flag = argv[i];
    if (flag == "--device")
      device = argv[i + 1];
    else if (flag == "--rounds")
      rounds = std::atoi(argv[i + 1]);
  }
  if (device.empty()) {
    const char* env = std::getenv("DMAREG_VFIO_DEVICE");  // set by the VM harness
    if (env != nullptr) device = env;
  }
  if (device.empty()) {
    absl::StatusOr<std::vector<dmareg::VfioDeviceInfo>> list = dmareg::VfioDomain::ListDevices();
    if (list.ok() && !list->empty()) device = list->front().address;
  }
  if (device.empty()) {
    std::fprintf(stderr, "vfio_dma: no device bound to vfio-pci (try scripts/vm/run)\n");
    return 1;
  }

  // One container per process; every device opened into it shares its mappings.
  absl::StatusOr<std::shared_ptr<dmareg::VfioContainer>> container = dmareg::VfioContainer::Open();
  if (!container.ok()) return Fail("VfioContainer::Open", container.status());
  dmareg::VfioDomainOptions options;
  options.container = *container;
  options.dma_address_bits = dmareg::testing::EduDevice::kDmaAddressBits;
  absl::StatusOr<std::shared_ptr<dmareg::VfioDomain>> domain =
      dmareg::VfioDomain::Open(device, options);
  if (!domain.ok()) return Fail("VfioDomain::Open", domain.status());
  absl::StatusOr<std::unique_ptr<dmareg::testing::EduDevice>> edu =
      dmareg::testing::EduDevice::Open(*domain);
  if (!edu.ok()) return Fail("EduDevice::Open", edu.status());
  const dmareg::VfioContainerInfo info = (*container)->info();
  std::printf("vfio_dma: %s, group %d, edu ident 0x%08x, %zu IOVA ranges, dma_avail %u\n",
              (*domain)->name().c_str(), (*domain)->group(), (*edu)->ident(),
              info.iova_ranges.size(), info.dma_avail.value_or(0));

  // 1. The device-level map, at IOVAs of our choosing.
  Page src, dst;
  dmareg::ExternalMemoryRegistry registry;
  for (Page* p : {&src, &dst}) {
    if (absl::Status s = registry.Register(p->p, kPage, kPage); !s.ok()) {
      return Fail("Register", s);
    }
  }
  const uint64_t src_iova = 0x100000, dst_iova = 0x200000;
  auto a = registry.DmaMap(*domain, src.p, src_iova, kPage, dmareg::AccessFlags());
  if (!a.ok()) return Fail("DmaMap src", a.status());
  auto b = registry.DmaMap(*domain, dst.p, dst_iova, kPage,
                           dmareg::AccessFlags(dmareg::Access::kLocalWrite));
  if (!b.ok()) return Fail("DmaMap dst", b.status());
  for (int r = 0; r < rounds; ++r) {
    if (!RoundTrip(**edu, src, src_iova, dst, dst_iova, r)) {
      std::fprintf(stderr, "vfio_dma: DmaMap round %d: bytes differ\n", r);
      return 1;
    }
  }
  std::printf("vfio_dma: DmaMap: %d round trips of %zu bytes at IOVAs 0x%lx -> 0x%lx, bytes ok\n",
              rounds, kLen, static_cast<unsigned long>(src_iova),
              static_cast<unsigned long>(dst_iova));
  (void)registry.DmaUnmap(*domain, src.p, src_iova, kPage);
  (void)registry.DmaUnmap(*domain, dst.p, dst_iova, kPage);

  // 2. The cache: the domain picks IOVAs; hits after the first round.
  absl::StatusOr<std::unique_ptr<dmareg::RegistrationCache>> cache =
      dmareg::RegistrationCache::Create(*domain);
  if (!cache.ok()) return Fail("RegistrationCache::Create", cache.status());
  for (int r = 0; r < rounds; ++r) {
    auto in = (*cache)->Acquire(src.p, kPage, dmareg::AccessFlags());
    auto out = (*cache)->Acquire(dst.p, kPage, dmareg::AccessFlags(dmareg::Access::kLocalWrite));
    if (!in.ok()) return Fail("Acquire src", in.status());
    if (!out.ok()) return Fail("Acquire dst", out.status());
    if (!RoundTrip(**edu, src, in->IovaFor(src.p), dst, out->IovaFor(dst.p), 100 + r)) {
      std::fprintf(stderr, "vfio_dma: cache round %d: bytes differ\n", r);
      return 1;
    }
    if (r == 0) {
      std::printf("vfio_dma: cache picked IOVAs 0x%lx and 0x%lx (the buffers live at %p, %p)\n",
                  static_cast<unsigned long>(in->IovaFor(src.p)),
                  static_cast<unsigned long>(out->IovaFor(dst.p)), static_cast<void*>(src.p),
                  static_cast<void*>(dst.p));
    }
  }
  const dmareg::CacheStats stats = (*cache)->stats();
  std::printf("vfio_dma: cache: %d round trips, bytes ok; %lu hits, %lu misses\n", rounds,
              static_cast<unsigned long>(stats.hits), static_cast<unsigned long>(stats.misses));
  return 0;
}
