// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// CudaDriver and CudaDmaBufExporter over the fake libcuda (fake_libcuda.cc),
// loaded by path as the real driver would be.

#include "dmareg/dmabuf/cuda_exporter.h"

#include <dirent.h>
#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "dmareg/dmabuf/cuda_driver.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dmareg {
namespace {

using ::testing::HasSubstr;

int CountFds() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n - 1;  // the directory's own fd
}

std::string FdTarget(int fd) {
  char buf[256] = {};
  const std::string link = "/proc/self/fd/" + std::to_string(fd);
  const ssize_t n = readlink(link.c_str(), buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

DmaBufId IdOf(int fd) {
  struct stat st = {};
  EXPECT_EQ(fstat(fd, &st), 0);
  return {static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
}

const void* Ptr(uint64_t p) { return reinterpret_cast<const void*>(p); }

// The fake's control API.
struct FakeCuda {
  void* handle = dlopen(FAKE_LIBCUDA_PATH, RTLD_NOW | RTLD_LOCAL);
  template <typename F>
  F* Get(const char* name) {
    return reinterpret_cast<F*>(dlsym(handle, name));
  }
  void Reset() { Get<void()>("fake_cuda_reset")(); }
  void FailNext(const char* call, int result, int count) {
    Get<void(const char*, int, int)>("fake_cuda_fail_next")(call, result, count);
  }
  void SetDmaBufSupported(int on) { Get<void(int)>("fake_cuda_set_dmabuf_supported")(on); }
  uint64_t Exports() { return Get<uint64_t()>("fake_cuda_exports")(); }
  int Retains() { return Get<int()>("fake_cuda_primary_retains")(); }
  int Reallocate(uint64_t base) {
    return Get<int(unsigned long long)>("fake_cuda_reallocate")(base);
  }
};

class CudaExporterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(fake_.handle, nullptr) << dlerror();
    fake_.Reset();
    auto driver = CudaDriver::Load({.library = FAKE_LIBCUDA_PATH});
    ASSERT_TRUE(driver.ok()) << driver.status();
    driver_ = *driver;
    ASSERT_TRUE(driver_->UsePrimaryContext(0).ok());
  }
  void TearDown() override { fake_.Reset(); }

  uint64_t Alloc(size_t size) {
    auto p = driver_->Allocate(size);
    EXPECT_TRUE(p.ok()) << p.status();
    return p.value_or(0);
  }

  FakeCuda fake_;
  std::shared_ptr<CudaDriver> driver_;
};

TEST_F(CudaExporterTest, LoadsAndReportsTheDriver) {
  EXPECT_EQ(driver_->version(), 13000);
  EXPECT_EQ(driver_->VersionString(), "13.0");
  EXPECT_EQ(driver_->library(), FAKE_LIBCUDA_PATH);
  EXPECT_EQ(driver_->DeviceCount(), 1);
  EXPECT_EQ(driver_->DeviceName(0), "Fake CUDA device 0");
  EXPECT_EQ(driver_->DmaBufSupported(0).value_or(false), true);
  EXPECT_EQ(driver_->DmaBufSupported(3).status().code(), absl::StatusCode::kInvalidArgument);
  CudaProbe probe = ProbeCuda({.library = FAKE_LIBCUDA_PATH});
  EXPECT_TRUE(probe.available);
  EXPECT_THAT(probe.detail, HasSubstr("driver 13.0"));
  EXPECT_THAT(probe.detail, HasSubstr("Fake CUDA device 0 (dma-buf export: yes)"));
  fake_.SetDmaBufSupported(0);
  EXPECT_FALSE(ProbeCuda({.library = FAKE_LIBCUDA_PATH}).available);
}

TEST_F(CudaExporterTest, LibraryFromTheEnvironment) {
  setenv("DMAREG_LIBCUDA", FAKE_LIBCUDA_PATH, 1);
  auto driver = CudaDriver::Load();
  unsetenv("DMAREG_LIBCUDA");
  ASSERT_TRUE(driver.ok()) << driver.status();
  EXPECT_EQ((*driver)->library(), FAKE_LIBCUDA_PATH);
}

TEST_F(CudaExporterTest, MissingLibraryIsNotFoundNamingIt) {
  auto driver = CudaDriver::Load({.library = "/nonexistent/libcuda.so.1"});
  EXPECT_EQ(driver.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(driver.status().message(), HasSubstr("/nonexistent/libcuda.so.1"));
  CudaProbe probe = ProbeCuda({.library = "/nonexistent/libcuda.so.1"});
  EXPECT_FALSE(probe.available);
  EXPECT_THAT(probe.detail, HasSubstr("does not load"));
}

TEST_F(CudaExporterTest, MissingEntryPointIsFailedPreconditionNamingIt) {
  auto driver = CudaDriver::Load({.library = FAKE_LIBCUDA_OLD_PATH});
  EXPECT_EQ(driver.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(driver.status().message(), HasSubstr("has no cuMemGetHandleForAddressRange"));
}

TEST_F(CudaExporterTest, InitFailureNamesTheCudaError) {
  fake_.FailNext("cuInit", 100, 1);
  auto driver = CudaDriver::Load({.library = FAKE_LIBCUDA_PATH});
  EXPECT_EQ(driver.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(driver.status().message(), HasSubstr("cuInit"));
  EXPECT_THAT(driver.status().message(), HasSubstr("CUDA_ERROR_NO_DEVICE"));
}

TEST_F(CudaExporterTest, ExportsTheAllocationWithTheSliceOffset) {
  const uint64_t base = Alloc(3 << 20);
  std::vector<uint8_t> pattern(256);
  for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<uint8_t>(i * 7 + 1);
  ASSERT_TRUE(driver_->CopyToDevice(base + 4106, pattern.data(), pattern.size()).ok());

  CudaDmaBufExporter exporter(driver_);
  auto buf = exporter.Export(Ptr(base + 4106), 256);
  ASSERT_TRUE(buf.ok()) << buf.status();
  EXPECT_EQ(buf->base, base);
  EXPECT_EQ(buf->allocation_size, 3u << 20);
  EXPECT_EQ(buf->memory.offset, 4106u);
  EXPECT_EQ(buf->memory.length, 256u);
  EXPECT_EQ(buf->memory.alias, nullptr);
  EXPECT_FALSE(buf->memory.iova.has_value());
  ASSERT_GE(buf->memory.fd, 0);
  EXPECT_EQ(buf->id, IdOf(buf->memory.fd));
  EXPECT_THAT(FdTarget(buf->memory.fd), HasSubstr("dmareg-fake-dmabuf"));
  EXPECT_EQ(driver_->GetBufferId(base).value_or(0), buf->buffer_id);
  // The dma-buf is the allocation: its bytes at the offset are the pattern.
  std::vector<uint8_t> got(256);
  ASSERT_EQ(pread(buf->memory.fd, got.data(), got.size(), 4106), 256);
  EXPECT_EQ(got, pattern);
}

TEST_F(CudaExporterTest, OneExportPerAllocation) {
  const uint64_t a = Alloc(4 << 20);
  const uint64_t b = Alloc(1 << 20);
  CudaDmaBufExporter exporter(driver_);
  const int fds = CountFds();
  auto a1 = exporter.Export(Ptr(a), 4096);
  auto a2 = exporter.Export(Ptr(a + (3 << 20)), 1 << 20);  // to the last byte
  auto b1 = exporter.Export(Ptr(b + 100), 1);
  ASSERT_TRUE(a1.ok() && a2.ok() && b1.ok());
  EXPECT_EQ(a1->memory.fd, a2->memory.fd);
  EXPECT_EQ(a1->id, a2->id);
  EXPECT_EQ(a2->memory.offset, 3u << 20);
  EXPECT_NE(a1->memory.fd, b1->memory.fd);
  EXPECT_NE(a1->id, b1->id);
  EXPECT_EQ(exporter.exports(), 2u);
  EXPECT_EQ(fake_.Exports(), 2u);
  EXPECT_EQ(exporter.exported_allocations(), 2u);
  EXPECT_EQ(CountFds(), fds + 2);
}

TEST_F(CudaExporterTest, AReplacedAllocationIsExportedAnewAndTheOldFdClosed) {
  const uint64_t base = Alloc(2 << 20);
  std::vector<DmaBufId> gone;  // outlives the exporter, which reports at its end
  CudaDmaBufExporter exporter(driver_);
  exporter.AddListener([&](const DmaBufId& id) { gone.push_back(id); });
  auto first = exporter.Export(Ptr(base), 8192);
  ASSERT_TRUE(first.ok());
  const int fds = CountFds();

  // cudaFree + a new allocation landing at the same address.
  ASSERT_EQ(fake_.Reallocate(base), 0);
  auto second = exporter.Export(Ptr(base + 4096), 4096);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->base, base);
  EXPECT_NE(second->buffer_id, first->buffer_id);
  EXPECT_NE(second->id, first->id);
  EXPECT_EQ(second->id, IdOf(second->memory.fd));
  EXPECT_EQ(gone, std::vector<DmaBufId>{first->id});
  EXPECT_EQ(CountFds(), fds);  // the old export closed, the new one open
  EXPECT_EQ(exporter.exports(), 2u);
  EXPECT_EQ(exporter.exported_allocations(), 1u);

  // The same through the driver: free, then an allocation of the same size
  // lands at the same address (first fit).
  ASSERT_TRUE(driver_->Free(base).ok());
  ASSERT_EQ(Alloc(2 << 20), base);
  auto third = exporter.Export(Ptr(base), 1);
  ASSERT_TRUE(third.ok());
  EXPECT_NE(third->buffer_id, second->buffer_id);
  EXPECT_EQ(gone.size(), 2u);
  EXPECT_EQ(gone.back(), second->id);
  EXPECT_EQ(CountFds(), fds);
}

TEST_F(CudaExporterTest, ALargerAllocationOverOldOnesDropsThem) {
  const uint64_t a = Alloc(2 << 20);
  const uint64_t b = Alloc(2 << 20);
  CudaDmaBufExporter exporter(driver_);
  ASSERT_TRUE(exporter.Export(Ptr(a), 1).ok());
  ASSERT_TRUE(exporter.Export(Ptr(b), 1).ok());
  ASSERT_TRUE(driver_->Free(a).ok());
  ASSERT_TRUE(driver_->Free(b).ok());
  const uint64_t c = Alloc(4 << 20);
  ASSERT_EQ(c, a);
  const int fds = CountFds();  // the two old exports and the fake's new memory
  auto buf = exporter.Export(Ptr(c + (3 << 20)), 1);
  ASSERT_TRUE(buf.ok());
  EXPECT_EQ(exporter.exported_allocations(), 1u);
  EXPECT_EQ(CountFds(), fds - 1);
}

TEST_F(CudaExporterTest, ReleaseAndDestructionCloseTheFds) {
  const int fds = CountFds();
  const uint64_t a = Alloc(1 << 20);
  const uint64_t b = Alloc(1 << 20);
  std::vector<DmaBufId> gone;
  {
    CudaDmaBufExporter exporter(driver_);
    exporter.AddListener([&](const DmaBufId& id) { gone.push_back(id); });
    auto ea = exporter.Export(Ptr(a), 1);
    auto eb = exporter.Export(Ptr(b), 1);
    ASSERT_TRUE(ea.ok() && eb.ok());
    const int exported = CountFds();
    ASSERT_TRUE(exporter.Release(Ptr(a + 5)).ok());
    EXPECT_EQ(CountFds(), exported - 1);
    EXPECT_EQ(gone, std::vector<DmaBufId>{ea->id});
    EXPECT_EQ(exporter.Release(Ptr(a)).code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(exporter.Release(Ptr(b + (1 << 20))).code(), absl::StatusCode::kNotFound);
    // A removed listener is not called.
    const uint64_t token = exporter.AddListener([](const DmaBufId&) { ADD_FAILURE(); });
    exporter.RemoveListener(token);
  }
  EXPECT_EQ(gone.size(), 2u);
  ASSERT_TRUE(driver_->Free(a).ok());
  ASSERT_TRUE(driver_->Free(b).ok());
  EXPECT_EQ(CountFds(), fds);
}

TEST_F(CudaExporterTest, BadInput) {
  const uint64_t base = Alloc(1 << 20);
  CudaDmaBufExporter exporter(driver_);
  const int fds = CountFds();
  EXPECT_EQ(exporter.Export(nullptr, 4096).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(exporter.Export(Ptr(base), 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(exporter.Export(Ptr(base), SIZE_MAX).status().code(),
            absl::StatusCode::kInvalidArgument);
  int host = 0;
  auto not_device = exporter.Export(&host, sizeof(host));
  EXPECT_EQ(not_device.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(not_device.status().message(), HasSubstr("is not CUDA device memory"));
  EXPECT_THAT(not_device.status().message(), HasSubstr("CUDA_ERROR_NOT_FOUND"));
  auto past = exporter.Export(Ptr(base + 4096), 1 << 20);
  EXPECT_EQ(past.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(past.status().message(), HasSubstr("4096 bytes past the end"));
  EXPECT_EQ(exporter.exports(), 0u);
  EXPECT_EQ(CountFds(), fds);
}

TEST_F(CudaExporterTest, ExportFailureNamesTheCallAndLeaksNothing) {
  const uint64_t base = Alloc(1 << 20);
  CudaDmaBufExporter exporter(driver_);
  const int fds = CountFds();
  fake_.SetDmaBufSupported(0);
  auto buf = exporter.Export(Ptr(base), 4096);
  EXPECT_EQ(buf.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(buf.status().message(), HasSubstr("cuMemGetHandleForAddressRange"));
  EXPECT_THAT(buf.status().message(), HasSubstr("1048576 bytes"));
  EXPECT_THAT(buf.status().message(), HasSubstr("CUDA_ERROR_NOT_SUPPORTED"));
  EXPECT_EQ(exporter.exported_allocations(), 0u);
  EXPECT_EQ(CountFds(), fds);
  fake_.SetDmaBufSupported(1);
  EXPECT_TRUE(exporter.Export(Ptr(base), 4096).ok());
  fake_.FailNext("cuPointerGetAttribute", 1, 1);
  EXPECT_THAT(exporter.Export(Ptr(base), 1).status().message(), HasSubstr("BUFFER_ID"));
}

TEST_F(CudaExporterTest, OddSizedAllocationsExportWholePages) {
  const uint64_t base = Alloc(5000);
  CudaDmaBufExporter exporter(driver_);
  auto buf = exporter.Export(Ptr(base + 4999), 1);
  ASSERT_TRUE(buf.ok()) << buf.status();
  EXPECT_EQ(buf->allocation_size, 5000u);
  EXPECT_EQ(exporter.Export(Ptr(base + 4999), 2).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(CudaExporterTest, PeermemAliasIsTheAllocation) {
  const uint64_t base = Alloc(1 << 20);
  CudaDmaBufExporter exporter(driver_, {.peermem_alias = true});
  auto buf = exporter.Export(Ptr(base + 8192), 4096);
  ASSERT_TRUE(buf.ok());
  EXPECT_EQ(buf->memory.alias, Ptr(base));
}

TEST_F(CudaExporterTest, AThreadWithoutAContextUsesThePrimaryOne) {
  const uint64_t base = Alloc(1 << 20);
  CudaDmaBufExporter exporter(driver_);
  CudaDmaBufExporter unbound(driver_, {.bind_primary_context = false});
  const int retains = fake_.Retains();
  absl::Status bound_status, unbound_status;
  std::thread([&] {
    unbound_status = unbound.Export(Ptr(base), 1).status();
    bound_status = exporter.Export(Ptr(base), 1).status();
    if (bound_status.ok()) bound_status = exporter.Export(Ptr(base + 1), 1).status();
  }).join();
  EXPECT_EQ(unbound_status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(unbound_status.message(), HasSubstr("CUDA_ERROR_INVALID_CONTEXT"));
  EXPECT_TRUE(bound_status.ok()) << bound_status;
  EXPECT_EQ(fake_.Retains(), retains);  // the driver holds one retain per device
}

TEST_F(CudaExporterTest, ConcurrentExportsOfOneAllocationExportOnce) {
  const uint64_t base = Alloc(8 << 20);
  CudaDmaBufExporter exporter(driver_);
  std::vector<std::thread> threads;
  std::vector<int> fds(4, -1);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 100; ++i) {
        auto buf = exporter.Export(Ptr(base + (t << 20) + i), 64);
        if (buf.ok()) fds[t] = buf->memory.fd;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(fake_.Exports(), 1u);
  for (int fd : fds) EXPECT_EQ(fd, fds[0]);
}

}  // namespace
}  // namespace dmareg
