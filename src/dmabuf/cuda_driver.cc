// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// CudaDriver: libcuda loaded at run time, and ProbeCuda.

#include "dmareg/dmabuf/cuda_driver.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "dmabuf/cuda_api.h"
#include "dmareg/dmabuf/dmabuf.h"

namespace dmareg {
namespace internal {

namespace {

absl::StatusCode CudaCode(CUresult r) {
  switch (r) {
    case CUDA_ERROR_INVALID_VALUE:
    case CUDA_ERROR_INVALID_DEVICE:
      return absl::StatusCode::kInvalidArgument;
    case CUDA_ERROR_OUT_OF_MEMORY:
      return absl::StatusCode::kResourceExhausted;
    case CUDA_ERROR_NOT_INITIALIZED:
    case CUDA_ERROR_DEINITIALIZED:
    case CUDA_ERROR_NO_DEVICE:
    case CUDA_ERROR_INVALID_CONTEXT:
      return absl::StatusCode::kFailedPrecondition;
    case CUDA_ERROR_NOT_FOUND:
      return absl::StatusCode::kNotFound;
    case CUDA_ERROR_NOT_SUPPORTED:
      return absl::StatusCode::kUnimplemented;
    default:
      return absl::StatusCode::kInternal;
  }
}

}  // namespace

absl::Status CudaStatus(const CudaApi& api, CUresult result, absl::string_view call,
                        absl::string_view what) {
  const char* text = nullptr;
  const char* name = nullptr;
  if (api.cuGetErrorString == nullptr || api.cuGetErrorString(result, &text) != CUDA_SUCCESS) {
    text = nullptr;
  }
  if (api.cuGetErrorName == nullptr || api.cuGetErrorName(result, &name) != CUDA_SUCCESS) {
    name = nullptr;
  }
  return absl::Status(CudaCode(result),
                      absl::StrFormat("%s%s%s: %s (%s, %d)", call, what.empty() ? "" : " ", what,
                                      text != nullptr ? text : "unknown CUDA error",
                                      name != nullptr ? name : "CUresult", result));
}

}  // namespace internal

namespace {

using internal::CUDA_SUCCESS;
using internal::CudaApi;
using internal::CudaStatus;
using internal::CUdevice;
using internal::CUdeviceptr;

template <typename F>
bool Resolve(void* handle, const char* name, F*& fn) {
  fn = reinterpret_cast<F*>(dlsym(handle, name));
  return fn != nullptr;
}

// The first entry point the library lacks, or "" when it has them all.
std::string ResolveAll(void* h, CudaApi& a) {
#define DMAREG_CUDA_RESOLVE(name) \
  if (!Resolve(h, #name, a.name)) return #name;
  DMAREG_CUDA_RESOLVE(cuInit)
  DMAREG_CUDA_RESOLVE(cuDriverGetVersion)
  DMAREG_CUDA_RESOLVE(cuGetErrorString)
  DMAREG_CUDA_RESOLVE(cuDeviceGet)
  DMAREG_CUDA_RESOLVE(cuDeviceGetCount)
  DMAREG_CUDA_RESOLVE(cuDeviceGetName)
  DMAREG_CUDA_RESOLVE(cuDeviceGetAttribute)
  DMAREG_CUDA_RESOLVE(cuDevicePrimaryCtxRetain)
  DMAREG_CUDA_RESOLVE(cuDevicePrimaryCtxRelease_v2)
  DMAREG_CUDA_RESOLVE(cuCtxGetCurrent)
  DMAREG_CUDA_RESOLVE(cuCtxSetCurrent)
  DMAREG_CUDA_RESOLVE(cuPointerGetAttribute)
  DMAREG_CUDA_RESOLVE(cuMemGetAddressRange_v2)
  DMAREG_CUDA_RESOLVE(cuMemGetHandleForAddressRange)
  DMAREG_CUDA_RESOLVE(cuMemAlloc_v2)
  DMAREG_CUDA_RESOLVE(cuMemFree_v2)
  DMAREG_CUDA_RESOLVE(cuMemcpyHtoD_v2)
  DMAREG_CUDA_RESOLVE(cuMemcpyDtoH_v2)
#undef DMAREG_CUDA_RESOLVE
  Resolve(h, "cuGetErrorName", a.cuGetErrorName);  // optional: messages only
  return "";
}

std::string Hex(uint64_t v) { return absl::StrFormat("0x%x", v); }

}  // namespace

absl::StatusOr<std::shared_ptr<CudaDriver>> CudaDriver::Load(CudaDriverOptions options) {
  std::string library = options.library;
  if (library.empty()) {
    const char* env = std::getenv("DMAREG_LIBCUDA");
    library = env != nullptr && env[0] != '\0' ? env : "libcuda.so.1";
  }
  dlerror();
  void* handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* err = dlerror();
    return absl::NotFoundError(absl::StrCat(
        "CUDA driver ", library,
        " does not load (no NVIDIA driver installed?): ", err != nullptr ? err : "dlopen failed"));
  }
  auto api = std::make_unique<CudaApi>();
  if (std::string missing = ResolveAll(handle, *api); !missing.empty()) {
    dlclose(handle);
    return absl::FailedPreconditionError(
        absl::StrCat("CUDA driver ", library, " has no ", missing,
                     " (dma-buf export needs driver 515 / CUDA 11.7 or later)"));
  }
  std::shared_ptr<CudaDriver> driver(new CudaDriver(handle, library, std::move(api)));
  const CudaApi& a = *driver->api_;
  if (internal::CUresult r = a.cuInit(0); r != CUDA_SUCCESS) {
    return CudaStatus(a, r, "cuInit", absl::StrCat("(", library, ")"));
  }
  if (internal::CUresult r = a.cuDriverGetVersion(&driver->version_); r != CUDA_SUCCESS) {
    return CudaStatus(a, r, "cuDriverGetVersion");
  }
  return driver;
}

CudaDriver::CudaDriver(void* handle, std::string library, std::unique_ptr<CudaApi> api)
    : handle_(handle), library_(std::move(library)), api_(std::move(api)) {}

CudaDriver::~CudaDriver() {
  for (int ordinal : retained_) {
    CUdevice dev = 0;
    if (api_->cuDeviceGet(&dev, ordinal) == CUDA_SUCCESS) api_->cuDevicePrimaryCtxRelease_v2(dev);
  }
  // The driver stays loaded: libcuda keeps threads and atexit handlers of
  // its own, and unloading it under them crashes at exit.
  (void)handle_;
}

std::string CudaDriver::VersionString() const {
  return absl::StrFormat("%d.%d", version_ / 1000, (version_ % 1000) / 10);
}

int CudaDriver::DeviceCount() const {
  int n = 0;
  return api_->cuDeviceGetCount(&n) == CUDA_SUCCESS ? n : 0;
}

std::string CudaDriver::DeviceName(int ordinal) const {
  CUdevice dev = 0;
  char name[256] = {};
  if (api_->cuDeviceGet(&dev, ordinal) != CUDA_SUCCESS ||
      api_->cuDeviceGetName(name, sizeof(name) - 1, dev) != CUDA_SUCCESS) {
    return "";
  }
  return name;
}

absl::StatusOr<bool> CudaDriver::DmaBufSupported(int ordinal) const {
  CUdevice dev = 0;
  if (internal::CUresult r = api_->cuDeviceGet(&dev, ordinal); r != CUDA_SUCCESS) {
    return CudaStatus(*api_, r, "cuDeviceGet", absl::StrCat(ordinal));
  }
  int value = 0;
  if (internal::CUresult r =
          api_->cuDeviceGetAttribute(&value, internal::CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED, dev);
      r != CUDA_SUCCESS) {
    return CudaStatus(*api_, r, "cuDeviceGetAttribute(DMA_BUF_SUPPORTED)",
                      absl::StrCat("of device ", ordinal));
  }
  return value != 0;
}

absl::Status CudaDriver::UsePrimaryContext(int ordinal) {
  CUdevice dev = 0;
  if (internal::CUresult r = api_->cuDeviceGet(&dev, ordinal); r != CUDA_SUCCESS) {
    return CudaStatus(*api_, r, "cuDeviceGet", absl::StrCat(ordinal));
  }
  internal::CUcontext ctx = nullptr;
  if (internal::CUresult r = api_->cuDevicePrimaryCtxRetain(&ctx, dev); r != CUDA_SUCCESS) {
    return CudaStatus(*api_, r, "cuDevicePrimaryCtxRetain", absl::StrCat("of device ", ordinal));
  }
  // One retain per device for the driver's life; further retains released.
  {
    std::lock_guard<std::mutex> lock(mu_);
    bool held = false;
    for (int o : retained_) held = held || o == ordinal;
    if (held) {
      api_->cuDevicePrimaryCtxRelease_v2(dev);
    } else {
      retained_.push_back(ordinal);
    }
  }
  if (internal::CUresult r = api_->cuCtxSetCurrent(ctx); r != CUDA_SUCCESS) {
    return CudaStatus(*api_, r, "cuCtxSetCurrent", absl::StrCat("(device ", ordinal, ")"));
  }
  return absl::OkStatus();
}

bool CudaDriver::HasCurrentContext() const {
  internal::CUcontext ctx = nullptr;
  return api_->cuCtxGetCurrent(&ctx) == CUDA_SUCCESS && ctx != nullptr;
}

absl::StatusOr<CudaDriver::AllocationRange> CudaDriver::GetAllocation(uint64_t ptr) const {
  CUdeviceptr base = 0;
  size_t size = 0;
  internal::CUresult r = api_->cuMemGetAddressRange_v2(&base, &size, ptr);
  if (r != CUDA_SUCCESS) {
    absl::Status s = CudaStatus(*api_, r, "cuMemGetAddressRange_v2", absl::StrCat("of ", Hex(ptr)));
    if (s.code() == absl::StatusCode::kInvalidArgument || s.code() == absl::StatusCode::kNotFound) {
      return absl::InvalidArgumentError(
          absl::StrCat(Hex(ptr), " is not CUDA device memory: ", s.message()));
    }
    return s;
  }
  return AllocationRange{base, size};
}

absl::StatusOr<uint64_t> CudaDriver::GetBufferId(uint64_t ptr) const {
  // The header documents one unsigned long long; the storage is padded so a
  // driver writing more cannot overrun it.
  unsigned long long id[2] = {0, 0};
  if (internal::CUresult r =
          api_->cuPointerGetAttribute(id, internal::CU_POINTER_ATTRIBUTE_BUFFER_ID, ptr);
      r != CUDA_SUCCESS) {
    return CudaStatus(*api_, r, "cuPointerGetAttribute(BUFFER_ID)", absl::StrCat("of ", Hex(ptr)));
  }
  return id[0];
}

absl::StatusOr<int> CudaDriver::GetDeviceOrdinal(uint64_t ptr) const {
  int ordinal = -1;
  if (internal::CUresult r =
          api_->cuPointerGetAttribute(&ordinal, internal::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, ptr);
      r != CUDA_SUCCESS) {
    absl::Status s = CudaStatus(*api_, r, "cuPointerGetAttribute(DEVICE_ORDINAL)",
                                absl::StrCat("of ", Hex(ptr)));
    if (s.code() == absl::StatusCode::kInvalidArgument) {
      return absl::InvalidArgumentError(
          absl::StrCat(Hex(ptr), " is not CUDA device memory: ", s.message()));
    }
    return s;
  }
  return ordinal;
}

absl::StatusOr<int> CudaDriver::ExportDmaBuf(uint64_t base, uint64_t size) const {
  int fd = -1;
  if (internal::CUresult r = api_->cuMemGetHandleForAddressRange(
          &fd, base, size, internal::CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD, 0);
      r != CUDA_SUCCESS) {
    return CudaStatus(*api_, r, "cuMemGetHandleForAddressRange(DMA_BUF_FD)",
                      absl::StrFormat("of %s, %u bytes", Hex(base), size));
  }
  if (fd < 0) {
    return absl::InternalError(absl::StrFormat(
        "cuMemGetHandleForAddressRange(DMA_BUF_FD) of %s, %u bytes: succeeded with fd %d",
        Hex(base), size, fd));
  }
  return fd;
}

absl::StatusOr<uint64_t> CudaDriver::Allocate(size_t size) const {
  CUdeviceptr ptr = 0;
  if (internal::CUresult r = api_->cuMemAlloc_v2(&ptr, size); r != CUDA_SUCCESS) {
    return CudaStatus(*api_, r, "cuMemAlloc_v2", absl::StrCat("of ", size, " bytes"));
  }
  return ptr;
}

absl::Status CudaDriver::Free(uint64_t ptr) const {
  if (internal::CUresult r = api_->cuMemFree_v2(ptr); r != CUDA_SUCCESS) {
    return CudaStatus(*api_, r, "cuMemFree_v2", absl::StrCat("of ", Hex(ptr)));
  }
  return absl::OkStatus();
}

absl::Status CudaDriver::CopyToDevice(uint64_t dst, const void* src, size_t size) const {
  if (internal::CUresult r = api_->cuMemcpyHtoD_v2(dst, src, size); r != CUDA_SUCCESS) {
    return CudaStatus(*api_, r, "cuMemcpyHtoD_v2", absl::StrCat(size, " bytes to ", Hex(dst)));
  }
  return absl::OkStatus();
}

absl::Status CudaDriver::CopyFromDevice(void* dst, uint64_t src, size_t size) const {
  if (internal::CUresult r = api_->cuMemcpyDtoH_v2(dst, src, size); r != CUDA_SUCCESS) {
    return CudaStatus(*api_, r, "cuMemcpyDtoH_v2", absl::StrCat(size, " bytes from ", Hex(src)));
  }
  return absl::OkStatus();
}

CudaProbe ProbeCuda(CudaDriverOptions options) {
  CudaProbe probe;
  absl::StatusOr<std::shared_ptr<CudaDriver>> driver = CudaDriver::Load(std::move(options));
  if (!driver.ok()) {
    probe.detail = std::string(driver.status().message());
    return probe;
  }
  const int n = (*driver)->DeviceCount();
  probe.detail = absl::StrFormat("driver %s (%s), %d device%s", (*driver)->VersionString(),
                                 (*driver)->library(), n, n == 1 ? "" : "s");
  for (int i = 0; i < n; ++i) {
    absl::StatusOr<bool> dmabuf = (*driver)->DmaBufSupported(i);
    const bool yes = dmabuf.ok() && *dmabuf;
    probe.available = probe.available || yes;
    absl::StrAppendFormat(&probe.detail, "%s %d: %s (dma-buf export: %s)", i == 0 ? ":" : ";", i,
                          (*driver)->DeviceName(i),
                          dmabuf.ok() ? (yes ? "yes" : "no") : dmabuf.status().message());
  }
  return probe;
}

}  // namespace dmareg
