// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The C API's handles alive now, so that closing one twice, or closing a
// pointer that never was one, is a warning and nothing else instead of a
// double free (free() gives C programmers no such mercy; a registration
// layer that many libraries share should).
//
//   *out = LiveHandles::New<dmareg_reg>(*std::move(reg));   // may throw std::bad_alloc
//   ...
//   LiveHandles::Delete(reg, "dmareg_release");   // warned if not live
//
// Process-wide: a handle is a pointer, valid in every thread, and may be
// released by a thread that never saw it made. Sharded by address, so
// threads releasing different handles rarely meet on a lock.
#ifndef DMAREG_SRC_CAPI_LIVE_HANDLES_H_
#define DMAREG_SRC_CAPI_LIVE_HANDLES_H_

#include <memory>
#include <utility>

namespace dmareg::internal::LiveHandles {

void Add(const void* handle);
// True if `handle` was live (and now is not); false, after a warning naming
// `call`, if it was not (released already, or never made).
bool Remove(const void* handle, const char* call);

// A handle of type H made from `args` (aggregate initialisation), live.
template <typename H, typename... Args>
H* New(Args&&... args) {
  auto handle = std::unique_ptr<H>(new H{std::forward<Args>(args)...});
  Add(handle.get());
  return handle.release();
}

// Deletes `handle` if it is live; nothing for null, a warning naming `call`
// for one that is not.
template <typename H>
void Delete(H* handle, const char* call) {
  if (handle != nullptr && Remove(handle, call)) delete handle;
}

}  // namespace dmareg::internal::LiveHandles

#endif  // DMAREG_SRC_CAPI_LIVE_HANDLES_H_
