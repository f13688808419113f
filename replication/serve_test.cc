// replication/serve_test.cc: answering a pull: what is left out (the
// requester's own writes, what came from it, what its watermarks cover,
// values over its limit), where a pull starts (a checkpoint of another
// incarnation or beyond the log starts over), the watermarks sent, and the
// acknowledgement a pull leaves for tombstone collection.
#include "replication/serve.h"

#include "absl/strings/str_cat.h"
#include "common/status_matchers.h"
#include "replication/reconcile.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/temp_dir.h"

namespace peerkv::replication {
namespace {

using ::testing::ElementsAre;

constexpr int64_t kT0 = 1'700'000'000'000;
constexpr uint64_t kRequester = 500;

class ServeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StoreOptions options;
    options.dir = dir_.Sub("db");
    options.wall_clock = &wall_;
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
    ASSERT_THAT(store, IsOk());
    store_ = std::move(*store);
    // seq 1: local; seq 2: by origin 7 (hlc kT0+1); seq 3: by origin 8
    // (hlc kT0+2); seq 4: written by the requester; seq 5: merged from it.
    ASSERT_THAT(store_->Put("ks", "local", "l"), IsOk());
    ASSERT_THAT(store_->Merge({Remote("o7", 1, 7)}), IsOk());
    ASSERT_THAT(store_->Merge({Remote("o8", 2, 8)}), IsOk());
    ASSERT_THAT(store_->Merge({Remote("mine", 3, kRequester)}), IsOk());
    ASSERT_THAT(store_->Merge({Remote("via-it", 4, 9)},
                              CheckpointUpdate{kRequester, PeerCheckpoint{1, 1}}),
                IsOk());
  }

  static Record Remote(const std::string& key, int64_t ms, uint64_t origin,
                       std::string value = "v") {
    return Record{"ks", key, Version{MakeHlc(kT0 + ms, 0), origin}, false, std::move(value), 0};
  }

  std::vector<std::string> Keys(const PullRequest& request) {
    absl::StatusOr<PullResponse> response = ServePull(*store_, request);
    EXPECT_THAT(response, IsOk());
    std::vector<std::string> keys;
    if (response.ok()) {
      for (const Record& r : response->records) keys.push_back(r.key);
    }
    return keys;
  }

  testing::TempDir dir_;
  ManualWallClock wall_{kT0};
  std::unique_ptr<Store> store_;
};

TEST_F(ServeTest, LeavesOutWhatTheRequesterHas) {
  // The requester's own watermark covers its own write ("mine").
  const std::pair<const uint64_t, uint64_t> own{kRequester, MakeHlc(kT0 + 3, 0)};
  PullRequest request{.requester = kRequester, .incarnation = store_->incarnation()};
  request.watermarks = {own};
  EXPECT_THAT(Keys(request), ElementsAre("local", "o7", "o8"));
  request.watermarks = {own, {7, MakeHlc(kT0 + 1, 0)}};
  EXPECT_THAT(Keys(request), ElementsAre("local", "o8"));
  request.watermarks = {own, {7, MakeHlc(kT0 + 1, 0) - 1}};  // just below: still sent
  EXPECT_THAT(Keys(request), ElementsAre("local", "o7", "o8"));
  // A write of its own that its own watermark does not cover, it lacks (it
  // was restored): it is sent back, and the requester forks on seeing it.
  request.watermarks = {{kRequester, MakeHlc(kT0 + 3, 0) - 1}};
  EXPECT_THAT(Keys(request), ElementsAre("local", "o7", "o8", "mine"));
}

TEST_F(ServeTest, LeavesOutValuesOverTheRequestersLimit) {
  ASSERT_THAT(store_->Merge({Remote("big", 5, 7, std::string(100, 'v'))}), IsOk());
  PullRequest request{.requester = kRequester, .incarnation = store_->incarnation(),
                      .after_seq = 5, .max_value_bytes = 99};
  absl::StatusOr<PullResponse> response = ServePull(*store_, request);
  ASSERT_THAT(response, IsOk());
  EXPECT_TRUE(response->records.empty());
  EXPECT_EQ(response->last_seq, 6u);  // passed over, not stuck on it
}

TEST_F(ServeTest, StartsOverForAnotherIncarnationOrACheckpointBeyondTheLog) {
  PullRequest request{.requester = kRequester, .incarnation = store_->incarnation(),
                      .after_seq = 2};
  absl::StatusOr<PullResponse> response = ServePull(*store_, request);
  ASSERT_THAT(response, IsOk());
  EXPECT_EQ(response->from_seq, 2u);
  request.incarnation = store_->incarnation() + 1;
  EXPECT_EQ(ServePull(*store_, request)->from_seq, 0u);
  request.incarnation = store_->incarnation();
  request.after_seq = 1000;  // the requester saw a log this store no longer has
  EXPECT_EQ(ServePull(*store_, request)->from_seq, 0u);
}

TEST_F(ServeTest, AnswersWithItsWatermarksIncludingItsOwnClock) {
  absl::StatusOr<PullResponse> response =
      ServePull(*store_, PullRequest{.requester = kRequester});
  ASSERT_THAT(response, IsOk());
  ASSERT_EQ(response->watermarks.count(store_->replica_id()), 1u);
  // Its own entry covers its own committed write.
  absl::StatusOr<std::optional<Record>> local = store_->Get("ks", "local");
  EXPECT_GE(response->watermarks.at(store_->replica_id()), (*local)->version.hlc);
  EXPECT_EQ(response->replica_id, store_->replica_id());
  EXPECT_EQ(response->max_seq, 5u);
}

// A pull is the requester's acknowledgement for tombstone collection, with
// its clock reading: a tombstone old by this clock alone (a day ahead,
// seed 7845) but seconds old by the requester's is not collected.
TEST_F(ServeTest, APullAcknowledgesWithTheRequestersClockReading) {
  ASSERT_THAT(store_->Delete("ks", "local"), IsOk());
  PullRequest request{.requester = kRequester, .incarnation = store_->incarnation()};
  request.watermarks = store_->GetWatermarks();
  request.physical_ms = kT0 + 5000;
  wall_.Advance(8 * 24 * 3600 * 1000LL);  // past the 7-day minimum age here
  ASSERT_THAT(ServePull(*store_, request), IsOk());
  absl::StatusOr<uint64_t> collected = store_->CollectAllTombstones();
  ASSERT_THAT(collected, IsOk());
  EXPECT_EQ(*collected, 0u);
  request.physical_ms = wall_.NowMillis();
  ASSERT_THAT(ServePull(*store_, request), IsOk());
  collected = store_->CollectAllTombstones();
  ASSERT_THAT(collected, IsOk());
  EXPECT_EQ(*collected, 1u);
}

}  // namespace
}  // namespace peerkv::replication

namespace peerkv::replication {
namespace {

// A friend's link (README "Filtered replication"): what crosses to a peer
// that may read only "shared" -- a pull's page and every message of a whole
// reconcile session it drives -- names no other keyspace, key or value,
// claims no watermarks, and leaves its store with "shared" alone.
class FilteredServeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = Open("jane");
    friend_ = Open("mallory");
    ASSERT_THAT(server_->Put("shared", "hello", "for friends"), IsOk());
    for (int i = 0; i < 50; ++i) {
      ASSERT_THAT(server_->Put("blog", absl::StrCat("post", i), absl::StrCat("secret-post-", i)),
                  IsOk());
      ASSERT_THAT(server_->Put("drafts", absl::StrCat("draft", i), "secret-draft"), IsOk());
    }
    ASSERT_THAT(friend_->Put("mine", "m", "mallory's"), IsOk());
  }
  std::unique_ptr<Store> Open(const std::string& name) {
    StoreOptions options;
    options.dir = dir_.Sub(name);
    options.wall_clock = &wall_;
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
    EXPECT_THAT(store, IsOk());
    return store.ok() ? std::move(*store) : nullptr;
  }
  // Whether `bytes` mention anything of the private keyspaces.
  static void ExpectNothingPrivate(const std::string& bytes) {
    for (const char* secret : {"blog", "drafts", "post", "draft", "secret"}) {
      EXPECT_EQ(bytes.find(secret), std::string::npos) << secret;
    }
  }
  std::vector<std::string> Names(const Store& store) {
    std::vector<std::string> names;
    absl::StatusOr<std::vector<std::pair<std::string, rbsr::Fingerprint>>> roots =
        store.KeyspaceFingerprints();
    EXPECT_THAT(roots, IsOk());
    if (!roots.ok()) return names;
    for (const auto& [ks, root] : *roots) names.push_back(ks);
    return names;
  }

  testing::TempDir dir_;
  ManualWallClock wall_{kT0};
  std::unique_ptr<Store> server_;
  std::unique_ptr<Store> friend_;
  std::shared_ptr<const KeyspaceFilter> readable_ =
      std::make_shared<const KeyspaceFilter>([](std::string_view ks) { return ks == "shared"; });
};

TEST_F(FilteredServeTest, APullSendsOnlyReadableRecordsAndNoWatermarks) {
  PullRequest request{.requester = friend_->replica_id(), .max_records = 1000};
  absl::StatusOr<PullResponse> response = ServePull(*server_, request, readable_.get());
  ASSERT_THAT(response, IsOk());
  ASSERT_EQ(response->records.size(), 1u);
  EXPECT_EQ(response->records[0].keyspace, "shared");
  EXPECT_EQ(response->last_seq, response->max_seq);
  EXPECT_TRUE(response->watermarks.empty());
  // The fingerprint is that of "shared" alone (its count is 1, not 101).
  ASSERT_TRUE(response->store_fingerprint.has_value());
  EXPECT_EQ(response->store_fingerprint->count, 1u);
  EXPECT_EQ(*response->store_fingerprint, *StoreFingerprint(*server_, *readable_));
  // The friend is not waited for by watermarks, but by how far it merged
  // this log: nothing yet (merged_seq 0).
  EXPECT_TRUE(server_->AcknowledgedPeers().empty());
  EXPECT_THAT(server_->FriendCheckpoints(),
              ElementsAre(std::pair<uint64_t, uint64_t>(friend_->replica_id(), 0)));
  // Without the filter (an own device) everything goes, with watermarks.
  absl::StatusOr<PullResponse> own = ServePull(*server_, request);
  ASSERT_THAT(own, IsOk());
  EXPECT_EQ(own->records.size(), 101u);
  EXPECT_FALSE(own->watermarks.empty());
}

// A friend's device is waited for by tombstone collection up to the
// checkpoint it merged: a pipelined request asks a page ahead of it, and a
// checkpoint into another incarnation of the log counts as nothing.
TEST_F(FilteredServeTest, AFriendIsNotedByTheCheckpointItMergedNotByWhereItAsks) {
  const uint64_t max_seq = server_->max_seq();
  using Held = std::pair<uint64_t, uint64_t>;
  const uint64_t id = friend_->replica_id();
  PullRequest request{.requester = id, .incarnation = server_->incarnation(),
                      .after_seq = max_seq, .max_records = 1000, .merged_seq = max_seq - 5};
  ASSERT_THAT(ServePull(*server_, request, readable_.get()), IsOk());
  EXPECT_THAT(server_->FriendCheckpoints(), ElementsAre(Held(id, max_seq - 5)));
  // Never beyond where it asks from.
  request.merged_seq = max_seq + 7;
  request.after_seq = max_seq - 1;
  ASSERT_THAT(ServePull(*server_, request, readable_.get()), IsOk());
  EXPECT_THAT(server_->FriendCheckpoints(), ElementsAre(Held(id, max_seq - 1)));
  // A checkpoint of another life of this log: it starts over.
  request.incarnation = server_->incarnation() + 1;
  ASSERT_THAT(ServePull(*server_, request, readable_.get()), IsOk());
  EXPECT_THAT(server_->FriendCheckpoints(), ElementsAre(Held(id, 0)));
}

TEST_F(FilteredServeTest, AWholeReconcileSessionSeesOnlyReadableKeyspaces) {
  std::unique_ptr<ReconcileSource> inner = StoreReconcileSource(*server_);
  std::unique_ptr<ReconcileSource> served = FilteredReconcileSource(*inner, readable_);
  // The friend's side drives it, over its own store (which the server
  // never sees beyond what the friend pushes).
  std::unique_ptr<ReconcileSource> local = StoreReconcileSource(*friend_);
  ReconcileSession session(*local);
  std::string crossed;
  int rounds = 0;
  for (; rounds < 100; ++rounds) {
    absl::StatusOr<std::optional<ReconcileRequest>> next = session.Next();
    ASSERT_THAT(next, IsOk());
    if (!next->has_value()) break;
    // A friend's push of a keyspace it may not read is dropped (as the
    // replica service does) before the server merges it.
    std::erase_if((*next)->push, [&](const Record& r) { return !(*readable_)(r.keyspace); });
    absl::StatusOr<ReconcileResponse> answer = ServeReconcile(*served, **next, 1 << 20);
    ASSERT_THAT(answer, IsOk());
    const std::string bytes = EncodeReconcileResponse(*answer);
    crossed += bytes;
    absl::StatusOr<std::vector<Record>> fetched = session.OnResponse(*answer, bytes.size());
    ASSERT_THAT(fetched, IsOk());
    absl::StatusOr<MergeResult> merged = friend_->Merge(std::move(*fetched));
    ASSERT_THAT(merged, IsOk());
    session.NoteMerged(merged->won, merged->refused.size());
  }
  ASSERT_LT(rounds, 100);
  EXPECT_GT(rounds, 0);
  ExpectNothingPrivate(crossed);
  EXPECT_THAT(Names(*friend_), ElementsAre("mine", "shared"));
  absl::StatusOr<StoreStats> stats = friend_->Stats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->live_records, 2u);
  // The filtered source answers a private keyspace as an empty one.
  absl::StatusOr<std::optional<Record>> got = served->Get("blog", "post1");
  ASSERT_THAT(got, IsOk());
  EXPECT_FALSE(got->has_value());
}

// Issue 13: a friend's device keeps the tombstone its owner collected (it
// never collects this user's tombstones), so every session between them,
// driven from either side, ended "roots still differ after 4 passes" (the
// stale tombstone fetched or pushed, dropped, and offered again). The
// owner's side remembers what it dropped on the friend's link
// (RefusedMemory::NoteWithStaleTombstones) and reconciles as if it held
// it: both sessions end in sync, the next ones in one round, and the key
// stays deleted on both sides.
TEST_F(FilteredServeTest, SessionsWithAFriendEndInSyncOverATombstoneCollectedHere) {
  ASSERT_THAT(server_->Put("shared", "gone", "soon deleted"), IsOk());
  ASSERT_THAT(server_->Delete("shared", "gone"), IsOk());
  PullRequest request{.requester = friend_->replica_id(), .max_records = 1000};
  absl::StatusOr<PullResponse> page = ServePull(*server_, request, readable_.get());
  ASSERT_THAT(page, IsOk());
  ASSERT_THAT(friend_->Merge(page->records), IsOk());
  // The friend merged the whole log: the tombstone is collected here.
  server_->NoteFriendHolds(friend_->replica_id(), server_->incarnation(), server_->max_seq());
  wall_.Advance(absl::ToInt64Milliseconds(absl::Hours(24 * 7 + 1)));
  absl::StatusOr<uint64_t> collected = server_->CollectAllTombstones();
  ASSERT_THAT(collected, IsOk());
  ASSERT_EQ(*collected, 1u);

  RefusedMemory server_memory;  // the server's, for this friend's link
  std::unique_ptr<ReconcileSource> inner = StoreReconcileSource(*server_);
  std::unique_ptr<ReconcileSource> filtered = FilteredReconcileSource(*inner, readable_);
  std::unique_ptr<ReconcileSource> server_side = RefusedOverlay(*filtered, server_memory);
  std::unique_ptr<ReconcileSource> friend_side = StoreReconcileSource(*friend_);
  // One session of `local` (of `here`) with `remote` (of `there`); the
  // server's merges are noted in server_memory, as on a friend's link.
  auto session_of = [&](ReconcileSource& local, Store& here, ReconcileSource& remote,
                        Store& there) -> ReconcileReport {
    auto merge = [&](Store& into, std::vector<Record> records) {
      std::erase_if(records, [&](const Record& r) { return !(*readable_)(r.keyspace); });
      absl::StatusOr<MergeResult> merged = into.Merge(records);
      EXPECT_THAT(merged, IsOk());
      if (!merged.ok()) return MergeResult{};
      if (&into == server_.get()) server_memory.NoteWithStaleTombstones(records, *merged);
      return *merged;
    };
    ReconcileSession session(local);
    for (int rounds = 0; rounds < 100; ++rounds) {
      absl::StatusOr<std::optional<ReconcileRequest>> next = session.Next();
      EXPECT_THAT(next, IsOk());
      if (!next.ok() || !next->has_value()) break;
      if (!(*next)->push.empty()) merge(there, (*next)->push);
      absl::StatusOr<ReconcileResponse> answer = ServeReconcile(remote, **next, 1 << 20);
      EXPECT_THAT(answer, IsOk());
      if (!answer.ok()) break;
      absl::StatusOr<std::vector<Record>> fetched = session.OnResponse(*answer);
      EXPECT_THAT(fetched, IsOk());
      if (!fetched.ok()) break;
      const MergeResult merged = merge(here, *fetched);
      session.NoteMerged(merged.won, merged.refused.size());
    }
    return session.report();
  };
  for (int i = 0; i < 2; ++i) {
    const ReconcileReport by_friend = session_of(*friend_side, *friend_, *server_side, *server_);
    EXPECT_TRUE(by_friend.in_sync || by_friend.was_in_sync) << i << ": " << by_friend.incomplete;
    const ReconcileReport by_server = session_of(*server_side, *server_, *friend_side, *friend_);
    EXPECT_TRUE(by_server.in_sync || by_server.was_in_sync) << i << ": " << by_server.incomplete;
    if (i == 1) {
      EXPECT_TRUE(by_friend.was_in_sync);
      EXPECT_TRUE(by_server.was_in_sync);
    }
  }
  EXPECT_EQ(server_memory.size(), 1u);
  // Deleted on both sides: nothing here, the old tombstone there.
  absl::StatusOr<std::optional<Record>> here = server_->Get("shared", "gone");
  ASSERT_THAT(here, IsOk());
  EXPECT_FALSE(here->has_value());
  absl::StatusOr<std::optional<Record>> there = friend_->Get("shared", "gone");
  ASSERT_THAT(there, IsOk());
  ASSERT_TRUE(there->has_value());
  EXPECT_TRUE((*there)->deleted);
}

}  // namespace
}  // namespace peerkv::replication

namespace peerkv::replication {
namespace {

// A session that pushes more than one Store::Merge takes (kMaxBatchRecords)
// between two real stores: each request's push is merged by the
// responder's Store::Merge, as the replica service does, and every one of
// them must be taken. Before, a request pushed up to kMaxReconcileRecords
// (20,000) and the responder refused it whole ("merge batch has 20000
// records; the limit is 10000"), so the session failed every time.
TEST(ReconcilePushTest, APushOverOneMergeBatchIsSplitAndEveryPartMerged) {
  testing::TempDir dir;
  ManualWallClock wall{kT0};
  auto open = [&](const std::string& name) {
    StoreOptions options;
    options.dir = dir.Sub(name);
    options.wall_clock = &wall;
    options.sync = false;
    options.scrub_at_open = false;
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
    EXPECT_THAT(store, IsOk());
    return store.ok() ? std::move(*store) : nullptr;
  };
  std::unique_ptr<Store> initiator = open("a");
  std::unique_ptr<Store> responder = open("b");
  ASSERT_NE(initiator, nullptr);
  ASSERT_NE(responder, nullptr);
  const size_t n = kMaxBatchRecords + kMaxBatchRecords / 2;
  for (size_t i = 0; i < n;) {
    std::vector<Mutation> batch;
    for (; i < n && batch.size() < 1000; ++i) {
      batch.push_back(Mutation{"ks", absl::StrCat("k", i), "v"});
    }
    ASSERT_THAT(initiator->Write(std::move(batch)), IsOk());
  }
  std::unique_ptr<ReconcileSource> local = StoreReconcileSource(*initiator);
  std::unique_ptr<ReconcileSource> remote = StoreReconcileSource(*responder);
  ReconcileSession session(*local);
  size_t pushes = 0;
  int rounds = 0;
  for (; rounds < 100; ++rounds) {
    absl::StatusOr<std::optional<ReconcileRequest>> next = session.Next();
    ASSERT_THAT(next, IsOk());
    if (!next->has_value()) break;
    const std::string sent = EncodeReconcileRequest(**next);
    absl::StatusOr<ReconcileRequest> received = DecodeReconcileRequest(sent, kMaxValueBytes);
    ASSERT_THAT(received, IsOk());
    if (!received->push.empty()) {
      ++pushes;
      absl::StatusOr<MergeResult> merged = responder->Merge(std::move(received->push));
      ASSERT_THAT(merged, IsOk());
      received->push.clear();
    }
    absl::StatusOr<ReconcileResponse> answer = ServeReconcile(*remote, *received, 1 << 20);
    ASSERT_THAT(answer, IsOk());
    const std::string bytes = EncodeReconcileResponse(*answer);
    absl::StatusOr<std::vector<Record>> fetched = session.OnResponse(*answer, bytes.size());
    ASSERT_THAT(fetched, IsOk());
    EXPECT_TRUE(fetched->empty());
  }
  ASSERT_LT(rounds, 100);
  EXPECT_TRUE(session.report().in_sync) << session.report().incomplete;
  EXPECT_GE(pushes, 2u);  // 15,000 records: at least two merges
  EXPECT_EQ(responder->fingerprint(), initiator->fingerprint());
}

}  // namespace
}  // namespace peerkv::replication
