// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// dmabuf/gpu_cache.h: the GPU front door (component `dmabuf`): export + cache +
// register in one call, on one NIC or several (AcquireOnAll).
//
//   auto exporter = std::make_shared<dmareg::CudaDmaBufExporter>(*driver);
//   auto gpu = dmareg::GpuRegistrationCache::Create(exporter, {cache.get()});
//   if (!gpu.ok()) return gpu.status();
//   absl::StatusOr<dmareg::Registration> reg =
//       (*gpu)->Acquire(device_ptr, 1 << 20, dmareg::Access::kRemoteWrite);

#ifndef DMAREG_DMABUF_GPU_CACHE_H_
#define DMAREG_DMABUF_GPU_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "dmareg/access.h"
#include "dmareg/cache.h"
#include "dmareg/dmabuf/cuda_exporter.h"
#include "dmareg/registration.h"
#include "dmareg/registration_set.h"

#pragma GCC visibility push(default)

namespace dmareg {

// The GPU front door: a device pointer in, a registration out, through one
// exporter and the caches of one or more NICs. Replaced allocations are
// invalidated in every cache (Invalidate) as the exporter reports them.
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

#pragma GCC visibility pop

#endif  // DMAREG_DMABUF_GPU_CACHE_H_
