// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// An RDMA device removed under live registrations: `rdma link delete` of
// rxe1 while a cache over it holds MRs (one idle, one with a handle out)
// and QPs are up. Kernels differ here:
// - Where the kernel disassociates the process from a removed device
//   (7.x), it destroys the MRs, QPs and PD, the removal returns at once and
//   the context gets IBV_EVENT_DEVICE_FATAL. Every Acquire is then refused,
//   naming the device, a hit on a cached range included; releasing handles
//   and closing the cache and the domain work; no MR and no descriptor is
//   left.
// - Where it does not (6.1's rxe), the removal waits for the process to
//   close the device, and nothing tells the process. The test recognises
//   that state by the deleting process's kernel stack (waiting in
//   ib_uverbs_remove_one), closes everything, and the removal finishes.
// Either way rxe1 is added again afterwards and a new domain and cache over
// it move bytes by RDMA WRITE, every byte checked. Runs alone (RUN_SERIAL):
// no other test may see rxe1 gone.
#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/test_memory.h"
#include "common/vm_env.h"
#include "device/verbs/device_env.h"
#include "dmareg/cache.h"
#include "dmareg/verbs/verbs_domain.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "verbs/rc_qp.h"

namespace dmareg::device_test {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr size_t kLen = 64 * 1024;

int OpenFds() {
  int n = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (readdir(d) != nullptr) ++n;
    closedir(d);
  }
  return n;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs `rdma ARGS...` in a child; its pid.
pid_t SpawnRdma(std::vector<std::string> args) {
  args.insert(args.begin(), "rdma");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    execvp("rdma", argv.data());
    _exit(127);
  }
  return pid;
}

// The kernel is waiting for this process to close the device: the deleting
// process sleeps in uverbs' removal (its wait_for_completion inlined there)
// until every user of the device is gone.
bool RemovalWaitsForUs(pid_t deleter) {
  const std::string proc = "/proc/" + std::to_string(deleter);
  // Asleep, uninterruptibly (not just preempted there on its way through).
  const std::string stat = ReadAll(proc + "/stat");
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos || stat.compare(paren, 4, ") D ") != 0) return false;
  const std::string stack = ReadAll(proc + "/stack");
  return stack.substr(0, stack.find('\n')).find("ib_uverbs_remove_one") != std::string::npos;
}

// Adds `dev` on `netdev` again and waits for its port to come up.
void AddBack(const std::string& dev, const std::string& netdev) {
  ASSERT_EQ(test::ChildExitCode(SpawnRdma({"link", "add", dev, "type", "rxe", "netdev", netdev})),
            0);
}

TEST(VerbsRemovalTest, ADeviceDeletedUnderLiveRegistrationsIsRefusedClearlyAndComesBack) {
  const std::string dev = Env("DMAREG_RXE_DEV2");
  const std::string netdev = Env("DMAREG_RXE2_NETDEV");
  if (dev.empty() || netdev.empty()) {
    ASSERT_FALSE(InVm()) << "DMAREG_IN_VM=1 but DMAREG_RXE_DEV2 or DMAREG_RXE2_NETDEV is unset";
    GTEST_SKIP() << "no second RDMA device to delete (run in the VM harness)";
  }
  const int fds = OpenFds();
  const int64_t kernel_mrs = KernelMrCount(dev);
  Mapping a(kLen), b(kLen), c(kLen);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  bool positive = false;
  {
    auto domain = VerbsDomain::Open(dev);
    ASSERT_TRUE(domain.ok()) << domain.status();
    auto cache = RegistrationCache::Create(*domain);
    ASSERT_TRUE(cache.ok()) << cache.status();
    auto pair = rc::ConnectLoopback((*domain)->context(), (*domain)->pd(), dev);
    ASSERT_TRUE(pair.ok()) << pair.status();
    auto held = (*cache)->Acquire(a.data(), kLen, Access::kRemoteWrite);
    ASSERT_TRUE(held.ok()) << held.status();
    ASSERT_TRUE((*cache)->Acquire(b.data(), kLen, Access::kLocalWrite).ok());  // cached, idle
    EXPECT_EQ((*domain)->live_mrs(), 2);
    ASSERT_NE((*domain)->lost_flag(), nullptr);

    const pid_t deleter = SpawnRdma({"link", "delete", dev});
    ASSERT_GT(deleter, 0);
    // Either the device is gone for us (the event) or the kernel waits for
    // us to let go: both are states that last, so wait for one of them.
    const std::atomic<bool>& lost = *(*domain)->lost_flag();
    while (!lost.load() && !RemovalWaitsForUs(deleter)) std::this_thread::yield();
    positive = lost.load();
    test::RecordBranch("device_removal", positive);
    if (positive) {
      for (char* p : {a.data(), b.data(), c.data()}) {  // a hit, an idle one, a miss
        auto r = (*cache)->Acquire(p, kLen, Access::kLocalWrite);
        ASSERT_FALSE(r.ok());
        EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
        EXPECT_THAT(r.status().message(), AllOf(HasSubstr(dev), HasSubstr("removed")));
      }
      EXPECT_EQ((*domain)->live_mrs(), 1) << "the idle MR is let go at once";
      held->Reset();
      (*cache)->Flush();
      EXPECT_EQ((*domain)->live_mrs(), 0);
    }
    // Everything closed: on 6.1 that is what the removal waits for.
    held->Reset();
    pair = absl::UnknownError("closed");  // the QPs
    cache->reset();
    domain->reset();
    EXPECT_EQ(test::ChildExitCode(deleter), 0) << "rdma link delete " << dev;
  }
  EXPECT_EQ(OpenFds(), fds) << "descriptors left behind";

  // Back: a new domain and cache over the device added again move bytes.
  ASSERT_NO_FATAL_FAILURE(AddBack(dev, netdev));
  const std::string state = "/sys/class/infiniband/" + dev + "/ports/1/state";
  while (ReadAll(state).find("ACTIVE") == std::string::npos) std::this_thread::yield();
  auto domain = VerbsDomain::Open(dev);
  ASSERT_TRUE(domain.ok()) << domain.status();
  auto cache = RegistrationCache::Create(*domain);
  ASSERT_TRUE(cache.ok()) << cache.status();
  auto pair = rc::ConnectLoopback((*domain)->context(), (*domain)->pd(), dev);
  ASSERT_TRUE(pair.ok()) << pair.status();
  FillPattern(a.data(), kLen, 51);
  std::memset(c.data(), 0, kLen);
  auto src = (*cache)->Acquire(a.data(), kLen, {});
  auto dst = (*cache)->Acquire(c.data(), kLen, Access::kRemoteWrite);
  ASSERT_TRUE(src.ok() && dst.ok());
  absl::Status w = pair->a->Write(a.data(), kLen, src->lkey(), dst->IovaFor(c.data()), dst->rkey());
  ASSERT_TRUE(w.ok()) << w;
  EXPECT_EQ(FindMismatch(c.data(), kLen, 51), -1);
  if (kernel_mrs >= 0) {
    src->Reset();
    dst->Reset();
    cache->reset();
    EXPECT_EQ(KernelMrCount(dev), kernel_mrs) << "MRs left in the kernel";
  }
}

}  // namespace
}  // namespace dmareg::device_test
