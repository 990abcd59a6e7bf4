// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// testing/fake_domain.h: a Domain with no device behind it, for tests.
//
// `FakeDomain` hands out unique keys, counts live registrations (so a test
// can assert that nothing leaked), remembers every live mapping's span and
// access (so a test can check what the cache asked for), and can be told to
// fail the next registrations with a chosen status.
//
//   auto fake = std::make_shared<dmareg::testing::FakeDomain>();
//   auto cache = dmareg::RegistrationCache::Create(fake).value();
//   fake->FailNextRegistrations(1, absl::ResourceExhaustedError("ENOMEM"));
//   EXPECT_FALSE(cache->Acquire(buf, 4096, {}).ok());
//   EXPECT_EQ(fake->live_registrations(), 0);
//
// `NoopDomain` is the cheapest possible Domain (no bookkeeping, no lock) for
// benchmarks of the cache itself.

#ifndef DMAREG_TESTING_FAKE_DOMAIN_H_
#define DMAREG_TESTING_FAKE_DOMAIN_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "dmareg/domain.h"

#pragma GCC visibility push(default)

namespace dmareg::testing {

class FakeDomain : public Domain {
 public:
  struct LiveMapping {
    uintptr_t addr = 0;  // host address, or dma-buf offset
    size_t length = 0;
    AccessFlags access{};
    bool dmabuf = false;
    int fd = -1;
    uint64_t tag = 0;        // the tag source's value when registration began
    uint64_t iova = 0;       // where the device sees `addr`
    bool on_demand = false;  // registered with Paging::kOnDemand
  };

  explicit FakeDomain(std::string name = "fake");

  const std::string& name() const override { return name_; }
  const DomainCapabilities& capabilities() const override { return caps_; }
  DomainCapabilities& mutable_capabilities() { return caps_; }

  using Domain::RegisterHost;
  // IOVA = VA (as verbs), or the caller's IOVA (CheckIovaPlacement); the
  // offset for dma-bufs. Paging::kOnDemand is recorded as such and refused
  // as RefuseOnDemand says.
  absl::StatusOr<DeviceMapping> RegisterHost(const HostMemory& memory, AccessFlags access,
                                             Paging paging) override;
  absl::StatusOr<DeviceMapping> RegisterDmaBuf(const DmaBufMemory& memory,
                                               AccessFlags access) override;
  // NotFound for a mapping it does not hold (or whose extent differs).
  absl::Status Deregister(const DeviceMapping& mapping) override;

  // The next `n` registrations fail with `status` (and register nothing).
  void FailNextRegistrations(int n, absl::Status status);
  // Every later on-demand registration fails with `status` (OK: accepted
  // again), as a kernel without ODP refuses IBV_ACCESS_ON_DEMAND.
  void RefuseOnDemand(absl::Status status);
  int64_t on_demand_refusals() const { return od_refusals_.load(); }
  // Every later Deregister fails with `status` (the mapping is still dropped,
  // as a kernel drops it when the device is gone).
  void FailDeregistrations(absl::Status status);
  // Called at the start of every registration, host or dma-buf (with the
  // offset as `addr`), outside any lock of ours:
  // lets a test run code in the middle of a miss, e.g. Invalidate.
  void SetRegisterHook(std::function<void(uintptr_t addr, size_t length)> hook);

  // Each registration records `source()` taken when it begins (a model's
  // clock, say) in LiveMapping::tag.
  void SetTagSource(std::function<uint64_t()> source);
  // Host registrations of memory that is not mapped fail, as the kernel's
  // do (EFAULT), instead of succeeding on any address.
  void RequireMappedMemory(bool on) { require_mapped_.store(on); }

  int64_t live_registrations() const;
  int64_t total_registrations() const { return total_.load(); }
  int64_t total_deregistrations() const { return total_dereg_.load(); }
  int64_t deregistration_errors() const { return dereg_errors_.load(); }
  std::vector<LiveMapping> live_mappings() const;
  // The live mapping with this lkey, if any.
  bool Lookup(uint32_t lkey, LiveMapping* out) const;

 private:
  absl::StatusOr<DeviceMapping> Add(LiveMapping m);

  const std::string name_;
  DomainCapabilities caps_;
  mutable std::mutex mu_;
  absl::flat_hash_map<uint32_t, LiveMapping> live_;  // by lkey; guarded by mu_
  uint32_t next_key_ = 1;                            // guarded by mu_
  int fail_next_ = 0;                                // guarded by mu_
  absl::Status fail_status_;                         // guarded by mu_
  absl::Status dereg_status_;                        // guarded by mu_
  absl::Status od_status_;                           // guarded by mu_
  std::function<void(uintptr_t, size_t)> hook_;      // guarded by mu_
  std::function<uint64_t()> tag_source_;             // guarded by mu_
  std::atomic<bool> require_mapped_{false};
  std::atomic<int64_t> total_{0};
  std::atomic<int64_t> total_dereg_{0};
  std::atomic<int64_t> dereg_errors_{0};
  std::atomic<int64_t> od_refusals_{0};
};

// Registers nothing, remembers nothing: keys are derived from the address
// (a dma-buf's: its offset, which is also its IOVA).
class NoopDomain : public Domain {
 public:
  NoopDomain() : name_("noop") {
    caps_.device_name = name_;
    caps_.fast_registration = true;
    caps_.dmabuf_import = true;
  }
  const std::string& name() const override { return name_; }
  const DomainCapabilities& capabilities() const override { return caps_; }
  using Domain::RegisterHost;
  absl::StatusOr<DeviceMapping> RegisterHost(const HostMemory& memory, AccessFlags,
                                             Paging) override {
    const auto a = reinterpret_cast<uint64_t>(memory.addr);
    const auto key = static_cast<uint32_t>(a >> 12);
    return DeviceMapping{key, key, a, memory.length, 0};
  }
  absl::StatusOr<DeviceMapping> RegisterDmaBuf(const DmaBufMemory& memory, AccessFlags) override {
    const auto key = static_cast<uint32_t>(memory.offset >> 12);
    return DeviceMapping{key, key, memory.offset, memory.length, 0};
  }
  absl::Status Deregister(const DeviceMapping&) override { return absl::OkStatus(); }

 private:
  std::string name_;
  DomainCapabilities caps_;
};

}  // namespace dmareg::testing

#pragma GCC visibility pop

#endif  // DMAREG_TESTING_FAKE_DOMAIN_H_
