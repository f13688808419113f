// rpc/friend_replication_test.cc: replication with a friend's device over
// TLS, two in-process servers (README "Filtered replication"). Mallory is
// Jane's friend but may read only Jane's "shared": Mallory's server dials
// Jane's, both pull and reconcile both ways, and Mallory's replica ends with
// 0 records, 0 keys and 0 keyspace names of Jane's "blog" and "drafts" (and
// Jane's with nothing of Mallory's, whose Access lets Jane read nothing),
// while "shared" does arrive; Mallory adopted none of Jane's watermarks;
// Mallory's client API (a watch) is refused without naming a keyspace.
// Fails if the pull or the reconcile filter is removed.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "auth/access.h"
#include "auth/identity.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rpc/client.h"
#include "rpc/server.h"
#include "store/store.h"
#include "testing/temp_dir.h"

namespace peerkv::rpc {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

// The local user may do everything; `friend_user` may read `readable`
// only; nobody else anything.
class FakeAccess final : public auth::Access {
 public:
  FakeAccess(auth::PublicKey friend_user, std::vector<std::string> readable)
      : friend_user_(friend_user), readable_(std::move(readable)) {}
  bool MayRead(const auth::Principal& who, std::string_view ks) const override {
    if (who.local_user) return true;
    return who.user == friend_user_ &&
           std::find(readable_.begin(), readable_.end(), ks) != readable_.end();
  }
  bool MayWrite(const auth::Principal& who, std::string_view) const override {
    return who.local_user;
  }
  bool RequiresSignature(std::string_view) const override { return false; }

 private:
  const auth::PublicKey friend_user_;
  const std::vector<std::string> readable_;
};

struct Side {
  std::unique_ptr<auth::Identity> identity;
  TlsIdentity tls;
  std::unique_ptr<Store> store;
  std::unique_ptr<Server> server;
};

class FriendReplicationTest : public ::testing::Test {
 protected:
  void MakeSide(Side& side, const std::string& name, int64_t tombstone_min_age_ms = -1) {
    absl::StatusOr<std::unique_ptr<auth::Identity>> id =
        auth::Identity::CreateUser(dir_.Sub(name + "-keys"), name);
    ASSERT_THAT(id, IsOk());
    side.identity = std::move(*id);
    side.tls.key = *auth::SigningKey::FromSeed(side.identity->device_key().seed());
    absl::StatusOr<std::string> cert =
        side.identity->IssueOwnCertificate("laptop", absl::ToUnixMillis(absl::Now()));
    ASSERT_THAT(cert, IsOk());
    side.tls.device_certificate = *cert;
    StoreOptions options;
    options.dir = dir_.Sub(name);
    options.sync = false;
    options.replica_id_key = std::string(side.identity->device_key().public_key().view());
    if (tombstone_min_age_ms >= 0) options.tombstone_min_age_ms = tombstone_min_age_ms;
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
    ASSERT_THAT(store, IsOk());
    side.store = std::move(*store);
  }
  void StartSide(Side& side, const Side& other, std::vector<std::string> readable,
                 std::vector<std::string> peers) {
    ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.tls = side.tls;
    const auth::PublicKey user = side.identity->user();
    const auth::PublicKey friend_user = other.identity->user();
    options.trust = [user, friend_user]() -> absl::StatusOr<TrustView> {
      return TrustView{user, {}, {auth::FriendEntry{friend_user, "friend", 0}}};
    };
    options.access = std::make_shared<FakeAccess>(friend_user, std::move(readable));
    options.replica_name = "side";
    options.replication.peers = std::move(peers);
    options.replication.reconcile_interval = absl::Milliseconds(100);
    options.replication.reconcile_min_gap = absl::Milliseconds(50);
    options.replication.backoff_max = absl::Milliseconds(200);
    absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(side.store.get(), options);
    ASSERT_THAT(server, IsOk());
    side.server = std::move(*server);
  }
  static std::vector<std::string> Names(const Store& store) {
    std::vector<std::string> names;
    absl::StatusOr<std::vector<std::pair<std::string, rbsr::Fingerprint>>> roots =
        store.KeyspaceFingerprints();
    EXPECT_THAT(roots, IsOk());
    if (!roots.ok()) return names;
    for (const auto& [ks, root] : *roots) names.push_back(ks);
    return names;
  }
  // The reconcile sessions `side` ran with its peer, once both finished
  // at least `n` (bounded wait: another thread runs them).
  static bool WaitForReconciles(const Side& side, uint64_t n) {
    for (int i = 0; i < 1000; ++i) {
      std::vector<replication::PeerStatus> peers = side.server->PeerStatuses();
      if (!peers.empty() && peers[0].reconciles >= n) return true;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return false;
  }

  // Once each side has run 3 reconcile sessions: each side's last one ended
  // complete and without error; its result text (Mallory's, then Jane's)
  // is appended to `results`.
  void ExpectCleanReconciles(std::vector<std::string>* results) {
    ASSERT_TRUE(WaitForReconciles(mallory_, 3));
    ASSERT_TRUE(WaitForReconciles(jane_, 3));
    for (const Side* side : {&mallory_, &jane_}) {
      std::vector<replication::PeerStatus> peers = side->server->PeerStatuses();
      ASSERT_EQ(peers.size(), 1u);
      EXPECT_THAT(peers[0].last_reconcile_result, Not(HasSubstr("incomplete")));
      EXPECT_EQ(peers[0].last_error, "");
      results->push_back(peers[0].last_reconcile_result);
    }
  }

  testing::TempDir dir_;
  Side jane_, mallory_;
};

TEST_F(FriendReplicationTest, ANonReaderGetsNoRecordsKeysOrNamesByPullOrReconcile) {
  MakeSide(jane_, "jane");
  MakeSide(mallory_, "mallory");
  ASSERT_NE(jane_.store, nullptr);
  ASSERT_NE(mallory_.store, nullptr);
  ASSERT_THAT(jane_.store->Put("shared", "hello", "for friends"), IsOk());
  for (int i = 0; i < 20; ++i) {
    ASSERT_THAT(jane_.store->Put("blog", absl::StrCat("post", i), "secret post"), IsOk());
    ASSERT_THAT(jane_.store->Put("drafts", absl::StrCat("draft", i), "secret draft"), IsOk());
  }
  ASSERT_THAT(mallory_.store->Put("mallory.notes", "n", "mallory's own"), IsOk());
  StartSide(jane_, mallory_, {"shared"}, {});
  // Mallory's server lets Jane read her own "shared" (as a policy signed by
  // its owner would), not Mallory's notes.
  StartSide(mallory_, jane_, {"shared"}, {jane_.server->address()});

  // "shared" arrives: the link works, by pull.
  bool arrived = false;
  for (int i = 0; i < 1000 && !arrived; ++i) {
    arrived = mallory_.store->Get("shared", "hello")->has_value();
    if (!arrived) absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_TRUE(arrived);
  // A write after the link is up goes by pull too (nudged), and more
  // reconcile sessions run both ways meanwhile.
  ASSERT_THAT(jane_.store->Put("blog", "late", "secret late post"), IsOk());
  ASSERT_THAT(jane_.store->Put("shared", "late", "for friends too"), IsOk());
  ASSERT_TRUE(WaitForReconciles(mallory_, 2));
  ASSERT_TRUE(WaitForReconciles(jane_, 2));
  for (int i = 0; i < 1000 && !mallory_.store->Get("shared", "late")->has_value(); ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_TRUE(mallory_.store->Get("shared", "late")->has_value());
  std::vector<replication::PeerStatus> peers = mallory_.server->PeerStatuses();
  ASSERT_EQ(peers.size(), 1u);
  EXPECT_EQ(peers[0].last_error, "");

  // 0 records, 0 keys, 0 names of the private keyspaces on Mallory's
  // replica; nothing of Mallory's on Jane's.
  EXPECT_THAT(Names(*mallory_.store), ElementsAre("mallory.notes", "shared"));
  EXPECT_THAT(Names(*jane_.store), ElementsAre("blog", "drafts", "shared"));
  absl::StatusOr<StoreStats> stats = mallory_.store->Stats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->live_records + stats->tombstones, 3u);
  absl::StatusOr<Changes> all = mallory_.store->ChangesSince(0, 1000);
  ASSERT_THAT(all, IsOk());
  for (const Record& r : all->records) {
    EXPECT_THAT(r.keyspace, Not(HasSubstr("blog")));
    EXPECT_THAT(r.key, Not(HasSubstr("post")));
    EXPECT_THAT(r.value, Not(HasSubstr("secret")));
  }
  // Mallory claims no coverage of Jane's writes beyond what it received:
  // Jane's watermarks (her clock, past every blog post) were never adopted.
  const Watermarks marks = mallory_.store->GetWatermarks();
  auto jane_mark = marks.find(jane_.store->replica_id());
  if (jane_mark != marks.end()) {
    EXPECT_LE(jane_mark->second, jane_.store->Get("shared", "late")->value().version.hlc);
  }
  // Mallory's device gets Jane's client API acting as Mallory: a read of
  // the blog is refused exactly as one of a keyspace that does not exist.
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(ClientOptions{
      .address = jane_.server->address(),
      .timeout = absl::Seconds(10),
      .tls = mallory_.tls,
      .server_user = jane_.identity->user()});
  ASSERT_THAT(client.status(), IsOk());
  const absl::Status blog = (*client)->Get("blog", "k").status();
  const absl::Status none = (*client)->Get("nothere", "k").status();
  EXPECT_THAT(blog, StatusIs(absl::StatusCode::kPermissionDenied, "may not read keyspace 'blog'"));
  EXPECT_THAT(none, StatusIs(absl::StatusCode::kPermissionDenied));
  std::string none_message(none.message());
  none_message.replace(none_message.find("nothere"), 7, "blog");
  EXPECT_EQ(none_message, blog.message());
  client->reset();
  mallory_.server->Stop();
  jane_.server->Stop();
}

// Issue 10: a friend's reconcile never finished where the two sides'
// policies disagree. Mallory's replica still lets Jane read "stale" (as
// after a revocation Mallory has not learned: the group record that says so
// is no longer hers to read), Jane's no longer lets Mallory read it. Both
// hold "stale", and Jane writes more to it. Before, each of Mallory's
// sessions sent "stale"'s root, Jane answered it as empty, and Mallory
// pushed the keyspace again every pass ("roots still differ after 4
// passes"); each of Jane's sessions fetched it back from Mallory's answer
// into her filtered, empty view of it. Now a session covers what both
// sides reconcile, and ends in sync.
TEST_F(FriendReplicationTest, AFriendsReconcileEndsInSyncWhenThePoliciesDisagree) {
  MakeSide(jane_, "jane");
  MakeSide(mallory_, "mallory");
  ASSERT_NE(jane_.store, nullptr);
  ASSERT_NE(mallory_.store, nullptr);
  for (int i = 0; i < 8; ++i) {
    ASSERT_THAT(jane_.store->Put("shared", absl::StrCat("s", i), "for friends"), IsOk());
    ASSERT_THAT(jane_.store->Put("stale", absl::StrCat("old", i), "read before the revocation"),
                IsOk());
  }
  // What Mallory received while she could read "stale".
  absl::StatusOr<Changes> old = jane_.store->ChangesSince(0, 1000);
  ASSERT_THAT(old, IsOk());
  std::vector<Record> had;
  for (const Record& r : old->records) {
    if (r.keyspace == "stale") had.push_back(r);
  }
  ASSERT_THAT(mallory_.store->Merge(had).status(), IsOk());
  ASSERT_THAT(jane_.store->Put("stale", "new", "written after the revocation"), IsOk());
  StartSide(jane_, mallory_, {"shared"}, {});
  StartSide(mallory_, jane_, {"shared", "stale"}, {jane_.server->address()});

  std::vector<std::string> results;
  ASSERT_NO_FATAL_FAILURE(ExpectCleanReconciles(&results));
  for (const std::string& result : results) {
    EXPECT_THAT(result, Not(HasSubstr("lacked")));
    EXPECT_THAT(result, Not(HasSubstr("fetched")));
  }
  // "shared" arrived; what Jane wrote to "stale" after the revocation did
  // not.
  for (int i = 0; i < 1000 && !mallory_.store->Get("shared", "s7")->has_value(); ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_TRUE(mallory_.store->Get("shared", "s7")->has_value());
  EXPECT_FALSE(mallory_.store->Get("stale", "new")->has_value());
  mallory_.server->Stop();
  jane_.server->Stop();
}

// Issue 13: Mallory's device holds the tombstone of a key of Jane's
// "shared" that Jane has collected (a friend's device never collects its
// owner's tombstones). Before, every session between them, from either
// side, ended "roots still differ after 4 passes": the old tombstone was
// fetched or pushed, dropped by Jane as stale, and offered again. Now
// Jane's side reconciles as if it held what it dropped on that link, and
// both sides' sessions end in sync, the key deleted on both.
TEST_F(FriendReplicationTest, AFriendsReconcileEndsInSyncOverATombstoneCollectedByTheOwner) {
  MakeSide(jane_, "jane", /*tombstone_min_age_ms=*/0);
  MakeSide(mallory_, "mallory");
  ASSERT_NE(jane_.store, nullptr);
  ASSERT_NE(mallory_.store, nullptr);
  ASSERT_THAT(jane_.store->Put("shared", "kept", "for friends"), IsOk());
  ASSERT_THAT(jane_.store->Put("shared", "gone", "deleted soon"), IsOk());
  ASSERT_THAT(jane_.store->Delete("shared", "gone"), IsOk());
  // What Mallory received of "shared" before Jane collected the tombstone.
  absl::StatusOr<Changes> log = jane_.store->ChangesSince(0, 1000);
  ASSERT_THAT(log, IsOk());
  ASSERT_THAT(mallory_.store->Merge(log->records).status(), IsOk());
  absl::StatusOr<uint64_t> collected = jane_.store->CollectAllTombstones();
  ASSERT_THAT(collected, IsOk());
  ASSERT_EQ(*collected, 1u);
  StartSide(jane_, mallory_, {"shared"}, {});
  StartSide(mallory_, jane_, {"shared"}, {jane_.server->address()});

  std::vector<std::string> results;
  ASSERT_NO_FATAL_FAILURE(ExpectCleanReconciles(&results));
  EXPECT_FALSE(jane_.store->Get("shared", "gone")->has_value());
  absl::StatusOr<std::optional<Record>> there = mallory_.store->Get("shared", "gone");
  ASSERT_THAT(there, IsOk());
  ASSERT_TRUE(there->has_value());
  EXPECT_TRUE((*there)->deleted);
  mallory_.server->Stop();
  jane_.server->Stop();
}

}  // namespace
}  // namespace peerkv::rpc
