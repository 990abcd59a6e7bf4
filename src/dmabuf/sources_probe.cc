// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/dmabuf/sources_probe.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>
#include <xf86drm.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "dmareg/dmabuf/cuda_driver.h"

namespace dmareg {
namespace {

// Entry names of `dir` (no dot entries); empty when it cannot be read.
std::vector<std::string> ListDir(const char* dir) {
  std::vector<std::string> names;
  DIR* d = opendir(dir);
  if (d == nullptr) return names;
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

std::string DrmDriverName(const std::string& card) {
  const int fd = open(card.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return "";
  std::string name;
  if (drmVersionPtr v = drmGetVersion(fd); v != nullptr) {
    name.assign(v->name, v->name_len);
    drmFreeVersion(v);
  }
  close(fd);
  return name;
}

}  // namespace

DmaBufSources ProbeDmaBufSources() {
  DmaBufSources s;
  std::vector<std::pair<int, std::string>> cards;
  for (const std::string& name : ListDir("/dev/dri")) {
    int n = 0;
    if (absl::StartsWith(name, "card") && absl::SimpleAtoi(name.substr(4), &n)) {
      cards.emplace_back(n, "/dev/dri/" + name);
    }
  }
  std::sort(cards.begin(), cards.end());
  for (const auto& [n, card] : cards) s.drm_cards.push_back({card, DrmDriverName(card)});

  if (const int fd = open("/dev/udmabuf", O_RDWR | O_CLOEXEC); fd >= 0) {
    s.udmabuf = true;
    close(fd);
  }
  s.heaps = ListDir("/dev/dma_heap");
  const CudaProbe cuda = ProbeCuda();
  s.cuda = cuda.available;
  s.cuda_detail = cuda.detail;
  return s;
}

}  // namespace dmareg
