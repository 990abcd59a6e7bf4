// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// Reliable-connected QPs for the examples, the CLI and the device tests: the
// boilerplate every RDMA program repeats (CQ + QP, GID choice on RoCE,
// INIT/RTR/RTS, post and poll), kept out of them so they show the
// registration part. Not part of the dmareg library; a program that copies an
// example copies this pair of files with it.
//
//   auto pair = dmareg::rc::ConnectLoopback(domain->context(), domain->pd(),
//                                           domain->name()).value();
//   auto src = cache->Acquire(a, n, dmareg::Access::kLocalWrite).value();
//   auto dst = cache->Acquire(b, n, dmareg::Access::kRemoteWrite).value();
//   // QP a writes a -> b through QP b's side of the connection.
//   absl::Status s = pair.a->Write(a, n, src.lkey(), dst.IovaFor(b), dst.rkey());
//
// Across hosts: create one RcQp on each, exchange `endpoint().Encode()` out of
// band, and `Connect(RcEndpoint::Decode(peer))` on both.

#ifndef DMAREG_SRC_VERBS_RC_QP_H_
#define DMAREG_SRC_VERBS_RC_QP_H_

#include <infiniband/verbs.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dmareg::rc {

// One GID table entry, as the device reports it.
struct GidEntry {
  int index = 0;
  std::array<uint8_t, 16> gid{};
  uint32_t type = 0;  // IBV_GID_TYPE_IB / _ROCE_V1 / _ROCE_V2
  uint32_t ndev_ifindex = 0;
  std::string ToString() const;        // "::ffff:10.0.0.1"
  absl::string_view TypeName() const;  // "IB", "RoCE v1", "RoCE v2"
  bool ipv4_mapped() const;
};

// The populated GID entries of `port`.
absl::StatusOr<std::vector<GidEntry>> ListGids(ibv_context* context, uint8_t port,
                                               const std::string& device);

// The GID index an RC QP on a RoCE port should use: a RoCE v2 entry with an
// IPv4-mapped address first (routable over plain IPv4 set-ups such as rxe on
// veth or virtio-net), then any RoCE v2, then RoCE v1. NotFound if none.
absl::StatusOr<int> FindRoceGidIndex(ibv_context* context, uint8_t port, const std::string& device);

// What one side tells the other to connect an RC QP.
struct RcEndpoint {
  uint32_t qpn = 0;
  uint32_t psn = 0;
  uint16_t lid = 0;
  bool global = false;  // carries a GID (RoCE: always)
  std::array<uint8_t, 16> gid{};
  uint8_t mtu = IBV_MTU_1024;  // ibv_mtu of the sender's port

  // "qpn:psn:lid:mtu:gidhex" (gidhex empty when not global).
  std::string Encode() const;
  static absl::StatusOr<RcEndpoint> Decode(absl::string_view text);
};

struct RcQpOptions {
  uint8_t port = 1;
  int gid_index = -1;  // -1: FindRoceGidIndex on RoCE ports
  uint32_t max_send_wr = 128;
  uint32_t max_recv_wr = 16;
  uint8_t max_rd_atomic = 4;  // outstanding RDMA READs (clamped to the device)
  // Local ACK timeout exponent (4.096 us << n). Generous: software RoCE
  // under emulation answers in tens of milliseconds.
  uint8_t timeout = 18;
};

class RcQp {
 public:
  static absl::StatusOr<std::unique_ptr<RcQp>> Create(ibv_context* context, ibv_pd* pd,
                                                      std::string device, RcQpOptions options = {});
  ~RcQp();
  RcQp(const RcQp&) = delete;
  RcQp& operator=(const RcQp&) = delete;

  const RcEndpoint& endpoint() const { return local_; }
  // INIT -> RTR -> RTS towards `remote`. The path MTU is the smaller of both ends'.
  absl::Status Connect(const RcEndpoint& remote);

  // Post one signaled work request (one SGE). `remote_addr` is an IOVA of
  // the peer's MR (Registration::IovaFor on the peer).
  absl::Status PostWrite(const void* local, size_t length, uint32_t lkey, uint64_t remote_addr,
                         uint32_t rkey, uint64_t wr_id = 0);
  absl::Status PostRead(void* local, size_t length, uint32_t lkey, uint64_t remote_addr,
                        uint32_t rkey, uint64_t wr_id = 0);
  // Waits for `n` completions; the first failed one is an error naming its
  // status ("remote access error", ...). DeadlineExceeded after `timeout`.
  absl::Status WaitCompletions(int n, std::chrono::milliseconds timeout,
                               std::vector<uint64_t>* wr_ids = nullptr);
  // Post one request and wait for it.
  absl::Status Write(const void* local, size_t length, uint32_t lkey, uint64_t remote_addr,
                     uint32_t rkey, std::chrono::milliseconds timeout = kDefaultTimeout);
  absl::Status Read(void* local, size_t length, uint32_t lkey, uint64_t remote_addr, uint32_t rkey,
                    std::chrono::milliseconds timeout = kDefaultTimeout);

  ibv_qp* qp() const { return qp_; }
  ibv_cq* cq() const { return cq_; }
  uint32_t max_send_wr() const { return options_.max_send_wr; }

  static constexpr std::chrono::milliseconds kDefaultTimeout{30000};

 private:
  RcQp(std::string device, RcQpOptions options) : device_(std::move(device)), options_(options) {}
  absl::Status Post(ibv_wr_opcode opcode, void* local, size_t length, uint32_t lkey,
                    uint64_t remote_addr, uint32_t rkey, uint64_t wr_id);

  const std::string device_;
  RcQpOptions options_;
  ibv_cq* cq_ = nullptr;
  ibv_qp* qp_ = nullptr;
  RcEndpoint local_;
  int gid_index_ = -1;
};

// Two RC QPs on one device connected to each other (loopback).
struct RcLoopback {
  std::unique_ptr<RcQp> a;
  std::unique_ptr<RcQp> b;
};
absl::StatusOr<RcLoopback> ConnectLoopback(ibv_context* context, ibv_pd* pd, std::string device,
                                           RcQpOptions options = {});

}  // namespace dmareg::rc

#endif  // DMAREG_SRC_VERBS_RC_QP_H_
