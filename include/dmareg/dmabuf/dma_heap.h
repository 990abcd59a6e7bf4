// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// dmabuf/dma_heap.h: dma-bufs from a DMA-BUF heap (/dev/dma_heap/NAME); no CPU
// alias (component `dmabuf`).
//
//   absl::StatusOr<dmareg::DmaHeap> heap = dmareg::DmaHeap::Open("system");
//   absl::StatusOr<dmareg::DmaBuf> buf = heap->Allocate(1 << 20);

#ifndef DMAREG_DMABUF_DMA_HEAP_H_
#define DMAREG_DMABUF_DMA_HEAP_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "dmareg/dmabuf/dmabuf.h"

#pragma GCC visibility push(default)

namespace dmareg {

// A DMA-BUF heap (/dev/dma_heap/NAME): "system" is the common one.
class DmaHeap {
 public:
  static absl::StatusOr<DmaHeap> Open(const std::string& name = "system");
  DmaHeap(DmaHeap&& other) noexcept;
  DmaHeap& operator=(DmaHeap&& other) noexcept;
  DmaHeap(const DmaHeap&) = delete;
  DmaHeap& operator=(const DmaHeap&) = delete;
  ~DmaHeap();

  const std::string& name() const { return name_; }
  absl::StatusOr<DmaBuf> Allocate(uint64_t size);

 private:
  DmaHeap(int fd, std::string name) : fd_(fd), name_(std::move(name)) {}
  int fd_ = -1;
  std::string name_;
};

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_DMABUF_DMA_HEAP_H_
