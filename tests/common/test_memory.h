// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// Memory for tests that check real bytes: page-aligned anonymous mappings,
// byte patterns that show a misplaced page, replacing the pages under an
// address (what a stale registration must not survive), and the exit code
// of a forked child.
//
//   test::Mapping buf(64 * 1024);
//   test::FillPattern(buf.data(), buf.size(), /*seed=*/1);
//   ... RDMA / DMA into another buffer ...
//   EXPECT_EQ(test::FindMismatch(dst.data(), dst.size(), 1), -1);

#ifndef DMAREG_TESTS_COMMON_TEST_MEMORY_H_
#define DMAREG_TESTS_COMMON_TEST_MEMORY_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>

namespace dmareg::test {

// An anonymous private mapping of whole pages, unmapped on destruction;
// `flags` are mmap's extra ones (MAP_HUGETLB | MAP_HUGE_2MB: huge pages).
class Mapping {
 public:
  explicit Mapping(size_t length, int prot = 3 /* PROT_READ | PROT_WRITE */, int flags = 0);
  ~Mapping();
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  char* data() const { return data_; }
  size_t size() const { return length_; }
  bool ok() const { return data_ != nullptr; }
  // Forget the range without unmapping it (a test took it over).
  void Release() { data_ = nullptr; }

 private:
  char* data_ = nullptr;
  size_t length_ = 0;
};

// A memfd of `length` bytes mapped shared and writable, both undone on
// destruction. Its pages stay in the file whatever replaces the mapping, so
// a replaced page never gets its old frame back; truncating and refilling
// the file (through fd()) gives the mapping new frames under the same
// addresses, as the PFN tests need.
class SharedMemfd {
 public:
  SharedMemfd(const char* name, size_t length);
  ~SharedMemfd();
  SharedMemfd(const SharedMemfd&) = delete;
  SharedMemfd& operator=(const SharedMemfd&) = delete;

  int fd() const { return fd_; }
  char* data() const { return data_; }
  size_t size() const { return length_; }
  // Made and mapped; errno says why not otherwise.
  bool ok() const { return data_ != nullptr; }

 private:
  int fd_ = -1;
  char* data_ = nullptr;
  size_t length_ = 0;
};

// Byte `i` of pattern `seed`: differs between seeds and is not periodic in
// any small power of two, so a misplaced page shows.
inline uint8_t PatternByte(uint32_t seed, size_t i) {
  uint64_t x = (static_cast<uint64_t>(seed) << 32) ^ (i * 0x9E3779B97F4A7C15ull);
  x ^= x >> 29;
  return static_cast<uint8_t>(x ^ (x >> 17) ^ seed);
}
void FillPattern(void* p, size_t n, uint32_t seed, size_t first_index = 0);
// Offset of the first byte that differs from the pattern, or -1.
ptrdiff_t FindMismatch(const void* p, size_t n, uint32_t seed, size_t first_index = 0);

// New zeroed pages at [addr, addr + len): munmap, then mmap(MAP_FIXED)
// there. False (errno set) if either call failed.
bool ReplacePages(void* addr, size_t len);

// The exit code of child `pid` once it exits, or -1 if it died otherwise
// (a signal) or could not be waited for.
int ChildExitCode(pid_t pid);

}  // namespace dmareg::test

#endif  // DMAREG_TESTS_COMMON_TEST_MEMORY_H_
