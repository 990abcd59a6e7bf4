// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// Runs verbs_capi_access_test.c over a VerbsDomain on a fake rxe, and checks
// what reached the verbs call: the IBV_ACCESS_* bits the C caller named.

#include <infiniband/verbs.h>

#include <memory>

#include "common/test_memory.h"
#include "dmareg/c/dmareg.h"
#include "dmareg/c_bridge.h"
#include "dmareg/testing/fake_rxe.h"
#include "dmareg/verbs/verbs_domain.h"
#include "gtest/gtest.h"

extern "C" {
int verbs_capi_acquire_ibv_remote_write(struct dmareg_domain* dom, void* buf, size_t len,
                                        struct dmareg_cache** cache, struct dmareg_reg** reg);
int verbs_capi_rights_as_named(struct dmareg_cache* cache, void* buf, size_t len);
}

namespace dmareg {
namespace {

TEST(VerbsCApiAccess, LibibverbsConstantsReachTheVerbsCallUnchanged) {
  testing::FakeRxe rxe;
  {
    constexpr size_t kLen = 4 * 4096;
    test::Mapping buf(kLen);
    ASSERT_TRUE(buf.ok());
    auto domain = rxe.Open();
    ASSERT_TRUE(domain.ok()) << domain.status();
    dmareg_domain* dom = nullptr;
    ASSERT_EQ(NewCDomain(*domain, &dom), 0);
    dmareg_cache* cache = nullptr;
    dmareg_reg* reg = nullptr;
    EXPECT_EQ(verbs_capi_acquire_ibv_remote_write(dom, buf.data(), kLen, &cache, &reg), 0)
        << "verbs_capi_access_test.c line; " << dmareg_last_error();
    EXPECT_EQ(rxe.ops()->last_reg().access,
              unsigned{IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE});
    EXPECT_EQ(rxe.ops()->last_reg().access & IBV_ACCESS_REMOTE_READ, 0u);
    if (cache != nullptr) {
      EXPECT_EQ(verbs_capi_rights_as_named(cache, buf.data(), kLen), 0)
          << "verbs_capi_access_test.c line; " << dmareg_last_error();
    }
    dmareg_release(reg);
    dmareg_cache_destroy(cache);
    dmareg_domain_close(dom);
  }
  EXPECT_TRUE(rxe.CheckReleased().ok()) << rxe.CheckReleased();
}

}  // namespace
}  // namespace dmareg
