// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// dma-buf slices in the cache: identity, sub-slices, access upgrades,
// limits, invalidation, the fallback policy and bad input, over FakeDomain
// with memfds standing for dma-bufs (testing::FakeDmaBufs).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "common/test_memory.h"
#include "core/cache_core.h"
#include "dmareg/cache.h"
#include "dmareg/testing/fake_dmabuf.h"
#include "dmareg/testing/fake_domain.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dmareg {
namespace {

using ::testing::AllOf;
using testing::FakeDmaBufs;
using testing::FakeDomain;
using ::testing::HasSubstr;

const uint64_t kPage = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));

class DmaBufCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fake_ = std::make_shared<FakeDomain>();
    Make({});
  }
  void Make(CacheOptions options) {
    cache_.reset();
    options.monitoring = Monitoring::kExplicitOnly;
    options.inspect_dmabuf = bufs_.Inspector();
    cache_ = RegistrationCache::Create(fake_, options).value();
  }
  void TearDown() override {
    cache_.reset();
    EXPECT_EQ(fake_->live_registrations(), 0) << "registrations leaked";
    for (int fd : fds_) close(fd);
  }
  FakeDmaBufs::Buffer NewBuffer(uint64_t pages) {
    FakeDmaBufs::Buffer b = bufs_.Create(pages * kPage).value();
    fds_.push_back(b.fd);
    return b;
  }
  static DmaBufMemory Slice(const FakeDmaBufs::Buffer& b, uint64_t offset, size_t length,
                            bool alias = false) {
    return DmaBufMemory{
        .fd = b.fd, .offset = offset, .length = length, .alias = alias ? b.alias : nullptr};
  }

  FakeDmaBufs bufs_;
  std::shared_ptr<FakeDomain> fake_;
  std::unique_ptr<RegistrationCache> cache_;
  std::vector<int> fds_;
};

TEST_F(DmaBufCacheTest, SubSlicesOfOneBufferHitOneMapping) {
  const FakeDmaBufs::Buffer b = NewBuffer(8);
  auto a = cache_->Acquire(Slice(b, kPage + 100, 2 * kPage), Access::kRemoteRead);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(a->is_dmabuf());
  EXPECT_FALSE(a->via_alias());
  // Whole pages: [page 1, page 4).
  EXPECT_EQ(reinterpret_cast<uint64_t>(a->addr()), kPage);
  EXPECT_EQ(a->length(), 3 * kPage);
  EXPECT_EQ(a->IovaForOffset(kPage + 100), kPage + 100);
  auto hit = cache_->Acquire(Slice(b, 2 * kPage, 10), Access::kRemoteRead);
  ASSERT_TRUE(hit.ok());
  EXPECT_TRUE(hit->SameMapping(*a));
  ASSERT_EQ(fake_->live_registrations(), 1);
  const FakeDomain::LiveMapping live = fake_->live_mappings()[0];
  EXPECT_TRUE(live.dmabuf);
  EXPECT_EQ(live.fd, b.fd);
  EXPECT_EQ(live.addr, kPage);
  EXPECT_EQ(live.length, 3 * kPage);
  const CacheStats s = cache_->stats();
  EXPECT_EQ(s.dmabuf_misses, 1u);
  EXPECT_EQ(s.dmabuf_hits, 1u);
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(s.hits, 1u);
  EXPECT_EQ(s.dmabuf_regions, 1u);
  EXPECT_EQ(s.dmabuf_bytes, 3 * kPage);
}

TEST_F(DmaBufCacheTest, TwoFdsOfOneBufferShareAMapping) {
  const FakeDmaBufs::Buffer b = NewBuffer(4);
  const int dup_fd = dup(b.fd);
  ASSERT_GE(dup_fd, 0);
  fds_.push_back(dup_fd);
  auto a = cache_->Acquire(Slice(b, 0, 4 * kPage), {});
  auto c = cache_->Acquire(DmaBufMemory{.fd = dup_fd, .offset = 0, .length = kPage}, {});
  ASSERT_TRUE(a.ok() && c.ok());
  EXPECT_TRUE(a->SameMapping(*c));
  EXPECT_EQ(fake_->total_registrations(), 1);
}

TEST_F(DmaBufCacheTest, ARecycledFdNumberIsAMissNeverAStaleHit) {
  FakeDmaBufs::Buffer first = bufs_.Create(2 * kPage).value();
  auto a = cache_->Acquire(Slice(first, 0, kPage), {});
  ASSERT_TRUE(a.ok());
  const int number = first.fd;
  close(first.fd);  // the registration keeps its buffer; the number is free
  const FakeDmaBufs::Buffer second = NewBuffer(2);
  ASSERT_EQ(second.fd, number) << "the test needs the fd number reused";
  ASSERT_NE(second.id, first.id);
  auto b = cache_->Acquire(Slice(second, 0, kPage), {});
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(b->SameMapping(*a));
  EXPECT_EQ(fake_->live_registrations(), 2);
  // The first buffer's mapping is still there, reachable by its identity.
  cache_->Invalidate(first.id);
  a->Reset();
  EXPECT_EQ(fake_->live_registrations(), 1);
}

TEST_F(DmaBufCacheTest, MoreAccessRegistersTheUnionAndRetiresTheOld) {
  const FakeDmaBufs::Buffer b = NewBuffer(8);
  auto r = cache_->Acquire(Slice(b, 0, 2 * kPage), Access::kLocalWrite);
  ASSERT_TRUE(r.ok());
  auto w = cache_->Acquire(Slice(b, kPage, 2 * kPage), Access::kRemoteWrite);
  ASSERT_TRUE(w.ok());
  EXPECT_FALSE(w->SameMapping(*r));
  EXPECT_EQ(reinterpret_cast<uint64_t>(w->addr()), 0u);
  EXPECT_EQ(w->length(), 3 * kPage);
  EXPECT_TRUE(AccessSatisfies(w->access(), Access::kLocalWrite));
  EXPECT_TRUE(AccessSatisfies(w->access(), Access::kRemoteWrite));
  EXPECT_EQ(fake_->live_registrations(), 2);  // the old one is still held
  r->Reset();
  EXPECT_EQ(fake_->live_registrations(), 1);
  auto again = cache_->Acquire(Slice(b, 0, kPage), Access::kLocalWrite);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->SameMapping(*w));
}

TEST_F(DmaBufCacheTest, LimitsEvictDmaBufAndHostMappingsAlike) {
  Make({.max_regions = 2});
  test::Mapping host(kPage);
  const FakeDmaBufs::Buffer b1 = NewBuffer(1), b2 = NewBuffer(1), b3 = NewBuffer(1);
  { ASSERT_TRUE(cache_->Acquire(host.data(), kPage, {}).ok()); }
  auto held = cache_->Acquire(Slice(b1, 0, kPage), {});
  ASSERT_TRUE(held.ok());
  { ASSERT_TRUE(cache_->Acquire(Slice(b2, 0, kPage), {}).ok()); }
  EXPECT_EQ(cache_->stats().evictions, 1u);  // the host mapping went
  EXPECT_EQ(fake_->live_registrations(), 2);
  auto b2_again = cache_->Acquire(Slice(b2, 0, kPage), {});
  ASSERT_TRUE(b2_again.ok());
  // Both referenced: a third buffer finds nothing to evict.
  auto full = cache_->Acquire(Slice(b3, 0, kPage), {});
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(fake_->live_registrations(), 2);
  b2_again->Reset();
  EXPECT_TRUE(cache_->Acquire(Slice(b3, 0, kPage), {}).ok());
}

TEST_F(DmaBufCacheTest, InvalidateBySliceFdAndIdentity) {
  const FakeDmaBufs::Buffer b = NewBuffer(16);
  auto lo = cache_->Acquire(Slice(b, 0, kPage), {});
  { ASSERT_TRUE(cache_->Acquire(Slice(b, 8 * kPage, kPage), {}).ok()); }
  ASSERT_EQ(fake_->live_registrations(), 2);
  // A slice: only what overlaps it goes.
  ASSERT_TRUE(cache_->Invalidate(Slice(b, 8 * kPage + 10, 1)).ok());
  EXPECT_EQ(fake_->live_registrations(), 1);
  // The whole buffer: the held one is retired, kept until released.
  cache_->Invalidate(b.id);
  EXPECT_EQ(fake_->live_registrations(), 1);
  auto fresh = cache_->Acquire(Slice(b, 0, kPage), {});
  ASSERT_TRUE(fresh.ok());
  EXPECT_FALSE(fresh->SameMapping(*lo));
  lo->Reset();
  EXPECT_EQ(fake_->live_registrations(), 1);
  fresh->Reset();
  cache_->Invalidate(b.id);
  EXPECT_EQ(fake_->live_registrations(), 0);
  const CacheStats s = cache_->stats();
  EXPECT_EQ(s.invalidations, 3u);
  EXPECT_EQ(s.invalidated_regions, 3u);
}

TEST_F(DmaBufCacheTest, ABufferClosedWhileCachedKeepsItsMappingUntilLetGo) {
  FakeDmaBufs::Buffer b = bufs_.Create(2 * kPage).value();
  { ASSERT_TRUE(cache_->Acquire(Slice(b, 0, kPage), {}).ok()); }
  close(b.fd);
  EXPECT_EQ(fake_->live_registrations(), 1);
  EXPECT_EQ(cache_->Invalidate(Slice(b, 0, kPage)).code(), absl::StatusCode::kInvalidArgument);
  cache_->Flush();
  EXPECT_EQ(fake_->live_registrations(), 0);
}

TEST_F(DmaBufCacheTest, FallsBackToTheCpuAliasWhereTheDomainCannotImport) {
  fake_->mutable_capabilities().dmabuf_import = false;
  const FakeDmaBufs::Buffer b = NewBuffer(4);
  auto r = cache_->Acquire(Slice(b, kPage, kPage, /*alias=*/true), Access::kRemoteWrite);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->is_dmabuf());
  EXPECT_TRUE(r->via_alias());
  const FakeDomain::LiveMapping live = fake_->live_mappings().at(0);
  EXPECT_FALSE(live.dmabuf);  // a host registration of the alias's pages
  EXPECT_EQ(live.addr, reinterpret_cast<uintptr_t>(b.alias) + kPage);
  EXPECT_EQ(live.iova, kPage);  // the same IOVA an import would give
  EXPECT_EQ(r->IovaForOffset(kPage + 5), kPage + 5);
  auto hit = cache_->Acquire(Slice(b, kPage, 100, true), {});
  ASSERT_TRUE(hit.ok());
  EXPECT_TRUE(hit->SameMapping(*r));
  EXPECT_EQ(cache_->stats().dmabuf_alias_registrations, 1u);
}

TEST_F(DmaBufCacheTest, AFailureNamesEveryAttempt) {
  fake_->mutable_capabilities().dmabuf_import = false;
  const FakeDmaBufs::Buffer b = NewBuffer(1);
  auto no_alias = cache_->Acquire(Slice(b, 0, kPage), {});
  EXPECT_EQ(no_alias.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(no_alias.status().message(),
              AllOf(HasSubstr("prefer-dmabuf"), HasSubstr("fake"), HasSubstr("no CPU alias")));
  fake_->FailNextRegistrations(1, absl::InvalidArgumentError("ibv_reg_mr: EFAULT"));
  auto alias_failed = cache_->Acquire(Slice(b, 0, kPage, true), {});
  EXPECT_EQ(alias_failed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(alias_failed.status().message(),
              AllOf(HasSubstr("not supported by domain fake"),
                    HasSubstr("through the CPU alias: ibv_reg_mr: EFAULT")));
  EXPECT_EQ(fake_->live_registrations(), 0);
  EXPECT_EQ(cache_->stats().registration_failures, 2u);
}

TEST_F(DmaBufCacheTest, ThePolicyChoosesTheAttempts) {
  const FakeDmaBufs::Buffer b = NewBuffer(1);
  Make({.dmabuf_policy = DmaBufPolicy::kAliasOnly});
  auto alias = cache_->Acquire(Slice(b, 0, kPage, true), {});
  ASSERT_TRUE(alias.ok());
  EXPECT_TRUE(alias->via_alias());  // although the domain imports dma-bufs
  alias->Reset();
  cache_->Invalidate(b.id);
  EXPECT_EQ(cache_->Acquire(Slice(b, 0, kPage), {}).status().code(),
            absl::StatusCode::kUnimplemented);

  fake_->mutable_capabilities().dmabuf_import = false;
  Make({.dmabuf_policy = DmaBufPolicy::kDmaBufOnly});
  auto only = cache_->Acquire(Slice(b, 0, kPage, true), {});
  EXPECT_EQ(only.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(only.status().message(), HasSubstr("dmabuf-only"));
  EXPECT_THAT(only.status().message(), ::testing::Not(HasSubstr("alias")));
  EXPECT_EQ(cache_->limits().dmabuf_policy, DmaBufPolicy::kDmaBufOnly);
  ASSERT_TRUE(cache_->SetLimits({.max_regions = 4}).ok());
  EXPECT_EQ(cache_->limits().dmabuf_policy, DmaBufPolicy::kDmaBufOnly);  // fixed at Create
}

TEST_F(DmaBufCacheTest, BadInputIsRefusedAndRegistersNothing) {
  const FakeDmaBufs::Buffer b = NewBuffer(2);
  auto refused = [&](const DmaBufMemory& m, AccessFlags a = {}) {
    absl::StatusOr<Registration> r = cache_->Acquire(m, a);
    EXPECT_FALSE(r.ok());
    return r.status();
  };
  EXPECT_EQ(refused({.fd = -1, .length = kPage}).code(), absl::StatusCode::kInvalidArgument);
  // A closed fd.
  const int closed = dup(b.fd);
  close(closed);
  absl::Status s = refused({.fd = closed, .length = kPage});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("not open"));
  // A pipe, a regular file, a socket.
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  EXPECT_THAT(refused({.fd = p[0], .length = kPage}).message(), HasSubstr("a pipe"));
  close(p[0]);
  close(p[1]);
  const int file = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(file, 0);
  EXPECT_THAT(refused({.fd = file, .length = kPage}).message(), HasSubstr("a regular file"));
  close(file);
  const int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(sock, 0);
  EXPECT_THAT(refused({.fd = sock, .length = kPage}).message(), HasSubstr("a socket"));
  close(sock);
  // Past the end, wrapping, zero, a caller's IOVA, unknown access bits.
  EXPECT_THAT(refused(Slice(b, 2 * kPage, 1)).message(), HasSubstr("past the end"));
  EXPECT_THAT(refused(Slice(b, kPage, kPage + 1)).message(), HasSubstr("past the end"));
  EXPECT_THAT(refused(Slice(b, 3 * kPage, 1)).message(), HasSubstr("past the end"));
  EXPECT_THAT(refused(Slice(b, UINT64_MAX - 10, 100)).message(), HasSubstr("wraps"));
  EXPECT_EQ(refused(Slice(b, 0, 0)).code(), absl::StatusCode::kInvalidArgument);
  DmaBufMemory with_iova = Slice(b, 0, kPage);
  with_iova.iova = 0x1000;
  EXPECT_THAT(refused(with_iova).message(), HasSubstr("picks IOVAs"));
  EXPECT_THAT(refused(Slice(b, 0, kPage), AccessFlags::FromBits(1u << 30)).message(),
              HasSubstr("unknown access"));
  EXPECT_EQ(cache_->Invalidate(DmaBufMemory{.fd = -1, .length = 1}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(fake_->total_registrations(), 0);
  EXPECT_EQ(cache_->stats().registration_failures, 0u);
}

TEST_F(DmaBufCacheTest, ASliceEndingInsideTheLastPageOfAnOddSizedBuffer) {
  // Buffers are whole pages in practice; the inspector is trusted for the
  // size, so clip rather than reach past it.
  const FakeDmaBufs::Buffer b = NewBuffer(1);
  auto r = cache_->Acquire(Slice(b, kPage - 1, 1), {});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->length(), kPage);
}

TEST_F(DmaBufCacheTest, AnInvalidationDuringTheRegistrationRedoesIt) {
  const FakeDmaBufs::Buffer b = NewBuffer(2);
  int calls = 0;
  fake_->SetRegisterHook([&](uintptr_t, size_t) {
    if (++calls == 1) cache_->Invalidate(b.id);
  });
  auto r = cache_->Acquire(Slice(b, 0, kPage), {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(cache_->stats().retried_registrations, 1u);
  EXPECT_EQ(fake_->live_registrations(), 1);
  fake_->SetRegisterHook(nullptr);
}

// An imported buffer: its identity read once, slices acquired with no
// inspection at all (the inspector stands for the fstat), hits shared with
// acquires by fd of the same buffer.
TEST_F(DmaBufCacheTest, AnImportedBufferIsInspectedOnce) {
  const FakeDmaBufs::Buffer b = NewBuffer(8);
  int inspections = 0;
  DmaBufInspector counting = [&](int fd) {
    ++inspections;
    return bufs_.Inspector()(fd);
  };
  absl::StatusOr<ImportedDmaBuf> buf = ImportedDmaBuf::Import(b.fd, nullptr, counting);
  ASSERT_TRUE(buf.ok()) << buf.status();
  EXPECT_EQ(inspections, 1);
  EXPECT_EQ(buf->id(), b.id);
  EXPECT_EQ(buf->size(), 8 * kPage);
  EXPECT_NE(buf->fd(), b.fd);  // its own descriptor
  {
    auto first = cache_->Acquire(*buf, kPage, 2 * kPage, Access::kRemoteWrite);
    ASSERT_TRUE(first.ok()) << first.status();
    EXPECT_TRUE(first->is_dmabuf());
    EXPECT_EQ(first->IovaForOffset(kPage), kPage);
    for (int i = 0; i < 100; ++i) {
      auto again = cache_->Acquire(*buf, kPage + 100, 10, Access::kLocalWrite);
      ASSERT_TRUE(again.ok());
      EXPECT_TRUE(again->SameMapping(*first));
    }
    // By fd, the same buffer: the same mapping.
    auto by_fd = cache_->Acquire(Slice(b, kPage, kPage), Access::kLocalWrite);
    ASSERT_TRUE(by_fd.ok());
    EXPECT_TRUE(by_fd->SameMapping(*first));
  }
  EXPECT_EQ(inspections, 1) << "acquires of an import inspected the fd";
  const CacheStats s = cache_->stats();
  EXPECT_EQ(s.dmabuf_misses, 1u);
  EXPECT_EQ(s.dmabuf_hits, 101u);
  EXPECT_EQ(fake_->live_registrations(), 1);
  // The import's descriptor is what the domain registered from.
  for (const FakeDomain::LiveMapping& m : fake_->live_mappings()) EXPECT_EQ(m.fd, buf->fd());
  // Bad slices of an import are refused, naming the buffer's end.
  EXPECT_EQ(cache_->Acquire(*buf, 0, 0, {}).status().code(), absl::StatusCode::kInvalidArgument);
  auto past = cache_->Acquire(*buf, 7 * kPage, 2 * kPage, {});
  EXPECT_EQ(past.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(past.status().message(), HasSubstr("past the end"));
  EXPECT_EQ(cache_->Acquire(*buf, UINT64_MAX - 10, 100, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A moved-from import names nothing.
  ImportedDmaBuf moved = std::move(*buf);
  EXPECT_EQ(cache_->Acquire(*buf, 0, kPage, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  cache_->Invalidate(moved.id());
  EXPECT_EQ(fake_->live_registrations(), 0);
}

TEST_F(DmaBufCacheTest, ImportRefusesWhatIsNoDmaBuf) {
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  absl::StatusOr<ImportedDmaBuf> buf = ImportedDmaBuf::Import(pipefd[0]);
  EXPECT_EQ(buf.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(buf.status().message(), HasSubstr("a pipe"));
  close(pipefd[0]);
  close(pipefd[1]);
  EXPECT_EQ(ImportedDmaBuf::Import(-1).status().code(), absl::StatusCode::kInvalidArgument);
}

// The host path's rule, now the dma-buf path's too: after the optimistic
// attempts collided with invalidations, the miss holds the lock across the
// registration and so cannot be starved.
TEST_F(DmaBufCacheTest, EndlessInvalidationsStillMakeProgress) {
  const FakeDmaBufs::Buffer b = NewBuffer(2);
  int calls = 0;
  fake_->SetRegisterHook([&](uintptr_t, size_t) {
    if (++calls <= 3) cache_->Invalidate(b.id);
  });
  auto r = cache_->Acquire(Slice(b, 0, kPage), {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(calls, 4);
  EXPECT_EQ(cache_->stats().retried_registrations, 3u);
  EXPECT_EQ(fake_->live_registrations(), 1);
  fake_->SetRegisterHook(nullptr);
}

TEST_F(DmaBufCacheTest, WhereInodesMayBeReusedEachRequestRegisters) {
  internal::CacheCore* core = new internal::CacheCore(
      fake_, ExplicitMonitor::Create(), CacheOptions{.inspect_dmabuf = bufs_.Inspector()});
  core->SetDmaBufIdsUniqueForTesting(false);
  const FakeDmaBufs::Buffer b = NewBuffer(1);
  {
    auto key = core->ResolveDmaBuf(Slice(b, 0, kPage));
    ASSERT_TRUE(key.ok());
    auto a = core->AcquireDmaBuf(*key, {.fd = b.fd}, {});
    auto c = core->AcquireDmaBuf(*key, {.fd = b.fd}, {});
    ASSERT_TRUE(a.ok() && c.ok());
    EXPECT_NE(*a, *c);
    EXPECT_EQ(fake_->live_registrations(), 2);
    core->Release(*a);
    core->Release(*c);
  }
  EXPECT_EQ(fake_->live_registrations(), 0);
  EXPECT_EQ(core->stats().dmabuf_registrations, 2u);
  core->Close();
}

TEST(InspectDmaBufTest, SaysWhatAnFdIsInstead) {
  EXPECT_THAT(InspectDmaBuf(-1).status().message(), HasSubstr("bad dma-buf fd"));
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  absl::StatusOr<DmaBufInfo> pipe_info = InspectDmaBuf(p[1]);
  EXPECT_EQ(pipe_info.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(pipe_info.status().message(), AllOf(HasSubstr("a pipe"), HasSubstr("pipe:[")));
  close(p[0]);
  close(p[1]);
  EXPECT_THAT(InspectDmaBuf(p[0]).status().message(), HasSubstr("not open"));
  const int memfd = memfd_create("not-a-dmabuf", MFD_CLOEXEC);
  ASSERT_GE(memfd, 0);
  EXPECT_THAT(InspectDmaBuf(memfd).status().message(),
              AllOf(HasSubstr("a regular file"), HasSubstr("memfd:not-a-dmabuf")));
  close(memfd);
}

TEST(InspectDmaBufTest, InodesAreUniqueFromLinux518On) {
  EXPECT_FALSE(DmaBufIdsUniqueOnRelease("5.15.0-91-generic"));
  EXPECT_FALSE(DmaBufIdsUniqueOnRelease("5.17.15"));
  EXPECT_FALSE(DmaBufIdsUniqueOnRelease("4.19.0"));
  EXPECT_TRUE(DmaBufIdsUniqueOnRelease("5.18.0"));
  EXPECT_TRUE(DmaBufIdsUniqueOnRelease("6.1.0-25-amd64"));
  EXPECT_TRUE(DmaBufIdsUniqueOnRelease("7.3.4+deb13-amd64"));
  EXPECT_FALSE(DmaBufIdsUniqueOnRelease("garbage"));
  EXPECT_EQ((DmaBufId{.dev = 14, .ino = 99}).ToString(), "dmabuf:14:99");
}

}  // namespace
}  // namespace dmareg
