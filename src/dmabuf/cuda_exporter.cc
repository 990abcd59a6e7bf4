// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// CudaDmaBufExporter: one dma-buf per CUDA allocation, replaced when the
// allocation at its address changes.

#include "dmareg/dmabuf/cuda_exporter.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <iterator>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "base/mutex.h"
#include "dmareg/dmabuf/cuda_driver.h"
#include "dmareg/dmabuf/dmabuf.h"
#include "dmareg/errno_status.h"

namespace dmareg {

namespace {

uint64_t PageRoundUp(uint64_t n) {
  const auto page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  return (n + page - 1) / page * page;
}

}  // namespace

struct CudaDmaBufExporter::State {
  struct Export {
    int fd = -1;        // owned
    uint64_t size = 0;  // the allocation's size (the export is page-rounded)
    uint64_t buffer_id = 0;
    DmaBufId id;
  };
  internal::Mutex mu;
  std::map<uint64_t, Export> by_base ABSL_GUARDED_BY(mu);  // allocation base -> export
  uint64_t exports ABSL_GUARDED_BY(mu) = 0;

  // Separate from `mu`: listeners run without it, and RemoveListener waits
  // for a running one by taking this.
  internal::Mutex listeners_mu;
  std::map<uint64_t, Listener> listeners ABSL_GUARDED_BY(listeners_mu);
  uint64_t next_token ABSL_GUARDED_BY(listeners_mu) = 1;

  // Closes every export overlapping [base, base + size) and records its id.
  void DropOverlapping(uint64_t base, uint64_t size, std::vector<DmaBufId>& gone)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    auto it = by_base.upper_bound(base);
    if (it != by_base.begin()) {
      auto prev = std::prev(it);
      if (prev->first + prev->second.size > base) it = prev;
    }
    while (it != by_base.end() && it->first < base + size) {
      close(it->second.fd);
      gone.push_back(it->second.id);
      it = by_base.erase(it);
    }
  }
};

CudaDmaBufExporter::CudaDmaBufExporter(std::shared_ptr<CudaDriver> driver,
                                       CudaExporterOptions options)
    : driver_(std::move(driver)), options_(options), state_(std::make_unique<State>()) {}

CudaDmaBufExporter::~CudaDmaBufExporter() {
  std::vector<DmaBufId> gone;
  {
    internal::MutexLock lock(&state_->mu);
    for (auto& [base, e] : state_->by_base) {
      close(e.fd);
      gone.push_back(e.id);
    }
    state_->by_base.clear();
  }
  Notify(gone);
}

absl::StatusOr<CudaDmaBuf> CudaDmaBufExporter::Export(const void* device_ptr, size_t length) {
  const auto ptr = reinterpret_cast<uint64_t>(device_ptr);
  if (device_ptr == nullptr) return absl::InvalidArgumentError("CUDA export of a null pointer");
  if (length == 0) {
    return absl::InvalidArgumentError(absl::StrFormat("CUDA export of 0 bytes at 0x%x", ptr));
  }
  if (ptr + length < ptr) {
    return absl::InvalidArgumentError(
        absl::StrFormat("CUDA export of %u bytes at 0x%x wraps around", length, ptr));
  }
  if (options_.bind_primary_context && !driver_->HasCurrentContext()) {
    absl::StatusOr<int> ordinal = driver_->GetDeviceOrdinal(ptr);
    if (!ordinal.ok()) return ordinal.status();
    if (absl::Status s = driver_->UsePrimaryContext(*ordinal); !s.ok()) return s;
  }
  absl::StatusOr<CudaDriver::AllocationRange> range = driver_->GetAllocation(ptr);
  if (!range.ok()) return range.status();
  if (ptr + length > range->base + range->size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "CUDA export of %u bytes at 0x%x reaches %u bytes past the end of its allocation "
        "(0x%x, %u bytes)",
        length, ptr, ptr + length - (range->base + range->size), range->base, range->size));
  }
  absl::StatusOr<uint64_t> buffer_id = driver_->GetBufferId(ptr);
  if (!buffer_id.ok()) return buffer_id.status();

  CudaDmaBuf out;
  out.base = range->base;
  out.allocation_size = range->size;
  out.buffer_id = *buffer_id;
  out.memory.offset = ptr - range->base;
  out.memory.length = length;
  out.memory.alias = options_.peermem_alias ? reinterpret_cast<const void*>(range->base) : nullptr;

  std::vector<DmaBufId> gone;
  absl::Status status;
  {
    internal::MutexLock lock(&state_->mu);
    auto it = state_->by_base.find(range->base);
    if (it != state_->by_base.end() && it->second.buffer_id == *buffer_id &&
        it->second.size == range->size) {
      out.memory.fd = it->second.fd;
      out.id = it->second.id;
    } else {
      // A new allocation: whatever was exported over its addresses is gone.
      state_->DropOverlapping(range->base, range->size, gone);
      const uint64_t export_size = PageRoundUp(range->size);
      ++state_->exports;
      absl::StatusOr<int> fd = driver_->ExportDmaBuf(range->base, export_size);
      struct stat st = {};
      if (!fd.ok()) {
        status = fd.status();
      } else if (fstat(*fd, &st) != 0) {
        const int err = errno;
        close(*fd);
        status = ErrnoStatus(err, "fstat", "cuda",
                             absl::StrFormat("of the dma-buf exported for 0x%x", range->base));
      } else {
        State::Export e{
            *fd, range->size, *buffer_id,
            DmaBufId{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)}};
        state_->by_base.emplace(range->base, e);
        out.memory.fd = e.fd;
        out.id = e.id;
      }
    }
  }
  Notify(gone);
  if (!status.ok()) return status;
  return out;
}

absl::Status CudaDmaBufExporter::Release(const void* device_ptr) {
  const auto ptr = reinterpret_cast<uint64_t>(device_ptr);
  std::vector<DmaBufId> gone;
  {
    internal::MutexLock lock(&state_->mu);
    auto it = state_->by_base.upper_bound(ptr);
    if (it == state_->by_base.begin() ||
        std::prev(it)->first + std::max<uint64_t>(std::prev(it)->second.size, 1) <= ptr) {
      return absl::NotFoundError(absl::StrFormat("CUDA export release: no export holds 0x%x", ptr));
    }
    --it;
    close(it->second.fd);
    gone.push_back(it->second.id);
    state_->by_base.erase(it);
  }
  Notify(gone);
  return absl::OkStatus();
}

uint64_t CudaDmaBufExporter::AddListener(Listener listener) {
  internal::MutexLock lock(&state_->listeners_mu);
  const uint64_t token = state_->next_token++;
  state_->listeners.emplace(token, std::move(listener));
  return token;
}

void CudaDmaBufExporter::RemoveListener(uint64_t token) {
  internal::MutexLock lock(&state_->listeners_mu);
  state_->listeners.erase(token);
}

void CudaDmaBufExporter::Notify(const std::vector<DmaBufId>& gone) {
  if (gone.empty()) return;
  internal::MutexLock lock(&state_->listeners_mu);
  for (const DmaBufId& id : gone) {
    for (auto& [token, listener] : state_->listeners) listener(id);
  }
}

size_t CudaDmaBufExporter::exported_allocations() const {
  internal::MutexLock lock(&state_->mu);
  return state_->by_base.size();
}

uint64_t CudaDmaBufExporter::exports() const {
  internal::MutexLock lock(&state_->mu);
  return state_->exports;
}

}  // namespace dmareg
