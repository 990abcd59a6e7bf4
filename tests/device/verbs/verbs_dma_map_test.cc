// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The device-level map on a real RDMA device: external memory registered
// with an ExternalMemoryRegistry and DmaMap'ed on the VerbsDomain at an IOVA
// nowhere near its address. Two loopback RC QPs WRITE and READ it by that
// IOVA and every byte is checked; the registry's refusals hold on the real
// device, and every MR is gone at the end.

#include <cstring>
#include <memory>

#include "device/verbs/device_env.h"
#include "dmareg/external_memory.h"
#include "dmareg/verbs/verbs_domain.h"
#include "gtest/gtest.h"
#include "verbs/rc_qp.h"

namespace dmareg::device_test {
namespace {

constexpr size_t kLen = 256 * 1024;  // small: under TCG every byte is slow
constexpr size_t kPage = 4096;
constexpr uint64_t kIova = 0x5a5a'0000'0000;

class VerbsDmaMapTest : public RcLoopbackTest {
 protected:
  void TearDown() override {
    registry_.reset();  // its mappings go before the leak check
    RcLoopbackTest::TearDown();
  }
  std::unique_ptr<ExternalMemoryRegistry> registry_ = std::make_unique<ExternalMemoryRegistry>();
};

TEST_F(VerbsDmaMapTest, WriteAndReadAddressedByTheMappedIova) {
  Mapping target(kLen), src(kLen), back(kLen);
  ASSERT_TRUE(target.ok() && src.ok() && back.ok());
  FillPattern(src.data(), kLen, 21);
  std::memset(target.data(), 0, kLen);
  std::memset(back.data(), 0, kLen);
  auto s = cache_->Acquire(src.data(), kLen, {});
  auto b = cache_->Acquire(back.data(), kLen, Access::kLocalWrite);
  ASSERT_TRUE(s.ok() && b.ok());
  const int64_t mrs_before = domain_->live_mrs();

  ASSERT_TRUE(registry_->Register(target.data(), kLen, kPage).ok());
  const AccessFlags access = Access::kRemoteWrite | Access::kRemoteRead;
  absl::StatusOr<DeviceMapping> m = registry_->DmaMap(domain_, target.data(), kIova, kLen, access);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->iova, kIova);
  EXPECT_EQ(domain_->live_mrs(), mrs_before + 1);
  // The identical map again is the same MR.
  absl::StatusOr<DeviceMapping> again =
      registry_->DmaMap(domain_, target.data(), kIova, kLen, access);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->rkey, m->rkey);
  EXPECT_EQ(domain_->live_mrs(), mrs_before + 1);

  // WRITE by IOVA, in pieces that start and end mid-page.
  struct Piece {
    size_t offset, length;
  } pieces[] = {{0, 1}, {1, 4095}, {4096, 8192 + 17}, {12305, kLen - 12305}};
  for (const Piece& p : pieces) {
    SCOPED_TRACE(::testing::Message() << "WRITE offset " << p.offset << " length " << p.length);
    absl::Status w =
        pair_.a->Write(src.data() + p.offset, p.length, s->lkey(), kIova + p.offset, m->rkey);
    ASSERT_TRUE(w.ok()) << w;
  }
  EXPECT_EQ(FindMismatch(target.data(), kLen, 21), -1);
  // READ by IOVA: all of it, then a slice from the middle.
  absl::Status r = pair_.b->Read(back.data(), kLen, b->lkey(), kIova, m->rkey);
  ASSERT_TRUE(r.ok()) << r;
  EXPECT_EQ(FindMismatch(back.data(), kLen, 21), -1);
  std::memset(back.data(), 0, kLen);
  r = pair_.b->Read(back.data(), kLen / 2, b->lkey(), kIova + kLen / 4 + 3, m->rkey);
  ASSERT_TRUE(r.ok()) << r;
  EXPECT_EQ(FindMismatch(back.data(), kLen / 2, 21, kLen / 4 + 3), -1);

  ASSERT_TRUE(registry_->DmaUnmap(domain_, target.data(), kIova, kLen).ok());
  EXPECT_EQ(domain_->live_mrs(), mrs_before + 1);  // one map still holds it
  ASSERT_TRUE(registry_->DmaUnmap(domain_, target.data(), kIova, kLen).ok());
  EXPECT_EQ(domain_->live_mrs(), mrs_before);
  EXPECT_TRUE(registry_->Unregister(target.data(), kLen).ok());
}

TEST_F(VerbsDmaMapTest, RefusalsOnTheRealDeviceChangeNothing) {
  Mapping target(kLen), other(kLen), src(kLen);
  ASSERT_TRUE(target.ok() && other.ok() && src.ok());
  FillPattern(src.data(), kLen, 5);
  std::memset(target.data(), 0, kLen);
  auto s = cache_->Acquire(src.data(), kLen, {});
  ASSERT_TRUE(s.ok()) << s.status();
  const int64_t mrs_before = domain_->live_mrs();

  // Memory nobody registered.
  absl::StatusOr<DeviceMapping> m =
      registry_->DmaMap(domain_, target.data(), kIova, kLen, Access::kRemoteWrite);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition) << m.status();
  EXPECT_NE(m.status().message().find(domain_->name()), std::string::npos) << m.status();

  ASSERT_TRUE(registry_->Register(target.data(), kLen, kPage).ok());
  ASSERT_TRUE(registry_->Register(other.data(), kLen, kPage).ok());
  m = registry_->DmaMap(domain_, target.data(), kIova, kLen, Access::kRemoteWrite);
  ASSERT_TRUE(m.ok()) << m.status();

  // Another buffer over part of those IOVAs.
  absl::StatusOr<DeviceMapping> clash =
      registry_->DmaMap(domain_, other.data(), kIova + kPage, kPage, Access::kRemoteWrite);
  EXPECT_EQ(clash.status().code(), absl::StatusCode::kAlreadyExists) << clash.status();
  // Half of the mapping.
  absl::Status u = registry_->DmaUnmap(domain_, target.data(), kIova, kLen / 2);
  EXPECT_EQ(u.code(), absl::StatusCode::kInvalidArgument) << u;
  // The chunk while mapped.
  u = registry_->Unregister(target.data(), kLen);
  EXPECT_EQ(u.code(), absl::StatusCode::kFailedPrecondition) << u;
  EXPECT_EQ(domain_->live_mrs(), mrs_before + 1);

  // The mapping still works as it did.
  absl::Status w = pair_.a->Write(src.data(), kLen, s->lkey(), kIova, m->rkey);
  ASSERT_TRUE(w.ok()) << w;
  EXPECT_EQ(FindMismatch(target.data(), kLen, 5), -1);

  ASSERT_TRUE(registry_->DmaUnmap(domain_, target.data(), kIova, kLen).ok());
  EXPECT_EQ(domain_->live_mrs(), mrs_before);
  EXPECT_TRUE(registry_->Unregister(target.data(), kLen).ok());
  EXPECT_TRUE(registry_->Unregister(other.data(), kLen).ok());
  // The device forgot the IOVA with the MR: a WRITE there now fails (and
  // leaves the QP in error, so it comes last).
  absl::Status stale = pair_.a->Write(src.data(), 64, s->lkey(), kIova, m->rkey);
  EXPECT_FALSE(stale.ok()) << "the device still answered at the unmapped IOVA";
}

}  // namespace
}  // namespace dmareg::device_test
