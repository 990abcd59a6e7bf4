// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// libdmareg_hooks composes with another interposer of munmap and free: a
// child preloads both, in either order, and each library must see every one
// of the child's munmap calls and (where glibc's malloc is in use) frees.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common/sanitizers.h"
#include "common/test_memory.h"
#include "gtest/gtest.h"

extern char** environ;

namespace {

struct ChildCounts {
  int exit_code = -1;
  std::string output;
  unsigned long other_munmap = 0, other_free = 0, hooks_munmap = 0, hooks_free = 0;
  int decodes = -1;
};

// Runs the child with LD_PRELOAD=`preload`; the sanitizer runtime must not
// insist on coming first in the list.
ChildCounts RunChild(const std::string& preload) {
  std::vector<std::string> env;
  std::string asan = "ASAN_OPTIONS=verify_asan_link_order=0";
  for (char** e = environ; *e != nullptr; ++e) {
    if (strncmp(*e, "LD_PRELOAD=", 11) == 0) continue;
    if (strncmp(*e, "ASAN_OPTIONS=", 13) == 0) {
      asan = std::string(*e) + ":verify_asan_link_order=0";
      continue;
    }
    env.emplace_back(*e);
  }
  env.push_back("LD_PRELOAD=" + preload);
  env.push_back(asan);
  std::vector<char*> envp;
  for (std::string& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);
  char* argv[] = {const_cast<char*>(DMAREG_HOOKS_CHILD), nullptr};

  ChildCounts c;
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return c;
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    execve(DMAREG_HOOKS_CHILD, argv, envp.data());
    _exit(127);
  }
  close(out[1]);
  char buf[256];
  ssize_t n;
  while ((n = read(out[0], buf, sizeof buf)) > 0) c.output.append(buf, static_cast<size_t>(n));
  close(out[0]);
  if (pid < 0) return c;
  c.exit_code = dmareg::test::ChildExitCode(pid);
  if (sscanf(c.output.c_str(), "%lu %lu %lu %lu %d", &c.other_munmap, &c.other_free,
             &c.hooks_munmap, &c.hooks_free, &c.decodes) != 5) {
    c.decodes = -1;
  }
  return c;
}

constexpr unsigned long kCalls = 8;  // hooks_child.c's

void ExpectBothSawTheCalls(const ChildCounts& c, bool hooks_first) {
  ASSERT_EQ(c.exit_code, 0) << c.output;
  ASSERT_NE(c.decodes, -1) << "unreadable child output: " << c.output;
  EXPECT_GE(c.other_munmap, kCalls) << "the other interposer missed munmap calls";
  EXPECT_GE(c.hooks_munmap, kCalls) << "the hooks missed munmap calls";
  if (!dmareg::testing::kGlibcMalloc) return;  // the sanitizer's free comes first
  EXPECT_GE(c.other_free, kCalls) << "the other interposer missed free calls";
  // In either order the allocator is glibc's: the other library only wraps
  // free, so the hooks still recognise its mmap-backed chunks.
  (void)hooks_first;
  EXPECT_EQ(c.decodes, 1);
  EXPECT_GE(c.hooks_free, kCalls) << "the hooks missed frees of large blocks";
}

TEST(HooksInterposerTest, OtherInterposerPreloadedFirst) {
  const ChildCounts c = RunChild(std::string(DMAREG_OTHER_INTERPOSER) + ":" + DMAREG_HOOKS_LIBRARY);
  ExpectBothSawTheCalls(c, /*hooks_first=*/false);
}

TEST(HooksInterposerTest, HooksPreloadedFirst) {
  const ChildCounts c = RunChild(std::string(DMAREG_HOOKS_LIBRARY) + ":" + DMAREG_OTHER_INTERPOSER);
  ExpectBothSawTheCalls(c, /*hooks_first=*/true);
}

TEST(HooksInterposerTest, ChildWithoutPreloadsSaysSo) {
  // The child's own check, so that a preload silently dropped cannot pass.
  const ChildCounts c = RunChild("");
  EXPECT_EQ(c.exit_code, 1) << c.output;
}

}  // namespace
