// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The limits a real device meets. The memlock limit, as an unprivileged
// process meets it (CAP_IPC_LOCK dropped, a small RLIMIT_MEMLOCK; a
// container's 8 MiB at a test's scale): rxe pins an MR's pages against it
// (pinned_vm), so past it ibv_reg_mr fails with ENOMEM. The cache lets go
// of what is unreferenced and retries once; with everything referenced the
// refusal names the limit and what the cache holds, and loses nothing; once
// the limit allows, the same request registers, and RDMA WRITE moves every
// byte through it.
//
// In a child process that drops the capability before it opens the device:
// uverbs refuses a write() command from credentials other than those that
// opened the file (ib_safe_file_access), so a process cannot change its
// credentials under an open device, and a real unprivileged program never
// does. And the mapping count: registrations over sub-ranges of one buffer
// must not split its mapping (fork protection's MADV_DONTFORK would).

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "common/limited_memlock.h"
#include "device/verbs/device_env.h"
#include "dmareg/cache.h"
#include "dmareg/errno_status.h"
#include "dmareg/memlock.h"
#include "dmareg/verbs/verbs_domain.h"
#include "gtest/gtest.h"
#include "verbs/rc_qp.h"

namespace dmareg::device_test {
namespace {

constexpr uint64_t kBuf = 256 * 1024;  // small: under TCG every byte is slow
constexpr uint64_t kMiB = 1 << 20;
constexpr size_t kPage = 4096;

// In the child: a failed expectation ends it, saying why.
void Require(bool ok, const char* what, const std::string& detail = "") {
  if (ok) return;
  std::fprintf(stderr, "child: FAILED: %s %s\n", what, detail.c_str());
  std::fflush(stderr);
  _exit(1);
}

bool Has(const absl::Status& s, const std::string& text) {
  return std::string(s.message()).find(text) != std::string::npos;
}

// The whole scenario; returns only on success.
void RunUnprivileged(const std::string& device) {
  Mapping a(kBuf), b(kBuf), c(kBuf), d(kBuf);
  Require(a.ok() && b.ok() && c.ok() && d.ok(), "mmap");
  FillPattern(a.data(), kBuf, 4);
  std::memset(d.data(), 0, kBuf);
  // Room for two buffers beyond what the process pins already (the QPs'
  // queues are the kernel's, not pinned user memory).
  const uint64_t baseline = ReadMemlockLimit().pinned.value_or(0);
  test::LimitedMemlock limit(baseline + 2 * kBuf + 64 * 1024);
  Require(limit.ok(), "LimitedMemlock", limit.error());
  Require(ReadMemlockLimit().limited(), "limited", MemlockNote());

  absl::StatusOr<std::shared_ptr<VerbsDomain>> domain = VerbsDomain::Open(device);
  Require(domain.ok(), "VerbsDomain::Open", domain.status().ToString());
  auto cache = RegistrationCache::Create(*domain);
  Require(cache.ok(), "RegistrationCache::Create", cache.status().ToString());
  absl::StatusOr<rc::RcLoopback> pair =
      rc::ConnectLoopback((*domain)->context(), (*domain)->pd(), device);
  Require(pair.ok(), "ConnectLoopback", pair.status().ToString());

  auto held = (*cache)->Acquire(a.data(), kBuf, Access::kRemoteRead);
  Require(held.ok(), "Acquire a", held.status().ToString());
  Require((*cache)->Acquire(b.data(), kBuf, Access::kRemoteRead).ok(), "Acquire b");  // then idle
  Require((*domain)->live_mrs() == 2, "two MRs");

  // A third is past the limit: the idle one goes, and the retry fits.
  auto third = (*cache)->Acquire(c.data(), kBuf, Access::kRemoteRead);
  Require(third.ok(), "Acquire c (evict, retry)", third.status().ToString());
  Require((*cache)->stats().evictions == 1, "one eviction");
  Require((*cache)->stats().registration_failures == 1, "one refusal");
  Require((*domain)->live_mrs() == 2, "two MRs after the retry");

  // Everything referenced: refused, named, nothing leaked.
  auto fourth = (*cache)->Acquire(d.data(), kBuf, Access::kRemoteWrite);
  Require(!fourth.ok(), "Acquire d refused");
  std::printf("  status: %s\n", fourth.status().ToString().c_str());
  const absl::Status& s = fourth.status();
  Require(s.code() == absl::StatusCode::kResourceExhausted, "ResourceExhausted", s.ToString());
  Require(ErrnoOf(s) == ENOMEM, "errno ENOMEM", s.ToString());
  Require(Has(s, "ibv_reg_mr_iova2 on " + device) && Has(s, "RLIMIT_MEMLOCK soft ") &&
              Has(s, "pinned (VmPin)") &&
              Has(s, "holds " + std::to_string(2 * kBuf) + " bytes in 2 mappings") &&
              Has(s, "every one referenced"),
          "the message names the limit and the holdings", s.ToString());
  Require((*domain)->live_mrs() == 2 && (*cache)->stats().live_regions == 2, "nothing leaked");

  // The limit allows: the same request registers and carries RDMA WRITE.
  Require(limit.SetSoft(baseline + 8 * kMiB), "raise the limit", limit.error());
  fourth = (*cache)->Acquire(d.data(), kBuf, Access::kRemoteWrite);
  Require(fourth.ok(), "Acquire d once allowed", fourth.status().ToString());
  const absl::Status wrote =
      pair->a->Write(a.data(), kBuf, held->lkey(), fourth->IovaFor(d.data()), fourth->rkey());
  Require(wrote.ok(), "RDMA WRITE", wrote.ToString());
  Require(FindMismatch(d.data(), kBuf, 4) == -1, "every byte written");
  std::printf("  recovered: RDMA WRITE of %llu bytes through the new MR, bytes checked\n",
              static_cast<unsigned long long>(kBuf));
}

class VerbsLimitsTest : public RdmaTest {};

TEST_F(VerbsLimitsTest, MemlockRefusalEvictsRetriesNamesTheLimitAndRecovers) {
  std::fflush(stdout);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    RunUnprivileged(device_);
    std::fflush(stdout);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "the child died: signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the child's FAILED line says what";
}

// The mappings (VMAs) of this process from /proc/self/smaps: how many, and
// whether one over [p, p + n) is marked dontcopy (VmFlags "dc", what
// MADV_DONTFORK sets).
struct Vmas {
  size_t count = 0;
  bool dontfork = false;
};

Vmas ReadVmas(const char* p, size_t n) {
  Vmas v;
  std::ifstream smaps("/proc/self/smaps");
  bool over = false;
  for (std::string line; std::getline(smaps, line);) {
    uint64_t start = 0, end = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> start >> dash >> end && dash == '-') {
      ++v.count;
      over = start < reinterpret_cast<uintptr_t>(p) + n && end > reinterpret_cast<uintptr_t>(p);
    } else if (over && line.rfind("VmFlags:", 0) == 0) {
      v.dontfork |= (line + " ").find(" dc ") != std::string::npos;
    }
  }
  return v;
}

// A known failure elsewhere: with fork protection on, every MR over part
// of a buffer is madvise(MADV_DONTFORK)ed, splitting its mapping, until
// vm.max_map_count runs out. dmareg never turns fork protection on, and on
// these kernels libibverbs needs none (IBV_FORK_UNNEEDED: pinned pages are
// copied on fork): 100,000 registrations over sub-ranges of one buffer, up
// to 1,000 live at once, leave its mapping whole and unmarked.
TEST_F(VerbsLimitsTest, SubRangeRegistrationsNeverSplitTheBuffersMapping) {
  const VerbsDeviceInfo::ForkStatus fork = domain_->device_info().fork_status;
  std::printf("  fork protection: %s\n",
              fork == VerbsDeviceInfo::ForkStatus::kUnneeded  ? "unneeded (copy on fork)"
              : fork == VerbsDeviceInfo::ForkStatus::kEnabled ? "enabled"
                                                              : "disabled");
  EXPECT_NE(fork, VerbsDeviceInfo::ForkStatus::kEnabled) << "something called ibv_fork_init";
  constexpr size_t kPages = 256;
  Mapping buf(kPages * kPage);
  ASSERT_TRUE(buf.ok());
  std::memset(buf.data(), 1, buf.size());
  const Vmas before = ReadVmas(buf.data(), buf.size());
  ASSERT_FALSE(before.dontfork);
  std::vector<DeviceMapping> live;
  live.reserve(1000);
  size_t most = before.count;
  for (size_t i = 0; i < 100000; ++i) {
    const size_t first = (i * 37) % (kPages - 16), pages = 1 + i % 16;
    auto m = domain_->RegisterHost(
        HostMemory{.addr = buf.data() + first * kPage, .length = pages * kPage},
        Access::kLocalWrite, Paging::kPinned);
    ASSERT_TRUE(m.ok()) << i << ": " << m.status();
    live.push_back(*m);
    if (live.size() == live.capacity()) {
      const Vmas now = ReadVmas(buf.data(), buf.size());
      ASSERT_FALSE(now.dontfork) << "after " << i + 1 << " registrations";
      most = std::max(most, now.count);
      for (const DeviceMapping& d : live) ASSERT_TRUE(domain_->Deregister(d).ok());
      live.clear();
    }
  }
  EXPECT_EQ(domain_->live_mrs(), 0);
  // Other threads (the test's own) may map a little; a split per MR would
  // be thousands.
  EXPECT_LE(most, before.count + 8) << "the mapping count grew with the registrations";
  std::printf("  100000 registrations over sub-ranges: %zu mappings before, at most %zu\n",
              before.count, most);
  // The probe sees what fork protection does: one page marked splits it.
  ASSERT_EQ(madvise(buf.data() + kPage, kPage, MADV_DONTFORK), 0);
  const Vmas marked = ReadVmas(buf.data(), buf.size());
  EXPECT_TRUE(marked.dontfork);
  EXPECT_GE(marked.count, before.count + 2);
  ASSERT_EQ(madvise(buf.data() + kPage, kPage, MADV_DOFORK), 0);
}

}  // namespace
}  // namespace dmareg::device_test
