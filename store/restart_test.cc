// store/restart_test.cc: what must survive closing and reopening a store:
// replica id, incarnation, data, checkpoints, and a clock that never goes
// backwards even when the wall clock does.
#include <filesystem>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "store/store.h"
#include "testing/temp_dir.h"

namespace peerkv {
namespace {

constexpr int64_t kT0 = 1'700'000'000'000;

class RestartTest : public ::testing::Test {
 protected:
  std::unique_ptr<Store> Open() {
    StoreOptions options;
    options.dir = dir_.Sub("db");
    options.wall_clock = &wall_;
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
    EXPECT_THAT(store, IsOk());
    return store.ok() ? std::move(*store) : nullptr;
  }

  testing::TempDir dir_;
  ManualWallClock wall_{kT0};
};

TEST_F(RestartTest, IdsAndDataPersist) {
  uint64_t id, incarnation;
  Version written;
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    id = store->replica_id();
    incarnation = store->incarnation();
    written = *store->Put("ks", "k", "v");
    ASSERT_THAT(store->Delete("ks", "gone"), IsOk());
  }
  auto store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->replica_id(), id);
  EXPECT_EQ(store->incarnation(), incarnation);
  EXPECT_EQ((*store->Get("ks", "k"))->version, written);
  const StoreStats stats = *store->Stats();
  EXPECT_EQ(stats.live_records, 1u);
  EXPECT_EQ(stats.tombstones, 1u);
  EXPECT_EQ(stats.max_seq, 2u);
  // Seqs continue where they stopped.
  ASSERT_THAT(store->Put("ks", "k2", "v"), IsOk());
  EXPECT_EQ((*store->Get("ks", "k2"))->seq, 3u);
}

TEST_F(RestartTest, TheClockNeverGoesBackwardsAcrossReopen) {
  Version last_local, remote_seen;
  {
    auto store = Open();
    last_local = *store->Put("ks", "a", "v");
    // A peer 50 s ahead: observed and persisted as the high-water mark.
    remote_seen = Version{MakeHlc(kT0 + 50'000, 3), 77};
    ASSERT_THAT(store->Merge({Record{"ks", "b", remote_seen, false, "r", 0}}), IsOk());
  }
  // The machine's clock is set back an hour while the store is closed.
  wall_.Set(kT0 - 3'600'000);
  auto store = Open();
  absl::StatusOr<Version> after = store->Put("ks", "a", "after restart");
  ASSERT_THAT(after, IsOk());
  EXPECT_GT(*after, last_local);
  EXPECT_GT(*after, remote_seen);
  EXPECT_EQ((*store->Get("ks", "a"))->value, "after restart");
}

TEST_F(RestartTest, WatermarksPersist) {
  uint64_t own;
  {
    auto store = Open();
    // Claimed with a batch that wins: written in its transaction.
    ASSERT_THAT(store->Merge({Record{"ks", "k", Version{MakeHlc(kT0, 0), 7}, false, "v", 0}},
                             CheckpointUpdate{7, {1, 1}, Watermarks{{7, 100}, {8, 50}}}),
                IsOk());
    // Claimed with a batch that wins nothing: held, written at close.
    ASSERT_THAT(store->Merge({}, CheckpointUpdate{8, {1, 2}, Watermarks{{8, 60}, {9, 5}}}), IsOk());
    EXPECT_EQ(store->GetWatermarks().at(8), 60u);
    own = store->GetWatermarks().at(store->replica_id());
  }
  auto store = Open();
  const Watermarks w = store->GetWatermarks();
  EXPECT_EQ(w.at(7), 100u);
  EXPECT_EQ(w.at(8), 60u);
  EXPECT_EQ(w.at(9), 5u);
  EXPECT_GE(w.at(store->replica_id()), own);
}

TEST_F(RestartTest, ARecreatedDirectoryIsANewIncarnation) {
  uint64_t id, incarnation;
  {
    auto store = Open();
    id = store->replica_id();
    incarnation = store->incarnation();
    ASSERT_THAT(store->Put("ks", "k", "v"), IsOk());
  }
  std::filesystem::remove_all(dir_.Sub("db"));
  auto store = Open();
  EXPECT_NE(store->replica_id(), id);
  EXPECT_NE(store->incarnation(), incarnation);
  EXPECT_FALSE((*store->Get("ks", "k")).has_value());
  EXPECT_EQ(store->max_seq(), 0u);
}

}  // namespace
}  // namespace peerkv
