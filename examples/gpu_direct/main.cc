// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// gpu_direct: device memory to an RDMA NIC through the registration cache.
//
// Makes a dma-buf (a udmabuf here; GPU memory where a GPU is), asks the
// cache for a registration of it, RDMA WRITEs host bytes into it and READs
// them back over two loopback RC QPs, and checks every byte through the
// dma-buf's own CPU mapping. The cache imports the dma-buf
// (ibv_reg_dmabuf_mr) where the NIC's driver can, and otherwise registers
// the buffer's CPU alias (the memfd behind a udmabuf), as
// DmaBufPolicy::kPreferDmaBuf says; the output tells which happened.
//
//   gpu_direct [--device rxe0] [--size 1048576]
//
// With soft-RoCE (no RDMA NIC), on a kernel with udmabuf:
//   scripts/vm/run --kernel newest -- build/examples/gpu_direct/gpu_direct

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "dmareg/cache.h"
#include "dmareg/dmabuf.h"
#include "dmareg/verbs_domain.h"
#include "verbs/rc_qp.h"

namespace {

constexpr char kUsage[] =
    "usage: gpu_direct [--device NAME] [--size BYTES]\n"
    "  --device NAME  RDMA device (default: the first one)\n"
    "  --size BYTES   bytes of device memory, a multiple of 4096 (default 1048576)\n";

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
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--device" && i + 1 < argc) {
      device = argv[++i];
    } else if (a == "--size" && i + 1 < argc) {
      size = std::strtoull(argv[++i], nullptr, 0);
    } else {
      std::fprintf(stderr, "gpu_direct: bad argument '%s'\n%s", argv[i], kUsage);
      return 2;
    }
  }

  // Device memory. The CUDA path (dmareg/cuda.h: a GPU allocation exported
  // as a dma-buf, libcuda loaded at run time, used when it loads) belongs
  // here, ahead of the udmabuf; it is added with cuda.h. A udmabuf is what
  // every kernel with CONFIG_UDMABUF offers, GPU or not.
  absl::StatusOr<dmareg::UdmabufDevice> udmabuf = dmareg::UdmabufDevice::Open();
  if (!udmabuf.ok()) {
    std::fprintf(stderr,
                 "gpu_direct: no dma-buf source: %s\n"
                 "  needs /dev/udmabuf (a kernel with CONFIG_UDMABUF, e.g. "
                 "scripts/vm/run --kernel newest) or a GPU\n",
                 udmabuf.status().ToString().c_str());
    return 2;
  }
  absl::StatusOr<dmareg::DmaBuf> buf = udmabuf->Allocate(size);
  if (!buf.ok()) return Fail("allocating device memory", buf.status());

  auto domain = dmareg::VerbsDomain::Open(device);
  if (!domain.ok()) return Fail("opening the RDMA device", domain.status());
  auto cache = dmareg::RegistrationCache::Create(
      *domain, {.dmabuf_policy = dmareg::DmaBufPolicy::kPreferDmaBuf});
  if (!cache.ok()) return Fail("creating the cache", cache.status());
  const std::string& nic = (*domain)->name();
  std::printf("gpu_direct: %s, %zu bytes of %s memory (dma-buf fd %d)\n", nic.c_str(), size,
              buf->source().c_str(), buf->fd());

  // The device memory as an RDMA target, and host buffers on either side.
  const dmareg::AccessFlags access =
      dmareg::Access::kLocalWrite | dmareg::Access::kRemoteWrite | dmareg::Access::kRemoteRead;
  absl::StatusOr<dmareg::Registration> target = (*cache)->Acquire(buf->All(), access);
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
  if (absl::Status c = CheckThroughMapping(buf->fd(), size); !c.ok()) {
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
  auto again = (*cache)->Acquire(buf->Slice(0, 4096), access);
  if (!again.ok()) return Fail("registering the dma-buf again", again.status());
  const dmareg::CacheStats st = (*cache)->stats();
  std::printf(
      "gpu_direct: RDMA WRITE then READ of %zu bytes, all bytes checked through the "
      "dma-buf's own mapping\n",
      size);
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
  return 0;
}
