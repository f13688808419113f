// store/store_test.cc: the Store's operations, errors and invariants, one
// behaviour per test, over real LMDB environments in temporary directories.
#include "store/store.h"

#include <sys/stat.h>

#include <atomic>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/temp_dir.h"

namespace peerkv {
namespace {

using absl::StatusCode;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;

constexpr int64_t kT0 = 1'700'000'000'000;

class StoreTest : public ::testing::Test {
 protected:
  StoreOptions Options() {
    StoreOptions options;
    options.dir = dir_.Sub("db");
    options.wall_clock = &wall_;
    return options;
  }

  std::unique_ptr<Store> OpenStore(StoreOptions options) {
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(std::move(options));
    EXPECT_THAT(store, IsOk());
    return store.ok() ? std::move(*store) : nullptr;
  }
  std::unique_ptr<Store> OpenStore() { return OpenStore(Options()); }

  std::vector<std::string> ScanKeys(Store& store, const std::string& keyspace,
                                    ScanOptions options = {}) {
    absl::StatusOr<ScanResult> scan = store.Scan(keyspace, options);
    EXPECT_THAT(scan, IsOk());
    std::vector<std::string> keys;
    if (scan.ok()) {
      for (const Record& r : scan->records) keys.push_back(r.key);
    }
    return keys;
  }

  // A remote record stamped `millis` ms after kT0 by `origin`.
  static Record Remote(const std::string& key, int64_t millis, uint64_t origin,
                       const std::string& value, bool deleted = false) {
    return Record{"ks", key, Version{MakeHlc(kT0 + millis, 0), origin}, deleted,
                  deleted ? "" : value, 0};
  }

  testing::TempDir dir_;
  ManualWallClock wall_{kT0};
};

TEST_F(StoreTest, OpenCreatesTheDirectoryAndIds) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_NE(store->replica_id(), 0u);
  EXPECT_NE(store->incarnation(), 0u);
  EXPECT_NE(store->replica_id(), store->incarnation());
  struct stat st;
  EXPECT_EQ(::stat(dir_.Sub("db/data.mdb").c_str(), &st), 0);
}

TEST_F(StoreTest, OpenTwiceInOneProcessIsRefused) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_THAT(Store::Open(Options()),
              StatusIs(StatusCode::kFailedPrecondition, "already open in this process"));
  // The same directory reached through another spelling is still refused.
  StoreOptions other = Options();
  other.dir = dir_.path() + "/./db/";
  EXPECT_THAT(Store::Open(other), StatusIs(StatusCode::kFailedPrecondition));
  store.reset();
  EXPECT_NE(OpenStore(), nullptr);  // closing releases the directory
}

TEST_F(StoreTest, OpenRefusesAFileAndAPathThroughAFile) {
  std::ofstream(dir_.Sub("plain")) << "not a directory";
  StoreOptions options = Options();
  options.dir = dir_.Sub("plain");
  EXPECT_THAT(Store::Open(options), StatusIs(StatusCode::kFailedPrecondition));
  options.dir = dir_.Sub("plain/sub");
  EXPECT_THAT(Store::Open(options), StatusIs(StatusCode::kFailedPrecondition));
}

TEST_F(StoreTest, OpenRefusesFilesThatAreNotAStore) {
  ASSERT_EQ(::mkdir(dir_.Sub("db").c_str(), 0700), 0);
  std::ofstream(dir_.Sub("db/data.mdb")) << std::string(8192, 'x');
  EXPECT_THAT(Store::Open(Options()), StatusIs(StatusCode::kDataLoss));
}

TEST_F(StoreTest, OpenRefusesBadOptions) {
  StoreOptions options = Options();
  options.max_value_bytes = kMaxValueBytes + 1;
  EXPECT_THAT(Store::Open(options),
              StatusIs(StatusCode::kInvalidArgument, "max_value_bytes is 4194305; it must be 1..4194304"));
  options.max_value_bytes = 0;
  EXPECT_THAT(Store::Open(options), StatusIs(StatusCode::kInvalidArgument, "max_value_bytes is 0"));
  options = Options();
  options.dir = "";
  EXPECT_THAT(Store::Open(options), StatusIs(StatusCode::kInvalidArgument));
  options = Options();
  options.max_clock_skew_ms = -1;
  EXPECT_THAT(Store::Open(options), StatusIs(StatusCode::kInvalidArgument));
}

TEST_F(StoreTest, PutThenGetReturnsValueAndVersion) {
  auto store = OpenStore();
  absl::StatusOr<Version> v = store->Put("contacts", "alice", "alice@example.org");
  ASSERT_THAT(v, IsOk());
  EXPECT_EQ(v->origin, store->replica_id());
  EXPECT_EQ(HlcMillis(v->hlc), kT0);

  absl::StatusOr<std::optional<Record>> got = store->Get("contacts", "alice");
  ASSERT_THAT(got, IsOk());
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->value, "alice@example.org");
  EXPECT_EQ((*got)->version, *v);
  EXPECT_FALSE((*got)->deleted);
  EXPECT_EQ((*got)->seq, 1u);

  absl::StatusOr<std::optional<Record>> missing = store->Get("contacts", "bob");
  ASSERT_THAT(missing, IsOk());
  EXPECT_FALSE(missing->has_value());
}

TEST_F(StoreTest, LaterPutGetsAGreaterVersionAndReplacesTheValue) {
  auto store = OpenStore();
  absl::StatusOr<Version> first = store->Put("ks", "k", "one");
  absl::StatusOr<Version> second = store->Put("ks", "k", "two");
  ASSERT_THAT(first, IsOk());
  ASSERT_THAT(second, IsOk());
  EXPECT_GT(*second, *first);
  EXPECT_EQ((*store->Get("ks", "k"))->value, "two");
}

TEST_F(StoreTest, ValuesOfEverySizeSurviveOverwrites) {
  // Overwrites move a record between inline and overflow pages; each size
  // must read back intact.
  auto store = OpenStore();
  for (size_t size : {0ul, 10ul, 5000ul, 100ul, kMaxValueBytes, 1ul, 70000ul}) {
    const std::string value(size, static_cast<char>('a' + size % 26));
    ASSERT_THAT(store->Put("ks", "k", value), IsOk()) << size;
    absl::StatusOr<std::optional<Record>> got = store->Get("ks", "k");
    ASSERT_THAT(got, IsOk());
    ASSERT_EQ((*got)->value, value) << size;
  }
}

TEST_F(StoreTest, DeleteLeavesATombstone) {
  auto store = OpenStore();
  const Version put = *store->Put("ks", "k", "v");
  absl::StatusOr<Version> del = store->Delete("ks", "k");
  ASSERT_THAT(del, IsOk());
  EXPECT_GT(*del, put);
  absl::StatusOr<std::optional<Record>> got = store->Get("ks", "k");
  ASSERT_THAT(got, IsOk());
  ASSERT_TRUE(got->has_value());
  EXPECT_TRUE((*got)->deleted);
  EXPECT_EQ((*got)->value, "");
  EXPECT_EQ((*got)->version, *del);
  // Deleting a key never written is allowed: the tombstone wins over any
  // older write still travelling from a peer.
  EXPECT_THAT(store->Delete("ks", "never"), IsOk());
  const StoreStats stats = *store->Stats();
  EXPECT_EQ(stats.live_records, 0u);
  EXPECT_EQ(stats.tombstones, 2u);
}

TEST_F(StoreTest, InvalidInputIsRefusedNamingFieldAndLimit) {
  StoreOptions options = Options();
  options.max_value_bytes = 1000;
  auto store = OpenStore(options);
  EXPECT_THAT(store->Put("Bad", "k", "v"),
              StatusIs(StatusCode::kInvalidArgument, "keyspace has character 0x42"));
  EXPECT_THAT(store->Put("ks", "", "v"),
              StatusIs(StatusCode::kInvalidArgument, "key is empty"));
  EXPECT_THAT(store->Put("ks", std::string(401, 'k'), "v"),
              StatusIs(StatusCode::kInvalidArgument, "key is 401 bytes; the limit is 400"));
  EXPECT_THAT(store->Put("ks", "k", std::string(1001, 'v')),
              StatusIs(StatusCode::kInvalidArgument, "value is 1001 bytes; the limit is 1000"));
  EXPECT_THAT(store->Delete("", "k"), StatusIs(StatusCode::kInvalidArgument, "keyspace is empty"));
  EXPECT_THAT(store->Get("ks", std::string(401, 'k')),
              StatusIs(StatusCode::kInvalidArgument, "the limit is 400"));
  EXPECT_THAT(store->Scan("ks", ScanOptions{.limit = 0}),
              StatusIs(StatusCode::kInvalidArgument, "scan limit is 0; it must be 1..100000"));
  EXPECT_THAT(store->ChangesSince(0, kMaxScanLimit + 1),
              StatusIs(StatusCode::kInvalidArgument, "changes limit"));
  EXPECT_EQ(store->max_seq(), 0u);  // nothing was written
}

TEST_F(StoreTest, WriteBatchIsAtomicAndOrdered) {
  auto store = OpenStore();
  std::vector<Mutation> batch = {
      {"ks", "a", "1"}, {"ks", "b", "2"}, {"ks", "a", "3"}, {"ks", "b", std::nullopt}};
  absl::StatusOr<std::vector<Version>> versions = store->Write(batch);
  ASSERT_THAT(versions, IsOk());
  ASSERT_THAT(*versions, SizeIs(4));
  for (int i = 1; i < 4; ++i) EXPECT_GT((*versions)[i], (*versions)[i - 1]);
  EXPECT_EQ((*store->Get("ks", "a"))->value, "3");
  EXPECT_TRUE((*store->Get("ks", "b"))->deleted);

  // One bad mutation refuses the whole batch, naming which one.
  std::vector<Mutation> bad = {{"ks", "c", "1"}, {"ks", "", "2"}};
  EXPECT_THAT(store->Write(bad),
              StatusIs(StatusCode::kInvalidArgument, "mutation 1: key is empty"));
  EXPECT_FALSE((*store->Get("ks", "c")).has_value());

  std::vector<Mutation> too_many(kMaxBatchRecords + 1, Mutation{"ks", "k", "v"});
  EXPECT_THAT(store->Write(too_many),
              StatusIs(StatusCode::kInvalidArgument, "the limit is 10000"));
}

TEST_F(StoreTest, ScanReturnsLiveRecordsInKeyOrderAndPages) {
  auto store = OpenStore();
  for (const char* key : {"b", "a2", "a1", "c", "a3"}) {
    ASSERT_THAT(store->Put("ks", key, key), IsOk());
  }
  ASSERT_THAT(store->Put("ks2", "a0", "other keyspace"), IsOk());
  ASSERT_THAT(store->Put("k", "a0", "a keyspace that is a prefix"), IsOk());
  ASSERT_THAT(store->Delete("ks", "c"), IsOk());

  EXPECT_THAT(ScanKeys(*store, "ks"), ElementsAre("a1", "a2", "a3", "b"));
  EXPECT_THAT(ScanKeys(*store, "ks", {.prefix = "a"}), ElementsAre("a1", "a2", "a3"));
  EXPECT_THAT(ScanKeys(*store, "ks", {.include_tombstones = true}),
              ElementsAre("a1", "a2", "a3", "b", "c"));
  EXPECT_THAT(ScanKeys(*store, "ks", {.start_after = "a2"}), ElementsAre("a3", "b"));
  EXPECT_THAT(ScanKeys(*store, "ks", {.prefix = "a", .start_after = "a"}),
              ElementsAre("a1", "a2", "a3"));
  EXPECT_THAT(ScanKeys(*store, "k"), ElementsAre("a0"));
  EXPECT_THAT(ScanKeys(*store, "empty"), ElementsAre());

  // Paging visits every key exactly once.
  std::vector<std::string> paged;
  ScanOptions page{.limit = 2};
  for (int i = 0; i < 10; ++i) {
    absl::StatusOr<ScanResult> result = store->Scan("ks", page);
    ASSERT_THAT(result, IsOk());
    for (const Record& r : result->records) paged.push_back(r.key);
    if (!result->more) break;
    page.start_after = result->records.back().key;
  }
  EXPECT_THAT(paged, ElementsAre("a1", "a2", "a3", "b"));
}

TEST_F(StoreTest, MergeKeepsTheGreaterVersion) {
  auto store = OpenStore();
  absl::StatusOr<MergeResult> first =
      store->Merge({Remote("k", 10, 5, "v10"), Remote("j", 1, 5, "j1")});
  ASSERT_THAT(first, IsOk());
  EXPECT_EQ(first->won, 2u);
  EXPECT_THAT(first->refused, SizeIs(0));

  // Older loses, newer wins, equal clock breaks the tie by origin.
  absl::StatusOr<MergeResult> second =
      store->Merge({Remote("k", 9, 9, "older"), Remote("j", 1, 6, "j1-origin6")});
  ASSERT_THAT(second, IsOk());
  EXPECT_EQ(second->won, 1u);
  EXPECT_EQ((*store->Get("ks", "k"))->value, "v10");
  EXPECT_EQ((*store->Get("ks", "j"))->value, "j1-origin6");

  // A newer tombstone wins over a value; an older value cannot resurrect it.
  ASSERT_THAT(store->Merge({Remote("k", 20, 5, "", true)}), IsOk());
  ASSERT_THAT(store->Merge({Remote("k", 15, 7, "stale")}), IsOk());
  EXPECT_TRUE((*store->Get("ks", "k"))->deleted);
}

// A merge that does not wait for its fsync skips the meta page's flush in
// its own transaction. Toggling the environment's MDB_NOMETASYNC around the
// commit instead (as before) raced with every thread that reads the flags;
// this poller saw them change.
TEST_F(StoreTest, AnUnsyncedMergeNeverChangesTheEnvironmentFlags) {
  auto store = OpenStore();
  const unsigned flags = store->environment_flags();
  std::atomic<bool> done{false};
  std::atomic<int> changes{0};
  std::thread poller([&] {
    while (!done.load()) {
      if (store->environment_flags() != flags) changes.fetch_add(1);
    }
  });
  constexpr int kMerges = 50;
  for (int i = 0; i < kMerges; ++i) {
    Store::MergeOptions options;
    options.wait_for_sync = false;
    EXPECT_THAT(store->MergeWith({Remote("k", 10 + i, 5, "v")}, options), IsOk());
  }
  done.store(true);
  poller.join();
  EXPECT_EQ(changes.load(), 0);
  EXPECT_EQ(store->unsynced_commits(), static_cast<uint64_t>(kMerges));
}

// A merge that does not wait for its fsync may be lost, with the clock
// mark its commit wrote, in a machine crash; the clock then restarts from
// the last synced mark. So the own-id watermark this replica claims stays
// at what a restart remembers: an unsynced merge that moved the clock
// (a record ahead of it) does not raise it, and the next synced commit
// does.
TEST_F(StoreTest, AnUnsyncedMergeDoesNotRaiseTheOwnWatermark) {
  auto store = OpenStore();
  ASSERT_THAT(store->Put("ks", "mine", "v"), IsOk());
  const uint64_t self = store->replica_id();
  const uint64_t claimed = store->GetWatermarks().at(self);
  Store::MergeOptions options;
  options.wait_for_sync = false;
  ASSERT_THAT(store->MergeWith({Remote("k", 30'000, 5, "ahead")}, options), IsOk());
  ASSERT_EQ(store->unsynced_commits(), 1u);
  EXPECT_GE(store->clock_mark(), MakeHlc(kT0 + 30'000, 0));
  EXPECT_EQ(store->GetWatermarks().at(self), claimed);
  ASSERT_THAT(store->Put("ks", "mine", "w"), IsOk());
  EXPECT_GE(store->GetWatermarks().at(self), MakeHlc(kT0 + 30'000, 0));
}

TEST_F(StoreTest, MergeThatWinsNothingWritesNothing) {
  auto store = OpenStore();
  const std::vector<Record> batch = {Remote("a", 1, 5, "x"), Remote("b", 2, 5, "y")};
  ASSERT_EQ(store->Merge(batch)->won, 2u);
  const StoreStats before = *store->Stats();
  absl::StatusOr<MergeResult> replay = store->Merge(batch);
  ASSERT_THAT(replay, IsOk());
  EXPECT_EQ(replay->won, 0u);
  const StoreStats after = *store->Stats();
  EXPECT_EQ(after.max_seq, before.max_seq);
  EXPECT_EQ(after.commits, before.commits);
}

TEST_F(StoreTest, MergeRefusesInvalidRecordsQuarantinesClocksTooFarAheadAndMergesTheRest) {
  auto store = OpenStore();
  const uint64_t wrong_clock_origin = 0xbad;
  absl::StatusOr<MergeResult> result = store->Merge({
      Remote("ok", 60'000, 5, "at the bound"),
      Remote("future", 3'600'000, wrong_clock_origin, "an hour ahead"),
      Record{"ks", "", Version{MakeHlc(kT0, 0), 5}, false, "empty key", 0},
  });
  ASSERT_THAT(result, IsOk());
  EXPECT_EQ(result->won, 1u);
  ASSERT_THAT(result->refused, SizeIs(1));
  EXPECT_THAT(result->refused[0].reason, StatusIs(StatusCode::kInvalidArgument, "key is empty"));
  // Kept aside (store/quarantine_test.cc), not merged.
  ASSERT_THAT(result->quarantined, SizeIs(1));
  const RefusedRecord& future = result->quarantined[0];
  EXPECT_EQ(future.key, "future");
  EXPECT_THAT(future.reason,
              StatusIs(StatusCode::kOutOfRange, "record from origin 0000000000000bad"));
  EXPECT_THAT(std::string(future.reason.message()), HasSubstr("3600000 ms ahead"));
  EXPECT_TRUE((*store->Get("ks", "ok")).has_value());
  EXPECT_FALSE((*store->Get("ks", "future")).has_value());
  // The too-far clock was not followed: local writes stay near real time.
  EXPECT_LT(HlcMillis(store->Put("ks", "local", "v")->hlc), kT0 + 3'600'000);
}

TEST_F(StoreTest, MergeObservesRemoteClocks) {
  auto store = OpenStore();
  const Record ahead = Remote("k", 30'000, 5, "from a device 30 s ahead");
  ASSERT_THAT(store->Merge({ahead}), IsOk());
  // Our wall clock still says kT0, yet the next local write orders after
  // the write we just saw.
  absl::StatusOr<Version> local = store->Put("ks", "k", "edited after seeing it");
  ASSERT_THAT(local, IsOk());
  EXPECT_GT(*local, ahead.version);
  EXPECT_EQ((*store->Get("ks", "k"))->value, "edited after seeing it");
}

TEST_F(StoreTest, MergeCommitsTheCheckpointAndHoldsItWhenNothingWins) {
  const uint64_t peer = 42;
  {
    auto store = OpenStore();
    EXPECT_FALSE((*store->GetCheckpoint(peer)).has_value());
    ASSERT_THAT(store->Merge({Remote("a", 1, 5, "x")}, CheckpointUpdate{peer, {7, 10}}),
                IsOk());
    EXPECT_EQ(**store->GetCheckpoint(peer), (PeerCheckpoint{7, 10}));
    const uint64_t commits = store->Stats()->commits;
    // Same record again from further along the peer's log: nothing wins,
    // nothing is written, but the checkpoint still advances.
    ASSERT_THAT(store->Merge({Remote("a", 1, 5, "x")}, CheckpointUpdate{peer, {7, 20}}),
                IsOk());
    EXPECT_EQ(store->Stats()->commits, commits);
    EXPECT_EQ(**store->GetCheckpoint(peer), (PeerCheckpoint{7, 20}));
  }
  // Closing writes the held checkpoint.
  auto reopened = OpenStore();
  EXPECT_EQ(**reopened->GetCheckpoint(peer), (PeerCheckpoint{7, 20}));
}

TEST_F(StoreTest, ChangesSinceReturnsCurrentRecordsInSeqOrder) {
  auto store = OpenStore();
  ASSERT_THAT(store->Put("ks", "a", "1"), IsOk());  // seq 1, superseded by 4
  ASSERT_THAT(store->Put("ks", "b", "2"), IsOk());  // seq 2
  ASSERT_THAT(store->Put("ks", "c", "3"), IsOk());  // seq 3, superseded by 5
  ASSERT_THAT(store->Put("ks", "a", "4"), IsOk());  // seq 4
  ASSERT_THAT(store->Delete("ks", "c"), IsOk());    // seq 5

  absl::StatusOr<Changes> all = store->ChangesSince(0, 100);
  ASSERT_THAT(all, IsOk());
  std::vector<std::pair<std::string, uint64_t>> seen;
  for (const Record& r : all->records) seen.emplace_back(r.key, r.seq);
  EXPECT_THAT(seen, ElementsAre(std::pair<std::string, uint64_t>{"b", 2},
                                std::pair<std::string, uint64_t>{"a", 4},
                                std::pair<std::string, uint64_t>{"c", 5}));
  EXPECT_TRUE(all->records.back().deleted);
  EXPECT_EQ(all->max_seq, 5u);
  EXPECT_EQ(all->last_seq, 5u);

  // Paging: one record at a time, resuming from last_seq.
  std::vector<std::string> paged;
  uint64_t after = 0;
  for (int i = 0; i < 10 && after < 5; ++i) {
    absl::StatusOr<Changes> page = store->ChangesSince(after, 1);
    ASSERT_THAT(page, IsOk());
    ASSERT_GT(page->last_seq, after);
    for (const Record& r : page->records) paged.push_back(r.key);
    after = page->last_seq;
  }
  EXPECT_THAT(paged, ElementsAre("b", "a", "c"));
  absl::StatusOr<Changes> done = store->ChangesSince(5, 100);
  ASSERT_THAT(done, IsOk());
  EXPECT_THAT(done->records, SizeIs(0));
  EXPECT_EQ(done->last_seq, 5u);
}

TEST_F(StoreTest, ChangesSinceLeavesOutWhatThePeerAlreadyHas) {
  auto store = OpenStore();
  const uint64_t peer = 42;
  ASSERT_THAT(store->Put("ks", "local", "mine"), IsOk());                          // seq 1
  ASSERT_THAT(store->Merge({Remote("from-peer", 1, 7, "x")}, CheckpointUpdate{peer, {1, 5}}),
              IsOk());                                                              // seq 2
  ASSERT_THAT(store->Merge({Remote("by-peer", 2, peer, "y")}), IsOk());             // seq 3
  auto keys = [&](ChangesFilter filter) {
    absl::StatusOr<Changes> changes = store->ChangesSince(0, 100, kMaxPageBytes, filter);
    EXPECT_THAT(changes, IsOk());
    EXPECT_EQ(changes->last_seq, 3u);  // skipped entries still advance the cursor
    std::vector<std::string> out;
    for (const Record& r : changes->records) out.push_back(r.key);
    return out;
  };
  EXPECT_THAT(keys({}), ElementsAre("local", "from-peer", "by-peer"));
  EXPECT_THAT(keys({.skip_source = peer}), ElementsAre("local", "by-peer"));
  EXPECT_THAT(keys({.skip_origin = peer}), ElementsAre("local", "from-peer"));
  EXPECT_THAT(keys({.skip_source = peer, .skip_origin = peer}), ElementsAre("local"));
  // The peer's own writes it does not cover (it lacks them: restored) are
  // sent despite both rules; those it covers are not.
  // ("local" is not covered by these claims, so it is sent either way.)
  Watermarks lacking;
  lacking[peer] = MakeHlc(kT0 + 1, 0);
  EXPECT_THAT(keys({.skip_source = peer, .skip_origin = peer, .send_uncovered_of = peer,
                    .covered = &lacking}),
              ElementsAre("local", "by-peer"));
  Watermarks holding;
  holding[peer] = MakeHlc(kT0 + 2, 0);
  EXPECT_THAT(keys({.skip_source = peer, .skip_origin = peer, .send_uncovered_of = peer,
                    .covered = &holding}),
              ElementsAre("local"));
}

TEST_F(StoreTest, ChangesSinceCanReadOneKeyspaceAndPrefix) {
  auto store = OpenStore();
  ASSERT_THAT(store->Put("ks", "a/1", "x"), IsOk());     // seq 1
  ASSERT_THAT(store->Put("other", "a/1", "x"), IsOk());  // seq 2
  ASSERT_THAT(store->Put("ks", "b/1", "x"), IsOk());     // seq 3
  ASSERT_THAT(store->Put("ks", "a/2", "x"), IsOk());     // seq 4
  ASSERT_THAT(store->Put("ksx", "a/3", "x"), IsOk());    // seq 5
  auto keys = [&](std::string_view keyspace, std::string_view prefix) {
    absl::StatusOr<Changes> changes = store->ChangesSince(
        0, 100, kMaxPageBytes, {.keyspace = keyspace, .key_prefix = prefix});
    EXPECT_THAT(changes, IsOk());
    EXPECT_EQ(changes->last_seq, 5u);  // skipped entries still advance the cursor
    std::vector<std::string> out;
    for (const Record& r : changes->records) out.push_back(r.keyspace + ":" + r.key);
    return out;
  };
  EXPECT_THAT(keys("ks", ""), ElementsAre("ks:a/1", "ks:b/1", "ks:a/2"));
  EXPECT_THAT(keys("ks", "a/"), ElementsAre("ks:a/1", "ks:a/2"));
  EXPECT_THAT(keys("other", ""), ElementsAre("other:a/1"));
  EXPECT_THAT(keys("none", ""), SizeIs(0));
}

TEST_F(StoreTest, FingerprintsAgreeWhenRegistersAgreeAndSurviveReopen) {
  testing::TempDir other_dir;
  StoreOptions other_options = Options();
  other_options.dir = other_dir.Sub("db");
  auto a = OpenStore();
  auto b = OpenStore(other_options);
  EXPECT_EQ(a->fingerprint(), 0u);
  const std::vector<Record> batch = {Remote("x", 1, 5, "1"), Remote("y", 2, 5, "", true),
                                     Remote("x", 3, 6, "newer")};
  ASSERT_THAT(a->Merge(batch), IsOk());
  // Another order, another batching, an extra stale record: same registers.
  ASSERT_THAT(b->Merge({batch[2]}), IsOk());
  EXPECT_NE(a->fingerprint(), b->fingerprint());
  ASSERT_THAT(b->Merge({batch[1], batch[0]}), IsOk());
  EXPECT_EQ(a->fingerprint(), b->fingerprint());
  EXPECT_EQ(a->Stats()->fingerprint, a->fingerprint());
  const uint64_t before = a->fingerprint();
  a.reset();
  auto reopened = OpenStore();
  EXPECT_EQ(reopened->fingerprint(), before);
  ASSERT_THAT(reopened->Put("ks", "x", "local edit"), IsOk());
  EXPECT_NE(reopened->fingerprint(), before);
}

// Cloned data directories gave one version two values: the fingerprint
// must tell such replicas apart (it hashed only keys and versions), and
// stay equal to a fold of the registers after an overwrite.
TEST_F(StoreTest, FingerprintCoversTheValue) {
  testing::TempDir other_dir;
  StoreOptions other_options = Options();
  other_options.dir = other_dir.Sub("db");
  auto a = OpenStore();
  auto b = OpenStore(other_options);
  ASSERT_THAT(a->Merge({Remote("x", 1, 5, "one value")}), IsOk());
  ASSERT_THAT(b->Merge({Remote("x", 1, 5, "another")}), IsOk());
  EXPECT_NE(a->fingerprint(), b->fingerprint());
  // Both overwritten by one newer register: equal again.
  ASSERT_THAT(a->Merge({Remote("x", 2, 5, "same")}), IsOk());
  ASSERT_THAT(b->Merge({Remote("x", 2, 5, "same")}), IsOk());
  EXPECT_EQ(a->fingerprint(), b->fingerprint());
}

TEST_F(StoreTest, CompactionRemovesSupersededLogEntries) {
  auto store = OpenStore();
  for (int i = 0; i < 50; ++i) {
    ASSERT_THAT(store->Put("ks", absl::StrFormat("k%d", i % 5), "v"), IsOk());
  }
  EXPECT_EQ(store->Stats()->log_entries, 50u);
  absl::StatusOr<uint64_t> removed = store->CompactLog();
  ASSERT_THAT(removed, IsOk());
  EXPECT_EQ(*removed, 45u);
  const StoreStats stats = *store->Stats();
  EXPECT_EQ(stats.log_entries, 5u);
  EXPECT_EQ(stats.max_seq, 50u);
  absl::StatusOr<Changes> changes = store->ChangesSince(0, 100);
  ASSERT_THAT(changes, IsOk());
  EXPECT_THAT(changes->records, SizeIs(5));
  EXPECT_EQ(changes->last_seq, 50u);
}

TEST_F(StoreTest, TheWriterCompactsTheLogByItself) {
  StoreOptions options = Options();
  options.compaction_min_garbage = 100;
  auto store = OpenStore(options);
  // Overwrite 10 keys 1000 times: without compaction the log would hold
  // 10,000 entries.
  for (int round = 0; round < 100; ++round) {
    std::vector<Mutation> batch;
    for (int i = 0; i < 100; ++i) {
      batch.push_back({"ks", absl::StrFormat("k%d", i % 10), "v"});
    }
    ASSERT_THAT(store->Write(batch), IsOk());
  }
  const StoreStats stats = *store->Stats();
  EXPECT_EQ(stats.max_seq, 10'000u);
  EXPECT_LE(stats.log_entries, 2 * options.compaction_min_garbage + 10);
}

TEST_F(StoreTest, TheMapGrowsWhenFull) {
  StoreOptions options = Options();
  options.initial_map_bytes = 1 << 20;
  auto store = OpenStore(options);
  const std::string value(100'000, 'v');
  for (int i = 0; i < 200; ++i) {  // 20 MB into a 1 MiB map
    ASSERT_THAT(store->Put("ks", absl::StrFormat("k%03d", i), value), IsOk()) << i;
  }
  const StoreStats stats = *store->Stats();
  EXPECT_GT(stats.map_bytes, 20u << 20);
  EXPECT_EQ(stats.live_records, 200u);
  EXPECT_EQ((*store->Get("ks", "k000"))->value, value);
}

// LMDB allocates pages inside mdb_txn_commit too (the free list, the roots
// of the named databases), so a batch whose puts fit can still find the map
// full at commit. Each value here takes exactly one overflow page, so the
// sweep over batch sizes walks the last page of a 1 MiB map one page at a
// time: for some n the puts end with (almost) no page left and only the
// commit overflows. Every batch must land, the map grown as needed.
TEST_F(StoreTest, AMapFullAtCommitGrowsTheMapAndRetries) {
  const std::string value(3000, 'v');
  for (int n = 200; n <= 270; ++n) {
    StoreOptions options = Options();
    options.dir = dir_.Sub(absl::StrFormat("db%d", n));
    options.initial_map_bytes = 1 << 20;
    options.sync = false;
    auto store = OpenStore(options);
    ASSERT_NE(store, nullptr);
    // A first commit, so that the batch frees pages and its commit has a
    // free list to write.
    ASSERT_THAT(store->Put("ks", "first", "x"), IsOk());
    std::vector<Mutation> batch;
    for (int i = 0; i < n; ++i) {
      batch.push_back(Mutation{"ks", absl::StrFormat("k%04d", i), value});
    }
    ASSERT_THAT(store->Write(std::move(batch)), IsOk()) << "batch of " << n;
    EXPECT_EQ(store->Stats()->live_records, static_cast<uint64_t>(n) + 1) << n;
  }
}

// What a fresh replica does when it pulls a big peer: many merged batches
// of random keys into a store that starts with the smallest map.
TEST_F(StoreTest, MergingManyBatchesIntoATinyMapCompletes) {
  StoreOptions options = Options();
  options.initial_map_bytes = 1 << 20;
  options.sync = false;
  auto store = OpenStore(options);
  ASSERT_NE(store, nullptr);
  std::mt19937_64 random(14);
  constexpr int kBatches = 40;
  constexpr int kBatchRecords = 1000;
  const std::string value(100, 'v');
  for (int b = 0; b < kBatches; ++b) {
    std::vector<Record> batch;
    for (int i = 0; i < kBatchRecords; ++i) {
      batch.push_back(Remote(absl::StrFormat("doc-%016x", random()), 1 + b, 7, value));
    }
    absl::StatusOr<MergeResult> merged = store->Merge(
        std::move(batch),
        CheckpointUpdate{7, PeerCheckpoint{1, static_cast<uint64_t>(b + 1) * kBatchRecords}, {}});
    ASSERT_THAT(merged, IsOk()) << "batch " << b;
    ASSERT_EQ(merged->won, static_cast<size_t>(kBatchRecords));
  }
  const StoreStats stats = *store->Stats();
  EXPECT_EQ(stats.live_records, static_cast<uint64_t>(kBatches) * kBatchRecords);
  EXPECT_GT(stats.map_bytes, uint64_t{1} << 20);
  EXPECT_EQ((*store->GetCheckpoint(7))->seq, static_cast<uint64_t>(kBatches) * kBatchRecords);
}

TEST_F(StoreTest, AFullMapIsResourceExhaustedAndLosesNothing) {
  StoreOptions options = Options();
  options.initial_map_bytes = 1 << 20;
  options.max_map_bytes = 4 << 20;
  auto store = OpenStore(options);
  const std::string value(100'000, 'v');
  int acknowledged = 0;
  absl::Status failure;
  for (; acknowledged < 100; ++acknowledged) {
    absl::StatusOr<Version> v =
        store->Put("ks", absl::StrFormat("k%03d", acknowledged), value);
    if (!v.ok()) {
      failure = v.status();
      break;
    }
  }
  EXPECT_THAT(failure, StatusIs(StatusCode::kResourceExhausted, "max_map_bytes"));
  ASSERT_GT(acknowledged, 10);
  store.reset();
  auto reopened = OpenStore(options);
  for (int i = 0; i < acknowledged; ++i) {
    absl::StatusOr<std::optional<Record>> got =
        reopened->Get("ks", absl::StrFormat("k%03d", i));
    ASSERT_THAT(got, IsOk());
    ASSERT_TRUE(got->has_value()) << i;
  }
  EXPECT_EQ(reopened->Stats()->live_records, static_cast<uint64_t>(acknowledged));
}

TEST_F(StoreTest, ConcurrentWritersShareCommitsAndAllLand) {
  auto store = OpenStore();
  constexpr int kThreads = 8;
  constexpr int kPerThread = 200;
  std::vector<std::thread> threads;
  std::vector<std::vector<Version>> versions(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        absl::StatusOr<Version> v =
            store->Put("ks", absl::StrFormat("t%d-%d", t, i), "v");
        ASSERT_THAT(v, IsOk());
        versions[t].push_back(*v);
      }
    });
  }
  for (auto& t : threads) t.join();
  std::set<Version> distinct;
  for (const auto& per_thread : versions) distinct.insert(per_thread.begin(), per_thread.end());
  EXPECT_EQ(distinct.size(), static_cast<size_t>(kThreads * kPerThread));
  const StoreStats stats = *store->Stats();
  EXPECT_EQ(stats.live_records, static_cast<uint64_t>(kThreads * kPerThread));
  EXPECT_EQ(stats.max_seq, static_cast<uint64_t>(kThreads * kPerThread));
  // Group commit: eight writers waiting on each other's syncs share
  // transactions.
  EXPECT_LT(stats.commits, static_cast<uint64_t>(kThreads * kPerThread));
}

TEST_F(StoreTest, AsyncWritesCallBackWithTheirVersions) {
  auto store = OpenStore();
  absl::Notification done;
  absl::StatusOr<std::vector<Version>> result;
  store->WriteAsync({{"ks", "k", "v"}}, [&](absl::StatusOr<std::vector<Version>> r) {
    result = std::move(r);
    done.Notify();
  });
  done.WaitForNotification();
  ASSERT_THAT(result, IsOk());
  EXPECT_EQ((*store->Get("ks", "k"))->version, result->front());
}

TEST_F(StoreTest, CommitListenersSeeTheNewMaxSeq) {
  auto store = OpenStore();
  std::atomic<uint64_t> seen{0};
  const int id = store->AddCommitListener(
      [&](const Store::CommitInfo& info) { seen = info.max_seq; });
  ASSERT_THAT(store->Put("ks", "a", "1"), IsOk());
  ASSERT_THAT(store->Put("ks", "b", "2"), IsOk());
  EXPECT_EQ(seen.load(), 2u);
  store->RemoveCommitListener(id);
  ASSERT_THAT(store->Put("ks", "c", "3"), IsOk());
  EXPECT_EQ(seen.load(), 2u);
}

TEST_F(StoreTest, CommitListenersSeeEveryChangeWithItsSeq) {
  auto store = OpenStore();
  absl::Mutex mu;
  std::vector<std::string> seen;
  const int id = store->AddCommitListener([&](const Store::CommitInfo& info) {
    absl::MutexLock lock(&mu);
    ASSERT_NE(info.changes, nullptr);
    for (const Store::CommitChange& c : *info.changes) {
      seen.push_back(absl::StrCat(c.seq, " ", std::string(c.keyspace), ":", std::string(c.key)));
    }
    EXPECT_EQ(info.changes->back().seq, info.max_seq);
  });
  ASSERT_THAT(store->Write({{"ks", "a", "1"}, {"other", "b", std::nullopt}}), IsOk());
  // A merge reports only what won: the stale record took no seq.
  ASSERT_THAT(store->Merge({Remote("m", 5, 7, "x")}), IsOk());
  ASSERT_THAT(store->Merge({Remote("m", 1, 7, "stale"), Remote("n", 1, 7, "y")}), IsOk());
  store->RemoveCommitListener(id);
  absl::MutexLock lock(&mu);
  EXPECT_THAT(seen, ElementsAre("1 ks:a", "2 other:b", "3 ks:m", "4 ks:n"));
}

TEST_F(StoreTest, DigestsAgreeExactlyWhenContentsAgree) {
  testing::TempDir other_dir;
  StoreOptions other_options = Options();
  other_options.dir = other_dir.Sub("db");
  auto a = OpenStore();
  auto b = OpenStore(other_options);
  const std::vector<Record> batch = {Remote("x", 1, 5, "1"), Remote("y", 2, 5, "", true)};
  ASSERT_THAT(a->Merge(batch), IsOk());
  ASSERT_THAT(b->Merge({batch[1]}), IsOk());
  EXPECT_NE(*a->Digest(), *b->Digest());
  ASSERT_THAT(b->Merge({batch[0]}), IsOk());
  EXPECT_EQ(*a->Digest(), *b->Digest());
  ASSERT_THAT(b->Merge({Remote("x", 1, 6, "same clock, other origin")}), IsOk());
  EXPECT_NE(*a->Digest(), *b->Digest());
}

TEST_F(StoreTest, IdSeedMakesIdsReproducible) {
  StoreOptions options = Options();
  options.id_seed = 1234;
  uint64_t id, incarnation;
  {
    auto store = OpenStore(options);
    id = store->replica_id();
    incarnation = store->incarnation();
  }
  testing::TempDir other_dir;
  options.dir = other_dir.Sub("db");
  auto again = OpenStore(options);
  EXPECT_EQ(again->replica_id(), id);
  EXPECT_EQ(again->incarnation(), incarnation);
}

TEST_F(StoreTest, ReservedKeyspacesAreRefusedToOrdinaryWrites) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_THAT(store->Put("peerkv.devices", "k", "v"),
              StatusIs(StatusCode::kInvalidArgument, "'peerkv.devices' is reserved"));
  EXPECT_THAT(store->Delete("peerkv.friends", "k"),
              StatusIs(StatusCode::kInvalidArgument, "reserved"));
  EXPECT_THAT(store->Write({Mutation{"ks", "a", "1"}, Mutation{"peerkv.x", "b", "2"}}),
              StatusIs(StatusCode::kInvalidArgument, "mutation 1"));
  absl::StatusOr<std::optional<Record>> a = store->Get("ks", "a");
  ASSERT_THAT(a, IsOk());
  EXPECT_FALSE(a->has_value());
  // A name that merely contains the prefix later is ordinary.
  EXPECT_THAT(store->Put("my.peerkv.devices", "k", "v"), IsOk());
  // WriteReserved writes only reserved keyspaces.
  EXPECT_THAT(store->WriteReserved({Mutation{"ks", "a", "1"}}),
              StatusIs(StatusCode::kInvalidArgument, "not reserved"));
  EXPECT_THAT(store->WriteReserved({Mutation{"peerkv.devices", "k", "v"}}), IsOk());
}

TEST_F(StoreTest, ReservedRecordsPassTheCheckOrAreRefused) {
  StoreOptions options = Options();
  options.reserved_check = [](std::string_view, std::string_view, std::string_view value,
                              bool) {
    return value == "signed" ? absl::OkStatus()
                             : absl::PermissionDeniedError("not signed by the user");
  };
  auto store = OpenStore(options);
  ASSERT_NE(store, nullptr);
  EXPECT_THAT(store->WriteReserved({Mutation{"peerkv.devices", "k", "forged"}}),
              StatusIs(StatusCode::kPermissionDenied, "not signed"));
  Record forged = Remote("k", 10, 5, "forged");
  forged.keyspace = "peerkv.devices";
  Record good = Remote("j", 10, 5, "signed");
  good.keyspace = "peerkv.devices";
  // Far ahead: a forged record must not even wait in quarantine.
  Record forged_ahead = Remote("f", 86'400'000, 5, "forged");
  forged_ahead.keyspace = "peerkv.devices";
  absl::StatusOr<MergeResult> merged = store->Merge({forged, good, forged_ahead});
  ASSERT_THAT(merged, IsOk());
  EXPECT_EQ(merged->won, 1u);
  EXPECT_THAT(merged->quarantined, SizeIs(0));
  ASSERT_THAT(merged->refused, SizeIs(2));
  EXPECT_EQ(merged->refused[0].reason.code(), StatusCode::kPermissionDenied);
  EXPECT_THAT(ScanKeys(*store, "peerkv.devices"), ElementsAre("j"));
}

TEST_F(StoreTest, ReservedRecordsFromPeersAreRefusedWithoutACheck) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  Record r = Remote("k", 10, 5, "v");
  r.keyspace = "peerkv.devices";
  absl::StatusOr<MergeResult> merged = store->Merge({r});
  ASSERT_THAT(merged, IsOk());
  EXPECT_EQ(merged->won, 0u);
  ASSERT_THAT(merged->refused, SizeIs(1));
  EXPECT_EQ(merged->refused[0].reason.code(), StatusCode::kPermissionDenied);
}

}  // namespace
}  // namespace peerkv
