// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// dma-buf slices through the cache on rxe: identity (never the fd number),
// rxe's refusal of dma-buf MRs as a clear status per policy, bad input on a
// real dma-buf, the fallback through a udmabuf's memfd alias carrying real
// RDMA WRITE and READ (7.x; the refusal on 6.1), and one buffer on two NICs
// (rxe0, rxe1) all or nothing. No MR and no fd leaks, counted each time.

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/vm_env.h"
#include "device/dmabuf/dmabuf_env.h"
#include "device/verbs/device_env.h"
#include "dmareg/dmabuf/dmabuf.h"
#include "dmareg/dmabuf/drm_device.h"
#include "dmareg/dmabuf/udmabuf.h"
#include "dmareg/dmabuf_id.h"
#include "dmareg/external_memory.h"
#include "dmareg/registration_set.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "verbs/rc_qp.h"

namespace dmareg::device_test {
namespace {

using dmabuf_test::FillThroughMapping;
using dmabuf_test::MismatchThroughMapping;
using dmabuf_test::OpenFds;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr size_t kPage = 4096;
constexpr size_t kLen = 64 * 1024;  // small: under TCG every byte is slow
constexpr AccessFlags kTarget = Access::kRemoteWrite | Access::kRemoteRead | Access::kLocalWrite;

class DmaBufCacheTest : public RcLoopbackTest {
 protected:
  void SetUp() override {
    RcLoopbackTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    fds_ = OpenFds();
    mrs_ = domain_->live_mrs();
  }
  void TearDown() override {
    if (domain_ != nullptr) {
      EXPECT_EQ(OpenFds(), fds_) << "fds leaked";
    }
    RcLoopbackTest::TearDown();
  }
  // A cache on `domain` (default: this test's) with its own explicit monitor.
  std::unique_ptr<RegistrationCache> NewCache(DmaBufPolicy policy, size_t max_bytes = 0,
                                              std::shared_ptr<VerbsDomain> domain = nullptr) {
    auto c = RegistrationCache::Create(
        domain ? domain : domain_,
        {.max_bytes = max_bytes, .monitoring = Monitoring::kExplicitOnly, .dmabuf_policy = policy});
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(*c) : nullptr;
  }
  // The harness's vgem card (fails in the VM without one).
  std::optional<DrmDevice> Vgem() {
    const std::string card = Env("DMAREG_DRM_CARD");
    EXPECT_FALSE(card.empty()) << "DMAREG_DRM_CARD is not set";
    absl::StatusOr<DrmDevice> d = DrmDevice::Open(card);
    EXPECT_TRUE(d.ok()) << d.status();
    if (!d.ok()) return std::nullopt;
    return std::move(*d);
  }
  int fds_ = 0;
  int64_t mrs_ = 0;
};

void Show(const absl::Status& s) { std::printf("  status: %s\n", s.ToString().c_str()); }

TEST_F(DmaBufCacheTest, VgemIdentityAndRxesRefusal) {
  std::optional<DrmDevice> drm = Vgem();
  ASSERT_TRUE(drm.has_value());
  {
    absl::StatusOr<DmaBuf> a = drm->Allocate(kLen), b = drm->Allocate(kLen);
    ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
    absl::StatusOr<DmaBufInfo> ia = InspectDmaBuf(a->fd()), ib = InspectDmaBuf(b->fd());
    ASSERT_TRUE(ia.ok() && ib.ok()) << ia.status() << ib.status();
    EXPECT_EQ(ia->size, a->size());
    EXPECT_NE(ia->id, ib->id);
    const int dup_fd = fcntl(a->fd(), F_DUPFD_CLOEXEC, 0);
    ASSERT_GE(dup_fd, 0);
    absl::StatusOr<DmaBufInfo> idup = InspectDmaBuf(dup_fd);
    ASSERT_TRUE(idup.ok()) << idup.status();
    EXPECT_EQ(idup->id, ia->id);
    close(dup_fd);

    // A new buffer on a recycled fd number is another buffer.
    const int number = b->fd();
    const DmaBufId old_id = ib->id;
    *b = DmaBuf();
    absl::StatusOr<DmaBuf> c = drm->Allocate(kLen);
    ASSERT_TRUE(c.ok()) << c.status();
    ASSERT_EQ(c->fd(), number) << "the kernel did not hand out the lowest free fd";
    absl::StatusOr<DmaBufInfo> ic = InspectDmaBuf(c->fd());
    ASSERT_TRUE(ic.ok()) << ic.status();
    EXPECT_NE(ic->id, old_id);

    // rxe has no dma-buf import: dmabuf-only says so, naming the call.
    auto only = NewCache(DmaBufPolicy::kDmaBufOnly);
    auto r = only->Acquire(a->Slice(0, kPage), Access::kLocalWrite);
    ASSERT_FALSE(r.ok());
    Show(r.status());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnimplemented);
    EXPECT_THAT(r.status().message(),
                AllOf(HasSubstr("ibv_reg_dmabuf_mr on " + device_), HasSubstr("EOPNOTSUPP")));
    EXPECT_EQ(only->stats().live_regions, 0u);
    // Preferring the import with no alias to fall back on: both attempts named.
    auto prefer = NewCache(DmaBufPolicy::kPreferDmaBuf);
    r = prefer->Acquire(a->Slice(kPage, kPage), Access::kLocalWrite);
    ASSERT_FALSE(r.ok());
    Show(r.status());
    EXPECT_THAT(r.status().message(), AllOf(HasSubstr("ibv_reg_dmabuf_mr on " + device_),
                                            HasSubstr("EOPNOTSUPP"), HasSubstr("alias")));
    EXPECT_EQ(prefer->stats().live_regions, 0u);
    EXPECT_GE(prefer->stats().registration_failures, 1u);
    EXPECT_EQ(domain_->live_mrs(), mrs_);
  }
}

TEST_F(DmaBufCacheTest, BadInputOnARealDmaBuf) {
  std::optional<DrmDevice> drm = Vgem();
  ASSERT_TRUE(drm.has_value());
  absl::StatusOr<DmaBuf> buf = drm->Allocate(kLen);
  ASSERT_TRUE(buf.ok()) << buf.status();
  const uint64_t size = buf->size();
  auto expect_invalid = [&](const DmaBufMemory& m, const char* what, const std::string& says) {
    SCOPED_TRACE(what);
    auto r = cache_->Acquire(m, Access::kLocalWrite);
    ASSERT_FALSE(r.ok());
    Show(r.status());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    if (!says.empty()) {
      EXPECT_THAT(r.status().message(), HasSubstr(says));
    }
  };
  expect_invalid({.fd = -1, .offset = 0, .length = kPage}, "fd -1", "");
  int closed = fcntl(buf->fd(), F_DUPFD_CLOEXEC, 0);
  ASSERT_GE(closed, 0);
  close(closed);
  expect_invalid({.fd = closed, .offset = 0, .length = kPage}, "closed fd", "");
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  expect_invalid({.fd = p[0], .offset = 0, .length = kPage}, "pipe", "pipe");
  close(p[0]);
  close(p[1]);
  char path[] = "/tmp/dmabuf-cache-test-XXXXXX";
  const int file = mkostemp(path, O_CLOEXEC);
  ASSERT_GE(file, 0);
  unlink(path);
  ASSERT_EQ(ftruncate(file, kLen), 0);
  expect_invalid({.fd = file, .offset = 0, .length = kPage}, "regular file", "regular file");
  close(file);
  expect_invalid(buf->Slice(size - kPage, 2 * kPage), "past the end", "");
  expect_invalid(buf->Slice(size, 1), "at the end", "");
  expect_invalid(buf->Slice(~uint64_t{0} - 10, 100), "wrapping", "wrap");
  EXPECT_EQ(cache_->stats().live_regions, 0u);
  EXPECT_EQ(domain_->live_mrs(), mrs_);
}

TEST_F(DmaBufCacheTest, UdmabufFallsBackToItsAliasForRdma) {
  test::RecordBranch("udmabuf", !Env("DMAREG_UDMABUF").empty());
  if (Env("DMAREG_UDMABUF").empty()) {
    absl::StatusOr<UdmabufDevice> dev = UdmabufDevice::Open();
    EXPECT_EQ(dev.status().code(), absl::StatusCode::kNotFound) << dev.status();
    EXPECT_THAT(dev.status().message(), HasSubstr("/dev/udmabuf"));
    return;
  }
  absl::StatusOr<UdmabufDevice> dev = UdmabufDevice::Open(Env("DMAREG_UDMABUF"));
  ASSERT_TRUE(dev.ok()) << dev.status();
  absl::StatusOr<DmaBuf> buf = dev->Allocate(kLen);
  ASSERT_TRUE(buf.ok()) << buf.status();
  FillThroughMapping(buf->fd(), kLen, 0);  // not the pattern written below
  Mapping src(kLen), back(kLen);
  ASSERT_TRUE(src.ok() && back.ok());
  test::FillPattern(src.data(), kLen, 31);
  std::memset(back.data(), 0, kLen);
  auto s = cache_->Acquire(src.data(), kLen, {});
  auto b = cache_->Acquire(back.data(), kLen, Access::kLocalWrite);
  ASSERT_TRUE(s.ok() && b.ok()) << s.status() << b.status();

  auto t = cache_->Acquire(buf->All(), kTarget);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE(t->via_alias());
  EXPECT_GE(cache_->stats().dmabuf_alias_registrations, 1u);
  absl::Status w = pair_.a->Write(src.data(), kLen, s->lkey(), t->IovaForOffset(0), t->rkey());
  ASSERT_TRUE(w.ok()) << w;
  EXPECT_EQ(MismatchThroughMapping(buf->fd(), kLen, 31), -1);

  // Another fd of the same buffer, a sub-slice: the same mapping.
  const int dup_fd = fcntl(buf->fd(), F_DUPFD_CLOEXEC, 0);
  ASSERT_GE(dup_fd, 0);
  auto t2 = cache_->Acquire(
      DmaBufMemory{.fd = dup_fd, .offset = kPage, .length = kPage, .alias = buf->alias()}, kTarget);
  ASSERT_TRUE(t2.ok()) << t2.status();
  EXPECT_TRUE(t2->SameMapping(*t));
  EXPECT_EQ(t2->lkey(), t->lkey());

  // Both fds closed while cached: the registration still reads right.
  close(dup_fd);
  close(buf->ReleaseFd());
  absl::Status r = pair_.b->Read(back.data(), kLen, b->lkey(), t->IovaForOffset(0), t->rkey());
  ASSERT_TRUE(r.ok()) << r;
  EXPECT_EQ(test::FindMismatch(back.data(), kLen, 31), -1);
}

// A dma-buf chunk in the external-memory registry (rte_extmem_register_dmabuf),
// mapped on rxe at a caller's IOVA: rxe cannot import it, so the chunk's
// addresses (a udmabuf's memfd mapping) are registered; RDMA by that IOVA
// moves the bytes, checked through the dma-buf's own mapping. On 6.1 (no
// udmabuf) a vgem chunk: registered, and its PFN-mapped addresses refused
// by the kernel as a clear status.
TEST_F(DmaBufCacheTest, RegistryDmaBufChunkAtACallersIova) {
  constexpr uint64_t kIova = 0x5a5a00000000;
  ExternalMemoryRegistry registry;
  if (Env("DMAREG_UDMABUF").empty()) {
    std::optional<DrmDevice> drm = Vgem();
    ASSERT_TRUE(drm.has_value());
    absl::StatusOr<DmaBuf> buf = drm->Allocate(kLen);
    ASSERT_TRUE(buf.ok()) << buf.status();
    void* cpu = mmap(nullptr, kLen, PROT_READ | PROT_WRITE, MAP_SHARED, buf->fd(), 0);
    ASSERT_NE(cpu, MAP_FAILED);
    ASSERT_TRUE(registry.RegisterDmaBuf(cpu, kLen, kPage, buf->fd(), 0).ok());
    absl::StatusOr<DeviceMapping> m = registry.DmaMap(domain_, cpu, kIova, kLen, kTarget);
    ASSERT_FALSE(m.ok());
    Show(m.status());
    EXPECT_THAT(m.status().message(),
                AllOf(HasSubstr("DmaMap on " + device_), HasSubstr("EFAULT")));
    EXPECT_EQ(registry.mapping_count(), 0u);
    ASSERT_TRUE(registry.Unregister(cpu, kLen).ok());
    munmap(cpu, kLen);
    EXPECT_EQ(domain_->live_mrs(), mrs_);
    return;
  }
  absl::StatusOr<UdmabufDevice> dev = UdmabufDevice::Open(Env("DMAREG_UDMABUF"));
  ASSERT_TRUE(dev.ok()) << dev.status();
  absl::StatusOr<DmaBuf> buf = dev->Allocate(kLen);
  ASSERT_TRUE(buf.ok()) << buf.status();
  FillThroughMapping(buf->fd(), kLen, 0);
  ASSERT_TRUE(registry.RegisterDmaBuf(buf->alias(), kLen, kPage, buf->fd(), 0).ok());
  close(buf->ReleaseFd());  // the registry keeps its own
  absl::StatusOr<DeviceMapping> m = registry.DmaMap(domain_, buf->alias(), kIova, kLen, kTarget);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->iova, kIova);
  EXPECT_FALSE(registry.mappings().at(0).dmabuf);  // rxe: the addresses, not an import
  const int fd = registry.Lookup(buf->alias())->dmabuf_fd;

  Mapping src(kLen), back(kLen);
  ASSERT_TRUE(src.ok() && back.ok());
  test::FillPattern(src.data(), kLen, 57);
  std::memset(back.data(), 0, kLen);
  auto s = cache_->Acquire(src.data(), kLen, {});
  auto b = cache_->Acquire(back.data(), kLen, Access::kLocalWrite);
  ASSERT_TRUE(s.ok() && b.ok()) << s.status() << b.status();
  absl::Status w = pair_.a->Write(src.data(), kLen, s->lkey(), kIova, m->rkey);
  ASSERT_TRUE(w.ok()) << w;
  EXPECT_EQ(MismatchThroughMapping(fd, kLen, 57), -1);
  absl::Status r = pair_.b->Read(back.data(), kLen - kPage, b->lkey(), kIova + kPage, m->rkey);
  ASSERT_TRUE(r.ok()) << r;
  EXPECT_EQ(test::FindMismatch(back.data(), kLen - kPage, 57, kPage), -1);
  ASSERT_TRUE(registry.DmaUnmap(domain_, buf->alias(), kIova, kLen).ok());
  ASSERT_TRUE(registry.Unregister(buf->alias(), kLen).ok());
}

// One buffer on rxe0 and rxe1 through AcquireOnAll; each NIC's own loopback
// pair writes it. Then a refusal on one NIC leaves nothing on the other.
TEST_F(DmaBufCacheTest, TwoNicsAllOrNothing) {
  const std::string dev2 = Env("DMAREG_RXE_DEV2");
  if (dev2.empty()) {
    ASSERT_FALSE(InVm()) << "DMAREG_IN_VM=1 but DMAREG_RXE_DEV2 is not set";
    GTEST_SKIP() << "no second RDMA device (DMAREG_RXE_DEV2)";
  }
  absl::StatusOr<std::shared_ptr<VerbsDomain>> d1 = VerbsDomain::Open(dev2);
  ASSERT_TRUE(d1.ok()) << d1.status();
  std::shared_ptr<VerbsDomain> domain1 = *d1;
  {
    absl::StatusOr<rc::RcLoopback> pair1 =
        rc::ConnectLoopback(domain1->context(), domain1->pd(), dev2);
    ASSERT_TRUE(pair1.ok()) << pair1.status();
    auto c0 = NewCache(DmaBufPolicy::kPreferDmaBuf);
    auto c1 = NewCache(DmaBufPolicy::kPreferDmaBuf, 0, domain1);
    std::vector<RegistrationCache*> nics = {c0.get(), c1.get()};

    // Host memory on every kernel; a udmabuf's slice where there is one.
    Mapping host(kLen);
    ASSERT_TRUE(host.ok());
    std::optional<DmaBuf> udmabuf;
    if (!Env("DMAREG_UDMABUF").empty()) {
      auto dev = UdmabufDevice::Open(Env("DMAREG_UDMABUF"));
      ASSERT_TRUE(dev.ok()) << dev.status();
      auto buf = dev->Allocate(kLen);
      ASSERT_TRUE(buf.ok()) << buf.status();
      udmabuf = std::move(*buf);
    }
    Mapping src0(kLen), src1(kLen);
    ASSERT_TRUE(src0.ok() && src1.ok());
    test::FillPattern(src0.data(), kLen, 40);
    test::FillPattern(src1.data() + kLen / 2, kLen / 2, 41, kLen / 2);
    auto s0 = c0->Acquire(src0.data(), kLen, {});
    auto s1 = c1->Acquire(src1.data(), kLen, {});
    ASSERT_TRUE(s0.ok() && s1.ok()) << s0.status() << s1.status();

    absl::StatusOr<RegistrationSet> set =
        udmabuf ? AcquireOnAll(nics, udmabuf->All(), kTarget)
                : AcquireOnAll(nics, HostMemory{host.data(), kLen}, kTarget);
    ASSERT_TRUE(set.ok()) << set.status();
    ASSERT_EQ(set->size(), 2u);
    EXPECT_FALSE((*set)[0].SameMapping((*set)[1]));
    std::printf("  %s: lkey %#x rkey %#x; %s: lkey %#x rkey %#x\n", device_.c_str(),
                (*set)[0].lkey(), (*set)[0].rkey(), dev2.c_str(), (*set)[1].lkey(),
                (*set)[1].rkey());
    EXPECT_EQ(domain_->live_mrs(), mrs_ + 2);  // src0 and the set's
    EXPECT_EQ(domain1->live_mrs(), 2);
    auto iova = [&](size_t i, size_t off) {
      return udmabuf ? (*set)[i].IovaForOffset(off) : (*set)[i].IovaFor(host.data() + off);
    };
    // rxe0 writes the first half, rxe1 the second, each with its own keys.
    absl::Status w =
        pair_.a->Write(src0.data(), kLen / 2, s0->lkey(), iova(0, 0), (*set)[0].rkey());
    ASSERT_TRUE(w.ok()) << w;
    w = pair1->a->Write(src1.data() + kLen / 2, kLen / 2, s1->lkey(), iova(1, kLen / 2),
                        (*set)[1].rkey());
    ASSERT_TRUE(w.ok()) << w;
    const char* bytes = udmabuf ? static_cast<const char*>(udmabuf->alias()) : host.data();
    EXPECT_EQ(test::FindMismatch(bytes, kLen / 2, 40), -1);
    EXPECT_EQ(test::FindMismatch(bytes + kLen / 2, kLen / 2, 41, kLen / 2), -1);
    if (udmabuf) {
      EXPECT_EQ(MismatchThroughMapping(udmabuf->fd(), kLen / 2, 40), -1);
    }
    set = RegistrationSet();

    // A second NIC whose cache cannot hold the buffer: nothing stays on the first.
    Mapping other(kLen);
    ASSERT_TRUE(other.ok());
    auto small = NewCache(DmaBufPolicy::kPreferDmaBuf, kPage, domain1);
    std::vector<RegistrationCache*> tight = {c0.get(), small.get()};
    const uint64_t live0 = c0->stats().live_regions;
    const int64_t mrs0 = domain_->live_mrs();
    absl::StatusOr<RegistrationSet> refused =
        AcquireOnAll(tight, HostMemory{other.data(), kLen}, kTarget);
    ASSERT_FALSE(refused.ok());
    Show(refused.status());
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
    EXPECT_THAT(refused.status().message(), HasSubstr(dev2));
    EXPECT_EQ(c0->stats().live_regions, live0);
    EXPECT_EQ(domain_->live_mrs(), mrs0);
    if (udmabuf) {
      // Both NICs refuse the import under dmabuf-only: nothing anywhere.
      auto only0 = NewCache(DmaBufPolicy::kDmaBufOnly);
      auto only1 = NewCache(DmaBufPolicy::kDmaBufOnly, 0, domain1);
      std::vector<RegistrationCache*> only = {only0.get(), only1.get()};
      absl::StatusOr<RegistrationSet> none = AcquireOnAll(only, udmabuf->All(), kTarget);
      ASSERT_FALSE(none.ok());
      Show(none.status());
      EXPECT_THAT(none.status().message(), HasSubstr("ibv_reg_dmabuf_mr"));
      EXPECT_EQ(only0->stats().live_regions, 0u);
      EXPECT_EQ(only1->stats().live_regions, 0u);
      EXPECT_EQ(domain_->live_mrs(), mrs0);
    }
    s0 = absl::CancelledError("released");
    s1 = absl::CancelledError("released");
  }
  EXPECT_EQ(domain1->live_mrs(), 0) << "MRs leaked on " << dev2;
}

}  // namespace
}  // namespace dmareg::device_test
