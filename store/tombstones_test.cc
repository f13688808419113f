// store/tombstones_test.cc: tombstone collection (store/tombstones.cc): the
// rule (age by this replica's clock and by each acknowledging peer's, this
// replica's and every peer's acknowledged watermarks, a friend's device's
// merged checkpoint), the
// peer that holds collection back, ForgetPeer, stale records refused and
// answered with a fresh tombstone, and the log, counters and range
// fingerprints kept consistent across collection and reopening.
#include <atomic>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "store/store.h"
#include "testing/temp_dir.h"

namespace peerkv {
namespace {

using absl::StatusCode;

constexpr int64_t kT0 = 1'700'000'000'000;
constexpr int64_t kMinAge = 60'000;
constexpr uint64_t kPeerA = 0xa0a0;
constexpr uint64_t kPeerB = 0xb0b0;
constexpr uint64_t kOrigin = 0x7777;

class TombstoneTest : public ::testing::Test {
 protected:
  StoreOptions Options() {
    StoreOptions options;
    options.dir = dir_.Sub("db");
    options.wall_clock = &wall_;
    options.sync = false;
    options.tombstone_min_age_ms = kMinAge;
    options.tombstone_collect_interval = absl::ZeroDuration();
    return options;
  }
  std::unique_ptr<Store> Open() {
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(Options());
    EXPECT_THAT(store, IsOk());
    return store.ok() ? std::move(*store) : nullptr;
  }
  static Record Remote(const std::string& key, int64_t millis, uint64_t origin,
                       bool deleted = false) {
    return Record{"ks", key, Version{MakeHlc(kT0 + millis, 0), origin}, deleted,
                  deleted ? "" : "v-" + key, 0};
  }
  // Everything of `store`'s own writes up to now (and of kOrigin's, if
  // `origin`: a peer that knows kOrigin).
  Watermarks HoldsAll(const Store& store, bool origin = false) const {
    Watermarks marks{{store.replica_id(), MakeHlc(wall_.NowMillis() + 1, 0)}};
    if (origin) marks.Raise(kOrigin, MakeHlc(wall_.NowMillis() + 1, 0));
    return marks;
  }
  std::optional<Record> Get(Store& store, const std::string& key) {
    absl::StatusOr<std::optional<Record>> got = store.Get("ks", key);
    EXPECT_THAT(got, IsOk());
    return got.ok() ? *got : std::nullopt;
  }

  // kOrigin wrote k (this replica's watermarks cover kOrigin's writes up
  // to it), then k was deleted here 100 ms later: the tombstone's version.
  Version WriteThenDelete(Store& store) {
    EXPECT_THAT(store.Merge({Remote("k", 1, kOrigin)},
                            CheckpointUpdate{kPeerA, PeerCheckpoint{1, 1, 0},
                                             Watermarks{{kOrigin, MakeHlc(kT0 + 10, 0)}}}),
                IsOk());
    wall_.Advance(100);
    EXPECT_THAT(store.Delete("ks", "k"), IsOk());
    const std::optional<Record> tombstone = Get(store, "k");
    EXPECT_NE(tombstone, std::nullopt);
    return tombstone.has_value() ? tombstone->version : Version{};
  }

  // `merged` won nothing and refused its one record as stale.
  static void ExpectOneStaleRefusal(const absl::StatusOr<MergeResult>& merged) {
    ASSERT_THAT(merged, IsOk());
    EXPECT_EQ(merged->won, 0u);
    ASSERT_EQ(merged->refused.size(), 1u);
    EXPECT_THAT(merged->refused[0].reason,
                StatusIs(StatusCode::kFailedPrecondition, "stale record"));
  }

  static uint64_t CollectAll(Store& store) {
    absl::StatusOr<uint64_t> collected = store.CollectAllTombstones();
    EXPECT_THAT(collected, IsOk());
    return collected.ok() ? *collected : UINT64_MAX;
  }
  static std::vector<std::string> Repaired(absl::StatusOr<std::vector<std::string>> scrub) {
    EXPECT_THAT(scrub, IsOk());
    return scrub.ok() ? *scrub : std::vector<std::string>{"(failed)"};
  }

  testing::TempDir dir_;
  ManualWallClock wall_{kT0};
};

TEST_F(TombstoneTest, CollectsOnlyWhatEveryPeerAcknowledgedOnceOldEnough) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  store->NotePeer(kPeerA);
  store->NotePeer(kPeerB);
  ASSERT_THAT(store->Put("ks", "k", "v"), IsOk());
  ASSERT_THAT(store->Put("ks", "live", "v"), IsOk());
  ASSERT_THAT(store->Delete("ks", "k"), IsOk());
  wall_.Advance(kMinAge + 1);
  // Old enough, but neither peer said what it holds.
  ASSERT_EQ(CollectAll(*store), 0u);
  store->NotePeerHolds(kPeerA, HoldsAll(*store));
  ASSERT_EQ(CollectAll(*store), 0u);
  absl::StatusOr<StoreStats> stats = store->Stats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->tombstones_held, 1u);
  EXPECT_EQ(stats->tombstones_held_by, kPeerB);
  EXPECT_EQ(stats->acknowledged_peers, 2u);
  store->NotePeerHolds(kPeerB, HoldsAll(*store));
  ASSERT_EQ(CollectAll(*store), 1u);
  EXPECT_EQ(Get(*store, "k"), std::nullopt);
  EXPECT_NE(Get(*store, "live"), std::nullopt);
  stats = store->Stats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->tombstones, 0u);
  EXPECT_EQ(stats->tombstones_collected, 1u);
  EXPECT_EQ(stats->tombstones_held, 0u);
  EXPECT_EQ(stats->live_records, 1u);
  // The range fingerprints moved with it: a scrub finds nothing to repair.
  EXPECT_EQ(Repaired(store->ScrubRangeFingerprints()), std::vector<std::string>{});
}

TEST_F(TombstoneTest, YoungTombstonesStay) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  ASSERT_THAT(store->Delete("ks", "k"), IsOk());
  wall_.Advance(kMinAge - 1000);
  ASSERT_EQ(CollectAll(*store), 0u);
  wall_.Advance(2000);
  // No peer ever met: the age alone decides.
  ASSERT_EQ(CollectAll(*store), 1u);
}

// Seed 7845: this replica's clock jumped a day ahead, which it cannot know
// before its next hello. By that clock alone a tombstone written seconds
// earlier was old enough; collected, an older delete from a replica it had
// never heard of, with a clock behind, later merged over nothing (a live
// write would have come back). The peer's clock reading with its
// acknowledgement says the tombstone is seconds old: it stays.
TEST_F(TombstoneTest, AgeIsMeasuredByTheAcknowledgingPeersClockToo) {
  constexpr int64_t kDay = 86'400'000;
  auto store = Open();
  ASSERT_NE(store, nullptr);
  ASSERT_THAT(store->Delete("ks", "k"), IsOk());
  wall_.Advance(5000);
  store->NotePeerHolds(kPeerA, HoldsAll(*store), /*clock_ms=*/wall_.NowMillis());
  wall_.Advance(kDay);
  ASSERT_EQ(CollectAll(*store), 0u);
  absl::StatusOr<StoreStats> stats = store->Stats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->tombstones_held, 1u);
  EXPECT_EQ(stats->tombstones_held_by, kPeerA);
  // The reading is durable with the acknowledgement it came with.
  store.reset();
  store = Open();
  ASSERT_NE(store, nullptr);
  ASSERT_EQ(CollectAll(*store), 0u);
  // The peer's clock, a minute on: old enough by both.
  store->NotePeerHolds(kPeerA, HoldsAll(*store), /*clock_ms=*/kT0 + 5000 + kMinAge);
  ASSERT_EQ(CollectAll(*store), 1u);
  EXPECT_EQ(Get(*store, "k"), std::nullopt);
}

// The peer's clock does not replace this replica's: a peer whose clock is
// a day ahead does not age a tombstone either; and an acknowledgement
// without a reading (an older peer) leaves this replica's clock alone to
// measure (not an earlier reading, which went with other watermarks).
TEST_F(TombstoneTest, AgeIsMeasuredByTheSlowerClock) {
  constexpr int64_t kDay = 86'400'000;
  auto store = Open();
  ASSERT_NE(store, nullptr);
  ASSERT_THAT(store->Delete("ks", "k"), IsOk());
  wall_.Advance(5000);
  store->NotePeerHolds(kPeerA, HoldsAll(*store), /*clock_ms=*/wall_.NowMillis() + kDay);
  ASSERT_EQ(CollectAll(*store), 0u);
  store->NotePeerHolds(kPeerA, HoldsAll(*store), /*clock_ms=*/wall_.NowMillis());
  wall_.Advance(kMinAge);
  ASSERT_EQ(CollectAll(*store), 0u);
  store->NotePeerHolds(kPeerA, HoldsAll(*store));
  ASSERT_EQ(CollectAll(*store), 1u);
}

TEST_F(TombstoneTest, ForgetPeerReleasesAndUnknownIsNotFound) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_THAT(store->ForgetPeer(kPeerA), StatusIs(StatusCode::kNotFound, "not a peer"));
  store->NotePeer(kPeerA);
  ASSERT_THAT(store->Delete("ks", "k"), IsOk());
  wall_.Advance(kMinAge + 1);
  ASSERT_EQ(CollectAll(*store), 0u);
  ASSERT_THAT(store->ForgetPeer(kPeerA), IsOk());
  EXPECT_THAT(store->ForgetPeer(kPeerA), StatusIs(StatusCode::kNotFound));
  ASSERT_EQ(CollectAll(*store), 1u);
  absl::StatusOr<StoreStats> stats = store->Stats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->forgotten_peers, 1u);
  EXPECT_EQ(stats->acknowledged_peers, 0u);
}

// A friend's device never collects this user's tombstones: collected
// before it merged the newest one of a key, the older one it holds would
// stay there for good (simulation seeds 9051, 9140). It is waited for by
// the checkpoint into this log that it merged, not by watermarks; durably,
// and only in this incarnation of the log; ForgetPeer releases it.
TEST_F(TombstoneTest, AFriendsDeviceIsWaitedForByTheCheckpointItMerged) {
  uint64_t seq = 0, incarnation = 0;
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    store->NoteFriend(kPeerA);
    ASSERT_THAT(store->Put("ks", "k", "v"), IsOk());
    ASSERT_THAT(store->Delete("ks", "k"), IsOk());
    ASSERT_THAT(store->Put("ks", "after", "v"), IsOk());
    seq = Get(*store, "k")->seq;
    incarnation = store->incarnation();
    wall_.Advance(kMinAge + 1);
    // Old enough and covered, but the friend merged nothing of the log.
    ASSERT_EQ(CollectAll(*store), 0u);
    absl::StatusOr<StoreStats> stats = store->Stats();
    ASSERT_THAT(stats, IsOk());
    EXPECT_EQ(stats->tombstones_held, 1u);
    EXPECT_EQ(stats->tombstones_held_by, kPeerA);
    EXPECT_EQ(stats->acknowledged_peers, 1u);
    // Short of the tombstone's seq; or past it in another life of the log.
    store->NoteFriendHolds(kPeerA, incarnation, seq - 1);
    ASSERT_EQ(CollectAll(*store), 0u);
    store->NoteFriendHolds(kPeerA, incarnation + 1, seq + 1);
    ASSERT_EQ(CollectAll(*store), 0u);
    EXPECT_THAT(store->FriendCheckpoints(),
                ::testing::ElementsAre(std::pair<uint64_t, uint64_t>(kPeerA, 0)));
  }
  {
    // Still waited for after reopening (persisted with the collection step).
    auto store = Open();
    ASSERT_NE(store, nullptr);
    ASSERT_EQ(CollectAll(*store), 0u);
    store->NoteFriendHolds(kPeerA, incarnation, seq);
    ASSERT_EQ(CollectAll(*store), 1u);
    EXPECT_EQ(Get(*store, "k"), std::nullopt);
    // A second friend, met later, holds a new tombstone back until forgotten.
    store->NoteFriend(kPeerB);
    ASSERT_THAT(store->Delete("ks", "after"), IsOk());
    store->NoteFriendHolds(kPeerA, incarnation, store->max_seq());
    wall_.Advance(kMinAge + 1);
    ASSERT_EQ(CollectAll(*store), 0u);
    ASSERT_THAT(store->ForgetPeer(kPeerB), IsOk());
    EXPECT_THAT(store->ForgetPeer(kPeerB), StatusIs(StatusCode::kNotFound));
    ASSERT_EQ(CollectAll(*store), 1u);
  }
}

// Issue 13: a friend's device that stays away held back the tombstones of
// every keyspace, its owner's private ones too, until `peer forget`. It
// holds back only those of keyspaces it may read now (its link's filter,
// asked at each step): a grant makes it hold again; so does reopening,
// until it is noted with its filter again.
TEST_F(TombstoneTest, AFriendsDeviceHoldsBackOnlyTheKeyspacesItMayRead) {
  auto granted = std::make_shared<std::atomic<bool>>(false);
  FriendReads reads = std::make_shared<const std::function<bool(std::string_view)>>(
      [granted](std::string_view ks) { return ks == "shared" || (ks == "later" && *granted); });
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    store->NoteFriend(kPeerA, reads);
    for (const char* ks : {"shared", "private", "later"}) {
      ASSERT_THAT(store->Put(ks, "k", "v"), IsOk());
      ASSERT_THAT(store->Delete(ks, "k"), IsOk());
    }
    // A reserved keyspace is read record by record: always held back.
    ASSERT_THAT(store->WriteReserved({Mutation{"peerkv.policies", "k", "p"}}), IsOk());
    ASSERT_THAT(store->WriteReserved({Mutation{"peerkv.policies", "k", std::nullopt}}), IsOk());
    wall_.Advance(kMinAge + 1);
    // The friend merged nothing: it holds back "shared" alone.
    ASSERT_EQ(CollectAll(*store), 2u);
    absl::StatusOr<StoreStats> stats = store->Stats();
    ASSERT_THAT(stats, IsOk());
    EXPECT_EQ(stats->tombstones_held, 2u);
    EXPECT_EQ(stats->tombstones_held_by, kPeerA);
    absl::StatusOr<std::optional<Record>> shared = store->Get("shared", "k");
    ASSERT_THAT(shared, IsOk());
    EXPECT_TRUE(shared->has_value());
    // Granted "later": its next tombstone is held back for the friend too.
    *granted = true;
    ASSERT_THAT(store->Put("later", "k2", "v"), IsOk());
    ASSERT_THAT(store->Delete("later", "k2"), IsOk());
    ASSERT_THAT(store->Put("private", "k2", "v"), IsOk());
    ASSERT_THAT(store->Delete("private", "k2"), IsOk());
    wall_.Advance(kMinAge + 1);
    ASSERT_EQ(CollectAll(*store), 1u);  // private/k2
    stats = store->Stats();
    ASSERT_THAT(stats, IsOk());
    EXPECT_EQ(stats->tombstones_held, 3u);
    ASSERT_THAT(store->Put("private", "k3", "v"), IsOk());
    ASSERT_THAT(store->Delete("private", "k3"), IsOk());
  }
  {
    // Reopened: the friend's filter is not known until it is noted again.
    auto store = Open();
    ASSERT_NE(store, nullptr);
    wall_.Advance(kMinAge + 1);
    ASSERT_EQ(CollectAll(*store), 0u);
    store->NoteFriend(kPeerA, reads);
    ASSERT_EQ(CollectAll(*store), 1u);  // private/k3
    // Once it merged them, the readable ones go too.
    store->NoteFriendHolds(kPeerA, store->incarnation(), store->max_seq());
    ASSERT_EQ(CollectAll(*store), 3u);
    absl::StatusOr<StoreStats> stats = store->Stats();
    ASSERT_THAT(stats, IsOk());
    EXPECT_EQ(stats->tombstones_held, 0u);
  }
}

TEST_F(TombstoneTest, StaleRecordIsRefusedAndAnsweredWithAFreshTombstone) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  const Version deleted = WriteThenDelete(*store);
  wall_.Advance(10);
  store->NotePeerHolds(kPeerA, HoldsAll(*store, /*origin=*/true));
  // Held back until this replica holds kOrigin's writes past the tombstone
  // (the origin floor): kOrigin could still write k below it.
  wall_.Advance(kMinAge + 1);
  ASSERT_EQ(CollectAll(*store), 0u);
  absl::StatusOr<StoreStats> held = store->Stats();
  ASSERT_THAT(held, IsOk());
  EXPECT_EQ(held->tombstones_held_by, kOrigin);
  ASSERT_THAT(store->Merge({}, CheckpointUpdate{kPeerA, PeerCheckpoint{1, 2, 0},
                                                Watermarks{{kOrigin, MakeHlc(kT0 + 200, 0)}}}),
              IsOk());
  ASSERT_EQ(CollectAll(*store), 1u);
  ASSERT_EQ(Get(*store, "k"), std::nullopt);
  // A peer restored from an old backup still holds the old value. The
  // commit listeners see the fresh tombstone's keyspace and key (they are
  // views: the mutation the writer made must outlive the listener call).
  absl::Mutex mu;
  std::vector<std::string> changed;
  const int listener = store->AddCommitListener([&](const Store::CommitInfo& info) {
    absl::MutexLock lock(&mu);
    for (const Store::CommitChange& c : *info.changes) {
      changed.push_back(std::string(c.keyspace) + "/" + std::string(c.key));
    }
  });
  absl::StatusOr<MergeResult> merged = store->Merge({Remote("k", 1, kOrigin)});
  store->RemoveCommitListener(listener);
  {
    absl::MutexLock lock(&mu);
    EXPECT_THAT(changed, ::testing::ElementsAre("ks/k"));
  }
  ExpectOneStaleRefusal(merged);
  std::optional<Record> now = Get(*store, "k");
  ASSERT_NE(now, std::nullopt);
  EXPECT_TRUE(now->deleted);
  EXPECT_EQ(now->version.origin, store->replica_id());
  EXPECT_GT(now->version, Remote("k", 1, kOrigin).version);
  absl::StatusOr<StoreStats> stats = store->Stats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->stale_refused, 1u);
  // Its tombstone is there now: the old value loses by the normal rule.
  merged = store->Merge({Remote("k", 1, kOrigin)});
  ASSERT_THAT(merged, IsOk());
  EXPECT_TRUE(merged->refused.empty());
  EXPECT_EQ(merged->won, 0u);
  // It stands for the collected tombstone, stamped just above it (below
  // the clock), so it is as old: collected again once every peer
  // acknowledged it (here already).
  EXPECT_EQ(now->version, (Version{deleted.hlc + 1, store->replica_id()}));
  ASSERT_EQ(CollectAll(*store), 1u);
}

// The fresh tombstone answering a stale record stands for the collected
// one: it must not also beat a write of the key newer than that, which
// this replica has not received yet (simulation seed 5971: stamped by the
// clock, it deleted such a write on every replica).
TEST_F(TombstoneTest, AFreshTombstoneDoesNotBeatANewerWriteNotYetReceived) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  WriteThenDelete(*store);
  store->NotePeerHolds(kPeerA, HoldsAll(*store, /*origin=*/true));
  ASSERT_THAT(store->Merge({}, CheckpointUpdate{kPeerA, PeerCheckpoint{1, 2, 0},
                                                Watermarks{{kOrigin, MakeHlc(kT0 + 200, 0)}}}),
              IsOk());
  wall_.Advance(kMinAge + 1);
  ASSERT_EQ(CollectAll(*store), 1u);
  // Another replica writes k again after the delete; it has not come here.
  const Record newer = Remote("k", 150, kPeerB);
  ExpectOneStaleRefusal(store->Merge({Remote("k", 1, kOrigin)}));
  std::optional<Record> fresh = Get(*store, "k");
  ASSERT_NE(fresh, std::nullopt);
  EXPECT_TRUE(fresh->deleted);
  EXPECT_GT(fresh->version, Remote("k", 1, kOrigin).version);
  EXPECT_LT(fresh->version, newer.version);
  absl::StatusOr<MergeResult> merged = store->Merge({newer});
  ASSERT_THAT(merged, IsOk());
  EXPECT_EQ(merged->won, 1u);
  std::optional<Record> now = Get(*store, "k");
  ASSERT_NE(now, std::nullopt);
  EXPECT_FALSE(now->deleted);
  EXPECT_EQ(now->version, newer.version);
}

TEST_F(TombstoneTest, ANewerRecordIsNotStale) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  ASSERT_THAT(store->Delete("ks", "k"), IsOk());
  wall_.Advance(kMinAge + 1);
  ASSERT_EQ(CollectAll(*store), 1u);
  // Written after the collected tombstone: beyond the horizon, merged.
  absl::StatusOr<MergeResult> merged = store->Merge({Remote("k", kMinAge, kOrigin)});
  ASSERT_THAT(merged, IsOk());
  EXPECT_EQ(merged->won, 1u);
  EXPECT_TRUE(merged->refused.empty());
}

TEST_F(TombstoneTest, AForgottenPeerCanOnlyBringWhatIsNewer) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  ASSERT_THAT(store->Delete("ks", "gone"), IsOk());
  wall_.Advance(10);
  // The peer acknowledged kOrigin up to +5 ms, which this replica never
  // claimed (it holds no watermark for kOrigin).
  store->NotePeerHolds(kPeerA, Watermarks{{kOrigin, MakeHlc(kT0 + 5, 0)},
                                          {store->replica_id(), MakeHlc(kT0 + 20, 0)}});
  wall_.Advance(kMinAge + 1);
  ASSERT_THAT(store->ForgetPeer(kPeerA), IsOk());
  ASSERT_EQ(CollectAll(*store), 1u);
  // It returns and its page brings an old record of kOrigin (covered by
  // what it was forgotten with) and a newer one.
  absl::StatusOr<MergeResult> merged =
      store->Merge({Remote("old", 2, kOrigin), Remote("new", 8, kOrigin)},
                   CheckpointUpdate{kPeerA, PeerCheckpoint{1, 2, 0}, {}});
  ASSERT_THAT(merged, IsOk());
  EXPECT_EQ(merged->won, 1u);
  ASSERT_EQ(merged->refused.size(), 1u);
  EXPECT_EQ(merged->refused[0].key, "old");
  EXPECT_NE(Get(*store, "new"), std::nullopt);
}

TEST_F(TombstoneTest, AcknowledgementsAndHorizonSurviveReopening) {
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    store->NotePeer(kPeerA);
    store->NotePeerHolds(kPeerB, HoldsAll(*store));
    ASSERT_THAT(store->Delete("ks", "k"), IsOk());
    ASSERT_EQ(CollectAll(*store), 0u);  // persists the acks
    ASSERT_THAT(store->ForgetPeer(kPeerB), IsOk());
  }
  auto store = Open();
  ASSERT_NE(store, nullptr);
  std::vector<std::pair<uint64_t, Watermarks>> acks = store->AcknowledgedPeers();
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0].first, kPeerA);
  wall_.Advance(kMinAge + 1);
  // kPeerA (met, silent) still holds it back after the restart.
  ASSERT_EQ(CollectAll(*store), 0u);
  ASSERT_THAT(store->ForgetPeer(kPeerA), IsOk());
  ASSERT_EQ(CollectAll(*store), 1u);
  absl::StatusOr<StoreStats> stats = store->Stats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->forgotten_peers, 2u);
  EXPECT_EQ(stats->log_entries, 0u);
  EXPECT_EQ(stats->tombstones, 0u);
  store.reset();
  // The counters were written with the collection.
  store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(Repaired(store->WaitForOpenScrub()), std::vector<std::string>{});
  stats = store->Stats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->tombstones, 0u);
  EXPECT_EQ(stats->log_entries, 0u);
}

// Seeds 644 and 4090: a replica collected a tombstone, then forked for a
// clock mark far ahead, which drops every watermark; what they claimed must
// still tell a record of the collected key stale, after a restart too.
TEST_F(TombstoneTest, AFreshClockForkStillTellsStaleRecords) {
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    ASSERT_THAT(store->Merge({Remote("j", 1, kOrigin), Remote("k", 1, kOrigin)},
                             CheckpointUpdate{kPeerA, PeerCheckpoint{1, 1, 0},
                                              Watermarks{{kOrigin, MakeHlc(kT0 + 10, 0)}}}),
                IsOk());
    wall_.Advance(100);
    ASSERT_THAT(store->Delete("ks", "j"), IsOk());
    ASSERT_THAT(store->Delete("ks", "k"), IsOk());
    ASSERT_THAT(store->Merge({}, CheckpointUpdate{kPeerA, PeerCheckpoint{1, 2, 0},
                                                  Watermarks{{kOrigin, MakeHlc(kT0 + 200, 0)}}}),
                IsOk());
    store->NotePeerHolds(kPeerA, HoldsAll(*store, /*origin=*/true));
    wall_.Advance(kMinAge + 1);
    ASSERT_EQ(CollectAll(*store), 2u);
    absl::StatusOr<Store::ForkResult> fork = store->Fork(UINT64_MAX, /*fresh_clock=*/true);
    ASSERT_THAT(fork, IsOk());
    ASSERT_THAT(fork->restamp_status, IsOk());
    EXPECT_FALSE(store->GetWatermarks().Covers(Remote("k", 1, kOrigin).version));
    ExpectOneStaleRefusal(store->Merge({Remote("k", 1, kOrigin)}));
    std::optional<Record> now = Get(*store, "k");
    ASSERT_NE(now, std::nullopt);
    EXPECT_TRUE(now->deleted);
  }
  // Persisted: after a restart the other key's old record is stale too.
  auto store = Open();
  ASSERT_NE(store, nullptr);
  ExpectOneStaleRefusal(store->Merge({Remote("j", 1, kOrigin)}));
}

// Seeds 456 and 1193: kOrigin was retired by a fork after writing k at 50,
// which this replica never received (it held kOrigin up to 10 when it
// learnt of the retirement); k was deleted here and the tombstone
// collected. A peer level with the fork's new id says how far kOrigin
// wrote (Store::ServedWatermarks): then the write at 50, sent later by a
// directory restored from before the fork, is stale, not a winner over
// nothing. What the peer says is evidence, never a watermark.
TEST_F(TombstoneTest, AWriteOfARetiredIdBelowItsFinalMarkIsStale) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  ASSERT_THAT(store->Merge({Remote("k", 1, kOrigin), Remote("j", 1, kOrigin)},
                           CheckpointUpdate{kPeerA, PeerCheckpoint{1, 1, 0},
                                            Watermarks{{kOrigin, MakeHlc(kT0 + 10, 0)}}}),
              IsOk());
  ASSERT_THAT(store->ForgetRetiredIds({kOrigin}), IsOk());
  wall_.Advance(100);
  ASSERT_THAT(store->Delete("ks", "k"), IsOk());
  ASSERT_THAT(store->Delete("ks", "j"), IsOk());
  // The fork's new id (kPeerB) pulled to its end: it holds kOrigin up to 60.
  ASSERT_THAT(store->Merge({}, CheckpointUpdate{kPeerB, PeerCheckpoint{1, 5, 0},
                                                Watermarks{{kPeerB, MakeHlc(kT0 + 200, 0)},
                                                           {kOrigin, MakeHlc(kT0 + 60, 0)}}}),
              IsOk());
  EXPECT_EQ(store->GetWatermarks().count(kOrigin), 0u);
  EXPECT_EQ(store->ServedWatermarks().at(kOrigin), MakeHlc(kT0 + 60, 0));
  wall_.Advance(kMinAge + 1);
  ASSERT_EQ(CollectAll(*store), 2u);
  ExpectOneStaleRefusal(store->Merge({Remote("k", 50, kOrigin)}));
  std::optional<Record> now = Get(*store, "k");
  ASSERT_NE(now, std::nullopt);
  EXPECT_TRUE(now->deleted);
  // Kept across a restart (written with the collection step).
  store.reset();
  store = Open();
  ASSERT_NE(store, nullptr);
  ExpectOneStaleRefusal(store->Merge({Remote("j", 50, kOrigin)}));
}

// Simulation seed 1557: this replica (id old) wrote k1, a backup was
// taken, and the directory went on (the lost life, here a crash and a
// restart) to write `lost` before it was lost; the copy was restored and
// forked on a peer's evidence. The new id deleted k1 later and collected
// the tombstone; then a friend's device offered the copy-era k1 of the old
// id, which no peer held as far. A restore fork drops every watermark, so
// it merged over nothing (the key came back). It is stale now: the fork
// keeps the old id up to the clock floor the id's second open found, here
// the restored copy's own open. The lost life's write is above that and
// merges, also when the restored copy restarted (and wrote under the old
// id) before the fork, an open whose floor lies above the lost life's
// writes: claimed from the latest open, `lost` would be refused as stale.
class RestoreForkTest : public TombstoneTest {
 protected:
  void Run(bool restart_before_fork) {
    const std::string db = Options().dir;
    const std::string backup = dir_.Sub("backup");
    uint64_t old_id = 0;
    Version copy_era;
    {
      auto store = Open();  // the id's first open
      ASSERT_NE(store, nullptr);
      old_id = store->replica_id();
      absl::StatusOr<Version> put = store->Put("ks", "k1", "copy-era");
      ASSERT_THAT(put, IsOk());
      copy_era = *put;
    }
    std::filesystem::copy(db, backup, std::filesystem::copy_options::recursive);
    Version lost;
    {
      wall_.Advance(1000);
      auto store = Open();  // the lost life: the id's second open there
      ASSERT_NE(store, nullptr);
      absl::StatusOr<Version> put = store->Put("ks", "lost", "lost-life");
      ASSERT_THAT(put, IsOk());
      lost = *put;
    }
    std::filesystem::remove_all(db);
    std::filesystem::copy(backup, db, std::filesystem::copy_options::recursive);
    wall_.Advance(1000);
    auto store = Open();  // the restored copy: the id's second open here
    ASSERT_NE(store, nullptr);
    ASSERT_EQ(store->replica_id(), old_id);
    if (restart_before_fork) {
      ASSERT_THAT(store->Put("ks", "restored", "restored-life"), IsOk());
      store.reset();
      wall_.Advance(1000);
      store = Open();
      ASSERT_NE(store, nullptr);
      // This open's floor is above the lost life's write.
      ASSERT_GT(store->GetLineage().gaps.back().after, lost.hlc);
    }
    // The restore guard names the latest open (its seq) and the lost
    // life's clock a peer holds.
    absl::StatusOr<Store::ForkResult> fork =
        store->Fork(store->GetLineage().opens.back().seq, /*fresh_clock=*/false, lost.hlc);
    ASSERT_THAT(fork, IsOk());
    ASSERT_THAT(fork->restamp_status, IsOk());
    // Served to this user's devices as what is held of the retired id: the
    // copy's clock, below the lost life.
    const Watermarks served = store->ServedWatermarks();
    EXPECT_EQ(served.count(old_id), 1u);
    if (served.count(old_id) == 1) {
      EXPECT_GE(served.at(old_id), copy_era.hlc);
      EXPECT_LT(served.at(old_id), lost.hlc);
    }
    EXPECT_EQ(store->GetWatermarks().count(old_id), 0u);
    // kPeerA deletes k1; every peer holds the tombstone, it is collected.
    wall_.Advance(1000);
    const Record tombstone = Remote("k1", wall_.NowMillis() - kT0, kPeerA, /*deleted=*/true);
    ASSERT_THAT(store->Merge({tombstone},
                             CheckpointUpdate{kPeerA, PeerCheckpoint{1, 1, 0},
                                              Watermarks{{kPeerA, tombstone.version.hlc}}}),
                IsOk());
    store->NotePeerHolds(kPeerA, Watermarks{{store->replica_id(), MakeHlc(wall_.NowMillis() + 1, 0)},
                                            {kPeerA, tombstone.version.hlc}});
    wall_.Advance(kMinAge + 1);
    ASSERT_GE(CollectAll(*store), 1u);
    ASSERT_EQ(Get(*store, "k1"), std::nullopt);
    // A friend's device offers the copy-era k1: stale, answered.
    ExpectOneStaleRefusal(
        store->Merge({Record{"ks", "k1", copy_era, false, "copy-era", 0}}));
    std::optional<Record> k1 = Get(*store, "k1");
    ASSERT_NE(k1, std::nullopt);
    EXPECT_TRUE(k1->deleted);
    // The lost life's write, which peers bring back, is not stale: held
    // nothing of and older than the collected tombstone, yet above what
    // the fork kept.
    ASSERT_LT(lost.hlc, tombstone.version.hlc);
    absl::StatusOr<MergeResult> back =
        store->Merge({Record{"ks", "lost", lost, false, "lost-life", 0}});
    ASSERT_THAT(back, IsOk());
    EXPECT_TRUE(back->refused.empty());
    EXPECT_EQ(back->won, 1u);
    // Kept across a restart (meta fork_marks).
    store.reset();
    store = Open();
    ASSERT_NE(store, nullptr);
    EXPECT_EQ(store->ServedWatermarks().count(old_id), 1u);
  }
};

TEST_F(RestoreForkTest, TheCopysOwnWriteIsStaleAndTheLostLifesIsNot) { Run(false); }

TEST_F(RestoreForkTest, ARestartBetweenTheRestoreAndTheForkDoesNotClaimTheLostLife) {
  Run(true);
}

// Seed 4090: an older tombstone of a collected key must not merge again
// over nothing: it would stand where the newer one stood, and a write
// between the two (covered, so stale) would then win over it.
TEST_F(TombstoneTest, AnOldTombstoneOverNothingIsDropped) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  ASSERT_THAT(store->Merge({Remote("k", 1, kOrigin, /*deleted=*/true)},
                           CheckpointUpdate{kPeerA, PeerCheckpoint{1, 1, 0},
                                            Watermarks{{kOrigin, MakeHlc(kT0 + 10, 0)}}}),
              IsOk());
  wall_.Advance(100);
  ASSERT_THAT(store->Delete("ks", "k"), IsOk());
  ASSERT_THAT(store->Merge({}, CheckpointUpdate{kPeerA, PeerCheckpoint{1, 2, 0},
                                                Watermarks{{kOrigin, MakeHlc(kT0 + 200, 0)}}}),
              IsOk());
  store->NotePeerHolds(kPeerA, HoldsAll(*store, /*origin=*/true));
  wall_.Advance(kMinAge + 1);
  ASSERT_EQ(CollectAll(*store), 1u);
  absl::StatusOr<MergeResult> merged = store->Merge({Remote("k", 1, kOrigin, /*deleted=*/true)});
  ASSERT_THAT(merged, IsOk());
  EXPECT_EQ(merged->won, 0u);
  EXPECT_TRUE(merged->refused.empty());
  EXPECT_EQ(Get(*store, "k"), std::nullopt);
  // The write between the two tombstones is stale, not a winner.
  merged = store->Merge({Remote("k", 5, kOrigin)});
  ASSERT_THAT(merged, IsOk());
  EXPECT_EQ(merged->won, 0u);
  ASSERT_EQ(merged->refused.size(), 1u);
  std::optional<Record> now = Get(*store, "k");
  ASSERT_NE(now, std::nullopt);
  EXPECT_TRUE(now->deleted);
}

// Seed 9445: a record waiting in quarantine (too far ahead when it came)
// holds its key's newer tombstone back; collected first, the record would
// merge over nothing once released.
TEST_F(TombstoneTest, ATombstoneWhoseKeyIsInQuarantineStays) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  constexpr int64_t kAhead = 120'000;  // beyond max_clock_skew_ms (60 s)
  absl::StatusOr<MergeResult> merged = store->Merge({Remote("k", kAhead, kOrigin)});
  ASSERT_THAT(merged, IsOk());
  ASSERT_EQ(merged->quarantined.size(), 1u);
  // Real time passes the record (nobody retried the quarantine yet), and
  // the key is deleted here with a newer version.
  wall_.Advance(kAhead + 1000);
  ASSERT_THAT(store->Delete("ks", "k"), IsOk());
  wall_.Advance(kMinAge + 1);
  ASSERT_EQ(CollectAll(*store), 0u);
  absl::StatusOr<StoreStats> stats = store->Stats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->tombstones_held, 1u);
  EXPECT_EQ(stats->tombstones_held_by, kOrigin);
  // Released, it loses to the tombstone; then the tombstone may go.
  absl::StatusOr<MergeResult> due = store->RetryQuarantined();
  ASSERT_THAT(due, IsOk());
  EXPECT_EQ(due->won, 0u);
  ASSERT_EQ(CollectAll(*store), 1u);
  EXPECT_EQ(Get(*store, "k"), std::nullopt);
}

TEST_F(TombstoneTest, BoundedStepsCoverEveryRecord) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  std::vector<Mutation> deletes;
  for (int i = 0; i < 250; ++i) {
    deletes.push_back(Mutation{"ks", "k" + std::to_string(i), std::nullopt});
    deletes.push_back(Mutation{"ks", "l" + std::to_string(i), "v"});
  }
  ASSERT_THAT(store->Write(deletes), IsOk());
  wall_.Advance(kMinAge + 1);
  uint64_t collected = 0;
  for (int i = 0; i < 100; ++i) {
    absl::StatusOr<Store::CollectResult> step = store->CollectTombstones(64);
    ASSERT_THAT(step, IsOk());
    EXPECT_LE(step->examined, 64u);
    collected += step->collected;
    if (step->reached_end) break;
  }
  EXPECT_EQ(collected, 250u);
  EXPECT_EQ(Repaired(store->ScrubRangeFingerprints()), std::vector<std::string>{});
}

}  // namespace
}  // namespace peerkv
