// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// VFIO on real kernel devices: qemu's edu DMA engine, behind the virtual
// Intel IOMMU, copies RAM -> device -> RAM through mappings made with
// dmareg's public API only (the external-memory registry's DmaMap, and a
// RegistrationCache over a VfioDomain); every byte is checked. Then the
// refusals, each a clear status that changes nothing.
#include <sys/mman.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "common/limited_memlock.h"
#include "device/vfio/vfio_env.h"
#include "dmareg/cache.h"
#include "dmareg/external_memory.h"
#include "dmareg/memlock.h"
#include "dmareg/range.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dmareg::device_test {
namespace {

constexpr size_t kPage = 4096;
constexpr size_t kLen = 2048;  // edu transfers stay inside its 4 KiB buffer
constexpr uint64_t kSrcIova = 0x100000;
constexpr uint64_t kDstIova = 0x200000;

AccessFlags DeviceWrites() { return AccessFlags(Access::kLocalWrite); }
AccessFlags DeviceReads() { return AccessFlags(Access::kNone); }

class VfioEduTest : public VfioTest {};

TEST_F(VfioEduTest, DmaMapCarriesDmaAtTheCallersIova) {
  Mapping src(kPage), dst(kPage);
  ExternalMemoryRegistry registry;
  ASSERT_TRUE(registry.Register(src.data(), src.size(), kPage).ok());
  ASSERT_TRUE(registry.Register(dst.data(), dst.size(), kPage).ok());
  auto a = registry.DmaMap(domain_, src.data(), kSrcIova, kPage, DeviceReads());
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = registry.DmaMap(domain_, dst.data(), kDstIova, kPage, DeviceWrites());
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->iova, kSrcIova);
  EXPECT_EQ(b->iova, kDstIova);
  ASSERT_EQ(container_->mappings().size(), 2u);

  ExpectRoundTrip(*edu_, src, kSrcIova, dst, kDstIova, kLen, /*seed=*/1);

  EXPECT_TRUE(registry.DmaUnmap(domain_, src.data(), kSrcIova, kPage).ok());
  EXPECT_TRUE(registry.DmaUnmap(domain_, dst.data(), kDstIova, kPage).ok());
  EXPECT_TRUE(registry.Unregister(src.data(), src.size()).ok());
  EXPECT_TRUE(registry.Unregister(dst.data(), dst.size()).ok());
}

TEST_F(VfioEduTest, ReadOnlyMappingKeepsTheDeviceFromWriting) {
  Mapping src(kPage), dst(kPage);
  ExternalMemoryRegistry registry;
  ASSERT_TRUE(registry.Register(src.data(), src.size(), kPage).ok());
  ASSERT_TRUE(registry.Register(dst.data(), dst.size(), kPage).ok());
  ASSERT_TRUE(registry.DmaMap(domain_, src.data(), kSrcIova, kPage, DeviceReads()).ok());
  // Without write access the IOMMU maps the page read-only.
  ASSERT_TRUE(registry.DmaMap(domain_, dst.data(), kDstIova, kPage, DeviceReads()).ok());
  FillPattern(src.data(), kLen, 7);
  std::memset(dst.data(), 0x5a, dst.size());
  ASSERT_TRUE(edu_->ToDevice(kSrcIova, kLen).ok());
  ASSERT_TRUE(edu_->FromDevice(kDstIova, kLen).ok());  // the IOMMU faults the write
  for (size_t i = 0; i < dst.size(); ++i) {
    ASSERT_EQ(static_cast<uint8_t>(dst.data()[i]), 0x5a) << "the device wrote byte " << i;
  }
  EXPECT_TRUE(registry.DmaUnmap(domain_, src.data(), kSrcIova, kPage).ok());
  EXPECT_TRUE(registry.DmaUnmap(domain_, dst.data(), kDstIova, kPage).ok());
}

// What the program may not access, the device may not either: refused
// before VFIO_IOMMU_MAP_DMA, the protection named; read-only memory mapped
// for the device to read carries DMA.
TEST_F(VfioEduTest, MemoryTheProgramCannotAccessAsAskedIsRefused) {
  Mapping none(kPage, PROT_NONE), ro(kPage, PROT_READ), dst(kPage);
  ASSERT_TRUE(none.ok() && ro.ok() && dst.ok());
  auto cache = RegistrationCache::Create(domain_);
  ASSERT_TRUE(cache.ok()) << cache.status();
  auto r = (*cache)->Acquire(none.data(), kPage, DeviceReads());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied) << r.status();
  EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("mapped PROT_NONE"));
  r = (*cache)->Acquire(ro.data(), kPage, DeviceWrites());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied) << r.status();
  EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("mapped PROT_READ"));
  EXPECT_TRUE(container_->mappings().empty());

  // Filled while writable, then made read-only: the device reads it.
  ASSERT_EQ(mprotect(ro.data(), kPage, PROT_READ | PROT_WRITE), 0);
  FillPattern(ro.data(), kLen, 5);
  ASSERT_EQ(mprotect(ro.data(), kPage, PROT_READ), 0);
  std::memset(dst.data(), 0, dst.size());
  auto src = (*cache)->Acquire(ro.data(), kPage, DeviceReads());
  ASSERT_TRUE(src.ok()) << src.status();
  auto out = (*cache)->Acquire(dst.data(), kPage, DeviceWrites());
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_TRUE(edu_->ToDevice(src->IovaFor(ro.data()), kLen).ok());
  ASSERT_TRUE(edu_->FromDevice(out->IovaFor(dst.data()), kLen).ok());
  EXPECT_EQ(FindMismatch(dst.data(), kLen, 5, 0), -1);
}

// The memlock limit as an unprivileged process meets it (CAP_IPC_LOCK
// dropped, a small RLIMIT_MEMLOCK): VFIO type1 charges a mapping's pages to
// locked_vm, so past it MAP_DMA fails with ENOMEM. The cache lets go of
// what is unreferenced and retries once; with everything referenced the
// refusal names the limit and loses nothing; once the limit allows, the
// same request maps, and the edu's DMA moves the bytes through it.
TEST_F(VfioEduTest, MemlockRefusalEvictsRetriesNamesTheLimitAndRecovers) {
  constexpr uint64_t kBuf = 512 * 1024;
  Mapping a(kBuf), b(kBuf), c(kBuf), d(kBuf);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok() && d.ok());
  auto cache = RegistrationCache::Create(domain_);
  ASSERT_TRUE(cache.ok()) << cache.status();
  const uint64_t baseline = ReadMemlockLimit().locked.value_or(0);
  test::LimitedMemlock limit(baseline + 2 * kBuf + 64 * 1024);
  ASSERT_TRUE(limit.ok()) << limit.error();

  auto held = (*cache)->Acquire(a.data(), kBuf, DeviceReads());
  ASSERT_TRUE(held.ok()) << held.status();
  ASSERT_TRUE((*cache)->Acquire(b.data(), kBuf, DeviceReads()).ok());  // then idle
  auto third = (*cache)->Acquire(c.data(), kBuf, DeviceReads());
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ((*cache)->stats().evictions, 1u);
  EXPECT_EQ(container_->mappings().size(), 2u);

  auto fourth = (*cache)->Acquire(d.data(), kBuf, DeviceWrites());
  ASSERT_FALSE(fourth.ok());
  std::printf("  status: %s\n", fourth.status().ToString().c_str());
  EXPECT_EQ(fourth.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(fourth.status().message()),
              ::testing::AllOf(::testing::HasSubstr("VFIO_IOMMU_MAP_DMA"),
                               ::testing::HasSubstr("RLIMIT_MEMLOCK soft "),
                               ::testing::HasSubstr("locked (VmLck)"),
                               ::testing::HasSubstr("every one referenced")));
  EXPECT_EQ(container_->mappings().size(), 2u);

  ASSERT_TRUE(limit.SetSoft(baseline + (uint64_t{8} << 20))) << limit.error();
  fourth = (*cache)->Acquire(d.data(), kBuf, DeviceWrites());
  ASSERT_TRUE(fourth.ok()) << fourth.status();
  FillPattern(a.data(), kLen, 8);
  std::memset(d.data(), 0, kLen);
  ASSERT_TRUE(edu_->ToDevice(held->IovaFor(a.data()), kLen).ok());
  ASSERT_TRUE(edu_->FromDevice(fourth->IovaFor(d.data()), kLen).ok());
  EXPECT_EQ(FindMismatch(d.data(), kLen, 8, 0), -1);
}

TEST_F(VfioEduTest, CacheOverVfioPicksIovasUnderTheDeviceMask) {
  Mapping src(4 * kPage), dst(4 * kPage);
  auto cache = RegistrationCache::Create(domain_);
  ASSERT_TRUE(cache.ok()) << cache.status();
  {
    auto r = (*cache)->Acquire(src.data(), src.size(), DeviceReads());
    ASSERT_TRUE(r.ok()) << r.status();
    auto w = (*cache)->Acquire(dst.data(), dst.size(), DeviceWrites());
    ASSERT_TRUE(w.ok()) << w.status();
    const uint64_t src_iova = r->IovaFor(src.data());
    const uint64_t dst_iova = w->IovaFor(dst.data());
    // The buffers' VAs lie far above 2^28: the domain chose IOVAs itself.
    EXPECT_EQ(src_iova >> EduDevice::kDmaAddressBits, 0u);
    EXPECT_EQ(dst_iova >> EduDevice::kDmaAddressBits, 0u);
    ExpectRoundTrip(*edu_, src, src_iova, dst, dst_iova, kLen, 2);
  }
  // Hits: the same ranges again give the same IOVAs without a new mapping.
  const size_t mapped = container_->mappings().size();
  auto r = (*cache)->Acquire(src.data(), src.size(), DeviceReads());
  auto w = (*cache)->Acquire(dst.data(), dst.size(), DeviceWrites());
  ASSERT_TRUE(r.ok() && w.ok());
  EXPECT_EQ(container_->mappings().size(), mapped);
  // Offsets inside a page travel too: the edu reads at src+kPage+100.
  FillPattern(src.data(), src.size(), 3);
  std::memset(dst.data(), 0, dst.size());
  ASSERT_TRUE(edu_->ToDevice(r->IovaFor(src.data() + kPage + 100), kLen).ok());
  ASSERT_TRUE(edu_->FromDevice(w->IovaFor(dst.data() + 2 * kPage), kLen).ok());
  EXPECT_EQ(FindMismatch(dst.data() + 2 * kPage, kLen, 3, kPage + 100), -1);
  r = absl::UnknownError("released");
  w = absl::UnknownError("released");
  cache->reset();
  EXPECT_TRUE(container_->mappings().empty());
}

TEST_F(VfioEduTest, TwoDevicesShareOneContainersMappings) {
  ASSERT_GE(devices_.size(), 2u);
  std::shared_ptr<VfioDomain> second = OpenDomain(devices_[1]);
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(second->container(), container_);
  auto edu2 = EduDevice::Open(second);
  ASSERT_TRUE(edu2.ok()) << edu2.status();

  Mapping src(kPage), dst(kPage);
  ExternalMemoryRegistry registry;
  ASSERT_TRUE(registry.Register(src.data(), src.size(), kPage).ok());
  ASSERT_TRUE(registry.Register(dst.data(), dst.size(), kPage).ok());
  // Mapped once, through the first device's domain...
  ASSERT_TRUE(registry.DmaMap(domain_, src.data(), kSrcIova, kPage, DeviceReads()).ok());
  ASSERT_TRUE(registry.DmaMap(domain_, dst.data(), kDstIova, kPage, DeviceWrites()).ok());
  // ...and usable by both devices.
  ExpectRoundTrip(*edu_, src, kSrcIova, dst, kDstIova, kLen, 11);
  ExpectRoundTrip(**edu2, src, kSrcIova, dst, kDstIova, kLen, 12);
  EXPECT_TRUE(registry.DmaUnmap(domain_, src.data(), kSrcIova, kPage).ok());
  EXPECT_TRUE(registry.DmaUnmap(domain_, dst.data(), kDstIova, kPage).ok());
}

TEST_F(VfioEduTest, RefusalsChangeNothing) {
  Mapping buf(2 * kPage), other(kPage), unregistered(kPage);
  ExternalMemoryRegistry registry;
  ASSERT_TRUE(registry.Register(buf.data(), buf.size(), kPage).ok());
  ASSERT_TRUE(registry.Register(other.data(), other.size(), kPage).ok());
  ASSERT_TRUE(registry.DmaMap(domain_, buf.data(), kSrcIova, buf.size(), DeviceWrites()).ok());
  const auto before = container_->mappings();
  ASSERT_EQ(before.size(), 1u);

  // Above the edu's 28-bit mask: refused before the kernel is asked.
  absl::Status s =
      registry.DmaMap(domain_, other.data(), uint64_t{1} << 28, kPage, DeviceReads()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange) << s;
  EXPECT_NE(s.message().find("28-bit DMA mask"), std::string::npos) << s;
  // In the MSI window and beyond the IOMMU's ranges (container level: the
  // edu's own mask would refuse these first).
  s = container_->Map(reinterpret_cast<uintptr_t>(other.data()), 0xfee00000, kPage, false);
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange) << s;
  s = container_->Map(reinterpret_cast<uintptr_t>(other.data()), uint64_t{1} << 40, kPage, false);
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange) << s;
  // Not whole pages of its chunk: the registry's own rule, before the device.
  s = registry.DmaMap(domain_, buf.data(), kDstIova, kPage + 1, DeviceReads()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  // Overlapping IOVA.
  s = registry.DmaMap(domain_, other.data(), kSrcIova + kPage, kPage, DeviceReads()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists) << s;
  // Memory that is not in the registry.
  s = registry.DmaMap(domain_, unregistered.data(), kDstIova, kPage, DeviceReads()).status();
  EXPECT_FALSE(s.ok());
  // A partial unmap: type1 cannot split a mapping.
  s = registry.DmaUnmap(domain_, buf.data(), kSrcIova, kPage);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  s = container_->Unmap(kSrcIova, kPage);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  // Unregistering memory that is still mapped.
  s = registry.Unregister(buf.data(), buf.size());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;

  const auto after = container_->mappings();
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0].iova, before[0].iova);
  EXPECT_EQ(after[0].length, before[0].length);
  // And the surviving mapping still carries DMA.
  Mapping out(kPage);
  ASSERT_TRUE(registry.Register(out.data(), out.size(), kPage).ok());
  ASSERT_TRUE(registry.DmaMap(domain_, out.data(), kDstIova, kPage, DeviceWrites()).ok());
  ExpectRoundTrip(*edu_, buf, kSrcIova, out, kDstIova, kLen, 21);
  EXPECT_TRUE(registry.DmaUnmap(domain_, out.data(), kDstIova, kPage).ok());
  EXPECT_TRUE(registry.DmaUnmap(domain_, buf.data(), kSrcIova, buf.size()).ok());
}

// docs/vfio.md's "two ways" on the edu, in its order: a cache and the
// device-level map over one domain, for buffers of 1 MiB and more. The
// cache's IOVAs grow from the bottom of the 28-bit window (the buffers' VAs
// lie above it), where a fixed IOVA would land on them; the device-level
// map takes a window ReserveIova sets aside instead. The edu copies through
// both IOVAs of the one buffer, both ways, and every byte is checked.
class VfioTwoWaysTest : public VfioTest, public ::testing::WithParamInterface<size_t> {};

TEST_P(VfioTwoWaysTest, TheCacheAndTheDeviceLevelMapNeverCollide) {
  const size_t len = GetParam();
  Mapping buf(len);
  ASSERT_TRUE(buf.ok());
  auto cache = RegistrationCache::Create(domain_);
  ASSERT_TRUE(cache.ok()) << cache.status();
  auto reg = (*cache)->Acquire(buf.data(), len, DeviceWrites());
  ASSERT_TRUE(reg.ok()) << reg.status();
  const uint64_t cached = reg->IovaFor(buf.data());

  auto window = container_->ReserveIova(len);
  ASSERT_TRUE(window.ok()) << window.status();
  const uint64_t iova = window->begin();
  ExternalMemoryRegistry registry;
  ASSERT_TRUE(registry.Register(buf.data(), len, kPage).ok());
  // The old way, a fixed IOVA, is refused wherever the cache's pick covers
  // it (on this edu, for 1 MiB and more), and changes nothing.
  constexpr uint64_t kFixed = 0x100000;
  if (Range::FromLength(cached, len)->Overlaps(*Range::FromLength(kFixed, len))) {
    EXPECT_EQ(registry.DmaMap(domain_, buf.data(), kFixed, len, DeviceWrites()).status().code(),
              absl::StatusCode::kAlreadyExists);
  }
  auto m = registry.DmaMap(domain_, buf.data(), iova, len, DeviceWrites());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_FALSE(Range::FromLength(cached, len)->Overlaps(*Range::FromLength(iova, len)))
      << "cache at 0x" << std::hex << cached << ", window at 0x" << iova;
  EXPECT_EQ((iova + len) >> EduDevice::kDmaAddressBits, 0u);
  EXPECT_EQ((cached + len) >> EduDevice::kDmaAddressBits, 0u);
  EXPECT_EQ(container_->mappings().size(), 2u);
  RecordProperty("cache_iova", absl::StrFormat("%#x", cached));
  RecordProperty("window_iova", absl::StrFormat("%#x", iova));

  // In through the cache's IOVA of the first page, out through the map's
  // IOVA of the last; then in through the map's, out through the cache's.
  const size_t last = len - kPage;
  FillPattern(buf.data(), kLen, 71);
  std::memset(buf.data() + last, 0, kPage);
  ASSERT_TRUE(edu_->ToDevice(cached, kLen).ok());
  ASSERT_TRUE(edu_->FromDevice(iova + last, kLen).ok());
  EXPECT_EQ(FindMismatch(buf.data() + last, kLen, 71), -1);
  FillPattern(buf.data() + last, kLen, 72);
  std::memset(buf.data(), 0, kPage);
  ASSERT_TRUE(edu_->ToDevice(iova + last, kLen).ok());
  ASSERT_TRUE(edu_->FromDevice(cached, kLen).ok());
  EXPECT_EQ(FindMismatch(buf.data(), kLen, 72), -1);

  EXPECT_TRUE(registry.DmaUnmap(domain_, buf.data(), iova, len).ok());
  EXPECT_TRUE(registry.Unregister(buf.data(), len).ok());
  EXPECT_TRUE(container_->ReleaseIova(*window).ok());
  reg = absl::UnknownError("released");
  cache->reset();
}

INSTANTIATE_TEST_SUITE_P(Sizes, VfioTwoWaysTest,
                         ::testing::Values(size_t{1} << 20, size_t{4} << 20));

// The edu driver refuses what the device cannot do before touching it.
TEST_F(VfioEduTest, EduRefusesTransfersItCannotDo) {
  EXPECT_EQ(edu_->ToDevice(kSrcIova, 0).code(), absl::StatusCode::kInvalidArgument);
  // Ending exactly at the buffer's end kills the VM on qemu 7.2.
  EXPECT_EQ(edu_->ToDevice(kSrcIova, EduDevice::kBufferSize).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(edu_->FromDevice(kDstIova, 16, EduDevice::kBufferSize).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(edu_->ToDevice(uint64_t{1} << EduDevice::kDmaAddressBits, 16).code(),
            absl::StatusCode::kInvalidArgument);
  // And still works afterwards.
  Mapping src(kPage), dst(kPage);
  ExternalMemoryRegistry registry;
  ASSERT_TRUE(registry.Register(src.data(), src.size(), kPage).ok());
  ASSERT_TRUE(registry.Register(dst.data(), dst.size(), kPage).ok());
  ASSERT_TRUE(registry.DmaMap(domain_, src.data(), kSrcIova, kPage, DeviceReads()).ok());
  ASSERT_TRUE(registry.DmaMap(domain_, dst.data(), kDstIova, kPage, DeviceWrites()).ok());
  ExpectRoundTrip(*edu_, src, kSrcIova, dst, kDstIova, EduDevice::kMaxTransfer, 61);
  EXPECT_TRUE(registry.DmaUnmap(domain_, src.data(), kSrcIova, kPage).ok());
  EXPECT_TRUE(registry.DmaUnmap(domain_, dst.data(), kDstIova, kPage).ok());
}

// dma_entry_limit applies to containers opened after it is written: this
// test opens its own, and puts the limit back whatever happens.
class VfioDmaAvailTest : public ::testing::Test {
 protected:
  static constexpr char kLimit[] = "/sys/module/vfio_iommu_type1/parameters/dma_entry_limit";
  void SetUp() override {
    devices_ = VfioDevices();
    if (devices_.empty()) {
      if (InVm()) FAIL() << "DMAREG_IN_VM=1 but DMAREG_VFIO_DEVICES names no edu device";
      GTEST_SKIP() << kNoVfioReason;
    }
    saved_ = ReadTrimmed(kLimit);
    ASSERT_FALSE(saved_.empty()) << "cannot read " << kLimit;
    ASSERT_TRUE(WriteFile(kLimit, "3").ok());
  }
  void TearDown() override {
    if (!saved_.empty()) {
      EXPECT_TRUE(WriteFile(kLimit, saved_).ok());
    }
  }
  std::vector<std::string> devices_;
  std::string saved_;
};

TEST_F(VfioDmaAvailTest, SpentDmaAvailIsResourceExhaustedThenRecovers) {
  auto container = VfioContainer::Open();
  ASSERT_TRUE(container.ok()) << container.status();
  VfioDomainOptions options;
  options.container = *container;
  options.dma_address_bits = EduDevice::kDmaAddressBits;
  auto domain = VfioDomain::Open(devices_[0], options);
  ASSERT_TRUE(domain.ok()) << domain.status();
  EXPECT_EQ((*domain)->capabilities().max_mappings, 3u);
  ASSERT_TRUE((*container)->info().dma_avail.has_value());
  EXPECT_EQ(*(*container)->info().dma_avail, 3u);

  Mapping buf(5 * kPage);
  ExternalMemoryRegistry registry;
  ASSERT_TRUE(registry.Register(buf.data(), buf.size(), kPage).ok());
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(registry
                    .DmaMap(*domain, buf.data() + i * kPage, kSrcIova + i * 2 * kPage, kPage,
                            DeviceWrites())
                    .ok());
  }
  absl::Status s =
      registry.DmaMap(*domain, buf.data() + 3 * kPage, kDstIova, kPage, DeviceWrites()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_NE(s.message().find("dma_entry_limit"), std::string::npos) << s;
  EXPECT_EQ((*container)->mappings().size(), 3u);
  // Recovery: one unmap frees one entry.
  ASSERT_TRUE(registry.DmaUnmap(*domain, buf.data(), kSrcIova, kPage).ok());
  auto again = registry.DmaMap(*domain, buf.data() + 3 * kPage, kDstIova, kPage, DeviceWrites());
  ASSERT_TRUE(again.ok()) << again.status();
  auto edu = EduDevice::Open(*domain);
  ASSERT_TRUE(edu.ok()) << edu.status();
  // The edu reads buf's second page (mapped at kSrcIova + 2 pages).
  FillPattern(buf.data() + kPage, kLen, 31);
  std::memset(buf.data() + 3 * kPage, 0, kPage);
  ASSERT_TRUE((*edu)->ToDevice(kSrcIova + 2 * kPage, kLen).ok());
  ASSERT_TRUE((*edu)->FromDevice(kDstIova, kLen).ok());
  EXPECT_EQ(FindMismatch(buf.data() + 3 * kPage, kLen, 31), -1);
  for (int i = 1; i < 3; ++i) {
    EXPECT_TRUE(
        registry.DmaUnmap(*domain, buf.data() + i * kPage, kSrcIova + i * 2 * kPage, kPage).ok());
  }
  EXPECT_TRUE(registry.DmaUnmap(*domain, buf.data() + 3 * kPage, kDstIova, kPage).ok());
  EXPECT_TRUE((*container)->mappings().empty());
}

}  // namespace
}  // namespace dmareg::device_test
