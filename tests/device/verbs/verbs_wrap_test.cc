// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// VerbsDomain::Wrap on a real device: the test opens the device and
// allocates the PD with plain libibverbs, as rdma_cm or UCX would; a cache
// over the wrapped PD moves bytes by RDMA WRITE and READ; once dmareg is
// gone the test's own ibv_dealloc_pd and ibv_close_device succeed (so no MR
// was left on the PD, and dmareg closed neither).

#include <infiniband/verbs.h>

#include <cstddef>
#include <memory>
#include <string>

#include "device/verbs/device_env.h"
#include "dmareg/cache.h"
#include "dmareg/verbs/verbs_domain.h"
#include "gtest/gtest.h"
#include "verbs/rc_qp.h"

namespace dmareg::device_test {
namespace {

constexpr size_t kLen = 256 * 1024;

TEST(VerbsWrapTest, ACacheOverTheApplicationsPdMovesBytesAndLeavesThePdFree) {
  const std::string wanted = WantedRdmaDevice();
  int n = 0;
  ibv_device** list = ibv_get_device_list(&n);
  ibv_device* device = nullptr;
  for (int i = 0; list != nullptr && i < n && device == nullptr; ++i) {
    if (wanted.empty() || wanted == ibv_get_device_name(list[i])) device = list[i];
  }
  if (device == nullptr) {
    if (list != nullptr) ibv_free_device_list(list);
    if (InVm()) FAIL() << "DMAREG_IN_VM=1 but no RDMA device " << wanted;
    GTEST_SKIP() << kNoDeviceReason;
  }
  const std::string name = ibv_get_device_name(device);
  ibv_context* context = ibv_open_device(device);
  ibv_free_device_list(list);
  ASSERT_NE(context, nullptr) << "ibv_open_device " << name;
  ibv_pd* pd = ibv_alloc_pd(context);
  ASSERT_NE(pd, nullptr) << "ibv_alloc_pd " << name;

  {
    absl::StatusOr<std::shared_ptr<VerbsDomain>> domain = VerbsDomain::Wrap(pd);
    ASSERT_TRUE(domain.ok()) << domain.status();
    EXPECT_EQ((*domain)->name(), name);
    EXPECT_EQ((*domain)->pd(), pd);
    EXPECT_FALSE((*domain)->owns_pd());
    EXPECT_GT((*domain)->capabilities().max_mappings, 0u);  // probed as Open probes
    auto cache = RegistrationCache::Create(*domain);
    ASSERT_TRUE(cache.ok()) << cache.status();
    absl::StatusOr<rc::RcLoopback> pair = rc::ConnectLoopback(context, pd, name);
    ASSERT_TRUE(pair.ok()) << pair.status();

    Mapping src(kLen), dst(kLen), back(kLen);
    FillPattern(src.data(), kLen, /*seed=*/14);
    auto s = (*cache)->Acquire(src.data(), kLen, Access::kRemoteRead);
    auto d = (*cache)->Acquire(dst.data(), kLen, Access::kRemoteWrite);
    auto b = (*cache)->Acquire(back.data(), kLen, Access::kLocalWrite);
    ASSERT_TRUE(s.ok() && d.ok() && b.ok()) << s.status() << d.status() << b.status();
    ASSERT_TRUE(
        pair->a->Write(src.data(), kLen, s->lkey(), d->IovaFor(dst.data()), d->rkey()).ok());
    EXPECT_EQ(FindMismatch(dst.data(), kLen, 14), -1);
    ASSERT_TRUE(
        pair->b->Read(back.data(), kLen, b->lkey(), s->IovaFor(src.data()), s->rkey()).ok());
    EXPECT_EQ(FindMismatch(back.data(), kLen, 14), -1);
    EXPECT_EQ((*domain)->live_mrs(), 3);
    *pair = {};  // the test's QPs go before its PD
    // The handles, the cache and the domain go here.
  }
  // dmareg is gone: every MR it made is deregistered, the PD and the
  // context are still the test's, and freeing them succeeds.
  EXPECT_EQ(ibv_dealloc_pd(pd), 0) << "ibv_dealloc_pd " << name << ": an MR was left";
  EXPECT_EQ(ibv_close_device(context), 0) << "ibv_close_device " << name;
}

}  // namespace
}  // namespace dmareg::device_test
