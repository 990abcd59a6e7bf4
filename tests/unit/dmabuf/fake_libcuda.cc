// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// A stand-in for libcuda.so.1 over host memory, loaded by CudaDriver through
// its path like the real one (never linked). One device, one primary
// context per device, allocations of fake device addresses (2 MiB-aligned,
// first fit, so a freed address comes back to the next allocation of its
// size) backed by memfds named "dmareg-fake-dmabuf"; an export reopens the
// allocation's memfd, so testing::FakeDmaBufs' inspector takes it for a
// dma-buf and the exported bytes are the allocation's. Buffer ids come from
// a counter and are never reused.
//
// Tests steer it through extern "C" fake_cuda_* functions (dlsym):
//
//   auto reset = reinterpret_cast<void (*)()>(dlsym(h, "fake_cuda_reset"));
//   auto fail = reinterpret_cast<void (*)(const char*, int, int)>(
//       dlsym(h, "fake_cuda_fail_next"));
//   fail("cuMemGetHandleForAddressRange", 801, 1);   // CUDA_ERROR_NOT_SUPPORTED once
//
// Built a second time with FAKE_CUDA_NO_DMABUF_EXPORT: a driver older than
// cuMemGetHandleForAddressRange.

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <string>

namespace {

using CUresult = int;
using CUdeviceptr = unsigned long long;
struct Ctx {
  int device;
};

constexpr CUresult kSuccess = 0;
constexpr CUresult kInvalidValue = 1;
constexpr CUresult kOutOfMemory = 2;
constexpr CUresult kNotInitialized = 3;
constexpr CUresult kInvalidDevice = 101;
constexpr CUresult kInvalidContext = 201;
constexpr CUresult kNotFound = 500;
constexpr CUresult kNotSupported = 801;

constexpr uint64_t kDeviceBase = 0x200000000000ull;
constexpr uint64_t kAlign = 2ull << 20;
constexpr int kMaxDevices = 4;

struct Allocation {
  uint64_t size = 0;
  int memfd = -1;
  void* host = nullptr;
  uint64_t mapped = 0;  // bytes of `host`
  unsigned long long buffer_id = 0;
};

struct Failure {
  std::string call;
  CUresult result = 0;
  int count = 0;
};

struct Fake {
  std::mutex mu;
  bool initialized = false;
  int devices = 1;
  int dmabuf_supported = 1;
  Ctx contexts[kMaxDevices] = {{0}, {1}, {2}, {3}};
  int retains = 0;
  std::map<uint64_t, Allocation> allocations;
  unsigned long long next_buffer_id = 1;
  uint64_t exports = 0;
  Failure failure;
};

Fake& State() {
  static Fake* fake = new Fake;  // the process's driver, as libcuda's is
  return *fake;
}
thread_local Ctx* current = nullptr;

// Consumes one injected failure of `call`, if one is pending.
bool Failing(Fake& f, const char* call, CUresult* result) {
  if (f.failure.count > 0 && f.failure.call == call) {
    --f.failure.count;
    *result = f.failure.result;
    return true;
  }
  return false;
}

uint64_t PageSize() { return static_cast<uint64_t>(sysconf(_SC_PAGESIZE)); }
uint64_t RoundUp(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

// The allocation holding `ptr`, or end().
std::map<uint64_t, Allocation>::iterator Find(Fake& f, uint64_t ptr) {
  auto it = f.allocations.upper_bound(ptr);
  if (it == f.allocations.begin()) return f.allocations.end();
  --it;
  return ptr < it->first + it->second.size ? it : f.allocations.end();
}

CUresult Make(Fake& f, uint64_t base, uint64_t size) {
  const uint64_t mapped = RoundUp(size, PageSize());
  Allocation a;
  a.size = size;
  a.mapped = mapped;
  a.memfd = memfd_create("dmareg-fake-dmabuf", MFD_CLOEXEC);
  if (a.memfd < 0) return kOutOfMemory;
  if (ftruncate(a.memfd, static_cast<off_t>(mapped)) != 0) {
    close(a.memfd);
    return kOutOfMemory;
  }
  a.host = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_SHARED, a.memfd, 0);
  if (a.host == MAP_FAILED) {
    close(a.memfd);
    return kOutOfMemory;
  }
  a.buffer_id = f.next_buffer_id++;
  f.allocations.emplace(base, a);
  return kSuccess;
}

void Destroy(Allocation& a) {
  munmap(a.host, a.mapped);
  close(a.memfd);
}

#define FAKE_CUDA_ENTER(name)                                          \
  Fake& f = State();                                                   \
  std::lock_guard<std::mutex> lock(f.mu);                              \
  if (CUresult injected; Failing(f, name, &injected)) return injected; \
  if (!f.initialized) return kNotInitialized;

// The errors the fake gives, with the driver's name and text for each.
struct ErrorText {
  CUresult code;
  const char* name;
  const char* text;
};
constexpr ErrorText kErrors[] = {
    {kSuccess, "CUDA_SUCCESS", "no error"},
    {kInvalidValue, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {kOutOfMemory, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {kNotInitialized, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {100, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {kInvalidDevice, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {kInvalidContext, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {kNotFound, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {kNotSupported, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported"},
};

CUresult LookUpError(CUresult error, const char** str, bool name) {
  for (const ErrorText& e : kErrors) {
    if (e.code == error) {
      *str = name ? e.name : e.text;
      return kSuccess;
    }
  }
  *str = nullptr;
  return kInvalidValue;
}

}  // namespace

extern "C" {

// ---- The driver API entry points CudaDriver resolves. ----

CUresult cuInit(unsigned int flags) {
  Fake& f = State();
  std::lock_guard<std::mutex> lock(f.mu);
  if (CUresult injected; Failing(f, "cuInit", &injected)) return injected;
  if (flags != 0) return kInvalidValue;
  f.initialized = true;
  return kSuccess;
}

CUresult cuDriverGetVersion(int* version) {
  if (version == nullptr) return kInvalidValue;
  *version = 13000;
  return kSuccess;
}

CUresult cuGetErrorString(CUresult error, const char** str) {
  return LookUpError(error, str, false);
}

CUresult cuGetErrorName(CUresult error, const char** str) { return LookUpError(error, str, true); }

CUresult cuDeviceGetCount(int* count) {
  FAKE_CUDA_ENTER("cuDeviceGetCount");
  *count = f.devices;
  return kSuccess;
}

CUresult cuDeviceGet(int* device, int ordinal) {
  FAKE_CUDA_ENTER("cuDeviceGet");
  if (ordinal < 0 || ordinal >= f.devices) return kInvalidDevice;
  *device = ordinal;
  return kSuccess;
}

CUresult cuDeviceGetName(char* name, int len, int device) {
  FAKE_CUDA_ENTER("cuDeviceGetName");
  if (device < 0 || device >= f.devices) return kInvalidDevice;
  snprintf(name, static_cast<size_t>(len), "Fake CUDA device %d", device);
  return kSuccess;
}

CUresult cuDeviceGetAttribute(int* value, int attribute, int device) {
  FAKE_CUDA_ENTER("cuDeviceGetAttribute");
  if (device < 0 || device >= f.devices) return kInvalidDevice;
  *value = attribute == 124 ? f.dmabuf_supported : 0;
  return kSuccess;
}

CUresult cuDevicePrimaryCtxRetain(Ctx** ctx, int device) {
  FAKE_CUDA_ENTER("cuDevicePrimaryCtxRetain");
  if (device < 0 || device >= f.devices) return kInvalidDevice;
  ++f.retains;
  *ctx = &f.contexts[device];
  return kSuccess;
}

CUresult cuDevicePrimaryCtxRelease_v2(int device) {
  FAKE_CUDA_ENTER("cuDevicePrimaryCtxRelease_v2");
  if (device < 0 || device >= f.devices) return kInvalidDevice;
  --f.retains;
  return kSuccess;
}

CUresult cuCtxGetCurrent(Ctx** ctx) {
  FAKE_CUDA_ENTER("cuCtxGetCurrent");
  *ctx = current;
  return kSuccess;
}

CUresult cuCtxSetCurrent(Ctx* ctx) {
  FAKE_CUDA_ENTER("cuCtxSetCurrent");
  current = ctx;
  return kSuccess;
}

// Works without a current context, as the real one does.
CUresult cuPointerGetAttribute(void* data, int attribute, CUdeviceptr ptr) {
  FAKE_CUDA_ENTER("cuPointerGetAttribute");
  auto it = Find(f, ptr);
  if (it == f.allocations.end()) return kInvalidValue;
  if (attribute == 7) {  // BUFFER_ID
    *static_cast<unsigned long long*>(data) = it->second.buffer_id;
  } else if (attribute == 9) {  // DEVICE_ORDINAL
    *static_cast<int*>(data) = 0;
  } else {
    return kInvalidValue;
  }
  return kSuccess;
}

CUresult cuMemAlloc_v2(CUdeviceptr* ptr, size_t size) {
  FAKE_CUDA_ENTER("cuMemAlloc_v2");
  if (current == nullptr) return kInvalidContext;
  if (size == 0) return kInvalidValue;
  uint64_t base = kDeviceBase;
  for (const auto& [b, a] : f.allocations) {  // first fit
    if (base + size <= b) break;
    base = RoundUp(b + a.size, kAlign);
  }
  if (CUresult r = Make(f, base, size); r != kSuccess) return r;
  *ptr = base;
  return kSuccess;
}

CUresult cuMemFree_v2(CUdeviceptr ptr) {
  FAKE_CUDA_ENTER("cuMemFree_v2");
  if (current == nullptr) return kInvalidContext;
  auto it = f.allocations.find(ptr);
  if (it == f.allocations.end()) return kInvalidValue;
  Destroy(it->second);
  f.allocations.erase(it);
  return kSuccess;
}

CUresult cuMemGetAddressRange_v2(CUdeviceptr* base, size_t* size, CUdeviceptr ptr) {
  FAKE_CUDA_ENTER("cuMemGetAddressRange_v2");
  if (current == nullptr) return kInvalidContext;
  auto it = Find(f, ptr);
  if (it == f.allocations.end()) return kNotFound;
  if (base != nullptr) *base = it->first;
  if (size != nullptr) *size = it->second.size;
  return kSuccess;
}

CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t size) {
  FAKE_CUDA_ENTER("cuMemcpyHtoD_v2");
  if (current == nullptr) return kInvalidContext;
  auto it = Find(f, dst);
  if (it == f.allocations.end() || dst + size > it->first + it->second.size) return kInvalidValue;
  memcpy(static_cast<char*>(it->second.host) + (dst - it->first), src, size);
  return kSuccess;
}

CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t size) {
  FAKE_CUDA_ENTER("cuMemcpyDtoH_v2");
  if (current == nullptr) return kInvalidContext;
  auto it = Find(f, src);
  if (it == f.allocations.end() || src + size > it->first + it->second.size) return kInvalidValue;
  memcpy(dst, static_cast<const char*>(it->second.host) + (src - it->first), size);
  return kSuccess;
}

#ifndef FAKE_CUDA_NO_DMABUF_EXPORT
CUresult cuMemGetHandleForAddressRange(void* handle, CUdeviceptr ptr, size_t size, int handle_type,
                                       unsigned long long flags) {
  FAKE_CUDA_ENTER("cuMemGetHandleForAddressRange");
  if (current == nullptr) return kInvalidContext;
  if (!f.dmabuf_supported) return kNotSupported;
  if (handle_type != 1 || flags != 0 || ptr % PageSize() != 0 || size % PageSize() != 0 ||
      size == 0) {
    return kInvalidValue;
  }
  auto it = Find(f, ptr);
  if (it == f.allocations.end() || ptr + size > it->first + it->second.mapped) return kInvalidValue;
  const std::string path = "/proc/self/fd/" + std::to_string(it->second.memfd);
  const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return kOutOfMemory;
  ++f.exports;
  *static_cast<int*>(handle) = fd;
  return kSuccess;
}
#endif

// ---- The test control API. ----

// Frees everything and forgets failures, counters and this thread's context.
void fake_cuda_reset() {
  Fake& f = State();
  std::lock_guard<std::mutex> lock(f.mu);
  for (auto& [base, a] : f.allocations) Destroy(a);
  f.allocations.clear();
  f.initialized = false;
  f.devices = 1;
  f.dmabuf_supported = 1;
  f.retains = 0;
  f.exports = 0;
  f.failure = Failure{};
  current = nullptr;
}

// The next `count` calls of `call` return `result`.
void fake_cuda_fail_next(const char* call, int result, int count) {
  Fake& f = State();
  std::lock_guard<std::mutex> lock(f.mu);
  f.failure = Failure{call, result, count};
}

void fake_cuda_set_dmabuf_supported(int supported) {
  Fake& f = State();
  std::lock_guard<std::mutex> lock(f.mu);
  f.dmabuf_supported = supported;
}

void fake_cuda_set_device_count(int devices) {
  Fake& f = State();
  std::lock_guard<std::mutex> lock(f.mu);
  f.devices = devices < kMaxDevices ? devices : kMaxDevices;
}

uint64_t fake_cuda_exports() {
  Fake& f = State();
  std::lock_guard<std::mutex> lock(f.mu);
  return f.exports;
}

int fake_cuda_primary_retains() {
  Fake& f = State();
  std::lock_guard<std::mutex> lock(f.mu);
  return f.retains;
}

size_t fake_cuda_live_allocations() {
  Fake& f = State();
  std::lock_guard<std::mutex> lock(f.mu);
  return f.allocations.size();
}

// Frees the allocation at `base` and makes a new one of the same size at
// the same address (a new buffer id): cudaFree + cudaMalloc landing there.
int fake_cuda_reallocate(CUdeviceptr base) {
  Fake& f = State();
  std::lock_guard<std::mutex> lock(f.mu);
  auto it = f.allocations.find(base);
  if (it == f.allocations.end()) return kInvalidValue;
  const uint64_t size = it->second.size;
  Destroy(it->second);
  f.allocations.erase(it);
  return Make(f, base, size);
}

}  // extern "C"
