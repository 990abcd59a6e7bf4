// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/testing/fake_domain.h"

#include <sys/mman.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace dmareg::testing {

FakeDomain::FakeDomain(std::string name) : name_(std::move(name)) {
  caps_.device_name = name_;
  caps_.kind = DeviceKind::kFake;
  caps_.caller_iova = true;
  caps_.dmabuf_import = true;
}

absl::StatusOr<DeviceMapping> FakeDomain::Add(LiveMapping m) {
  std::function<void(uintptr_t, size_t)> hook;
  std::function<uint64_t()> tag_source;
  {
    std::lock_guard<std::mutex> lock(mu_);
    hook = hook_;
    tag_source = tag_source_;
  }
  if (tag_source) m.tag = tag_source();
  if (hook) hook(m.addr, m.length);
  if (!m.dmabuf && require_mapped_.load()) {
    // msync(MS_ASYNC) is a no-op on mapped anonymous memory and ENOMEM
    // where part of the range is not mapped: the check the kernel's pinning
    // makes, without touching the pages.
    if (msync(reinterpret_cast<void*>(m.addr), m.length, MS_ASYNC) != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "fake registration on %s: [%#x, +%#x) is not mapped (EFAULT)", name_, m.addr, m.length));
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (fail_next_ > 0) {
    --fail_next_;
    return fail_status_;
  }
  const uint32_t key = next_key_++;
  live_.emplace(key, m);
  total_.fetch_add(1);
  return DeviceMapping{key, key ^ 0x80000000u, m.iova, m.length, key};
}

absl::StatusOr<DeviceMapping> FakeDomain::RegisterHost(const HostMemory& memory, AccessFlags access,
                                                       Paging paging) {
  const auto addr = reinterpret_cast<uintptr_t>(memory.addr);
  if (paging == Paging::kAutomatic) {
    return absl::InvalidArgumentError(
        absl::StrCat("fake registration on ", name_, ": paging is kPinned or kOnDemand"));
  }
  if (memory.iova) {
    absl::Status placed = CheckIovaPlacement(caps_, addr, *memory.iova, memory.length,
                                             absl::StrCat("fake registration on ", name_));
    if (!placed.ok()) return placed;
  }
  if (paging == Paging::kOnDemand) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!od_status_.ok()) {
      od_refusals_.fetch_add(1);
      return od_status_;
    }
  }
  return Add(LiveMapping{.addr = addr,
                         .length = memory.length,
                         .access = access,
                         .iova = memory.iova.value_or(addr),
                         .on_demand = paging == Paging::kOnDemand});
}

void FakeDomain::RefuseOnDemand(absl::Status status) {
  std::lock_guard<std::mutex> lock(mu_);
  od_status_ = std::move(status);
}

absl::StatusOr<DeviceMapping> FakeDomain::RegisterDmaBuf(const DmaBufMemory& memory,
                                                         AccessFlags access) {
  if (!caps_.dmabuf_import) return Domain::RegisterDmaBuf(memory, access);
  if (memory.iova) {
    absl::Status placed = CheckIovaPlacement(caps_, memory.offset, *memory.iova, memory.length,
                                             absl::StrCat("fake dma-buf registration on ", name_));
    if (!placed.ok()) return placed;
  }
  return Add(LiveMapping{.addr = memory.offset,
                         .length = memory.length,
                         .access = access,
                         .dmabuf = true,
                         .fd = memory.fd,
                         .iova = memory.iova.value_or(memory.offset)});
}

absl::Status FakeDomain::Deregister(const DeviceMapping& mapping) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(mapping.lkey);
  if (it == live_.end() || it->second.iova != mapping.iova || it->second.length != mapping.length) {
    return absl::NotFoundError(
        absl::StrFormat("fake deregister on %s: no mapping with lkey %u at IOVA %#x, %#x bytes",
                        name_, mapping.lkey, mapping.iova, mapping.length));
  }
  live_.erase(it);
  total_dereg_.fetch_add(1);
  if (!dereg_status_.ok()) {
    dereg_errors_.fetch_add(1);
    return dereg_status_;
  }
  return absl::OkStatus();
}

void FakeDomain::FailNextRegistrations(int n, absl::Status status) {
  std::lock_guard<std::mutex> lock(mu_);
  fail_next_ = n;
  fail_status_ = std::move(status);
}

void FakeDomain::FailDeregistrations(absl::Status status) {
  std::lock_guard<std::mutex> lock(mu_);
  dereg_status_ = std::move(status);
}

void FakeDomain::SetTagSource(std::function<uint64_t()> source) {
  std::lock_guard<std::mutex> lock(mu_);
  tag_source_ = std::move(source);
}

void FakeDomain::SetRegisterHook(std::function<void(uintptr_t, size_t)> hook) {
  std::lock_guard<std::mutex> lock(mu_);
  hook_ = std::move(hook);
}

int64_t FakeDomain::live_registrations() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(live_.size());
}

std::vector<FakeDomain::LiveMapping> FakeDomain::live_mappings() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<LiveMapping> out;
  for (const auto& [key, m] : live_) out.push_back(m);
  return out;
}

bool FakeDomain::Lookup(uint32_t lkey, LiveMapping* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(lkey);
  if (it == live_.end()) return false;
  *out = it->second;
  return true;
}

}  // namespace dmareg::testing
