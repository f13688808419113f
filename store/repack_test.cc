// store/repack_test.cc: Store::Repack and the repack at the end of a
// collection pass that at least halved the store (README "Tombstone
// collection"): after deleting 90% of the records and collecting their
// tombstones, the LMDB pages in use (used minus free, as mdb_stat -ef counts
// them) are within 1.3x of a store that only ever held the rest, and what
// the store holds (registers, log, change index, fingerprints) is the same;
// and Store::Compact, which runs a pass (of one keyspace or all) and a
// repack now.
#include <lmdb.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/status_matchers.h"
#include "gtest/gtest.h"
#include "store/store.h"
#include "testing/temp_dir.h"

namespace peerkv {
namespace {

constexpr int64_t kT0 = 1'700'000'000'000;
constexpr int64_t kMinAge = 60'000;
constexpr int kRecords = 30'000;

// Pages in use of the closed store in `dir`: me_last_pgno + 1 minus the
// pages the free database lists.
uint64_t PagesInUse(const std::string& dir) {
  MDB_env* env = nullptr;
  EXPECT_EQ(mdb_env_create(&env), 0);
  EXPECT_EQ(mdb_env_set_maxdbs(env, 16), 0);
  EXPECT_EQ(mdb_env_set_mapsize(env, size_t{1} << 32), 0);
  EXPECT_EQ(mdb_env_open(env, dir.c_str(), MDB_RDONLY, 0644), 0);
  MDB_envinfo info;
  mdb_env_info(env, &info);
  uint64_t free = 0;
  MDB_txn* txn = nullptr;
  EXPECT_EQ(mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn), 0);
  MDB_cursor* cursor = nullptr;
  EXPECT_EQ(mdb_cursor_open(txn, 0, &cursor), 0);
  MDB_val k, v;
  for (int rc = mdb_cursor_get(cursor, &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cursor, &k, &v, MDB_NEXT)) {
    free += *static_cast<const size_t*>(v.mv_data);
  }
  mdb_cursor_close(cursor);
  mdb_txn_abort(txn);
  mdb_env_close(env);
  return info.me_last_pgno + 1 - free;
}

class RepackTest : public ::testing::Test {
 protected:
  std::unique_ptr<Store> Open(const std::string& dir) {
    StoreOptions options;
    options.dir = dir;
    options.wall_clock = &wall_;
    options.sync = false;
    options.scrub_at_open = false;
    options.tombstone_min_age_ms = kMinAge;
    options.tombstone_collect_interval = absl::ZeroDuration();
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
    EXPECT_THAT(store, IsOk());
    return store.ok() ? std::move(*store) : nullptr;
  }
  static void Write(Store& store, int step, bool deletes, int skip_every = 0) {
    std::vector<Mutation> batch;
    for (int i = 0; i < kRecords; i += step) {
      if (skip_every > 0 && i % skip_every == 0) continue;
      batch.push_back(Mutation{"ks", absl::StrFormat("user:%08d", i),
                               deletes ? std::nullopt
                                       : std::optional<std::string>(absl::StrFormat(
                                             "value-%08d-%s", i, std::string(40, 'x')))});
      if (batch.size() == 5000) {
        ASSERT_THAT(store.Write(std::move(batch)), IsOk());
        batch.clear();
      }
    }
    if (!batch.empty()) ASSERT_THAT(store.Write(std::move(batch)), IsOk());
  }
  // What a store that wrote kRecords and deleted 90% of them holds.
  static std::map<std::string, std::optional<std::string>> Survivors() {
    std::map<std::string, std::optional<std::string>> want;
    for (int i = 0; i < kRecords; i += 10) {
      want[absl::StrFormat("user:%08d", i)] = absl::StrFormat("value-%08d-%s", i, std::string(40, 'x'));
    }
    return want;
  }
  // Every register of keyspace "ks" (a tombstone as nullopt), checked
  // against `want`, with the stored range fingerprints.
  static void ExpectHolds(Store& store,
                          const std::map<std::string, std::optional<std::string>>& want) {
    std::map<std::string, std::optional<std::string>> got;
    for (const Record& r : Everything(store)) {
      if (r.keyspace != "ks") continue;
      got[r.key] = r.deleted ? std::nullopt : std::optional<std::string>(r.value);
    }
    EXPECT_EQ(got.size(), want.size());
    for (const auto& [key, value] : want) {
      auto it = got.find(key);
      ASSERT_NE(it, got.end()) << key << " lost";
      EXPECT_EQ(it->second, value) << key;
    }
    absl::StatusOr<std::vector<std::string>> scrub = store.ScrubRangeFingerprints();
    ASSERT_THAT(scrub, IsOk());
    EXPECT_TRUE(scrub->empty());
  }
  static std::vector<Record> Everything(Store& store) {
    absl::StatusOr<Changes> changes = store.ChangesSince(0, 100'000);
    EXPECT_THAT(changes, IsOk());
    return changes.ok() ? changes->records : std::vector<Record>{};
  }

  testing::TempDir dir_;
  ManualWallClock wall_{kT0};
};

// Before the repack, 3.4x: the survivors sat in leaves a quarter full,
// which LMDB does not merge.
TEST_F(RepackTest, ACollectionThatEmptiedMostOfTheStoreGivesItsPagesBack) {
  const std::string collected = dir_.Sub("collected");
  const std::string only = dir_.Sub("only");
  std::vector<Record> before;
  uint64_t fingerprint = 0;
  {
    auto store = Open(collected);
    ASSERT_NE(store, nullptr);
    Write(*store, 1, false);
    Write(*store, 1, true, /*skip_every=*/10);  // 90% deleted
    wall_.Advance(kMinAge + 1000);
    absl::StatusOr<uint64_t> n = store->CollectAllTombstones();
    ASSERT_THAT(n, IsOk());
    EXPECT_EQ(*n, static_cast<uint64_t>(kRecords - kRecords / 10));
    before = Everything(*store);
    fingerprint = store->fingerprint();
    EXPECT_EQ(before.size(), static_cast<size_t>(kRecords / 10));
  }
  {
    auto store = Open(only);
    ASSERT_NE(store, nullptr);
    Write(*store, 10, false);
  }
  const uint64_t collected_pages = PagesInUse(collected);
  const uint64_t only_pages = PagesInUse(only);
  EXPECT_LE(collected_pages * 10, only_pages * 13)
      << collected_pages << " pages in use against " << only_pages;
  // The same contents, after reopening too.
  auto store = Open(collected);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->fingerprint(), fingerprint);
  std::vector<Record> after = Everything(*store);
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(after[i].key, before[i].key);
    EXPECT_EQ(after[i].value, before[i].value);
    EXPECT_EQ(after[i].version, before[i].version);
  }
  absl::StatusOr<std::vector<std::string>> scrub = store->ScrubRangeFingerprints();
  ASSERT_THAT(scrub, IsOk());
  EXPECT_TRUE(scrub->empty());
  absl::StatusOr<ScanResult> scan = store->Scan("ks", ScanOptions{.limit = 10});
  ASSERT_THAT(scan, IsOk());
  ASSERT_EQ(scan->records.size(), 10u);
  EXPECT_EQ(scan->records[0].key, "user:00000000");
  // Writes go on after it, and the explicit repack is there too.
  ASSERT_THAT(store->Put("ks", "after", "v"), IsOk());
  absl::StatusOr<Store::RepackResult> repacked = store->Repack();
  ASSERT_THAT(repacked, IsOk());
  EXPECT_GE(repacked->entries_copied, 3 * (before.size() + 1));
  absl::StatusOr<std::optional<Record>> got = store->Get("ks", "after");
  ASSERT_THAT(got, IsOk());
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->value, "v");
}



// Store::Compact (`peerkv compact [KS]`): a keyspace's pass collects that
// keyspace's tombstones alone; a pass over every keyspace collects the
// rest; each ends with a repack, and the pages in use fall.
TEST_F(RepackTest, CompactCollectsTheKeyspaceItNamesThenRepacks) {
  auto store = Open(dir_.Sub("store"));
  ASSERT_NE(store, nullptr);
  Write(*store, 1, false);
  Write(*store, 1, true, /*skip_every=*/10);
  ASSERT_THAT(store->Write({Mutation{"other", "x", "1"}, Mutation{"other", "y", "2"}}), IsOk());
  ASSERT_THAT(store->Write({Mutation{"other", "x", std::nullopt}}), IsOk());
  wall_.Advance(kMinAge + 1000);
  EXPECT_THAT(store->Compact("Bad/Name"), StatusIs(absl::StatusCode::kInvalidArgument));
  absl::StatusOr<CompactResult> other = store->Compact("other");
  ASSERT_THAT(other, IsOk());
  EXPECT_EQ(other->tombstones_collected, 1u);
  EXPECT_GT(other->entries_copied, 0u);
  absl::StatusOr<CompactResult> all = store->Compact("");
  ASSERT_THAT(all, IsOk());
  EXPECT_EQ(all->tombstones_collected, static_cast<uint64_t>(kRecords - kRecords / 10));
  EXPECT_LT(all->pages_after * 2, all->pages_before)
      << all->pages_before << " pages before, " << all->pages_after << " after";
  ExpectHolds(*store, Survivors());
  absl::StatusOr<std::optional<Record>> y = store->Get("other", "y");
  ASSERT_THAT(y, IsOk());
  ASSERT_TRUE(y->has_value());
  EXPECT_EQ((*y)->value, "2");
}


}  // namespace
}  // namespace peerkv
