// replication/tombstone_trials_test.cc: 200 delete-while-away trials with
// tombstone collection (README "Tombstone collection"). Three real stores
// replicate by pulls through ServePull (which records what each requester
// acknowledges) and Merge; keys are deleted while one replica is away, and
// collection runs. Three kinds of trial, in turn: the away replica comes
// back (it held collection back); it is forgotten (`peer forget`), the
// tombstones are collected, and it returns with its old values and a new
// write of its own; it acknowledged the deletes but is then restored from a
// backup taken before them (it forks, as the restore guard makes it) after
// the tombstones were collected everywhere. Each must end with no deleted
// key back anywhere and every other register equal.
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "gtest/gtest.h"
#include "replication/serve.h"
#include "store/store.h"
#include "testing/temp_dir.h"

namespace peerkv::replication {
namespace {

constexpr int64_t kT0 = 1'700'000'000'000;
constexpr int64_t kMinAge = 60'000;

class Trial {
 public:
  Trial(const testing::TempDir& dir, int index, ManualWallClock& wall)
      : wall_(wall), base_(dir.Sub("trial" + std::to_string(index))) {
    for (int i = 0; i < 3; ++i) Open(i);
  }

  void Open(int i) {
    StoreOptions options;
    options.dir = Dir(i);
    options.wall_clock = &wall_;
    options.sync = false;
    options.scrub_at_open = false;
    options.tombstone_min_age_ms = kMinAge;
    options.tombstone_collect_interval = absl::ZeroDuration();
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
    ASSERT_THAT(store, IsOk());
    stores_[i] = std::move(*store);
  }
  void Close(int i) { stores_[i].reset(); }
  std::string Dir(int i) const { return base_ + "/r" + std::to_string(i); }
  Store& at(int i) { return *stores_[i]; }

  // `to` meets `from` (a hello): each registers the other.
  void Meet(int a, int b) {
    at(a).NotePeer(at(b).replica_id());
    at(b).NotePeer(at(a).replica_id());
  }

  // `to` pulls everything `from` has for it, as the engine does: pages
  // after its checkpoint, the peer's watermarks adopted once caught up.
  void Pull(int to, int from) {
    Store& t = at(to);
    Store& f = at(from);
    for (int page = 0; page < 100; ++page) {
      absl::StatusOr<std::optional<PeerCheckpoint>> cp = t.GetCheckpoint(f.replica_id());
      ASSERT_THAT(cp, IsOk());
      PullRequest request;
      request.requester = t.replica_id();
      if (cp->has_value()) {
        request.incarnation = (*cp)->incarnation;
        request.after_seq = (*cp)->seq;
        request.after_nonce = (*cp)->nonce;
      }
      request.max_records = 1000;
      request.max_bytes = 1 << 20;
      request.watermarks = t.GetWatermarks();
      absl::StatusOr<PullResponse> response = ServePull(f, request);
      ASSERT_THAT(response, IsOk());
      const bool caught_up = response->last_seq >= response->max_seq;
      Watermarks adopted;
      if (caught_up) {
        for (const auto& [origin, hlc] : response->watermarks) {
          if (!t.Distrusts(origin)) adopted[origin] = hlc;
        }
      }
      ASSERT_THAT(t.Merge(std::move(response->records),
                          CheckpointUpdate{f.replica_id(),
                                           PeerCheckpoint{response->incarnation,
                                                          response->last_seq, response->nonce},
                                           adopted}),
                  IsOk());
      if (caught_up) return;
    }
    FAIL() << "pull did not catch up";
  }
  // What a reconcile session does with registers that differ, reduced to
  // its effect: `from`'s registers merged into `to` (no source named).
  void Reconcile(int to, int from) {
    absl::StatusOr<ScanResult> scan =
        at(from).Scan("ks", ScanOptions{.limit = kMaxScanLimit, .include_tombstones = true});
    ASSERT_THAT(scan, IsOk());
    ASSERT_THAT(at(to).Merge(std::move(scan->records)), IsOk());
  }
  // Pulls between every pair of `live` replicas, a few rounds, then a
  // reconcile of every pair (logs leave out what a peer's watermarks
  // cover: a stale register is met only that way), then pulls again.
  void Sync(const std::vector<int>& live) {
    for (int round = 0; round < 4; ++round) {
      for (int a : live) {
        for (int b : live) {
          if (a == b) continue;
          if (round == 2) {
            Reconcile(a, b);
          } else {
            Pull(a, b);
          }
        }
      }
    }
  }
  uint64_t Collect(const std::vector<int>& live) {
    uint64_t collected = 0;
    for (int i : live) {
      absl::StatusOr<uint64_t> n = at(i).CollectAllTombstones();
      EXPECT_THAT(n, IsOk());
      collected += n.ok() ? *n : 0;
    }
    return collected;
  }

  void Put(int i, const std::string& key, const std::string& value) {
    ASSERT_THAT(at(i).Put("ks", key, value), IsOk());
  }
  void Delete(int i, const std::string& key) { ASSERT_THAT(at(i).Delete("ks", key), IsOk()); }
  // The live value of `key` at replica i, or "" if deleted or absent.
  std::string Value(int i, const std::string& key) {
    absl::StatusOr<std::optional<Record>> got = at(i).Get("ks", key);
    EXPECT_THAT(got, IsOk());
    if (!got.ok() || !got->has_value() || (*got)->deleted) return "";
    return (*got)->value;
  }

 private:
  ManualWallClock& wall_;
  const std::string base_;
  std::unique_ptr<Store> stores_[3];
};

TEST(TombstoneTrials, TwoHundredDeleteWhileAwayTrialsResurrectNothing) {
  testing::TempDir dir;
  std::mt19937_64 rng(13);
  int resurrections = 0, collected_trials = 0, stale_refused = 0;
  for (int trial = 0; trial < 200; ++trial) {
    SCOPED_TRACE("trial " + std::to_string(trial));
    ManualWallClock wall(kT0 + trial * 10'000'000LL);
    Trial t(dir, trial, wall);
    const int kind = trial % 3;  // 0 returns, 1 forgotten, 2 restored from a backup
    const int away = static_cast<int>(rng() % 3);
    const int writer = (away + 1 + static_cast<int>(rng() % 2)) % 3;
    std::vector<int> all = {0, 1, 2}, others;
    for (int i : all) {
      if (i != away) others.push_back(i);
    }
    for (int a : all) {
      for (int b : all) {
        if (a < b) t.Meet(a, b);
      }
    }
    const int keys = 5 + static_cast<int>(rng() % 25);
    std::map<std::string, std::string> want;
    for (int k = 0; k < keys; ++k) {
      const std::string key = "k" + std::to_string(k);
      want[key] = "v" + std::to_string(rng() % 1000);
      t.Put(static_cast<int>(rng() % 3), key, want[key]);
      wall.Advance(1 + static_cast<int64_t>(rng() % 5));
    }
    t.Sync(all);
    wall.Advance(100);
    if (kind == 2) {
      // A backup of the away replica, taken before the deletes.
      t.Close(away);
      std::filesystem::copy(t.Dir(away), t.Dir(away) + ".bak",
                            std::filesystem::copy_options::recursive);
      t.Open(away);
    }
    std::vector<std::string> deleted;
    for (const auto& [key, value] : want) {
      if (rng() % 2 == 0) deleted.push_back(key);
    }
    for (const std::string& key : deleted) {
      t.Delete(writer, key);
      want[key] = "";
      wall.Advance(1);
    }
    const std::string new_key = "new-" + std::to_string(trial);
    if (kind == 2) {
      // It acknowledged the deletes before being restored.
      t.Sync(all);
    } else {
      t.Sync(others);
    }
    wall.Advance(kMinAge + 1000);
    t.Sync(kind == 2 ? all : others);
    if (kind == 0) {
      // Away: it holds every deleted key's tombstone back.
      EXPECT_EQ(t.Collect(others), 0u);
      absl::StatusOr<StoreStats> stats = t.at(writer).Stats();
      ASSERT_THAT(stats, IsOk());
      EXPECT_EQ(stats->tombstones_held, deleted.size());
      if (!deleted.empty()) EXPECT_EQ(stats->tombstones_held_by, t.at(away).replica_id());
      t.Sync(all);  // it returns
      wall.Advance(1000);
      t.Sync(all);
      t.Collect(all);
    } else if (kind == 1) {
      // Forgotten: collection goes on without it.
      for (int i : others) ASSERT_THAT(t.at(i).ForgetPeer(t.at(away).replica_id()), IsOk());
      t.Collect(others);
      // Meanwhile it wrote a new key of its own; then it returns.
      wall.Advance(1000);
      t.Put(away, new_key, "fresh");
      want[new_key] = "fresh";
      for (int i : others) t.Meet(i, away);
      t.Sync(all);
      t.Sync(all);
      wall.Advance(kMinAge + 1000);
      t.Sync(all);
      t.Collect(all);
    } else {
      // Collected everywhere, then restored from the old backup: the
      // restore guard makes it fork (new id), and the others learn that
      // the old id is retired.
      t.Collect(all);
      const uint64_t old_id = t.at(away).replica_id();
      t.Close(away);
      std::filesystem::remove_all(t.Dir(away));
      std::filesystem::rename(t.Dir(away) + ".bak", t.Dir(away));
      t.Open(away);
      ASSERT_THAT(t.at(away).Fork(), IsOk());
      for (int i : others) {
        ASSERT_THAT(t.at(i).ForgetRetiredIds({old_id}), IsOk());
        t.Meet(i, away);
      }
      t.Sync(all);
      t.Sync(all);
      wall.Advance(kMinAge + 1000);
      t.Sync(all);
      t.Collect(all);
    }
    t.Sync(all);
    bool any_collected = false;
    for (int i : all) {
      absl::StatusOr<StoreStats> stats = t.at(i).Stats();
      ASSERT_THAT(stats, IsOk());
      any_collected = any_collected || stats->tombstones_collected > 0;
      stale_refused += static_cast<int>(stats->stale_refused);
      for (const auto& [key, value] : want) {
        const std::string got = t.Value(i, key);
        if (value.empty() && !got.empty()) ++resurrections;
        EXPECT_EQ(got, value) << "replica " << i << " key " << key;
      }
    }
    if (any_collected) ++collected_trials;
  }
  EXPECT_EQ(resurrections, 0);
  // Collection happened, and stale records were met and refused (forgotten
  // peers returning, restored backups).
  EXPECT_GE(collected_trials, 150);
  EXPECT_GT(stale_refused, 0);
}

}  // namespace
}  // namespace peerkv::replication
