// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The few CUDA driver API types dmareg needs, declared here so the library
// builds with no CUDA installed (values from CUDA 13.0's cuda.h), and the
// table of entry points CudaDriver resolves with dlsym.
//
//   internal::CudaApi api;   // filled by CudaDriver::Load
//   CUresult r = api.cuMemGetAddressRange_v2(&base, &size, ptr);
//   if (r != CUDA_SUCCESS) return CudaStatus(api, r, "cuMemGetAddressRange_v2", "...");

#ifndef DMAREG_SRC_DMABUF_CUDA_API_H_
#define DMAREG_SRC_DMABUF_CUDA_API_H_

#include <cstddef>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace dmareg::internal {

using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;  // CUdeviceptr_v2 on 64-bit hosts
struct CUctx_st;
using CUcontext = CUctx_st*;

inline constexpr CUresult CUDA_SUCCESS = 0;
inline constexpr CUresult CUDA_ERROR_INVALID_VALUE = 1;
inline constexpr CUresult CUDA_ERROR_OUT_OF_MEMORY = 2;
inline constexpr CUresult CUDA_ERROR_NOT_INITIALIZED = 3;
inline constexpr CUresult CUDA_ERROR_DEINITIALIZED = 4;
inline constexpr CUresult CUDA_ERROR_NO_DEVICE = 100;
inline constexpr CUresult CUDA_ERROR_INVALID_DEVICE = 101;
inline constexpr CUresult CUDA_ERROR_INVALID_CONTEXT = 201;
inline constexpr CUresult CUDA_ERROR_NOT_FOUND = 500;
inline constexpr CUresult CUDA_ERROR_NOT_SUPPORTED = 801;

// CUpointer_attribute
inline constexpr int CU_POINTER_ATTRIBUTE_BUFFER_ID = 7;       // unsigned long long
inline constexpr int CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL = 9;  // int
// CUdevice_attribute
inline constexpr int CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED = 124;
// CUmemRangeHandleType
inline constexpr int CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD = 1;

struct CudaApi {
  CUresult (*cuInit)(unsigned int flags) = nullptr;
  CUresult (*cuDriverGetVersion)(int* version) = nullptr;
  CUresult (*cuGetErrorString)(CUresult error, const char** str) = nullptr;
  CUresult (*cuGetErrorName)(CUresult error, const char** str) = nullptr;
  CUresult (*cuDeviceGet)(CUdevice* device, int ordinal) = nullptr;
  CUresult (*cuDeviceGetCount)(int* count) = nullptr;
  CUresult (*cuDeviceGetName)(char* name, int len, CUdevice device) = nullptr;
  CUresult (*cuDeviceGetAttribute)(int* value, int attribute, CUdevice device) = nullptr;
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext* ctx, CUdevice device) = nullptr;
  CUresult (*cuDevicePrimaryCtxRelease_v2)(CUdevice device) = nullptr;
  CUresult (*cuCtxGetCurrent)(CUcontext* ctx) = nullptr;
  CUresult (*cuCtxSetCurrent)(CUcontext ctx) = nullptr;
  CUresult (*cuPointerGetAttribute)(void* data, int attribute, CUdeviceptr ptr) = nullptr;
  CUresult (*cuMemGetAddressRange_v2)(CUdeviceptr* base, size_t* size, CUdeviceptr ptr) = nullptr;
  CUresult (*cuMemGetHandleForAddressRange)(void* handle, CUdeviceptr ptr, size_t size,
                                            int handle_type, unsigned long long flags) = nullptr;
  CUresult (*cuMemAlloc_v2)(CUdeviceptr* ptr, size_t size) = nullptr;
  CUresult (*cuMemFree_v2)(CUdeviceptr ptr) = nullptr;
  CUresult (*cuMemcpyHtoD_v2)(CUdeviceptr dst, const void* src, size_t size) = nullptr;
  CUresult (*cuMemcpyDtoH_v2)(void* dst, CUdeviceptr src, size_t size) = nullptr;
};

// The status for a failed driver call: "<call>[ <what>]: <description>
// (<CUDA_ERROR_NAME>, <n>)", with a code that fits the error.
absl::Status CudaStatus(const CudaApi& api, CUresult result, absl::string_view call,
                        absl::string_view what = {});

}  // namespace dmareg::internal

#endif  // DMAREG_SRC_DMABUF_CUDA_API_H_
