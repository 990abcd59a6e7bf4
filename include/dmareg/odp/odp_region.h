// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// odp/odp_region.h: an on-demand IOVA cache (component `odp`, library dmareg_odp,
// sources in the top-level odp/ folder).
//
// What Linux does for on-demand-paging MRs (umem_odp, the two-step DMA API),
// in user space: each region gets an IOVA window reserved up front and kept
// for the region's life, so a device may keep using its addresses; pages are
// linked into the window when first touched (a fault or a prefetch) and
// unlinked when the memory monitor says they changed, and the next access
// links the new pages at the SAME IOVA. A table holds one 64-bit word per
// page, in the kernel's layout: the PFN and the VALID, WRITE, ERROR and
// DMA_MAPPED bits.
//
//   auto backend = dmareg::OdpVfioBackend::Create(container).value();
//   auto region = dmareg::OdpRegion::Create(backend, buf, 1 << 30,
//                                           dmareg::Access::kLocalWrite).value();
//   uint64_t iova = region->IovaFor(buf + 4096);           // fixed from now on
//   absl::Status s = region->Fault(buf + 4096, 8192, /*write=*/true);
//   ... the device DMAs at `iova` ...
//   // munmap + mmap at the same address: the monitor (or Invalidate)
//   // unlinks; the next Fault links the new pages at the same IOVA.
//
// Backends (each a small `OdpBackend`):
//   OdpVfioBackend          VFIO: map/unmap at fixed IOVAs in chunks sized
//                           against the container's dma_avail
//   OdpVerbsBackend         verbs with ODP: one on-demand MR per window; the
//                           NIC faults pages itself; Fault is a prefetch
//                           (ibv_advise_mr, else a CPU pre-touch)
//   OdpVerbsPinnedBackend   verbs without ODP: a pinned MR at the window's
//                           IOVA, registered again at the same IOVA after an
//                           invalidation (new keys, same IOVA)
//
// Thread safety: an OdpRegion may be used from several threads (one mutex);
// backends are called under it.

#ifndef DMAREG_ODP_ODP_REGION_H_
#define DMAREG_ODP_ODP_REGION_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dmareg/access.h"
#include "dmareg/monitor.h"

#pragma GCC visibility push(default)

namespace dmareg {

// One page's word in an OdpRegion's table (the kernel's layout).
inline constexpr uint64_t kOdpValid = uint64_t{1} << 63;      // the PFN is current
inline constexpr uint64_t kOdpWrite = uint64_t{1} << 62;      // linked writable
inline constexpr uint64_t kOdpError = uint64_t{1} << 61;      // the last link failed
inline constexpr uint64_t kOdpDmaMapped = uint64_t{1} << 60;  // linked at its IOVA
inline constexpr uint64_t kOdpPfnMask = (uint64_t{1} << 55) - 1;

// A window: the IOVA range a backend reserved for a region's addresses.
struct OdpWindow {
  uintptr_t va = 0;     // first byte of the region (page-aligned)
  uint64_t iova = 0;    // its device address; never changes
  uint64_t length = 0;  // whole pages
  uint32_t lkey = 0;    // verbs keys (0 elsewhere); the pinned backend
  uint32_t rkey = 0;    // changes them when it registers again
  uint64_t handle = 0;  // the backend's own
};

// One device's fixed-IOVA operations. Every call is made with the region's
// lock held; `offset`/`length` are whole chunks inside the window.
class OdpBackend {
 public:
  virtual ~OdpBackend() = default;
  virtual const std::string& name() const = 0;
  // Reserves the window for [va, va + length) that may be linked with at
  // most `max_access`. ResourceExhausted when no IOVA space is left.
  virtual absl::StatusOr<OdpWindow> ReserveWindow(uintptr_t va, uint64_t length,
                                                  AccessFlags max_access) = 0;
  // Unlinks what is still linked and gives the window back.
  virtual void ReleaseWindow(OdpWindow& window) = 0;
  // Pages are linked and unlinked this many bytes at a time (a multiple of
  // the page size; the whole window for a backend that cannot split).
  virtual uint64_t ChunkBytes(const OdpWindow& window) const = 0;
  // Makes [offset, offset + length) of the window reach the pages mapped
  // there now, writable if `write` (an upgrade if it was linked read-only).
  virtual absl::Status Link(OdpWindow& window, uint64_t offset, uint64_t length, bool write) = 0;
  virtual absl::Status Unlink(OdpWindow& window, uint64_t offset, uint64_t length) = 0;
  // True where the device faults pages in itself (verbs ODP): Link is then
  // only a prefetch, and Unlink costs nothing.
  virtual bool device_faults() const { return false; }
};

struct OdpOptions {
  // Read each linked page's PFN from /proc/self/pagemap (visible to
  // CAP_SYS_ADMIN only; elsewhere the table has no PFNs, see pfns_visible).
  bool read_pfns = true;
  // Unmaps of the region reported by this monitor unlink its pages (the
  // region Watches its range). Null: only Invalidate does.
  std::shared_ptr<MemoryMonitor> monitor{};
};

struct OdpStats {
  uint64_t faults = 0;          // Fault calls
  uint64_t linked_pages = 0;    // pages linked now
  uint64_t link_calls = 0;      // backend Link calls
  uint64_t unlink_calls = 0;    // backend Unlink calls
  uint64_t upgrades = 0;        // read-only pages linked again writable
  uint64_t invalidations = 0;   // Invalidate calls and monitor events applied
  uint64_t unlinked_pages = 0;  // pages those unlinked
};

class OdpRegion {
 public:
  // Reserves the window for [addr, addr + length) (rounded out to pages).
  static absl::StatusOr<std::unique_ptr<OdpRegion>> Create(std::shared_ptr<OdpBackend> backend,
                                                           const void* addr, size_t length,
                                                           AccessFlags max_access,
                                                           OdpOptions options = {});
  ~OdpRegion();  // releases the window
  OdpRegion(const OdpRegion&) = delete;
  OdpRegion& operator=(const OdpRegion&) = delete;

  // Links the pages of [addr, addr + length) that are not linked (or only
  // read-only when `write`), after applying the monitor's pending events.
  // InvalidArgument outside the region or for write beyond max_access.
  absl::Status Fault(const void* addr, size_t length, bool write);
  // Unlinks the pages overlapping [addr, addr + length); their IOVAs stay.
  absl::Status Invalidate(const void* addr, size_t length);

  uint64_t iova() const;                  // the window's first IOVA
  uint64_t IovaFor(const void* p) const;  // p inside the region
  uint32_t lkey() const;                  // current keys (verbs)
  uint32_t rkey() const;
  size_t pages() const;
  uint64_t page_entry(size_t i) const;  // the table's word for page i
  bool pfns_visible() const;            // the table holds real PFNs
  size_t table_bytes() const;           // the table's memory: 8 bytes per page
  OdpStats stats() const;
  const OdpBackend& backend() const;

 private:
  struct State;
  explicit OdpRegion(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_ODP_ODP_REGION_H_
