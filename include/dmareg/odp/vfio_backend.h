// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// odp/vfio_backend.h: the VFIO backend of the on-demand IOVA cache (component
// `odp`). A window is IOVA space reserved from the container's allocator
// (VfioContainer::ReserveIova); a chunk is linked by mapping it at its fixed
// IOVA (VfioContainer::Map) and unlinked by unmapping it. An upgrade to
// writable is an unmap and a writable map (type1 cannot change a mapping's
// rights); a chunk whose link fails is left unlinked.
//
//   auto container = dmareg::VfioContainer::Open().value();
//   auto edu = dmareg::VfioDomain::Open("0000:00:03.0", {.container = container,
//                                                        .dma_address_bits = 28}).value();
//   auto backend = dmareg::OdpVfioBackend::Create(container).value();
//   auto region = dmareg::OdpRegion::Create(backend, buf, len,
//                                           dmareg::Access::kLocalWrite).value();
//
// Chunks are sized against the container's dma_avail when the window is
// reserved (see ChunkBytes in the .cc). Thread safety: every method may be
// called from several threads (one mutex, taken before the container's).

#ifndef DMAREG_ODP_VFIO_BACKEND_H_
#define DMAREG_ODP_VFIO_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dmareg/odp/odp_region.h"
#include "dmareg/vfio/vfio_domain.h"

#pragma GCC visibility push(default)

namespace dmareg {

class OdpVfioBackend final : public OdpBackend {
 public:
  // InvalidArgument for a null container. Windows need a group attached.
  static absl::StatusOr<std::shared_ptr<OdpVfioBackend>> Create(
      std::shared_ptr<VfioContainer> container);
  ~OdpVfioBackend() override;

  const std::string& name() const override { return name_; }
  absl::StatusOr<OdpWindow> ReserveWindow(uintptr_t va, uint64_t length,
                                          AccessFlags max_access) override;
  void ReleaseWindow(OdpWindow& window) override;
  uint64_t ChunkBytes(const OdpWindow& window) const override;
  absl::Status Link(OdpWindow& window, uint64_t offset, uint64_t length, bool write) override;
  absl::Status Unlink(OdpWindow& window, uint64_t offset, uint64_t length) override;

  const std::shared_ptr<VfioContainer>& container() const { return container_; }
  size_t windows() const;        // reserved now
  size_t linked_chunks() const;  // container mappings made by this backend, now

 private:
  explicit OdpVfioBackend(std::shared_ptr<VfioContainer> container);

  const std::shared_ptr<VfioContainer> container_;
  const std::string name_;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_ODP_VFIO_BACKEND_H_
