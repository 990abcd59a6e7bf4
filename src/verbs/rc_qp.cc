// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "verbs/rc_qp.h"

#include <arpa/inet.h>
#include <infiniband/verbs.h>
#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "dmareg/errno_status.h"

namespace dmareg::rc {
namespace {

bool IsZero(const std::array<uint8_t, 16>& gid) {
  return std::all_of(gid.begin(), gid.end(), [](uint8_t b) { return b == 0; });
}

}  // namespace

std::string GidEntry::ToString() const {
  char text[INET6_ADDRSTRLEN] = {};
  if (inet_ntop(AF_INET6, gid.data(), text, sizeof(text)) == nullptr) return "?";
  return text;
}

absl::string_view GidEntry::TypeName() const {
  switch (type) {
    case IBV_GID_TYPE_IB:
      return "IB";
    case IBV_GID_TYPE_ROCE_V1:
      return "RoCE v1";
    case IBV_GID_TYPE_ROCE_V2:
      return "RoCE v2";
    default:
      return "unknown";
  }
}

bool GidEntry::ipv4_mapped() const {
  static constexpr uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::memcmp(gid.data(), kPrefix, sizeof(kPrefix)) == 0;
}

absl::StatusOr<std::vector<GidEntry>> ListGids(ibv_context* context, uint8_t port,
                                               const std::string& device) {
  ibv_port_attr attr;
  std::memset(&attr, 0, sizeof(attr));
  if (const int err = ibv_query_port(context, port, &attr); err != 0) {
    return ErrnoStatus(err, "ibv_query_port", device, absl::StrCat("port ", port));
  }
  std::vector<GidEntry> out;
  for (int i = 0; i < attr.gid_tbl_len; ++i) {
    ibv_gid_entry entry;
    std::memset(&entry, 0, sizeof(entry));
    // Unpopulated entries answer ENODATA (or EINVAL on older kernels).
    if (ibv_query_gid_ex(context, port, static_cast<uint32_t>(i), &entry, 0) != 0) continue;
    GidEntry g;
    g.index = i;
    std::memcpy(g.gid.data(), entry.gid.raw, 16);
    g.type = entry.gid_type;
    g.ndev_ifindex = entry.ndev_ifindex;
    if (!IsZero(g.gid)) out.push_back(g);
  }
  return out;
}

absl::StatusOr<int> FindRoceGidIndex(ibv_context* context, uint8_t port,
                                     const std::string& device) {
  absl::StatusOr<std::vector<GidEntry>> gids = ListGids(context, port, device);
  if (!gids.ok()) return gids.status();
  auto rank = [](const GidEntry& g) {
    if (g.type == IBV_GID_TYPE_ROCE_V2) return g.ipv4_mapped() ? 0 : 1;
    if (g.type == IBV_GID_TYPE_ROCE_V1) return 2;
    return 3;
  };
  const GidEntry* best = nullptr;
  for (const GidEntry& g : *gids) {
    if (rank(g) < 3 && (best == nullptr || rank(g) < rank(*best))) best = &g;
  }
  if (best == nullptr) {
    return absl::NotFoundError(
        absl::StrFormat("%s port %d: no RoCE GID (is the netdev up and addressed?)", device, port));
  }
  return best->index;
}

std::string RcEndpoint::Encode() const {
  std::string gid_hex;
  if (global) {
    gid_hex = absl::BytesToHexString(
        absl::string_view(reinterpret_cast<const char*>(gid.data()), gid.size()));
  }
  return absl::StrCat(qpn, ":", psn, ":", lid, ":", mtu, ":", gid_hex);
}

absl::StatusOr<RcEndpoint> RcEndpoint::Decode(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, ':');
  uint32_t lid = 0;
  uint32_t mtu = 0;
  RcEndpoint e;
  if (parts.size() != 5 || !absl::SimpleAtoi(parts[0], &e.qpn) ||
      !absl::SimpleAtoi(parts[1], &e.psn) || !absl::SimpleAtoi(parts[2], &lid) ||
      !absl::SimpleAtoi(parts[3], &mtu) || lid > 0xffff || mtu < IBV_MTU_256 ||
      mtu > IBV_MTU_4096 || !(parts[4].empty() || parts[4].size() == 32)) {
    return absl::InvalidArgumentError(absl::StrCat("bad RC endpoint \"", text, "\""));
  }
  e.lid = static_cast<uint16_t>(lid);
  e.mtu = static_cast<uint8_t>(mtu);
  e.global = !parts[4].empty();
  if (e.global) {
    const std::string bytes = absl::HexStringToBytes(parts[4]);
    std::memcpy(e.gid.data(), bytes.data(), 16);
  }
  return e;
}

absl::StatusOr<std::unique_ptr<RcQp>> RcQp::Create(ibv_context* context, ibv_pd* pd,
                                                   std::string device, RcQpOptions options) {
  std::unique_ptr<RcQp> q(new RcQp(std::move(device), options));
  const std::string& dev = q->device_;

  ibv_device_attr dattr;
  std::memset(&dattr, 0, sizeof(dattr));
  if (const int err = ibv_query_device(context, &dattr); err != 0) {
    return ErrnoStatus(err, "ibv_query_device", dev);
  }
  const int rd_atom = std::min(
      {static_cast<int>(options.max_rd_atomic), dattr.max_qp_rd_atom, dattr.max_qp_init_rd_atom});
  q->options_.max_rd_atomic = static_cast<uint8_t>(std::max(rd_atom, 1));

  ibv_port_attr pattr;
  std::memset(&pattr, 0, sizeof(pattr));
  if (const int err = ibv_query_port(context, options.port, &pattr); err != 0) {
    return ErrnoStatus(err, "ibv_query_port", dev, absl::StrCat("port ", options.port));
  }
  if (pattr.state != IBV_PORT_ACTIVE) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s port %d is %s, not active", dev, options.port, ibv_port_state_str(pattr.state)));
  }
  q->local_.lid = pattr.lid;
  q->local_.mtu = static_cast<uint8_t>(pattr.active_mtu);
  q->gid_index_ = options.gid_index;
  if (q->gid_index_ < 0 && pattr.link_layer == IBV_LINK_LAYER_ETHERNET) {
    absl::StatusOr<int> index = FindRoceGidIndex(context, options.port, dev);
    if (!index.ok()) return index.status();
    q->gid_index_ = *index;
  }
  if (q->gid_index_ >= 0) {
    ibv_gid gid;
    if (ibv_query_gid(context, options.port, q->gid_index_, &gid) != 0) {
      return ErrnoStatus(errno, "ibv_query_gid", dev, absl::StrCat("index ", q->gid_index_));
    }
    std::memcpy(q->local_.gid.data(), gid.raw, 16);
    q->local_.global = true;
  }

  errno = 0;
  q->cq_ = ibv_create_cq(context, static_cast<int>(options.max_send_wr + options.max_recv_wr),
                         nullptr, nullptr, 0);
  if (q->cq_ == nullptr) return ErrnoStatus(errno, "ibv_create_cq", dev);

  ibv_qp_init_attr init;
  std::memset(&init, 0, sizeof(init));
  init.send_cq = q->cq_;
  init.recv_cq = q->cq_;
  init.qp_type = IBV_QPT_RC;
  init.sq_sig_all = 1;
  init.cap.max_send_wr = options.max_send_wr;
  init.cap.max_recv_wr = options.max_recv_wr;
  init.cap.max_send_sge = 1;
  init.cap.max_recv_sge = 1;
  errno = 0;
  q->qp_ = ibv_create_qp(pd, &init);
  if (q->qp_ == nullptr) return ErrnoStatus(errno, "ibv_create_qp", dev);
  q->local_.qpn = q->qp_->qp_num;
  q->local_.psn = (q->qp_->qp_num * 2654435761u) & 0xffffff;

  ibv_qp_attr attr;
  std::memset(&attr, 0, sizeof(attr));
  attr.qp_state = IBV_QPS_INIT;
  attr.pkey_index = 0;
  attr.port_num = options.port;
  // The QP allows everything; each MR's own access flags decide.
  attr.qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ |
                         IBV_ACCESS_REMOTE_ATOMIC;
  if (const int err = ibv_modify_qp(
          q->qp_, &attr, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
      err != 0) {
    return ErrnoStatus(err, "ibv_modify_qp", dev, "RESET->INIT");
  }
  return q;
}

RcQp::~RcQp() {
  if (qp_ != nullptr) ibv_destroy_qp(qp_);
  if (cq_ != nullptr) ibv_destroy_cq(cq_);
}

absl::Status RcQp::Connect(const RcEndpoint& remote) {
  if (local_.global && !remote.global) {
    return absl::InvalidArgumentError(
        absl::StrCat(device_, ": peer endpoint has no GID but this port needs one"));
  }
  ibv_qp_attr attr;
  std::memset(&attr, 0, sizeof(attr));
  attr.qp_state = IBV_QPS_RTR;
  attr.path_mtu = static_cast<ibv_mtu>(std::min(local_.mtu, remote.mtu));
  attr.dest_qp_num = remote.qpn;
  attr.rq_psn = remote.psn;
  attr.max_dest_rd_atomic = options_.max_rd_atomic;
  attr.min_rnr_timer = 12;
  attr.ah_attr.dlid = remote.lid;
  attr.ah_attr.sl = 0;
  attr.ah_attr.src_path_bits = 0;
  attr.ah_attr.port_num = options_.port;
  if (remote.global) {
    attr.ah_attr.is_global = 1;
    std::memcpy(attr.ah_attr.grh.dgid.raw, remote.gid.data(), 16);
    attr.ah_attr.grh.sgid_index = static_cast<uint8_t>(gid_index_);
    attr.ah_attr.grh.hop_limit = 64;
  }
  if (const int err =
          ibv_modify_qp(qp_, &attr,
                        IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                            IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
      err != 0) {
    return ErrnoStatus(err, "ibv_modify_qp", device_, "INIT->RTR");
  }
  std::memset(&attr, 0, sizeof(attr));
  attr.qp_state = IBV_QPS_RTS;
  attr.timeout = options_.timeout;
  attr.retry_cnt = 7;
  attr.rnr_retry = 7;
  attr.sq_psn = local_.psn;
  attr.max_rd_atomic = options_.max_rd_atomic;
  if (const int err = ibv_modify_qp(qp_, &attr,
                                    IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
                                        IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC);
      err != 0) {
    return ErrnoStatus(err, "ibv_modify_qp", device_, "RTR->RTS");
  }
  return absl::OkStatus();
}

absl::Status RcQp::Post(ibv_wr_opcode opcode, void* local, size_t length, uint32_t lkey,
                        uint64_t remote_addr, uint32_t rkey, uint64_t wr_id) {
  ibv_sge sge;
  sge.addr = reinterpret_cast<uintptr_t>(local);
  sge.length = static_cast<uint32_t>(length);
  sge.lkey = lkey;
  ibv_send_wr wr;
  std::memset(&wr, 0, sizeof(wr));
  wr.wr_id = wr_id;
  wr.sg_list = &sge;
  wr.num_sge = 1;
  wr.opcode = opcode;
  wr.send_flags = IBV_SEND_SIGNALED;
  wr.wr.rdma.remote_addr = remote_addr;
  wr.wr.rdma.rkey = rkey;
  ibv_send_wr* bad = nullptr;
  if (const int err = ibv_post_send(qp_, &wr, &bad); err != 0) {
    return ErrnoStatus(err, "ibv_post_send", device_,
                       opcode == IBV_WR_RDMA_READ ? "RDMA READ" : "RDMA WRITE");
  }
  return absl::OkStatus();
}

absl::Status RcQp::PostWrite(const void* local, size_t length, uint32_t lkey, uint64_t remote_addr,
                             uint32_t rkey, uint64_t wr_id) {
  // The device only reads the local buffer of a WRITE.
  return Post(IBV_WR_RDMA_WRITE, const_cast<void*>(local), length, lkey, remote_addr, rkey, wr_id);
}

absl::Status RcQp::PostRead(void* local, size_t length, uint32_t lkey, uint64_t remote_addr,
                            uint32_t rkey, uint64_t wr_id) {
  return Post(IBV_WR_RDMA_READ, local, length, lkey, remote_addr, rkey, wr_id);
}

absl::Status RcQp::WaitCompletions(int n, std::chrono::milliseconds timeout,
                                   std::vector<uint64_t>* wr_ids) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  ibv_wc wc[16];
  int done = 0;
  while (done < n) {
    const int got = ibv_poll_cq(cq_, std::min(n - done, 16), wc);
    if (got < 0) return ErrnoStatus(errno != 0 ? errno : EIO, "ibv_poll_cq", device_);
    for (int i = 0; i < got; ++i) {
      if (wc[i].status != IBV_WC_SUCCESS) {
        // An error completion's opcode is undefined (the verbs spec): the
        // request is named by its id only.
        return absl::InternalError(
            absl::StrFormat("%s: work request %d completed with \"%s\" (vendor error %#x)", device_,
                            wc[i].wr_id, ibv_wc_status_str(wc[i].status), wc[i].vendor_err));
      }
      if (wr_ids != nullptr) wr_ids->push_back(wc[i].wr_id);
    }
    done += got;
    // Nothing yet: give the CPU away. rxe on newer kernels (7.x) does its
    // work in a kernel worker thread, which pollers that outnumber the CPUs
    // would otherwise starve for whole time slices: the device tests' 4-thread
    // soak on 2 vCPUs ran past 600 s on 7.3 where it takes ~200 s this way.
    if (got == 0) sched_yield();
    if (got == 0 && std::chrono::steady_clock::now() > deadline) {
      return absl::DeadlineExceededError(absl::StrFormat("%s: %d of %d completions after %d ms",
                                                         device_, done, n, timeout.count()));
    }
  }
  return absl::OkStatus();
}

absl::Status RcQp::Write(const void* local, size_t length, uint32_t lkey, uint64_t remote_addr,
                         uint32_t rkey, std::chrono::milliseconds timeout) {
  if (absl::Status s = PostWrite(local, length, lkey, remote_addr, rkey); !s.ok()) return s;
  return WaitCompletions(1, timeout);
}

absl::Status RcQp::Read(void* local, size_t length, uint32_t lkey, uint64_t remote_addr,
                        uint32_t rkey, std::chrono::milliseconds timeout) {
  if (absl::Status s = PostRead(local, length, lkey, remote_addr, rkey); !s.ok()) return s;
  return WaitCompletions(1, timeout);
}

absl::StatusOr<RcLoopback> ConnectLoopback(ibv_context* context, ibv_pd* pd, std::string device,
                                           RcQpOptions options) {
  RcLoopback pair;
  absl::StatusOr<std::unique_ptr<RcQp>> a = RcQp::Create(context, pd, device, options);
  if (!a.ok()) return a.status();
  absl::StatusOr<std::unique_ptr<RcQp>> b = RcQp::Create(context, pd, device, options);
  if (!b.ok()) return b.status();
  pair.a = std::move(*a);
  pair.b = std::move(*b);
  if (absl::Status s = pair.a->Connect(pair.b->endpoint()); !s.ok()) return s;
  if (absl::Status s = pair.b->Connect(pair.a->endpoint()); !s.ok()) return s;
  return pair;
}

}  // namespace dmareg::rc
