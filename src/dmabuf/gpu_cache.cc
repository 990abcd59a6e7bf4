// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// GpuRegistrationCache: export, cache and register a device pointer in one
// call.

#include "dmareg/dmabuf/gpu_cache.h"

#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "dmareg/dmabuf/cuda_exporter.h"
#include "dmareg/dmabuf/dmabuf.h"
#include "dmareg/registration_set.h"

namespace dmareg {

absl::StatusOr<std::unique_ptr<GpuRegistrationCache>> GpuRegistrationCache::Create(
    std::shared_ptr<CudaDmaBufExporter> exporter, std::vector<RegistrationCache*> caches) {
  if (exporter == nullptr) return absl::InvalidArgumentError("GpuRegistrationCache: no exporter");
  if (caches.empty()) return absl::InvalidArgumentError("GpuRegistrationCache: no caches");
  for (size_t i = 0; i < caches.size(); ++i) {
    if (caches[i] == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrFormat("GpuRegistrationCache: cache %u of %u is null", i, caches.size()));
    }
  }
  return std::unique_ptr<GpuRegistrationCache>(
      new GpuRegistrationCache(std::move(exporter), std::move(caches)));
}

GpuRegistrationCache::GpuRegistrationCache(std::shared_ptr<CudaDmaBufExporter> exporter,
                                           std::vector<RegistrationCache*> caches)
    : exporter_(std::move(exporter)), caches_(std::move(caches)) {
  // A replaced or released allocation's mappings go from every cache: its
  // identity never comes back, so they could only pin dead memory.
  listener_ = exporter_->AddListener([caches = caches_](const DmaBufId& id) {
    for (RegistrationCache* cache : caches) cache->Invalidate(id);
  });
}

GpuRegistrationCache::~GpuRegistrationCache() { exporter_->RemoveListener(listener_); }

absl::StatusOr<Registration> GpuRegistrationCache::Acquire(const void* device_ptr, size_t length,
                                                           AccessFlags access, size_t index) {
  if (index >= caches_.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "GpuRegistrationCache::Acquire: cache %u asked for, %u held", index, caches_.size()));
  }
  absl::StatusOr<CudaDmaBuf> buf = exporter_->Export(device_ptr, length);
  if (!buf.ok()) return buf.status();
  return caches_[index]->Acquire(buf->memory, access);
}

absl::StatusOr<RegistrationSet> GpuRegistrationCache::AcquireOnAll(const void* device_ptr,
                                                                   size_t length,
                                                                   AccessFlags access,
                                                                   SetOptions options) {
  absl::StatusOr<CudaDmaBuf> buf = exporter_->Export(device_ptr, length);
  if (!buf.ok()) return buf.status();
  return dmareg::AcquireOnAll(caches_, buf->memory, access, options);
}

}  // namespace dmareg
