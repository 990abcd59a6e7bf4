// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// odp/verbs_backend.h: the verbs backends of the on-demand IOVA cache (component
// `odp`, where the verbs backend is built). A window's IOVA is its virtual
// address (verbs IOVAs are per MR, so windows never collide).
//
// OdpVerbsBackend, for NICs with ODP for RC: one on-demand MR per window
// (IBV_ACCESS_ON_DEMAND; the NIC faults pages in itself, so Unlink costs
// nothing); Link is a prefetch: ibv_advise_mr where the provider has it,
// else a CPU pre-touch (MADV_POPULATE_READ/WRITE: the pages are faulted in,
// no byte changes). Windows that need no remote access share one implicit
// ODP MR where the device offers it (IBV_ODP_SUPPORT_IMPLICIT); an implicit
// MR's rkey would open the whole address space, so remote windows always
// get their own MR.
//
// OdpVerbsPinnedBackend, for NICs without ODP: a pinned MR over the whole
// window at the window's IOVA (ibv_reg_mr_iova2); Unlink deregisters it and
// the next Link registers again at the SAME IOVA with new keys.
//
//   auto domain = dmareg::VerbsDomain::Open("rxe0").value();
//   std::shared_ptr<dmareg::OdpBackend> backend;
//   if (domain->capabilities().on_demand_paging) {
//     backend = dmareg::OdpVerbsBackend::Create(domain).value();
//   } else {
//     backend = dmareg::OdpVerbsPinnedBackend::Create(domain).value();
//   }
//   auto region = dmareg::OdpRegion::Create(backend, buf, len,
//                                           dmareg::Access::kRemoteWrite).value();
//   (void)region->Fault(buf, len, /*write=*/true);  // then region->rkey(), IovaFor
//
// Thread safety: every method may be called from several threads (one
// mutex per backend; windows of several regions may share a backend).

#ifndef DMAREG_ODP_VERBS_BACKEND_H_
#define DMAREG_ODP_VERBS_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dmareg/odp/odp_region.h"
#include "dmareg/verbs/verbs_domain.h"

#pragma GCC visibility push(default)

namespace dmareg {

class OdpVerbsBackend final : public OdpBackend {
 public:
  // How Link brought pages in (the first Link decides).
  enum class Prefetch { kNone, kAdviseMr, kCpuTouch };

  // InvalidArgument for a null domain; FailedPrecondition where the device
  // reports no ODP for RC (use OdpVerbsPinnedBackend there).
  static absl::StatusOr<std::shared_ptr<OdpVerbsBackend>> Create(
      std::shared_ptr<VerbsDomain> domain);
  ~OdpVerbsBackend() override;

  const std::string& name() const override { return name_; }
  absl::StatusOr<OdpWindow> ReserveWindow(uintptr_t va, uint64_t length,
                                          AccessFlags max_access) override;
  void ReleaseWindow(OdpWindow& window) override;
  uint64_t ChunkBytes(const OdpWindow& window) const override { return window.length; }
  absl::Status Link(OdpWindow& window, uint64_t offset, uint64_t length, bool write) override;
  absl::Status Unlink(OdpWindow& window, uint64_t offset, uint64_t length) override;
  bool device_faults() const override { return true; }

  Prefetch prefetch() const;
  bool implicit() const;       // an implicit ODP MR serves local-only windows
  int64_t window_mrs() const;  // per-window MRs held now

 private:
  explicit OdpVerbsBackend(std::shared_ptr<VerbsDomain> domain);
  struct Impl;
  const std::shared_ptr<VerbsDomain> domain_;
  const std::string name_;
  std::unique_ptr<Impl> impl_;
};

class OdpVerbsPinnedBackend final : public OdpBackend {
 public:
  // InvalidArgument for a null domain.
  static absl::StatusOr<std::shared_ptr<OdpVerbsPinnedBackend>> Create(
      std::shared_ptr<VerbsDomain> domain);
  ~OdpVerbsPinnedBackend() override;

  const std::string& name() const override { return name_; }
  absl::StatusOr<OdpWindow> ReserveWindow(uintptr_t va, uint64_t length,
                                          AccessFlags max_access) override;
  void ReleaseWindow(OdpWindow& window) override;
  uint64_t ChunkBytes(const OdpWindow& window) const override { return window.length; }
  // Registers the window at its IOVA with its maximum access (a read link
  // is then already writable: an upgrade costs nothing).
  absl::Status Link(OdpWindow& window, uint64_t offset, uint64_t length, bool write) override;
  // Deregisters the window's MR; its keys become 0.
  absl::Status Unlink(OdpWindow& window, uint64_t offset, uint64_t length) override;

  int64_t registrations() const;  // MRs registered so far
  int64_t live_mrs() const;       // held now

 private:
  explicit OdpVerbsPinnedBackend(std::shared_ptr<VerbsDomain> domain);
  struct Impl;
  const std::shared_ptr<VerbsDomain> domain_;
  const std::string name_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_ODP_VERBS_BACKEND_H_
