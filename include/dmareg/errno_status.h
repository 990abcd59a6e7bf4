// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// errno_status.h: errno → absl::Status at the edge where a system call
// failed, naming the call and the device so the message alone says what went
// wrong, with the errno kept beside it. Every dmareg library reports kernel
// errors this way, and a Domain of your own should too: the C API then
// returns the system call's own -errno (ErrnoOf).
//
//   if (ioctl(fd, MY_MAP, &arg) != 0)
//     return dmareg::ErrnoStatus(errno, "MY_MAP", "mydev0", "iova 0x1000");
//   // "MY_MAP on mydev0: Invalid argument (EINVAL): iova 0x1000"

#ifndef DMAREG_ERRNO_STATUS_H_
#define DMAREG_ERRNO_STATUS_H_

#include <optional>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

#pragma GCC visibility push(default)

namespace dmareg {

// The status code that best describes `err` (ENOMEM → ResourceExhausted,
// EOPNOTSUPP → Unimplemented, EINVAL/EFAULT/EBADF → InvalidArgument, ...).
absl::StatusCode ErrnoToCode(int err);

// "<call> on <device>: <strerror> (<ENAME>)[: <detail>]"; never OK (err 0 is
// reported as an Unknown error from a call that gave no reason). The errno
// travels with the status as a payload (ErrnoOf), so callers that must
// tell refusals apart need not read the message.
absl::Status ErrnoStatus(int err, absl::string_view call, absl::string_view device,
                         absl::string_view detail = {});

// The errno an ErrnoStatus carries; empty for any other status (and for
// one whose payload a caller dropped by rebuilding it).
inline constexpr char kErrnoPayload[] = "dmareg/errno";
std::optional<int> ErrnoOf(const absl::Status& s);

// "EFAULT", "EOPNOTSUPP", ... or "errno N".
absl::string_view ErrnoName(int err);

}  // namespace dmareg

#pragma GCC visibility pop

#endif  // DMAREG_ERRNO_STATUS_H_
