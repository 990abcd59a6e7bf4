// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// CudaDriver and CudaDmaBufExporter on a real NVIDIA GPU and driver (label
// gpu). Without libcuda or a GPU every test skips with the reason; with
// DMAREG_GPU_REQUIRED=1 (scripts/gpu-check) that is a failure instead.

#include <dirent.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "dmareg/dmabuf/cuda_driver.h"
#include "dmareg/dmabuf/cuda_exporter.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dmareg {
namespace {

using ::testing::HasSubstr;

constexpr long kDmaBufMagic = 0x444d4142;  // DMA_BUF_MAGIC, <linux/magic.h>

int CountFds() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n - 1;
}

const void* Ptr(uint64_t p) { return reinterpret_cast<const void*>(p); }

bool Required() {
  const char* r = std::getenv("DMAREG_GPU_REQUIRED");
  return r != nullptr && std::string(r) == "1";
}

class CudaSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto driver = CudaDriver::Load();
    if (!driver.ok()) {
      if (Required()) FAIL() << "DMAREG_GPU_REQUIRED=1 but: " << driver.status();
      GTEST_SKIP() << "no usable CUDA driver: " << driver.status();
    }
    driver_ = *driver;
    if (driver_->DeviceCount() == 0) {
      if (Required()) FAIL() << "DMAREG_GPU_REQUIRED=1 but the driver sees no GPU";
      GTEST_SKIP() << "the CUDA driver sees no GPU";
    }
    ASSERT_TRUE(driver_->UsePrimaryContext(0).ok());
    absl::StatusOr<bool> dmabuf = driver_->DmaBufSupported(0);
    ASSERT_TRUE(dmabuf.ok()) << dmabuf.status();
    if (!*dmabuf) {
      if (Required()) FAIL() << driver_->DeviceName(0) << " cannot export dma-bufs";
      GTEST_SKIP() << driver_->DeviceName(0)
                   << ": CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED is 0 (needs the open kernel "
                      "modules and a kernel with dma-buf)";
    }
  }
  void TearDown() override {
    for (uint64_t p : allocations_) EXPECT_TRUE(driver_->Free(p).ok());
  }

  uint64_t Alloc(size_t size) {
    absl::StatusOr<uint64_t> p = driver_->Allocate(size);
    EXPECT_TRUE(p.ok()) << p.status();
    if (p.ok()) allocations_.push_back(*p);
    return p.value_or(0);
  }
  void Forget(uint64_t p) { std::erase(allocations_, p); }

  std::shared_ptr<CudaDriver> driver_;
  std::vector<uint64_t> allocations_;
};

TEST_F(CudaSourceTest, ExportsOneDmaBufPerAllocation) {
  const uint64_t a = Alloc((4 << 20) + 1000);
  const uint64_t b = Alloc(1 << 20);
  std::vector<uint8_t> pattern(4096, 0x5a);
  ASSERT_TRUE(driver_->CopyToDevice(a + 4096, pattern.data(), pattern.size()).ok());
  const int fds = CountFds();
  {
    CudaDmaBufExporter exporter(driver_);
    auto a1 = exporter.Export(Ptr(a + 4096 + 7), 1000);
    ASSERT_TRUE(a1.ok()) << a1.status();
    EXPECT_EQ(a1->base, a);
    EXPECT_EQ(a1->allocation_size, (4u << 20) + 1000);
    EXPECT_EQ(a1->memory.offset, 4096u + 7);
    EXPECT_NE(a1->buffer_id, 0u);
    struct statfs fs = {};
    ASSERT_EQ(fstatfs(a1->memory.fd, &fs), 0);
    EXPECT_EQ(fs.f_type, kDmaBufMagic) << "the exported fd is not a dma-buf";
    struct stat st = {};
    ASSERT_EQ(fstat(a1->memory.fd, &st), 0);
    EXPECT_EQ(a1->id.ino, static_cast<uint64_t>(st.st_ino));
    // Its size is the whole allocation, page-rounded.
    EXPECT_GE(static_cast<uint64_t>(lseek(a1->memory.fd, 0, SEEK_END)), (4u << 20) + 1000);

    auto a2 = exporter.Export(Ptr(a + (4 << 20) + 999), 1);  // the last byte
    auto b1 = exporter.Export(Ptr(b), 1 << 20);
    ASSERT_TRUE(a2.ok() && b1.ok());
    EXPECT_EQ(a2->memory.fd, a1->memory.fd);
    EXPECT_NE(b1->id, a1->id);
    EXPECT_EQ(exporter.exports(), 2u);
    EXPECT_EQ(CountFds(), fds + 2);
    EXPECT_EQ(exporter.Export(Ptr(a + (4 << 20) + 999), 2).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(CountFds(), fds);
}

TEST_F(CudaSourceTest, AFreedAndRemadeAllocationIsExportedAnew) {
  const uint64_t a = Alloc(8 << 20);
  std::vector<DmaBufId> gone;  // outlives the exporter, which reports at its end
  CudaDmaBufExporter exporter(driver_);
  const uint64_t token = exporter.AddListener([&](const DmaBufId& id) { gone.push_back(id); });
  auto first = exporter.Export(Ptr(a), 4096);
  ASSERT_TRUE(first.ok()) << first.status();
  const int fds = CountFds();

  ASSERT_TRUE(driver_->Free(a).ok());
  Forget(a);
  const uint64_t again = Alloc(8 << 20);
  absl::StatusOr<uint64_t> id = driver_->GetBufferId(again);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_NE(*id, first->buffer_id) << "CUDA reused a buffer id";
  if (again != a) {
    // The driver put it elsewhere: the old address is no device memory now.
    EXPECT_EQ(exporter.Export(Ptr(a), 4096).status().code(), absl::StatusCode::kInvalidArgument);
    GTEST_SKIP() << "the new allocation did not land at the freed address; buffer ids checked";
  }
  auto second = exporter.Export(Ptr(again), 4096);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->buffer_id, *id);
  EXPECT_NE(second->id, first->id);
  EXPECT_EQ(gone, std::vector<DmaBufId>{first->id});
  EXPECT_EQ(CountFds(), fds);
  exporter.RemoveListener(token);
}

TEST_F(CudaSourceTest, HostMemoryIsRefusedNamingTheCudaError) {
  CudaDmaBufExporter exporter(driver_);
  std::vector<char> host(4096);
  auto buf = exporter.Export(host.data(), host.size());
  EXPECT_EQ(buf.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(buf.status().message(), HasSubstr("is not CUDA device memory"));
  EXPECT_THAT(buf.status().message(), HasSubstr("CUDA_ERROR_"));
}

TEST_F(CudaSourceTest, ProbeSaysYes) {
  CudaProbe probe = ProbeCuda();
  EXPECT_TRUE(probe.available) << probe.detail;
  EXPECT_THAT(probe.detail, HasSubstr("dma-buf export: yes"));
}

}  // namespace
}  // namespace dmareg
