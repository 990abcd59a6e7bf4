// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// VfioContainer's lifecycle: opening or adopting a container, what it says
// of itself (the IOMMU info, the table's and the groups' listings, the
// allocator's window) and the groups that attach and detach. The mapping
// table itself is container_mappings.cc.
//
// One allocator, over the ranges clipped to the narrowest DMA mask of any
// device that has joined. Every device in a container sees every mapping,
// so an automatic pick must be reachable by all of them: the narrowest mask
// is the only window that is. (One allocator per mask would let a wide
// device use more space, at the price of mirroring every reservation into
// every allocator; edu-class devices with a 28-bit mask have 256 MiB, and a
// wide device still gets IOVA = VA above it.) The window only narrows: a
// narrow device that detaches usually comes back. The allocator is rebuilt
// empty whenever the window or the ranges change (AttachGroup), and the
// table's entries re-enter it lazily, as container_mappings.cc describes.

#include <fcntl.h>
#include <linux/vfio.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
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
using internal::KernelMap;
using internal::KernelUnmap;
using internal::PartsInside;
using internal::PlacementCaps;

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

// An empty allocator over the window (ranges below `bits`); nullptr when no
// usable space is left. The table's entries enter it through PickFree.
std::unique_ptr<internal::IovaAllocator> BuildAllocator(const VfioContainerInfo& info, int bits) {
  internal::IovaAllocator::Options o;
  o.ranges = info.iova_ranges;
  o.address_bits = bits;
  o.page_size = internal::SmallestPage(info.page_sizes);
  absl::StatusOr<std::unique_ptr<internal::IovaAllocator>> a = internal::IovaAllocator::Create(o);
  // Nothing usable in the window: automatic picks fail, IOVA = VA and
  // caller IOVAs still work.
  return a.ok() ? *std::move(a) : nullptr;
}

// Entries forget what they held in a replaced allocator; reserved windows
// are reserved in it again (one the new window cannot hold stays out of it,
// still avoided by IOVA = VA picks).
void ForgetHeld(std::map<uint64_t, Entry>& table, const std::map<uint64_t, uint64_t>& reserved,
                internal::IovaAllocator* allocator) {
  for (auto& [iova, e] : table) e.held.clear();
  if (allocator == nullptr) return;
  for (const auto& [begin, end] : reserved) {
    for (const Range& part : PartsInside(*allocator, *Range::FromBounds(begin, end))) {
      (void)allocator->Reserve(part);
    }
  }
}

}  // namespace

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

}  // namespace dmareg
