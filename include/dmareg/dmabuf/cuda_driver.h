// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// dmabuf/cuda_driver.h: the CUDA driver API, loaded at run time (component
// `dmabuf`). libcuda is dlopen()ed, so dmareg builds and runs where no CUDA is
// installed; a machine without it gets a clear NotFound. The exporter
// (dmabuf/cuda_exporter.h) and the GPU front door (dmabuf/gpu_cache.h) use it.
//
//   auto driver = dmareg::CudaDriver::Load();      // NotFound: no libcuda
//   if (!driver.ok()) return driver.status();

#ifndef DMAREG_DMABUF_CUDA_DRIVER_H_
#define DMAREG_DMABUF_CUDA_DRIVER_H_

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#pragma GCC visibility push(default)

namespace dmareg {

namespace internal {
struct CudaApi;
}

struct CudaDriverOptions {
  // The library to load. Empty: $DMAREG_LIBCUDA if set, else libcuda.so.1.
  std::string library{};
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

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_DMABUF_CUDA_DRIVER_H_
