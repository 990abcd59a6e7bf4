// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The process's shared monitor (SharedMonitor): every default cache is fed
// by it, so caches on several devices over the same memory all cache it.
// Built twice: without libdmareg_hooks (the userfaultfd alone) and with it
// linked (hooks+userfaultfd), as DMAREG_TEST_HOOKS_LINKED says.
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/sanitizers.h"
#include "dmareg/cache.h"
#include "dmareg/log.h"
#include "dmareg/monitor.h"
#include "dmareg/testing/fake_domain.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dmareg {
namespace {

using testing::FakeDomain;
using ::testing::HasSubstr;

const size_t kPage = static_cast<size_t>(sysconf(_SC_PAGESIZE));
constexpr bool kHooksLinked = DMAREG_TEST_HOOKS_LINKED;

void Collect(void* context, LogLevel, std::string_view text) {
  static_cast<std::vector<std::string>*>(context)->emplace_back(text);
}

class SharedMonitorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    unsetenv("DMAREG_MONITOR");
    if (absl::StatusOr<std::shared_ptr<MemoryMonitor>> m = SharedMonitor(); !m.ok()) {
      GTEST_SKIP() << "no monitor for this process: " << m.status();
    }
  }
};

// First in the file: the window warning is said once per process, and this
// is the process's first automatic cache.
TEST_F(SharedMonitorTest, AutomaticSaysOnceWhetherTheWindowIsOpen) {
  std::vector<std::string> said;
  SetLogSink(&Collect, &said);
  auto fake = std::make_shared<FakeDomain>("nic0");
  {
    auto a = RegistrationCache::Create(fake);
    ASSERT_TRUE(a.ok()) << a.status();
    auto b = RegistrationCache::Create(fake);
    ASSERT_TRUE(b.ok()) << b.status();
  }
  ResetLogging();
  size_t window = 0;
  for (const std::string& s : said) window += s.find("munmap") != std::string::npos;
  // With the hooks interposed there is no window to speak of.
  EXPECT_EQ(window, kHooksLinked ? 0u : 1u) << ::testing::PrintToString(said);
  if (!kHooksLinked) {
    ASSERT_FALSE(said.empty());
    EXPECT_THAT(said[0], HasSubstr("libdmareg_hooks"));
  }
}

TEST_F(SharedMonitorTest, ItIsTheStrongestTheProcessHas) {
  std::shared_ptr<MemoryMonitor> m = SharedMonitor().value();
  if (kHooksLinked) {
    EXPECT_THAT(std::string(m->name()), HasSubstr("hooks"));
  } else {
    EXPECT_EQ(m->name(), "userfaultfd");
  }
  EXPECT_EQ(SharedMonitor().value(), m) << "one per process";
}

// The fault this fixes: with a userfaultfd per cache, the second cache over
// the same memory could watch nothing and registered every request anew.
TEST_F(SharedMonitorTest, ThreeCachesOverOneHeapAllHit) {
  std::vector<std::shared_ptr<FakeDomain>> nics;
  std::vector<std::unique_ptr<RegistrationCache>> caches;
  for (const char* name : {"nic0", "nic1", "nic2"}) {
    nics.push_back(std::make_shared<FakeDomain>(name));
    auto c = RegistrationCache::Create(nics.back());
    ASSERT_TRUE(c.ok()) << c.status();
    caches.push_back(*std::move(c));
  }
  EXPECT_EQ(&caches[0]->monitor(), &caches[1]->monitor());
  EXPECT_EQ(&caches[1]->monitor(), &caches[2]->monitor());
  // Mapped, not malloc'ed: a sanitizer's malloc keeps freed blocks.
  constexpr size_t kBlock = size_t{4} << 20;
  char* heap = static_cast<char*>(
      mmap(nullptr, kBlock, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(heap, MAP_FAILED);
  for (int round = 0; round < 100; ++round) {
    for (auto& c : caches) {
      // Every other page: no two requests merge.
      auto r = c->Acquire(heap + 2 * round * kPage, kPage, Access::kLocalWrite);
      ASSERT_TRUE(r.ok()) << r.status();
    }
  }
  for (size_t i = 0; i < caches.size(); ++i) {
    const CacheStats s = caches[i]->stats();
    EXPECT_EQ(s.uncached_registrations, 0u) << "cache " << i;
    EXPECT_EQ(s.misses, 100u) << "cache " << i;
    EXPECT_EQ(s.live_regions, 100u) << "cache " << i << ": each page cached";
  }
  // Hits on every cache.
  for (auto& c : caches) ASSERT_TRUE(c->Acquire(heap, kPage, Access::kLocalWrite).ok());
  for (auto& c : caches) EXPECT_EQ(c->stats().hits, 1u);
  // One unmap reaches every cache.
  ASSERT_EQ(munmap(heap, kBlock), 0);
  MonitorReader(SharedMonitor().value()).WaitQuiet();
  for (size_t i = 0; i < caches.size(); ++i) {
    caches[i]->ApplyMonitorEvents();
    EXPECT_EQ(caches[i]->stats().live_regions, 0u) << "cache " << i;
    EXPECT_GT(caches[i]->stats().monitor_events, 0u) << "cache " << i;
  }
  caches.clear();
  for (auto& n : nics) EXPECT_EQ(n->live_registrations(), 0);
}

TEST_F(SharedMonitorTest, GoneWithTheLastHolder) {
  std::weak_ptr<MemoryMonitor> weak;
  {
    auto fake = std::make_shared<FakeDomain>("nic0");
    auto cache = RegistrationCache::Create(fake).value();
    weak = SharedMonitor().value();
    EXPECT_FALSE(weak.expired());
  }
  EXPECT_TRUE(weak.expired());
}

TEST_F(SharedMonitorTest, ExplicitStaysTheCachesOwn) {
  auto fake = std::make_shared<FakeDomain>("nic0");
  auto a = RegistrationCache::Create(fake, {.monitoring = Monitoring::kExplicitOnly}).value();
  auto b = RegistrationCache::Create(fake, {.monitoring = Monitoring::kExplicitOnly}).value();
  EXPECT_NE(&a->monitor(), &b->monitor());
  EXPECT_EQ(a->monitor().name(), "explicit");
}

TEST_F(SharedMonitorTest, HooksAndUserfaultfdByChoice) {
  auto fake = std::make_shared<FakeDomain>("nic0");
  auto hooks = RegistrationCache::Create(fake, {.monitoring = Monitoring::kHooks});
  auto uffd = RegistrationCache::Create(fake, {.monitoring = Monitoring::kUserfaultfd});
  if (kHooksLinked) {
    ASSERT_TRUE(hooks.ok()) << hooks.status();
    EXPECT_EQ(&(*hooks)->monitor(), SharedMonitor().value().get());
  } else {
    EXPECT_EQ(hooks.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(
        std::string(hooks.status().message()),
        AllOf(HasSubstr("nic0"), HasSubstr("monitoring = hooks"), HasSubstr("libdmareg_hooks")));
  }
  ASSERT_TRUE(uffd.ok()) << uffd.status();
  EXPECT_EQ((*uffd)->monitor().name(), "userfaultfd");
  // Composed or alone, one log: what either learns, the other reads.
  EXPECT_EQ((*uffd)->monitor().events(), SharedMonitor().value()->events());
}

// A child's userfaultfd must be its own: the parent's watches the parent.
TEST_F(SharedMonitorTest, AForkedChildGetsItsOwn) {
  if (testing::kThreadSanitizer) {
    GTEST_SKIP() << "TSan dies when a child of a threaded fork starts a thread; "
                    "the plain and ASan builds run this";
  }
  std::shared_ptr<MemoryMonitor> parent = SharedMonitor().value();
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    absl::StatusOr<std::shared_ptr<MemoryMonitor>> child = SharedMonitor();
    _exit(!child.ok() ? 2 : child->get() == parent.get() ? 3 : 0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "2: the child has none, 3: it has the parent's";
}

}  // namespace
}  // namespace dmareg
