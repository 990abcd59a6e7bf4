// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// VfioDomain over FakeVfioOps: opening by PCI address, the IOVA policy,
// checks made before the kernel, device access, hot-plug with and without
// the container emptying, a RegistrationCache on top, and no fd, mapping or
// mmap left behind.

#include "dmareg/vfio/vfio_domain.h"

#include <linux/vfio.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "dmareg/cache.h"
#include "dmareg/testing/fake_vfio_ops.h"
#include "dmareg/vfio/vfio_ops.h"
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
void* At(uint64_t va) { return reinterpret_cast<void*>(va); }

class VfioDomainTest : public ::testing::Test {
 protected:
  void SetUp() override { ops_->AddDevice({.address = kEdu, .group = 5}); }
  void TearDown() override {
    domain_.reset();
    EXPECT_EQ(ops_->live_fds(), 0);
    EXPECT_EQ(ops_->live_mmaps(), 0);
    EXPECT_EQ(ops_->live_containers(), 0);
  }
  std::shared_ptr<VfioDomain> OpenOk(VfioDomainOptions options = {}) {
    if (options.container == nullptr) options.ops = ops_;
    auto d = VfioDomain::Open(kEdu, std::move(options));
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? *d : nullptr;
  }
  size_t KernelMappings() { return ops_->kernel_mappings(domain_->container()->fd()).size(); }

  std::shared_ptr<FakeVfioOps> ops_ = std::make_shared<FakeVfioOps>();
  std::shared_ptr<VfioDomain> domain_;
};

TEST_F(VfioDomainTest, OpenFillsCapabilities) {
  domain_ = OpenOk({.dma_address_bits = 28});
  ASSERT_NE(domain_, nullptr);
  const DomainCapabilities& caps = domain_->capabilities();
  EXPECT_EQ(domain_->name(), "vfio:0000:00:03.0");
  EXPECT_EQ(caps.kind, DeviceKind::kVfio);
  EXPECT_EQ(caps.dma_address_bits, 28);
  EXPECT_THAT(caps.iova_ranges, ::testing::ElementsAre(*Range::FromBounds(0, 1 << 28)));
  EXPECT_EQ(caps.max_mappings, 65535u);
  EXPECT_EQ(caps.page_sizes, 0x40201000u);
  EXPECT_TRUE(caps.caller_iova);
  EXPECT_FALSE(caps.dmabuf_import);
  EXPECT_EQ(domain_->group(), 5);
  EXPECT_TRUE(domain_->attached());
}

TEST_F(VfioDomainTest, OpenErrorsAreClearAndLeakNothing) {
  for (const char* bad : {"00:03.0", "0000:00:03.8", "0000:00:3.0", "0000:00:03.0x", "",
                          "0000:00:20.0", "0000:0G:03.0"}) {
    auto d = VfioDomain::Open(bad, {.ops = ops_});
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  ops_->AddDevice({.address = "0000:00:05.0", .group = 7});
  auto absent = VfioDomain::Open("0000:00:04.0", {.ops = ops_});
  EXPECT_EQ(absent.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(absent.status().message(),
              AllOf(HasSubstr("0000:00:03.0 (group 5)"), HasSubstr("0000:00:05.0 (group 7)")));

  ops_->SetDriver("0000:00:05.0", "e1000e");
  auto wrong_driver = VfioDomain::Open("0000:00:05.0", {.ops = ops_});
  EXPECT_EQ(wrong_driver.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(wrong_driver.status().message(), HasSubstr("bound to e1000e"));

  ops_->SetGroupViable(5, false);
  auto not_viable = VfioDomain::Open(kEdu, {.ops = ops_});
  EXPECT_EQ(not_viable.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(not_viable.status().message(), HasSubstr("not viable"));
  ops_->SetGroupViable(5, true);

  ops_->FailNext(Call::kGetDeviceFd, ENODEV);
  auto no_device = VfioDomain::Open(kEdu, {.ops = ops_});
  EXPECT_EQ(no_device.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(no_device.status().message(), HasSubstr("VFIO_GROUP_GET_DEVICE_FD"));

  // A container over other ops: the device would join it through another kernel.
  auto other_kernel = VfioContainer::Open({.ops = std::make_shared<FakeVfioOps>()});
  ASSERT_TRUE(other_kernel.ok()) << other_kernel.status();
  auto mixed = VfioDomain::Open(kEdu, {.container = *other_kernel, .ops = ops_});
  EXPECT_EQ(mixed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(mixed.status().message(), HasSubstr("other VfioOps"));

  // A given group fd is taken, also on failure.
  const int group_fd = ops_->Open("/dev/vfio/5", 0);
  ASSERT_GE(group_fd, 0);
  EXPECT_FALSE(VfioDomain::Open("bad", {.group_fd = group_fd, .ops = ops_}).ok());
  EXPECT_EQ(ops_->live_fds(), 0);
}

TEST_F(VfioDomainTest, ListDevicesShowsVfioPciOnly) {
  ops_->AddDevice({.address = "0000:00:05.0", .group = 7, .driver = "e1000e"});
  // Not an address as sysfs spells one: not a device Open would take.
  ops_->AddDevice({.address = "0000:00:0A.0", .group = 8});
  auto list = VfioDomain::ListDevices({.ops = ops_});
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].address, kEdu);
  EXPECT_EQ((*list)[0].group, 5);
  EXPECT_EQ((*list)[0].driver, "vfio-pci");
  EXPECT_EQ((*list)[0].vendor_id, 0x1234);
  EXPECT_EQ((*list)[0].device_id, 0x11e8);
}

// The address rules Open applies, public for front ends (the CLI).
TEST(PciAddressTest, LowerCaseDomainBusDeviceFunction) {
  EXPECT_TRUE(ValidatePciAddress("0000:00:03.0").ok());
  EXPECT_TRUE(ValidatePciAddress("ffff:ff:1f.7").ok());
  for (const char* bad : {"0000:00:0A.0", "0000:00:20.0", "0000:00:03.8", "00:03.0", "",
                          "0000:00:03.0 ", "0000-00:03.0"}) {
    absl::Status s = ValidatePciAddress(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(s.message(), HasSubstr("lowercase hex")) << bad;
  }
}

// Without ops in the options, the kernel's: one object, so naming it is the
// same as naming none. (Listing reads this machine's sysfs: any answer but
// an error will do.)
TEST(VfioOpsTest, TheKernelIsTheDefault) {
  EXPECT_EQ(KernelVfioOps(), KernelVfioOps());
  EXPECT_TRUE(VfioDomain::ListDevices().ok());
  EXPECT_TRUE(VfioDomain::ListDevices({.ops = KernelVfioOps()}).ok());
}

TEST_F(VfioDomainTest, IovaPolicy) {
  domain_ = OpenOk({.dma_address_bits = 28});
  // Below the mask, inside the ranges and free: IOVA = VA.
  auto identity = domain_->RegisterHost({At(0x100000), 2 * kPage}, Access::kLocalWrite);
  ASSERT_TRUE(identity.ok()) << identity.status();
  EXPECT_EQ(identity->iova, 0x100000u);
  // Above the mask: the allocator, below the mask, not over the identity map.
  auto high = domain_->RegisterHost({At(0x7f0000000000), 4 * kPage}, {});
  ASSERT_TRUE(high.ok()) << high.status();
  EXPECT_LT(high->iova + high->length, uint64_t{1} << 28);
  EXPECT_FALSE(Range::FromLength(high->iova, high->length)
                   ->Overlaps(*Range::FromLength(0x100000, 2 * kPage)));
  // The same VA again: IOVA = VA is taken, so the allocator.
  auto again = domain_->RegisterHost({At(0x100000), 2 * kPage}, Access::kLocalWrite);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_NE(again->iova, 0x100000u);
  // A caller IOVA is honoured, identical twice is one kernel mapping.
  auto caller = domain_->RegisterHost({At(0x7f0000100000), kPage, 0x800000}, {});
  ASSERT_TRUE(caller.ok()) << caller.status();
  EXPECT_EQ(caller->iova, 0x800000u);
  auto caller2 = domain_->RegisterHost({At(0x7f0000100000), kPage, 0x800000}, {});
  ASSERT_TRUE(caller2.ok()) << caller2.status();
  EXPECT_EQ(KernelMappings(), 4u);
  EXPECT_EQ(domain_->live_mappings(), 5);
  for (const auto& m : {*identity, *high, *again, *caller, *caller2}) {
    ASSERT_TRUE(domain_->Deregister(m).ok());
  }
  EXPECT_EQ(KernelMappings(), 0u);
  EXPECT_EQ(domain_->live_mappings(), 0);
  EXPECT_EQ(domain_->total_maps(), 5);
  EXPECT_EQ(domain_->total_unmaps(), 5);
}

// Caller IOVAs and IOVA = VA mappings enter the allocator only when a pick
// lands on them; picks still never overlap them, and their space is free
// again once they go.
TEST_F(VfioDomainTest, AllocatorPicksStepAroundCallerIovas) {
  domain_ = OpenOk({.dma_address_bits = 28});
  // Where first fit would place a one-page pick (the first page above 0 is
  // never handed out): occupy it, and the page after, with caller IOVAs.
  auto probe = domain_->RegisterHost({At(0x7f0000000000), kPage}, {});
  ASSERT_TRUE(probe.ok()) << probe.status();
  const uint64_t first_fit = probe->iova;
  ASSERT_TRUE(domain_->Deregister(*probe).ok());
  auto a = domain_->RegisterHost({At(0x7f0000100000), kPage, first_fit}, {});
  auto b = domain_->RegisterHost({At(0x7f0000200000), kPage, first_fit + kPage}, {});
  ASSERT_TRUE(a.ok() && b.ok());
  std::vector<DeviceMapping> picks;
  for (int i = 0; i < 3; ++i) {
    auto p = domain_->RegisterHost({At(0x7f0000300000 + i * kPage), kPage}, {});
    ASSERT_TRUE(p.ok()) << p.status();
    for (const DeviceMapping& m : {*a, *b}) {
      EXPECT_FALSE(Range::FromLength(p->iova, kPage)->Overlaps(*Range::FromLength(m.iova, kPage)))
          << "pick " << i << " landed on a caller IOVA";
    }
    picks.push_back(*p);
  }
  EXPECT_EQ(KernelMappings(), 5u);
  ASSERT_TRUE(domain_->Deregister(*a).ok());
  // a's page is free for picks again.
  auto reuse = domain_->RegisterHost({At(0x7f0000400000), kPage}, {});
  ASSERT_TRUE(reuse.ok()) << reuse.status();
  EXPECT_EQ(reuse->iova, first_fit);
  picks.push_back(*reuse);
  picks.push_back(*b);
  for (const DeviceMapping& m : picks) ASSERT_TRUE(domain_->Deregister(m).ok());
  EXPECT_EQ(KernelMappings(), 0u);
}

TEST_F(VfioDomainTest, BadInputIsRefusedBeforeTheKernel) {
  domain_ = OpenOk({.dma_address_bits = 28});
  constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
  constexpr auto kOutOfRange = absl::StatusCode::kOutOfRange;
  struct Case {
    HostMemory memory;
    AccessFlags access;
    absl::StatusCode code;  // one per violation: CheckIovaPlacement's
  };
  const std::vector<Case> cases = {
      {{At(0x100000), 0}, {}, kInvalid},                                   // zero length
      {{At(0x100000), 100}, {}, kInvalid},                                 // not whole pages
      {{At(0x100800), kPage}, {}, kInvalid},                               // unaligned VA
      {{At(UINT64_MAX - kPage + 1), kPage}, {}, kInvalid},                 // the last page
      {{At(UINT64_MAX - kPage + 1), 2 * kPage}, {}, kInvalid},             // wraps
      {{At(0x100000), kPage}, AccessFlags::FromBits(1u << 30), kInvalid},  // unknown access bit
      {{At(0x100000), kPage, 0x10000000}, {}, kOutOfRange},           // IOVA beyond the 28-bit mask
      {{At(0x100000), 2 * kPage, 0xffff000}, {}, kOutOfRange},        // ends past the mask
      {{At(0x100000), kPage, 0x100800}, {}, kInvalid},                // unaligned IOVA
      {{At(0x100000), kPage, UINT64_MAX - kPage + 1}, {}, kInvalid},  // IOVA wraps
      {{At(0x100000), 100, 0x100000}, {}, kInvalid},  // caller IOVA, not whole pages
  };
  for (const Case& c : cases) {
    auto m = domain_->RegisterHost(c.memory, c.access);
    EXPECT_EQ(m.status().code(), c.code)
        << c.memory.addr << " " << c.memory.length << " " << m.status();
  }
  // The mask is OutOfRange here as through DmaMap and on every device.
  auto beyond = domain_->RegisterHost({At(0x100000), kPage, 0x10000000}, {});
  EXPECT_THAT(beyond.status().message(), HasSubstr("28-bit DMA mask"));
  // Wide mask: the MSI window and beyond the ranges.
  std::shared_ptr<VfioDomain> narrow = std::move(domain_);
  narrow.reset();
  domain_ = OpenOk();
  for (uint64_t iova : {uint64_t{0xfee00000}, uint64_t{0x8000000000}}) {
    auto m = domain_->RegisterHost({At(0x100000), kPage, iova}, {});
    EXPECT_EQ(m.status().code(), kOutOfRange) << iova;
    EXPECT_THAT(m.status().message(), HasSubstr("lie outside vfio:0000:00:03.0's IOVA ranges"));
  }
  EXPECT_EQ(ops_->calls(Call::kMapDma), 0);
  EXPECT_EQ(domain_->live_mappings(), 0);
}

TEST_F(VfioDomainTest, DeregisterIsExact) {
  domain_ = OpenOk();
  auto m = domain_->RegisterHost({At(0x100000), 2 * kPage}, {});
  ASSERT_TRUE(m.ok());
  DeviceMapping half = *m;
  half.length = kPage;
  EXPECT_EQ(domain_->Deregister(half).code(), absl::StatusCode::kInvalidArgument);
  DeviceMapping other = *m;
  other.iova = 0x900000;
  EXPECT_EQ(domain_->Deregister(other).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(KernelMappings(), 1u);
  ASSERT_TRUE(domain_->Deregister(*m).ok());
  EXPECT_EQ(domain_->Deregister(*m).code(), absl::StatusCode::kNotFound);
}

TEST_F(VfioDomainTest, KernelFailureLeavesNothing) {
  domain_ = OpenOk();
  ops_->FailNext(Call::kMapDma, EFAULT);
  auto m = domain_->RegisterHost({At(0x100000), kPage}, {});
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m.status().message(), AllOf(HasSubstr("VFIO_IOMMU_MAP_DMA"), HasSubstr("EFAULT")));
  EXPECT_TRUE(domain_->container()->mappings().empty());
  // Allocator path: the window goes back.
  ops_->FailNext(Call::kMapDma, ENOMEM);
  EXPECT_FALSE(domain_->RegisterHost({At(0xffff00000000), kPage}, {}).ok());
  auto next = domain_->RegisterHost({At(0xffff00000000), kPage}, {});
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->iova, kPage);  // the first usable page again
  ops_->FailNext(Call::kUnmapDma, EIO);
  EXPECT_FALSE(domain_->Deregister(*next).ok());
  EXPECT_EQ(domain_->live_mappings(), 1);
  ASSERT_TRUE(domain_->Deregister(*next).ok());
}

TEST_F(VfioDomainTest, RegionsAndConfigSpace) {
  domain_ = OpenOk();
  {
    auto bar0 = domain_->MapRegion(0);
    ASSERT_TRUE(bar0.ok()) << bar0.status();
    EXPECT_EQ(bar0->size(), 1u << 20);
    EXPECT_EQ(static_cast<volatile uint32_t*>(bar0->data())[0], 0x010000edu);
    EXPECT_EQ(ops_->live_mmaps(), 1);
    VfioRegionMap moved = std::move(*bar0);
    EXPECT_EQ(ops_->live_mmaps(), 1);
  }
  EXPECT_EQ(ops_->live_mmaps(), 0);
  EXPECT_EQ(domain_->MapRegion(1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(domain_->MapRegion(VFIO_PCI_CONFIG_REGION_INDEX).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(domain_->MapRegion(99).status().code(), absl::StatusCode::kInvalidArgument);

  uint32_t id = 0;
  ASSERT_TRUE(domain_->ReadConfig(0, &id, sizeof(id)).ok());
  EXPECT_EQ(id, 0x11e81234u);
  const uint16_t command = 0x6;
  ASSERT_TRUE(domain_->WriteConfig(4, &command, sizeof(command)).ok());
  EXPECT_EQ(ops_->config(kEdu)[4], 0x6);
  EXPECT_EQ(domain_->ReadConfig(255, &id, sizeof(id)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(domain_->ReadConfig(0, &id, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(domain_->WriteConfig(UINT64_MAX, &id, 4).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(VfioDomainTest, HotPlugAloneInItsContainerReplaysTheTable) {
  domain_ = OpenOk();
  auto m = domain_->RegisterHost({At(0x100000), kPage}, Access::kLocalWrite);
  ASSERT_TRUE(m.ok());
  const int container_fd = domain_->container()->fd();
  ASSERT_TRUE(domain_->Detach().ok());
  EXPECT_FALSE(domain_->attached());
  EXPECT_TRUE(ops_->kernel_mappings(container_fd).empty());  // the kernel dropped them
  EXPECT_FALSE(domain_->container()->iommu_set());
  EXPECT_EQ(domain_->container()->mappings().size(), 1u);  // the table did not
  ops_->RemoveDevice(kEdu);

  // A mapping made while detached waits in the table, not in the kernel.
  auto while_detached = domain_->RegisterHost({At(0x200000), kPage, 0x200000}, {});
  ASSERT_TRUE(while_detached.ok()) << while_detached.status();
  EXPECT_TRUE(ops_->kernel_mappings(container_fd).empty());
  EXPECT_EQ(domain_->container()->mappings().size(), 2u);
  uint32_t id;
  EXPECT_EQ(domain_->ReadConfig(0, &id, 4).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(domain_->MapRegion(0).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(domain_->Reattach().code(), absl::StatusCode::kNotFound);  // still gone

  ops_->AddDevice({.address = kEdu, .group = 5});
  ASSERT_TRUE(domain_->Reattach().ok());
  ASSERT_EQ(ops_->kernel_mappings(container_fd).size(), 2u);
  EXPECT_EQ(ops_->kernel_mappings(container_fd)[0].iova, 0x100000u);
  EXPECT_EQ(ops_->kernel_mappings(container_fd)[0].flags,
            uint32_t{VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE});
  EXPECT_EQ(ops_->kernel_mappings(container_fd)[1].iova, 0x200000u);
  EXPECT_EQ(ops_->kernel_mappings(container_fd)[1].flags, uint32_t{VFIO_DMA_MAP_FLAG_READ});
  // Read-only mappings are populated for write before they are pinned.
  EXPECT_GE(ops_->populate_calls(), 1);
  ASSERT_TRUE(domain_->ReadConfig(0, &id, 4).ok());
  ASSERT_TRUE(domain_->Deregister(*while_detached).ok());
  ASSERT_TRUE(domain_->Deregister(*m).ok());
}

TEST_F(VfioDomainTest, HotPlugWithAPeerKeepsTheKernelMappings) {
  ops_->AddDevice({.address = "0000:00:04.0", .group = 6});
  auto container = VfioContainer::Open({.ops = ops_});
  ASSERT_TRUE(container.ok());
  domain_ = OpenOk({.container = *container});
  auto peer = VfioDomain::Open("0000:00:04.0", {.container = *container});
  ASSERT_TRUE(peer.ok()) << peer.status();
  auto m = domain_->RegisterHost({At(0x100000), kPage}, {});
  ASSERT_TRUE(m.ok());
  ASSERT_TRUE(domain_->Detach().ok());
  EXPECT_TRUE((*container)->iommu_set());
  EXPECT_EQ(ops_->kernel_mappings((*container)->fd()).size(), 1u);
  // A mapping made while detached, through the peer, is there after reattach.
  auto p = (*peer)->RegisterHost({At(0x200000), kPage}, {});
  ASSERT_TRUE(p.ok());
  const int maps = ops_->calls(Call::kMapDma);
  ASSERT_TRUE(domain_->Reattach().ok());
  EXPECT_EQ(ops_->calls(Call::kMapDma), maps);  // the kernel replays, not us
  EXPECT_EQ(ops_->kernel_mappings((*container)->fd()).size(), 2u);
  // Deregister works while detached too.
  ASSERT_TRUE(domain_->Detach().ok());
  ASSERT_TRUE(domain_->Deregister(*m).ok());
  ASSERT_TRUE(domain_->Reattach().ok());
  ASSERT_TRUE((*peer)->Deregister(*p).ok());
  EXPECT_TRUE(ops_->kernel_mappings((*container)->fd()).empty());
}

TEST_F(VfioDomainTest, DestructionUnmapsWhatWasNotDeregistered) {
  auto container = VfioContainer::Open({.ops = ops_});
  ASSERT_TRUE(container.ok());
  domain_ = OpenOk({.container = *container});
  ASSERT_TRUE(domain_->RegisterHost({At(0x100000), kPage}, {}).ok());
  domain_.reset();
  EXPECT_TRUE((*container)->mappings().empty());
  EXPECT_TRUE((*container)->groups().empty());
}

// Two devices in one container: one table, each reference naming the domain
// that holds it, so a domain's Deregister and its going concern only its own.
TEST_F(VfioDomainTest, ADomainUndoesOnlyItsOwnReferences) {
  ops_->AddDevice({.address = "0000:00:04.0", .group = 6});
  auto container = VfioContainer::Open({.ops = ops_});
  ASSERT_TRUE(container.ok());
  domain_ = OpenOk({.container = *container});
  auto peer = VfioDomain::Open("0000:00:04.0", {.container = *container});
  ASSERT_TRUE(peer.ok()) << peer.status();
  auto m = domain_->RegisterHost({At(0x100000), kPage, 0x100000}, {});
  ASSERT_TRUE(m.ok()) << m.status();
  absl::Status not_its = (*peer)->Deregister(*m);
  EXPECT_EQ(not_its.code(), absl::StatusCode::kNotFound) << not_its;
  EXPECT_THAT(not_its.message(), HasSubstr("Deregister on vfio:0000:00:04.0"));
  // The identical mapping through the peer: the same entry, counted there.
  auto p = (*peer)->RegisterHost({At(0x100000), kPage, 0x100000}, {});
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ((*container)->mappings().size(), 1u);
  EXPECT_EQ((*container)->mappings()[0].refs, 2u);
  EXPECT_EQ(KernelMappings(), 1u);
  // The peer goes, and its reference with it; ours stays mapped.
  peer->reset();
  ASSERT_EQ((*container)->mappings().size(), 1u);
  EXPECT_EQ((*container)->mappings()[0].refs, 1u);
  EXPECT_EQ(KernelMappings(), 1u);
  ASSERT_TRUE(domain_->Deregister(*m).ok());
  EXPECT_TRUE((*container)->mappings().empty());
  EXPECT_EQ(KernelMappings(), 0u);
}

// ---- a RegistrationCache over the domain ----

class VfioCacheTest : public ::testing::TestWithParam<int> {};

TEST_P(VfioCacheTest, HitsAndIovas) {
  const int bits = GetParam();
  FakeVfioOps::IommuSpec spec;
  spec.ranges = {{0, 0xfedfffff}, {0xfef00000, 0xffffffffffff}};  // 48-bit: VAs fit
  auto ops = std::make_shared<FakeVfioOps>(spec);
  ops->AddDevice({.address = kEdu, .group = 5});
  constexpr size_t kLen = 64 * 1024;
  void* buf = mmap(nullptr, kLen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(buf, MAP_FAILED);
  {
    auto domain = VfioDomain::Open(kEdu, {.dma_address_bits = bits, .ops = ops});
    ASSERT_TRUE(domain.ok()) << domain.status();
    auto cache = RegistrationCache::Create(*domain, {.monitoring = Monitoring::kExplicitOnly});
    ASSERT_TRUE(cache.ok()) << cache.status();
    auto whole = (*cache)->Acquire(buf, kLen, Access::kLocalWrite);
    ASSERT_TRUE(whole.ok()) << whole.status();
    auto part = (*cache)->Acquire(static_cast<char*>(buf) + 4096, 8192, {});
    ASSERT_TRUE(part.ok()) << part.status();
    EXPECT_EQ((*cache)->stats().hits, 1u);
    EXPECT_EQ(ops->calls(Call::kMapDma), 1);
    const uint64_t va = reinterpret_cast<uintptr_t>(buf);
    if (bits == 64) {
      EXPECT_EQ(whole->IovaFor(buf), va);  // IOVA = VA
    } else {
      EXPECT_LT(whole->IovaFor(buf) + kLen, uint64_t{1} << bits);  // above the mask: allocated
      EXPECT_NE(whole->IovaFor(buf), va);
    }
    EXPECT_EQ(part->IovaFor(static_cast<char*>(buf) + 4096), whole->IovaFor(buf) + 4096);
  }
  munmap(buf, kLen);
  EXPECT_EQ(ops->live_fds(), 0);
  EXPECT_EQ(ops->live_containers(), 0);
}

INSTANTIATE_TEST_SUITE_P(Masks, VfioCacheTest, ::testing::Values(64, 28));

}  // namespace
}  // namespace dmareg
