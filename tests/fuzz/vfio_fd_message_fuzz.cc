// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// libFuzzer target for VFIO fd sharing's wire format and the server's
// request handling (src/vfio/fd_sharing): any bytes may arrive from a peer. Checks,
// beyond "no crash, no sanitizer report":
//   - a request or reply that parses encodes back to the very same bytes;
//   - the handler always produces a reply that parses, marks exactly the
//     requests that do not parse as malformed, and passes an fd only with an
//     OK answer to a container or group request.
#include <cstddef>
#include <cstdint>
#include <span>

#include "vfio/fd_sharing/fd_handler.h"
#include "vfio/fd_sharing/fd_message.h"
#include "vfio/fd_sharing/fd_provider.h"

namespace {

using dmareg::internal::GroupFdAnswer;
using dmareg::internal::VfioFdRequestType;
using dmareg::internal::VfioFdResult;

// Fixed answers, one of each kind; the fds are never used as fds.
class FuzzProvider : public dmareg::internal::VfioFdProvider {
 public:
  absl::StatusOr<int> ContainerFd() override { return 100; }
  absl::StatusOr<int> IommuType() override { return 3; }
  GroupFdAnswer GroupFd(int group) override {
    switch (group % 4) {
      case 0:
        return {GroupFdAnswer::kOk, 200 + group % 7, ""};
      case 1:
        return {GroupFdAnswer::kNoFd, -1, ""};
      case 2:
        return {GroupFdAnswer::kErr, -1, "no such group"};
      default:
        return {GroupFdAnswer::kOk, -1, ""};  // a provider bug: must become ERR
    }
  }
};

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> bytes(data, size);

  absl::StatusOr<dmareg::internal::VfioFdRequest> request = dmareg::internal::ParseRequest(bytes);
  if (request.ok()) {
    absl::StatusOr<dmareg::internal::VfioFdRequestBytes> again =
        dmareg::internal::EncodeRequest(*request);
    Check(again.ok() && std::equal(again->begin(), again->end(), bytes.begin(), bytes.end()));
  }

  absl::StatusOr<dmareg::internal::VfioFdReply> reply = dmareg::internal::ParseReply(bytes);
  if (reply.ok()) {
    absl::StatusOr<dmareg::internal::VfioFdReplyBytes> again =
        dmareg::internal::EncodeReply(*reply);
    Check(again.ok() && std::equal(again->begin(), again->end(), bytes.begin(), bytes.end()));
  }

  FuzzProvider provider;
  const dmareg::internal::FdHandling handling = dmareg::internal::HandleFdRequest(bytes, provider);
  Check(handling.malformed == !request.ok());
  absl::StatusOr<dmareg::internal::VfioFdReply> answer =
      dmareg::internal::ParseReply(handling.reply);
  Check(answer.ok());
  if (handling.fd >= 0) {
    Check(answer->result == VfioFdResult::kOk);
    Check(request.ok() && request->type != VfioFdRequestType::kIommuType);
  }
  if (answer->result == VfioFdResult::kOk && request.ok() &&
      request->type != VfioFdRequestType::kIommuType) {
    Check(handling.fd >= 0);
  }
  return 0;
}
