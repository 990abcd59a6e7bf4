// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// dmabuf/sources_probe.h: what this machine offers to make dma-bufs from (DRM
// cards, udmabuf, heaps, CUDA), as `dmareg devices` shows it (component `dmabuf`).
//
//   dmareg::DmaBufSources s = dmareg::ProbeDmaBufSources();
//   if (s.udmabuf) ...

#ifndef DMAREG_DMABUF_SOURCES_PROBE_H_
#define DMAREG_DMABUF_SOURCES_PROBE_H_

#include <string>
#include <vector>

#pragma GCC visibility push(default)

namespace dmareg {

// What this machine offers to make dma-bufs from, for `dmareg devices`.
struct DmaBufSources {
  struct Drm {
    std::string card{};    // /dev/dri/cardN
    std::string driver{};  // drmGetVersion's name, "" if it could not be read
  };
  std::vector<Drm> drm_cards;
  bool udmabuf = false;            // /dev/udmabuf can be opened
  std::vector<std::string> heaps;  // names under /dev/dma_heap
  bool cuda = false;               // libcuda loads and has the dma-buf export
  std::string cuda_detail;         // why not, or the driver version
};
DmaBufSources ProbeDmaBufSources();

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_DMABUF_SOURCES_PROBE_H_
