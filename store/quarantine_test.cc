// store/quarantine_test.cc: records too far ahead are kept aside in the
// quarantine table (store/quarantine.h): committed with their batch's
// checkpoint, never covered by a watermark, counted once, bounded, merged
// through the normal rule once local time allows, and dropped (never
// retried) when an entry on disk does not decode.
#include <lmdb.h>

#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "store/quarantine.h"
#include "store/store.h"
#include "testing/temp_dir.h"

namespace peerkv {
namespace {

using absl::StatusCode;
using ::testing::HasSubstr;
using ::testing::SizeIs;

constexpr int64_t kT0 = 1'700'000'000'000;
constexpr uint64_t kPeer = 42;
constexpr uint64_t kFast = 0xfa57;  // an origin whose clock is an hour ahead
constexpr int64_t kHour = 3'600'000;

class QuarantineTest : public ::testing::Test {
 protected:
  StoreOptions Options() {
    StoreOptions options;
    options.dir = dir_.Sub("db");
    options.wall_clock = &wall_;
    options.log = [this](const std::string& line) {
      absl::MutexLock lock(&mu_);
      log_.push_back(line);
    };
    return options;
  }
  std::unique_ptr<Store> OpenStore(StoreOptions options) {
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(std::move(options));
    EXPECT_THAT(store, IsOk());
    return store.ok() ? std::move(*store) : nullptr;
  }
  std::unique_ptr<Store> OpenStore() { return OpenStore(Options()); }
  std::vector<std::string> Log() {
    absl::MutexLock lock(&mu_);
    return log_;
  }

  static Record Remote(const std::string& key, int64_t millis, uint64_t origin,
                       const std::string& value) {
    return Record{"ks", key, Version{MakeHlc(kT0 + millis, 0), origin}, false, value, 0};
  }

  testing::TempDir dir_;
  ManualWallClock wall_{kT0};
  absl::Mutex mu_;
  std::vector<std::string> log_;
};

TEST_F(QuarantineTest, TooFarAheadIsQuarantinedTheRestMergesAndTheCheckpointMoves) {
  auto store = OpenStore();
  const Record future = Remote("future", kHour, kFast, "an hour ahead");
  // The peer claims both origins up to what it sent: ours must stop below
  // the quarantined record.
  absl::StatusOr<MergeResult> result = store->Merge(
      {future, Remote("ok", 1, 5, "normal")},
      CheckpointUpdate{kPeer, {7, 2}, Watermarks{{kFast, future.version.hlc}, {5, MakeHlc(kT0 + 1, 0)}}});
  ASSERT_THAT(result, IsOk());
  EXPECT_EQ(result->won, 1u);
  EXPECT_THAT(result->refused, SizeIs(0));
  ASSERT_THAT(result->quarantined, SizeIs(1));
  EXPECT_EQ(result->quarantined[0].key, "future");
  EXPECT_THAT(result->quarantined[0].reason,
              StatusIs(StatusCode::kOutOfRange, "record from origin 000000000000fa57"));
  EXPECT_FALSE((*store->Get("ks", "future")).has_value());
  EXPECT_TRUE((*store->Get("ks", "ok")).has_value());
  EXPECT_EQ(**store->GetCheckpoint(kPeer), (PeerCheckpoint{7, 2}));
  const Watermarks ours = store->GetWatermarks();
  EXPECT_EQ(ours.at(5), MakeHlc(kT0 + 1, 0));
  EXPECT_EQ(ours.at(kFast), future.version.hlc - 1);
  EXPECT_FALSE(ours.Covers(future.version));
  const StoreStats stats = *store->Stats();
  ASSERT_THAT(stats.quarantined, SizeIs(1));
  EXPECT_EQ(stats.quarantined[0].origin, kFast);
  EXPECT_EQ(stats.quarantined[0].records, 1u);
  EXPECT_EQ(stats.quarantined[0].first_due_ms, kT0 + kHour - 60'000);
  // Its clock was not followed.
  EXPECT_LT(HlcMillis(store->Put("ks", "local", "v")->hlc), kT0 + kHour);
}

TEST_F(QuarantineTest, ALaterClaimIsCappedToo) {
  auto store = OpenStore();
  const Record future = Remote("future", kHour, kFast, "x");
  ASSERT_THAT(store->Merge({future}), IsOk());
  // A batch that changes nothing holds its claim in memory: capped as well,
  // and a claim already below stays as it is.
  ASSERT_THAT(store->Merge({}, CheckpointUpdate{kPeer, {7, 9},
                                                {{kFast, future.version.hlc + 5}, {5, 77}}}),
              IsOk());
  EXPECT_EQ(store->GetWatermarks().at(kFast), future.version.hlc - 1);
  EXPECT_EQ(store->GetWatermarks().at(5), 77u);
  // And written so at the next commit (reopen).
  ASSERT_THAT(store->Put("ks", "local", "v"), IsOk());
  store.reset();
  store = OpenStore();
  EXPECT_EQ(store->GetWatermarks().at(kFast), future.version.hlc - 1);
}

TEST_F(QuarantineTest, AQuarantineOnlyBatchCommitsWithItsCheckpoint) {
  {
    auto store = OpenStore();
    absl::StatusOr<MergeResult> result =
        store->Merge({Remote("future", kHour, kFast, "x")}, CheckpointUpdate{kPeer, {7, 1}, {}});
    ASSERT_THAT(result, IsOk());
    EXPECT_EQ(result->won, 0u);
    EXPECT_THAT(result->quarantined, SizeIs(1));
  }
  auto store = OpenStore();
  EXPECT_EQ(**store->GetCheckpoint(kPeer), (PeerCheckpoint{7, 1}));
  EXPECT_THAT(store->Stats()->quarantined, SizeIs(1));
}

TEST_F(QuarantineTest, ARecordPulledAgainIsNotQuarantinedAgain) {
  auto store = OpenStore();
  const Record future = Remote("future", kHour, kFast, "x");
  ASSERT_THAT(store->Merge({future})->quarantined, SizeIs(1));
  absl::StatusOr<MergeResult> again = store->Merge({future});
  ASSERT_THAT(again, IsOk());
  EXPECT_THAT(again->quarantined, SizeIs(0));
  EXPECT_EQ(again->already_quarantined, 1u);
  // Twice in one batch: once.
  const Record other = Remote("other", kHour, kFast, "y");
  absl::StatusOr<MergeResult> twice = store->Merge({other, other});
  ASSERT_THAT(twice, IsOk());
  EXPECT_THAT(twice->quarantined, SizeIs(1));
  EXPECT_EQ(twice->already_quarantined, 1u);
  EXPECT_EQ(store->Stats()->quarantined.at(0).records, 2u);
}

TEST_F(QuarantineTest, RetriedOnceLocalTimeAllowsAfterAReopen) {
  const Record future = Remote("future", kHour, kFast, "from the future");
  {
    auto store = OpenStore();
    EXPECT_EQ(store->NextQuarantineRetry(), std::nullopt);
    ASSERT_THAT(store->Merge({future}), IsOk());
  }
  auto store = OpenStore();
  EXPECT_EQ(store->NextQuarantineRetry(), absl::Milliseconds(kHour - 60'000));
  absl::StatusOr<MergeResult> early = store->RetryQuarantined();
  ASSERT_THAT(early, IsOk());
  EXPECT_EQ(early->won, 0u);
  EXPECT_FALSE((*store->Get("ks", "future")).has_value());
  wall_.Advance(kHour - 60'000);
  EXPECT_EQ(store->NextQuarantineRetry(), absl::ZeroDuration());
  absl::StatusOr<MergeResult> due = store->RetryQuarantined();
  ASSERT_THAT(due, IsOk());
  EXPECT_EQ(due->won, 1u);
  ASSERT_TRUE((*store->Get("ks", "future")).has_value());
  EXPECT_EQ((*store->Get("ks", "future"))->value, "from the future");
  EXPECT_THAT(store->Stats()->quarantined, SizeIs(0));
  EXPECT_EQ(store->NextQuarantineRetry(), std::nullopt);
  // The watermark may now cover it.
  ASSERT_THAT(store->Merge({}, CheckpointUpdate{kPeer, {7, 1}, {{kFast, future.version.hlc}}}),
              IsOk());
  EXPECT_TRUE(store->GetWatermarks().Covers(future.version));
}

TEST_F(QuarantineTest, ARetriedRecordGoesThroughTheMergeAndMayLose) {
  auto store = OpenStore();
  ASSERT_THAT(store->Merge({Remote("k", kHour, kFast, "early bird")}), IsOk());
  // Real time passes the record's clock and someone writes the key.
  wall_.Advance(kHour + 1);
  ASSERT_THAT(store->Put("ks", "k", "written later, on a correct clock"), IsOk());
  absl::StatusOr<MergeResult> due = store->RetryQuarantined();
  ASSERT_THAT(due, IsOk());
  EXPECT_EQ(due->won, 0u);
  ASSERT_TRUE((*store->Get("ks", "k")).has_value());
  EXPECT_EQ((*store->Get("ks", "k"))->value, "written later, on a correct clock");
  EXPECT_THAT(store->Stats()->quarantined, SizeIs(0));
}

TEST_F(QuarantineTest, AFullQuarantineDropsTheRecordAndCountsIt) {
  StoreOptions options = Options();
  options.max_quarantine_records = 2;
  auto store = OpenStore(options);
  absl::StatusOr<MergeResult> result =
      store->Merge({Remote("a", kHour, kFast, "1"), Remote("b", kHour, kFast, "2"),
                    Remote("c", kHour, kFast, "3"), Remote("ok", 1, 5, "merges")},
                   CheckpointUpdate{kPeer, {7, 4}, {}});
  ASSERT_THAT(result, IsOk());
  EXPECT_EQ(result->won, 1u);
  EXPECT_THAT(result->quarantined, SizeIs(2));
  ASSERT_THAT(result->refused, SizeIs(1));
  EXPECT_THAT(result->refused[0].reason,
              StatusIs(StatusCode::kResourceExhausted, "record from origin 000000000000fa57"));
  EXPECT_THAT(std::string(result->refused[0].reason.message()),
              HasSubstr("the quarantine is full (2 records"));
  EXPECT_EQ(store->Stats()->quarantine_dropped, 1u);
  EXPECT_EQ(**store->GetCheckpoint(kPeer), (PeerCheckpoint{7, 4}));
}

TEST_F(QuarantineTest, TheByteBoundHoldsToo) {
  StoreOptions options = Options();
  options.max_quarantine_bytes = 100;
  auto store = OpenStore(options);
  absl::StatusOr<MergeResult> result = store->Merge(
      {Remote("a", kHour, kFast, std::string(40, 'x')), Remote("b", kHour, kFast, std::string(40, 'y'))});
  ASSERT_THAT(result, IsOk());
  EXPECT_THAT(result->quarantined, SizeIs(1));
  EXPECT_THAT(result->refused, SizeIs(1));
}

TEST_F(QuarantineTest, AMalformedEntryIsDroppedAtOpenAndLoggedOnce) {
  { ASSERT_THAT(OpenStore()->Merge({Remote("good", kHour, kFast, "x")}), IsOk()); }
  {
    // Files on disk are outside input: an entry that does not decode.
    MDB_env* env = nullptr;
    ASSERT_EQ(mdb_env_create(&env), 0);
    ASSERT_EQ(mdb_env_set_maxdbs(env, 8), 0);
    ASSERT_EQ(mdb_env_open(env, Options().dir.c_str(), 0, 0600), 0);
    MDB_txn* txn = nullptr;
    ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
    MDB_dbi dbi;
    ASSERT_EQ(mdb_dbi_open(txn, "quarantine", 0, &dbi), 0);
    MDB_val k{5, const_cast<char*>("short")}, v{1, const_cast<char*>("\x07")};
    ASSERT_EQ(mdb_put(txn, dbi, &k, &v, 0), 0);
    ASSERT_EQ(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
  }
  {
    auto store = OpenStore();
    EXPECT_EQ(store->Stats()->quarantine_dropped, 1u);
    ASSERT_THAT(store->Stats()->quarantined, SizeIs(1));  // the good one stays
    const std::vector<std::string> log = Log();
    ASSERT_THAT(log, SizeIs(1));
    EXPECT_THAT(log[0], HasSubstr("dropped 1 quarantined record that did not decode"));
    wall_.Advance(kHour);
    EXPECT_EQ(store->RetryQuarantined()->won, 1u);
  }
  // Gone for good: not logged again.
  auto store = OpenStore();
  EXPECT_EQ(store->Stats()->quarantine_dropped, 0u);
  EXPECT_THAT(Log(), SizeIs(1));
}

TEST(QuarantineCodecTest, RoundTripsAndRefusesBadEntries) {
  const Record r{"ks", "key", Version{MakeHlc(kT0, 3), 9}, false, "value", 0};
  const std::string key = quarantine::EncodeKey(r), value = quarantine::EncodeValue(r);
  absl::StatusOr<Record> back = quarantine::Decode(key, value, kMaxValueBytes);
  ASSERT_THAT(back, IsOk());
  EXPECT_EQ(*back, r);
  EXPECT_THAT(quarantine::Decode(key.substr(0, 10), value, kMaxValueBytes),
              StatusIs(StatusCode::kDataLoss, "quarantine key is 10 bytes"));
  EXPECT_THAT(quarantine::Decode(key, "\x05", kMaxValueBytes),
              StatusIs(StatusCode::kDataLoss, "quarantine value lacks its tombstone flag"));
  EXPECT_THAT(quarantine::Decode(key, value, 2), StatusIs(StatusCode::kInvalidArgument));
  // A version of zero is no real write.
  const Record zero{"ks", "key", Version{0, 9}, false, "v", 0};
  EXPECT_THAT(quarantine::Decode(quarantine::EncodeKey(zero), quarantine::EncodeValue(zero),
                                 kMaxValueBytes),
              StatusIs(StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace peerkv
