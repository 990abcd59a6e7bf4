// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/testing/fake_dmabuf.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"

namespace dmareg::testing {

struct FakeDmaBufs::State {
  std::atomic<uint64_t> inspections{0};
  std::mutex mu;
  std::vector<std::pair<void*, size_t>> aliases;  // guarded by mu
};

namespace {
// True if `fd` is a memfd made with FakeDmaBufs::kMemfdName.
bool IsFakeDmaBuf(int fd) {
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
  char target[128];
  const ssize_t n = readlink(path, target, sizeof(target) - 1);
  if (n <= 0) return false;
  const absl::string_view t(target, static_cast<size_t>(n));
  const std::string want = absl::StrFormat("/memfd:%s", FakeDmaBufs::kMemfdName);
  return t == want || t == want + " (deleted)";
}
}  // namespace

FakeDmaBufs::FakeDmaBufs() : state_(std::make_shared<State>()) {}

FakeDmaBufs::~FakeDmaBufs() {
  std::lock_guard<std::mutex> lock(state_->mu);
  for (auto [p, n] : state_->aliases) munmap(p, n);
}

absl::StatusOr<FakeDmaBufs::Buffer> FakeDmaBufs::Create(uint64_t size) {
  const auto page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  if (size == 0 || size % page != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("fake dma-buf of %u bytes: not a whole number of pages", size));
  }
  const int fd = memfd_create(kMemfdName, MFD_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrFormat("memfd_create: errno %d", errno));
  struct stat st;
  void* alias = MAP_FAILED;
  if (ftruncate(fd, static_cast<off_t>(size)) != 0 || fstat(fd, &st) != 0 ||
      (alias = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED) {
    const int err = errno;
    close(fd);
    return absl::InternalError(absl::StrFormat("fake dma-buf of %u bytes: errno %d", size, err));
  }
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->aliases.emplace_back(alias, size);
  }
  return Buffer{.fd = fd,
                .id = {.dev = static_cast<uint64_t>(st.st_dev), .ino = st.st_ino},
                .size = size,
                .alias = alias};
}

DmaBufInspector FakeDmaBufs::Inspector() const {
  return [state = state_](int fd) -> absl::StatusOr<DmaBufInfo> {
    state->inspections.fetch_add(1, std::memory_order_relaxed);
    struct stat st;
    if (fd < 0 || !IsFakeDmaBuf(fd) || fstat(fd, &st) != 0) return InspectDmaBuf(fd);
    return DmaBufInfo{.id = {.dev = static_cast<uint64_t>(st.st_dev), .ino = st.st_ino},
                      .size = static_cast<uint64_t>(st.st_size)};
  };
}

uint64_t FakeDmaBufs::inspections() const { return state_->inspections.load(); }

}  // namespace dmareg::testing
