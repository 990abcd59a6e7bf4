// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/errno_status.h"

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace dmareg {

absl::StatusCode ErrnoToCode(int err) {
  switch (err) {
    case ENOMEM:
    case ENOSPC:
    case EMFILE:
    case ENFILE:
    case E2BIG:
      return absl::StatusCode::kResourceExhausted;
    case EOPNOTSUPP:
    case ENOSYS:
    case ENOTTY:
      return absl::StatusCode::kUnimplemented;
    case EINVAL:
    case EFAULT:
    case EBADF:
    case ERANGE:
    case EOVERFLOW:
      return absl::StatusCode::kInvalidArgument;
    case EPERM:
    case EACCES:
      return absl::StatusCode::kPermissionDenied;
    case ENOENT:
      return absl::StatusCode::kNotFound;
    case EEXIST:
      return absl::StatusCode::kAlreadyExists;
    case ENODEV:
    case ENXIO:
    case EIO:
    case EAGAIN:
    case EBUSY:
    case ENETDOWN:
      return absl::StatusCode::kUnavailable;
    case ETIMEDOUT:
      return absl::StatusCode::kDeadlineExceeded;
    default:
      return absl::StatusCode::kUnknown;
  }
}

absl::string_view ErrnoName(int err) {
  switch (err) {
#define DMAREG_ERRNO_CASE(e) \
  case e:                    \
    return #e;
    DMAREG_ERRNO_CASE(EPERM)
    DMAREG_ERRNO_CASE(ENOENT)
    DMAREG_ERRNO_CASE(EIO)
    DMAREG_ERRNO_CASE(ENXIO)
    DMAREG_ERRNO_CASE(E2BIG)
    DMAREG_ERRNO_CASE(EBADF)
    DMAREG_ERRNO_CASE(EAGAIN)
    DMAREG_ERRNO_CASE(ENOMEM)
    DMAREG_ERRNO_CASE(EACCES)
    DMAREG_ERRNO_CASE(EFAULT)
    DMAREG_ERRNO_CASE(EBUSY)
    DMAREG_ERRNO_CASE(EEXIST)
    DMAREG_ERRNO_CASE(ENODEV)
    DMAREG_ERRNO_CASE(EINVAL)
    DMAREG_ERRNO_CASE(ENFILE)
    DMAREG_ERRNO_CASE(EMFILE)
    DMAREG_ERRNO_CASE(ENOTTY)
    DMAREG_ERRNO_CASE(ENOSPC)
    DMAREG_ERRNO_CASE(ERANGE)
    DMAREG_ERRNO_CASE(ENOSYS)
    DMAREG_ERRNO_CASE(EOVERFLOW)
    DMAREG_ERRNO_CASE(EOPNOTSUPP)
    DMAREG_ERRNO_CASE(ENETDOWN)
    DMAREG_ERRNO_CASE(ETIMEDOUT)
#undef DMAREG_ERRNO_CASE
    default:
      return "errno";
  }
}

absl::Status ErrnoStatus(int err, absl::string_view call, absl::string_view device,
                         absl::string_view detail) {
  std::string msg = absl::StrCat(call, " on ", device.empty() ? "?" : device, ": ");
  if (err == 0) {
    absl::StrAppend(&msg, "failed without a reason (errno 0)");
  } else {
    char buf[128];
    // GNU strerror_r returns the message pointer (maybe not buf).
    const char* text = strerror_r(err, buf, sizeof(buf));
    absl::string_view name = ErrnoName(err);
    if (name == "errno") {
      absl::StrAppend(&msg, text, " (errno ", err, ")");
    } else {
      absl::StrAppend(&msg, text, " (", name, ")");
    }
  }
  if (!detail.empty()) absl::StrAppend(&msg, ": ", detail);
  absl::Status s(err == 0 ? absl::StatusCode::kUnknown : ErrnoToCode(err), msg);
  if (err != 0) s.SetPayload(kErrnoPayload, absl::Cord(absl::StrCat(err)));
  return s;
}

std::optional<int> ErrnoOf(const absl::Status& s) {
  const auto p = s.GetPayload(kErrnoPayload);  // absl::optional<absl::Cord>
  int err = 0;
  if (!p || !absl::SimpleAtoi(std::string(*p), &err)) return std::nullopt;
  return err;
}

}  // namespace dmareg
