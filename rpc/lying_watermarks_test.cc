// rpc/lying_watermarks_test.cc: peers that lie about what they hold, against
// real `peerkv serve` processes over real TLS (issue 9: "suppress an origin
// with made-up watermarks"). The liars are a device of the servers' own
// user and a friend's device; what they claim is bound to their
// authenticated link:
//  - made-up watermarks in a pull or a nudge shape only the liar's own
//    answers: an honest puller, and a third replica started afterwards,
//    still get every record of every origin;
//  - a tombstone is collected only once every peer met acknowledged it: a
//    liar's acknowledgement (an own device claiming what it lacks) does not
//    collect one another peer lacks, nor can it acknowledge as that peer,
//    and a friend's is not counted;
//  - a page a friend's device serves with a write of the server's own id
//    that it lacks is refused, not taken as evidence of a restore, unless
//    the write is signed by a device of the server's own user (which the
//    friend cannot forge): then the server forks and takes it;
//  - a stranger's device (neither the user's nor a friend's) can neither
//    hello, pull, nudge nor push (reconcile): its connection is closed
//    after the handshake, and nothing changes;
//  - a friend's claims about the server itself (a checkpoint beyond its log,
//    a watermark beyond its clock, its id among the retired) do not make it
//    fork, as an own device's would (restore_guard.h): before, any friend
//    could make a replica retire its id at will (Replicator::
//    RestoreEvidenceOf, ReplicaImpl::pull).
#include <signal.h>

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "kj/exception.h"
#include "absl/time/clock.h"
#include "auth/identity.h"
#include "auth/ids.h"
#include "auth/record_signature.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kj/async-io.h"
#include "replication/serve.h"
#include "replication/transport.h"
#include "rpc/batch_codec.h"
#include "rpc/client.h"
#include "rpc/connection.h"
#include "rpc/convert.h"
#include "rpc/peerkv.capnp.h"
#include "rpc/raw_peer.h"
#include "rpc/tls.h"
#include "store/replica_id.h"
#include "store/version.h"
#include "testing/replica_client.h"
#include "testing/server_process.h"
#include "testing/subprocess.h"
#include "testing/temp_dir.h"

namespace peerkv::rpc {
namespace {

using ::testing::HasSubstr;

// A write "ks/forged" of replica `victim`'s id at `hlc` (seq 1), unsigned.
Record WriteOf(uint64_t victim, uint64_t hlc) {
  Record write;
  write.keyspace = "ks";
  write.key = "forged";
  write.value = "v";
  write.version = Version{hlc, victim};
  write.seq = 1;
  return write;
}

// The `back` of a friend's hello that answers the server's pulls with one
// page holding `record` (made up, or one the friend was sent).
class LyingBack final : public wire::Replica::Server {
 public:
  LyingBack(uint64_t replica_id, uint64_t incarnation, Record record)
      : replica_id_(replica_id), incarnation_(incarnation), record_(std::move(record)) {}
  kj::Promise<void> pull(PullContext context) override {
    ++*pulls_;
    auto results = context.getResults();
    results.setReplicaId(replica_id_);
    results.setIncarnation(incarnation_);
    results.setFromSeq(0);
    const std::string batch = EncodeBatch({record_});
    results.setBatch(AsData(batch));
    results.setLastSeq(1);
    results.setMaxSeq(1);
    return kj::READY_NOW;
  }
  kj::Promise<void> ping(PingContext) override { return kj::READY_NOW; }
  // The count of pulls answered, shared so that it outlives this object
  // (the server drops the capability when it closes the link or forks).
  std::shared_ptr<const int> pulls() const { return pulls_; }

 private:
  const uint64_t replica_id_, incarnation_;
  const Record record_;
  const std::shared_ptr<int> pulls_ = std::make_shared<int>(0);
};

// An hlc a day ahead of now: beyond any clock of these servers.
uint64_t Ahead() {
  const int64_t day = 24 * 3600 * 1000;
  return MakeHlc(static_cast<uint64_t>(absl::ToUnixMillis(absl::Now()) + day), 0);
}

class LyingWatermarksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::UseTestUser();
    // Fred: another user, a friend of the servers' user.
    fred_ = *auth::Identity::CreateUser(dir_.Sub("fred"), "fred");
    TlsIdentity fred_tls{*auth::SigningKey::FromSeed(fred_->device_key().seed()),
                         *fred_->IssueOwnCertificate("phone", absl::ToUnixMillis(absl::Now()))};
    fred_device_ = fred_tls.key->public_key();
    // Friend commands open the directory: made before the server serves.
    a_ = testing::StartReplica(dir_, "a", {}, {"--tombstone-min-age", "0s"});
    ASSERT_NE(a_, nullptr);
    ASSERT_EQ(a_->Stop(SIGTERM), 0) << a_->Log();
    testing::RunResult add =
        testing::Run({testing::RunfilePath("cli/peerkv"), "--data", dir_.Sub("a"), "friend", "add",
                      auth::UserId(fred_->user()), "--name", "fred"});
    ASSERT_EQ(add.exit_code, 0) << add.err << add.out;
    a_ = testing::StartReplica(dir_, "a", {}, {"--tombstone-min-age", "0s"});
    ASSERT_NE(a_, nullptr);

    std::optional<std::pair<TlsIdentity, auth::PublicKey>> own = DefaultClientTls();
    ASSERT_TRUE(own.has_value());
    user_ = own->second;
    own_device_ = own->first.key->public_key();
    own_identity_ = own->first;
    absl::StatusOr<std::unique_ptr<TlsEndpoint>> tls =
        TlsEndpoint::Create(own->first, io_->provider->getTimer(), 10'000);
    ASSERT_THAT(tls, IsOk());
    own_tls_ = std::move(*tls);
    tls = TlsEndpoint::Create(fred_tls, io_->provider->getTimer(), 10'000);
    ASSERT_THAT(tls, IsOk());
    fred_tls_ = std::move(*tls);

    client_ = testing::ConnectTo(*a_);
    ASSERT_NE(client_, nullptr);
    absl::StatusOr<ServerStatus> status = client_->Status();
    ASSERT_THAT(status, IsOk());
    self_ = status->replica_id;
    incarnation_ = status->incarnation;
  }
  void TearDown() override {
    client_.reset();
    for (auto* server : {&c_, &b_, &a_}) {
      if (*server != nullptr) {
        EXPECT_EQ((*server)->Stop(SIGTERM), 0) << (*server)->Log();
      }
    }
  }

  // Replica ids the two devices may say hello as (one per incarnation:
  // one hello per connection, a replica per link).
  uint64_t Own(uint64_t incarnation) const {
    return DeriveReplicaId(own_device_.view(), incarnation);
  }
  uint64_t Fred(uint64_t incarnation) const {
    return DeriveReplicaId(fred_device_.view(), incarnation);
  }
  std::unique_ptr<RawPeer> OwnPeer() {
    return std::make_unique<RawPeer>(*io_, *own_tls_, a_->address(), user_);
  }
  std::unique_ptr<RawPeer> FriendPeer() {
    return std::make_unique<RawPeer>(*io_, *fred_tls_, a_->address(), user_);
  }

  // Server a's status once the engine linked `peer` (or forked, or 10 s
  // passed): its hello's effects are handled off the loop that answered it.
  ServerStatus StatusOnceLinked(uint64_t peer) {
    ServerStatus status;
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    for (int polls = 0; polls < 1000 && absl::Now() < deadline; ++polls) {
      absl::StatusOr<ServerStatus> now = client_->Status();
      if (!now.ok()) break;
      status = *now;
      if (status.replica_id != self_) break;
      for (const replication::PeerStatus& p : status.peers) {
        if (p.replica_id == peer) return status;
      }
      absl::SleepFor(absl::Milliseconds(20));  // another process: polled
    }
    return status;
  }

  // Every key of "ks" a puller gets from a_ as `requester`, claiming `claimed`.
  std::set<std::string> PullAll(RawPeer& peer, uint64_t requester, const Watermarks& claimed) {
    std::set<std::string> keys;
    uint64_t after = 0;
    for (int pages = 0; pages < 100; ++pages) {
      absl::StatusOr<Page> page = peer.Pull(requester, claimed, incarnation_, after);
      EXPECT_THAT(page, IsOk());
      if (!page.ok()) break;
      for (const Record& r : page->records) {
        // The reserved keyspaces (devices, friends) travel too.
        if (r.keyspace == "ks") keys.insert(r.keyspace + "/" + r.key);
      }
      after = page->last_seq;
      if (page->last_seq >= page->max_seq) break;
    }
    return keys;
  }

  testing::TempDir dir_;
  std::unique_ptr<auth::Identity> fred_;
  auth::PublicKey fred_device_;
  auth::PublicKey own_device_;
  auth::PublicKey user_;
  std::unique_ptr<testing::ServerProcess> a_, b_, c_;
  // On the heap: its destructor may throw, the fixture's may not.
  std::unique_ptr<kj::AsyncIoContext> io_ =
      std::make_unique<kj::AsyncIoContext>(kj::setupAsyncIo());
  std::unique_ptr<TlsEndpoint> own_tls_, fred_tls_;
  // A device of the servers' user (not a server): its key and certificate.
  TlsIdentity own_identity_;
  std::unique_ptr<Client> client_;
  uint64_t self_ = 0;
  uint64_t incarnation_ = 0;
};

TEST_F(LyingWatermarksTest, MadeUpWatermarksSuppressNoOriginForAnyoneElse) {
  // Records of two origins at a: its own, and b's (b dials a).
  b_ = testing::StartReplica(dir_, "b", {a_->address()});
  ASSERT_NE(b_, nullptr);
  std::unique_ptr<Client> at_b = testing::ConnectTo(*b_);
  ASSERT_NE(at_b, nullptr);
  std::set<std::string> all;
  for (int i = 0; i < 3; ++i) {
    ASSERT_THAT(client_->Put("ks", absl::StrCat("a", i), "v"), IsOk());
    ASSERT_THAT(at_b->Put("ks", absl::StrCat("b", i), "v"), IsOk());
    all.insert(absl::StrCat("ks/a", i));
    all.insert(absl::StrCat("ks/b", i));
  }
  ASSERT_TRUE(testing::Converged({a_.get(), b_.get()}, absl::Seconds(30)));
  absl::StatusOr<ServerStatus> at_b_status = at_b->Status();
  ASSERT_THAT(at_b_status, IsOk());
  const uint64_t b_id = at_b_status->replica_id;

  // The liars claim every write of b, and of an origin nobody has.
  Watermarks lie;
  lie.Raise(b_id, Ahead());
  lie.Raise(0x0123456789abcdef, Ahead());
  std::unique_ptr<RawPeer> own_liar = OwnPeer();
  ASSERT_THAT(own_liar->Hello(Own(7), 7), IsOk());
  // What it says shapes its own answers only: it gets none of b's.
  std::set<std::string> got = PullAll(*own_liar, Own(7), lie);
  EXPECT_EQ(got, (std::set<std::string>{"ks/a0", "ks/a1", "ks/a2"}));
  own_liar->Nudge(lie);
  std::unique_ptr<RawPeer> friend_liar = FriendPeer();
  ASSERT_THAT(friend_liar->Hello(Fred(7), 7), IsOk());
  // Fred may read nothing of a's: served, and empty.
  EXPECT_THAT(PullAll(*friend_liar, Fred(7), lie), ::testing::IsEmpty());
  friend_liar->Nudge(lie);
  // The lies a has heard are handled before the next hello's link is.
  StatusOnceLinked(Fred(7));

  // An honest puller gets every origin's records.
  std::unique_ptr<RawPeer> honest = OwnPeer();
  ASSERT_THAT(honest->Hello(Own(8), 8), IsOk());
  EXPECT_EQ(PullAll(*honest, Own(8), Watermarks{}), all);
  // So does a third replica that meets a only now, and b still holds them.
  c_ = testing::StartReplica(dir_, "c", {a_->address()});
  ASSERT_NE(c_, nullptr);
  ASSERT_TRUE(testing::Converged({a_.get(), b_.get(), c_.get()}, absl::Seconds(30)));
  std::unique_ptr<Client> at_c = testing::ConnectTo(*c_);
  ASSERT_NE(at_c, nullptr);
  for (const std::string& key : all) {
    absl::StatusOr<std::optional<Record>> held = at_c->Get("ks", key.substr(3));
    ASSERT_THAT(held, IsOk());
    EXPECT_TRUE(held->has_value()) << key;
  }
  absl::StatusOr<ServerStatus> status = client_->Status();
  ASSERT_THAT(status, IsOk());
  EXPECT_EQ(status->replica_id, self_);
}

TEST_F(LyingWatermarksTest, ALyingAcknowledgementCollectsNoTombstoneAnotherPeerLacks) {
  // A keyspace Fred may read: only there does his device hold collection
  // back (of a keyspace he may not read he never gets the tombstone).
  ASSERT_THAT(client_->SetPolicy("shared", {auth::Who{auth::Who::Kind::kUser, fred_->user(), ""}},
                                 {}),
              IsOk());
  ASSERT_THAT(client_->Put("shared", "k", "v"), IsOk());
  ASSERT_THAT(client_->Delete("shared", "k"), IsOk());
  // Two devices of the user meet a; the honest one holds nothing yet.
  std::unique_ptr<RawPeer> honest = OwnPeer();
  ASSERT_THAT(honest->Hello(Own(8), 8), IsOk());
  absl::StatusOr<Page> first = honest->Pull(Own(8), Watermarks{});
  ASSERT_THAT(first, IsOk());
  // What a holds: the claim that covers the tombstone.
  const Watermarks everything = first->watermarks;
  ASSERT_FALSE(everything.empty());
  std::unique_ptr<RawPeer> liar = OwnPeer();
  ASSERT_THAT(liar->Hello(Own(7), 7), IsOk());
  // It claims all of a without having pulled anything.
  ASSERT_THAT(liar->Pull(Own(7), everything), IsOk());
  // Nor may it acknowledge as the honest device.
  EXPECT_THAT(liar->Pull(Own(8), everything),
              StatusIs(absl::StatusCode::kPermissionDenied, "pull names requester"));
  // A friend's acknowledgement is not counted either.
  std::unique_ptr<RawPeer> fred = FriendPeer();
  ASSERT_THAT(fred->Hello(Fred(7), 7), IsOk());
  ASSERT_THAT(fred->Pull(Fred(7), everything), IsOk());

  absl::StatusOr<CompactResult> compacted = client_->Compact("shared");
  ASSERT_THAT(compacted, IsOk());
  EXPECT_EQ(compacted->tombstones_collected, 0u);
  absl::StatusOr<ServerStatus> status = client_->Status();
  ASSERT_THAT(status, IsOk());
  EXPECT_EQ(status->tombstones, 1u);
  // The honest device holding it is not enough: the friend's device, met,
  // is waited for by the checkpoint into a's log it merged (its watermarks
  // are not its word), and it has merged nothing.
  ASSERT_THAT(honest->Pull(Own(8), everything), IsOk());
  compacted = client_->Compact("shared");
  ASSERT_THAT(compacted, IsOk());
  EXPECT_EQ(compacted->tombstones_collected, 0u);
  // Once it has merged past the tombstone, it goes: the lie was what was
  // waited out.
  ASSERT_THAT(fred->Pull(Fred(7), Watermarks{}, incarnation_, first->max_seq, first->max_seq),
              IsOk());
  compacted = client_->Compact("shared");
  ASSERT_THAT(compacted, IsOk());
  EXPECT_EQ(compacted->tombstones_collected, 1u);
}

TEST_F(LyingWatermarksTest, AFriendsClaimsAboutThisReplicaDoNotMakeItFork) {
  for (int i = 0; i < 3; ++i) ASSERT_THAT(client_->Put("ks", absl::StrCat("k", i), "v"), IsOk());
  // A checkpoint far beyond a's log and a watermark beyond its clock.
  const replication::HeldOf beyond{.replica_id = self_,
                                   .incarnation = incarnation_,
                                   .seq = 1'000'000'000,
                                   .watermark = Ahead()};
  std::unique_ptr<RawPeer> held = FriendPeer();
  ASSERT_THAT(held->Hello(Fred(7), 7, beyond), IsOk());
  ServerStatus status = StatusOnceLinked(Fred(7));
  EXPECT_EQ(status.replica_id, self_) << a_->Log();
  // a's own id among the ones retired by forks.
  std::unique_ptr<RawPeer> retired = FriendPeer();
  ASSERT_THAT(retired->Hello(Fred(8), 8, {}, {self_}), IsOk());
  status = StatusOnceLinked(Fred(8));
  EXPECT_EQ(status.replica_id, self_) << a_->Log();
  // A pull from beyond the log's end, then with a watermark beyond a's
  // clock: served (from the start), as a pull of nothing.
  std::unique_ptr<RawPeer> puller = FriendPeer();
  ASSERT_THAT(puller->Hello(Fred(9), 9), IsOk());
  EXPECT_THAT(puller->Pull(Fred(9), Watermarks{}, incarnation_, 1'000'000'000), IsOk());
  Watermarks ahead;
  ahead.Raise(self_, Ahead());
  EXPECT_THAT(puller->Pull(Fred(9), ahead), IsOk());
  status = StatusOnceLinked(Fred(9));
  EXPECT_EQ(status.replica_id, self_) << a_->Log();
  EXPECT_THAT(a_->Log(), ::testing::Not(HasSubstr("Forked from replica id")));

  // The same claim by an own device is restore evidence (restore_guard.h):
  // the check above is about whose word it is, not what it says.
  std::unique_ptr<RawPeer> own = OwnPeer();
  ASSERT_THAT(own->Hello(Own(7), 7), IsOk());
  EXPECT_THAT(own->Pull(Own(7), ahead),
              StatusIs(absl::StatusCode::kFailedPrecondition, "restored from an older copy"));
  EXPECT_THAT(a_->WaitForLog("Forked from replica id"), HasSubstr("beyond this replica's own"));
}

// The server pulls a friend's device on its hello's back capability: a
// page holding a write of the server's own id that it lacks would be
// restore evidence from an own device; from a friend's it is refused, and
// the server keeps its id. Before, it forked.
TEST_F(LyingWatermarksTest, AFriendsPageWithAWriteOfOurOwnIdIsRefusedNotAFork) {
  ASSERT_THAT(client_->Put("ks", "k", "v"), IsOk());
  std::unique_ptr<RawPeer> fred = FriendPeer();
  auto back = kj::heap<LyingBack>(Fred(7), 7, WriteOf(self_, Ahead()));
  const std::shared_ptr<const int> lying_pulls = back->pulls();
  fred->OfferBack(std::move(back));
  ASSERT_THAT(fred->Hello(Fred(7), 7), IsOk());
  // The back answers on this loop: run it until the server pulled and
  // said so (or 10 s passed).
  const std::string refused = "a friend's word does not fork this replica";
  for (int turns = 0; turns < 200; ++turns) {
    io_->provider->getTimer().afterDelay(50 * kj::MILLISECONDS).wait(io_->waitScope);
    if (*lying_pulls > 0 && a_->Log().find(refused) != std::string::npos) break;
  }
  EXPECT_GT(*lying_pulls, 0);
  EXPECT_THAT(a_->Log(), HasSubstr(refused));
  absl::StatusOr<ServerStatus> status = client_->Status();
  ASSERT_THAT(status, IsOk());
  EXPECT_EQ(status->replica_id, self_) << a_->Log();
  absl::StatusOr<std::optional<Record>> forged = client_->Get("ks", "forged");
  ASSERT_THAT(forged, IsOk());
  EXPECT_FALSE(forged->has_value());
}

// A friend's page is restore evidence after all when each write of the
// server's own id in it that the server lacks is signed by a device of the
// server's own user (a restored replica whose lost writes only a friend's
// device held: simulation seed 1341): the friend could not have forged
// it. The server forks and, pulling the friend again, takes the write.
// Signed by the friend's own device instead, the page is refused.
TEST_F(LyingWatermarksTest, AFriendsPageWithAnOwnWriteSignedByOurUserForksAndIsTaken) {
  ASSERT_THAT(client_->Put("ks", "k", "v"), IsOk());
  // Beyond a's clock (its last write), within its skew bound (mergeable).
  const uint64_t hlc =
      MakeHlc(static_cast<uint64_t>(absl::ToUnixMillis(absl::Now()) + 10'000), 0);
  const auto signed_by = [&](const TlsIdentity& device) {
    Record write = WriteOf(self_, hlc);
    write.signature = auth::SignRecord(*device.key, device.device_certificate, write.keyspace,
                                       write.key, write.version, write.deleted, write.value);
    return write;
  };
  // Signed by Fred's device: refused, a's id kept.
  TlsIdentity fred_device{*auth::SigningKey::FromSeed(fred_->device_key().seed()),
                          *fred_->IssueOwnCertificate("phone", absl::ToUnixMillis(absl::Now()))};
  std::unique_ptr<RawPeer> by_fred = FriendPeer();
  auto fred_back = kj::heap<LyingBack>(Fred(6), 6, signed_by(fred_device));
  const std::shared_ptr<const int> fred_lying_pulls = fred_back->pulls();
  by_fred->OfferBack(std::move(fred_back));
  ASSERT_THAT(by_fred->Hello(Fred(6), 6), IsOk());
  const std::string refused = "not by a device of this replica's user";
  for (int turns = 0; turns < 200; ++turns) {
    io_->provider->getTimer().afterDelay(50 * kj::MILLISECONDS).wait(io_->waitScope);
    if (*fred_lying_pulls > 0 && a_->Log().find(refused) != std::string::npos) break;
  }
  EXPECT_THAT(a_->Log(), HasSubstr(refused));
  absl::StatusOr<ServerStatus> status = client_->Status();
  ASSERT_THAT(status, IsOk());
  ASSERT_EQ(status->replica_id, self_) << a_->Log();
  by_fred.reset();

  // Signed by a device of a's own user: a forks.
  const Record own_write = signed_by(own_identity_);
  std::unique_ptr<RawPeer> fred = FriendPeer();
  auto back = kj::heap<LyingBack>(Fred(7), 7, own_write);
  const std::shared_ptr<const int> lying_pulls = back->pulls();
  fred->OfferBack(std::move(back));
  ASSERT_THAT(fred->Hello(Fred(7), 7), IsOk());
  // The back answers on this loop: run it until the server forked (or
  // 10 s passed).
  const std::string forked = "Forked from replica id";
  for (int turns = 0; turns < 200; ++turns) {
    io_->provider->getTimer().afterDelay(50 * kj::MILLISECONDS).wait(io_->waitScope);
    if (*lying_pulls > 0 && a_->Log().find(forked) != std::string::npos) break;
  }
  EXPECT_GT(*lying_pulls, 0);
  EXPECT_THAT(a_->Log(), HasSubstr("each signed by a device of this replica's user, sent by a "
                                   "friend's device. Forked from replica id"));
  status = client_->Status();
  ASSERT_THAT(status, IsOk());
  EXPECT_NE(status->replica_id, self_) << a_->Log();
  // The fork closed the link; met again, the friend's page is merged (the
  // write is now of a foreign origin, the id a retired).
  fred.reset();
  std::unique_ptr<RawPeer> again = FriendPeer();
  auto back_again = kj::heap<LyingBack>(Fred(8), 8, own_write);
  const std::shared_ptr<const int> lying_again_pulls = back_again->pulls();
  again->OfferBack(std::move(back_again));
  ASSERT_THAT(again->Hello(Fred(8), 8), IsOk());
  absl::StatusOr<std::optional<Record>> taken;
  for (int turns = 0; turns < 200; ++turns) {
    io_->provider->getTimer().afterDelay(50 * kj::MILLISECONDS).wait(io_->waitScope);
    taken = client_->Get("ks", "forged");
    if (*lying_again_pulls > 0 && taken.ok() && taken->has_value()) break;
  }
  ASSERT_THAT(taken, IsOk());
  ASSERT_TRUE(taken->has_value()) << a_->Log();
  EXPECT_EQ((*taken)->version, own_write.version);
  EXPECT_EQ((*taken)->value, "v");
}

TEST_F(LyingWatermarksTest, AStrangersDeviceCanNeitherHelloPullNudgeNorPush) {
  ASSERT_THAT(client_->Put("ks", "k", "v"), IsOk());
  const uint64_t fingerprint = testing::FingerprintOf(*a_);
  std::unique_ptr<auth::Identity> mallory = *auth::Identity::CreateUser(dir_.Sub("m"), "mallory");
  TlsIdentity tls{*auth::SigningKey::FromSeed(mallory->device_key().seed()),
                  *mallory->IssueOwnCertificate("laptop", absl::ToUnixMillis(absl::Now()))};
  absl::StatusOr<std::unique_ptr<TlsEndpoint>> endpoint =
      TlsEndpoint::Create(tls, io_->provider->getTimer(), 10'000);
  ASSERT_THAT(endpoint, IsOk());
  const uint64_t id = DeriveReplicaId(tls.key->public_key().view(), 7);
  Watermarks lie;
  lie.Raise(self_, Ahead());
  // Each on a connection of its own: whatever it asks, it is not answered
  // (the connection is closed after the handshake; TLS 1.3 lets the
  // client's side finish first, so the call, not the dial, fails). Checked
  // to fail as an own device (every call then reaches the service).
  const std::vector<std::pair<std::string, std::function<absl::Status(RawPeer&)>>> calls = {
      {"hello", [&](RawPeer& p) { return p.Hello(id, 7); }},
      {"pull", [&](RawPeer& p) { return p.Pull(id, lie).status(); }},
      {"nudge",
       [&](RawPeer& p) {
         p.Nudge(lie);
         return absl::OkStatus();
       }},
      {"push", [&](RawPeer& p) { return p.Reconcile(std::string(64, 'x')); }},
  };
  for (const auto& [what, call] : calls) {
    absl::Status answered = absl::OkStatus();
    kj::Maybe<kj::Exception> thrown = kj::runCatchingExceptions([&] {
      RawPeer peer(*io_, **endpoint, a_->address(), user_);
      answered = call(peer);
    });
    // Not refused by the service (an error answer, as an own device's pull
    // before hello would get): the connection is gone.
    EXPECT_TRUE(thrown != nullptr) << what << " reached the service: " << answered;
    KJ_IF_MAYBE(e, thrown) {
      EXPECT_EQ(e->getType(), kj::Exception::Type::DISCONNECTED) << what << ": " << e->getDescription().cStr();
    }
  }
  EXPECT_THAT(a_->WaitForLog("refused device " + auth::DeviceId(tls.key->public_key())),
              HasSubstr("not a device of user"));
  // Nothing linked, nothing changed, still serving its own.
  absl::StatusOr<ServerStatus> status = client_->Status();
  ASSERT_THAT(status, IsOk());
  EXPECT_EQ(status->replica_id, self_);
  for (const replication::PeerStatus& p : status->peers) EXPECT_NE(p.replica_id, id);
  EXPECT_EQ(testing::FingerprintOf(*a_), fingerprint);
  EXPECT_THAT(client_->Get("ks", "k"), IsOk());
}

}  // namespace
}  // namespace peerkv::rpc
