// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/pagemap.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dmareg::internal {
namespace {

using ::testing::HasSubstr;

const size_t kPage = static_cast<size_t>(sysconf(_SC_PAGESIZE));

uintptr_t U(const void* p) { return reinterpret_cast<uintptr_t>(p); }

// Whether this process may see PFNs (root with CAP_SYS_ADMIN: the harness).
bool ExpectVisible() { return geteuid() == 0; }

class PagemapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pm = PagemapReader::Open();
    ASSERT_TRUE(pm.ok()) << pm.status();
    pm_.emplace(*std::move(pm));
    mem_ = static_cast<char*>(
        mmap(nullptr, 8 * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    ASSERT_NE(mem_, MAP_FAILED);
  }
  void TearDown() override { munmap(mem_, 8 * kPage); }

  std::optional<PagemapReader> pm_;
  char* mem_ = nullptr;
};

TEST_F(PagemapTest, VisibilityMatchesPrivilege) {
  EXPECT_EQ(pm_->pfns_visible(), ExpectVisible()) << pm_->hidden_reason();
  if (!pm_->pfns_visible()) {
    EXPECT_THAT(pm_->hidden_reason(), HasSubstr("CAP_SYS_ADMIN"));
  }
  EXPECT_EQ(pm_->page_size(), kPage);
}

TEST_F(PagemapTest, PresentPagesAndTheirFrames) {
  mem_[0] = 1;
  mem_[2 * kPage] = 1;
  std::vector<uint64_t> e;
  ASSERT_TRUE(pm_->Read(U(mem_), 4, &e).ok());
  ASSERT_EQ(e.size(), 4u);
  EXPECT_TRUE(PagePresent(e[0]));
  EXPECT_FALSE(PagePresent(e[1])) << "never touched";
  EXPECT_TRUE(PagePresent(e[2]));
  EXPECT_FALSE(PagePresent(e[3]));
  if (pm_->pfns_visible()) {
    EXPECT_NE(PagePfn(e[0]), 0u);
    EXPECT_NE(PagePfn(e[0]), PagePfn(e[2])) << "two private pages share a frame";
  } else {
    EXPECT_EQ(PagePfn(e[0]), 0u);
  }
  std::vector<uint64_t> f;
  ASSERT_TRUE(pm_->ReadFrames(U(mem_), 4, &f).ok());
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(f[i], PageFrame(e[i])) << i;
}

TEST_F(PagemapTest, ReplacedPageGetsAnotherFrame) {
  // The old page stays alive in a memfd, so its frame cannot be reused.
  const int fd = memfd_create("pagemap_test", MFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, static_cast<off_t>(kPage)), 0);
  char* a = static_cast<char*>(mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  ASSERT_NE(a, MAP_FAILED);
  a[0] = 1;
  std::vector<uint64_t> before, after;
  ASSERT_TRUE(pm_->ReadFrames(U(a), 1, &before).ok());
  ASSERT_NE(mmap(a, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0),
            MAP_FAILED);
  a[0] = 2;
  ASSERT_TRUE(pm_->ReadFrames(U(a), 1, &after).ok());
  EXPECT_TRUE(PagePresent(after[0]));
  if (pm_->pfns_visible()) {
    EXPECT_NE(before[0], after[0]);
  } else {
    EXPECT_EQ(before[0], after[0]) << "without PFNs both read as 'present, frame 0'";
  }
  munmap(a, kPage);
  close(fd);
}

TEST_F(PagemapTest, ManyPagesReadInBatches) {
  // More pages than one pread takes: 3 MiB of address space at 4 KiB pages.
  const size_t pages = 3 * 512 + 7;
  char* big = static_cast<char*>(
      mmap(nullptr, pages * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(big, MAP_FAILED);
  for (size_t i = 0; i < pages; i += 3) big[i * kPage] = 1;
  std::vector<uint64_t> e;
  ASSERT_TRUE(pm_->Read(U(big), pages, &e).ok());
  ASSERT_EQ(e.size(), pages);
  size_t wrong = 0;
  for (size_t i = 0; i < pages; ++i) wrong += PagePresent(e[i]) != (i % 3 == 0);
  EXPECT_EQ(wrong, 0u);
  munmap(big, pages * kPage);
}

TEST_F(PagemapTest, BadRangesAreInvalidArgument) {
  std::vector<uint64_t> e;
  EXPECT_EQ(pm_->Read(U(mem_) + 1, 1, &e).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pm_->Read(U(mem_), 0, &e).code(), absl::StatusCode::kInvalidArgument);
  const uintptr_t top = UINTPTR_MAX - kPage + 1;  // the last page
  EXPECT_EQ(pm_->Read(top, 2, &e).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pm_->Read(U(mem_), SIZE_MAX / 2, &e).code(), absl::StatusCode::kInvalidArgument);
}

TEST(PagemapFileTest, ShortFileIsOutOfRangeAndMissingFileNamed) {
  char path[] = "/tmp/pagemap_test.XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  // Two entries: page 0 present with PFN 42, page 1 absent; nothing after.
  const uint64_t entries[2] = {kPagemapPresent | (uint64_t{1} << 61) | 42, 0};
  ASSERT_EQ(write(fd, entries, sizeof entries), static_cast<ssize_t>(sizeof entries));
  close(fd);
  auto pm = PagemapReader::OpenPath(path, /*probe=*/false);
  ASSERT_TRUE(pm.ok()) << pm.status();
  std::vector<uint64_t> f;
  ASSERT_TRUE(pm->ReadFrames(0, 2, &f).ok());
  EXPECT_EQ(f[0], kPagemapPresent | 42) << "flag bits other than present dropped";
  EXPECT_EQ(f[1], 0u);
  absl::Status s = pm->ReadFrames(0, 3, &f);
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange) << s;
  unlink(path);
  auto missing = PagemapReader::OpenPath("/nonexistent/pagemap");
  EXPECT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("/nonexistent/pagemap"));
}

// A process without CAP_SYS_ADMIN is told PFNs are hidden, with the reason.
TEST(PagemapPrivilegeTest, UnprivilegedReaderSeesPfnsHidden) {
  if (geteuid() != 0) {
    auto pm = PagemapReader::Open();
    ASSERT_TRUE(pm.ok());
    EXPECT_FALSE(pm->pfns_visible());
    return;
  }
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (setgid(65534) != 0 || setuid(65534) != 0) _exit(2);
    // setuid made the process undumpable, which gives its /proc files to root.
    if (prctl(PR_SET_DUMPABLE, 1) != 0) _exit(2);
    auto pm = PagemapReader::Open();
    if (!pm.ok()) _exit(3);
    if (pm->pfns_visible()) _exit(4);
    if (pm->hidden_reason().find("CAP_SYS_ADMIN") == std::string::npos) _exit(5);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "2: setuid failed, 3: open failed, 4: PFNs visible, "
                                       "5: no reason given";
}

}  // namespace
}  // namespace dmareg::internal
