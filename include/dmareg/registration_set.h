// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// registration_set.h: one buffer on several devices at once.
//
// A transfer engine with N NICs registers each buffer on all of them (one
// export of a GPU buffer, imported by every NIC). `AcquireOnAll` asks every
// cache in parallel threads (registrations of large buffers take
// milliseconds to seconds each) and returns one handle with the per-device
// keys. It is all or nothing: if any device refuses, the registrations this
// call made on the others are retired before the error returns, so a failure
// leaves nothing registered that was not cached before.
//
//   std::vector<dmareg::RegistrationCache*> nics = {cache0.get(), cache1.get()};
//   absl::StatusOr<dmareg::RegistrationSet> set = dmareg::AcquireOnAll(
//       nics, dmareg::DmaBufMemory{.fd = fd, .offset = 0, .length = size},
//       dmareg::Access::kLocalWrite | dmareg::Access::kRemoteRead);
//   if (!set.ok()) return set.status();
//   for (size_t i = 0; i < set->size(); ++i) post_on(i, (*set)[i].lkey());

#ifndef DMAREG_REGISTRATION_SET_H_
#define DMAREG_REGISTRATION_SET_H_

#include <cstddef>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "dmareg/access.h"
#include "dmareg/cache.h"
#include "dmareg/dmabuf_id.h"
#include "dmareg/memory.h"
#include "dmareg/registration.h"

#pragma GCC visibility push(default)

namespace dmareg {

// One Registration per cache, in the order the caches were given. Movable;
// dropping it drops every reference.
class RegistrationSet {
 public:
  RegistrationSet() = default;
  explicit RegistrationSet(std::vector<Registration> regs) : regs_(std::move(regs)) {}

  size_t size() const { return regs_.size(); }
  const Registration& operator[](size_t i) const { return regs_[i]; }
  absl::Span<const Registration> registrations() const { return regs_; }

 private:
  std::vector<Registration> regs_;
};

struct SetOptions {
  // Register on the devices that miss in parallel threads (one per device
  // past the first); false: one after the other on the calling thread.
  bool parallel = true;
};

// InvalidArgument for no caches or a null one; otherwise the first refusal
// (in cache order), naming its device, with nothing left registered by
// this call.
absl::StatusOr<RegistrationSet> AcquireOnAll(absl::Span<RegistrationCache* const> caches,
                                             const HostMemory& memory, AccessFlags access,
                                             SetOptions options = {});
absl::StatusOr<RegistrationSet> AcquireOnAll(absl::Span<RegistrationCache* const> caches,
                                             const DmaBufMemory& memory, AccessFlags access,
                                             SetOptions options = {});
// [offset, offset + length) of an imported dma-buf on every cache: one
// import, no system call on the hits.
absl::StatusOr<RegistrationSet> AcquireOnAll(absl::Span<RegistrationCache* const> caches,
                                             const ImportedDmaBuf& buffer, uint64_t offset,
                                             size_t length, AccessFlags access,
                                             SetOptions options = {});

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_REGISTRATION_SET_H_
