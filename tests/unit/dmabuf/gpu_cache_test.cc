// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// GpuRegistrationCache over the fake libcuda and FakeDomains: a device
// pointer cached by its allocation's dma-buf identity, a replaced
// allocation a miss (never a stale hit), one export for several NICs.

#include "dmareg/dmabuf/gpu_cache.h"

#include <dirent.h>
#include <dlfcn.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "dmareg/cache.h"
#include "dmareg/dmabuf/cuda_driver.h"
#include "dmareg/dmabuf/cuda_exporter.h"
#include "dmareg/registration_set.h"
#include "dmareg/testing/fake_dmabuf.h"
#include "dmareg/testing/fake_domain.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dmareg {
namespace {

const void* Ptr(uint64_t p) { return reinterpret_cast<const void*>(p); }

int CountFds() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n - 1;
}

class GpuCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(fake_, nullptr) << dlerror();
    Control<void()>("fake_cuda_reset")();
    auto driver = CudaDriver::Load({.library = FAKE_LIBCUDA_PATH});
    ASSERT_TRUE(driver.ok()) << driver.status();
    driver_ = *driver;
    ASSERT_TRUE(driver_->UsePrimaryContext(0).ok());
    exporter_ = std::make_shared<CudaDmaBufExporter>(driver_);
    for (int i = 0; i < 2; ++i) {
      domains_.push_back(std::make_shared<testing::FakeDomain>(i == 0 ? "nic0" : "nic1"));
      auto cache = RegistrationCache::Create(
          domains_.back(),
          {.monitoring = Monitoring::kExplicitOnly, .inspect_dmabuf = bufs_.Inspector()});
      ASSERT_TRUE(cache.ok()) << cache.status();
      caches_.push_back(std::move(*cache));
    }
    auto gpu = GpuRegistrationCache::Create(exporter_, {caches_[0].get(), caches_[1].get()});
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    gpu_ = std::move(*gpu);
  }
  void TearDown() override { Control<void()>("fake_cuda_reset")(); }

  template <typename F>
  F* Control(const char* name) {
    return reinterpret_cast<F*>(dlsym(fake_, name));
  }
  uint64_t Alloc(size_t size) { return driver_->Allocate(size).value_or(0); }

  void* fake_ = dlopen(FAKE_LIBCUDA_PATH, RTLD_NOW | RTLD_LOCAL);
  testing::FakeDmaBufs bufs_;
  std::shared_ptr<CudaDriver> driver_;
  std::shared_ptr<CudaDmaBufExporter> exporter_;
  std::vector<std::shared_ptr<testing::FakeDomain>> domains_;
  std::vector<std::unique_ptr<RegistrationCache>> caches_;
  std::unique_ptr<GpuRegistrationCache> gpu_;
};

TEST_F(GpuCacheTest, CreateRefusesMissingParts) {
  EXPECT_EQ(GpuRegistrationCache::Create(nullptr, {caches_[0].get()}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GpuRegistrationCache::Create(exporter_, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GpuRegistrationCache::Create(exporter_, {caches_[0].get(), nullptr}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu_->Acquire(Ptr(Alloc(1 << 20)), 1, Access::kLocalWrite, 2).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(GpuCacheTest, PointersInOneAllocationHitOneMapping) {
  const uint64_t base = Alloc(2 << 20);
  auto r1 = gpu_->Acquire(Ptr(base), 4096, Access::kLocalWrite);
  ASSERT_TRUE(r1.ok()) << r1.status();
  auto r2 = gpu_->Acquire(Ptr(base + 100), 200, Access::kLocalWrite);
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_TRUE(r1->is_dmabuf());
  EXPECT_TRUE(r1->SameMapping(*r2));
  EXPECT_EQ(caches_[0]->stats().dmabuf_misses, 1u);
  EXPECT_EQ(caches_[0]->stats().dmabuf_hits, 1u);
  EXPECT_EQ(domains_[0]->live_registrations(), 1);
  EXPECT_EQ(exporter_->exports(), 1u);
}

TEST_F(GpuCacheTest, AReplacedAllocationIsAMissAndTheOldMappingGoes) {
  const uint64_t base = Alloc(2 << 20);
  auto old = gpu_->Acquire(Ptr(base), 4096, Access::kRemoteWrite);
  ASSERT_TRUE(old.ok()) << old.status();
  const int fds = CountFds();
  ASSERT_EQ(Control<int(unsigned long long)>("fake_cuda_reallocate")(base), 0);
  auto fresh = gpu_->Acquire(Ptr(base), 4096, Access::kRemoteWrite);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_FALSE(fresh->SameMapping(*old));
  EXPECT_EQ(caches_[0]->stats().dmabuf_misses, 2u);
  EXPECT_EQ(caches_[0]->stats().dmabuf_hits, 0u);
  EXPECT_EQ(CountFds(), fds);  // the old export closed
  // The old mapping was invalidated: it goes with its handle.
  old->Reset();
  EXPECT_EQ(domains_[0]->live_registrations(), 1);
  EXPECT_EQ(caches_[0]->stats().dmabuf_regions, 1u);
}

TEST_F(GpuCacheTest, AcquireOnAllExportsOnce) {
  const uint64_t base = Alloc(4 << 20);
  auto set = gpu_->AcquireOnAll(Ptr(base + (1 << 20)), 1 << 20, Access::kRemoteRead);
  ASSERT_TRUE(set.ok()) << set.status();
  ASSERT_EQ(set->size(), 2u);
  EXPECT_EQ(exporter_->exports(), 1u);
  EXPECT_EQ(domains_[0]->live_registrations(), 1);
  EXPECT_EQ(domains_[1]->live_registrations(), 1);
  // All or nothing: a refusal on the second NIC leaves the first as it was.
  const uint64_t other = Alloc(1 << 20);
  domains_[1]->FailNextRegistrations(1, absl::ResourceExhaustedError("no MRs left"));
  auto failed = gpu_->AcquireOnAll(Ptr(other), 4096, Access::kRemoteRead);
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(domains_[0]->live_registrations(), 1);
  EXPECT_EQ(domains_[1]->live_registrations(), 1);
}

TEST_F(GpuCacheTest, BadPointersAreRefusedBeforeAnyCache) {
  int host = 0;
  EXPECT_EQ(gpu_->Acquire(&host, sizeof(host), Access::kLocalWrite).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu_->Acquire(nullptr, 1, Access::kLocalWrite).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(caches_[0]->stats().misses + caches_[0]->stats().registration_failures, 0u);
}

}  // namespace
}  // namespace dmareg
