// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// Real RDMA through cache registrations: two RC QPs on one device (loopback)
// move data with RDMA WRITE and RDMA READ using keys from the cache; every
// byte is checked. Also the reason the cache has Invalidate(): an MR keeps
// the pages it pinned, so after munmap + mmap at the same address an old MR
// still reads the old bytes.

#include <sys/mman.h>

#include <cstring>
#include <memory>
#include <vector>

#include "device/verbs/device_env.h"
#include "dmareg/cache.h"
#include "dmareg/verbs/verbs_domain.h"
#include "gtest/gtest.h"
#include "verbs/rc_qp.h"

namespace dmareg::device_test {
namespace {

constexpr size_t kLen = 256 * 1024;  // small: under TCG every byte is slow

class VerbsRcTest : public RcLoopbackTest {};

TEST_F(VerbsRcTest, WriteAndReadMoveEveryByte) {
  Mapping src(kLen), dst(kLen), back(kLen);
  ASSERT_TRUE(src.ok() && dst.ok() && back.ok());
  FillPattern(src.data(), kLen, 1);
  std::memset(dst.data(), 0, kLen);
  std::memset(back.data(), 0, kLen);

  auto s = cache_->Acquire(src.data(), kLen, Access::kRemoteRead);
  auto d = cache_->Acquire(dst.data(), kLen, Access::kRemoteWrite);
  auto b = cache_->Acquire(back.data(), kLen, Access::kLocalWrite);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_TRUE(b.ok()) << b.status();

  // WRITE: a's local src -> b's dst, in pieces that start and end mid-page.
  struct Piece {
    size_t offset, length;
  } pieces[] = {{0, 1}, {1, 4095}, {4096, 8192 + 17}, {12305, kLen - 12305}};
  for (const Piece& p : pieces) {
    SCOPED_TRACE(::testing::Message() << "WRITE offset " << p.offset << " length " << p.length);
    ASSERT_TRUE(pair_.a
                    ->Write(src.data() + p.offset, p.length, s->lkey(),
                            d->IovaFor(dst.data() + p.offset), d->rkey())
                    .ok());
    EXPECT_EQ(FindMismatch(dst.data(), p.offset + p.length, 1), -1);
  }
  EXPECT_EQ(FindMismatch(dst.data(), kLen, 1), -1);

  // READ: b reads a's src into its local `back`, in one request.
  absl::Status r = pair_.b->Read(back.data(), kLen, b->lkey(), s->IovaFor(src.data()), s->rkey());
  ASSERT_TRUE(r.ok()) << r;
  EXPECT_EQ(FindMismatch(back.data(), kLen, 1), -1);
  EXPECT_EQ(cache_->stats().misses, 3u);
}

// The Domain contract: RegisterHost at an IOVA the caller chose (what the
// device-level DmaMap builds on). The peer addresses the buffer by that
// IOVA, which is nowhere near its virtual address; the bytes land and come
// back where they should.
TEST_F(VerbsRcTest, RegisterHostAtACallersIovaIsAddressedByIt) {
  Mapping target(kLen), src(kLen), back(kLen);
  ASSERT_TRUE(target.ok() && src.ok() && back.ok());
  FillPattern(src.data(), kLen, 11);
  std::memset(target.data(), 0, kLen);
  std::memset(back.data(), 0, kLen);
  // Same offset in its page as the buffer: drivers of real NICs want that.
  const uint64_t iova = 0x5a5a'0000'0000 + (reinterpret_cast<uintptr_t>(target.data()) & 0xfff);
  absl::StatusOr<DeviceMapping> m = domain_->RegisterHost(
      HostMemory{target.data(), kLen, iova}, Access::kRemoteWrite | Access::kRemoteRead);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->iova, iova);
  EXPECT_EQ(m->length, kLen);
  auto s = cache_->Acquire(src.data(), kLen, {});
  auto b = cache_->Acquire(back.data(), kLen, Access::kLocalWrite);
  ASSERT_TRUE(s.ok() && b.ok());

  absl::Status w = pair_.a->Write(src.data(), kLen, s->lkey(), iova, m->rkey);
  ASSERT_TRUE(w.ok()) << w;
  EXPECT_EQ(FindMismatch(target.data(), kLen, 11), -1);
  // A READ from the middle, by IOVA.
  absl::Status r = pair_.b->Read(back.data(), kLen / 2, b->lkey(), iova + kLen / 4, m->rkey);
  ASSERT_TRUE(r.ok()) << r;
  EXPECT_EQ(FindMismatch(back.data(), kLen / 2, 11, kLen / 4), -1);
  // Its virtual address is not an address the MR answers to.
  absl::Status wrong = pair_.a->Write(src.data(), 64, s->lkey(),
                                      reinterpret_cast<uintptr_t>(target.data()), m->rkey);
  EXPECT_FALSE(wrong.ok()) << "the MR answered to the VA as well as to its IOVA";
  ASSERT_TRUE(domain_->Deregister(*m).ok());
}

TEST_F(VerbsRcTest, SubRangeRequestsReuseTheCachedMr) {
  Mapping buf(kLen), src(kLen);
  ASSERT_TRUE(buf.ok() && src.ok());
  auto whole = cache_->Acquire(buf.data(), kLen, Access::kRemoteWrite | Access::kRemoteRead);
  ASSERT_TRUE(whole.ok()) << whole.status();
  auto local = cache_->Acquire(src.data(), kLen, {});
  ASSERT_TRUE(local.ok()) << local.status();
  const CacheStats before = cache_->stats();
  const int64_t regs_before = domain_->total_registrations();

  // A slice in the middle, neither end page-aligned.
  char* slice = buf.data() + 3 * 4096 + 123;
  const size_t slice_len = 5 * 4096 + 7;
  auto part = cache_->Acquire(slice, slice_len, Access::kRemoteWrite);
  ASSERT_TRUE(part.ok()) << part.status();
  EXPECT_TRUE(part->SameMapping(*whole));
  EXPECT_EQ(part->rkey(), whole->rkey());
  EXPECT_EQ(part->lkey(), whole->lkey());
  EXPECT_EQ(cache_->stats().hits, before.hits + 1);
  EXPECT_EQ(cache_->stats().misses, before.misses);
  EXPECT_EQ(domain_->total_registrations(), regs_before);

  // And the slice's keys and IOVA really address those bytes.
  FillPattern(src.data(), slice_len, 7);
  std::memset(buf.data(), 0, kLen);
  absl::Status w =
      pair_.a->Write(src.data(), slice_len, local->lkey(), part->IovaFor(slice), part->rkey());
  ASSERT_TRUE(w.ok()) << w;
  EXPECT_EQ(FindMismatch(slice, slice_len, 7), -1);
  // Nothing outside the slice was touched.
  for (size_t i = 0; i < kLen; ++i) {
    if (buf.data() + i >= slice && buf.data() + i < slice + slice_len) continue;
    ASSERT_EQ(buf.data()[i], 0) << "byte " << i << " outside the slice";
  }
}

TEST_F(VerbsRcTest, InvalidateAfterRemapHandsOutTheNewPages) {
  constexpr size_t kMapLen = 64 * 1024;
  Mapping dst(kMapLen);
  ASSERT_TRUE(dst.ok());
  auto d = cache_->Acquire(dst.data(), kMapLen, Access::kLocalWrite);
  ASSERT_TRUE(d.ok()) << d.status();

  Mapping buf(kMapLen);
  ASSERT_TRUE(buf.ok());
  char* const addr = buf.data();
  FillPattern(addr, kMapLen, 100);  // the "old" contents
  auto old_reg = cache_->Acquire(addr, kMapLen, Access::kRemoteRead);
  ASSERT_TRUE(old_reg.ok()) << old_reg.status();

  // Replace the pages under the same address: munmap, then map fresh pages
  // there and give them different contents.
  ASSERT_TRUE(test::ReplacePages(addr, kMapLen));
  FillPattern(addr, kMapLen, 200);  // the "new" contents

  // The stale translation: the old MR still pins and reads the old pages.
  // This is what a cache that missed the unmap would hand out.
  absl::Status r =
      pair_.b->Read(dst.data(), kMapLen, d->lkey(), old_reg->IovaFor(addr), old_reg->rkey());
  ASSERT_TRUE(r.ok()) << r;
  EXPECT_EQ(FindMismatch(dst.data(), kMapLen, 100), -1) << "old MR should see the old pages";

  ASSERT_TRUE(cache_->Invalidate(addr, kMapLen).ok());
  auto new_reg = cache_->Acquire(addr, kMapLen, Access::kRemoteRead);
  ASSERT_TRUE(new_reg.ok()) << new_reg.status();
  EXPECT_FALSE(new_reg->SameMapping(*old_reg));
  EXPECT_NE(new_reg->rkey(), old_reg->rkey());
  EXPECT_NE(new_reg->lkey(), old_reg->lkey());

  std::memset(dst.data(), 0, kMapLen);
  r = pair_.b->Read(dst.data(), kMapLen, d->lkey(), new_reg->IovaFor(addr), new_reg->rkey());
  ASSERT_TRUE(r.ok()) << r;
  EXPECT_EQ(FindMismatch(dst.data(), kMapLen, 200), -1) << "new MR must see the new pages";

  // The old MR goes with its last handle.
  const int64_t live = domain_->live_mrs();
  old_reg->Reset();
  EXPECT_EQ(domain_->live_mrs(), live - 1);
}

TEST_F(VerbsRcTest, RepeatedAcquiresHitAndKeepWorking) {
  constexpr size_t kSlot = 4096;
  constexpr int kSlots = 16;
  Mapping src(kSlot * kSlots), dst(kSlot * kSlots);
  ASSERT_TRUE(src.ok() && dst.ok());
  FillPattern(src.data(), src.size(), 3);
  // One registration each for the whole buffers; every slot is a hit.
  auto s_all = cache_->Acquire(src.data(), src.size(), {});
  auto d_all = cache_->Acquire(dst.data(), dst.size(), Access::kRemoteWrite);
  ASSERT_TRUE(s_all.ok() && d_all.ok());
  for (int i = 0; i < kSlots; ++i) {
    char* from = src.data() + i * kSlot;
    char* to = dst.data() + i * kSlot;
    auto s = cache_->Acquire(from, kSlot, {});
    auto d = cache_->Acquire(to, kSlot, Access::kRemoteWrite);
    ASSERT_TRUE(s.ok() && d.ok());
    ASSERT_TRUE(pair_.a->PostWrite(from, kSlot, s->lkey(), d->IovaFor(to), d->rkey(), i).ok());
  }
  ASSERT_TRUE(pair_.a->WaitCompletions(kSlots, rc::RcQp::kDefaultTimeout).ok());
  EXPECT_EQ(FindMismatch(dst.data(), dst.size(), 3), -1);
  EXPECT_EQ(cache_->stats().misses, 2u);
  EXPECT_EQ(cache_->stats().hits, 2u * kSlots);
}

}  // namespace
}  // namespace dmareg::device_test
