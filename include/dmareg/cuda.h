// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// cuda.h: CUDA device memory as dma-bufs (component `dmabuf`).
//
// libcuda is loaded at run time (dlopen), so dmareg builds and runs where no
// CUDA is installed; a machine without it gets a clear NotFound. Three parts:
//
//   CudaDriver             the driver API entry points dmareg uses
//   CudaDmaBufExporter     device pointer -> dma-buf slice, one export per
//                          CUDA allocation, kept and reused until the
//                          allocation changes (its buffer id)
//   GpuRegistrationCache   export + cache + register in one call, on one
//                          NIC or several (AcquireOnAll)
//
//   auto driver = dmareg::CudaDriver::Load();      // NotFound: no libcuda
//   if (!driver.ok()) return driver.status();
//   auto exporter = std::make_shared<dmareg::CudaDmaBufExporter>(*driver);
//   auto gpu = dmareg::GpuRegistrationCache::Create(exporter, {cache.get()});
//   if (!gpu.ok()) return gpu.status();
//   absl::StatusOr<dmareg::Registration> reg =
//       (*gpu)->Acquire(device_ptr, 1 << 20, dmareg::Access::kRemoteWrite);
//
// Device pointers are `const void*` here (a CUdeviceptr cast), as the CUDA
// runtime hands them out.

#ifndef DMAREG_CUDA_H_
#define DMAREG_CUDA_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dmareg/access.h"
#include "dmareg/cache.h"
#include "dmareg/dmabuf_id.h"
#include "dmareg/memory.h"
#include "dmareg/registration.h"
#include "dmareg/registration_set.h"

namespace dmareg {

namespace internal {
struct CudaApi;
}

struct CudaDriverOptions {
  // The library to load. Empty: $DMAREG_LIBCUDA if set, else libcuda.so.1.
  std::string library;
};

// The loaded driver. Shared by exporters; unloaded with its last owner.
class CudaDriver {
 public:
  // dlopen + dlsym of every entry point + cuInit(0). NotFound naming the
  // library (and dlerror) when it does not load; FailedPrecondition naming
  // the first missing entry point (a driver too old for dma-buf export) or
  // cuInit's error (no device, driver not loaded).
  static absl::StatusOr<std::shared_ptr<CudaDriver>> Load(CudaDriverOptions options = {});
  ~CudaDriver();
  CudaDriver(const CudaDriver&) = delete;
  CudaDriver& operator=(const CudaDriver&) = delete;

  const std::string& library() const { return library_; }
  // cuDriverGetVersion: 1000 * major + 10 * minor (13000 is CUDA 13.0).
  int version() const { return version_; }
  std::string VersionString() const;  // "13.0"

  int DeviceCount() const;
  std::string DeviceName(int ordinal) const;  // "" if it cannot be read
  // CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED of device `ordinal`.
  absl::StatusOr<bool> DmaBufSupported(int ordinal) const;
  // Makes device `ordinal`'s primary context current on this thread
  // (retained once per driver, released when it goes).
  absl::Status UsePrimaryContext(int ordinal);

  struct AllocationRange {
    uint64_t base = 0;
    uint64_t size = 0;
  };
  // The allocation holding `ptr` (cuMemGetAddressRange). InvalidArgument
  // naming the CUDA error when `ptr` is not device memory.
  absl::StatusOr<AllocationRange> GetAllocation(uint64_t ptr) const;
  // CU_POINTER_ATTRIBUTE_BUFFER_ID: unique per allocation for the life of
  // the process (a freed and re-made allocation at one address differs).
  absl::StatusOr<uint64_t> GetBufferId(uint64_t ptr) const;
  // CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL.
  absl::StatusOr<int> GetDeviceOrdinal(uint64_t ptr) const;
  // True when this thread has a current context.
  bool HasCurrentContext() const;
  // cuMemGetHandleForAddressRange(DMA_BUF_FD) of [base, base + size), both
  // page-aligned. The fd is the caller's.
  absl::StatusOr<int> ExportDmaBuf(uint64_t base, uint64_t size) const;

  // For tests and examples: cuMemAlloc, cuMemFree, cuMemcpyHtoD/DtoH, in
  // the current context.
  absl::StatusOr<uint64_t> Allocate(size_t size) const;
  absl::Status Free(uint64_t ptr) const;
  absl::Status CopyToDevice(uint64_t dst, const void* src, size_t size) const;
  absl::Status CopyFromDevice(void* dst, uint64_t src, size_t size) const;

 private:
  CudaDriver(void* handle, std::string library, std::unique_ptr<internal::CudaApi> api);

  void* handle_;
  std::string library_;
  std::unique_ptr<internal::CudaApi> api_;
  int version_ = 0;
  std::mutex mu_;
  std::vector<int> retained_;  // guarded by mu_: devices whose primary context we hold
};

// What `dmareg devices` and ProbeDmaBufSources say about CUDA.
struct CudaProbe {
  bool available = false;  // libcuda loads, exports dma-bufs, >= 1 device can
  std::string detail;      // "driver 13.0, 1 device: NVIDIA H200 (dma-buf: yes)" or why not
};
CudaProbe ProbeCuda(CudaDriverOptions options = {});

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
  DmaBufId id;             // the exported dma-buf's identity
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

// The GPU front door: a device pointer in, a registration out, through one
// exporter and the caches of one or more NICs. Replaced allocations are
// invalidated in every cache (InvalidateDmaBuf) as the exporter reports them.
class GpuRegistrationCache {
 public:
  // InvalidArgument for a null exporter, no caches or a null one.
  static absl::StatusOr<std::unique_ptr<GpuRegistrationCache>> Create(
      std::shared_ptr<CudaDmaBufExporter> exporter, std::vector<RegistrationCache*> caches);
  ~GpuRegistrationCache();
  GpuRegistrationCache(const GpuRegistrationCache&) = delete;
  GpuRegistrationCache& operator=(const GpuRegistrationCache&) = delete;

  // Export, then Acquire on cache `index` (the first by default).
  absl::StatusOr<Registration> Acquire(const void* device_ptr, size_t length, AccessFlags access,
                                       size_t index = 0);
  // One export, registered on every cache (all or nothing, registration_set.h).
  absl::StatusOr<RegistrationSet> AcquireOnAll(const void* device_ptr, size_t length,
                                               AccessFlags access, SetOptions options = {});

  CudaDmaBufExporter& exporter() const { return *exporter_; }

 private:
  GpuRegistrationCache(std::shared_ptr<CudaDmaBufExporter> exporter,
                       std::vector<RegistrationCache*> caches);
  std::shared_ptr<CudaDmaBufExporter> exporter_;
  std::vector<RegistrationCache*> caches_;
  uint64_t listener_ = 0;
};

}  // namespace dmareg

#endif  // DMAREG_CUDA_H_
