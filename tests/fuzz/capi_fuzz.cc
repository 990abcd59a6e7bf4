// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// libFuzzer target for the C API's argument checks (src/capi): a C caller
// may pass anything. The input is a program of calls (create, acquire,
// iova, invalidate, stats, notify, release, destroy) with fuzzed handles
// (live, NULL), attrs (every field, reserved words, unknown monitoring and
// paging), addresses (in a mapping, PROT_NONE, NULL, the last page, wrapping)
// and access bits. Checks, beyond "no crash, no sanitizer report":
//   - every int-returning call returns 0 or a negative errno; on failure the
//     out-parameter is NULL and dmareg_last_error() names the call (but
//     dmareg_monitor_notify, async-signal-safe, which records nothing);
//   - a registration covers what was asked: its IOVA for the first byte
//     is the fake domain's (IOVA = VA);
//   - once every handle is released and every cache destroyed, the fake
//     domain holds no registration (nothing leaked on any path).
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "dmareg/c/dmareg.h"
#include "dmareg/c_bridge.h"
#include "dmareg/log.h"
#include "dmareg/testing/fake_domain.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

constexpr size_t kPages = 16;

struct World {
  std::shared_ptr<dmareg::testing::FakeDomain> fake;
  dmareg_domain* domain = nullptr;
  char* mem = nullptr;  // kPages pages: read-write, then one PROT_NONE
  size_t page = 0;
};

World& TheWorld() {
  static World* w = [] {
    dmareg::SetLogLevel(dmareg::LogLevel::kOff);
    auto* w = new World;
    w->fake = std::make_shared<dmareg::testing::FakeDomain>("fuzz0");
    // As a NIC's max_mr_size does: longer requests are refused up front
    // (the index pays per granule of what a cache holds).
    w->fake->mutable_capabilities().max_mapping_bytes = uint64_t{1} << 30;
    Check(dmareg::NewCDomain(w->fake, &w->domain) == 0);
    w->page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    void* p = mmap(nullptr, (kPages + 1) * w->page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    Check(p != MAP_FAILED);
    w->mem = static_cast<char*>(p);
    Check(mprotect(w->mem + kPages * w->page, w->page, PROT_NONE) == 0);
    return w;
  }();
  return *w;
}

// Reads the program: one byte, or 8, as the input still has them.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool done() const { return at_ >= size_; }
  uint8_t Byte() { return at_ < size_ ? data_[at_++] : 0; }
  uint64_t Word() {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = v << 8 | Byte();
    return v;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t at_ = 0;
};

bool Failed(int rc, const char* call) {
  Check(rc <= 0 && rc > -4096);
  if (rc == 0) return false;
  Check(std::strstr(dmareg_last_error(), call) != nullptr);
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  World& w = TheWorld();
  Reader in(data, size);
  std::vector<dmareg_cache*> caches;
  std::vector<dmareg_reg*> regs;
  auto pick_cache = [&](uint8_t b) -> dmareg_cache* {
    if (caches.empty() || b % 8 == 7) return nullptr;
    return caches[b % caches.size()];
  };
  auto pick_addr = [&](uint8_t kind, uint64_t word) -> const void* {
    const uintptr_t base = reinterpret_cast<uintptr_t>(w.mem);
    switch (kind % 6) {
      case 0:
      case 1:
        return reinterpret_cast<const void*>(base + word % (kPages * w.page));
      case 2:
        return reinterpret_cast<const void*>(base + kPages * w.page + word % w.page);  // PROT_NONE
      case 3:
        return nullptr;
      case 4:
        return reinterpret_cast<const void*>(~uintptr_t{0} - word % (2 * w.page));  // last pages
      default:
        return reinterpret_cast<const void*>(word);
    }
  };
  for (int steps = 0; !in.done() && steps < 32; ++steps) {
    const uint8_t op = in.Byte();
    switch (op % 8) {
      case 0: {  // create
        if (caches.size() >= 3) break;
        dmareg_cache_attr attr{};
        const uint8_t f = in.Byte();
        attr.max_regions = f & 1 ? in.Byte() % 8 : 0;
        attr.max_bytes = f & 2 ? in.Word() % (64 * w.page) : 0;
        // The shared monitors (automatic, hooks, userfaultfd) rarely: each
        // is a userfaultfd and a thread.
        attr.monitoring = f & 4 ? static_cast<int8_t>(in.Byte()) : DMAREG_MONITOR_EXPLICIT;
        attr.paging = f & 8 ? static_cast<int8_t>(in.Byte()) : DMAREG_PAGING_PINNED;
        attr.no_environment = 1;
        if (f & 16) attr.reserved[in.Byte() % 4] = in.Word() | 1;
        dmareg_domain* d = f & 32 ? nullptr : w.domain;
        dmareg_cache* c = reinterpret_cast<dmareg_cache*>(1);
        const int rc = dmareg_cache_create(d, f & 64 ? nullptr : &attr, &c);
        if (Failed(rc, "dmareg_cache_create")) {
          Check(c == nullptr);
        } else {
          Check(c != nullptr);
          caches.push_back(c);
        }
        break;
      }
      case 1:
      case 2: {  // acquire
        dmareg_cache* c = pick_cache(in.Byte());
        const uint8_t kind = in.Byte();
        const void* addr = pick_addr(kind, in.Word());
        const size_t len = in.Byte() & 1 ? in.Word() : in.Byte() * 97;
        const uint32_t access = in.Byte() & 1 ? static_cast<uint32_t>(in.Word()) : in.Byte() & 0xf;
        dmareg_reg* r = reinterpret_cast<dmareg_reg*>(1);
        const int rc = dmareg_acquire(c, addr, len, access, regs.size() < 64 ? &r : nullptr);
        if (Failed(rc, "dmareg_acquire")) {
          if (regs.size() < 64) Check(r == nullptr);
        } else {
          Check(regs.size() < 64 && r != nullptr && len != 0);
          Check(dmareg_reg_iova(r, addr) == reinterpret_cast<uintptr_t>(addr));
          regs.push_back(r);
        }
        break;
      }
      case 3: {  // iova and keys of a live or NULL handle
        dmareg_reg* r =
            regs.empty() || in.Byte() % 4 == 0 ? nullptr : regs[in.Byte() % regs.size()];
        (void)dmareg_reg_iova(r, pick_addr(in.Byte(), in.Word()));
        if (r == nullptr) Check(dmareg_reg_lkey(r) == 0 && dmareg_reg_rkey(r) == 0);
        break;
      }
      case 4: {  // invalidate
        dmareg_cache* c = pick_cache(in.Byte());
        const void* addr = pick_addr(in.Byte(), in.Word());
        (void)Failed(dmareg_invalidate(c, addr, in.Word() % (4 * kPages * w.page)),
                     "dmareg_invalidate");
        break;
      }
      case 5: {  // stats and notify
        dmareg_cache* c = pick_cache(in.Byte());
        struct dmareg_cache_stats stats {};
        if (!Failed(dmareg_cache_stats(c, in.Byte() % 4 == 0 ? nullptr : &stats),
                    "dmareg_cache_stats")) {
          Check(stats.referenced_regions <= stats.live_regions);
        }
        dmareg_monitor* m = dmareg_cache_monitor(c);
        Check((m == nullptr) == (c == nullptr));
        // Async-signal-safe, so it records no message: 0 or -EINVAL.
        const int rc = dmareg_monitor_notify(m, pick_addr(in.Byte(), in.Word()), in.Word());
        Check(rc == 0 || rc == -EINVAL);
        break;
      }
      case 6: {  // release
        if (regs.empty()) {
          dmareg_release(nullptr);
          break;
        }
        const size_t i = in.Byte() % regs.size();
        dmareg_release(regs[i]);
        regs.erase(regs.begin() + static_cast<ptrdiff_t>(i));
        break;
      }
      default: {  // destroy a cache with its handles still out: they stay valid
        if (caches.empty()) {
          dmareg_cache_destroy(nullptr);
          break;
        }
        const size_t i = in.Byte() % caches.size();
        dmareg_cache_destroy(caches[i]);
        caches.erase(caches.begin() + static_cast<ptrdiff_t>(i));
        break;
      }
    }
  }
  for (dmareg_reg* r : regs) dmareg_release(r);
  for (dmareg_cache* c : caches) dmareg_cache_destroy(c);
  Check(w.fake->live_registrations() == 0);
  return 0;
}
