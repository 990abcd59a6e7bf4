// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// VfioContainer: the mapping table, the groups, the IOMMU info and the IOVA
// allocator of one container.
//
// One allocator, over the ranges clipped to the narrowest DMA mask of any
// device that has joined. Every device in a container sees every mapping,
// so an automatic pick must be reachable by all of them: the narrowest mask
// is the only window that is. (One allocator per mask would let a wide
// device use more space, at the price of mirroring every reservation into
// every allocator; edu-class devices with a 28-bit mask have 256 MiB, and a
// wide device still gets IOVA = VA above it.) The window only narrows: a
// narrow device that detaches usually comes back. Mappings not picked by the
// allocator (IOVA = VA, caller IOVAs) enter it only when a pick lands on
// them (PickFree), so a caller's map+unmap costs the allocator nothing; the
// allocator is rebuilt empty whenever the window or the ranges change, and
// the table's entries re-enter it the same way.

#include <fcntl.h>
#include <linux/vfio.h>

#include <algorithm>
#include <cerrno>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/mutex.h"
#include "dmareg/domain.h"
#include "dmareg/errno_status.h"
#include "dmareg/vfio/vfio_domain.h"
#include "dmareg/vfio/vfio_ops.h"
#include "vfio/container_state.h"
#include "vfio/iommu_info.h"
#include "vfio/iova_allocator.h"

namespace dmareg {

using Entry = internal::VfioTableEntry;
using internal::DescribeMapping;
using internal::InsideOne;
using internal::KernelMap;
using internal::KernelUnmap;
using internal::PartsInside;
using internal::RangesString;

VfioContainer::VfioContainer(std::shared_ptr<VfioOps> ops, int fd, int preferred_type, bool owns_fd)
    : ops_(std::move(ops)), fd_(fd), owns_fd_(owns_fd) {
  state_ = std::make_unique<State>(preferred_type, /*adopted_type=*/false);
}

VfioContainer::~VfioContainer() {
  if (fd_ >= 0 && owns_fd_) ops_->Close(fd_);
}

absl::StatusOr<std::shared_ptr<VfioContainer>> VfioContainer::Open(VfioContainerOptions options) {
  std::shared_ptr<VfioOps> ops = options.ops != nullptr ? std::move(options.ops) : KernelVfioOps();
  constexpr const char* kPath = "/dev/vfio/vfio";
  const int fd = ops->Open(kPath, O_RDWR);
  if (fd < 0) {
    const int err = errno;
    return ErrnoStatus(err, "open", kPath,
                       err == ENOENT ? "VFIO is not loaded (modprobe vfio-pci)" : "");
  }
  // From here the container owns the fd and closes it on every failure.
  std::shared_ptr<VfioContainer> c(new VfioContainer(ops, fd, 0));
  const int version = ops->GetApiVersion(fd);
  if (version != VFIO_API_VERSION) {
    if (version < 0) return ErrnoStatus(errno, "VFIO_GET_API_VERSION", kPath);
    return absl::FailedPreconditionError(
        absl::StrFormat("VFIO_GET_API_VERSION on %s: API version %d, this library speaks %d", kPath,
                        version, VFIO_API_VERSION));
  }
  int type = 0;
  if (ops->CheckExtension(fd, VFIO_TYPE1v2_IOMMU) > 0) {
    type = VFIO_TYPE1v2_IOMMU;
  } else if (ops->CheckExtension(fd, VFIO_TYPE1_IOMMU) > 0) {
    type = VFIO_TYPE1_IOMMU;
  } else {
    return absl::FailedPreconditionError(
        absl::StrCat("VFIO_CHECK_EXTENSION on ", kPath,
                     ": neither the type1v2 nor the type1 IOMMU is supported (is the IOMMU on?)"));
  }
  c->state_ = std::make_unique<State>(type, /*adopted_type=*/false);
  return c;
}

absl::StatusOr<std::shared_ptr<VfioContainer>> VfioContainer::Adopt(int container_fd,
                                                                    int iommu_type,
                                                                    VfioContainerOptions options) {
  std::shared_ptr<VfioOps> ops = options.ops != nullptr ? std::move(options.ops) : KernelVfioOps();
  if (container_fd < 0) {
    return absl::InvalidArgumentError(absl::StrCat("adopting container fd ", container_fd));
  }
  std::shared_ptr<VfioContainer> c(new VfioContainer(ops, container_fd, iommu_type));
  if (iommu_type != VFIO_TYPE1v2_IOMMU && iommu_type != VFIO_TYPE1_IOMMU) {
    return absl::InvalidArgumentError(absl::StrCat(
        "adopting container fd ", container_fd, ": IOMMU type ", iommu_type, " is not type1 (",
        VFIO_TYPE1_IOMMU, ") or type1v2 (", VFIO_TYPE1v2_IOMMU, ")"));
  }
  c->state_ = std::make_unique<State>(iommu_type, /*adopted_type=*/true);
  if (absl::Status st = ReadAdoptedInfo(*c, iommu_type); !st.ok()) return st;
  return c;
}

absl::Status VfioContainer::ReadAdoptedInfo(VfioContainer& c, int iommu_type) {
  absl::StatusOr<VfioContainerInfo> info = internal::ReadIommuInfo(*c.ops_, c.fd_, iommu_type);
  if (!info.ok()) return info.status();
  State& s = *c.state_;
  internal::MutexLock lock(&s.mu);
  s.info = *std::move(info);
  internal::IovaAllocator::Options o;
  o.ranges = s.info.iova_ranges;
  o.page_size = internal::SmallestPage(s.info.page_sizes);
  absl::StatusOr<std::unique_ptr<internal::IovaAllocator>> a = internal::IovaAllocator::Create(o);
  if (a.ok()) s.allocator = *std::move(a);  // else: only caller IOVAs and IOVA = VA
  return absl::OkStatus();
}

std::string_view IommuTypeName(int iommu_type) {
  switch (iommu_type) {
    case VFIO_TYPE1v2_IOMMU:
      return "type1v2";
    case VFIO_TYPE1_IOMMU:
      return "type1";
    case 0:
      return "unset";
    default:
      return "unknown";
  }
}

bool VfioContainer::iommu_set() const {
  internal::MutexLock lock(&state_->mu);
  return state_->info.iommu_type != 0;
}

VfioContainerInfo VfioContainer::info() const {
  State& s = *state_;
  internal::MutexLock lock(&s.mu);
  if (s.info.iommu_type != 0) {
    absl::StatusOr<VfioContainerInfo> fresh =
        internal::ReadIommuInfo(*ops_, fd_, s.info.iommu_type);
    if (fresh.ok()) s.info = *std::move(fresh);  // else: the last one read
  }
  return s.info;
}

std::vector<VfioMapping> VfioContainer::mappings() const {
  internal::MutexLock lock(&state_->mu);
  std::vector<VfioMapping> out;
  for (const auto& [iova, e] : state_->table) {
    out.push_back(
        VfioMapping{e.va, iova, e.length, e.writable, static_cast<uint32_t>(e.taken_by.size())});
  }
  return out;
}

absl::StatusOr<int> VfioContainer::DupGroupFd(int group) const {
  internal::MutexLock lock(&state_->mu);
  auto it = state_->groups.find(group);
  if (it == state_->groups.end()) {
    return absl::NotFoundError(
        absl::StrFormat("IOMMU group %d is not attached to VFIO container fd %d", group, fd_));
  }
  const int dup = ::fcntl(it->second.fd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) {
    return ErrnoStatus(errno, "fcntl(F_DUPFD_CLOEXEC)", absl::StrFormat("IOMMU group %d", group));
  }
  return dup;
}

absl::StatusOr<int> VfioContainer::IommuType() const {
  internal::MutexLock lock(&state_->mu);
  if (state_->info.iommu_type == 0) {
    return absl::FailedPreconditionError(
        absl::StrFormat("VFIO container fd %d has no IOMMU type yet: no group has joined it", fd_));
  }
  return state_->info.iommu_type;
}

std::vector<int> VfioContainer::groups() const {
  internal::MutexLock lock(&state_->mu);
  std::vector<int> out;
  for (const auto& [group, g] : state_->groups) out.push_back(group);
  return out;
}

std::vector<Range> VfioContainer::allocator_ranges() const {
  internal::MutexLock lock(&state_->mu);
  return state_->allocator ? state_->allocator->usable() : std::vector<Range>{};
}

int VfioContainer::allocator_address_bits() const {
  internal::MutexLock lock(&state_->mu);
  return state_->narrowest_bits;
}

namespace {

// The container as CheckIovaPlacement sees it: its IOMMU's ranges and
// pages once the IOMMU is `set` (before, any IOVA and 4 KiB pages: what the
// first attach finds is checked then), and no DMA mask (a device's own is
// its domain's).
DomainCapabilities PlacementCaps(const VfioContainerInfo& info, bool set, int fd) {
  DomainCapabilities caps;
  caps.device_name = absl::StrCat("VFIO container (fd ", fd, ")");
  caps.kind = DeviceKind::kVfio;
  if (set) caps.iova_ranges = info.iova_ranges;
  caps.page_sizes = set && info.page_sizes != 0 ? info.page_sizes : 4096;
  caps.caller_iova = true;
  caps.one_iova_space = true;
  caps.byte_granular = false;
  return caps;
}

}  // namespace

absl::Status VfioContainer::Map(uint64_t va, uint64_t iova, uint64_t length, bool writable) {
  State& s = *state_;
  internal::MutexLock lock(&s.mu);
  // A backend-level entry point of its own: the rules every domain applies.
  if (absl::Status st = CheckIovaPlacement(PlacementCaps(s.info, s.info.iommu_type != 0, fd_), va,
                                           iova, length, "VFIO map");
      !st.ok()) {
    return st;
  }
  return MapLocked(va, iova, length, writable, /*holder=*/nullptr);
}

absl::Status VfioContainer::MapValidated(uint64_t va, uint64_t iova, uint64_t length, bool writable,
                                         const void* holder) {
  internal::MutexLock lock(&state_->mu);
  return MapLocked(va, iova, length, writable, holder);
}

absl::Status VfioContainer::MapLocked(uint64_t va, uint64_t iova, uint64_t length, bool writable,
                                      const void* holder) {
  State& s = *state_;
  s.mu.AssertHeld();  // the caller's lock (the header cannot name it)
  const bool set = s.info.iommu_type != 0;
  const Range r = *Range::FromLength(iova, length);

  // The table first: an identical entry is a reference, any other overlap a conflict.
  auto it = s.table.upper_bound(iova);
  if (it != s.table.begin()) --it;
  for (; it != s.table.end() && it->first < r.end(); ++it) {
    Entry& e = it->second;
    if (!Range::FromLength(it->first, e.length)->Overlaps(r)) continue;
    if (it->first == iova && e.length == length && e.va == va && e.writable == writable) {
      e.taken_by.push_back(holder);
      return absl::OkStatus();
    }
    return absl::AlreadyExistsError(
        absl::StrCat("VFIO map ", DescribeMapping(va, iova, length, writable), " overlaps mapping ",
                     DescribeMapping(e.va, it->first, e.length, e.writable)));
  }
  Entry entry{va, length, writable, {holder}, {}};
  if (set) {
    if (absl::Status st = KernelMap(*ops_, fd_, s.info, s.table.size(), va, iova, length, writable);
        !st.ok()) {
      return st;
    }
    // The allocator learns of this IOVA only if a pick lands on it
    // (MapAnywhere): a caller's map+unmap costs no allocator work.
  }  // Not set: pending, applied by the first AttachGroup.
  s.table.emplace(iova, std::move(entry));
  return absl::OkStatus();
}

// An allocator window that no table entry overlaps. Mappings not placed by
// the allocator (caller IOVAs, IOVA = VA) enter it lazily: when a pick lands
// on one, its parts are reserved (and held by its entry, freed with it) and
// the pick is retried; each retry reserves at least one more entry.
namespace {

absl::StatusOr<Range> PickFree(internal::IovaAllocator& allocator, std::map<uint64_t, Entry>& table,
                               uint64_t length, uint64_t alignment = 0) {
  for (;;) {
    absl::StatusOr<Range> picked = allocator.Allocate(length, alignment);
    if (!picked.ok()) return picked.status();
    bool clash = false;
    auto it = table.upper_bound(picked->begin());
    if (it != table.begin()) --it;
    for (; it != table.end() && it->first < picked->end(); ++it) {
      Entry& e = it->second;
      if (!e.held.empty() || !Range::FromLength(it->first, e.length)->Overlaps(*picked)) continue;
      if (!clash) (void)allocator.Free(*picked);
      clash = true;
      for (const Range& part : PartsInside(allocator, *Range::FromLength(it->first, e.length))) {
        if (absl::Status st = allocator.Reserve(part); !st.ok()) return st;
        e.held.push_back(part);
      }
    }
    if (!clash) return *picked;
  }
}

}  // namespace

absl::StatusOr<uint64_t> VfioContainer::MapAnywhere(uint64_t va, uint64_t length, bool writable,
                                                    int address_bits, const void* holder) {
  State& s = *state_;
  internal::MutexLock lock(&s.mu);
  if (s.info.iommu_type == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "VFIO container (fd ", fd_, "): no group attached, so no IOVA can be chosen yet"));
  }
  const Range identity = *Range::FromLength(va, length);

  // IOVA = VA: inside the ranges, below the mask, not page 0, and free.
  bool free = identity.begin() != 0 && InsideOne(s.info.iova_ranges, identity) &&
              (address_bits >= 64 || identity.end() <= (uint64_t{1} << address_bits));
  if (free) {
    auto it = s.table.upper_bound(identity.begin());
    if (it != s.table.begin()) --it;
    for (; it != s.table.end() && it->first < identity.end(); ++it) {
      if (Range::FromLength(it->first, it->second.length)->Overlaps(identity)) free = false;
    }
    // Nor inside a reserved window: its IOVAs are its owner's to map.
    auto r = s.reserved.upper_bound(identity.begin());
    if (r != s.reserved.begin() && std::prev(r)->second > identity.begin()) free = false;
    if (r != s.reserved.end() && r->first < identity.end()) free = false;
  }
  Entry entry{va, length, writable, {holder}, {}};
  uint64_t iova = 0;
  if (free) {
    iova = va;
    if (absl::Status st = KernelMap(*ops_, fd_, s.info, s.table.size(), va, iova, length, writable);
        !st.ok()) {
      return st;
    }
  } else {
    if (!s.allocator) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "VFIO container (fd %d): va %#x + %#x cannot be mapped at IOVA = VA and no IOVA "
          "space is left below the %d-bit mask in the ranges %s",
          fd_, va, length, s.narrowest_bits, RangesString(s.info.iova_ranges)));
    }
    absl::StatusOr<Range> picked = PickFree(*s.allocator, s.table, length);
    if (!picked.ok()) return picked.status();
    iova = picked->begin();
    if (absl::Status st = KernelMap(*ops_, fd_, s.info, s.table.size(), va, iova, length, writable);
        !st.ok()) {
      (void)s.allocator->Free(*picked);
      return st;
    }
    entry.held.push_back(*picked);
  }
  s.table.emplace(iova, std::move(entry));
  return iova;
}

absl::StatusOr<Range> VfioContainer::ReserveIova(uint64_t length, uint64_t alignment) {
  State& s = *state_;
  internal::MutexLock lock(&s.mu);
  if (s.info.iommu_type == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "VFIO container (fd ", fd_, "): no group attached, so no IOVA can be reserved yet"));
  }
  if (length == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("VFIO container (fd ", fd_, "): reserving 0 bytes of IOVA space"));
  }
  if (!s.allocator) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("VFIO container (fd %d): no IOVA space below the %d-bit mask in %s", fd_,
                        s.narrowest_bits, RangesString(s.info.iova_ranges)));
  }
  absl::StatusOr<Range> picked = PickFree(*s.allocator, s.table, length, alignment);
  if (!picked.ok()) return picked.status();
  s.reserved.emplace(picked->begin(), picked->end());
  return *picked;
}

absl::Status VfioContainer::ReleaseIova(Range iova) {
  State& s = *state_;
  internal::MutexLock lock(&s.mu);
  auto it = s.reserved.find(iova.begin());
  if (it == s.reserved.end() || it->second != iova.end()) {
    return absl::NotFoundError(
        absl::StrFormat("VFIO container (fd %d): IOVA %s was not reserved", fd_, iova.ToString()));
  }
  s.reserved.erase(it);
  if (s.allocator) {
    for (const Range& part : PartsInside(*s.allocator, iova)) (void)s.allocator->Free(part);
  }
  return absl::OkStatus();
}

std::vector<Range> VfioContainer::reserved_iova() const {
  internal::MutexLock lock(&state_->mu);
  std::vector<Range> out;
  for (const auto& [begin, end] : state_->reserved) out.push_back(*Range::FromBounds(begin, end));
  return out;
}

absl::Status VfioContainer::Unmap(uint64_t iova, uint64_t length) {
  internal::MutexLock lock(&state_->mu);
  return UnmapLocked(iova, length, /*holder=*/nullptr, /*any=*/true);
}

absl::Status VfioContainer::UnmapHeld(uint64_t iova, uint64_t length, const void* holder) {
  internal::MutexLock lock(&state_->mu);
  return UnmapLocked(iova, length, holder, /*any=*/false);
}

absl::Status VfioContainer::UnmapLocked(uint64_t iova, uint64_t length, const void* holder,
                                        bool any) {
  State& s = *state_;
  s.mu.AssertHeld();  // the caller's lock (the header cannot name it)
  const std::optional<Range> r = Range::FromLength(iova, length);
  if (length == 0 || !r) {
    return absl::InvalidArgumentError(
        absl::StrFormat("VFIO unmap of iova %#x, %#x bytes: empty or wraps", iova, length));
  }
  auto exact = s.table.find(iova);
  if (exact != s.table.end() && exact->second.length == length) {
    Entry& e = exact->second;
    // The reference that goes: `holder`'s own, else (any) the last taken.
    auto ref = std::find(e.taken_by.rbegin(), e.taken_by.rend(), holder);
    if (ref == e.taken_by.rend()) {
      if (!any) {
        return absl::NotFoundError(absl::StrFormat(
            "VFIO unmap of iova [%#x, %#x): mapped in container fd %d, but not through this "
            "domain (another device's domain or VfioContainer::Map holds it)",
            iova, iova + length, fd_));
      }
      ref = e.taken_by.rbegin();
    }
    if (e.taken_by.size() > 1) {
      e.taken_by.erase(std::next(ref).base());
      return absl::OkStatus();
    }
    if (s.info.iommu_type != 0) {
      absl::StatusOr<uint64_t> unmapped = KernelUnmap(*ops_, fd_, iova, length);
      if (!unmapped.ok()) return unmapped.status();
      if (*unmapped != length) {
        // The kernel did not hold what the table says (another process
        // unmapped it?). The table follows the request: the entry goes.
        if (s.allocator) {
          for (const Range& h : e.held) (void)s.allocator->Free(h);
        }
        s.table.erase(exact);
        return absl::InternalError(absl::StrFormat(
            "VFIO_IOMMU_UNMAP_DMA on VFIO container (fd %d): iova [%#x, %#x) unmapped %#x "
            "bytes, the table held %#x",
            fd_, iova, iova + length, *unmapped, length));
      }
    }
    if (s.allocator) {
      for (const Range& h : e.held) (void)s.allocator->Free(h);
    }
    s.table.erase(exact);
    return absl::OkStatus();
  }
  // Not an exact entry: name what it touches.
  std::vector<std::string> touched;
  auto it = s.table.upper_bound(iova);
  if (it != s.table.begin()) --it;
  for (; it != s.table.end() && it->first < r->end(); ++it) {
    if (Range::FromLength(it->first, it->second.length)->Overlaps(*r)) {
      touched.push_back(
          DescribeMapping(it->second.va, it->first, it->second.length, it->second.writable));
    }
  }
  if (touched.empty()) {
    return absl::NotFoundError(absl::StrFormat(
        "VFIO unmap of iova [%#x, %#x): nothing mapped there", iova, iova + length));
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "VFIO unmap of iova [%#x, %#x) is not the exact extent of one mapping (it touches %s); "
      "the type1 IOMMU cannot split a mapping: unmap each one whole",
      iova, iova + length, absl::StrJoin(touched, ", ")));
}

void VfioContainer::ReleaseHolder(const void* holder) {
  State& s = *state_;
  internal::MutexLock lock(&s.mu);
  for (auto it = s.table.begin(); it != s.table.end();) {
    Entry& e = it->second;
    std::erase(e.taken_by, holder);
    if (!e.taken_by.empty()) {
      ++it;
      continue;
    }
    if (s.info.iommu_type != 0 && !KernelUnmap(*ops_, fd_, it->first, e.length).ok()) {
      // Still in the kernel: the container keeps it as its own, so the
      // table still says what is mapped (and an Unmap may retry).
      e.taken_by.push_back(nullptr);
      ++it;
      continue;
    }
    if (s.allocator) {
      for (const Range& h : e.held) (void)s.allocator->Free(h);
    }
    it = s.table.erase(it);
  }
}

// An empty allocator over the window (ranges below `bits`); nullptr when no
// usable space is left. The table's entries enter it through PickFree.
static std::unique_ptr<internal::IovaAllocator> BuildAllocator(const VfioContainerInfo& info,
                                                               int bits);
// Entries forget what they held in a replaced allocator; reserved windows
// are reserved in it again (one the new window cannot hold stays out of it,
// still avoided by IOVA = VA picks).
static void ForgetHeld(std::map<uint64_t, Entry>& table,
                       const std::map<uint64_t, uint64_t>& reserved,
                       internal::IovaAllocator* allocator) {
  for (auto& [iova, e] : table) e.held.clear();
  if (allocator == nullptr) return;
  for (const auto& [begin, end] : reserved) {
    for (const Range& part : PartsInside(*allocator, *Range::FromBounds(begin, end))) {
      (void)allocator->Reserve(part);
    }
  }
}

absl::Status VfioContainer::AttachGroup(int group_fd, int group, int address_bits,
                                        bool already_joined) {
  State& s = *state_;
  internal::MutexLock lock(&s.mu);
  const std::string device = absl::StrCat("VFIO group ", group);
  if (s.groups.count(group) != 0) {
    return absl::AlreadyExistsError(
        absl::StrCat(device, " is already attached to container fd ", fd_));
  }
  if (!already_joined && ops_->GroupSetContainer(group_fd, fd_) != 0) {
    return ErrnoStatus(errno, "VFIO_GROUP_SET_CONTAINER", device,
                       absl::StrCat("container fd ", fd_));
  }
  auto undo_join = [&] {
    if (!already_joined) ops_->GroupUnsetContainer(group_fd);
  };
  const int bits = std::min(s.narrowest_bits, address_bits);

  if (s.info.iommu_type != 0) {
    // The kernel replays the container's mappings into the new group itself.
    if (bits < s.narrowest_bits) {
      s.allocator = BuildAllocator(s.info, bits);
      ForgetHeld(s.table, s.reserved, s.allocator.get());
      s.narrowest_bits = bits;
    }
    s.groups[group] = State::Group{group_fd, !already_joined};
    return absl::OkStatus();
  }

  // The first group: set the IOMMU, read what it offers, apply the table.
  if (ops_->SetIommu(fd_, s.preferred_type) != 0) {
    const int err = errno;
    undo_join();
    return ErrnoStatus(err, "VFIO_SET_IOMMU", absl::StrCat("container fd ", fd_),
                       absl::StrCat("type ", s.preferred_type, ", for ", device));
  }
  absl::StatusOr<VfioContainerInfo> info = internal::ReadIommuInfo(*ops_, fd_, s.preferred_type);
  if (!info.ok()) {
    undo_join();  // the last group out releases the IOMMU
    return info.status();
  }
  // Pending mappings were mapped before the ranges were known: the rules of
  // a caller's IOVA, now with them.
  const DomainCapabilities caps = PlacementCaps(*info, /*set=*/true, fd_);
  for (const auto& [iova, e] : s.table) {
    absl::Status st = CheckIovaPlacement(caps, e.va, iova, e.length, "VFIO map");
    if (!st.ok()) {
      undo_join();
      return absl::Status(st.code(), absl::StrCat("attaching ", device, ": pending mapping ",
                                                  DescribeMapping(e.va, iova, e.length, e.writable),
                                                  " cannot be applied: ", st.message()));
    }
  }
  size_t applied = 0;
  for (const auto& [iova, e] : s.table) {
    absl::Status st = KernelMap(*ops_, fd_, *info, applied, e.va, iova, e.length, e.writable);
    if (!st.ok()) {
      // Undo what was applied (the unset would drop it too; be explicit).
      for (auto undo = s.table.begin(); applied > 0; ++undo, --applied) {
        (void)KernelUnmap(*ops_, fd_, undo->first, undo->second.length);
      }
      undo_join();
      return absl::Status(st.code(), absl::StrCat("attaching ", device, ": replaying mapping ",
                                                  DescribeMapping(e.va, iova, e.length, e.writable),
                                                  ": ", st.message()));
    }
    ++applied;
  }
  s.allocator = BuildAllocator(*info, bits);
  ForgetHeld(s.table, s.reserved, s.allocator.get());
  s.info = *std::move(info);
  s.narrowest_bits = bits;
  s.groups[group] = State::Group{group_fd, !already_joined};
  return absl::OkStatus();
}

absl::Status VfioContainer::DetachGroup(int group_fd, int group) {
  State& s = *state_;
  internal::MutexLock lock(&s.mu);
  auto it = s.groups.find(group);
  if (it == s.groups.end()) {
    return absl::NotFoundError(
        absl::StrCat("VFIO group ", group, " is not attached to container fd ", fd_));
  }
  if (it->second.joined_here && ops_->GroupUnsetContainer(group_fd) != 0) {
    return ErrnoStatus(errno, "VFIO_GROUP_UNSET_CONTAINER", absl::StrCat("VFIO group ", group));
  }
  s.groups.erase(it);
  if (s.groups.empty() && !s.adopted) {
    // The kernel released the IOMMU and dropped its mappings; the table
    // stays, to be replayed by the next attach.
    s.info.iommu_type = 0;
    s.info.dma_avail.reset();
  }
  return absl::OkStatus();
}

static std::unique_ptr<internal::IovaAllocator> BuildAllocator(const VfioContainerInfo& info,
                                                               int bits) {
  internal::IovaAllocator::Options o;
  o.ranges = info.iova_ranges;
  o.address_bits = bits;
  o.page_size = internal::SmallestPage(info.page_sizes);
  absl::StatusOr<std::unique_ptr<internal::IovaAllocator>> a = internal::IovaAllocator::Create(o);
  // Nothing usable in the window: automatic picks fail, IOVA = VA and
  // caller IOVAs still work.
  return a.ok() ? *std::move(a) : nullptr;
}

}  // namespace dmareg
