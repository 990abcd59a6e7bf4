// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "dmareg/verbs/verbs_ops.h"

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dmareg/verbs/verbs_domain.h"

namespace dmareg::testing {

// The friend VerbsDomain names: the one way from this library to its
// constructors over a given VerbsOps.
class VerbsDomainAccess {
 public:
  static absl::StatusOr<std::shared_ptr<VerbsDomain>> Open(std::shared_ptr<VerbsOps> ops,
                                                           std::string_view device_name,
                                                           VerbsDomainOptions options) {
    return VerbsDomain::OpenWith(std::move(ops), device_name, options);
  }
  static absl::StatusOr<std::shared_ptr<VerbsDomain>> Wrap(std::shared_ptr<VerbsOps> ops,
                                                           ibv_pd* pd, VerbsDomainOptions options) {
    return VerbsDomain::WrapWith(std::move(ops), pd, options);
  }
  static absl::StatusOr<std::vector<std::string>> ListDevices(std::shared_ptr<VerbsOps> ops) {
    return VerbsDomain::ListDevicesWith(std::move(ops));
  }
};

absl::StatusOr<std::shared_ptr<VerbsDomain>> OpenVerbsDomain(std::shared_ptr<VerbsOps> ops,
                                                             std::string_view device_name,
                                                             VerbsDomainOptions options) {
  return VerbsDomainAccess::Open(std::move(ops), device_name, options);
}

absl::StatusOr<std::shared_ptr<VerbsDomain>> WrapVerbsDomain(std::shared_ptr<VerbsOps> ops,
                                                             ibv_pd* pd,
                                                             VerbsDomainOptions options) {
  return VerbsDomainAccess::Wrap(std::move(ops), pd, options);
}

absl::StatusOr<std::vector<std::string>> ListVerbsDevices(std::shared_ptr<VerbsOps> ops) {
  return VerbsDomainAccess::ListDevices(std::move(ops));
}

}  // namespace dmareg::testing
