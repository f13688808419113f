// store/range_view_test.cc: the store's range fingerprints
// (Store::KeyspaceFingerprints, Store::OpenRangeView) against a model
// computed from Scan: equal sets give equal fingerprints whatever path and
// order wrote them, a different value gives a different one, children add
// up to their parent and every node lists exactly its own items; a store
// of format 2 gets its table when opened, and the scrub repairs a table
// changed behind the store's back (through raw LMDB here).
#include <algorithm>
#include <map>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lmdb.h"
#include "store/codec.h"
#include "store/range_fingerprint.h"
#include "store/range_table.h"
#include "store/store.h"
#include "store/tables.h"
#include "testing/temp_dir.h"

namespace peerkv {
namespace {

using absl::StatusCode;
using rbsr::Fingerprint;
using rbsr::NodeId;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

constexpr int64_t kT0 = 1'700'000'000'000;
using Roots = std::vector<std::pair<std::string, Fingerprint>>;

class RangeViewTest : public ::testing::Test {
 protected:
  StoreOptions Options(const std::string& name = "db") {
    StoreOptions options;
    options.dir = dir_.Sub(name);
    options.wall_clock = &wall_;
    options.sync = false;
    return options;
  }
  std::unique_ptr<Store> OpenStore(StoreOptions options) {
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(std::move(options));
    EXPECT_THAT(store, IsOk());
    return store.ok() ? std::move(*store) : nullptr;
  }
  std::unique_ptr<Store> OpenStore(const std::string& name = "db") {
    return OpenStore(Options(name));
  }

  // Every register of `keyspace`, tombstones included.
  static std::vector<Record> All(const Store& store, const std::string& keyspace) {
    std::vector<Record> out;
    ScanOptions options;
    options.include_tombstones = true;
    options.limit = kMaxScanLimit;
    for (int pages = 0; pages < 1000; ++pages) {
      absl::StatusOr<ScanResult> page = store.Scan(keyspace, options);
      EXPECT_THAT(page, IsOk());
      if (!page.ok()) break;
      for (Record& r : page->records) out.push_back(std::move(r));
      if (!page->more) break;
      options.start_after = out.back().key;
    }
    return out;
  }

  // The model: the sum of the item hashes of what Scan returns.
  static Fingerprint ModelRoot(const Store& store, const std::string& keyspace) {
    Fingerprint f;
    for (const Record& r : All(store, keyspace)) {
      f.Add(rbsr::ItemHash(r.keyspace, r.key, r.version, r.deleted, r.value));
    }
    return f;
  }

  static Roots RootsOf(const Store& store) {
    absl::StatusOr<Roots> roots = store.KeyspaceFingerprints();
    EXPECT_THAT(roots, IsOk());
    return roots.ok() ? *roots : Roots{};
  }

  static Fingerprint ViewRoot(const Store& store, const std::string& keyspace) {
    absl::StatusOr<std::unique_ptr<rbsr::RangeView>> view = store.OpenRangeView(keyspace);
    EXPECT_THAT(view, IsOk());
    if (!view.ok()) return {};
    absl::StatusOr<Fingerprint> root = (*view)->FingerprintOf(NodeId{});
    EXPECT_THAT(root, IsOk());
    return root.ok() ? *root : Fingerprint{};
  }

  // The store's roots and its views' roots equal the model's, for every
  // keyspace in `keyspaces`.
  static void ExpectMatchesModel(const Store& store, const std::vector<std::string>& keyspaces) {
    Roots model;
    for (const std::string& ks : keyspaces) {
      const Fingerprint f = ModelRoot(store, ks);
      if (f.count != 0) model.emplace_back(ks, f);
      EXPECT_EQ(ViewRoot(store, ks), f) << ks;
    }
    EXPECT_EQ(RootsOf(store), model);
    // The 64-bit fingerprint is the low limb of the roots' sum.
    uint64_t low = 0;
    for (const auto& [ks, f] : RootsOf(store)) low += f.sum.limbs[0];
    EXPECT_EQ(store.fingerprint(), low);
  }

  // Runs `fn` in a write transaction on the closed store's files.
  void WithRawLmdb(const std::string& name,
                   const std::function<void(MDB_txn*, const tables::Dbis&)>& fn) {
    MDB_env* env = nullptr;
    ASSERT_EQ(mdb_env_create(&env), 0);
    ASSERT_EQ(mdb_env_set_maxdbs(env, tables::kMaxDbs), 0);
    ASSERT_EQ(mdb_env_set_mapsize(env, size_t{64} << 20), 0);
    ASSERT_EQ(mdb_env_open(env, dir_.Sub(name).c_str(), 0, 0600), 0);
    MDB_txn* txn = nullptr;
    ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
    tables::Dbis dbis;
    ASSERT_THAT(tables::OpenDbis(txn, &dbis), IsOk());
    fn(txn, dbis);
    ASSERT_EQ(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
  }

  static Record Remote(const std::string& keyspace, const std::string& key, int64_t millis,
                       uint64_t origin, const std::string& value, bool deleted = false) {
    return Record{keyspace, key, Version{MakeHlc(kT0 + millis, 0), origin}, deleted,
                  deleted ? "" : value, 0};
  }

  testing::TempDir dir_;
  ManualWallClock wall_{kT0 + 1'000'000};
};

TEST_F(RangeViewTest, EmptyStoreHasNoKeyspacesAndEmptyViews) {
  auto store = OpenStore();
  EXPECT_THAT(RootsOf(*store), IsEmpty());
  EXPECT_EQ(ViewRoot(*store, "nothing"), Fingerprint{});
}

TEST_F(RangeViewTest, LocalWritesOverwritesAndDeletesMatchTheModel) {
  auto store = OpenStore();
  for (int i = 0; i < 300; ++i) {
    ASSERT_THAT(store->Put(i % 3 == 0 ? "b" : "a", absl::StrCat("k", i), absl::StrCat("v", i)),
                IsOk());
  }
  for (int i = 0; i < 300; i += 7) {
    ASSERT_THAT(store->Put(i % 3 == 0 ? "b" : "a", absl::StrCat("k", i), "again"), IsOk());
  }
  for (int i = 0; i < 300; i += 11) {
    ASSERT_THAT(store->Delete(i % 3 == 0 ? "b" : "a", absl::StrCat("k", i)), IsOk());
  }
  ASSERT_THAT(store->Delete("c", "never-written"), IsOk());
  ExpectMatchesModel(*store, {"a", "b", "c"});
  const Roots roots = RootsOf(*store);
  ASSERT_EQ(roots.size(), 3u);
  EXPECT_EQ(roots[0].first, "a");
  EXPECT_EQ(roots[0].second.count, 200u);
  EXPECT_EQ(roots[2].second.count, 1u);  // a tombstone is a register
}

TEST_F(RangeViewTest, EqualSetsThroughDifferentPathsAndOrdersAreEqual) {
  auto a = OpenStore("a");
  for (int i = 0; i < 200; ++i) {
    ASSERT_THAT(a->Put("ks", absl::StrCat("k", i), absl::StrCat("v", i)), IsOk());
  }
  for (int i = 0; i < 200; i += 3) ASSERT_THAT(a->Put("ks", absl::StrCat("k", i), "new"), IsOk());
  for (int i = 0; i < 200; i += 5) ASSERT_THAT(a->Delete("ks", absl::StrCat("k", i)), IsOk());
  const std::vector<Record> records = All(*a, "ks");

  // b: the final records merged in reverse order, after older versions of
  // some of them (which the final ones overwrite).
  auto b = OpenStore("b");
  std::vector<Record> older;
  for (size_t i = 0; i < records.size(); i += 4) {
    Record r = records[i];
    r.version.hlc -= 1;
    r.value = "stale";
    r.deleted = false;
    older.push_back(r);
  }
  ASSERT_THAT(b->Merge(older), IsOk());
  std::vector<Record> reversed(records.rbegin(), records.rend());
  ASSERT_THAT(b->Merge(reversed), IsOk());

  // c: shuffled, one record per merge, with every record merged twice.
  auto c = OpenStore("c");
  std::vector<Record> shuffled = records;
  std::mt19937 rng(7);
  std::shuffle(shuffled.begin(), shuffled.end(), rng);
  for (int round = 0; round < 2; ++round) {
    for (const Record& r : shuffled) ASSERT_THAT(c->Merge({r}), IsOk());
  }

  const Roots roots = RootsOf(*a);
  ASSERT_EQ(roots.size(), 1u);
  EXPECT_EQ(roots[0].second.count, 200u);
  EXPECT_EQ(RootsOf(*b), roots);
  EXPECT_EQ(RootsOf(*c), roots);
  ExpectMatchesModel(*b, {"ks"});
  ExpectMatchesModel(*c, {"ks"});
}

TEST_F(RangeViewTest, ADifferentValueAtTheSameVersionDiffers) {
  auto a = OpenStore("a");
  auto b = OpenStore("b");
  std::vector<Record> batch;
  for (int i = 0; i < 50; ++i) batch.push_back(Remote("ks", absl::StrCat("k", i), i, 9, "same"));
  ASSERT_THAT(a->Merge(batch), IsOk());
  batch[17].value = "other";
  ASSERT_THAT(b->Merge(batch), IsOk());
  const Roots ra = RootsOf(*a), rb = RootsOf(*b);
  ASSERT_EQ(ra.size(), 1u);
  ASSERT_EQ(rb.size(), 1u);
  EXPECT_EQ(ra[0].second.count, rb[0].second.count);
  EXPECT_NE(ra[0].second.sum, rb[0].second.sum);
}

// Walks the tree: each node's children add up to it, and each node lists
// exactly its items, in position order.
void CheckNode(rbsr::RangeView& view, const NodeId& node, int max_depth, size_t* visited) {
  absl::StatusOr<Fingerprint> f = view.FingerprintOf(node);
  ASSERT_THAT(f, IsOk());
  Fingerprint listed;
  uint64_t last = 0;
  bool first = true;
  ASSERT_THAT(view.ForEachItem(node,
                               [&](const rbsr::RangeItem& item) {
                                 EXPECT_TRUE(node.Contains(item.position));
                                 EXPECT_EQ(item.position, rbsr::KeyPosition(item.key));
                                 EXPECT_TRUE(first || item.position >= last);
                                 first = false;
                                 last = item.position;
                                 listed.Add(item.hash);
                               }),
              IsOk());
  EXPECT_EQ(listed, *f);
  ++*visited;
  if (node.depth == max_depth || f->count == 0) return;
  Fingerprint children;
  for (int i = 0; i < rbsr::kBranching; ++i) {
    const NodeId child = node.Child(i);
    absl::StatusOr<Fingerprint> cf = view.FingerprintOf(child);
    ASSERT_THAT(cf, IsOk());
    children.Add(*cf);
    // Deep only where there is something: a path down to single positions.
    if (cf->count > 0 && (child.depth <= 2 || cf->count > 1 || child.depth == max_depth - 1)) {
      CheckNode(view, child, max_depth, visited);
    }
  }
  EXPECT_EQ(children, *f) << "depth " << int(node.depth) << " prefix " << node.prefix;
}

TEST_F(RangeViewTest, ChildrenAddUpAndEveryNodeListsItsOwnItems) {
  auto store = OpenStore();
  std::vector<Mutation> batch;
  for (int i = 0; i < 3000; ++i) {
    batch.push_back(Mutation{"ks", absl::StrCat("key-", i), absl::StrCat("value-", i)});
  }
  ASSERT_THAT(store->Write(std::move(batch)), IsOk());
  ASSERT_THAT(store->Put("other", "x", "y"), IsOk());
  absl::StatusOr<std::unique_ptr<rbsr::RangeView>> view = store->OpenRangeView("ks");
  ASSERT_THAT(view, IsOk());
  size_t visited = 0;
  CheckNode(**view, NodeId{}, rbsr::kMaxDepth, &visited);
  EXPECT_GT(visited, 256u);
  absl::StatusOr<Fingerprint> root = (*view)->FingerprintOf(NodeId{});
  ASSERT_THAT(root, IsOk());
  EXPECT_EQ(root->count, 3000u);
  // A single position holds the one key there.
  const uint64_t p = rbsr::KeyPosition("key-17");
  std::vector<std::string> keys;
  ASSERT_THAT((*view)->ForEachItem(NodeId{rbsr::kMaxDepth, p},
                                   [&](const rbsr::RangeItem& item) {
                                     keys.push_back(std::string(item.key));
                                   }),
              IsOk());
  EXPECT_THAT(keys, ElementsAre("key-17"));
}

TEST_F(RangeViewTest, RefusesInvalidNodesAndKeyspaces) {
  auto store = OpenStore();
  ASSERT_THAT(store->Put("ks", "k", "v"), IsOk());
  absl::StatusOr<std::unique_ptr<rbsr::RangeView>> view = store->OpenRangeView("ks");
  ASSERT_THAT(view, IsOk());
  EXPECT_THAT((*view)->FingerprintOf(NodeId{1, 16}),
              StatusIs(StatusCode::kInvalidArgument, "depth 1"));
  EXPECT_THAT((*view)->FingerprintOf(NodeId{17, 0}), StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT((*view)->ForEachItem(NodeId{0, 1}, [](const rbsr::RangeItem&) {}),
              StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT(store->OpenRangeView(""), StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT(store->OpenRangeView(std::string(kMaxKeyspaceBytes + 1, 'k')),
              StatusIs(StatusCode::kInvalidArgument));
}

TEST_F(RangeViewTest, AViewBeyondItsMemoryBoundIsRefused) {
  StoreOptions options = Options();
  options.max_range_view_bytes = 4096;
  auto store = OpenStore(options);
  std::vector<Mutation> batch;
  for (int i = 0; i < 1000; ++i) batch.push_back(Mutation{"ks", absl::StrCat("k", i), "v"});
  ASSERT_THAT(store->Write(std::move(batch)), IsOk());
  absl::StatusOr<std::unique_ptr<rbsr::RangeView>> view = store->OpenRangeView("ks");
  ASSERT_THAT(view, IsOk());
  // The stored levels need no items; below them, or for items, the scan
  // would exceed the bound.
  absl::StatusOr<Fingerprint> root = (*view)->FingerprintOf(NodeId{});
  ASSERT_THAT(root, IsOk());
  EXPECT_EQ(root->count, 1000u);
  EXPECT_THAT((*view)->FingerprintOf(NodeId{3, 0}),
              StatusIs(StatusCode::kResourceExhausted, "max_range_view_bytes"));
  EXPECT_THAT((*view)->ForEachItem(NodeId{}, [](const rbsr::RangeItem&) {}),
              StatusIs(StatusCode::kResourceExhausted, "max_range_view_bytes"));
  options.max_range_view_bytes = 0;
  store.reset();
  EXPECT_THAT(Store::Open(options), StatusIs(StatusCode::kInvalidArgument));
}

TEST_F(RangeViewTest, CompactionAndRestartKeepTheFingerprints) {
  StoreOptions options = Options();
  options.compaction_min_garbage = 1;
  auto store = OpenStore(options);
  for (int round = 0; round < 5; ++round) {
    for (int i = 0; i < 100; ++i) {
      ASSERT_THAT(store->Put("ks", absl::StrCat("k", i), absl::StrCat(round)), IsOk());
    }
  }
  const Roots before = RootsOf(*store);
  ASSERT_THAT(store->CompactLog(), IsOk());
  EXPECT_EQ(RootsOf(*store), before);
  ExpectMatchesModel(*store, {"ks"});
  store.reset();
  store = OpenStore(options);
  EXPECT_EQ(RootsOf(*store), before);
  ExpectMatchesModel(*store, {"ks"});
}

TEST_F(RangeViewTest, ForkRestampKeepsTheFingerprintsTrue) {
  auto store = OpenStore();
  for (int i = 0; i < 100; ++i) ASSERT_THAT(store->Put("ks", absl::StrCat("k", i), "v"), IsOk());
  const Roots before = RootsOf(*store);
  absl::StatusOr<Store::ForkResult> fork = store->Fork(/*restamp_after_seq=*/50);
  ASSERT_THAT(fork, IsOk());
  ASSERT_THAT(fork->restamp_status, IsOk());
  EXPECT_EQ(fork->restamped, 50u);
  const Roots after = RootsOf(*store);
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0].second.count, 100u);
  EXPECT_NE(after, before);  // fifty registers have new versions
  ExpectMatchesModel(*store, {"ks"});
}


// Writes registers into two keyspaces of store `name` and closes it;
// returns its roots and fingerprint.
std::pair<Roots, uint64_t> Fill(RangeViewTest& test, std::unique_ptr<Store> store) {
  std::vector<Mutation> batch;
  for (int i = 0; i < 500; ++i) {
    batch.push_back(Mutation{i % 2 == 0 ? "a" : "b", absl::StrCat("k", i), absl::StrCat("v", i)});
  }
  EXPECT_THAT(store->Write(std::move(batch)), IsOk());
  for (int i = 0; i < 500; i += 9) EXPECT_THAT(store->Delete("a", absl::StrCat("k", i)), IsOk());
  absl::StatusOr<Roots> roots = store->KeyspaceFingerprints();
  EXPECT_THAT(roots, IsOk());
  return {roots.ok() ? *roots : Roots{}, store->fingerprint()};
}

TEST_F(RangeViewTest, AFormatTwoStoreGetsItsTableWhenOpened) {
  const auto [roots, fingerprint] = Fill(*this, OpenStore());
  ASSERT_EQ(roots.size(), 2u);
  // Make it look like format 2: no ranges table, the marker, and the old
  // kind of fingerprint.
  WithRawLmdb("db", [](MDB_txn* txn, const tables::Dbis& dbis) {
    ASSERT_EQ(mdb_drop(txn, dbis.ranges, 1), 0);
    ASSERT_THAT(tables::WriteMetaU64(txn, dbis.meta, codec::kMetaFormat, 2), IsOk());
    absl::StatusOr<std::optional<codec::MetaState>> state = tables::ReadMetaState(txn, dbis.meta);
    ASSERT_THAT(state, IsOk());
    ASSERT_TRUE(state->has_value());
    (*state)->fingerprint = 12345;
    ASSERT_THAT(tables::WriteMetaState(txn, dbis.meta, **state), IsOk());
  });
  auto store = OpenStore();
  EXPECT_EQ(RootsOf(*store), roots);
  EXPECT_EQ(store->fingerprint(), fingerprint);
  ExpectMatchesModel(*store, {"a", "b"});
  // Computed at open: the scrub after it finds nothing to repair.
  absl::StatusOr<std::vector<std::string>> scrub = store->WaitForOpenScrub();
  ASSERT_THAT(scrub, IsOk());
  EXPECT_THAT(*scrub, IsEmpty());
  store.reset();
  WithRawLmdb("db", [](MDB_txn* txn, const tables::Dbis& dbis) {
    absl::StatusOr<std::optional<uint64_t>> format =
        tables::ReadMetaU64(txn, dbis.meta, codec::kMetaFormat);
    ASSERT_THAT(format, IsOk());
    EXPECT_EQ(*format, std::optional<uint64_t>(codec::kFormatVersion));
  });
  store = OpenStore();
  EXPECT_EQ(RootsOf(*store), roots);
  EXPECT_EQ(store->fingerprint(), fingerprint);
}

TEST_F(RangeViewTest, ScrubRepairsATamperedTable) {
  const auto [roots, fingerprint] = Fill(*this, OpenStore());
  WithRawLmdb("db", [](MDB_txn* txn, const tables::Dbis& dbis) {
    // A bucket of "a" off by one item, the root of "b" gone, and a keyspace
    // with no records at all.
    ranges::Deltas tamper;
    tamper.AddToBucket("a", 7, ranges::Delta{rbsr::Sum256{{1, 2, 3, 4}}, 1});
    tamper.AddToBucket("ghost", 200, ranges::Delta{rbsr::Sum256{{5, 0, 0, 0}}, 3});
    ASSERT_THAT(ranges::ApplyDeltas(txn, dbis.ranges, tamper), IsOk());
    const std::string root_b = ranges::RootKey("b");
    MDB_val k{root_b.size(), const_cast<char*>(root_b.data())};
    ASSERT_EQ(mdb_del(txn, dbis.ranges, &k, nullptr), 0);
  });
  StoreOptions options = Options();
  options.scrub_at_open = false;
  auto store = OpenStore(options);
  EXPECT_NE(RootsOf(*store), roots);
  absl::StatusOr<std::vector<std::string>> scrub = store->ScrubRangeFingerprints();
  ASSERT_THAT(scrub, IsOk());
  EXPECT_THAT(*scrub, ElementsAre("a", "b", "ghost"));
  EXPECT_EQ(RootsOf(*store), roots);
  EXPECT_EQ(store->fingerprint(), fingerprint);
  ExpectMatchesModel(*store, {"a", "b", "ghost"});
  // The views' stored levels are right again: every bucket of "a".
  absl::StatusOr<std::unique_ptr<rbsr::RangeView>> view = store->OpenRangeView("a");
  ASSERT_THAT(view, IsOk());
  absl::StatusOr<Fingerprint> bucket = (*view)->FingerprintOf(NodeId{2, 7});
  ASSERT_THAT(bucket, IsOk());
  Fingerprint listed;
  ASSERT_THAT((*view)->ForEachItem(NodeId{2, 7},
                                   [&](const rbsr::RangeItem& item) { listed.Add(item.hash); }),
              IsOk());
  EXPECT_EQ(listed, *bucket);
  scrub = store->ScrubRangeFingerprints();
  ASSERT_THAT(scrub, IsOk());
  EXPECT_THAT(*scrub, IsEmpty());
  // Durable: a reopened store has the repaired table.
  store.reset();
  store = OpenStore(options);
  EXPECT_EQ(RootsOf(*store), roots);
  EXPECT_EQ(store->fingerprint(), fingerprint);
}

// The reconcile process test's fault: records deleted from the LMDB files
// of a closed replica. The scrub after open notices, by itself.
TEST_F(RangeViewTest, TheOpenScrubNoticesRecordsDeletedBehindTheStoresBack) {
  Fill(*this, OpenStore());
  WithRawLmdb("db", [](MDB_txn* txn, const tables::Dbis& dbis) {
    for (const char* key : {"k1", "k3", "k5"}) {
      const std::string record_key = codec::RecordKey("b", key);
      MDB_val k{record_key.size(), const_cast<char*>(record_key.data())};
      ASSERT_EQ(mdb_del(txn, dbis.records, &k, nullptr), 0);
    }
  });
  std::vector<std::string> lines;
  absl::Mutex mu;
  StoreOptions options = Options();
  options.log = [&](const std::string& line) {
    absl::MutexLock lock(&mu);
    lines.push_back(line);
  };
  auto store = OpenStore(options);
  absl::StatusOr<std::vector<std::string>> scrub = store->WaitForOpenScrub();
  ASSERT_THAT(scrub, IsOk());
  EXPECT_THAT(*scrub, ElementsAre("b"));
  ExpectMatchesModel(*store, {"a", "b"});
  const Roots roots = RootsOf(*store);
  ASSERT_EQ(roots.size(), 2u);
  EXPECT_EQ(roots[1].second.count, 247u);
  absl::MutexLock lock(&mu);
  ASSERT_THAT(lines, SizeIs(1));
  EXPECT_THAT(lines[0], HasSubstr("keyspace(s) b did not match their records"));
}

// The repair is computed from a snapshot and added through the writer:
// right even while writes go on.
TEST_F(RangeViewTest, ScrubIsRightWhileWritesGoOn) {
  Fill(*this, OpenStore());
  WithRawLmdb("db", [](MDB_txn* txn, const tables::Dbis& dbis) {
    ranges::Deltas tamper;
    for (uint32_t b = 0; b < 256; b += 5) {
      tamper.AddToBucket("a", b, ranges::Delta{rbsr::Sum256{{b, 1, 0, 0}}, -1});
    }
    ASSERT_THAT(ranges::ApplyDeltas(txn, dbis.ranges, tamper), IsOk());
  });
  StoreOptions options = Options();
  options.scrub_at_open = false;
  auto store = OpenStore(options);
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int i = 0; i < 100000 && !stop.load(); ++i) {
      ASSERT_THAT(store->Put("a", absl::StrCat("w", i % 300), absl::StrCat(i)), IsOk());
    }
  });
  absl::StatusOr<std::vector<std::string>> scrub = store->ScrubRangeFingerprints();
  stop = true;
  writer.join();
  ASSERT_THAT(scrub, IsOk());
  EXPECT_THAT(*scrub, ElementsAre("a"));
  ExpectMatchesModel(*store, {"a", "b"});
}

TEST_F(RangeViewTest, TheStoredLevelsAgreeWithTheItemsAfterEveryKindOfWrite) {
  StoreOptions options = Options();
  options.compaction_min_garbage = 1;
  auto store = OpenStore(options);
  std::vector<Mutation> batch;
  for (int i = 0; i < 2000; ++i) batch.push_back(Mutation{"ks", absl::StrCat("k", i), "v"});
  ASSERT_THAT(store->Write(std::move(batch)), IsOk());
  std::vector<Record> remote;
  for (int i = 0; i < 2000; i += 3) {
    remote.push_back(Remote("ks", absl::StrCat("k", i), 2'000'000, 99, "remote", i % 2 == 0));
  }
  ASSERT_THAT(store->Merge(remote), IsOk());
  ASSERT_THAT(store->CompactLog(), IsOk());
  ASSERT_THAT(store->Fork(/*restamp_after_seq=*/1500), IsOk());
  // Depth 0..2 come from the stored table until the view first scans;
  // a second view is made to scan at once, from the same state.
  absl::StatusOr<std::unique_ptr<rbsr::RangeView>> stored = store->OpenRangeView("ks");
  absl::StatusOr<std::unique_ptr<rbsr::RangeView>> scanned = store->OpenRangeView("ks");
  ASSERT_THAT(stored, IsOk());
  ASSERT_THAT(scanned, IsOk());
  ASSERT_THAT((*scanned)->ForEachItem(NodeId{}, [](const rbsr::RangeItem&) {}), IsOk());
  for (int depth = 0; depth <= 2; ++depth) {
    for (uint64_t prefix = 0; prefix < (uint64_t{1} << (4 * depth)); ++prefix) {
      absl::StatusOr<Fingerprint> a = (*stored)->FingerprintOf(NodeId{uint8_t(depth), prefix});
      absl::StatusOr<Fingerprint> b = (*scanned)->FingerprintOf(NodeId{uint8_t(depth), prefix});
      ASSERT_THAT(a, IsOk());
      ASSERT_THAT(b, IsOk());
      EXPECT_EQ(*a, *b) << depth << "/" << prefix;
    }
  }
  ExpectMatchesModel(*store, {"ks"});
}

}  // namespace
}  // namespace peerkv
