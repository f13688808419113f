// store/group_txn_test.cc: the writer's transaction on its own: the merge
// rule and the counters it keeps, local writes, claimed checkpoints and
// watermarks, what a commit leaves in the tables, and MDB_MAP_FULL returned
// as is (so that the store can grow the map and retry the group).
#include "store/group_txn.h"

#include <lmdb.h>

#include <string>
#include <vector>

#include "common/macros.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "store/lmdb_util.h"
#include "store/tables.h"
#include "testing/temp_dir.h"

namespace peerkv::writer {
namespace {

MATCHER_P(IsOkAndHolds, value, "is OK and holds the value") {
  return arg.ok() && *arg == value;
}

// An LMDB environment with the store's databases.
class Env {
 public:
  explicit Env(size_t map_bytes) {
    PEERKV_CHECK(mdb_env_create(&env_) == MDB_SUCCESS);
    PEERKV_CHECK(mdb_env_set_maxdbs(env_, tables::kMaxDbs) == MDB_SUCCESS);
    PEERKV_CHECK(mdb_env_set_mapsize(env_, map_bytes) == MDB_SUCCESS);
    PEERKV_CHECK(mdb_env_open(env_, dir_.path().c_str(), MDB_NOSYNC, 0600) == MDB_SUCCESS);
    lmdb::Txn txn;
    PEERKV_CHECK(txn.Begin(env_, 0).ok());
    PEERKV_CHECK(tables::OpenDbis(txn.get(), &dbis_).ok());
    PEERKV_CHECK(txn.Commit().ok());
  }
  ~Env() { mdb_env_close(env_); }

  MDB_env* get() const { return env_; }
  const tables::Dbis& dbis() const { return dbis_; }

 private:
  testing::TempDir dir_;
  MDB_env* env_ = nullptr;
  tables::Dbis dbis_;
};

Record Remote(std::string key, uint64_t hlc, uint64_t origin, bool deleted = false) {
  return Record{"ks", std::move(key), Version{hlc, origin}, deleted,
                deleted ? "" : "value", 0};
}

TEST(GroupTxnTest, TheGreaterVersionWinsAndTheCountersFollow) {
  Env env(size_t{1} << 20);
  GroupTxn txn(env.dbis(), GroupTxn::Counters{.max_seq = 10});
  ASSERT_THAT(txn.Begin(env.get()), IsOk());
  EXPECT_FALSE(txn.changed());

  // changes() views into the records: they must outlive the transaction's use.
  const Record first = Remote("a", 100, 7), older = Remote("a", 99, 9),
               same = Remote("a", 100, 7), newer = Remote("a", 101, 9, /*deleted=*/true);
  EXPECT_THAT(txn.ApplyRemote(first, /*source=*/7), IsOkAndHolds(true));
  const uint64_t one_live = txn.counters().fingerprint;
  EXPECT_NE(one_live, 0u);
  // Older and equal versions lose and change nothing.
  EXPECT_THAT(txn.ApplyRemote(older, 7), IsOkAndHolds(false));
  EXPECT_THAT(txn.ApplyRemote(same, 7), IsOkAndHolds(false));
  EXPECT_EQ(txn.counters().max_seq, 11u);
  EXPECT_EQ(txn.counters().live_records, 1u);
  EXPECT_EQ(txn.counters().fingerprint, one_live);
  // A newer tombstone replaces the value: one tombstone, no live record.
  EXPECT_THAT(txn.ApplyRemote(newer, 9), IsOkAndHolds(true));
  EXPECT_EQ(txn.counters().max_seq, 12u);
  EXPECT_EQ(txn.counters().live_records, 0u);
  EXPECT_EQ(txn.counters().tombstones, 1u);
  EXPECT_EQ(txn.counters().log_entries, 2u);
  EXPECT_NE(txn.counters().fingerprint, one_live);

  ASSERT_EQ(txn.changes().size(), 2u);
  EXPECT_EQ(txn.changes()[0].seq, 11u);
  EXPECT_EQ(txn.changes()[1].seq, 12u);
  EXPECT_EQ(txn.changes()[1].key, "a");
  EXPECT_FALSE(txn.local());
  ASSERT_THAT(txn.PutMetaState(/*clock_mark=*/555), IsOk());
  ASSERT_THAT(txn.Commit(), IsOk());

  // The next transaction sees what this one committed.
  GroupTxn next(env.dbis(), txn.counters());
  ASSERT_THAT(next.Begin(env.get()), IsOk());
  EXPECT_THAT(next.ApplyRemote(Remote("a", 100, 7), 7), IsOkAndHolds(false));
  EXPECT_FALSE(next.changed());
  lmdb::Txn read;
  ASSERT_THAT(read.Begin(env.get(), MDB_RDONLY), IsOk());
  absl::StatusOr<std::optional<codec::MetaState>> state =
      tables::ReadMetaState(read.get(), env.dbis().meta);
  ASSERT_THAT(state, IsOk());
  ASSERT_TRUE(state->has_value());
  EXPECT_EQ(**state, (codec::MetaState{555, 12, 0, 1, txn.counters().fingerprint}));
}

TEST(GroupTxnTest, ALocalWriteIsMarkedLocalAndLoggedWithNoSource) {
  Env env(size_t{1} << 20);
  GroupTxn txn(env.dbis(), GroupTxn::Counters{});
  ASSERT_THAT(txn.Begin(env.get()), IsOk());
  const Mutation write{"ks", "k", "v"};
  EXPECT_THAT(txn.ApplyLocal(write, Version{5, 1}), IsOkAndHolds(true));
  EXPECT_TRUE(txn.local());
  ASSERT_THAT(txn.Commit(), IsOk());
  lmdb::Txn read;
  ASSERT_THAT(read.Begin(env.get(), MDB_RDONLY), IsOk());
  absl::StatusOr<std::optional<std::string_view>> entry =
      lmdb::Get(read.get(), env.dbis().log, codec::BigEndian64(1), "read");
  ASSERT_THAT(entry, IsOk());
  ASSERT_TRUE(entry->has_value());
  absl::StatusOr<codec::LogEntry> decoded = codec::DecodeLogEntry(**entry);
  ASSERT_THAT(decoded, IsOk());
  EXPECT_EQ(decoded->source, 0u);
  EXPECT_EQ(decoded->value, "v");
}

TEST(GroupTxnTest, ClaimsKeepTheLastCheckpointAndTheMaxWatermarks) {
  Env env(size_t{1} << 20);
  GroupTxn txn(env.dbis(), GroupTxn::Counters{});
  ASSERT_THAT(txn.Begin(env.get()), IsOk());
  txn.Claim(CheckpointUpdate{7, PeerCheckpoint{1, 10}, Watermarks{{7, 100}, {8, 50}}});
  txn.Claim(CheckpointUpdate{7, PeerCheckpoint{1, 20}, Watermarks{{7, 90}, {9, 5}}});
  // Claims alone change nothing: the store holds them when nothing won.
  EXPECT_FALSE(txn.changed());
  ASSERT_EQ(txn.claimed_checkpoints().size(), 1u);
  EXPECT_EQ(txn.claimed_checkpoints().at(7), (PeerCheckpoint{1, 20}));
  EXPECT_EQ(txn.claimed_watermarks(), (Watermarks{{7, 100}, {8, 50}, {9, 5}}));

  ASSERT_THAT(txn.PutCheckpoint(7, txn.claimed_checkpoints().at(7)), IsOk());
  ASSERT_THAT(txn.PutWatermarks(txn.claimed_watermarks()), IsOk());
  ASSERT_THAT(txn.Commit(), IsOk());
  lmdb::Txn read;
  ASSERT_THAT(read.Begin(env.get(), MDB_RDONLY), IsOk());
  EXPECT_THAT(tables::ReadCheckpoint(read.get(), env.dbis().peers, 7),
              IsOkAndHolds(std::optional<PeerCheckpoint>(PeerCheckpoint{1, 20})));
  EXPECT_THAT(tables::ReadWatermarks(read.get(), env.dbis().meta),
              IsOkAndHolds(std::optional<Watermarks>(Watermarks{{7, 100}, {8, 50}, {9, 5}})));
}

TEST(GroupTxnTest, AFullMapIsReturnedAsMapFull) {
  // 16 pages: a few 1 KiB values fill it.
  Env env(size_t{64} << 10);
  GroupTxn txn(env.dbis(), GroupTxn::Counters{});
  ASSERT_THAT(txn.Begin(env.get()), IsOk());
  std::vector<Record> records;
  records.reserve(1000);
  absl::Status status;
  for (int i = 0; i < 1000 && status.ok(); ++i) {
    records.push_back(Remote("k" + std::to_string(i), 100 + i, 7));
    records.back().value.assign(1024, 'x');
    status = txn.ApplyRemote(records.back(), 7).status();
  }
  EXPECT_TRUE(lmdb::IsMapFull(status)) << status;
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kResourceExhausted));
}

}  // namespace
}  // namespace peerkv::writer
