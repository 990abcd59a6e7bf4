// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// vfio/vfio_container.h: one IOMMU address space of the VFIO backend (component
// `vfio`): the table of what is mapped in it (the source of truth: the kernel
// cannot be asked), the IOVA allocator for callers that name none, and the
// replay of the table when a group joins an empty container. Devices join
// it through VfioDomain (vfio/vfio_domain.h); several may share one.
//
//   auto c = dmareg::VfioContainer::Open().value();
//   auto edu = dmareg::VfioDomain::Open("0000:00:03.0", {.container = c});
//
// Thread safety: every method may be called from several threads at once.

#ifndef DMAREG_VFIO_VFIO_CONTAINER_H_
#define DMAREG_VFIO_VFIO_CONTAINER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dmareg/range.h"

#pragma GCC visibility push(default)

namespace dmareg {

namespace internal {
class ContainerFdProvider;  // serves the container to other processes (vfio_fd_sharing.h)
}  // namespace internal
class VfioOps;  // the seam over the kernel: dmareg/vfio/vfio_ops.h

struct VfioContainerOptions {
  // The kernel's calls go through these; null: KernelVfioOps(). Every
  // domain opened into the container uses the same ones.
  std::shared_ptr<VfioOps> ops;
};

// One entry of a container's mapping table (the source of truth).
struct VfioMapping {
  uint64_t va = 0;
  uint64_t iova = 0;
  uint64_t length = 0;
  bool writable = false;
  uint32_t refs = 0;
};

struct VfioContainerInfo {
  int iommu_type = 0;  // VFIO_TYPE1v2_IOMMU (3) or VFIO_TYPE1_IOMMU (1); 0 = not set yet
  std::vector<Range> iova_ranges;  // VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE; empty = kernel gave none
  std::optional<uint32_t> dma_avail;  // VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL (when the IOMMU was set)
  uint64_t page_sizes = 0;            // iova_pgsizes
};

// "type1v2" (VFIO_TYPE1v2_IOMMU), "type1" (VFIO_TYPE1_IOMMU), "unset" (0),
// else "unknown": VfioContainerInfo::iommu_type as a word.
std::string_view IommuTypeName(int iommu_type);

// A VFIO container: one IOMMU address space shared by the groups attached to
// it. No hidden per-process default: the caller creates one and opens every
// device into it ("one per process", as DPDK does, is the caller's choice).
//
//   auto c = dmareg::VfioContainer::Open().value();
//   ... VfioDomain::Open(address, {.container = c}) ...
//   c->Map(va, iova, len, /*writable=*/true);     // whole IOMMU pages
//   c->Unmap(iova, len);                          // the exact extent
class VfioContainer {
 public:
  // /dev/vfio/vfio, API version checked, type1v2 (else type1) supported.
  static absl::StatusOr<std::shared_ptr<VfioContainer>> Open(VfioContainerOptions options = {});
  // Secondary process: adopts a container fd received from a primary
  // (ownership taken, also on failure); its IOMMU type is already set
  // (`iommu_type` as the primary told). Its table starts empty (this
  // process's maps).
  static absl::StatusOr<std::shared_ptr<VfioContainer>> Adopt(int container_fd, int iommu_type,
                                                              VfioContainerOptions options = {});
  // A container the application opened itself (/dev/vfio/vfio), borrowed:
  // dmareg never closes `container_fd`, which must stay open until the
  // container and every domain and cache over it are gone (as a wrapped
  // VerbsDomain's PD must). Either bare (no group yet: the first VfioDomain
  // to join sets the IOMMU, `iommu_type` or the best the kernel offers) or
  // already set up (groups joined and the IOMMU type set; `iommu_type` says
  // which, 0 = type1v2 where the kernel offers it: the kernel cannot be
  // asked). A domain for a device whose group the application already
  // joined needs that group's fd (VfioDomainOptions::group_fd, a dup: it is
  // taken), as /dev/vfio/N opens once. The table starts empty: the kernel
  // cannot list mappings, so what the application mapped itself is unknown
  // to dmareg; a map overlapping it is refused by the kernel (EEXIST), and
  // reported as AlreadyExists saying so. dmareg unmaps all it mapped when
  // its domains and caches go, so the application's dma_avail is back
  // where it was. InvalidArgument for a negative fd or a type that is not
  // type1/type1v2; the ioctl's errno for an fd that is not a VFIO container.
  static absl::StatusOr<std::shared_ptr<VfioContainer>> Wrap(int container_fd, int iommu_type = 0,
                                                             VfioContainerOptions options = {});

  // Closes the container fd (the kernel then drops its mappings) unless it
  // was wrapped (then the application's). Domains hold their container, so
  // it outlives them.
  ~VfioContainer();
  VfioContainer(const VfioContainer&) = delete;
  VfioContainer& operator=(const VfioContainer&) = delete;

  int fd() const { return fd_; }
  // What the container (and every domain in it) calls the kernel through.
  const std::shared_ptr<VfioOps>& ops() const { return ops_; }
  bool owns_fd() const { return owns_fd_; }  // false: made by Wrap
  bool iommu_set() const;                    // a group attached and the IOMMU type set
  // Refreshed (dma_avail re-read) on each call when set.
  VfioContainerInfo info() const;

  // Maps [va, va+length) at iova. First the rules of a caller's IOVA
  // (CheckIovaPlacement, dmareg/domain.h, with the container's IOMMU: whole
  // IOMMU pages, else InvalidArgument; inside its IOVA ranges, else
  // OutOfRange; no DMA mask: a device's is its VfioDomain's). Then:
  //  - identical (va, iova, length, writable) again: success, one more
  //    reference (Unmap drops one; the kernel unmap happens at 0), whoever
  //    made the first (this, a VfioDomain, a registry's DmaMap over one);
  //  - any other overlap of the IOVA range with the table: AlreadyExists
  //    naming both mappings, no kernel call;
  //  - kernel EEXIST with no table entry (e.g. another process sharing the
  //    container): AlreadyExists saying so;
  //  - ENOSPC: ResourceExhausted naming dma_avail/dma_entry_limit;
  //  - not writable: mapped read-only (VFIO_DMA_MAP_FLAG_READ only);
  //  - no group attached yet: recorded in the table (the ranges are not
  //    known yet), applied when the first group attaches (checked then
  //    against its ranges; if that fails, the attach fails).
  absl::Status Map(uint64_t va, uint64_t iova, uint64_t length, bool writable);
  // Exact extent of one table entry; a partial unmap (type1 cannot split) is
  // InvalidArgument saying so, nothing changed. NotFound for no entry.
  // Drops one reference Map took if there is one, else one a VfioDomain
  // holds (whose Deregister of it is then NotFound).
  absl::Status Unmap(uint64_t iova, uint64_t length);
  std::vector<VfioMapping> mappings() const;  // sorted by iova
  std::vector<int> groups() const;            // attached group numbers

  // The IOVA allocator's window: the IOMMU's ranges below the narrowest DMA
  // mask of any device that has joined (empty before the IOMMU is set).
  // Automatic picks always land there, so every device of the container can
  // reach them (see the .cc for why one allocator and not one per mask).
  std::vector<Range> allocator_ranges() const;
  int allocator_address_bits() const;

  // Reserves `length` bytes (rounded up to IOMMU pages) of IOVA space from
  // the allocator, at a multiple of `alignment` (0: the IOMMU page), for
  // the caller to Map into at fixed IOVAs (an on-demand window). Automatic
  // picks (MapAnywhere, IOVA = VA) never land inside a reserved range.
  // FailedPrecondition before a group has joined; ResourceExhausted when no
  // space is left.
  absl::StatusOr<Range> ReserveIova(uint64_t length, uint64_t alignment = 0);
  // Gives back exactly a range ReserveIova returned (its mappings are the
  // caller's to unmap first). NotFound for anything else.
  absl::Status ReleaseIova(Range iova);
  std::vector<Range> reserved_iova() const;  // sorted

 private:
  friend class VfioDomain;
  friend class internal::ContainerFdProvider;
  struct State;

  // The IOMMU is set on `c` (adopted or wrapped): read its info and build
  // the allocator.
  static absl::Status ReadAdoptedInfo(VfioContainer& c, int iommu_type);
  VfioContainer(std::shared_ptr<VfioOps> ops, int fd, int preferred_type, bool owns_fd = true);

  // For VfioDomain. Joins `group_fd` (group number `group`) to the container
  // (VFIO_GROUP_SET_CONTAINER unless `already_joined`): the first group sets
  // the IOMMU type, reads the info and applies the table; on any failure the
  // group is taken out again and nothing changed. `address_bits`: the
  // device's DMA mask, narrowing the allocator's window.
  absl::Status AttachGroup(int group_fd, int group, int address_bits, bool already_joined);
  // VFIO_GROUP_UNSET_CONTAINER; the last group out empties the kernel's
  // mappings (the table is kept for the next attach).
  absl::Status DetachGroup(int group_fd, int group);
  // The map path of VfioDomain, whose lock is not held: this container's
  // lock alone orders a map against an attach or a detach. `holder` is the
  // domain: the reference taken is its own.
  //
  // Map for a request VfioDomain::RegisterHost has validated
  // (CheckIovaPlacement with the domain's capabilities, which are the
  // container's ranges clipped to its mask): the table's rules only, so
  // nothing is checked twice.
  absl::Status MapValidated(uint64_t va, uint64_t iova, uint64_t length, bool writable,
                            const void* holder);
  // Maps whole IOMMU pages (the domain checked) with no caller IOVA: IOVA =
  // VA when free, inside the ranges and below 2^address_bits, else the
  // allocator's pick. Returns the IOVA.
  absl::StatusOr<uint64_t> MapAnywhere(uint64_t va, uint64_t length, bool writable,
                                       int address_bits, const void* holder);
  // Drops one of `holder`'s references to exactly [iova, iova + length):
  // NotFound when nothing is mapped there or `holder` holds none of it,
  // InvalidArgument for anything but a whole entry; nothing changes then.
  absl::Status UnmapHeld(uint64_t iova, uint64_t length, const void* holder);
  // Drops every reference `holder` still holds (a domain that goes); an
  // entry left with none is unmapped.
  void ReleaseHolder(const void* holder);
  // The table's part of Map and MapValidated; the lock is held.
  absl::Status MapLocked(uint64_t va, uint64_t iova, uint64_t length, bool writable,
                         const void* holder);
  // The table's part of Unmap and UnmapHeld; the lock is held. `holder`:
  // whose reference goes; `any`: another's when it holds none.
  absl::Status UnmapLocked(uint64_t iova, uint64_t length, const void* holder, bool any);
  // A close-on-exec duplicate of attached group `group`'s fd, made under
  // the lock so a concurrent Detach cannot close it in between; NotFound
  // when the group is not attached here.
  absl::StatusOr<int> DupGroupFd(int group) const;
  // The IOMMU type set on the container; FailedPrecondition before it is.
  absl::StatusOr<int> IommuType() const;

  const std::shared_ptr<VfioOps> ops_;
  const int fd_;
  const bool owns_fd_;
  // The table, groups, info and allocator: src/vfio/vfio_container.cc (the
  // table's calls: src/vfio/container_mappings.cc).
  // Lock order: ExternalMemoryRegistry's lock, then VfioDomain's (held only
  // on its attach path: Open, Detach, Reattach, its destructor), then this
  // one, then the allocator's (a leaf). The map path (RegisterHost,
  // Deregister, DmaMap over a VFIO domain) takes the registry's and this
  // one only. Held across the kernel calls so the table and the kernel
  // change together.
  std::unique_ptr<State> state_;
};

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_VFIO_VFIO_CONTAINER_H_
