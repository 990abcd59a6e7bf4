// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// VerbsDomain over a fake VerbsOps: device selection, probing, access-flag
// mapping, and every failing verbs call turned into a status that names the
// call, the device and the errno, with nothing leaked.

#include "dmareg/verbs/verbs_domain.h"

#include <infiniband/verbs.h>

#include <cerrno>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/errno_cases.h"
#include "dmareg/testing/fake_verbs_ops.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dmareg {
namespace {

using ::dmareg::testing::FakeVerbsOps;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Call = FakeVerbsOps::Call;

// A page-aligned span the fake never touches (it only records the address).
void* const kAddr = reinterpret_cast<void*>(uintptr_t{0x7f0000200000});

class VerbsDomainTest : public ::testing::Test {
 protected:
  std::shared_ptr<VerbsDomain> OpenOk(std::string_view name = "rxe0",
                                      VerbsDomainOptions options = {}) {
    options.ops = ops_;
    auto domain = VerbsDomain::Open(name, options);
    EXPECT_TRUE(domain.ok()) << domain.status();
    return domain.ok() ? *domain : nullptr;
  }
  void ExpectNothingLeft() {
    EXPECT_EQ(ops_->live_contexts(), 0);
    EXPECT_EQ(ops_->live_pds(), 0);
    EXPECT_EQ(ops_->live_mrs(), 0);
    EXPECT_EQ(ops_->mrs_created(), ops_->mrs_destroyed());
  }

  std::shared_ptr<FakeVerbsOps> ops_ = std::make_shared<FakeVerbsOps>();
};

TEST_F(VerbsDomainTest, ListsDevices) {
  ops_->AddDevice("rxe0");
  ops_->AddDevice("mlx5_0");
  auto names = VerbsDomain::ListDevices({.ops = ops_});
  ASSERT_TRUE(names.ok()) << names.status();
  EXPECT_THAT(*names, ElementsAre("rxe0", "mlx5_0"));
}

TEST_F(VerbsDomainTest, NoKernelSupportMeansNoDevices) {
  ops_->FailNext(Call::kGetDeviceList, ENOSYS);
  auto names = VerbsDomain::ListDevices({.ops = ops_});
  ASSERT_TRUE(names.ok()) << names.status();
  EXPECT_TRUE(names->empty());
}

TEST_F(VerbsDomainTest, OpenWithNoDeviceIsNotFound) {
  auto domain = VerbsDomain::Open("", {.ops = ops_});
  EXPECT_EQ(domain.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(domain.status().message(), HasSubstr("no RDMA device"));
}

TEST_F(VerbsDomainTest, OpensFirstOrNamedDevice) {
  ops_->AddDevice("rxe0");
  ops_->AddDevice("mlx5_0");
  {
    auto first = OpenOk("");
    ASSERT_NE(first, nullptr);
    EXPECT_EQ(first->name(), "rxe0");
    EXPECT_EQ(first->capabilities().device_name, "rxe0");
    EXPECT_NE(first->context(), nullptr);
    EXPECT_NE(first->pd(), nullptr);
    auto named = OpenOk("mlx5_0");
    ASSERT_NE(named, nullptr);
    EXPECT_EQ(named->name(), "mlx5_0");
    EXPECT_EQ(ops_->live_contexts(), 2);
    EXPECT_EQ(ops_->live_pds(), 2);
  }
  ExpectNothingLeft();
}

TEST_F(VerbsDomainTest, UnknownNameListsThePresentDevices) {
  ops_->AddDevice("rxe0");
  auto domain = VerbsDomain::Open("mlx5_9", {.ops = ops_});
  EXPECT_EQ(domain.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(domain.status().message(), AllOf(HasSubstr("mlx5_9"), HasSubstr("rxe0")));
}

TEST_F(VerbsDomainTest, OpenFailuresNameCallDeviceErrnoAndLeakNothing) {
  ops_->AddDevice("rxe0");
  struct Case {
    Call call;
    int err;
    const char* name;
    const char* errno_name;
    absl::StatusCode code;
  } cases[] = {
      {Call::kOpenDevice, ENODEV, "ibv_open_device", "ENODEV", absl::StatusCode::kUnavailable},
      {Call::kAllocPd, ENOMEM, "ibv_alloc_pd", "ENOMEM", absl::StatusCode::kResourceExhausted},
      {Call::kQueryDeviceEx, EOPNOTSUPP, "ibv_query_device_ex", "EOPNOTSUPP",
       absl::StatusCode::kUnimplemented},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    ops_->FailNext(c.call, c.err);
    auto domain = VerbsDomain::Open("rxe0", {.ops = ops_});
    ASSERT_FALSE(domain.ok());
    EXPECT_EQ(domain.status().code(), c.code);
    EXPECT_THAT(domain.status().message(),
                AllOf(HasSubstr(c.name), HasSubstr("rxe0"), HasSubstr(c.errno_name)));
    ExpectNothingLeft();
  }
}

TEST_F(VerbsDomainTest, ProbesDmaBufSupport) {
  auto no = FakeVerbsOps::RxeLike("rxe0");
  no.dmabuf_probe_errno = EOPNOTSUPP;
  auto yes = FakeVerbsOps::RxeLike("mlx5_0");
  yes.dmabuf_probe_errno = EBADF;
  ops_->AddDevice(no);
  ops_->AddDevice(yes);

  auto rxe = OpenOk("rxe0");
  auto mlx = OpenOk("mlx5_0");
  ASSERT_NE(rxe, nullptr);
  ASSERT_NE(mlx, nullptr);
  EXPECT_FALSE(rxe->capabilities().dmabuf_import);
  EXPECT_EQ(rxe->device_info().dmabuf_probe_errno, EOPNOTSUPP);
  EXPECT_TRUE(mlx->capabilities().dmabuf_import);
  EXPECT_EQ(mlx->device_info().dmabuf_probe_errno, EBADF);
  // The probe registers nothing.
  EXPECT_EQ(ops_->mrs_created(), 0);
}

TEST_F(VerbsDomainTest, ProbesOdpCaps) {
  auto rc = FakeVerbsOps::RxeLike("odp_rc");
  rc.attr.odp_caps.general_caps = IBV_ODP_SUPPORT;
  rc.attr.odp_caps.per_transport_caps.rc_odp_caps = IBV_ODP_SUPPORT_WRITE | IBV_ODP_SUPPORT_READ;
  auto no_general = FakeVerbsOps::RxeLike("odp_no_general");
  no_general.attr.odp_caps.per_transport_caps.rc_odp_caps = IBV_ODP_SUPPORT_SEND;
  auto ud_only = FakeVerbsOps::RxeLike("odp_ud_only");
  ud_only.attr.odp_caps.general_caps = IBV_ODP_SUPPORT;
  ud_only.attr.odp_caps.per_transport_caps.ud_odp_caps = IBV_ODP_SUPPORT_SEND;
  ops_->AddDevice(rc);
  ops_->AddDevice(no_general);
  ops_->AddDevice(ud_only);
  ops_->AddDevice("rxe0");

  auto d = OpenOk("odp_rc");
  ASSERT_NE(d, nullptr);
  EXPECT_TRUE(d->capabilities().on_demand_paging);
  EXPECT_EQ(d->device_info().odp_rc_caps, uint32_t{IBV_ODP_SUPPORT_WRITE | IBV_ODP_SUPPORT_READ});
  EXPECT_EQ(d->device_info().odp_general_caps, uint64_t{IBV_ODP_SUPPORT});

  d = OpenOk("odp_no_general");
  ASSERT_NE(d, nullptr);
  EXPECT_FALSE(d->capabilities().on_demand_paging);
  EXPECT_EQ(d->device_info().odp_rc_caps, uint32_t{IBV_ODP_SUPPORT_SEND});

  d = OpenOk("odp_ud_only");
  ASSERT_NE(d, nullptr);
  EXPECT_FALSE(d->capabilities().on_demand_paging);
  EXPECT_EQ(d->device_info().odp_ud_caps, uint32_t{IBV_ODP_SUPPORT_SEND});

  d = OpenOk("rxe0");
  ASSERT_NE(d, nullptr);
  EXPECT_FALSE(d->capabilities().on_demand_paging);
  EXPECT_EQ(d->device_info().odp_rc_caps, 0u);
}

TEST_F(VerbsDomainTest, ProbesLimitsAndForkState) {
  auto spec = FakeVerbsOps::RxeLike("rxe0");
  spec.attr.orig_attr.max_mr_size = uint64_t{1} << 40;
  spec.fork_status = IBV_FORK_UNNEEDED;
  ops_->AddDevice(spec);
  auto d = OpenOk();
  ASSERT_NE(d, nullptr);
  const DomainCapabilities& caps = d->capabilities();
  EXPECT_EQ(caps.device_name, "rxe0");
  EXPECT_EQ(caps.kind, DeviceKind::kRdma);
  EXPECT_EQ(DeviceKindName(caps.kind), "rdma");
  EXPECT_EQ(caps.max_mapping_bytes, uint64_t{1} << 40);
  EXPECT_EQ(caps.page_sizes, 0xfffff000u);
  EXPECT_EQ(caps.max_mappings, 524287u);
  EXPECT_TRUE(caps.iova_ranges.empty());
  EXPECT_EQ(caps.dma_address_bits, 64);
  EXPECT_TRUE(caps.caller_iova);
  EXPECT_TRUE(caps.byte_granular);
  EXPECT_FALSE(caps.one_iova_space);
  EXPECT_EQ(d->device_info().max_mr_size, uint64_t{1} << 40);
  EXPECT_EQ(d->device_info().page_size_cap, 0xfffff000u);
  EXPECT_TRUE(d->device_info().fork_protected());
  EXPECT_EQ(d->device_info().fork_status, VerbsDeviceInfo::ForkStatus::kUnneeded);
  EXPECT_EQ(d->device_info().max_mr, 524287u);
  EXPECT_EQ(d->device_info().fw_ver, "6.1.0");
}

// dmareg::Access is IBV_ACCESS_* bit for bit, so a caller may pass
// libibverbs' constants as they are.
static_assert(static_cast<unsigned>(Access::kLocalWrite) == IBV_ACCESS_LOCAL_WRITE);
static_assert(static_cast<unsigned>(Access::kRemoteWrite) == IBV_ACCESS_REMOTE_WRITE);
static_assert(static_cast<unsigned>(Access::kRemoteRead) == IBV_ACCESS_REMOTE_READ);
static_assert(static_cast<unsigned>(Access::kRemoteAtomic) == IBV_ACCESS_REMOTE_ATOMIC);
static_assert(static_cast<unsigned>(Access::kRelaxedOrdering) == IBV_ACCESS_RELAXED_ORDERING);

TEST(VerbsAccessTest, LibibverbsConstantsMeanTheSameRights) {
  const AccessFlags write = AccessFlags::FromBits(IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
  EXPECT_TRUE(ValidateAccess(write).ok());
  EXPECT_TRUE(write.Has(Access::kRemoteWrite));
  EXPECT_FALSE(write.Has(Access::kRemoteRead));
  EXPECT_EQ(AccessToString(write), "LOCAL_WRITE|REMOTE_WRITE");
  EXPECT_EQ(AccessToString(AccessFlags::FromBits(IBV_ACCESS_REMOTE_READ)), "REMOTE_READ");
  // Paging is not an access bit.
  EXPECT_EQ(ValidateAccess(AccessFlags::FromBits(IBV_ACCESS_ON_DEMAND)).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(VerbsAccessTest, MapsEveryBitToItself) {
  for (const Access a : {Access::kLocalWrite, Access::kRemoteRead, Access::kRemoteAtomic,
                         Access::kRemoteWrite, Access::kRelaxedOrdering}) {
    EXPECT_EQ(ToIbvAccessFlags(a) & static_cast<unsigned>(a), static_cast<unsigned>(a));
  }
  EXPECT_EQ(ToIbvAccessFlags({}), 0u);
  EXPECT_EQ(ToIbvAccessFlags(Access::kLocalWrite), unsigned{IBV_ACCESS_LOCAL_WRITE});
  EXPECT_EQ(ToIbvAccessFlags(Access::kRemoteRead), unsigned{IBV_ACCESS_REMOTE_READ});
  // Remote write and atomic need local write (verbs rejects them without).
  EXPECT_EQ(ToIbvAccessFlags(Access::kRemoteWrite),
            unsigned{IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_LOCAL_WRITE});
  EXPECT_EQ(ToIbvAccessFlags(Access::kRemoteAtomic),
            unsigned{IBV_ACCESS_REMOTE_ATOMIC | IBV_ACCESS_LOCAL_WRITE});
  EXPECT_EQ(ToIbvAccessFlags(kAccessRights),
            unsigned{IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE |
                     IBV_ACCESS_REMOTE_ATOMIC});
}

TEST(VerbsAccessTest, RelaxedOrderingAndOnDemandOnlyWhenAsked) {
  EXPECT_EQ(ToIbvAccessFlags(kAccessRights) & IBV_ACCESS_RELAXED_ORDERING, 0u);
  EXPECT_EQ(ToIbvAccessFlags(kAccessRights) & IBV_ACCESS_ON_DEMAND, 0u);
  EXPECT_EQ(ToIbvAccessFlags(Access::kRelaxedOrdering), unsigned{IBV_ACCESS_RELAXED_ORDERING});
  EXPECT_EQ(ToIbvAccessFlags(Access::kRemoteRead, /*on_demand=*/true),
            unsigned{IBV_ACCESS_REMOTE_READ | IBV_ACCESS_ON_DEMAND});
}

TEST_F(VerbsDomainTest, RegisterHostPassesIovaEqualsVaAndMappedAccess) {
  ops_->AddDevice("rxe0");
  auto d = OpenOk();
  ASSERT_NE(d, nullptr);
  const AccessFlags access = Access::kRemoteWrite | Access::kRelaxedOrdering;
  auto m = d->RegisterHost(HostMemory{kAddr, 8192}, access);
  ASSERT_TRUE(m.ok()) << m.status();
  const FakeVerbsOps::LastReg last = ops_->last_reg();
  EXPECT_EQ(last.addr, kAddr);
  EXPECT_EQ(last.length, 8192u);
  EXPECT_EQ(last.iova, reinterpret_cast<uintptr_t>(kAddr));
  EXPECT_EQ(last.access, ToIbvAccessFlags(access));
  EXPECT_EQ(m->iova, reinterpret_cast<uintptr_t>(kAddr));
  auto* mr = reinterpret_cast<ibv_mr*>(static_cast<uintptr_t>(m->handle));
  ASSERT_NE(mr, nullptr);
  EXPECT_EQ(m->lkey, mr->lkey);
  EXPECT_EQ(m->rkey, mr->rkey);
  EXPECT_EQ(d->live_mrs(), 1);
  ASSERT_TRUE(d->Deregister(*m).ok());
  EXPECT_EQ(d->live_mrs(), 0);
  EXPECT_EQ(d->total_registrations(), 1);
  EXPECT_EQ(d->total_deregistrations(), 1);
}

TEST_F(VerbsDomainTest, RegisterHostHonoursTheCallersIova) {
  ops_->AddDevice("rxe0");
  auto d = OpenOk();
  ASSERT_NE(d, nullptr);
  constexpr uint64_t kIova = 0x7000'0000'0000;
  auto m = d->RegisterHost(HostMemory{kAddr, 8192, kIova}, Access::kLocalWrite);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(ops_->last_reg().addr, kAddr);
  EXPECT_EQ(ops_->last_reg().iova, kIova);
  EXPECT_EQ(m->iova, kIova);
  EXPECT_EQ(m->length, 8192u);
  ASSERT_TRUE(d->Deregister(*m).ok());

  ops_->FailNext(Call::kRegMr, EINVAL);
  m = d->RegisterHost(HostMemory{kAddr, 4096, kIova}, Access::kLocalWrite);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(m.status().message(), HasSubstr("at IOVA 0x700000000000"));
  EXPECT_EQ(d->live_mrs(), 0);
}

TEST_F(VerbsDomainTest, CallersIovaObeysThePlacementRulesBeforeTheDriverIsAsked) {
  auto spec = FakeVerbsOps::RxeLike("mlx5_0");
  spec.dmabuf_probe_errno = EBADF;
  ops_->AddDevice(spec);
  auto d = OpenOk("mlx5_0");
  ASSERT_NE(d, nullptr);
  // Any byte range, as long as VA and IOVA agree within the 4 KiB page.
  const char* const base = static_cast<const char*>(kAddr);
  auto m = d->RegisterHost(HostMemory{base + 100, 10, 0x9000'0000 + 100}, Access::kLocalWrite);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->iova, 0x9000'0000u + 100);
  ASSERT_TRUE(d->Deregister(*m).ok());
  const int calls = ops_->calls(Call::kRegMr);
  const int dmabuf_calls = ops_->calls(Call::kRegDmaBufMr);
  struct Case {
    const char* what;
    uint64_t iova;
    size_t length;
    const char* message;
  } cases[] = {
      {"page offsets differ", 0x9000'0000 + 8, 4096, "offset within"},
      {"IOVA wraps", ~uint64_t{0} - 100, 4096, "IOVA range wraps"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    auto host = d->RegisterHost(HostMemory{kAddr, c.length, c.iova}, Access::kLocalWrite);
    EXPECT_EQ(host.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(host.status().message(),
                AllOf(HasSubstr("ibv_reg_mr_iova2 on mlx5_0"), HasSubstr(c.message)));
    auto dmabuf = d->RegisterDmaBuf(DmaBufMemory{.fd = 9, .length = c.length, .iova = c.iova},
                                    Access::kLocalWrite);
    EXPECT_EQ(dmabuf.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(dmabuf.status().message(),
                AllOf(HasSubstr("ibv_reg_dmabuf_mr on mlx5_0"), HasSubstr(c.message)));
  }
  EXPECT_EQ(ops_->calls(Call::kRegMr), calls);
  EXPECT_EQ(ops_->calls(Call::kRegDmaBufMr), dmabuf_calls);
  EXPECT_EQ(d->live_mrs(), 0);
}

TEST_F(VerbsDomainTest, OnDemandPagingAddsTheFlagAndExplainsFailure) {
  ops_->AddDevice("rxe0");
  auto d = OpenOk("rxe0");
  ASSERT_NE(d, nullptr);
  ops_->FailNext(Call::kRegMr, EINVAL);
  auto m = d->RegisterHost(HostMemory{kAddr, 4096}, Access::kLocalWrite, Paging::kOnDemand);
  EXPECT_EQ(ops_->last_reg().access, unsigned{IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_ON_DEMAND});
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m.status().message(),
              AllOf(HasSubstr("ibv_reg_mr_iova2"), HasSubstr("rxe0"), HasSubstr("EINVAL"),
                    HasSubstr("IBV_ACCESS_ON_DEMAND"), HasSubstr("no ODP support")));
}

TEST_F(VerbsDomainTest, RegistrationErrnosBecomeStatusesNamingCallDeviceErrno) {
  ops_->AddDevice("rxe0");
  {
    auto d = OpenOk();
    ASSERT_NE(d, nullptr);
    for (const test::ErrnoCase& c : test::kRegistrationErrnos) {
      SCOPED_TRACE(c.name);
      ops_->FailNext(Call::kRegMr, c.err);
      auto m = d->RegisterHost(HostMemory{kAddr, 4096}, Access::kLocalWrite);
      ASSERT_FALSE(m.ok());
      EXPECT_EQ(m.status().code(), c.code);
      EXPECT_THAT(m.status().message(), AllOf(HasSubstr("ibv_reg_mr_iova2 on rxe0"),
                                              HasSubstr(c.name), HasSubstr("LOCAL_WRITE")));
      EXPECT_EQ(d->live_mrs(), 0);
    }
    // A later registration still works and is undone.
    auto m = d->RegisterHost(HostMemory{kAddr, 4096}, Access::kLocalWrite);
    ASSERT_TRUE(m.ok()) << m.status();
    ASSERT_TRUE(d->Deregister(*m).ok());
  }
  ExpectNothingLeft();
  EXPECT_EQ(ops_->mrs_created(), 1);
}

TEST_F(VerbsDomainTest, LengthAboveMaxMrSizeIsRefusedWithoutCallingTheDriver) {
  auto spec = FakeVerbsOps::RxeLike("rxe0");
  spec.attr.orig_attr.max_mr_size = 1 << 20;
  ops_->AddDevice(spec);
  auto d = OpenOk();
  ASSERT_NE(d, nullptr);
  auto m = d->RegisterHost(HostMemory{kAddr, 2 << 20}, Access::kLocalWrite);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m.status().message(), AllOf(HasSubstr("rxe0"), HasSubstr("max_mr_size")));
  EXPECT_EQ(ops_->calls(Call::kRegMr), 0);
}

TEST_F(VerbsDomainTest, DmaBufOnDeviceWithoutSupportIsUnimplementedWithoutACall) {
  ops_->AddDevice("rxe0");
  auto d = OpenOk();
  ASSERT_NE(d, nullptr);
  const int probe_calls = ops_->calls(Call::kRegDmaBufMr);
  auto m =
      d->RegisterDmaBuf(DmaBufMemory{.fd = 7, .offset = 0, .length = 4096}, Access::kLocalWrite);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(m.status().message(), AllOf(HasSubstr("ibv_reg_dmabuf_mr on rxe0"),
                                          HasSubstr("EOPNOTSUPP"), HasSubstr("dma-buf")));
  EXPECT_EQ(ops_->calls(Call::kRegDmaBufMr), probe_calls);
}

TEST_F(VerbsDomainTest, DmaBufRegistrationPassesOffsetIovaAndFd) {
  auto spec = FakeVerbsOps::RxeLike("mlx5_0");
  spec.dmabuf_probe_errno = EBADF;
  ops_->AddDevice(spec);
  {
    auto d = OpenOk("mlx5_0");
    ASSERT_NE(d, nullptr);
    auto m = d->RegisterDmaBuf(DmaBufMemory{.fd = 9, .offset = 0x2000, .length = 0x3000},
                               Access::kRemoteRead);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(ops_->last_reg().fd, 9);
    EXPECT_EQ(ops_->last_reg().offset, 0x2000u);
    EXPECT_EQ(ops_->last_reg().iova, 0x2000u);  // defaults to the offset
    EXPECT_EQ(ops_->last_reg().access, unsigned{IBV_ACCESS_REMOTE_READ});
    EXPECT_EQ(m->iova, 0x2000u);
    ASSERT_TRUE(d->Deregister(*m).ok());

    m = d->RegisterDmaBuf(
        DmaBufMemory{.fd = 9, .offset = 0x2000, .length = 0x1000, .iova = 0x10000000},
        Access::kLocalWrite);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(ops_->last_reg().iova, 0x10000000u);
    ASSERT_TRUE(d->Deregister(*m).ok());

    ops_->FailNext(Call::kRegDmaBufMr, EBADF);
    m = d->RegisterDmaBuf(DmaBufMemory{.fd = 99, .offset = 0, .length = 4096}, Access::kLocalWrite);
    ASSERT_FALSE(m.ok());
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(m.status().message(), AllOf(HasSubstr("ibv_reg_dmabuf_mr on mlx5_0"),
                                            HasSubstr("EBADF"), HasSubstr("fd 99")));
  }
  ExpectNothingLeft();
}

TEST_F(VerbsDomainTest, DeregisterFailureNamesTheCallAndKeepsTheMrCounted) {
  ops_->AddDevice("rxe0");
  auto d = OpenOk();
  ASSERT_NE(d, nullptr);
  auto m = d->RegisterHost(HostMemory{kAddr, 4096}, Access::kLocalWrite);
  ASSERT_TRUE(m.ok()) << m.status();
  ops_->FailNext(Call::kDeregMr, EBUSY);
  absl::Status s = d->Deregister(*m);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("ibv_dereg_mr on rxe0"), HasSubstr("EBUSY")));
  EXPECT_EQ(d->live_mrs(), 1);
  EXPECT_TRUE(d->Deregister(*m).ok());
  EXPECT_EQ(d->live_mrs(), 0);
}

}  // namespace
}  // namespace dmareg
