// store/snapshot_test.cc: the store's half of snapshot bootstrap: pages of
// every register in key order (ReadSnapshot), and loading them into a new
// replica with the durable bootstrap marker (LoadSnapshotPage), which
// claims the peer's checkpoint and watermarks only with the last page.
#include <random>

#include "absl/strings/str_format.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "store/store.h"
#include "testing/temp_dir.h"

namespace peerkv {
namespace {

using absl::StatusCode;

constexpr int64_t kT0 = 1'700'000'000'000;

class SnapshotTest : public ::testing::Test {
 protected:
  std::unique_ptr<Store> OpenStore(const std::string& name) {
    StoreOptions options;
    options.dir = dir_.Sub(name);
    options.wall_clock = &wall_;
    options.sync = false;
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(std::move(options));
    EXPECT_THAT(store, IsOk());
    return store.ok() ? std::move(*store) : nullptr;
  }

  // Fills `source` with `n` keys in two keyspaces, written in a shuffled
  // order, a tenth of them deleted afterwards.
  static void Fill(Store& source, int n) {
    std::vector<int> order(n);
    for (int i = 0; i < n; ++i) order[i] = i;
    std::mt19937 rng(7);
    std::shuffle(order.begin(), order.end(), rng);
    std::vector<Mutation> batch;
    for (int i : order) {
      batch.push_back(Mutation{i % 2 ? "b" : "a", absl::StrFormat("k%06d", i),
                               absl::StrFormat("value-%d", i)});
      if (batch.size() == 1000) {
        ASSERT_THAT(source.Write(std::move(batch)), IsOk());
        batch.clear();
      }
    }
    if (!batch.empty()) {
      ASSERT_THAT(source.Write(std::move(batch)), IsOk());
    }
    for (int i = 0; i < n; i += 10) {
      ASSERT_THAT(source.Delete(i % 2 ? "b" : "a", absl::StrFormat("k%06d", i)), IsOk());
    }
  }

  // Copies `source` into `target` page by page, as the engine does.
  static void Copy(Store& source, Store& target, size_t page_records) {
    BootstrapMarker marker{source.replica_id(), source.incarnation(), source.open_nonce(),
                           source.max_seq(), source.GetWatermarks()};
    while (true) {
      absl::StatusOr<Store::SnapshotPage> page = source.ReadSnapshot(
          marker.after_keyspace, marker.after_key, page_records, size_t{1} << 20, 0);
      ASSERT_THAT(page, IsOk());
      if (!page->records.empty()) {
        marker.after_keyspace = page->records.back().keyspace;
        marker.after_key = page->records.back().key;
      }
      marker.records += page->records.size();
      if (page->done) {
        ASSERT_THAT(target.LoadSnapshotPage(
                        std::move(page->records), std::nullopt,
                        CheckpointUpdate{marker.peer_id,
                                         PeerCheckpoint{marker.incarnation, marker.point_seq,
                                                        marker.nonce},
                                         marker.watermarks}),
                    IsOk());
        return;
      }
      ASSERT_THAT(target.LoadSnapshotPage(std::move(page->records), marker, std::nullopt),
                  IsOk());
      ASSERT_EQ(target.Bootstrap(), marker);
    }
  }

  testing::TempDir dir_;
  ManualWallClock wall_{kT0};
};

TEST_F(SnapshotTest, PagesListEveryRegisterInKeyOrderWithValues) {
  auto source = OpenStore("source");
  Fill(*source, 2500);
  std::vector<Record> all;
  std::string ks, key;
  for (int pages = 0; pages < 100; ++pages) {
    absl::StatusOr<Store::SnapshotPage> page = source->ReadSnapshot(ks, key, 300, 1 << 20, 0);
    ASSERT_THAT(page, IsOk());
    ASSERT_LE(page->records.size(), 300u);
    for (Record& r : page->records) all.push_back(std::move(r));
    if (page->done) break;
    ks = all.back().keyspace;
    key = all.back().key;
  }
  ASSERT_EQ(all.size(), 2500u);
  for (size_t i = 1; i < all.size(); ++i) {
    EXPECT_LT(std::tie(all[i - 1].keyspace, all[i - 1].key),
              std::tie(all[i].keyspace, all[i].key));
  }
  size_t deleted = 0;
  for (const Record& r : all) {
    absl::StatusOr<std::optional<Record>> held = source->Get(r.keyspace, r.key);
    ASSERT_THAT(held, IsOk());
    ASSERT_TRUE(held->has_value());
    EXPECT_EQ(**held, r);
    deleted += r.deleted;
  }
  EXPECT_EQ(deleted, 250u);
}

// Registers written in key order are read from consecutive log entries
// (stepped to, not sought); overwritten ones break the run and are sought.
TEST_F(SnapshotTest, RegistersWrittenInKeyOrderAreReadWithTheirValues) {
  auto source = OpenStore("source");
  std::vector<Mutation> batch;
  for (int i = 0; i < 1000; ++i) {
    batch.push_back(Mutation{"a", absl::StrFormat("k%04d", i), absl::StrFormat("first-%d", i)});
  }
  ASSERT_THAT(source->Write(std::move(batch)), IsOk());
  for (int i = 0; i < 1000; i += 7) {
    ASSERT_THAT(source->Put("a", absl::StrFormat("k%04d", i), absl::StrFormat("second-%d", i)),
                IsOk());
  }
  absl::StatusOr<Store::SnapshotPage> page = source->ReadSnapshot("", "", 2000, 1 << 20, 0);
  ASSERT_THAT(page, IsOk());
  ASSERT_TRUE(page->done);
  ASSERT_EQ(page->records.size(), 1000u);
  for (int i = 0; i < 1000; ++i) {
    const Record& r = page->records[i];
    EXPECT_EQ(r.key, absl::StrFormat("k%04d", i));
    EXPECT_EQ(r.value, absl::StrFormat(i % 7 == 0 ? "second-%d" : "first-%d", i));
    absl::StatusOr<std::optional<Record>> held = source->Get(r.keyspace, r.key);
    ASSERT_THAT(held, IsOk());
    ASSERT_TRUE(held->has_value());
    EXPECT_EQ(**held, r);
  }
}

TEST_F(SnapshotTest, ValuesOverTheRequestersLimitAreLeftOut) {
  auto source = OpenStore("source");
  ASSERT_THAT(source->Put("a", "small", "x"), IsOk());
  ASSERT_THAT(source->Put("a", "large", std::string(100, 'y')), IsOk());
  absl::StatusOr<Store::SnapshotPage> page = source->ReadSnapshot("", "", 10, 1 << 20, 10);
  ASSERT_THAT(page, IsOk());
  ASSERT_EQ(page->records.size(), 1u);
  EXPECT_EQ(page->records[0].key, "small");
  EXPECT_TRUE(page->done);
}

TEST_F(SnapshotTest, BadReadArgumentsAreRefused) {
  auto source = OpenStore("source");
  EXPECT_THAT(source->ReadSnapshot("", "", 0, 1 << 20, 0),
              StatusIs(StatusCode::kInvalidArgument, "max_records"));
  EXPECT_THAT(source->ReadSnapshot("", "", Store::kMaxSnapshotRecords + 1, 1 << 20, 0),
              StatusIs(StatusCode::kInvalidArgument, "max_records"));
  EXPECT_THAT(source->ReadSnapshot("", "k", 10, 1 << 20, 0),
              StatusIs(StatusCode::kInvalidArgument, "after_key"));
}

TEST_F(SnapshotTest, LoadedReplicaEqualsTheSourceAndClaimsOnlyAtTheEnd) {
  auto source = OpenStore("source");
  Fill(*source, 3000);
  auto target = OpenStore("target");
  Copy(*source, *target, 700);
  EXPECT_EQ(target->Bootstrap(), std::nullopt);
  EXPECT_EQ(target->fingerprint(), source->fingerprint());
  EXPECT_EQ(*target->Digest(), *source->Digest());
  absl::StatusOr<StoreStats> stats = target->Stats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->live_records, 2700u);
  EXPECT_EQ(stats->tombstones, 300u);
  absl::StatusOr<std::optional<PeerCheckpoint>> checkpoint =
      target->GetCheckpoint(source->replica_id());
  ASSERT_THAT(checkpoint, IsOk());
  ASSERT_TRUE(checkpoint->has_value());
  EXPECT_EQ((*checkpoint)->seq, source->max_seq());
  EXPECT_TRUE(target->GetWatermarks().Dominates(source->GetWatermarks()));
  // The range fingerprints agree too (what reconciliation compares).
  EXPECT_EQ(*target->KeyspaceFingerprints(), *source->KeyspaceFingerprints());
  absl::StatusOr<std::vector<std::string>> repaired = target->ScrubRangeFingerprints();
  ASSERT_THAT(repaired, IsOk());
  EXPECT_TRUE(repaired->empty());
}

TEST_F(SnapshotTest, TheMarkerSurvivesARestartAndNothingIsClaimedBeforeTheEnd) {
  auto source = OpenStore("source");
  Fill(*source, 1000);
  BootstrapMarker marker{source->replica_id(), source->incarnation(), source->open_nonce(),
                         source->max_seq(), source->GetWatermarks()};
  absl::StatusOr<Store::SnapshotPage> page = source->ReadSnapshot("", "", 400, 1 << 20, 0);
  ASSERT_THAT(page, IsOk());
  ASSERT_FALSE(page->done);
  marker.after_keyspace = page->records.back().keyspace;
  marker.after_key = page->records.back().key;
  marker.records = page->records.size();
  {
    auto target = OpenStore("target");
    ASSERT_THAT(target->LoadSnapshotPage(std::move(page->records), marker, std::nullopt),
                IsOk());
  }
  auto target = OpenStore("target");
  EXPECT_EQ(target->Bootstrap(), marker);
  absl::StatusOr<std::optional<PeerCheckpoint>> checkpoint =
      target->GetCheckpoint(source->replica_id());
  ASSERT_THAT(checkpoint, IsOk());
  EXPECT_FALSE(checkpoint->has_value());
  EXPECT_FALSE(target->GetWatermarks().Dominates(source->GetWatermarks()));
  absl::StatusOr<StoreStats> stats = target->Stats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->live_records + stats->tombstones, 400u);
}

TEST_F(SnapshotTest, LocalWritesDuringTheLoadKeepTheMergeRule) {
  auto source = OpenStore("source");
  Fill(*source, 2000);
  auto target = OpenStore("target");
  wall_.Advance(1000);
  // Written before the snapshot reaches these keys, and after: the later
  // local write wins (a newer clock) wherever it lands.
  ASSERT_THAT(target->Put("a", "k000500", "mine"), IsOk());
  ASSERT_THAT(target->Put("zz", "last", "after every snapshot key"), IsOk());
  Copy(*source, *target, 300);
  absl::StatusOr<std::optional<Record>> mine = target->Get("a", "k000500");
  ASSERT_THAT(mine, IsOk());
  ASSERT_TRUE(mine->has_value());
  EXPECT_EQ((*mine)->value, "mine");
  absl::StatusOr<StoreStats> stats = target->Stats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->live_records + stats->tombstones, 2001u);
  absl::StatusOr<std::vector<std::string>> repaired = target->ScrubRangeFingerprints();
  ASSERT_THAT(repaired, IsOk());
  EXPECT_TRUE(repaired->empty());
}

TEST_F(SnapshotTest, APageOutOfKeyOrderIsRefused) {
  auto target = OpenStore("target");
  std::vector<Record> page = {
      Record{"a", "k2", Version{MakeHlc(kT0, 0), 9}, false, "v", 0},
      Record{"a", "k1", Version{MakeHlc(kT0, 0), 9}, false, "v", 0},
  };
  EXPECT_THAT(target->LoadSnapshotPage(page, BootstrapMarker{9, 1, 0, 5}, std::nullopt),
              StatusIs(StatusCode::kInvalidArgument, "key order"));
  EXPECT_THAT(target->LoadSnapshotPage(page, std::nullopt, std::nullopt),
              StatusIs(StatusCode::kInvalidArgument, "either"));
  EXPECT_EQ(target->Bootstrap(), std::nullopt);
  EXPECT_EQ(target->max_seq(), 0u);
}

}  // namespace
}  // namespace peerkv
