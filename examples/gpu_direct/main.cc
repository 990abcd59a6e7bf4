// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// gpu_direct: device memory to an RDMA NIC through the registration cache.
//
// Takes device memory (GPU memory where libcuda loads and a GPU exports
// dma-bufs; else a udmabuf), asks the cache for a registration of it, RDMA WRITEs host bytes into
// it and READs them back over two loopback RC QPs, and checks every byte (through the dma-buf's own
// CPU mapping, or cuMemcpyDtoH for GPU memory). The cache imports the dma-buf (ibv_reg_dmabuf_mr)
// where the NIC's driver can, and otherwise registers the buffer's CPU alias (the memfd behind a
// udmabuf), as DmaBufPolicy::kPreferDmaBuf says; the output tells which happened.
//
//   gpu_direct [--device rxe0] [--size 1048576] [--udmabuf]
//
// With soft-RoCE (no RDMA NIC), on a kernel with udmabuf:
//   scripts/vm/run --kernel newest -- build/examples/gpu_direct/gpu_direct

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dmareg/cache.h"
#include "dmareg/dmabuf/cuda_driver.h"
#include "dmareg/dmabuf/cuda_exporter.h"
#include "dmareg/dmabuf/dmabuf.h"
#include "dmareg/dmabuf/gpu_cache.h"
#include "dmareg/dmabuf/udmabuf.h"
#include "dmareg/verbs/verbs_domain.h"
#include "verbs/rc_qp.h"

namespace {

constexpr char kUsage[] =
    "usage: gpu_direct [--device NAME] [--size BYTES] [--udmabuf]\n"
    "  --device NAME  RDMA device (default: the first one)\n"
    "  --size BYTES   bytes of device memory, a multiple of 4096 (default 1048576)\n"
    "  --udmabuf      a udmabuf even where a GPU is\n";

uint8_t Pattern(size_t i) { return static_cast<uint8_t>(i * 13 + (i >> 12)); }

int Fail(const char* what, const absl::Status& s) {
  std::fprintf(stderr, "gpu_direct: %s: %s\n", what, s.ToString().c_str());
  return 1;
}

// Index of the first byte of `p` that is not Pattern, or -1.
long Mismatch(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != Pattern(i)) return static_cast<long>(i);
  }
  return -1;
}

// Checks the dma-buf's bytes through its own mmap, inside the sync brackets.
absl::Status CheckThroughMapping(int fd, size_t size) {
  absl::StatusOr<dmareg::DmaBufMapping> m = dmareg::DmaBufMapping::Map(fd, size, false);
  if (!m.ok()) return m.status();
  if (absl::Status s = m->BeginCpuAccess(false); !s.ok()) return s;
  const long bad = Mismatch(m->data(), size);
  if (absl::Status s = m->EndCpuAccess(false); !s.ok()) return s;
  if (bad >= 0) return absl::DataLossError("byte " + std::to_string(bad) + " of the dma-buf");
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  std::string device;
  size_t size = 1 << 20;
  bool want_gpu = true;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--device" && i + 1 < argc) {
      device = argv[++i];
    } else if (a == "--size" && i + 1 < argc) {
      size = std::strtoull(argv[++i], nullptr, 0);
    } else if (a == "--udmabuf") {
      want_gpu = false;
    } else {
      std::fprintf(stderr, "gpu_direct: bad argument '%s'\n%s", argv[i], kUsage);
      return 2;
    }
  }

  auto domain = dmareg::VerbsDomain::Open(device);
  if (!domain.ok()) return Fail("opening the RDMA device", domain.status());
  auto cache = dmareg::RegistrationCache::Create(
      *domain, {.dmabuf_policy = dmareg::DmaBufPolicy::kPreferDmaBuf});
  if (!cache.ok()) return Fail("creating the cache", cache.status());
  const std::string& nic = (*domain)->name();
  const dmareg::AccessFlags access =
      dmareg::Access::kLocalWrite | dmareg::Access::kRemoteWrite | dmareg::Access::kRemoteRead;

  // Device memory: GPU memory exported as a dma-buf where libcuda loads and
  // its first GPU exports dma-bufs (one export per allocation, kept by the
  // exporter); else a udmabuf, which any kernel with CONFIG_UDMABUF offers.
  std::shared_ptr<dmareg::CudaDriver> cuda;
  std::unique_ptr<dmareg::GpuRegistrationCache> gpu;
  uint64_t gpu_ptr = 0;
  std::optional<dmareg::DmaBuf> buf;
  absl::StatusOr<dmareg::Registration> target = absl::UnknownError("no device memory");
  if (want_gpu) {
    absl::StatusOr<std::shared_ptr<dmareg::CudaDriver>> driver = dmareg::CudaDriver::Load();
    absl::StatusOr<bool> exports = driver.ok() && (*driver)->DeviceCount() > 0
                                       ? (*driver)->DmaBufSupported(0)
                                       : absl::StatusOr<bool>(false);
    if (exports.ok() && *exports && (*driver)->UsePrimaryContext(0).ok()) {
      cuda = *driver;
    } else {
      std::printf("gpu_direct: no GPU that exports dma-bufs (%s); using a udmabuf\n",
                  driver.ok() ? "dma-buf export unsupported" : driver.status().ToString().c_str());
    }
  }
  if (cuda != nullptr) {
    absl::StatusOr<uint64_t> p = cuda->Allocate(size);
    if (!p.ok()) return Fail("allocating GPU memory", p.status());
    gpu_ptr = *p;
    auto front = dmareg::GpuRegistrationCache::Create(
        std::make_shared<dmareg::CudaDmaBufExporter>(cuda), {cache->get()});
    if (!front.ok()) return Fail("creating the GPU front door", front.status());
    gpu = std::move(*front);
    std::printf("gpu_direct: %s, %zu bytes of GPU memory (%s, CUDA %s)\n", nic.c_str(), size,
                cuda->DeviceName(0).c_str(), cuda->VersionString().c_str());
    target = gpu->Acquire(reinterpret_cast<const void*>(gpu_ptr), size, access);
  } else {
    absl::StatusOr<dmareg::UdmabufDevice> udmabuf = dmareg::UdmabufDevice::Open();
    if (!udmabuf.ok()) {
      std::fprintf(stderr,
                   "gpu_direct: no dma-buf source: %s\n"
                   "  needs /dev/udmabuf (a kernel with CONFIG_UDMABUF, e.g. "
                   "scripts/vm/run --kernel newest) or a GPU\n",
                   udmabuf.status().ToString().c_str());
      return 2;
    }
    absl::StatusOr<dmareg::DmaBuf> made = udmabuf->Allocate(size);
    if (!made.ok()) return Fail("allocating device memory", made.status());
    buf = std::move(*made);
    std::printf("gpu_direct: %s, %zu bytes of %s memory (dma-buf fd %d)\n", nic.c_str(), size,
                buf->source().c_str(), buf->fd());
    target = (*cache)->Acquire(buf->All(), access);
  }
  // Every byte of the device memory, as the device holds it.
  auto check_device_memory = [&]() -> absl::Status {
    if (buf) return CheckThroughMapping(buf->fd(), size);
    std::vector<uint8_t> copy(size);
    if (absl::Status c = cuda->CopyFromDevice(copy.data(), gpu_ptr, size); !c.ok()) return c;
    const long bad = Mismatch(copy.data(), size);
    if (bad >= 0) return absl::DataLossError("byte " + std::to_string(bad) + " of GPU memory");
    return absl::OkStatus();
  };

  // The device memory as an RDMA target, and host buffers on either side.
  if (!target.ok()) return Fail("registering the dma-buf", target.status());
  std::printf("gpu_direct: registered %s: lkey %#x rkey %#x\n",
              target->via_alias() ? "through its CPU alias (the NIC cannot import dma-bufs)"
                                  : "by dma-buf import (ibv_reg_dmabuf_mr)",
              target->lkey(), target->rkey());
  std::vector<uint8_t> src(size), back(size, 0);
  for (size_t i = 0; i < size; ++i) src[i] = Pattern(i);
  auto s = (*cache)->Acquire(src.data(), size, {});
  auto b = (*cache)->Acquire(back.data(), size, dmareg::Access::kLocalWrite);
  if (!s.ok()) return Fail("registering the source", s.status());
  if (!b.ok()) return Fail("registering the read-back buffer", b.status());

  auto pair = dmareg::rc::ConnectLoopback((*domain)->context(), (*domain)->pd(), nic);
  if (!pair.ok()) return Fail("connecting the loopback QPs", pair.status());
  const uint64_t remote = target->IovaForOffset(0);
  if (absl::Status w = pair->a->Write(src.data(), size, s->lkey(), remote, target->rkey());
      !w.ok()) {
    return Fail("RDMA WRITE into device memory", w);
  }
  if (absl::Status c = check_device_memory(); !c.ok()) {
    return Fail("checking the device memory", c);
  }
  if (absl::Status r = pair->b->Read(back.data(), size, b->lkey(), remote, target->rkey());
      !r.ok()) {
    return Fail("RDMA READ from device memory", r);
  }
  if (const long bad = Mismatch(back.data(), size); bad >= 0) {
    std::fprintf(stderr, "gpu_direct: byte %ld read back differs\n", bad);
    return 1;
  }
  // A second request for the same buffer is a hit: no new registration.
  auto again = gpu ? gpu->Acquire(reinterpret_cast<const void*>(gpu_ptr), 4096, access)
                   : (*cache)->Acquire(buf->Slice(0, 4096), access);
  if (!again.ok()) return Fail("registering the dma-buf again", again.status());
  const dmareg::CacheStats st = (*cache)->stats();
  std::printf("gpu_direct: RDMA WRITE then READ of %zu bytes, all bytes checked %s\n", size,
              buf ? "through the dma-buf's own mapping" : "by copying the GPU memory back");
  std::printf("gpu_direct: cache: %llu hits, %llu misses (%llu dma-buf, %llu through the alias)\n",
              static_cast<unsigned long long>(st.hits), static_cast<unsigned long long>(st.misses),
              static_cast<unsigned long long>(st.dmabuf_misses),
              static_cast<unsigned long long>(st.dmabuf_alias_registrations));
  if (target->via_alias()) {
    std::printf(
        "gpu_direct: for GPU memory without a CPU alias this needs a NIC whose driver imports\n"
        "  dma-bufs (mlx5, efa, bnxt_re, irdma, ...) or nvidia-peermem, which lets\n"
        "  ibv_reg_mr pin a CUDA pointer\n");
  }
  if (gpu) {
    target = dmareg::Registration();
    again = dmareg::Registration();
    (void)gpu->exporter().Release(reinterpret_cast<const void*>(gpu_ptr));
    (void)cuda->Free(gpu_ptr);
  }
  return 0;
}
