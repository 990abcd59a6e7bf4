// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// ExternalMemoryRegistry::DmaMap over a VfioDomain over FakeVfioOps: one set
// of rules (the chunk's in the registry, the device's in the domain, each
// violation with one code), one table and one reference count per mapping
// (the container's), and one lock path (the registry's lock, then the
// container's: a VfioDomain's own lock is not on it).

#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "dmareg/external_memory.h"
#include "dmareg/testing/fake_vfio_ops.h"
#include "dmareg/vfio/vfio_domain.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dmareg {
namespace {

using ::dmareg::testing::FakeVfioOps;
using ::testing::AllOf;
using ::testing::HasSubstr;
using Call = FakeVfioOps::Call;

constexpr char kEdu[] = "0000:00:03.0";
constexpr uint64_t kPage = 4096;
constexpr uint64_t kBase = 0x7f00'0000'0000;  // the fake kernel never touches the memory
constexpr uint64_t kIova = 0x100000;
const void* At(uint64_t va) { return reinterpret_cast<const void*>(va); }
const AccessFlags kWrite(Access::kLocalWrite);

class VfioDmaMapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ops_->AddDevice({.address = kEdu, .group = 5});
    auto c = VfioContainer::Open({.ops = ops_});
    ASSERT_TRUE(c.ok()) << c.status();
    container_ = *c;
    auto d = VfioDomain::Open(kEdu, {.container = container_, .dma_address_bits = 28});
    ASSERT_TRUE(d.ok()) << d.status();
    domain_ = *d;
    ASSERT_TRUE(registry_->Register(At(kBase), 16 * kPage, kPage).ok());
  }
  void TearDown() override {
    registry_.reset();  // undoes what a test left mapped
    EXPECT_TRUE(container_->mappings().empty());
    domain_.reset();
    container_.reset();
    EXPECT_EQ(ops_->live_fds(), 0);
  }
  std::vector<FakeVfioOps::KernelMapping> kernel() {
    return ops_->kernel_mappings(container_->fd());
  }

  std::shared_ptr<FakeVfioOps> ops_ = std::make_shared<FakeVfioOps>();
  std::shared_ptr<VfioContainer> container_;
  std::shared_ptr<VfioDomain> domain_;
  std::unique_ptr<ExternalMemoryRegistry> registry_ = std::make_unique<ExternalMemoryRegistry>();
};

// 0x1001 bytes of a chunk of 4 KiB pages: the chunk's rule, before the
// device is asked; the same answer as over a device that maps any length.
TEST_F(VfioDmaMapTest, NotWholePagesOfTheChunkIsTheRegistrysRefusal) {
  for (uint64_t length : {uint64_t{0x1001}, kPage - 1}) {
    auto m = registry_->DmaMap(domain_, At(kBase), kIova, length, kWrite);
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();
    EXPECT_THAT(m.status().message(), HasSubstr("not whole 0x1000-byte pages of its chunk"));
  }
  EXPECT_EQ(ops_->calls(Call::kMapDma), 0);
  EXPECT_TRUE(container_->mappings().empty());
  EXPECT_EQ(registry_->mapping_count(), 0u);
}

// The device's rules are the domain's: the same code and words through
// DmaMap as through RegisterHost.
TEST_F(VfioDmaMapTest, TheDevicesRulesHaveOneCodeThroughEitherDoor) {
  const uint64_t past_mask = uint64_t{1} << 28;
  auto direct = domain_->RegisterHost({const_cast<void*>(At(kBase)), kPage, past_mask}, kWrite);
  auto mapped = registry_->DmaMap(domain_, At(kBase), past_mask, kPage, kWrite);
  EXPECT_EQ(direct.status().code(), absl::StatusCode::kOutOfRange) << direct.status();
  EXPECT_EQ(mapped.status().code(), absl::StatusCode::kOutOfRange) << mapped.status();
  EXPECT_THAT(direct.status().message(), HasSubstr("pass vfio:0000:00:03.0's 28-bit DMA mask"));
  EXPECT_THAT(mapped.status().message(), HasSubstr("pass vfio:0000:00:03.0's 28-bit DMA mask"));
  // VA and IOVA at other offsets in the IOMMU's pages.
  mapped = registry_->DmaMap(domain_, At(kBase), kIova + 0x800, kPage, kWrite);
  EXPECT_EQ(mapped.status().code(), absl::StatusCode::kInvalidArgument) << mapped.status();
  EXPECT_EQ(ops_->calls(Call::kMapDma), 0);
}

// The identical mapping again is counted once, by the container: its entry
// shows both references; each DmaUnmap drops one.
TEST_F(VfioDmaMapTest, TheContainerCountsTheIdenticalMapping) {
  auto a = registry_->DmaMap(domain_, At(kBase), kIova, 2 * kPage, kWrite);
  ASSERT_TRUE(a.ok()) << a.status();
  // Other rights with the same writability are the same IOMMU mapping.
  auto b = registry_->DmaMap(domain_, At(kBase), kIova, 2 * kPage, Access::kRemoteWrite);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->iova, b->iova);
  EXPECT_EQ(ops_->calls(Call::kMapDma), 1);
  ASSERT_EQ(container_->mappings().size(), 1u);
  EXPECT_EQ(container_->mappings()[0].refs, 2u);
  ASSERT_EQ(registry_->mappings().size(), 1u);
  EXPECT_EQ(registry_->mappings()[0].refs, 2u);
  EXPECT_EQ(registry_->mapping_count(), 1u);
  EXPECT_EQ(domain_->live_mappings(), 2);

  ASSERT_TRUE(registry_->DmaUnmap(domain_, At(kBase), kIova, 2 * kPage).ok());
  ASSERT_EQ(container_->mappings().size(), 1u);
  EXPECT_EQ(container_->mappings()[0].refs, 1u);
  EXPECT_EQ(registry_->mappings().at(0).refs, 1u);
  EXPECT_EQ(kernel().size(), 1u);
  ASSERT_TRUE(registry_->DmaUnmap(domain_, At(kBase), kIova, 2 * kPage).ok());
  EXPECT_TRUE(container_->mappings().empty());
  EXPECT_TRUE(kernel().empty());
  EXPECT_EQ(registry_->mapping_count(), 0u);
  absl::Status again = registry_->DmaUnmap(domain_, At(kBase), kIova, 2 * kPage);
  EXPECT_EQ(again.code(), absl::StatusCode::kNotFound) << again;
}

// Any other overlap is the container's refusal, naming both mappings, with
// no kernel call and nothing changed.
TEST_F(VfioDmaMapTest, AnOverlapIsRefusedByTheContainerNamingBoth) {
  ASSERT_TRUE(registry_->DmaMap(domain_, At(kBase), kIova, 4 * kPage, kWrite).ok());
  struct Case {
    const char* what;
    uint64_t va, iova, length;
    AccessFlags access;
  } cases[] = {
      {"same IOVA, other VA", kBase + 8 * kPage, kIova, 4 * kPage, kWrite},
      {"tail overlaps", kBase + 8 * kPage, kIova + 3 * kPage, 2 * kPage, kWrite},
      {"same VA, shorter", kBase, kIova, 2 * kPage, kWrite},
      {"the same extent read-only", kBase, kIova, 4 * kPage, AccessFlags()},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    auto m = registry_->DmaMap(domain_, At(c.va), c.iova, c.length, c.access);
    EXPECT_EQ(m.status().code(), absl::StatusCode::kAlreadyExists) << m.status();
    EXPECT_THAT(m.status().message(),
                AllOf(HasSubstr("DmaMap on vfio:0000:00:03.0"),
                      HasSubstr(Range::FromLength(c.iova, c.length)->ToString()),
                      HasSubstr(Range::FromLength(kIova, 4 * kPage)->ToString())));
  }
  EXPECT_EQ(ops_->calls(Call::kMapDma), 1);
  ASSERT_EQ(container_->mappings().size(), 1u);
  EXPECT_EQ(container_->mappings()[0].refs, 1u);
  EXPECT_EQ(registry_->mapping_count(), 1u);
  // A partial unmap, and one of IOVAs the registry never mapped.
  EXPECT_EQ(registry_->DmaUnmap(domain_, At(kBase), kIova, kPage).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry_->DmaUnmap(domain_, At(kBase), kIova + 8 * kPage, kPage).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(container_->mappings()[0].refs, 1u);
}

// The container's table holds what the domain mapped for others too (a
// cache): the registry shares an identical mapping and undoes only its own
// reference, and never what it did not make.
TEST_F(VfioDmaMapTest, TheRegistryUndoesOnlyWhatItMade) {
  auto direct = domain_->RegisterHost({const_cast<void*>(At(kBase)), kPage, kIova}, kWrite);
  ASSERT_TRUE(direct.ok()) << direct.status();
  absl::Status s = registry_->DmaUnmap(domain_, At(kBase), kIova, kPage);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  ASSERT_TRUE(registry_->DmaMap(domain_, At(kBase), kIova, kPage, kWrite).ok());
  EXPECT_EQ(container_->mappings().at(0).refs, 2u);
  // The chunk is in use; the registry's going undoes its reference only.
  EXPECT_EQ(registry_->Unregister(At(kBase), 16 * kPage).code(),
            absl::StatusCode::kFailedPrecondition);
  registry_.reset();
  ASSERT_EQ(container_->mappings().size(), 1u);
  EXPECT_EQ(container_->mappings()[0].refs, 1u);
  ASSERT_TRUE(domain_->Deregister(*direct).ok());
}

// One lock path: while another thread holds the VfioDomain's lock (inside
// ReadConfig, held in the fake's pread), DmaMap and DmaUnmap on it still
// run: they take the registry's lock and the container's only.
TEST_F(VfioDmaMapTest, DmaMapRunsWhileTheDomainsLockIsHeld) {
  std::promise<void> inside, release;
  std::shared_future<void> released = release.get_future().share();
  ops_->SetHook(Call::kPread, [&inside, released] {
    inside.set_value();
    released.wait();
  });
  std::thread reader([this] {
    uint32_t id = 0;
    EXPECT_TRUE(domain_->ReadConfig(0, &id, sizeof(id)).ok());
  });
  inside.get_future().wait();  // the reader holds the domain's lock now

  std::promise<absl::Status> done;
  std::future<absl::Status> result = done.get_future();
  std::thread mapper([this, &done] {
    absl::Status s = registry_->DmaMap(domain_, At(kBase), kIova, kPage, kWrite).status();
    if (s.ok()) s = registry_->DmaUnmap(domain_, At(kBase), kIova, kPage);
    done.set_value(s);
  });
  // Not a timing assertion: a deadlock detector. On the old path DmaMap
  // waits for the reader forever; it is let go afterwards either way.
  const bool finished = result.wait_for(std::chrono::seconds(60)) == std::future_status::ready;
  EXPECT_TRUE(finished) << "DmaMap waited for the VfioDomain's lock";
  release.set_value();
  mapper.join();
  reader.join();
  ops_->SetHook(Call::kPread, nullptr);
  EXPECT_TRUE(result.get().ok());
  EXPECT_EQ(ops_->calls(Call::kMapDma), 1);
  EXPECT_EQ(ops_->calls(Call::kUnmapDma), 1);
}

}  // namespace
}  // namespace dmareg
