// store/change_index_test.cc: the per-keyspace change index: filtered
// ChangesSince (a keyspace set, a predicate, a watch's keyspace) returns
// exactly what a filter over the whole log returns, in seq order and across
// pages, at the cost of what matches; the index holds each register's
// current change through overwrites, compaction, tombstone collection and
// map growth (same transaction); an older store (format 4) gains it when
// opened.
#include "store/change_index.h"

#include <lmdb.h>

#include <algorithm>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "store/codec.h"
#include "store/lmdb_util.h"
#include "store/store.h"
#include "store/tables.h"
#include "testing/temp_dir.h"

namespace peerkv {
namespace {

using ::testing::ElementsAreArray;
using ::testing::SizeIs;

constexpr int64_t kT0 = 1'700'000'000'000;

class ChangeIndexTest : public ::testing::Test {
 protected:
  StoreOptions Options() {
    StoreOptions options;
    options.dir = dir_.Sub("db");
    options.wall_clock = &wall_;
    options.sync = false;
    options.scrub_at_open = false;
    options.tombstone_min_age_ms = 0;
    options.tombstone_collect_interval = absl::ZeroDuration();
    return options;
  }
  std::unique_ptr<Store> Open(StoreOptions options) {
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(std::move(options));
    EXPECT_THAT(store, IsOk());
    return store.ok() ? std::move(*store) : nullptr;
  }
  std::unique_ptr<Store> Open() { return Open(Options()); }

  // Every page of ChangesSince(filter) from 0, as "ks:key@seq".
  static std::vector<std::string> AllPages(const Store& store, const ChangesFilter& filter,
                                           size_t limit) {
    std::vector<std::string> out;
    uint64_t after = 0;
    for (int pages = 0; pages < 100'000; ++pages) {
      absl::StatusOr<Changes> changes = store.ChangesSince(after, limit, kMaxPageBytes, filter);
      EXPECT_THAT(changes, IsOk());
      if (!changes.ok()) break;
      uint64_t prev = after;
      for (const Record& r : changes->records) {
        EXPECT_GT(r.seq, prev) << "out of seq order";
        prev = r.seq;
        out.push_back(absl::StrCat(r.keyspace, ":", r.key, "@", r.seq));
      }
      EXPECT_GE(changes->last_seq, after);
      if (changes->last_seq == changes->max_seq) break;
      EXPECT_GT(changes->last_seq, after) << "no progress";
      after = changes->last_seq;
    }
    return out;
  }
  // The same, keeping those of the whole log's pages that `keep` accepts.
  static std::vector<std::string> Model(const Store& store,
                                        const std::function<bool(const std::string&)>& keep) {
    std::vector<std::string> out;
    for (const std::string& r : AllPages(store, {}, 1000)) {
      if (keep(r.substr(0, r.find(':')))) out.push_back(r);
    }
    return out;
  }

  // Runs `fn` in a write transaction on the closed store's files.
  void WithRawLmdb(const std::function<void(MDB_txn*, const tables::Dbis&)>& fn) {
    MDB_env* env = nullptr;
    ASSERT_EQ(mdb_env_create(&env), 0);
    ASSERT_EQ(mdb_env_set_maxdbs(env, tables::kMaxDbs), 0);
    ASSERT_EQ(mdb_env_set_mapsize(env, size_t{1} << 30), 0);
    ASSERT_EQ(mdb_env_open(env, dir_.Sub("db").c_str(), 0, 0600), 0);
    MDB_txn* txn = nullptr;
    ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
    tables::Dbis dbis;
    ASSERT_THAT(tables::OpenDbis(txn, &dbis), IsOk());
    fn(txn, dbis);
    ASSERT_EQ(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
  }
  // On the closed store: the index holds exactly one entry per register,
  // under its keyspace and its current seq, with its header, and that log
  // entry exists.
  void ExpectIndexMatchesRecords() {
    WithRawLmdb([](MDB_txn* txn, const tables::Dbis& dbis) {
      std::map<std::pair<std::string, uint64_t>, std::string> from_records, from_index;
      lmdb::Cursor records, index;
      ASSERT_THAT(records.Open(txn, dbis.records), IsOk());
      MDB_val k, v;
      for (int rc = mdb_cursor_get(records.get(), &k, &v, MDB_FIRST); rc == MDB_SUCCESS;
           rc = mdb_cursor_get(records.get(), &k, &v, MDB_NEXT)) {
        std::string_view ks, key;
        ASSERT_THAT(codec::SplitRecordKey(lmdb::View(k), &ks, &key), IsOk());
        absl::StatusOr<codec::RecordHeader> header = codec::DecodeRecordHeader(lmdb::View(v));
        ASSERT_THAT(header, IsOk());
        from_records[{std::string(ks), header->seq}] = std::string(lmdb::View(v));
        EXPECT_THAT(tables::ReadValue(txn, dbis.log, lmdb::View(k), header->seq), IsOk());
      }
      ASSERT_THAT(index.Open(txn, dbis.change_index), IsOk());
      for (int rc = mdb_cursor_get(index.get(), &k, &v, MDB_FIRST); rc == MDB_SUCCESS;
           rc = mdb_cursor_get(index.get(), &k, &v, MDB_NEXT)) {
        std::string_view ks;
        uint64_t seq = 0;
        ASSERT_THAT(change_index::DecodeKey(lmdb::View(k), &ks, &seq), IsOk());
        from_index[{std::string(ks), seq}] = std::string(lmdb::View(v));
      }
      EXPECT_FALSE(from_records.empty());
      EXPECT_EQ(from_index, from_records);
    });
  }

  // Random puts, overwrites and deletes over `keyspaces`, some local, some
  // merged as another origin's.
  // (`remote` false: none merged, so that no foreign origin's floor holds
  // tombstones back.)
  static void Churn(Store& store, const std::vector<std::string>& keyspaces, int n,
                    uint32_t seed, bool remote_too = true) {
    std::mt19937 rng(seed);
    std::vector<Record> remote;
    for (int i = 0; i < n; ++i) {
      const std::string& ks = keyspaces[rng() % keyspaces.size()];
      const std::string key = absl::StrCat("k", rng() % 40);
      switch (rng() % 4) {
        case 0:
          ASSERT_THAT(store.Delete(ks, key), IsOk());
          break;
        case 1:
          if (!remote_too) break;
          remote.push_back(Record{ks, key, Version{MakeHlc(kT0 - 1000 + i, 0), 0x5151}, false,
                                  "remote", 0});
          break;
        default:
          ASSERT_THAT(store.Put(ks, key, absl::StrCat("v", i)), IsOk());
      }
    }
    ASSERT_THAT(store.Merge(std::move(remote)), IsOk());
  }

  testing::TempDir dir_;
  ManualWallClock wall_{kT0};
};

TEST_F(ChangeIndexTest, FilteredReadsMatchAFilterOverTheWholeLogOnEveryPage) {
  auto store = Open();
  const std::vector<std::string> keyspaces = {"a", "a.b", "ab", "b", "blog", "z"};
  Churn(*store, keyspaces, 2000, 1);
  const std::vector<std::string> set = {"a", "blog", "nothing", "a"};
  for (size_t limit : {1, 7, 100, 10'000}) {
    SCOPED_TRACE(limit);
    EXPECT_THAT(AllPages(*store, {.keyspaces = &set}, limit),
                ElementsAreArray(Model(*store, [](const std::string& ks) {
                  return ks == "a" || ks == "blog";
                })));
    EXPECT_THAT(AllPages(*store,
                         {.keyspace_allowed = [](std::string_view ks) {
                           return ks.starts_with("a");
                         }},
                         limit),
                ElementsAreArray(Model(*store, [](const std::string& ks) {
                  return ks.starts_with("a");
                })));
    EXPECT_THAT(AllPages(*store, {.keyspace = "a.b"}, limit),
                ElementsAreArray(Model(*store, [](const std::string& ks) { return ks == "a.b"; })));
  }
  // Nothing allowed: nothing, and the page ends at max_seq at once.
  absl::StatusOr<Changes> none = store->ChangesSince(
      0, 10, kMaxPageBytes, {.keyspace_allowed = [](std::string_view) { return false; }});
  ASSERT_THAT(none, IsOk());
  EXPECT_THAT(none->records, SizeIs(0));
  EXPECT_EQ(none->last_seq, none->max_seq);
  // The other rules still apply: a keyspace set with a peer's coverage.
  const Watermarks covered{{0x5151, MakeHlc(kT0 + 10'000'000, 0)}};
  for (const std::string& r :
       AllPages(*store, {.covered = &covered, .keyspaces = &set}, 50)) {
    absl::StatusOr<std::optional<Record>> got =
        store->Get(r.substr(0, r.find(':')), r.substr(r.find(':') + 1, r.find('@') - r.find(':') - 1));
    ASSERT_THAT(got, IsOk());
    ASSERT_TRUE(got->has_value());
    EXPECT_NE((*got)->version.origin, 0x5151u) << r;
  }
}

TEST_F(ChangeIndexTest, AFilteredReadCostsWhatMatchesNotTheLog) {
  auto store = Open();
  std::vector<Mutation> other;
  for (int i = 0; i < 6000; ++i) other.push_back(Mutation{"big", absl::StrCat("k", i), "v"});
  ASSERT_THAT(store->Write(std::move(other)), IsOk());
  ASSERT_THAT(store->Put("small", "one", "v"), IsOk());
  ASSERT_THAT(store->Put("small", "two", "v"), IsOk());
  // An unfiltered page examines at most 4 * limit + 1024 log entries; the
  // index reaches both records and the end of the log in one page of 2.
  const std::vector<std::string> set = {"small"};
  for (const ChangesFilter& filter :
       {ChangesFilter{.keyspace = "small"}, ChangesFilter{.keyspaces = &set},
        ChangesFilter{.keyspace_allowed = [](std::string_view ks) { return ks == "small"; }}}) {
    absl::StatusOr<Changes> changes = store->ChangesSince(0, 2, kMaxPageBytes, filter);
    ASSERT_THAT(changes, IsOk());
    EXPECT_THAT(changes->records, SizeIs(2));
    absl::StatusOr<Changes> rest = store->ChangesSince(changes->last_seq, 2, kMaxPageBytes, filter);
    ASSERT_THAT(rest, IsOk());
    EXPECT_THAT(rest->records, SizeIs(0));
    EXPECT_EQ(rest->last_seq, rest->max_seq);
  }
}

TEST_F(ChangeIndexTest, TheIndexFollowsOverwritesCompactionAndTombstoneCollection) {
  {
    StoreOptions options = Options();
    options.compaction_min_garbage = 1;
    auto store = Open(options);
    Churn(*store, {"a", "b", "c"}, 3000, 2, /*remote_too=*/false);
    ASSERT_THAT(store->CompactLog(), IsOk());
    wall_.Advance(1000);
    absl::StatusOr<uint64_t> collected = store->CollectAllTombstones();
    ASSERT_THAT(collected, IsOk());
    EXPECT_GT(*collected, 0u);
    const std::vector<std::string> set = {"b"};
    EXPECT_THAT(AllPages(*store, {.keyspaces = &set}, 13),
                ElementsAreArray(Model(*store, [](const std::string& ks) { return ks == "b"; })));
  }
  ExpectIndexMatchesRecords();
}

TEST_F(ChangeIndexTest, TheIndexIsWrittenInTheCommitThatGrowsTheMap) {
  {
    StoreOptions options = Options();
    options.initial_map_bytes = size_t{1} << 20;
    auto store = Open(options);
    // Commits that do not fit are retried in a bigger map: log and index
    // together or neither.
    for (int batch = 0; batch < 8; ++batch) {
      std::vector<Mutation> m;
      for (int i = 0; i < 500; ++i) {
        m.push_back(Mutation{batch % 2 ? "odd" : "even", absl::StrCat(batch, "/", i),
                             std::string(300, 'x')});
      }
      ASSERT_THAT(store->Write(std::move(m)), IsOk());
    }
    const std::vector<std::string> set = {"odd"};
    EXPECT_THAT(AllPages(*store, {.keyspaces = &set}, 333), SizeIs(2000));
  }
  ExpectIndexMatchesRecords();
}

TEST_F(ChangeIndexTest, AFormat4StoreGainsTheIndexWhenOpened) {
  std::vector<std::string> before;
  {
    auto store = Open();
    Churn(*store, {"a", "b"}, 500, 3);
    before = Model(*store, [](const std::string& ks) { return ks == "a"; });
  }
  // Make it look like format 4: no index, the old marker.
  WithRawLmdb([](MDB_txn* txn, const tables::Dbis& dbis) {
    ASSERT_EQ(mdb_drop(txn, dbis.change_index, 0), 0);
    ASSERT_THAT(tables::WriteMetaU64(txn, dbis.meta, codec::kMetaFormat, 4), IsOk());
  });
  std::vector<std::string> logged;
  {
    StoreOptions options = Options();
    options.log = [&](const std::string& line) { logged.push_back(line); };
    auto store = Open(options);
    ASSERT_NE(store, nullptr);
    const std::vector<std::string> set = {"a"};
    EXPECT_THAT(AllPages(*store, {.keyspaces = &set}, 17), ElementsAreArray(before));
    // New writes are indexed as usual after the upgrade.
    ASSERT_THAT(store->Put("a", "new", "v"), IsOk());
    EXPECT_THAT(AllPages(*store, {.keyspaces = &set}, 17), SizeIs(before.size() + 1));
  }
  EXPECT_THAT(logged, ::testing::Contains(::testing::HasSubstr("built the per-keyspace change index")));
  ExpectIndexMatchesRecords();
  WithRawLmdb([](MDB_txn* txn, const tables::Dbis& dbis) {
    absl::StatusOr<std::optional<uint64_t>> format =
        tables::ReadMetaU64(txn, dbis.meta, codec::kMetaFormat);
    ASSERT_THAT(format, IsOk());
    EXPECT_EQ(*format, std::optional<uint64_t>(codec::kFormatVersion));
  });
}

TEST_F(ChangeIndexTest, KeyspacesAreListedBySeeksInNameOrder) {
  {
    auto store = Open();
    for (const char* ks : {"b", "a.b", "a", "ab", "a-b"}) {
      ASSERT_THAT(store->Put(ks, "k", "v"), IsOk());
      ASSERT_THAT(store->Put(ks, "j", "v"), IsOk());
    }
  }
  WithRawLmdb([](MDB_txn* txn, const tables::Dbis& dbis) {
    absl::StatusOr<std::vector<std::string>> listed =
        change_index::Keyspaces(txn, dbis.change_index);
    ASSERT_THAT(listed, IsOk());
    EXPECT_THAT(*listed, ::testing::ElementsAre("a", "a-b", "a.b", "ab", "b"));
  });
}

TEST(ChangeIndexKeyTest, KeysRoundTripAndBadOnesAreDataLoss) {
  std::string key;
  change_index::EncodeKey("blog", 42, &key);
  std::string_view ks;
  uint64_t seq = 0;
  ASSERT_THAT(change_index::DecodeKey(key, &ks, &seq), IsOk());
  EXPECT_EQ(ks, "blog");
  EXPECT_EQ(seq, 42u);
  EXPECT_THAT(change_index::DecodeKey("short", &ks, &seq),
              StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(change_index::DecodeKey(std::string("blog") + std::string(9, 'x'), &ks, &seq),
              StatusIs(absl::StatusCode::kDataLoss));
}

}  // namespace
}  // namespace peerkv
