// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// testing/fake_dmabuf.h: stand-ins for dma-bufs where the kernel has no
// exporter (unit tests on any machine).
//
// `FakeDmaBufs` makes memfds of a chosen size and tells a cache to treat
// memfds named `kMemfdName` as dma-bufs (their identity is the memfd's inode,
// as a real dma-buf's is its own; a fake exporter such as the tests' fake
// libcuda makes its own with that name). Every other fd gets InspectDmaBuf's
// answer, so bad fds are refused as they are in production. Each buffer's
// memfd mapping is its CPU alias.
//
//   testing::FakeDmaBufs bufs;
//   auto cache = RegistrationCache::Create(
//       fake, {.monitoring = Monitoring::kExplicitOnly,
//              .inspect_dmabuf = bufs.Inspector()}).value();
//   testing::FakeDmaBufs::Buffer b = bufs.Create(1 << 20).value();
//   auto reg = cache->Acquire(DmaBufMemory{.fd = b.fd, .length = 4096}, {});

#ifndef DMAREG_TESTING_FAKE_DMABUF_H_
#define DMAREG_TESTING_FAKE_DMABUF_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "dmareg/dmabuf_id.h"

#pragma GCC visibility push(default)

namespace dmareg::testing {

class FakeDmaBufs {
 public:
  // memfd_create's name for a fake dma-buf.
  static constexpr char kMemfdName[] = "dmareg-fake-dmabuf";

  struct Buffer {
    int fd = -1;    // owned by the caller (close it when done)
    DmaBufId id{};  // the memfd's identity
    uint64_t size = 0;
    void* alias = nullptr;  // a shared mapping of the memfd, `size` bytes,
                            // unmapped when the FakeDmaBufs goes
  };

  FakeDmaBufs();
  ~FakeDmaBufs();
  FakeDmaBufs(const FakeDmaBufs&) = delete;
  FakeDmaBufs& operator=(const FakeDmaBufs&) = delete;

  // A new buffer of `size` bytes (a multiple of the page size).
  absl::StatusOr<Buffer> Create(uint64_t size);
  // Treats memfds named kMemfdName as dma-bufs; any other fd as
  // InspectDmaBuf does. May outlive this object.
  DmaBufInspector Inspector() const;
  // How many times the inspector was asked.
  uint64_t inspections() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace dmareg::testing

#pragma GCC visibility pop

#endif  // DMAREG_TESTING_FAKE_DMABUF_H_
