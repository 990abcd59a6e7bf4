// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// dmabuf/cuda_exporter.h: CUDA device memory as dma-bufs (component `dmabuf`):
// device pointer -> dma-buf slice, one export per CUDA allocation, kept and
// reused until the allocation changes (its buffer id).
//
//   auto exporter = std::make_shared<dmareg::CudaDmaBufExporter>(*driver);
//   absl::StatusOr<dmareg::CudaDmaBuf> slice = exporter->Export(device_ptr, 1 << 20);
//
// Device pointers are `const void*` here (a CUdeviceptr cast), as the CUDA
// runtime hands them out.

#ifndef DMAREG_DMABUF_CUDA_EXPORTER_H_
#define DMAREG_DMABUF_CUDA_EXPORTER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dmareg/dmabuf/cuda_driver.h"
#include "dmareg/dmabuf_id.h"
#include "dmareg/memory.h"

#pragma GCC visibility push(default)

namespace dmareg {

struct CudaExporterOptions {
  // DmaBufMemory::alias = the allocation as a CPU pointer, for a fallback
  // host registration where nvidia-peermem lets ibv_reg_mr pin device
  // memory. False: no alias.
  bool peermem_alias = false;
  // When the calling thread has no current context, make the primary
  // context of the pointer's device current (as the CUDA runtime would).
  bool bind_primary_context = true;
};

// One exported slice.
struct CudaDmaBuf {
  DmaBufMemory memory;  // fd owned by the exporter; offset = ptr - base
  uint64_t base = 0;    // the CUDA allocation holding the pointer
  uint64_t allocation_size = 0;
  uint64_t buffer_id = 0;  // CU_POINTER_ATTRIBUTE_BUFFER_ID
  DmaBufId id{};           // the exported dma-buf's identity
};

// Device pointers to dma-buf slices. Exports each CUDA allocation once (the
// whole allocation, page-aligned, as cuMemGetHandleForAddressRange needs)
// and keeps the fd, keyed by the allocation's base. Every Export re-reads
// the allocation's buffer id: a different one at a known base (freed and
// re-made) closes the old fd, tells the listeners the old DmaBufId is gone
// and exports anew, so a cache keyed by identity misses, never hits stale.
// Thread-safe. The fd in a result stays open until the allocation changes,
// Release is called or the exporter goes.
class CudaDmaBufExporter {
 public:
  explicit CudaDmaBufExporter(std::shared_ptr<CudaDriver> driver, CudaExporterOptions options = {});
  ~CudaDmaBufExporter();  // closes every fd it holds
  CudaDmaBufExporter(const CudaDmaBufExporter&) = delete;
  CudaDmaBufExporter& operator=(const CudaDmaBufExporter&) = delete;

  // InvalidArgument for null, zero length, wrapping, a pointer that is not
  // device memory (naming the CUDA error) or a range past the allocation's
  // end; the export's own error otherwise (naming the call and the size).
  absl::StatusOr<CudaDmaBuf> Export(const void* device_ptr, size_t length);
  // Closes the export of the allocation holding `device_ptr` (call it
  // before cuMemFree) and tells the listeners. NotFound if none is held.
  absl::Status Release(const void* device_ptr);

  // Called with the identity of every export closed (replaced, released,
  // or the exporter going). Called without the exporter's lock held.
  using Listener = std::function<void(const DmaBufId&)>;
  uint64_t AddListener(Listener listener);
  // After it returns the listener is not running and will not run.
  void RemoveListener(uint64_t token);

  size_t exported_allocations() const;
  uint64_t exports() const;  // cuMemGetHandleForAddressRange calls made
  CudaDriver& driver() const { return *driver_; }

 private:
  struct State;
  void Notify(const std::vector<DmaBufId>& gone);

  std::shared_ptr<CudaDriver> driver_;
  CudaExporterOptions options_;
  std::unique_ptr<State> state_;
};

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_DMABUF_CUDA_EXPORTER_H_
