// rpc/replica_claim_test.cc: a peer that lies in its hello, against a real
// `peerkv serve` process over real TLS. The liar is a device of the
// server's own user (so the handshake and the device check pass); what it
// claims is bound to its authenticated key (ServerLoop::BindReplica,
// CheckReplicaClaim; ReplicaImpl::pull's requester check): a hello as
// another device's replica id, and a pull naming another replica as its
// requester, are each refused, answered with PermissionDenied and logged
// by the server; the same link with the truth is served.
#include <signal.h>

#include <memory>
#include <string>

#include "absl/strings/str_format.h"
#include "auth/keys.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kj/async-io.h"
#include "replication/transport.h"
#include "rpc/client.h"
#include "rpc/connection.h"
#include "rpc/convert.h"
#include "rpc/peerkv.capnp.h"
#include "rpc/tls.h"
#include "store/replica_id.h"
#include "testing/replica_client.h"
#include "testing/server_process.h"
#include "testing/temp_dir.h"

namespace peerkv::rpc {
namespace {

using ::testing::HasSubstr;

// The `back` of our hellos: answers nothing.
class SilentReplica final : public wire::Replica::Server {};

// A replication link dialled as the test process's own device (the test
// user's, which the server trusts), over TLS, on the test's event loop.
class Peer {
 public:
  Peer(kj::AsyncIoContext& io, TlsEndpoint& tls, const std::string& address,
       const auth::PublicKey& user)
      : io_(io) {
    TrustSource trust = [user]() -> absl::StatusOr<TrustView> { return TrustView{user, {}, {}}; };
    link_ = kj::heap<GatewayConnection>(
        DialAuthenticated(io_.provider->getNetwork(), address, &tls, trust).wait(io_.waitScope));
    replica_ = link_->gateway().replicaRequest().send().getReplica();
  }

  absl::Status Hello(uint64_t replica_id, uint64_t incarnation) {
    auto hello = replica_.helloRequest();
    auto info = hello.initInfo();
    info.setReplicaId(replica_id);
    info.setIncarnation(incarnation);
    info.setProtocolVersion(replication::kProtocolVersion);
    info.setName("liar");
    hello.setBack(kj::heap<SilentReplica>());
    return ResponseStatus(hello.send().wait(io_.waitScope));
  }

  absl::Status Pull(uint64_t requester, uint64_t incarnation) {
    auto pull = replica_.pullRequest();
    pull.setRequester(requester);
    pull.setIncarnation(incarnation);
    pull.setMaxRecords(10);
    pull.setMaxBytes(1 << 16);
    pull.setMaxValueBytes(1 << 20);
    return ResponseStatus(pull.send().wait(io_.waitScope));
  }

 private:
  kj::AsyncIoContext& io_;
  kj::Own<GatewayConnection> link_;
  wire::Replica::Client replica_ = nullptr;
};

class ReplicaClaimTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::UseTestUser();
    server_ = testing::StartReplica(dir_, "a");
    ASSERT_NE(server_, nullptr);
    std::optional<std::pair<TlsIdentity, auth::PublicKey>> own = DefaultClientTls();
    ASSERT_TRUE(own.has_value());
    user_ = own->second;
    absl::StatusOr<std::unique_ptr<TlsEndpoint>> tls =
        TlsEndpoint::Create(own->first, io_->provider->getTimer(), 10'000);
    ASSERT_THAT(tls, IsOk());
    tls_ = std::move(*tls);
    // The id another device of the same user mints (what a peer that
    // wants to pass as that device's replica would say).
    other_ = DeriveReplicaId(auth::SigningKey::Generate()->public_key().view(), kIncarnation);
    own_ = DeriveReplicaId(own->first.key->public_key().view(), kIncarnation);
    ASSERT_NE(other_, own_);
  }
  void TearDown() override {
    if (server_ != nullptr) {
      EXPECT_EQ(server_->Stop(SIGTERM), 0) << server_->Log();
    }
  }

  static constexpr uint64_t kIncarnation = 7;
  testing::TempDir dir_;
  std::unique_ptr<testing::ServerProcess> server_;
  // On the heap: its destructor may throw, the fixture's may not.
  std::unique_ptr<kj::AsyncIoContext> io_ =
      std::make_unique<kj::AsyncIoContext>(kj::setupAsyncIo());
  std::unique_ptr<TlsEndpoint> tls_;
  auth::PublicKey user_;
  uint64_t other_ = 0;
  uint64_t own_ = 0;
};

TEST_F(ReplicaClaimTest, AHelloAsAnotherDevicesReplicaIsRefusedAndLogged) {
  Peer liar(*io_, *tls_, server_->address(), user_);
  const std::string claim = absl::StrFormat("claims replica id %016x", other_);
  EXPECT_THAT(liar.Hello(other_, kIncarnation),
              StatusIs(absl::StatusCode::kPermissionDenied, claim));
  EXPECT_THAT(server_->WaitForLog(claim), HasSubstr("rejected hello"));
  // Nothing was linked: the liar may not pull as anyone.
  EXPECT_THAT(liar.Pull(other_, kIncarnation),
              StatusIs(absl::StatusCode::kFailedPrecondition, "pull before hello"));
  // The same device telling the truth is linked, on a connection of its own
  // (one hello per connection).
  Peer honest(*io_, *tls_, server_->address(), user_);
  EXPECT_THAT(honest.Hello(own_, kIncarnation), IsOk());
}

TEST_F(ReplicaClaimTest, APullNamingAnotherRequesterIsRefusedAndLogged) {
  Peer peer(*io_, *tls_, server_->address(), user_);
  ASSERT_THAT(peer.Hello(own_, kIncarnation), IsOk());
  const std::string wrong =
      absl::StrFormat("pull names requester %016x; this link said hello as %016x", other_, own_);
  EXPECT_THAT(peer.Pull(other_, kIncarnation),
              StatusIs(absl::StatusCode::kPermissionDenied, wrong));
  EXPECT_THAT(server_->WaitForLog(wrong), HasSubstr("rejected pull"));
  // As itself, the same link is served.
  EXPECT_THAT(peer.Pull(own_, kIncarnation), IsOk());
}

}  // namespace
}  // namespace peerkv::rpc
