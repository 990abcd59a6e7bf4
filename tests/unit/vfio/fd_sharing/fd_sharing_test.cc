// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// VFIO fd sharing end to end over real Unix sockets: the server with a fake
// provider (memfds stand in for the container and group fds), the public
// client functions, and raw peers that send what a client never would.
#include "dmareg/vfio/fd_sharing.h"

#include <dirent.h>
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "common/test_memory.h"
#include "unit/vfio/fd_sharing/fake_fd_provider.h"
#include "vfio/fd_sharing/fd_client.h"
#include "vfio/fd_sharing/fd_message.h"
#include "vfio/fd_sharing/fd_server.h"
#include "vfio/fd_sharing/fd_socket.h"

namespace dmareg {
namespace {

using internal::FakeFdProvider;
using internal::OwnedFd;
using internal::VfioFdReply;
using internal::VfioFdResult;
using ::testing::HasSubstr;

// A bound on waits that should end at once; reaching it fails the test.
constexpr std::chrono::milliseconds kLongWait{20000};

int OpenFds() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n - 1;  // the DIR's own fd
}

std::string UniqueName() {
  static std::atomic<int> counter{0};
  const ::testing::TestInfo* t = ::testing::UnitTest::GetInstance()->current_test_info();
  return absl::StrFormat("@dmareg-vfio-mp-test-%d-%s-%d", ::getpid(), t->name(), counter++);
}

bool SameFile(int a, int b) {
  struct stat sa, sb;
  return ::fstat(a, &sa) == 0 && ::fstat(b, &sb) == 0 && sa.st_ino == sb.st_ino &&
         sa.st_dev == sb.st_dev;
}

// A peer that connects and does as told: the raw side of the protocol.
class RawPeer {
 public:
  explicit RawPeer(const std::string& name) {
    absl::StatusOr<internal::UnixSocketAddress> a = internal::UnixSocketAddress::Parse(name);
    EXPECT_TRUE(a.ok());
    fd_ = OwnedFd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    connected_ = ::connect(fd_.get(), a->addr(), a->length()) == 0;
  }
  bool connected() const { return connected_; }
  int fd() const { return fd_.get(); }
  bool Send(std::span<const uint8_t> bytes, int pass_fd = -1) {
    return internal::SendMessage(fd_.get(), bytes, pass_fd, "peer").ok();
  }
  // The server's reply; a reply that does not come is a failure.
  absl::StatusOr<VfioFdReply> Receive(size_t* fds = nullptr) {
    absl::StatusOr<internal::WaitResult> w =
        internal::WaitReadable(fd_.get(), -1, kLongWait, "peer");
    if (!w.ok()) return w.status();
    if (*w != internal::WaitResult::kReady) return absl::DeadlineExceededError("no reply");
    internal::VfioFdReplyBytes buffer{};
    absl::StatusOr<internal::ReceivedMessage> m =
        internal::ReceiveMessage(fd_.get(), buffer, "peer");
    if (!m.ok()) return m.status();
    if (fds != nullptr) *fds = m->fds.size();
    return internal::ParseReply(std::span<const uint8_t>(buffer.data(), m->length));
  }

 private:
  OwnedFd fd_;
  bool connected_ = false;
};

class VfioFdSharingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fds_before_ = OpenFds();
    provider_ = std::make_shared<FakeFdProvider>();
    provider_->AddGroup(26);
    provider_->MarkUnbound(27);
  }
  void TearDown() override {
    server_.reset();
    provider_.reset();
    EXPECT_EQ(OpenFds(), fds_before_) << "fds leaked";
  }
  void Start(VfioFdServerOptions o = {}) {
    if (o.socket.empty()) o.socket = UniqueName();
    absl::StatusOr<std::unique_ptr<VfioFdServer>> s = VfioFdServer::StartWithProvider(provider_, o);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
  }
  const std::string& name() const { return server_->socket(); }

  int fds_before_ = 0;
  std::shared_ptr<FakeFdProvider> provider_;
  std::unique_ptr<VfioFdServer> server_;
};

TEST_F(VfioFdSharingTest, ContainerFdIsTheProvidersFile) {
  Start();
  absl::StatusOr<int> fd = RequestVfioContainerFd(name());
  ASSERT_TRUE(fd.ok()) << fd.status();
  EXPECT_NE(*fd, provider_->container_fd());
  EXPECT_TRUE(SameFile(*fd, provider_->container_fd()));
  EXPECT_EQ(::fcntl(*fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  ::close(*fd);
  EXPECT_EQ(server_->stats().served, 1u);
}

TEST_F(VfioFdSharingTest, GroupFdIsTheProvidersFile) {
  Start();
  absl::StatusOr<int> fd = RequestVfioGroupFd(name(), 26);
  ASSERT_TRUE(fd.ok()) << fd.status();
  EXPECT_TRUE(SameFile(*fd, provider_->group_fd(26)));
  EXPECT_FALSE(SameFile(*fd, provider_->container_fd()));
  ::close(*fd);
}

TEST_F(VfioFdSharingTest, IommuType) {
  Start();
  absl::StatusOr<int> type = RequestVfioIommuType(name());
  ASSERT_TRUE(type.ok()) << type.status();
  EXPECT_EQ(*type, 3);
  provider_->SetIommuType(1);
  EXPECT_EQ(RequestVfioIommuType(name()).value_or(-1), 1);
  EXPECT_EQ(server_->stats().served, 2u);
}

TEST_F(VfioFdSharingTest, UnboundGroupIsNoFd) {
  Start();
  absl::StatusOr<int> fd = RequestVfioGroupFd(name(), 27);
  EXPECT_EQ(fd.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(fd.status().message(), HasSubstr("group 27 is not bound to vfio-pci"));
}

TEST_F(VfioFdSharingTest, ProviderErrorsReachTheClient) {
  Start();
  absl::StatusOr<int> fd = RequestVfioGroupFd(name(), 99);
  EXPECT_EQ(fd.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(fd.status().message(), HasSubstr("no IOMMU group 99"));

  provider_->SetIommuType(absl::FailedPreconditionError("no group attached yet"));
  absl::StatusOr<int> type = RequestVfioIommuType(name());
  EXPECT_EQ(type.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(type.status().message(), HasSubstr("no group attached yet"));

  provider_->SetContainerFd(-2);
  absl::StatusOr<int> container = RequestVfioContainerFd(name());
  EXPECT_EQ(container.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(container.status().message(), HasSubstr("no container fd"));
  EXPECT_EQ(server_->stats().served, 3u);
  EXPECT_EQ(server_->stats().malformed, 0u);
}

TEST_F(VfioFdSharingTest, NoServerIsUnavailable) {
  absl::StatusOr<int> fd = RequestVfioContainerFd(UniqueName());
  EXPECT_EQ(fd.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(fd.status().message(), HasSubstr("no VFIO fd server"));
}

TEST_F(VfioFdSharingTest, BadNamesAreRefused) {
  for (std::string bad : {std::string(""), std::string("@"), std::string(200, 'x')}) {
    VfioFdServerOptions o;
    o.socket = bad;
    EXPECT_EQ(VfioFdServer::StartWithProvider(provider_, o).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
    EXPECT_EQ(RequestVfioContainerFd(bad).status().code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(VfioFdServer::StartWithProvider(nullptr, {.socket = "@x"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(VfioFdServer::Start(nullptr, {.socket = "@x"}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(VfioFdSharingTest, SecondServerOnTheNameIsAlreadyExists) {
  Start();
  VfioFdServerOptions o;
  o.socket = name();
  EXPECT_EQ(VfioFdServer::StartWithProvider(provider_, o).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(RequestVfioIommuType(name()).ok());
}

TEST_F(VfioFdSharingTest, OtherUidIsRefused) {
  VfioFdServerOptions o;
  o.allowed_uid = ::geteuid() + 1;
  Start(o);
  absl::StatusOr<int> fd = RequestVfioContainerFd(name());
  EXPECT_EQ(fd.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(fd.status().message(),
              HasSubstr(absl::StrFormat("peer uid %d is not allowed", ::geteuid())));
  EXPECT_EQ(server_->stats().refused, 1u);
  EXPECT_EQ(server_->stats().served, 0u);
}

TEST_F(VfioFdSharingTest, ChildWithAnotherUidIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to change a child's uid";
  // Fork before the server's thread exists; the child connects once told.
  int go[2];
  ASSERT_EQ(::pipe2(go, O_CLOEXEC), 0);
  const std::string socket = UniqueName();
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(go[1]);
    char c;
    if (::read(go[0], &c, 1) != 1) ::_exit(10);
    if (::setresuid(65534, 65534, 65534) != 0) ::_exit(11);
    absl::StatusOr<int> fd = RequestVfioContainerFd(socket);
    if (fd.ok()) ::_exit(12);
    if (fd.status().code() != absl::StatusCode::kPermissionDenied) ::_exit(13);
    if (!absl::StrContains(fd.status().message(), "peer uid 65534 is not allowed")) ::_exit(14);
    ::_exit(0);
  }
  ::close(go[0]);
  VfioFdServerOptions o;
  o.socket = socket;
  o.allowed_uid = 0;
  Start(o);
  ASSERT_EQ(::write(go[1], "g", 1), 1);
  ::close(go[1]);
  EXPECT_EQ(test::ChildExitCode(child), 0);
  EXPECT_EQ(server_->stats().refused, 1u);
  // Root itself is still served.
  absl::StatusOr<int> fd = RequestVfioContainerFd(name());
  ASSERT_TRUE(fd.ok()) << fd.status();
  ::close(*fd);
}

TEST_F(VfioFdSharingTest, MalformedRequestsGetErrAndTheServerGoesOn) {
  Start();
  const internal::VfioFdRequestBytes good =
      *internal::EncodeRequest({internal::VfioFdRequestType::kGroup, 26});
  std::vector<std::vector<uint8_t>> bad = {
      {},                                                    // zero-length
      std::vector<uint8_t>(good.begin(), good.begin() + 7),  // truncated
      std::vector<uint8_t>(4096, 0xab),                      // oversized
      std::vector<uint8_t>(16, 0xff),                        // garbage of the right size
  };
  std::vector<uint8_t> negative(good.begin(), good.end());
  negative[11] = 0x80;
  bad.push_back(negative);
  for (size_t i = 0; i < bad.size(); ++i) {
    RawPeer peer(name());
    ASSERT_TRUE(peer.connected());
    ASSERT_TRUE(peer.Send(bad[i])) << i;
    size_t fds = 99;
    absl::StatusOr<VfioFdReply> reply = peer.Receive(&fds);
    ASSERT_TRUE(reply.ok()) << i << ": " << reply.status();
    EXPECT_EQ(reply->result, VfioFdResult::kErr) << i;
    EXPECT_EQ(reply->value, static_cast<int>(absl::StatusCode::kInvalidArgument)) << i;
    EXPECT_EQ(fds, 0u) << i;
    EXPECT_EQ(server_->stats().malformed, i + 1);
    // ... and the next well-formed request is served.
    absl::StatusOr<int> fd = RequestVfioGroupFd(name(), 26);
    ASSERT_TRUE(fd.ok()) << i << ": " << fd.status();
    ::close(*fd);
  }
  EXPECT_EQ(server_->stats().served, bad.size());
}

TEST_F(VfioFdSharingTest, FdsSentToTheServerAreClosed) {
  Start();
  OwnedFd junk(::eventfd(0, EFD_CLOEXEC));
  RawPeer peer(name());
  ASSERT_TRUE(peer.connected());
  const internal::VfioFdRequestBytes req =
      *internal::EncodeRequest({internal::VfioFdRequestType::kIommuType, 0});
  ASSERT_TRUE(peer.Send(req, junk.get()));
  absl::StatusOr<VfioFdReply> reply = peer.Receive();
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->result, VfioFdResult::kOk);
  EXPECT_EQ(reply->value, 3);
  // TearDown's fd count checks the server closed its copy.
}

TEST_F(VfioFdSharingTest, SilentPeerTimesOutAndTheNextIsServed) {
  VfioFdServerOptions o;
  o.io_timeout = std::chrono::milliseconds(50);
  Start(o);
  RawPeer silent(name());
  ASSERT_TRUE(silent.connected());
  absl::StatusOr<VfioFdReply> reply = silent.Receive();
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->result, VfioFdResult::kErr);
  EXPECT_EQ(reply->value, static_cast<int>(absl::StatusCode::kDeadlineExceeded));
  EXPECT_THAT(reply->reason, HasSubstr("no request within 50 ms"));
  EXPECT_EQ(server_->stats().timed_out, 1u);
  absl::StatusOr<int> fd = RequestVfioContainerFd(name());
  ASSERT_TRUE(fd.ok()) << fd.status();
  ::close(*fd);
}

TEST_F(VfioFdSharingTest, DestroyedWithAnIdleClientConnected) {
  VfioFdServerOptions o;
  o.io_timeout = std::chrono::hours(1);  // only the stop can end the wait
  Start(o);
  RawPeer idle(name());
  ASSERT_TRUE(idle.connected());
  server_.reset();  // returns: the stop eventfd ends the wait for the request
  // The idle peer sees the connection end, with no reply.
  pollfd p{idle.fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, static_cast<int>(kLongWait.count())), 1);
  uint8_t byte;
  EXPECT_LE(::recv(idle.fd(), &byte, 1, MSG_DONTWAIT), 0);
}

TEST_F(VfioFdSharingTest, FilesystemSocketIsPrivateAndRemoved) {
  char dir[] = "/tmp/dmareg-vfio-mp-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/sock";
  VfioFdServerOptions o;
  o.socket = path;
  Start(o);
  struct stat st;
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  absl::StatusOr<int> fd = RequestVfioGroupFd(path, 26);
  ASSERT_TRUE(fd.ok()) << fd.status();
  ::close(*fd);
  server_.reset();
  EXPECT_NE(::lstat(path.c_str(), &st), 0);
  ::rmdir(dir);
}

TEST_F(VfioFdSharingTest, StaleSocketFileIsReplaced) {
  char dir[] = "/tmp/dmareg-vfio-mp-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/sock";
  {  // A server that died: its socket file stays, nobody listens.
    absl::StatusOr<internal::UnixSocketAddress> a = internal::UnixSocketAddress::Parse(path);
    ASSERT_TRUE(a.ok());
    OwnedFd dead(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    ASSERT_EQ(::bind(dead.get(), a->addr(), a->length()), 0);
  }
  VfioFdServerOptions o;
  o.socket = path;
  Start(o);
  absl::StatusOr<int> type = RequestVfioIommuType(path);
  EXPECT_TRUE(type.ok()) << type.status();
  server_.reset();
  ::rmdir(dir);
}

// A server that is not ours: answers one request with `reply` and `fds`.
void ServeOnce(int listener, std::vector<uint8_t> reply, int fds) {
  OwnedFd conn(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
  uint8_t request[64];
  if (::recv(conn.get(), request, sizeof(request), 0) < 0) return;
  std::vector<OwnedFd> owned;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)] = {};
  iovec iov{reply.data(), reply.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (fds > 0) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds);
    for (int i = 0; i < fds; ++i) {
      owned.emplace_back(::eventfd(0, EFD_CLOEXEC));
      const int fd = owned.back().get();
      std::memcpy(CMSG_DATA(c) + i * sizeof(int), &fd, sizeof(int));
    }
  }
  [[maybe_unused]] ssize_t n = ::sendmsg(conn.get(), &msg, MSG_NOSIGNAL);
}

TEST_F(VfioFdSharingTest, ClientClosesUnexpectedFdsAndBadReplies) {
  const std::string socket = UniqueName();
  absl::StatusOr<internal::UnixSocketAddress> a = internal::UnixSocketAddress::Parse(socket);
  ASSERT_TRUE(a.ok());
  OwnedFd listener(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  ASSERT_EQ(::bind(listener.get(), a->addr(), a->length()), 0);
  ASSERT_EQ(::listen(listener.get(), 4), 0);
  const auto ok_container = *internal::EncodeReply({0x100, VfioFdResult::kOk, 0, ""});
  const auto ok_type = *internal::EncodeReply({0x400, VfioFdResult::kOk, 3, ""});
  struct Case {
    std::vector<uint8_t> reply;
    int fds;
    bool type_request;
    absl::StatusCode code;
  };
  const std::vector<Case> cases = {
      {{ok_container.begin(), ok_container.end()}, 3, false, absl::StatusCode::kInternal},
      {{ok_container.begin(), ok_container.end()}, 0, false, absl::StatusCode::kInternal},
      {{ok_type.begin(), ok_type.end()}, 1, true, absl::StatusCode::kOk},         // fd dropped
      {{ok_type.begin(), ok_type.end()}, 0, false, absl::StatusCode::kInternal},  // wrong type
      {std::vector<uint8_t>(216, 0x5a), 1, false, absl::StatusCode::kInternal},
      {std::vector<uint8_t>(300, 0), 1, false, absl::StatusCode::kInternal},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    std::thread server(ServeOnce, listener.get(), cases[i].reply, cases[i].fds);
    absl::Status s;
    if (cases[i].type_request) {
      absl::StatusOr<int> type = RequestVfioIommuType(socket);
      s = type.status();
      if (type.ok()) {
        EXPECT_EQ(*type, 3);
      }
    } else {
      absl::StatusOr<int> fd = RequestVfioContainerFd(socket);
      s = fd.status();
      if (fd.ok()) ::close(*fd);
    }
    server.join();
    EXPECT_EQ(s.code(), cases[i].code) << i << ": " << s;
  }
}

}  // namespace
}  // namespace dmareg
