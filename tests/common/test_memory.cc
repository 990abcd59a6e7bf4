// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "common/test_memory.h"

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

namespace dmareg::test {

Mapping::Mapping(size_t length, int prot, int flags) : length_(length) {
  void* p = mmap(nullptr, length, prot, MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);
  if (p != MAP_FAILED) data_ = static_cast<char*>(p);
}

Mapping::~Mapping() {
  if (data_ != nullptr) munmap(data_, length_);
}

SharedMemfd::SharedMemfd(const char* name, size_t length) : length_(length) {
  fd_ = memfd_create(name, MFD_CLOEXEC);
  if (fd_ < 0 || ftruncate(fd_, static_cast<off_t>(length)) != 0) return;
  void* p = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
  if (p != MAP_FAILED) data_ = static_cast<char*>(p);
}

SharedMemfd::~SharedMemfd() {
  if (data_ != nullptr) munmap(data_, length_);
  if (fd_ >= 0) close(fd_);
}

void FillPattern(void* p, size_t n, uint32_t seed, size_t first_index) {
  auto* b = static_cast<uint8_t*>(p);
  for (size_t i = 0; i < n; ++i) b[i] = PatternByte(seed, first_index + i);
}

ptrdiff_t FindMismatch(const void* p, size_t n, uint32_t seed, size_t first_index) {
  const auto* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i < n; ++i) {
    if (b[i] != PatternByte(seed, first_index + i)) return static_cast<ptrdiff_t>(i);
  }
  return -1;
}

bool ReplacePages(void* addr, size_t len) {
  if (munmap(addr, len) != 0) return false;
  return mmap(addr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) ==
         addr;
}

int ChildExitCode(pid_t pid) {
  int status = 0;
  pid_t got;
  do {
    got = waitpid(pid, &status, 0);
  } while (got < 0 && errno == EINTR);
  if (got != pid || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

}  // namespace dmareg::test
