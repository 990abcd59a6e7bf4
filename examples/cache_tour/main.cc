// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// cache_tour: what the registration cache does, step by step, over the fake
// domain (no device needed): misses, hits on sub-ranges, the access union,
// invalidation with a handle still out, eviction under a limit, and the stats.

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <memory>

#include "dmareg/dmareg.h"
#include "dmareg/testing/fake_domain.h"

namespace {

void Show(const char* what, const absl::StatusOr<dmareg::Registration>& r) {
  if (!r.ok()) {
    std::printf("  %-44s -> error: %s\n", what, r.status().ToString().c_str());
    return;
  }
  std::printf("  %-44s -> lkey %-3u span [%p, +%zu KiB) %s\n", what, r->lkey(), r->addr(),
              r->length() >> 10, dmareg::AccessToString(r->access()).c_str());
}

void Stats(const dmareg::RegistrationCache& cache, const dmareg::testing::FakeDomain& fake) {
  const dmareg::CacheStats s = cache.stats();
  std::printf(
      "  stats: hits %llu, misses %llu, evictions %llu, invalidations %llu, live %llu "
      "(%llu KiB), referenced %llu | device holds %lld registrations\n",
      (unsigned long long)s.hits, (unsigned long long)s.misses, (unsigned long long)s.evictions,
      (unsigned long long)s.invalidations, (unsigned long long)s.live_regions,
      (unsigned long long)s.registered_bytes >> 10, (unsigned long long)s.referenced_regions,
      (long long)fake.live_registrations());
}

}  // namespace

int main() {
  using dmareg::Access;
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  auto fake = std::make_shared<dmareg::testing::FakeDomain>();
  // The default watches unmaps through a userfaultfd; where the kernel
  // refuses one, say why and tour with explicit notification instead.
  absl::StatusOr<std::unique_ptr<dmareg::RegistrationCache>> made =
      dmareg::RegistrationCache::Create(fake);
  if (!made.ok()) {
    std::printf("(%s)\n", std::string(made.status().message()).c_str());
    made =
        dmareg::RegistrationCache::Create(fake, {.monitoring = dmareg::Monitoring::kExplicitOnly});
  }
  std::unique_ptr<dmareg::RegistrationCache> cache = std::move(made).value();
  std::printf("monitor: %s\n\n", std::string(cache->monitor().name()).c_str());
  char* buf = static_cast<char*>(
      mmap(nullptr, 64 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (buf == MAP_FAILED) return 1;

  std::printf("1. A miss registers; requests inside the span are hits:\n");
  auto a = cache->Acquire(buf, 16 * page, Access::kLocalWrite);
  Show("Acquire(buf, 16 pages, LOCAL_WRITE)", a);
  Show("Acquire(buf + 3 pages + 100, 100 B)",
       cache->Acquire(buf + 3 * page + 100, 100, Access::kLocalWrite));
  Stats(*cache, *fake);

  std::printf("2. More rights than cached: the union is registered, the old one retired:\n");
  auto b = cache->Acquire(buf + 8 * page, 12 * page, Access::kRemoteWrite);
  Show("Acquire(buf + 8 pages, 12 pages, REMOTE_WRITE)", b);
  Show("Acquire(buf, 1 page, LOCAL_WRITE)", cache->Acquire(buf, page, Access::kLocalWrite));
  Stats(*cache, *fake);

  std::printf("3. Invalidate with a handle out: no longer handed out, freed with the handle:\n");
  if (!cache->Invalidate(buf + 10 * page, page).ok()) return 1;
  Show("Acquire(buf + 10 pages, 1 page, REMOTE_WRITE)",
       cache->Acquire(buf + 10 * page, page, Access::kRemoteWrite));
  std::printf("  (handle b still reads lkey %u; dropping it now)\n", b->lkey());
  b->Reset();
  a->Reset();
  Stats(*cache, *fake);

  std::printf("4. A limit of 2 mappings: the least recently used unreferenced one goes:\n");
  if (!cache->SetLimits({.max_regions = 2}).ok()) return 1;
  for (int i = 0; i < 4; ++i) {
    Show("Acquire(one page further along)", cache->Acquire(buf + (40 + 2 * i) * page, page, {}));
  }
  Stats(*cache, *fake);

  std::printf("5. munmap + mmap at the same address: the monitor saw it, no stale mapping:\n");
  auto c = cache->Acquire(buf + 48 * page, 4 * page, Access::kLocalWrite);
  Show("Acquire(buf + 48 pages, 4 pages)", c);
  const uint32_t old_lkey = c->lkey();
  c->Reset();
  munmap(buf + 48 * page, 4 * page);
  mmap(buf + 48 * page, 4 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
       -1, 0);
  if (cache->monitor().name() == "explicit") {
    (void)cache->monitor().Notify(buf + 48 * page, 4 * page);  // what an allocator would do
  }
  auto d = cache->Acquire(buf + 48 * page, 4 * page, Access::kLocalWrite);
  Show("Acquire(buf + 48 pages, 4 pages) again", d);
  std::printf("  new mapping: %s (old lkey %u)\n", d.ok() && d->lkey() != old_lkey ? "yes" : "NO",
              old_lkey);
  d->Reset();
  Stats(*cache, *fake);

  std::printf("6. Bad input is a clear error:\n");
  Show("Acquire(buf, 0 bytes)", cache->Acquire(buf, 0, {}));
  Show("Acquire(buf, 1, unknown access bit)",
       cache->Acquire(buf, 1, dmareg::AccessFlags::FromBits(1u << 12)));

  cache.reset();
  std::printf("cache destroyed: device holds %lld registrations\n",
              (long long)fake->live_registrations());
  munmap(buf, 64 * page);
  return fake->live_registrations() == 0 ? 0 : 1;
}
