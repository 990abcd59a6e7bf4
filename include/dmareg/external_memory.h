// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// external_memory.h: memory the library did not allocate, declared once, then
// mapped for a device at an IOVA the caller chooses (DPDK's
// rte_extmem_register + rte_dev_dma_map, over any `Domain`).
//
// A program that places its own buffers in a device's address space (a
// driver that hands a device physical-looking addresses, a peer that was told
// an IOVA out of band) first registers the memory as a chunk of whole pages,
// optionally with the IOVA of every page, then maps ranges of it on each
// device. One contract on every device: a verbs MR at that IOVA, a VFIO IOMMU
// mapping, a fake's record.
//
//   dmareg::ExternalMemoryRegistry registry;
//   absl::Status s = registry.Register(buf, 1 << 21, 4096);       // no IOVA table
//   absl::StatusOr<dmareg::DeviceMapping> m = registry.DmaMap(
//       domain, buf, /*iova=*/0x5a5a'0000'0000, 1 << 21, dmareg::Access::kRemoteWrite);
//   // ... the device addresses buf as 0x5a5a'0000'0000 (verbs: with m->rkey) ...
//   s = registry.DmaUnmap(domain, buf, 0x5a5a'0000'0000, 1 << 21);
//   s = registry.Unregister(buf, 1 << 21);
//
// The rules (every refusal is a status naming the call, the domain and the
// ranges, and changes nothing):
//  - a chunk: page size a power of two, address and length whole pages, no
//    overlap with another chunk (AlreadyExists), one page-aligned IOVA per
//    page or none;
//  - a mapping lies inside ONE chunk and is whole pages of it (va and
//    length multiples of the chunk's page size: InvalidArgument otherwise,
//    on every device); with an IOVA table the IOVA is the table's for `va`
//    and the table is contiguous over the range;
//  - the device's own rules for a caller's IOVA are the domain's, applied
//    by it (CheckIovaPlacement in domain.h: FailedPrecondition where it
//    cannot place one, OutOfRange past its DMA mask or outside its IOVA
//    ranges, InvalidArgument for VA and IOVA at different offsets in its
//    pages), so the answer is the same through DmaMap as through the
//    domain;
//  - the identical (domain, va, iova, length) again is the same mapping,
//    reference-counted: each DmaMap needs its DmaUnmap; the device mapping
//    goes with the last;
//  - any other overlap of IOVAs on one domain: AlreadyExists naming both.
//    On a domain with one IOVA space (caps.one_iova_space: VFIO) these two
//    are its own table's (the container's, which also sees the cache's
//    mappings and other devices' of the container; "identical" there means
//    the same va, iova, length and writability); elsewhere the registry's;
//  - DmaUnmap takes a whole mapping (InvalidArgument for a part of one);
//  - Unregister of a chunk that is still mapped: FailedPrecondition.
//
// Mappings hold their domain (shared_ptr); the registry's destructor
// deregisters what is still mapped.
//
// dma-buf chunks (DPDK's rte_extmem_register_dmabuf): memory whose pages are
// a dma-buf's (GPU memory, a udmabuf) is registered with the buffer's fd and
// the offset of the chunk's first byte in it. DmaMap then imports the
// dma-buf slice (RegisterDmaBuf at the caller's IOVA) on domains that can,
// and maps the chunk's addresses as host memory on the others (which works
// where that mapping can be pinned: a udmabuf's memfd, nvidia-peermem).
//
//   registry.RegisterDmaBuf(gpu_va, len, 4096, dmabuf_fd, /*offset=*/0);
//   auto m = registry.DmaMap(nic, gpu_va, /*iova=*/0x1'0000'0000, len, access);
//
// Thread safety: every method may be called from several threads. One lock
// guards the registry and is held across the domain's call (so a failed call
// changes nothing and racing identical maps make one mapping): DmaMap and
// DmaUnmap are control-path calls, not for a data path. Lock order: the
// registry's, then the domain's own (on VFIO: the container's; a
// VfioDomain's own lock is not taken on this path).

#ifndef DMAREG_EXTERNAL_MEMORY_H_
#define DMAREG_EXTERNAL_MEMORY_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dmareg/access.h"
#include "dmareg/dmabuf_id.h"
#include "dmareg/domain.h"
#include "dmareg/range.h"

#pragma GCC visibility push(default)

namespace dmareg {

namespace internal {
class ExternalMemoryState;
}  // namespace internal

// One registered chunk.
struct ExternalMemoryChunk {
  Range va{};                     // whole pages
  size_t page_size = 0;           // a power of two
  std::vector<uint64_t> iovas{};  // the IOVA of each page, or empty
  // dma-buf chunks: the registry's own fd of the buffer (valid until the
  // chunk is unregistered) and the buffer offset of va.begin(); else -1.
  int dmabuf_fd = -1;
  uint64_t dmabuf_offset = 0;
};

// One device mapping made by DmaMap, as a snapshot.
struct ExternalMemoryMapping {
  std::string domain;  // Domain::name()
  uint64_t va = 0;
  uint64_t iova = 0;
  uint64_t length = 0;
  uint32_t refs = 0;  // this registry's DmaMap calls not yet undone
  AccessFlags access{};
  bool dmabuf = false;      // the device imported the chunk's dma-buf
  DeviceMapping mapping{};  // what the domain returned
};

class ExternalMemoryRegistry {
 public:
  ExternalMemoryRegistry();
  // `inspect_dmabuf` tells dma-bufs apart for RegisterDmaBuf (empty:
  // InspectDmaBuf; tests pass testing::FakeDmaBufs' inspector).
  explicit ExternalMemoryRegistry(DmaBufInspector inspect_dmabuf);
  // Deregisters the mappings still live (errors have no caller to go to).
  ~ExternalMemoryRegistry();
  ExternalMemoryRegistry(const ExternalMemoryRegistry&) = delete;
  ExternalMemoryRegistry& operator=(const ExternalMemoryRegistry&) = delete;

  // Declares [addr, addr + length) as a chunk of `page_size` pages, with
  // `page_iovas` (one per page) or without.
  absl::Status Register(const void* addr, size_t length, size_t page_size,
                        std::span<const uint64_t> page_iovas = {});
  // Declares [addr, addr + length) as the bytes [offset, offset + length)
  // of the dma-buf `fd` (InvalidArgument if it is not one, or the slice
  // passes its end). The registry keeps a dup of `fd` until Unregister.
  absl::Status RegisterDmaBuf(const void* addr, size_t length, size_t page_size, int fd,
                              uint64_t offset, std::span<const uint64_t> page_iovas = {});
  // Removes the chunk registered exactly as [addr, addr + length).
  absl::Status Unregister(const void* addr, size_t length);
  // The chunk holding `addr`, if any.
  std::optional<ExternalMemoryChunk> Lookup(const void* addr) const;

  // Maps [va, va + length) on `domain` with its first byte at `iova`
  // (domain->RegisterHost with HostMemory::iova; RegisterDmaBuf for a
  // dma-buf chunk on a domain that imports dma-bufs).
  absl::StatusOr<DeviceMapping> DmaMap(std::shared_ptr<Domain> domain, const void* va,
                                       uint64_t iova, size_t length, AccessFlags access);
  // The same at the IOVA the chunk's table gives `va` (FailedPrecondition
  // for a chunk registered without one).
  absl::StatusOr<DeviceMapping> DmaMap(std::shared_ptr<Domain> domain, const void* va,
                                       size_t length, AccessFlags access);
  // Undoes one DmaMap of exactly this mapping.
  absl::Status DmaUnmap(const std::shared_ptr<Domain>& domain, const void* va, uint64_t iova,
                        size_t length);

  // Sorted by domain name, then IOVA.
  std::vector<ExternalMemoryMapping> mappings() const;
  size_t chunk_count() const;
  size_t mapping_count() const;

 private:
  absl::Status AddChunk(const void* addr, size_t length, size_t page_size,
                        std::span<const uint64_t> page_iovas, int dmabuf_fd, uint64_t dmabuf_offset,
                        const std::string& where);
  std::unique_ptr<internal::ExternalMemoryState> state_;
};

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_EXTERNAL_MEMORY_H_
