// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// rdma_write: RDMA WRITE through registrations from a dmareg cache.
//
// Opens an RDMA device, puts a RegistrationCache in front of it, connects two
// RC QPs on that device to each other (loopback) and RDMA WRITEs `--iters`
// messages of `--size` bytes from one buffer to another, with up to
// `--depth` writes in flight. Every write asks the cache for its keys; only
// the first touch of each slot registers memory, the rest are hits. At the
// end every byte is checked and the throughput and cache statistics printed.
//
//   rdma_write [--device rxe0] [--size 65536] [--iters 1000] [--depth 16]
//
// With soft-RoCE (no RDMA NIC): scripts/vm/run -- build/examples/rdma_write/rdma_write
//
// The QP set-up lives in src/verbs/rc_qp.{h,cc}; copy it along with this file.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dmareg/cache.h"
#include "dmareg/verbs/verbs_domain.h"
#include "verbs/rc_qp.h"

namespace {

struct Flags {
  std::string device;  // "" = first device
  size_t size = 64 * 1024;
  int iters = 1000;
  int depth = 16;
};

constexpr char kUsage[] =
    "usage: rdma_write [--device NAME] [--size BYTES] [--iters N] [--depth N]\n"
    "  --device NAME  RDMA device (default: the first one)\n"
    "  --size BYTES   bytes per RDMA WRITE (default 65536)\n"
    "  --iters N      number of writes (default 1000)\n"
    "  --depth N      writes in flight, also the number of buffer slots (default 16)\n";

bool ParseFlags(int argc, char** argv, Flags* f) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (a == "--device" && has_value) {
      f->device = argv[++i];
    } else if (a == "--size" && has_value) {
      f->size = std::strtoull(argv[++i], nullptr, 0);
    } else if (a == "--iters" && has_value) {
      f->iters = std::atoi(argv[++i]);
    } else if (a == "--depth" && has_value) {
      f->depth = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "rdma_write: bad argument '%s'\n%s", argv[i], kUsage);
      return false;
    }
  }
  if (f->size == 0 || f->size > (1u << 30) || f->iters <= 0 || f->depth <= 0 || f->depth > 128) {
    std::fprintf(stderr, "rdma_write: need 0 < size <= 1 GiB, iters > 0, 0 < depth <= 128\n");
    return false;
  }
  return true;
}

uint8_t Pattern(size_t slot, size_t i) {
  return static_cast<uint8_t>(slot * 31 + i * 7 + (i >> 9));
}

// Times each Acquire and files it as a hit or a miss by the cache's own miss
// count, so the two are reported apart (an average of both says neither).
// stats() takes the cache's lock: it is read once per Acquire, outside the
// timed call (this thread alone acquires, so the count after one call is
// the count before the next).
struct AcquireTimes {
  explicit AcquireTimes(const dmareg::RegistrationCache& cache) : misses(cache.stats().misses) {}
  struct Sum {
    std::chrono::nanoseconds total{0};
    uint64_t count = 0;
    std::string Mean() const {
      if (count == 0) return "-";
      return std::to_string(total.count() / static_cast<int64_t>(count)) + " ns (" +
             std::to_string(count) + " calls)";
    }
  };
  Sum hit, miss;
  uint64_t misses;  // the cache's count after the last call

  absl::StatusOr<dmareg::Registration> Acquire(dmareg::RegistrationCache& cache, const void* addr,
                                               size_t length, dmareg::AccessFlags access) {
    const auto t0 = std::chrono::steady_clock::now();
    auto reg = cache.Acquire(addr, length, access);
    const auto took = std::chrono::steady_clock::now() - t0;
    const uint64_t misses_before = std::exchange(misses, cache.stats().misses);
    Sum& sum = misses != misses_before ? miss : hit;
    sum.total += std::chrono::duration_cast<std::chrono::nanoseconds>(took);
    ++sum.count;
    return reg;
  }
};

int Fail(const char* what, const absl::Status& s) {
  std::fprintf(stderr, "rdma_write: %s: %s\n", what, s.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  if (!ParseFlags(argc, argv, &flags)) return 2;

  // 1. The device and a cache in front of it.
  auto domain = dmareg::VerbsDomain::Open(flags.device);
  if (!domain.ok()) return Fail("open", domain.status());
  auto cache = dmareg::RegistrationCache::Create(*domain);
  if (!cache.ok()) return Fail("cache", cache.status());
  const std::string& dev = (*domain)->name();

  // 2. Two RC QPs on the same device and PD, connected to each other.
  auto pair = dmareg::rc::ConnectLoopback((*domain)->context(), (*domain)->pd(), dev);
  if (!pair.ok()) return Fail("connect QPs", pair.status());

  // 3. Buffers: `depth` slots each; plain heap memory, nothing pre-registered.
  const size_t slots = static_cast<size_t>(flags.depth);
  std::vector<uint8_t> src(flags.size * slots), dst(flags.size * slots, 0);
  for (size_t s = 0; s < slots; ++s) {
    for (size_t i = 0; i < flags.size; ++i) src[s * flags.size + i] = Pattern(s, i);
  }

  // 4. Writes: ask the cache for each message's keys, keep the handles until
  //    the write completes (a held registration is never evicted).
  struct InFlight {
    dmareg::Registration local, remote;
  };
  std::vector<InFlight> in_flight(slots);
  std::vector<size_t> free_slots;
  for (size_t s = slots; s-- > 0;) free_slots.push_back(s);
  AcquireTimes timed(**cache);
  std::vector<uint64_t> done;

  const auto start = std::chrono::steady_clock::now();
  int posted = 0, completed = 0;
  while (completed < flags.iters) {
    while (posted < flags.iters && !free_slots.empty()) {
      const size_t s = free_slots.back();
      free_slots.pop_back();
      uint8_t* from = src.data() + s * flags.size;
      uint8_t* to = dst.data() + s * flags.size;
      auto local = timed.Acquire(**cache, from, flags.size, dmareg::AccessFlags());
      auto remote = timed.Acquire(**cache, to, flags.size, dmareg::Access::kRemoteWrite);
      if (!local.ok()) return Fail("acquire source", local.status());
      if (!remote.ok()) return Fail("acquire destination", remote.status());
      absl::Status st = pair->a->PostWrite(from, flags.size, local->lkey(), remote->IovaFor(to),
                                           remote->rkey(), s);
      if (!st.ok()) return Fail("post", st);
      in_flight[s] = InFlight{std::move(*local), std::move(*remote)};
      ++posted;
    }
    done.clear();
    absl::Status st = pair->a->WaitCompletions(1, std::chrono::seconds(60), &done);
    if (!st.ok()) return Fail("completion", st);
    for (uint64_t s : done) {
      in_flight[s] = InFlight{};  // drop the references
      free_slots.push_back(static_cast<size_t>(s));
      ++completed;
    }
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  // 5. Every byte must have arrived.
  const auto first_bad = std::mismatch(src.begin(), src.end(), dst.begin());
  if (first_bad.first != src.end()) {
    std::fprintf(stderr, "rdma_write: byte %td differs after the writes\n",
                 first_bad.first - src.begin());
    return 1;
  }

  const dmareg::CacheStats st = (*cache)->stats();
  const double bytes = static_cast<double>(flags.size) * flags.iters;
  std::printf("device %s: %d RDMA WRITEs of %zu bytes, depth %d, all bytes verified\n", dev.c_str(),
              flags.iters, flags.size, flags.depth);
  std::printf("  %.3f s, %.1f MB/s, %.0f writes/s\n", secs, bytes / secs / 1e6, flags.iters / secs);
  std::printf("  cache: %llu hits, %llu misses, %llu live regions (%llu bytes)\n",
              static_cast<unsigned long long>(st.hits), static_cast<unsigned long long>(st.misses),
              static_cast<unsigned long long>(st.live_regions),
              static_cast<unsigned long long>(st.registered_bytes));
  std::printf("  Acquire: %s on a hit, %s on a miss (the kernel registration)\n",
              timed.hit.Mean().c_str(), timed.miss.Mean().c_str());
  return 0;
}
