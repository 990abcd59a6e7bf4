// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// memlock.h: the limit the kernel counts pinned memory against. An RDMA MR
// (ib_umem, pinned_vm) and a VFIO DMA mapping (type1, locked_vm) pin their
// pages and charge them to the process, checked against RLIMIT_MEMLOCK
// unless it has CAP_IPC_LOCK; containers often give 8 MiB. When the kernel
// refuses a registration for it (ENOMEM), the backends name the limit with
// MemlockNote() and the cache evicts what is unreferenced and retries once.
//
//   dmareg::MemlockLimit m = dmareg::ReadMemlockLimit();
//   if (m.limited() && *m.soft < (64 << 20))
//     std::puts(dmareg::MemlockNote(m).c_str());
//   // "RLIMIT_MEMLOCK soft 8 MiB, hard 8 MiB; now 2 MiB pinned (VmPin), 0 bytes
//   //  locked (VmLck)"

#ifndef DMAREG_MEMLOCK_H_
#define DMAREG_MEMLOCK_H_

#include <cstdint>
#include <optional>
#include <string>

#pragma GCC visibility push(default)

namespace dmareg {

struct MemlockLimit {
  std::optional<uint64_t> soft;  // bytes; empty: unlimited (or unreadable)
  std::optional<uint64_t> hard;
  bool cap_ipc_lock = false;  // the process is not limited at all
  // Bytes charged now, where the kernel says: pinned_vm (VmPin; RDMA MRs)
  // and locked_vm (VmLck; mlock and VFIO type1 mappings), each checked
  // against the soft limit on its own.
  std::optional<uint64_t> pinned;
  std::optional<uint64_t> locked;
  // Whether pinning is limited at all.
  bool limited() const { return soft.has_value() && !cap_ipc_lock; }
};

// getrlimit(RLIMIT_MEMLOCK), and CapEff, VmPin and VmLck from /proc/self/status.
MemlockLimit ReadMemlockLimit();

// "RLIMIT_MEMLOCK soft 8 MiB, hard 8 MiB; now 2 MiB pinned (VmPin), 0 bytes
// locked (VmLck)", "... (CAP_IPC_LOCK: not limited) ..." or
// "RLIMIT_MEMLOCK unlimited ...".
std::string MemlockNote(const MemlockLimit& limit);
inline std::string MemlockNote() { return MemlockNote(ReadMemlockLimit()); }

// Bytes as the notes write them: "8 MiB", "12 KiB", "4097 bytes".
std::string BytesText(uint64_t bytes);

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_MEMLOCK_H_
