// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// ExternalMemoryRegistry over FakeDomain: chunks, device mappings at a
// caller's IOVA and every refusal, each of which must leave the registry and
// the domain as they were. The fake never touches the memory, so addresses
// are plain numbers.

#include "dmareg/external_memory.h"

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "dmareg/testing/fake_dmabuf.h"
#include "dmareg/testing/fake_domain.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dmareg {
namespace {

using testing::FakeDomain;
using ::testing::HasSubstr;

constexpr uint64_t kPage = 4096;
constexpr uint64_t kBase = 0x7f00'0000'0000;  // VA of the test chunks
constexpr uint64_t kIova = 0x5a5a'0000'0000;

const void* At(uint64_t addr) { return reinterpret_cast<const void*>(addr); }

class ExternalMemoryTest : public ::testing::Test {
 protected:
  void TearDown() override {
    registry_.reset();  // deregisters whatever a test left mapped
    EXPECT_EQ(fake_->live_registrations(), 0);
    EXPECT_EQ(fake_->total_registrations(), fake_->total_deregistrations());
  }
  // Registered chunk [kBase, kBase + pages * kPage), no IOVA table.
  void RegisterChunk(uint64_t pages = 16) {
    ASSERT_TRUE(registry_->Register(At(kBase), pages * kPage, kPage).ok());
  }

  std::shared_ptr<FakeDomain> fake_ = std::make_shared<FakeDomain>("fake0");
  std::unique_ptr<ExternalMemoryRegistry> registry_ = std::make_unique<ExternalMemoryRegistry>();
};

TEST_F(ExternalMemoryTest, RegisterLookupUnregister) {
  const std::vector<uint64_t> iovas = {0x10000, 0x11000, 0x20000, 0x21000};
  ASSERT_TRUE(registry_->Register(At(kBase), 4 * kPage, kPage, iovas).ok());
  EXPECT_EQ(registry_->chunk_count(), 1u);
  std::optional<ExternalMemoryChunk> c = registry_->Lookup(At(kBase + 3 * kPage + 5));
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->va, Range::FromLength(kBase, 4 * kPage));
  EXPECT_EQ(c->page_size, kPage);
  EXPECT_EQ(c->iovas, iovas);
  EXPECT_FALSE(registry_->Lookup(At(kBase + 4 * kPage)).has_value());
  EXPECT_FALSE(registry_->Lookup(At(kBase - 1)).has_value());
  ASSERT_TRUE(registry_->Unregister(At(kBase), 4 * kPage).ok());
  EXPECT_EQ(registry_->chunk_count(), 0u);
  EXPECT_FALSE(registry_->Lookup(At(kBase)).has_value());
}

TEST_F(ExternalMemoryTest, RegisterRefusesBadChunks) {
  const std::vector<uint64_t> two = {0x10000, 0x11000};
  const std::vector<uint64_t> unaligned_iova = {0x10000, 0x11001};
  struct Case {
    const char* what;
    uint64_t addr, length, page;
    std::span<const uint64_t> iovas;
    const char* message;
  } cases[] = {
      {"zero length", kBase, 0, kPage, {}, "zero length"},
      {"null", 0, kPage, kPage, {}, "null address"},
      {"page size 0", kBase, kPage, 0, {}, "power of two"},
      {"page size 3000", kBase, 3 * 3000, 3000, {}, "power of two"},
      {"unaligned address", kBase + 8, kPage, kPage, {}, "whole pages"},
      {"unaligned length", kBase, kPage + 1, kPage, {}, "whole pages"},
      {"last page", ~kPage + 1, kPage, kPage, {}, "end of the address space"},
      {"wraps", ~kPage + 1, 2 * kPage, kPage, {}, "end of the address space"},
      {"IOVA table too short", kBase, 3 * kPage, kPage, two, "2 IOVAs for 3 pages"},
      {"IOVA table too long", kBase, kPage, kPage, two, "2 IOVAs for 1 pages"},
      {"IOVA not a page start", kBase, 2 * kPage, kPage, unaligned_iova, "0x11001"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    absl::Status s = registry_->Register(At(c.addr), c.length, c.page, c.iovas);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(s.message(), HasSubstr(c.message));
    EXPECT_THAT(s.message(), HasSubstr("Register of"));
  }
  EXPECT_EQ(registry_->chunk_count(), 0u);
}

TEST_F(ExternalMemoryTest, OverlappingChunksAreRefusedAdjacentOnesAreNot) {
  ASSERT_TRUE(registry_->Register(At(kBase), 4 * kPage, kPage).ok());
  absl::Status s = registry_->Register(At(kBase + 3 * kPage), 2 * kPage, kPage);
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists) << s;
  EXPECT_THAT(s.message(), HasSubstr(Range::FromLength(kBase, 4 * kPage)->ToString()));
  s = registry_->Register(At(kBase - kPage), 8 * kPage, kPage);  // covers it
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists) << s;
  EXPECT_EQ(registry_->chunk_count(), 1u);
  EXPECT_TRUE(registry_->Register(At(kBase + 4 * kPage), kPage, kPage).ok());
  EXPECT_TRUE(registry_->Register(At(kBase - 2 * kPage), 2 * kPage, kPage).ok());
  EXPECT_EQ(registry_->chunk_count(), 3u);
}

TEST_F(ExternalMemoryTest, UnregisterTakesExactlyAChunk) {
  RegisterChunk(4);
  absl::Status s = registry_->Unregister(At(kBase + 8 * kPage), kPage);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  s = registry_->Unregister(At(kBase), 2 * kPage);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr("unregistered whole"));
  s = registry_->Unregister(At(kBase + kPage), kPage);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(registry_->chunk_count(), 1u);
}

TEST_F(ExternalMemoryTest, UnregisterWhileMappedIsRefused) {
  RegisterChunk(4);
  ASSERT_TRUE(registry_->DmaMap(fake_, At(kBase), kIova, kPage, {}).ok());
  ASSERT_TRUE(registry_->DmaMap(fake_, At(kBase + kPage), kIova + kPage, kPage, {}).ok());
  absl::Status s = registry_->Unregister(At(kBase), 4 * kPage);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(s.message(), HasSubstr("2 device mapping"));
  EXPECT_THAT(s.message(), HasSubstr("on fake0"));
  EXPECT_EQ(registry_->chunk_count(), 1u);
  EXPECT_EQ(fake_->live_registrations(), 2);
  ASSERT_TRUE(registry_->DmaUnmap(fake_, At(kBase), kIova, kPage).ok());
  ASSERT_TRUE(registry_->DmaUnmap(fake_, At(kBase + kPage), kIova + kPage, kPage).ok());
  EXPECT_TRUE(registry_->Unregister(At(kBase), 4 * kPage).ok());
}

TEST_F(ExternalMemoryTest, DmaMapRegistersAtTheCallersIova) {
  RegisterChunk();
  const AccessFlags access = Access::kRemoteWrite | Access::kRemoteRead;
  absl::StatusOr<DeviceMapping> m =
      registry_->DmaMap(fake_, At(kBase + 2 * kPage), kIova, 3 * kPage, access);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->iova, kIova);
  EXPECT_EQ(m->length, 3 * kPage);
  std::vector<FakeDomain::LiveMapping> live = fake_->live_mappings();
  ASSERT_EQ(live.size(), 1u);
  EXPECT_EQ(live[0].addr, kBase + 2 * kPage);
  EXPECT_EQ(live[0].iova, kIova);
  EXPECT_EQ(live[0].length, 3 * kPage);
  EXPECT_EQ(live[0].access, access);

  std::vector<ExternalMemoryMapping> all = registry_->mappings();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].domain, "fake0");
  EXPECT_EQ(all[0].va, kBase + 2 * kPage);
  EXPECT_EQ(all[0].iova, kIova);
  EXPECT_EQ(all[0].length, 3 * kPage);
  EXPECT_EQ(all[0].refs, 1u);
  EXPECT_EQ(all[0].mapping.lkey, m->lkey);

  ASSERT_TRUE(registry_->DmaUnmap(fake_, At(kBase + 2 * kPage), kIova, 3 * kPage).ok());
  EXPECT_EQ(fake_->live_registrations(), 0);
  EXPECT_EQ(registry_->mapping_count(), 0u);
}

TEST_F(ExternalMemoryTest, TheIdenticalMappingAgainIsShared) {
  RegisterChunk();
  absl::StatusOr<DeviceMapping> a = registry_->DmaMap(fake_, At(kBase), kIova, 2 * kPage, {});
  absl::StatusOr<DeviceMapping> b = registry_->DmaMap(fake_, At(kBase), kIova, 2 * kPage, {});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->lkey, b->lkey);
  EXPECT_EQ(a->handle, b->handle);
  EXPECT_EQ(fake_->total_registrations(), 1);
  EXPECT_EQ(registry_->mappings().at(0).refs, 2u);

  ASSERT_TRUE(registry_->DmaUnmap(fake_, At(kBase), kIova, 2 * kPage).ok());
  EXPECT_EQ(fake_->live_registrations(), 1);
  EXPECT_EQ(registry_->mappings().at(0).refs, 1u);
  ASSERT_TRUE(registry_->DmaUnmap(fake_, At(kBase), kIova, 2 * kPage).ok());
  EXPECT_EQ(fake_->live_registrations(), 0);
  absl::Status s = registry_->DmaUnmap(fake_, At(kBase), kIova, 2 * kPage);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(s.message(), HasSubstr("DmaUnmap on fake0"));
}

TEST_F(ExternalMemoryTest, OverlappingIovasOnOneDomainAreRefused) {
  RegisterChunk();
  ASSERT_TRUE(registry_->DmaMap(fake_, At(kBase), kIova, 4 * kPage, {}).ok());
  struct Case {
    const char* what;
    uint64_t va, iova, length;
  } cases[] = {
      {"same IOVA, other VA", kBase + 8 * kPage, kIova, 4 * kPage},
      {"tail overlaps", kBase + 8 * kPage, kIova + 3 * kPage, 2 * kPage},
      {"head overlaps", kBase + 8 * kPage, kIova - kPage, 2 * kPage},
      {"inside", kBase + kPage, kIova + kPage, kPage},
      {"around", kBase + 8 * kPage, kIova - kPage, 6 * kPage},
      {"same VA, shorter", kBase, kIova, 2 * kPage},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    absl::StatusOr<DeviceMapping> m = registry_->DmaMap(fake_, At(c.va), c.iova, c.length, {});
    EXPECT_EQ(m.status().code(), absl::StatusCode::kAlreadyExists) << m.status();
    // Both mappings are named.
    EXPECT_THAT(m.status().message(), HasSubstr(Range::FromLength(c.iova, c.length)->ToString()));
    EXPECT_THAT(m.status().message(), HasSubstr(Range::FromLength(kIova, 4 * kPage)->ToString()));
  }
  // The same extent with other rights is not the same mapping.
  absl::StatusOr<DeviceMapping> m =
      registry_->DmaMap(fake_, At(kBase), kIova, 4 * kPage, Access::kRemoteWrite);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kAlreadyExists) << m.status();
  EXPECT_EQ(fake_->total_registrations(), 1);
  EXPECT_EQ(registry_->mappings().at(0).refs, 1u);
  // Adjacent IOVAs, and the same IOVA on another domain, are fine.
  EXPECT_TRUE(registry_->DmaMap(fake_, At(kBase + 4 * kPage), kIova + 4 * kPage, kPage, {}).ok());
  EXPECT_TRUE(registry_->DmaMap(fake_, At(kBase + 8 * kPage), kIova - kPage, kPage, {}).ok());
  auto other = std::make_shared<FakeDomain>("fake1");
  EXPECT_TRUE(registry_->DmaMap(other, At(kBase), kIova, 4 * kPage, {}).ok());
  EXPECT_EQ(registry_->mapping_count(), 4u);
  std::vector<ExternalMemoryMapping> all = registry_->mappings();
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[0].iova, kIova - kPage);
  EXPECT_EQ(all[3].domain, "fake1");
  ASSERT_TRUE(registry_->DmaUnmap(other, At(kBase), kIova, 4 * kPage).ok());
  EXPECT_EQ(other->live_registrations(), 0);
}

TEST_F(ExternalMemoryTest, AMappingIsUndoneWhole) {
  RegisterChunk();
  ASSERT_TRUE(registry_->DmaMap(fake_, At(kBase), kIova, 4 * kPage, {}).ok());
  struct Case {
    const char* what;
    uint64_t va, iova, length;
  } cases[] = {
      {"head", kBase, kIova, kPage},
      {"tail", kBase + 3 * kPage, kIova + 3 * kPage, kPage},
      {"longer", kBase, kIova, 5 * kPage},
      {"other VA", kBase + kPage, kIova, 4 * kPage},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    absl::Status s = registry_->DmaUnmap(fake_, At(c.va), c.iova, c.length);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(s.message(), HasSubstr("a mapping is undone whole"));
  }
  EXPECT_EQ(fake_->live_registrations(), 1);
  EXPECT_EQ(registry_->mappings().at(0).refs, 1u);
  absl::Status s = registry_->DmaUnmap(fake_, At(kBase), kIova + 8 * kPage, kPage);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  auto other = std::make_shared<FakeDomain>("fake1");
  s = registry_->DmaUnmap(other, At(kBase), kIova, 4 * kPage);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(s.message(), HasSubstr("fake1"));
  EXPECT_EQ(fake_->live_registrations(), 1);
}

TEST_F(ExternalMemoryTest, DmaMapRefusesBadInputBeforeTheDomain) {
  RegisterChunk();
  ASSERT_TRUE(registry_->Register(At(kBase + 16 * kPage), 4 * kPage, kPage).ok());  // adjacent
  struct Case {
    const char* what;
    uint64_t va, iova, length;
    uint32_t access;
    absl::StatusCode code;
    const char* message;
  } cases[] = {
      {"zero length", kBase, kIova, 0, 0, absl::StatusCode::kInvalidArgument, "zero length"},
      {"VA wraps", ~uint64_t{0} - 10, kIova, 100, 0, absl::StatusCode::kInvalidArgument,
       "VA range wraps"},
      {"IOVA wraps", kBase, ~uint64_t{0} - kPage + 1, 2 * kPage, 0,
       absl::StatusCode::kInvalidArgument, "IOVA range wraps"},
      {"unknown access bits", kBase, kIova, kPage, 1u << 30, absl::StatusCode::kInvalidArgument,
       "unknown access bits"},
      {"not registered", kBase - 4 * kPage, kIova, kPage, 0, absl::StatusCode::kFailedPrecondition,
       "Register it first"},
      {"runs past its chunk", kBase + 15 * kPage, kIova, 2 * kPage, 0,
       absl::StatusCode::kInvalidArgument, "runs past the end of its chunk"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    absl::StatusOr<DeviceMapping> m =
        registry_->DmaMap(fake_, At(c.va), c.iova, c.length, AccessFlags::FromBits(c.access));
    EXPECT_EQ(m.status().code(), c.code) << m.status();
    EXPECT_THAT(m.status().message(), HasSubstr(c.message));
    EXPECT_THAT(m.status().message(), HasSubstr("DmaMap on fake0"));
  }
  absl::StatusOr<DeviceMapping> m = registry_->DmaMap(nullptr, At(kBase), kIova, kPage, {});
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(fake_->total_registrations(), 0);
  EXPECT_EQ(registry_->mapping_count(), 0u);
}

// A mapping is whole pages of its chunk, on every device: the fake would
// map any length (a verbs MR too), VFIO only IOMMU pages; the registry's
// own rule gives both the same answer, and changes nothing.
TEST_F(ExternalMemoryTest, AMappingIsWholePagesOfItsChunk) {
  RegisterChunk(4);
  struct Case {
    const char* what;
    uint64_t va, iova, length;
  } cases[] = {
      {"a page and a byte", kBase, kIova, 0x1001},
      {"less than a page", kBase, kIova, kPage - 1},
      {"from inside a page", kBase + 64, kIova + 64, kPage},
      {"a page from inside a page", kBase + kPage + 1, kIova + 1, kPage},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    absl::StatusOr<DeviceMapping> m = registry_->DmaMap(fake_, At(c.va), c.iova, c.length, {});
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();
    EXPECT_THAT(m.status().message(), HasSubstr("DmaMap on fake0"));
    EXPECT_THAT(m.status().message(), HasSubstr("not whole 0x1000-byte pages of its chunk"));
  }
  // The chunk's pages, not the device's: a chunk of 2 MiB pages maps 2 MiB at a time.
  constexpr uint64_t kHuge = 2 << 20;
  const uint64_t huge = kBase + kHuge;
  ASSERT_TRUE(registry_->Register(At(huge), 2 * kHuge, kHuge).ok());
  absl::StatusOr<DeviceMapping> m = registry_->DmaMap(fake_, At(huge), kIova, kPage, {});
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();
  EXPECT_THAT(m.status().message(), HasSubstr("not whole 0x200000-byte pages"));
  EXPECT_EQ(fake_->total_registrations(), 0);
  EXPECT_EQ(registry_->mapping_count(), 0u);
  m = registry_->DmaMap(fake_, At(huge + kHuge), kIova, kHuge, {});
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE(registry_->DmaUnmap(fake_, At(huge + kHuge), kIova, kHuge).ok());
}

TEST_F(ExternalMemoryTest, TheDevicesCapabilitiesAreHonoured) {
  RegisterChunk();
  DomainCapabilities& caps = fake_->mutable_capabilities();
  caps.caller_iova = false;
  absl::StatusOr<DeviceMapping> m = registry_->DmaMap(fake_, At(kBase), kIova, kPage, {});
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition) << m.status();
  EXPECT_THAT(m.status().message(), HasSubstr("fake0 cannot place a mapping at a caller's IOVA"));
  caps.caller_iova = true;

  caps.dma_address_bits = 28;  // edu's mask
  const uint64_t top = uint64_t{1} << 28;
  m = registry_->DmaMap(fake_, At(kBase), top - kPage, 2 * kPage, {});
  EXPECT_EQ(m.status().code(), absl::StatusCode::kOutOfRange) << m.status();
  EXPECT_THAT(m.status().message(), HasSubstr("28-bit DMA mask"));
  m = registry_->DmaMap(fake_, At(kBase), top - 2 * kPage, 2 * kPage, {});  // ends at the top
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE(registry_->DmaUnmap(fake_, At(kBase), top - 2 * kPage, 2 * kPage).ok());
  caps.dma_address_bits = 64;

  caps.iova_ranges = {*Range::FromLength(0x100000, 0x100000), *Range::FromLength(kIova, kPage)};
  m = registry_->DmaMap(fake_, At(kBase), kIova, 2 * kPage, {});
  EXPECT_EQ(m.status().code(), absl::StatusCode::kOutOfRange) << m.status();
  EXPECT_THAT(m.status().message(), HasSubstr("outside fake0's IOVA ranges"));
  EXPECT_THAT(m.status().message(), HasSubstr(caps.iova_ranges[1].ToString()));
  m = registry_->DmaMap(fake_, At(kBase), 0x1ff000, 2 * kPage, {});  // across both
  EXPECT_EQ(m.status().code(), absl::StatusCode::kOutOfRange) << m.status();
  m = registry_->DmaMap(fake_, At(kBase), kIova, kPage, {});
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE(registry_->DmaUnmap(fake_, At(kBase), kIova, kPage).ok());
  caps.iova_ranges.clear();

  // VA and IOVA at other offsets in the device's pages.
  m = registry_->DmaMap(fake_, At(kBase), kIova + 8, kPage, {});
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();
  EXPECT_THAT(m.status().message(), HasSubstr("offset within fake0's 0x1000-byte pages"));

  // The smallest of the device's pages decides: 2 MiB pages and 64 KiB pages.
  caps.page_sizes = (uint64_t{1} << 21) | (uint64_t{1} << 16);
  m = registry_->DmaMap(fake_, At(kBase), kIova + kPage, kPage, {});
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();
  EXPECT_THAT(m.status().message(), HasSubstr("0x10000-byte pages"));
  m = registry_->DmaMap(fake_, At(kBase), kIova + 0x10000, kPage, {});
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE(registry_->DmaUnmap(fake_, At(kBase), kIova + 0x10000, kPage).ok());
  EXPECT_EQ(fake_->total_registrations(), 3);
}

TEST_F(ExternalMemoryTest, AChunksIovaTableDecides) {
  // Pages 0-1 contiguous at 0x100000, page 2 elsewhere, page 3 after it.
  const std::vector<uint64_t> iovas = {0x100000, 0x101000, 0x300000, 0x301000};
  ASSERT_TRUE(registry_->Register(At(kBase), 4 * kPage, kPage, iovas).ok());

  absl::StatusOr<DeviceMapping> m = registry_->DmaMap(fake_, At(kBase), 0x100000, 2 * kPage, {});
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE(registry_->DmaUnmap(fake_, At(kBase), 0x100000, 2 * kPage).ok());

  m = registry_->DmaMap(fake_, At(kBase), 0x200000, kPage, {});
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();
  EXPECT_THAT(m.status().message(), HasSubstr("gives VA"));
  m = registry_->DmaMap(fake_, At(kBase + kPage), 0x101000, 2 * kPage, {});
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();
  EXPECT_THAT(m.status().message(), HasSubstr("not contiguous"));

  // Without an IOVA: the table's.
  m = registry_->DmaMap(fake_, At(kBase + 2 * kPage), 2 * kPage, {});
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->iova, 0x300000u);
  m = registry_->DmaMap(fake_, At(kBase + kPage), 2 * kPage, {});
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();
  EXPECT_EQ(fake_->live_registrations(), 1);
  ASSERT_TRUE(registry_->DmaUnmap(fake_, At(kBase + 2 * kPage), 0x300000, 2 * kPage).ok());

  // A chunk without a table has no IOVA to give.
  ASSERT_TRUE(registry_->Register(At(kBase + 8 * kPage), kPage, kPage).ok());
  m = registry_->DmaMap(fake_, At(kBase + 8 * kPage), kPage, {});
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition) << m.status();
  EXPECT_THAT(m.status().message(), HasSubstr("no IOVA table"));
  m = registry_->DmaMap(fake_, At(kBase + 16 * kPage), kPage, {});
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition) << m.status();
  EXPECT_EQ(fake_->total_registrations(), 2);
}

TEST_F(ExternalMemoryTest, AFailedDomainCallChangesNothing) {
  RegisterChunk();
  fake_->FailNextRegistrations(1, absl::ResourceExhaustedError("out of MRs"));
  absl::StatusOr<DeviceMapping> m = registry_->DmaMap(fake_, At(kBase), kIova, kPage, {});
  EXPECT_EQ(m.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(m.status().message(), HasSubstr("DmaMap on fake0"));
  EXPECT_THAT(m.status().message(), HasSubstr("out of MRs"));
  EXPECT_EQ(registry_->mapping_count(), 0u);
  EXPECT_TRUE(registry_->Unregister(At(kBase), 16 * kPage).ok());  // nothing holds it
  RegisterChunk();
  EXPECT_TRUE(registry_->DmaMap(fake_, At(kBase), kIova, kPage, {}).ok());
  ASSERT_TRUE(registry_->DmaUnmap(fake_, At(kBase), kIova, kPage).ok());
}

TEST_F(ExternalMemoryTest, MappingsHoldTheirDomainUntilUnmappedOrDestroyed) {
  RegisterChunk();
  auto other = std::make_shared<FakeDomain>("fake1");
  ASSERT_TRUE(registry_->DmaMap(other, At(kBase), kIova, kPage, {}).ok());
  ASSERT_TRUE(registry_->DmaMap(other, At(kBase), kIova, kPage, {}).ok());
  ASSERT_TRUE(registry_->DmaMap(fake_, At(kBase + kPage), kIova, kPage, {}).ok());
  const long before = other.use_count();
  EXPECT_GT(before, 1);
  registry_.reset();
  EXPECT_EQ(other.use_count(), 1);
  EXPECT_EQ(other->live_registrations(), 0);
  EXPECT_EQ(fake_->live_registrations(), 0);
}

TEST_F(ExternalMemoryTest, ThreadsMapAndUnmapDisjointRanges) {
  constexpr int kThreads = 4;
  constexpr int kRounds = 200;
  constexpr uint64_t kPerThread = 8;
  RegisterChunk(kThreads * kPerThread);
  std::vector<std::thread> threads;
  std::vector<int> failures(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const uint64_t va = kBase + t * kPerThread * kPage;
      const uint64_t iova = kIova + t * kPerThread * kPage;
      for (int i = 0; i < kRounds; ++i) {
        const uint64_t len = (1 + i % kPerThread) * kPage;
        // Its own range, and one range every thread shares (refcounted).
        if (!registry_->DmaMap(fake_, At(va), iova, len, {}).ok()) ++failures[t];
        if (!registry_->DmaMap(fake_, At(kBase), kIova - kPage, kPage, {}).ok()) ++failures[t];
        if (registry_->mappings().empty()) ++failures[t];
        if (!registry_->Lookup(At(va)).has_value()) ++failures[t];
        if (!registry_->DmaUnmap(fake_, At(kBase), kIova - kPage, kPage).ok()) ++failures[t];
        if (!registry_->DmaUnmap(fake_, At(va), iova, len).ok()) ++failures[t];
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(failures[t], 0) << "thread " << t;
  EXPECT_EQ(registry_->mapping_count(), 0u);
  EXPECT_EQ(fake_->live_registrations(), 0);
  EXPECT_TRUE(registry_->Unregister(At(kBase), kThreads * kPerThread * kPage).ok());
}

// dma-buf chunks (rte_extmem_register_dmabuf): imported where the device
// can, its addresses registered as host memory where it cannot; the
// registry's own fd of the buffer lives as long as the chunk.
class ExternalDmaBufTest : public ExternalMemoryTest {
 protected:
  void SetUp() override {
    registry_ = std::make_unique<ExternalMemoryRegistry>(bufs_.Inspector());
    buf_ = bufs_.Create(8 * kPage).value();
  }
  void TearDown() override {
    ExternalMemoryTest::TearDown();
    close(buf_.fd);
  }
  static int OpenFds() {
    int n = 0;
    for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) n += e.exists();
    return n;
  }

  testing::FakeDmaBufs bufs_;
  testing::FakeDmaBufs::Buffer buf_;
};

TEST_F(ExternalDmaBufTest, ImportedAtTheCallersIovaWithTheChunksOffset) {
  const int fds = OpenFds();
  ASSERT_TRUE(registry_->RegisterDmaBuf(At(kBase), 4 * kPage, kPage, buf_.fd, 2 * kPage).ok());
  EXPECT_EQ(OpenFds(), fds + 1);  // the registry's own
  std::optional<ExternalMemoryChunk> chunk = registry_->Lookup(At(kBase + kPage));
  ASSERT_TRUE(chunk.has_value());
  EXPECT_GE(chunk->dmabuf_fd, 0);
  EXPECT_NE(chunk->dmabuf_fd, buf_.fd);
  EXPECT_EQ(chunk->dmabuf_offset, 2 * kPage);

  auto m = registry_->DmaMap(fake_, At(kBase + kPage), kIova, 2 * kPage, Access::kRemoteWrite);
  ASSERT_TRUE(m.ok()) << m.status();
  std::vector<FakeDomain::LiveMapping> live = fake_->live_mappings();
  ASSERT_EQ(live.size(), 1u);
  EXPECT_TRUE(live[0].dmabuf);
  EXPECT_EQ(live[0].fd, chunk->dmabuf_fd);
  EXPECT_EQ(live[0].addr, 3 * kPage);  // the chunk's offset + kPage
  EXPECT_EQ(live[0].iova, kIova);
  EXPECT_TRUE(registry_->mappings().at(0).dmabuf);
  ASSERT_TRUE(registry_->DmaUnmap(fake_, At(kBase + kPage), kIova, 2 * kPage).ok());
  ASSERT_TRUE(registry_->Unregister(At(kBase), 4 * kPage).ok());
  EXPECT_EQ(OpenFds(), fds);
}

TEST_F(ExternalDmaBufTest, ADeviceWithoutImportMapsTheAddresses) {
  fake_->mutable_capabilities().dmabuf_import = false;
  ASSERT_TRUE(registry_->RegisterDmaBuf(buf_.alias, 8 * kPage, kPage, buf_.fd, 0).ok());
  auto m = registry_->DmaMap(fake_, buf_.alias, kIova, kPage, {});
  ASSERT_TRUE(m.ok()) << m.status();
  const FakeDomain::LiveMapping live = fake_->live_mappings().at(0);
  EXPECT_FALSE(live.dmabuf);
  EXPECT_EQ(live.addr, reinterpret_cast<uintptr_t>(buf_.alias));
  EXPECT_FALSE(registry_->mappings().at(0).dmabuf);
  ASSERT_TRUE(registry_->DmaUnmap(fake_, buf_.alias, kIova, kPage).ok());
  ASSERT_TRUE(registry_->Unregister(buf_.alias, 8 * kPage).ok());
}

TEST_F(ExternalDmaBufTest, BadBuffersAreRefusedAndKeepNoFd) {
  const int fds = OpenFds();
  EXPECT_THAT(registry_->RegisterDmaBuf(At(kBase), kPage, kPage, -1, 0).message(),
              HasSubstr("bad dma-buf fd"));
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  EXPECT_THAT(registry_->RegisterDmaBuf(At(kBase), kPage, kPage, p[0], 0).message(),
              HasSubstr("a pipe"));
  close(p[0]);
  close(p[1]);
  EXPECT_THAT(registry_->RegisterDmaBuf(At(kBase), 2 * kPage, kPage, buf_.fd, 7 * kPage).message(),
              HasSubstr("passes the end"));
  EXPECT_THAT(registry_->RegisterDmaBuf(At(kBase), kPage, kPage, buf_.fd, UINT64_MAX).message(),
              HasSubstr("passes the end"));
  // A bad chunk with a good buffer: the dup is closed again.
  EXPECT_THAT(registry_->RegisterDmaBuf(At(kBase + 1), kPage, kPage, buf_.fd, 0).message(),
              HasSubstr("whole pages"));
  ASSERT_TRUE(registry_->Register(At(kBase), kPage, kPage).ok());
  EXPECT_EQ(registry_->RegisterDmaBuf(At(kBase), kPage, kPage, buf_.fd, 0).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(OpenFds(), fds);
  EXPECT_EQ(registry_->chunk_count(), 1u);
  ASSERT_TRUE(registry_->Unregister(At(kBase), kPage).ok());
}

TEST_F(ExternalDmaBufTest, TheRegistryClosesItsFdsWhenItGoes) {
  const int fds = OpenFds();
  ASSERT_TRUE(registry_->RegisterDmaBuf(At(kBase), kPage, kPage, buf_.fd, 0).ok());
  ASSERT_TRUE(registry_->DmaMap(fake_, At(kBase), kIova, kPage, {}).ok());
  registry_.reset();
  EXPECT_EQ(OpenFds(), fds);
  EXPECT_EQ(fake_->live_registrations(), 0);
}

}  // namespace
}  // namespace dmareg
