// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// OdpVfioBackend (dmareg/odp_vfio.h): windows from the container's IOVA
// allocator, chunks mapped and unmapped at fixed IOVAs.

#include "dmareg/odp/vfio_backend.h"

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <map>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "odp/odp_mutex.h"

namespace dmareg {

namespace {

// The type1 default (vfio_iommu_type1's dma_entry_limit) when the kernel
// does not report dma_avail.
constexpr uint64_t kDefaultDmaEntries = 65535;

// Chunk size for a window of `length` bytes. Every chunk is one type1
// mapping, and a container may hold only dma_avail of them (65535 by
// default: one per page would exhaust it at 256 MiB). A window may use at
// most a quarter of what is left, so several windows and the cache's own
// mappings still fit; the chunk is then the smallest power of two of pages
// that covers the window in that many entries (a power of two keeps chunks
// aligned with the window's alignment, so the IOMMU may use large pages).
uint64_t ChooseChunk(uint64_t length, uint64_t avail, uint64_t page) {
  const uint64_t entries = std::max<uint64_t>(1, avail / 4);
  const uint64_t need = (length + entries - 1) / entries;
  return std::max(page, std::bit_ceil(need));
}

struct OdpVfioWindow {
  uintptr_t va = 0;
  Range iova;
  uint64_t chunk = 0;
  std::map<uint64_t, bool> linked;       // chunk offset -> writable
  std::map<uint64_t, uint64_t> lengths;  // chunk offset -> mapped length
};

}  // namespace

struct OdpVfioBackend::Impl {
  mutable odp_internal::Mutex mu;                                 // before the container's
  std::map<uint64_t, OdpVfioWindow> windows ABSL_GUARDED_BY(mu);  // by handle
  uint64_t next_handle ABSL_GUARDED_BY(mu) = 1;
};

OdpVfioBackend::OdpVfioBackend(std::shared_ptr<VfioContainer> container)
    : container_(std::move(container)),
      name_(absl::StrCat("odp-vfio(container fd ", container_->fd(), ")")),
      impl_(std::make_unique<Impl>()) {}

OdpVfioBackend::~OdpVfioBackend() = default;

absl::StatusOr<std::shared_ptr<OdpVfioBackend>> OdpVfioBackend::Create(
    std::shared_ptr<VfioContainer> container) {
  if (container == nullptr) return absl::InvalidArgumentError("OdpVfioBackend: null container");
  return std::shared_ptr<OdpVfioBackend>(new OdpVfioBackend(std::move(container)));
}

absl::StatusOr<OdpWindow> OdpVfioBackend::ReserveWindow(uintptr_t va, uint64_t length,
                                                        AccessFlags /*max_access*/) {
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  if (length == 0 || length % page != 0 || va % page != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: window for va %#x + %#x: not whole pages", name_, va, length));
  }
  const VfioContainerInfo info = container_->info();
  const uint64_t chunk = ChooseChunk(length, info.dma_avail.value_or(kDefaultDmaEntries), page);
  // Aligned to the chunk (capped at 2 MiB, so narrow spaces still fit).
  const uint64_t alignment = std::min<uint64_t>(chunk, 2 << 20);
  absl::StatusOr<Range> iova = container_->ReserveIova(length, alignment);
  if (!iova.ok()) {
    return absl::Status(iova.status().code(), absl::StrCat(name_, ": window for ", length,
                                                           " bytes: ", iova.status().message()));
  }
  odp_internal::MutexLock lock(&impl_->mu);
  const uint64_t handle = impl_->next_handle++;
  impl_->windows[handle] = OdpVfioWindow{va, *iova, chunk, {}, {}};
  OdpWindow w;
  w.va = va;
  w.iova = iova->begin();
  w.length = length;
  w.handle = handle;
  return w;
}

void OdpVfioBackend::ReleaseWindow(OdpWindow& window) {
  odp_internal::MutexLock lock(&impl_->mu);
  auto it = impl_->windows.find(window.handle);
  if (it == impl_->windows.end()) return;
  OdpVfioWindow& w = it->second;
  for (const auto& [offset, length] : w.lengths) {
    (void)container_->Unmap(w.iova.begin() + offset, length);
  }
  (void)container_->ReleaseIova(w.iova);
  impl_->windows.erase(it);
  window.handle = 0;
}

uint64_t OdpVfioBackend::ChunkBytes(const OdpWindow& window) const {
  odp_internal::MutexLock lock(&impl_->mu);
  auto it = impl_->windows.find(window.handle);
  return it == impl_->windows.end() ? 0 : it->second.chunk;
}

absl::Status OdpVfioBackend::Link(OdpWindow& window, uint64_t offset, uint64_t length, bool write) {
  odp_internal::MutexLock lock(&impl_->mu);
  auto it = impl_->windows.find(window.handle);
  if (it == impl_->windows.end()) {
    return absl::NotFoundError(absl::StrCat(name_, ": no window ", window.handle));
  }
  OdpVfioWindow& w = it->second;
  if (length == 0 || offset % w.chunk != 0 || offset >= w.iova.length() ||
      length > w.iova.length() - offset) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: link of [%#x, +%#x) in a window of %#x bytes", name_, offset, length,
                        w.iova.length()));
  }
  auto linked = w.linked.find(offset);
  if (linked != w.linked.end()) {
    if (linked->second || !write) return absl::OkStatus();
    // Upgrade: type1 cannot change a mapping's rights; unmap, map writable.
    if (absl::Status st = container_->Unmap(w.iova.begin() + offset, w.lengths[offset]); !st.ok()) {
      return st;
    }
    w.linked.erase(linked);
    w.lengths.erase(offset);
  }
  if (absl::Status st = container_->Map(w.va + offset, w.iova.begin() + offset, length, write);
      !st.ok()) {
    return st;
  }
  w.linked[offset] = write;
  w.lengths[offset] = length;
  return absl::OkStatus();
}

absl::Status OdpVfioBackend::Unlink(OdpWindow& window, uint64_t offset, uint64_t length) {
  odp_internal::MutexLock lock(&impl_->mu);
  auto it = impl_->windows.find(window.handle);
  if (it == impl_->windows.end()) {
    return absl::NotFoundError(absl::StrCat(name_, ": no window ", window.handle));
  }
  OdpVfioWindow& w = it->second;
  auto len = w.lengths.find(offset);
  if (len == w.lengths.end()) return absl::OkStatus();  // not linked: nothing to undo
  if (len->second != length) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: unlink of [%#x, +%#x): the chunk there is %#x bytes", name_, offset,
                        length, len->second));
  }
  if (absl::Status st = container_->Unmap(w.iova.begin() + offset, length); !st.ok()) return st;
  w.lengths.erase(len);
  w.linked.erase(offset);
  return absl::OkStatus();
}

size_t OdpVfioBackend::windows() const {
  odp_internal::MutexLock lock(&impl_->mu);
  return impl_->windows.size();
}

size_t OdpVfioBackend::linked_chunks() const {
  odp_internal::MutexLock lock(&impl_->mu);
  size_t n = 0;
  for (const auto& [h, w] : impl_->windows) n += w.lengths.size();
  return n;
}

}  // namespace dmareg
