// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/external_memory.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/mutex.h"
#include "dmareg/errno_status.h"

namespace dmareg {
namespace internal {

// What one DmaMap call made: the domain's mapping of `va` at `iova`.
struct DmaMapRecord {
  std::shared_ptr<Domain> domain;  // kept alive while mapped
  Range va;
  Range iova;
  AccessFlags access;  // normalized
  DeviceMapping mapping;
  bool dmabuf = false;  // imported from the chunk's dma-buf
};

// A mapping on a domain whose mappings are each their own, with the
// registry's count of the DmaMap calls it stands for.
struct ExternalMapping : DmaMapRecord {
  uint32_t refs = 0;
};

// (domain identity, first IOVA): one domain's mappings are adjacent and
// sorted by IOVA.
using MappingKey = std::pair<uintptr_t, uint64_t>;

// The entry of `m` on `domain` whose IOVAs overlap `iova`, or end(). Entries
// of one domain overlap only when they are the same mapping, so the one
// before `iova` is the only earlier candidate.
template <typename Map>
typename Map::iterator FindOverlap(Map& m, const Domain* domain, Range iova) {
  const auto d = reinterpret_cast<uintptr_t>(domain);
  auto it = m.lower_bound(MappingKey{d, iova.begin()});
  if (it != m.end() && it->first.first == d && it->second.iova.Overlaps(iova)) return it;
  if (it != m.begin()) {
    auto prev = std::prev(it);
    if (prev->first.first == d && prev->second.iova.Overlaps(iova)) return prev;
  }
  return m.end();
}

class ExternalMemoryState {
 public:
  // Lock order: mu, then the domains' own locks (VFIO: the container's).
  // mu is held across RegisterHost/Deregister so that a failed call
  // changes nothing and racing identical maps make one mapping; DmaMap is
  // a control-path call.
  Mutex mu;
  // by va.begin(); a dma-buf chunk's fd is ours, closed when it goes
  std::map<uint64_t, ExternalMemoryChunk> chunks ABSL_GUARDED_BY(mu);
  DmaBufInspector inspect_dmabuf;  // empty: InspectDmaBuf
  // Domains whose mappings are each their own (!one_iova_space: verbs MRs,
  // the fake): this is the only table there is, so the registry refuses an
  // overlap on one domain and counts the identical mapping again.
  std::map<MappingKey, ExternalMapping> mappings ABSL_GUARDED_BY(mu);
  // Domains with one IOVA space (VFIO): the domain's own table (the
  // container's) refuses overlaps and counts an identical mapping again,
  // so the registry keeps no rules and no count of its own, only one record
  // per DmaMap call: what it made, so that a chunk still in use is not
  // unregistered, mappings() can list them, DmaUnmap undoes nothing else
  // (the container also holds a cache's mappings), and the destructor
  // undoes the rest. Nothing the domain decides is decided here again, so
  // it is not a second table.
  std::multimap<MappingKey, DmaMapRecord> records ABSL_GUARDED_BY(mu);

  // The chunk holding `addr`, or null.
  const ExternalMemoryChunk* ChunkHolding(uint64_t addr) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    auto it = chunks.upper_bound(addr);
    if (it == chunks.begin()) return nullptr;
    --it;
    return it->second.va.Contains(addr) ? &it->second : nullptr;
  }

  // The mappings as mappings() shows them (unsorted): the table's entries,
  // and the records with one entry per extent, counting its DmaMap calls.
  std::vector<ExternalMemoryMapping> Snapshot() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::vector<ExternalMemoryMapping> out;
    out.reserve(mappings.size() + records.size());
    for (const auto& [key, m] : mappings) {
      out.push_back(ExternalMemoryMapping{m.domain->name(), m.va.begin(), m.iova.begin(),
                                          m.iova.length(), m.refs, m.access, m.dmabuf, m.mapping});
    }
    // Records of one extent are adjacent (same key) and have one VA (the
    // domain refused another at those IOVAs).
    const DmaMapRecord* last = nullptr;
    for (const auto& [key, r] : records) {
      if (last != nullptr && last->domain == r.domain && last->iova == r.iova) {
        ++out.back().refs;
        continue;
      }
      out.push_back(ExternalMemoryMapping{r.domain->name(), r.va.begin(), r.iova.begin(),
                                          r.iova.length(), 1, r.access, r.dmabuf, r.mapping});
      last = &r;
    }
    return out;
  }
};

}  // namespace internal

namespace {

std::string Describe(const internal::DmaMapRecord& m) {
  return absl::StrCat("VA ", m.va.ToString(), " at IOVA ", m.iova.ToString(), " on ",
                      m.domain->name());
}

// "[0x1000, +0x2000)" for ranges that may not be Ranges (they wrap).
std::string Span(uint64_t begin, uint64_t length) {
  std::optional<Range> r = Range::FromLength(begin, length);
  return r ? r->ToString() : absl::StrFormat("[%#x, +%#x)", begin, length);
}

// The chunk's rules for a mapping of `va` (which lies inside it) at `iova`:
// whole pages of the chunk, and the IOVA its table gives, if it has one.
// Everything about the device (a caller's IOVA at all, its mask, ranges and
// pages) is the domain's to check (CheckIovaPlacement), not the registry's.
absl::Status CheckChunk(const std::string& where, const ExternalMemoryChunk& chunk, Range va,
                        uint64_t iova) {
  const uint64_t ps = chunk.page_size;
  if ((va.begin() - chunk.va.begin()) % ps != 0 || va.length() % ps != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: not whole %#x-byte pages of its chunk %s", where, ps, chunk.va.ToString()));
  }
  if (chunk.iovas.empty()) return absl::OkStatus();
  const uint64_t first = (va.begin() - chunk.va.begin()) / ps;
  const uint64_t last = (va.end() - 1 - chunk.va.begin()) / ps;
  const uint64_t expected = chunk.iovas[first];
  if (iova != expected) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: the IOVA table of chunk %s gives VA %#x the IOVA %#x", where,
                        chunk.va.ToString(), va.begin(), expected));
  }
  for (uint64_t p = first + 1; p <= last; ++p) {
    if (chunk.iovas[p] != chunk.iovas[first] + (p - first) * ps) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: the IOVA table of chunk %s is not contiguous there (page at VA %#x has IOVA %#x)",
          where, chunk.va.ToString(), chunk.va.begin() + p * ps, chunk.iovas[p]));
    }
  }
  return absl::OkStatus();
}

absl::Status Prefixed(const std::string& where, const absl::Status& s) {
  return absl::Status(s.code(), absl::StrCat(where, ": ", s.message()));
}

}  // namespace

ExternalMemoryRegistry::ExternalMemoryRegistry()
    : state_(std::make_unique<internal::ExternalMemoryState>()) {}

ExternalMemoryRegistry::ExternalMemoryRegistry(DmaBufInspector inspect_dmabuf)
    : ExternalMemoryRegistry() {
  state_->inspect_dmabuf = std::move(inspect_dmabuf);
}

ExternalMemoryRegistry::~ExternalMemoryRegistry() {
  internal::MutexLock lock(&state_->mu);
  for (auto& [key, m] : state_->mappings) m.domain->Deregister(m.mapping).IgnoreError();
  for (auto& [key, r] : state_->records) r.domain->Deregister(r.mapping).IgnoreError();
  for (auto& [key, c] : state_->chunks) {
    if (c.dmabuf_fd >= 0) close(c.dmabuf_fd);
  }
}

absl::Status ExternalMemoryRegistry::Register(const void* addr, size_t length, size_t page_size,
                                              std::span<const uint64_t> page_iovas) {
  const std::string where =
      absl::StrFormat("Register of %s in %#x-byte pages",
                      Span(reinterpret_cast<uintptr_t>(addr), length), page_size);
  return AddChunk(addr, length, page_size, page_iovas, -1, 0, where);
}

absl::Status ExternalMemoryRegistry::RegisterDmaBuf(const void* addr, size_t length,
                                                    size_t page_size, int fd, uint64_t offset,
                                                    std::span<const uint64_t> page_iovas) {
  const std::string where =
      absl::StrFormat("RegisterDmaBuf of %s in %#x-byte pages (fd %d, offset %#x)",
                      Span(reinterpret_cast<uintptr_t>(addr), length), page_size, fd, offset);
  absl::StatusOr<DmaBufInfo> info =
      state_->inspect_dmabuf ? state_->inspect_dmabuf(fd) : InspectDmaBuf(fd);
  if (!info.ok()) return Prefixed(where, info.status());
  if (offset > info->size || length > info->size - offset) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: passes the end of %s (%#x bytes)", where,
                                                      info->id.ToString(), info->size));
  }
  const int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (own < 0) return ErrnoStatus(errno, "fcntl(F_DUPFD_CLOEXEC)", "dma-buf", where);
  absl::Status s = AddChunk(addr, length, page_size, page_iovas, own, offset, where);
  if (!s.ok()) close(own);
  return s;
}

absl::Status ExternalMemoryRegistry::AddChunk(const void* addr, size_t length, size_t page_size,
                                              std::span<const uint64_t> page_iovas, int dmabuf_fd,
                                              uint64_t dmabuf_offset, const std::string& where) {
  const auto a = reinterpret_cast<uintptr_t>(addr);
  if (page_size == 0 || (page_size & (page_size - 1)) != 0) {
    return absl::InvalidArgumentError(where + ": the page size is not a power of two");
  }
  if (addr == nullptr || length == 0) {
    return absl::InvalidArgumentError(where + ": a null address or a zero length");
  }
  const std::optional<Range> va = Range::FromLength(a, length);
  if (!va) {
    return absl::InvalidArgumentError(where + ": the range reaches the end of the address space");
  }
  if (!va->PageAligned(page_size)) {
    return absl::InvalidArgumentError(where + ": the range is not whole pages");
  }
  const uint64_t pages = length / page_size;
  if (!page_iovas.empty() && page_iovas.size() != pages) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: %u IOVAs for %u pages", where, page_iovas.size(), pages));
  }
  for (size_t i = 0; i < page_iovas.size(); ++i) {
    if ((page_iovas[i] & (page_size - 1)) != 0 || !Range::FromLength(page_iovas[i], page_size)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: page %u has IOVA %#x, not the start of a page", where, i, page_iovas[i]));
    }
  }
  internal::MutexLock lock(&state_->mu);
  auto next = state_->chunks.lower_bound(va->end());
  if (next != state_->chunks.begin() && std::prev(next)->second.va.Overlaps(*va)) {
    return absl::AlreadyExistsError(absl::StrCat(where, ": overlaps the registered chunk ",
                                                 std::prev(next)->second.va.ToString()));
  }
  state_->chunks.emplace(
      a, ExternalMemoryChunk{*va, page_size,
                             std::vector<uint64_t>(page_iovas.begin(), page_iovas.end()), dmabuf_fd,
                             dmabuf_offset});
  return absl::OkStatus();
}

absl::Status ExternalMemoryRegistry::Unregister(const void* addr, size_t length) {
  const auto a = reinterpret_cast<uintptr_t>(addr);
  const std::string where = absl::StrCat("Unregister of ", Span(a, length));
  internal::MutexLock lock(&state_->mu);
  auto it = state_->chunks.find(a);
  if (it == state_->chunks.end() || it->second.va.length() != length) {
    const ExternalMemoryChunk* holder = state_->ChunkHolding(a);
    if (holder != nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": not a registered chunk; a chunk (here ", holder->va.ToString(),
                       ") is unregistered whole"));
    }
    return absl::NotFoundError(where + ": no chunk is registered there");
  }
  const Range chunk = it->second.va;
  size_t live = 0;
  const internal::DmaMapRecord* example = nullptr;
  for (const auto& [key, m] : state_->mappings) {
    if (!chunk.Contains(m.va)) continue;
    if (live++ == 0) example = &m;
  }
  for (const auto& [key, r] : state_->records) {
    if (!chunk.Contains(r.va)) continue;
    if (live++ == 0) example = &r;
  }
  if (live > 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: %u device mapping(s) still use the chunk, e.g. %s; DmaUnmap them first", where, live,
        Describe(*example)));
  }
  if (it->second.dmabuf_fd >= 0) close(it->second.dmabuf_fd);
  state_->chunks.erase(it);
  return absl::OkStatus();
}

std::optional<ExternalMemoryChunk> ExternalMemoryRegistry::Lookup(const void* addr) const {
  internal::MutexLock lock(&state_->mu);
  const ExternalMemoryChunk* chunk = state_->ChunkHolding(reinterpret_cast<uintptr_t>(addr));
  if (chunk == nullptr) return std::nullopt;
  return *chunk;
}

absl::StatusOr<DeviceMapping> ExternalMemoryRegistry::DmaMap(std::shared_ptr<Domain> domain,
                                                             const void* va, uint64_t iova,
                                                             size_t length, AccessFlags access) {
  const auto a = reinterpret_cast<uintptr_t>(va);
  if (domain == nullptr) return absl::InvalidArgumentError("DmaMap: no domain");
  const std::string where = absl::StrFormat("DmaMap on %s: VA %s at IOVA %s", domain->name(),
                                            Span(a, length), Span(iova, length));
  const std::optional<Range> vr = Range::FromLength(a, length);
  const std::optional<Range> ir = Range::FromLength(iova, length);
  if (length == 0) return absl::InvalidArgumentError(where + ": zero length");
  if (!vr) return absl::InvalidArgumentError(where + ": the VA range wraps around");
  if (!ir) return absl::InvalidArgumentError(where + ": the IOVA range wraps around");
  if (absl::Status s = ValidateAccess(access); !s.ok()) return Prefixed(where, s);

  internal::MutexLock lock(&state_->mu);
  const ExternalMemoryChunk* chunk = state_->ChunkHolding(a);
  if (chunk == nullptr) {
    return absl::FailedPreconditionError(
        where + ": the memory is not in a registered chunk; Register it first");
  }
  if (!chunk->va.Contains(*vr)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": runs past the end of its chunk ", chunk->va.ToString()));
  }
  if (absl::Status s = CheckChunk(where, *chunk, *vr, iova); !s.ok()) return s;
  // One IOVA space (VFIO): its table decides identical and overlapping
  // mappings; elsewhere this one does.
  const bool own_table = !domain->capabilities().one_iova_space;
  if (own_table) {
    auto found = internal::FindOverlap(state_->mappings, domain.get(), *ir);
    if (found != state_->mappings.end()) {
      internal::ExternalMapping& m = found->second;
      if (m.iova == *ir && m.va == *vr && m.access == NormalizeAccess(access)) {
        ++m.refs;  // the identical mapping again
        return m.mapping;
      }
      return absl::AlreadyExistsError(
          absl::StrFormat("%s: overlaps the mapping of %s with access %s", where, Describe(m),
                          AccessToString(m.access)));
    }
  }
  // A dma-buf chunk is imported where the device can; elsewhere its
  // addresses are registered like any host memory.
  const bool import = chunk->dmabuf_fd >= 0 && domain->capabilities().dmabuf_import;
  absl::StatusOr<DeviceMapping> mapped =
      import ? domain->RegisterDmaBuf(
                   DmaBufMemory{.fd = chunk->dmabuf_fd,
                                .offset = chunk->dmabuf_offset + (a - chunk->va.begin()),
                                .length = length,
                                .iova = iova},
                   access)
             : domain->RegisterHost(HostMemory{va, length, iova}, access);
  if (!mapped.ok()) return Prefixed(where, mapped.status());
  const internal::MappingKey key{reinterpret_cast<uintptr_t>(domain.get()), iova};
  internal::DmaMapRecord record{std::move(domain),       *vr,     *ir,
                                NormalizeAccess(access), *mapped, import};
  if (own_table) {
    state_->mappings.emplace(key, internal::ExternalMapping{std::move(record), 1});
  } else {
    state_->records.emplace(key, std::move(record));
  }
  return *mapped;
}

absl::StatusOr<DeviceMapping> ExternalMemoryRegistry::DmaMap(std::shared_ptr<Domain> domain,
                                                             const void* va, size_t length,
                                                             AccessFlags access) {
  const auto a = reinterpret_cast<uintptr_t>(va);
  uint64_t iova = 0;
  {
    internal::MutexLock lock(&state_->mu);
    const ExternalMemoryChunk* chunk = state_->ChunkHolding(a);
    if (chunk == nullptr || chunk->iovas.empty()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "DmaMap on %s: VA %s: %s", domain ? domain->name() : "no domain", Span(a, length),
          chunk == nullptr ? "the memory is not in a registered chunk; Register it first"
                           : "its chunk has no IOVA table; name the IOVA"));
    }
    const uint64_t offset = a - chunk->va.begin();
    iova = chunk->iovas[offset / chunk->page_size] + offset % chunk->page_size;
  }
  // Checked again, whole, under the lock (the chunk may have gone meanwhile).
  return DmaMap(std::move(domain), va, iova, length, access);
}

absl::Status ExternalMemoryRegistry::DmaUnmap(const std::shared_ptr<Domain>& domain, const void* va,
                                              uint64_t iova, size_t length) {
  const auto a = reinterpret_cast<uintptr_t>(va);
  if (domain == nullptr) return absl::InvalidArgumentError("DmaUnmap: no domain");
  const std::string where = absl::StrFormat("DmaUnmap on %s: VA %s at IOVA %s", domain->name(),
                                            Span(a, length), Span(iova, length));
  const std::optional<Range> ir = Range::FromLength(iova, length);
  if (length == 0 || !ir) {
    return absl::InvalidArgumentError(where + ": a zero length or an IOVA range that wraps");
  }
  internal::MutexLock lock(&state_->mu);
  if (domain->capabilities().one_iova_space) {
    // Straight to the domain, whose table counts; the record only says
    // that this registry made it (DmaUnmap undoes nothing else).
    const internal::MappingKey key{reinterpret_cast<uintptr_t>(domain.get()), iova};
    auto [first, last] = state_->records.equal_range(key);
    auto mine = std::find_if(first, last, [&](const auto& kv) {
      return kv.second.va.begin() == a && kv.second.iova == *ir;
    });
    if (mine == last) {
      auto near = internal::FindOverlap(state_->records, domain.get(), *ir);
      if (near == state_->records.end()) return absl::NotFoundError(where + ": no mapping there");
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": a mapping is undone whole; the one there is ", Describe(near->second)));
    }
    if (absl::Status s = mine->second.domain->Deregister(mine->second.mapping); !s.ok()) {
      return Prefixed(where, s);  // still mapped, still recorded: a retry may succeed
    }
    state_->records.erase(mine);
    return absl::OkStatus();
  }
  auto found = internal::FindOverlap(state_->mappings, domain.get(), *ir);
  if (found == state_->mappings.end()) {
    return absl::NotFoundError(where + ": no mapping there");
  }
  internal::ExternalMapping& m = found->second;
  if (m.iova != *ir || m.va.begin() != a) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": a mapping is undone whole; the one there is ", Describe(m)));
  }
  if (--m.refs > 0) return absl::OkStatus();
  if (absl::Status s = m.domain->Deregister(m.mapping); !s.ok()) {
    m.refs = 1;  // still mapped: a retry may succeed
    return Prefixed(where, s);
  }
  state_->mappings.erase(found);
  return absl::OkStatus();
}

std::vector<ExternalMemoryMapping> ExternalMemoryRegistry::mappings() const {
  std::vector<ExternalMemoryMapping> out;
  {
    internal::MutexLock lock(&state_->mu);
    out = state_->Snapshot();
  }
  std::sort(out.begin(), out.end(), [](const auto& x, const auto& y) {
    return std::tie(x.domain, x.iova) < std::tie(y.domain, y.iova);
  });
  return out;
}

size_t ExternalMemoryRegistry::chunk_count() const {
  internal::MutexLock lock(&state_->mu);
  return state_->chunks.size();
}

size_t ExternalMemoryRegistry::mapping_count() const {
  internal::MutexLock lock(&state_->mu);
  return state_->Snapshot().size();
}

}  // namespace dmareg
