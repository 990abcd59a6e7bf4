// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// The log: silent unless asked (stderr captured through a pipe stays
// empty), one "dmareg: warn: ..." line per message on stderr when
// DMAREG_LOG_LEVEL asks, messages that name the device and the range, an
// installed sink that is called from any thread, never after it was
// replaced, and never with the cache's lock held.

#include "dmareg/log.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "dmareg/cache.h"
#include "dmareg/errno_status.h"
#include "dmareg/testing/fake_domain.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/log.h"

namespace dmareg {
namespace {

using ::dmareg::testing::FakeDomain;
using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::MatchesRegex;
using ::testing::SizeIs;

// Redirects stderr into a pipe until Take().
class StderrCapture {
 public:
  StderrCapture() {
    EXPECT_EQ(pipe2(pipe_, O_CLOEXEC | O_NONBLOCK), 0);
    saved_ = dup(STDERR_FILENO);
    EXPECT_GE(saved_, 0);
    EXPECT_EQ(dup2(pipe_[1], STDERR_FILENO), STDERR_FILENO);
  }
  ~StderrCapture() { Take(); }
  std::string Take() {
    if (saved_ >= 0) {
      dup2(saved_, STDERR_FILENO);
      close(saved_);
      close(pipe_[1]);
      saved_ = -1;
      char buf[4096];
      for (ssize_t n; (n = read(pipe_[0], buf, sizeof buf)) > 0;) text_.append(buf, n);
      close(pipe_[0]);
    }
    return text_;
  }

 private:
  int pipe_[2] = {-1, -1};
  int saved_ = -1;
  std::string text_;
};

struct Collected {
  std::mutex mu;
  std::vector<std::string> lines;
  std::atomic<int> calls{0};
};

void Collect(void* context, LogLevel level, std::string_view text) {
  auto* c = static_cast<Collected*>(context);
  c->calls.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(c->mu);
  c->lines.push_back(absl::StrFormat("%s: %s", LogLevelName(level), std::string(text)));
}

class LogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    unsetenv("DMAREG_LOG_LEVEL");
    ResetLogging();
    page_ = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    base_ = static_cast<char*>(
        mmap(nullptr, 4 * page_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    ASSERT_NE(base_, MAP_FAILED);
  }
  void TearDown() override {
    unsetenv("DMAREG_LOG_LEVEL");
    ResetLogging();
    EXPECT_EQ(fake_->live_registrations(), 0);
    munmap(base_, 4 * page_);
  }
  // A cache whose one mapping fails to deregister when the cache goes.
  void DeregistrationFails() {
    auto cache =
        RegistrationCache::Create(fake_, {.monitoring = Monitoring::kExplicitOnly}).value();
    ASSERT_TRUE(cache->Acquire(HostMemory{base_, page_}, {}).ok());
    fake_->FailDeregistrations(ErrnoStatus(EIO, "ibv_dereg_mr", "nic7"));
  }

  std::shared_ptr<FakeDomain> fake_ = std::make_shared<FakeDomain>("nic7");
  size_t page_ = 4096;
  char* base_ = nullptr;
};

TEST_F(LogTest, OffWhenTheEnvironmentSaysSo) {
  ASSERT_EQ(setenv("DMAREG_LOG_LEVEL", "off", 1), 0);
  StderrCapture capture;
  DeregistrationFails();
  internal::Log(LogLevel::kError, "an error nobody asked to see");
  EXPECT_EQ(GetLogLevel(), LogLevel::kOff);
  EXPECT_THAT(capture.Take(), IsEmpty());
}

TEST_F(LogTest, WarningsGoToStderrByDefault) {
  EXPECT_EQ(GetLogLevel(), LogLevel::kWarn);
  StderrCapture capture;
  DeregistrationFails();
  internal::Log(LogLevel::kInfo, "below the threshold");
  const std::string text = capture.Take();
  EXPECT_THAT(text, MatchesRegex("dmareg: warn: cache on nic7: deregistering "
                                 "\\[0x[0-9a-f]+, 0x[0-9a-f]+\\) \\(IOVA 0x[0-9a-f]+, lkey "
                                 "0x[0-9a-f]+\\) failed: .*EIO.*; dropped anyway\n"));
  EXPECT_THAT(text, HasSubstr(absl::StrFormat("[%p, %p)", base_, base_ + page_)));
}

TEST_F(LogTest, SetLogLevelWinsOverTheEnvironment) {
  ASSERT_EQ(setenv("DMAREG_LOG_LEVEL", "warn", 1), 0);
  SetLogLevel(LogLevel::kError);
  StderrCapture capture;
  DeregistrationFails();
  EXPECT_THAT(capture.Take(), IsEmpty());
}

TEST_F(LogTest, ASinkGetsWarningsAndStderrNothing) {
  Collected got;
  SetLogSink(&Collect, &got);
  EXPECT_EQ(GetLogLevel(), LogLevel::kWarn);
  StderrCapture capture;
  fake_->mutable_capabilities().on_demand_paging = true;
  fake_->RefuseOnDemand(ErrnoStatus(EOPNOTSUPP, "ibv_reg_mr", "nic7"));
  {
    auto cache = RegistrationCache::Create(
                     fake_, {.monitoring = Monitoring::kExplicitOnly, .paging = Paging::kAutomatic})
                     .value();
    ASSERT_TRUE(cache->Acquire(HostMemory{base_, page_}, {}).ok());
    EXPECT_EQ(cache->stats().on_demand_fallbacks, 1u);
  }
  EXPECT_THAT(capture.Take(), IsEmpty());
  ASSERT_THAT(got.lines, SizeIs(1));
  EXPECT_THAT(got.lines[0], HasSubstr("warn: cache on nic7: on-demand paging refused for "));
  EXPECT_THAT(got.lines[0], HasSubstr(absl::StrFormat("[%p, %p)", base_, base_ + page_)));
  EXPECT_THAT(got.lines[0], ContainsRegex("EOPNOTSUPP.*pinned registrations from now on"));
}

// Queued under a lock, passed on in order once released; nothing is lost
// or repeated.
TEST_F(LogTest, QueuedMessagesComeInOrderAtTheFlush) {
  Collected got;
  SetLogSink(&Collect, &got);
  internal::LogLater(LogLevel::kWarn, "first %d", 1);
  internal::LogLater(LogLevel::kDebug, "filtered");
  internal::LogLater(LogLevel::kError, "second");
  EXPECT_THAT(got.lines, IsEmpty());
  internal::FlushQueuedLogs();
  internal::FlushQueuedLogs();
  EXPECT_THAT(got.lines, ::testing::ElementsAre("warn: first 1", "error: second"));
}

// Logging from inside the sink is dropped, not a deadlock.
TEST_F(LogTest, MessagesFromInsideTheSinkAreDropped) {
  struct Reentrant {
    static void Sink(void* context, LogLevel, std::string_view) {
      ++*static_cast<int*>(context);
      internal::Log(LogLevel::kError, "from inside");
    }
  };
  int calls = 0;
  SetLogSink(&Reentrant::Sink, &calls);
  internal::Log(LogLevel::kError, "outside");
  EXPECT_EQ(calls, 1);
}

// Many threads log while the sink changes: once SetLogSink returns the old
// sink is never called again (its context may go), and every call lands in
// one of them. TSan checks the rest.
TEST_F(LogTest, SinkSwapsUnderConcurrentLogging) {
  constexpr int kThreads = 4;
  constexpr int kMessages = 2000;
  auto a = std::make_unique<Collected>();
  Collected b;
  SetLogSink(&Collect, a.get());
  std::atomic<int> started{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      started.fetch_add(1);
      for (int i = 0; i < kMessages; ++i) {
        internal::Log(LogLevel::kWarn, "thread %d message %d", t, i);
      }
    });
  }
  while (started.load() < kThreads) std::this_thread::yield();
  SetLogSink(&Collect, &b);
  const int a_calls = a->calls.load();
  a.reset();  // ASan: a use after this is an error
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(a_calls + b.calls.load(), kThreads * kMessages);
  SetLogSink(nullptr, nullptr);
  EXPECT_EQ(GetLogLevel(), LogLevel::kWarn);
}

TEST(LogLevelTest, NamesRoundTrip) {
  for (LogLevel l :
       {LogLevel::kOff, LogLevel::kError, LogLevel::kWarn, LogLevel::kInfo, LogLevel::kDebug}) {
    EXPECT_EQ(ParseLogLevel(LogLevelName(l)), l);
  }
  EXPECT_EQ(ParseLogLevel("WARN"), std::nullopt);
  EXPECT_EQ(ParseLogLevel("warning"), std::nullopt);
}

}  // namespace
}  // namespace dmareg
