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
#include "rpc/raw_peer.h"
#include "rpc/tls.h"
#include "store/replica_id.h"
#include "testing/replica_client.h"
#include "testing/server_process.h"
#include "testing/temp_dir.h"

namespace peerkv::rpc {
namespace {

using ::testing::HasSubstr;

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
  RawPeer liar(*io_, *tls_, server_->address(), user_);
  const std::string claim = absl::StrFormat("claims replica id %016x", other_);
  EXPECT_THAT(liar.Hello(other_, kIncarnation),
              StatusIs(absl::StatusCode::kPermissionDenied, claim));
  EXPECT_THAT(server_->WaitForLog(claim), HasSubstr("rejected hello"));
  // Nothing was linked: the liar may not pull as anyone.
  EXPECT_THAT(liar.Pull(other_, {}, kIncarnation).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, "pull before hello"));
  // The same device telling the truth is linked, on a connection of its own
  // (one hello per connection).
  RawPeer honest(*io_, *tls_, server_->address(), user_);
  EXPECT_THAT(honest.Hello(own_, kIncarnation), IsOk());
}

TEST_F(ReplicaClaimTest, APullNamingAnotherRequesterIsRefusedAndLogged) {
  RawPeer peer(*io_, *tls_, server_->address(), user_);
  ASSERT_THAT(peer.Hello(own_, kIncarnation), IsOk());
  const std::string wrong =
      absl::StrFormat("pull names requester %016x; this link said hello as %016x", other_, own_);
  EXPECT_THAT(peer.Pull(other_, {}, kIncarnation).status(),
              StatusIs(absl::StatusCode::kPermissionDenied, wrong));
  EXPECT_THAT(server_->WaitForLog(wrong), HasSubstr("rejected pull"));
  // As itself, the same link is served.
  EXPECT_THAT(peer.Pull(own_, {}, kIncarnation).status(), IsOk());
}

}  // namespace
}  // namespace peerkv::rpc
