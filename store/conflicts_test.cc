// store/conflicts_test.cc: the conflict journal (README "Conflict
// journal"): concurrent overwrites journal the loser in both directions,
// sequential ones do not, the bounds drop the oldest, restore writes the
// loser back, and two stores exchanging their logs agree on the journal.
#include <memory>
#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "store/store.h"
#include "testing/temp_dir.h"

namespace peerkv {
namespace {

using absl::StatusCode;
using ::testing::IsEmpty;
using ::testing::SizeIs;

constexpr int64_t kT0 = 1'700'000'000'000;
constexpr uint64_t kPeer = 0x5eed;

class ConflictsTest : public ::testing::Test {
 protected:
  StoreOptions Options(const std::string& name = "db") {
    StoreOptions options;
    options.dir = dir_.Sub(name);
    options.wall_clock = &wall_;
    options.sync = false;
    options.scrub_at_open = false;
    return options;
  }
  std::unique_ptr<Store> Open(StoreOptions options) {
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(std::move(options));
    EXPECT_THAT(store, IsOk());
    return store.ok() ? std::move(*store) : nullptr;
  }

  // A record of kPeer stamped `millis` after kT0 that replaced `mark`.
  static Record Remote(const std::string& key, int64_t millis, const std::string& value,
                       std::optional<Version> mark) {
    Record r{"ks", key, Version{MakeHlc(kT0 + millis, 0), kPeer}, false, value, 0};
    r.replaces = mark;
    return r;
  }

  static std::vector<ConflictEntry> List(const Store& store, const std::string& keyspace = "ks") {
    absl::StatusOr<ConflictList> list = store.ListConflicts(keyspace);
    EXPECT_THAT(list, IsOk());
    return list.ok() ? list->entries : std::vector<ConflictEntry>{};
  }

  // Every current change of `from` merged into `to`, as a pull would.
  static void Pull(const Store& from, Store& to) {
    absl::StatusOr<Changes> changes = from.ChangesSince(0, 10'000);
    ASSERT_THAT(changes, IsOk());
    ASSERT_THAT(to.Merge(changes->records), IsOk());
  }

  testing::TempDir dir_;
  ManualWallClock wall_{kT0 + 10'000};
};

TEST_F(ConflictsTest, IncomingWinnerOverAnUnseenVersionJournalsTheLocalLoser) {
  auto store = Open(Options());
  ASSERT_THAT(store->Put("ks", "k", "mine"), IsOk());
  absl::StatusOr<std::optional<Record>> mine = store->Get("ks", "k");
  ASSERT_THAT(mine, IsOk());
  // Written where the key held nothing, later than ours: it never saw it.
  const Record theirs = Remote("k", 20'000, "theirs", Version{});
  absl::StatusOr<MergeResult> merged = store->Merge({theirs});
  ASSERT_THAT(merged, IsOk());
  EXPECT_EQ(merged->won, 1u);
  const std::vector<ConflictEntry> journal = List(*store);
  ASSERT_THAT(journal, SizeIs(1));
  EXPECT_EQ(journal[0].key, "k");
  EXPECT_EQ(journal[0].loser, (*mine)->version);
  EXPECT_EQ(journal[0].loser_value, "mine");
  EXPECT_FALSE(journal[0].loser_deleted);
  EXPECT_EQ(journal[0].winner, theirs.version);
  EXPECT_EQ(journal[0].when_ms, kT0 + 10'000);
  absl::StatusOr<StoreStats> stats = store->Stats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->conflict_entries, 1u);
  EXPECT_EQ(stats->conflicts_dropped, 0u);
  ASSERT_THAT(stats->conflict_keyspaces, SizeIs(1));
  EXPECT_EQ(stats->conflict_keyspaces[0].keyspace, "ks");
}

TEST_F(ConflictsTest, IncomingLoserThatTheStoredWriterNeverSawIsJournaled) {
  auto store = Open(Options());
  ASSERT_THAT(store->Put("ks", "k", "mine"), IsOk());
  absl::StatusOr<std::optional<Record>> mine = store->Get("ks", "k");
  ASSERT_THAT(mine, IsOk());
  // Older than ours, written where the key held nothing; ours replaced
  // nothing either: concurrent, and ours wins.
  const Record theirs = Remote("k", -5'000, "theirs", Version{});
  absl::StatusOr<MergeResult> merged = store->Merge({theirs});
  ASSERT_THAT(merged, IsOk());
  EXPECT_EQ(merged->won, 0u);
  const std::vector<ConflictEntry> journal = List(*store);
  ASSERT_THAT(journal, SizeIs(1));
  EXPECT_EQ(journal[0].loser, theirs.version);
  EXPECT_EQ(journal[0].loser_value, "theirs");
  EXPECT_EQ(journal[0].winner, (*mine)->version);
  // Pulled again (from another peer): still one entry.
  ASSERT_THAT(store->Merge({theirs}), IsOk());
  EXPECT_THAT(List(*store), SizeIs(1));
  absl::StatusOr<std::optional<Record>> now = store->Get("ks", "k");
  ASSERT_THAT(now, IsOk());
  EXPECT_EQ((*now)->value, "mine");
}

TEST_F(ConflictsTest, SequentialOverwritesInBothDirectionsAreNotJournaled) {
  auto store = Open(Options());
  // Theirs first (replacing nothing), then ours over it: ours saw theirs.
  const Record first = Remote("k", -5'000, "first", Version{});
  ASSERT_THAT(store->Merge({first}), IsOk());
  ASSERT_THAT(store->Put("ks", "k", "second"), IsOk());
  absl::StatusOr<std::optional<Record>> second = store->Get("ks", "k");
  ASSERT_THAT(second, IsOk());
  // An older write that `first` replaced at its origin arrives late: ours
  // (whose mark is `first`) had seen something newer than it.
  ASSERT_THAT(store->Merge({Remote("k", -9'000, "zeroth", Version{})}), IsOk());
  // A later write of theirs that replaced ours.
  ASSERT_THAT(store->Merge({Remote("k", 20'000, "third", (*second)->version)}), IsOk());
  // And one that replaced something newer than ours (ours was replaced
  // there before it): sequential too.
  ASSERT_THAT(store->Merge({Remote("k", 30'000, "fifth", Version{MakeHlc(kT0 + 25'000, 0), 7})}),
              IsOk());
  EXPECT_THAT(List(*store), IsEmpty());
  absl::StatusOr<StoreStats> stats = store->Stats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->conflict_entries, 0u);
}

TEST_F(ConflictsTest, RecordsWithoutAMarkAreNeverJournaled) {
  auto store = Open(Options());
  ASSERT_THAT(store->Put("ks", "k", "mine"), IsOk());
  ASSERT_THAT(store->Merge({Remote("k", 20'000, "newer", std::nullopt)}), IsOk());
  // Stored now without a mark: an older concurrent record cannot be told.
  ASSERT_THAT(store->Merge({Remote("k", 15'000, "older", Version{})}), IsOk());
  EXPECT_THAT(List(*store), IsEmpty());
}

TEST_F(ConflictsTest, DetectionOffJournalsNothing) {
  StoreOptions options = Options();
  options.journal_conflicts = false;
  auto store = Open(options);
  ASSERT_THAT(store->Put("ks", "k", "mine"), IsOk());
  ASSERT_THAT(store->Merge({Remote("k", 20'000, "theirs", Version{})}), IsOk());
  EXPECT_THAT(List(*store), IsEmpty());
}

TEST_F(ConflictsTest, TwoReplicasEditingApartAgreeOnTheLoserAndCanRestoreIt) {
  auto a = Open(Options("a"));
  auto b = Open(Options("b"));
  ASSERT_THAT(a->Put("todo", "list", "milk"), IsOk());
  Pull(*a, *b);
  // Apart: one edit each.
  ASSERT_THAT(a->Put("todo", "list", "milk, eggs"), IsOk());
  wall_.Advance(1);
  ASSERT_THAT(b->Put("todo", "list", "milk, bread"), IsOk());
  // They meet.
  Pull(*a, *b);
  Pull(*b, *a);
  absl::StatusOr<std::optional<Record>> on_a = a->Get("todo", "list");
  absl::StatusOr<std::optional<Record>> on_b = b->Get("todo", "list");
  ASSERT_THAT(on_a, IsOk());
  ASSERT_THAT(on_b, IsOk());
  EXPECT_EQ((*on_a)->value, "milk, bread");
  EXPECT_EQ((*on_b)->value, "milk, bread");
  const std::vector<ConflictEntry> journal_a = List(*a, "todo");
  const std::vector<ConflictEntry> journal_b = List(*b, "todo");
  ASSERT_THAT(journal_a, SizeIs(1));
  ASSERT_THAT(journal_b, SizeIs(1));
  EXPECT_EQ(journal_a[0].loser_value, "milk, eggs");
  EXPECT_EQ(journal_a[0].loser, journal_b[0].loser);
  EXPECT_EQ(journal_a[0].winner, journal_b[0].winner);
  EXPECT_EQ(journal_b[0].loser_value, "milk, eggs");

  absl::StatusOr<Version> restored = b->RestoreConflict("todo", "list", journal_b[0].loser);
  ASSERT_THAT(restored, IsOk());
  on_b = b->Get("todo", "list");
  ASSERT_THAT(on_b, IsOk());
  EXPECT_EQ((*on_b)->value, "milk, eggs");
  EXPECT_EQ((*on_b)->version, *restored);
  EXPECT_THAT(List(*b, "todo"), IsEmpty());
  // Restored once: not there any more.
  EXPECT_THAT(b->RestoreConflict("todo", "list", journal_b[0].loser),
              StatusIs(StatusCode::kNotFound, "holds no version"));
  // The restore reaches the other replica as a sequential overwrite.
  Pull(*b, *a);
  on_a = a->Get("todo", "list");
  ASSERT_THAT(on_a, IsOk());
  EXPECT_EQ((*on_a)->value, "milk, eggs");
  EXPECT_THAT(List(*a, "todo"), SizeIs(1));
}

TEST_F(ConflictsTest, TheWinnersReplicaMissesALoserAlreadyReplacedWhereItWasWritten) {
  auto a = Open(Options("a"));
  auto b = Open(Options("b"));
  ASSERT_THAT(a->Put("todo", "list", "milk"), IsOk());
  Pull(*a, *b);
  ASSERT_THAT(a->Put("todo", "list", "milk, eggs"), IsOk());
  wall_.Advance(1);
  ASSERT_THAT(b->Put("todo", "list", "milk, bread"), IsOk());
  // The winner reaches a first: a journals its own edit, and its log now
  // offers only the winner, so b never receives the loser.
  Pull(*b, *a);
  Pull(*a, *b);
  EXPECT_THAT(List(*a, "todo"), SizeIs(1));
  EXPECT_THAT(List(*b, "todo"), IsEmpty());
}

TEST_F(ConflictsTest, SequentialEditsAcrossReplicasLeaveTheJournalEmpty) {
  auto a = Open(Options("a"));
  auto b = Open(Options("b"));
  for (int round = 0; round < 5; ++round) {
    ASSERT_THAT(a->Put("todo", "list", "a" + std::to_string(round)), IsOk());
    Pull(*a, *b);
    ASSERT_THAT(b->Put("todo", "list", "b" + std::to_string(round)), IsOk());
    ASSERT_THAT(b->Delete("todo", "other"), IsOk());
    Pull(*b, *a);
    ASSERT_THAT(a->Put("todo", "other", "back"), IsOk());
    Pull(*a, *b);
  }
  EXPECT_THAT(List(*a, "todo"), IsEmpty());
  EXPECT_THAT(List(*b, "todo"), IsEmpty());
}

TEST_F(ConflictsTest, ATombstoneLoserIsJournaledAndRestoredAsADelete) {
  auto store = Open(Options());
  ASSERT_THAT(store->Put("ks", "k", "v"), IsOk());
  ASSERT_THAT(store->Delete("ks", "k"), IsOk());
  absl::StatusOr<std::optional<Record>> deleted = store->Get("ks", "k");
  ASSERT_THAT(deleted, IsOk());
  ASSERT_THAT(store->Merge({Remote("k", 20'000, "edit", Version{})}), IsOk());
  const std::vector<ConflictEntry> journal = List(*store);
  ASSERT_THAT(journal, SizeIs(1));
  EXPECT_TRUE(journal[0].loser_deleted);
  EXPECT_EQ(journal[0].loser, (*deleted)->version);
  ASSERT_THAT(store->RestoreConflict("ks", "k", journal[0].loser), IsOk());
  absl::StatusOr<std::optional<Record>> now = store->Get("ks", "k");
  ASSERT_THAT(now, IsOk());
  EXPECT_TRUE((*now)->deleted);
}

TEST_F(ConflictsTest, BoundsDropTheOldestEntriesAndCountThem) {
  StoreOptions options = Options();
  options.max_conflict_entries = 3;
  auto store = Open(options);
  for (int i = 0; i < 5; ++i) {
    const std::string key = "k" + std::to_string(i);
    ASSERT_THAT(store->Put("ks", key, "mine"), IsOk());
    ASSERT_THAT(store->Merge({Remote(key, 20'000, "theirs", Version{})}), IsOk());
  }
  std::vector<ConflictEntry> journal = List(*store);
  ASSERT_THAT(journal, SizeIs(3));
  EXPECT_EQ(journal[0].key, "k2");
  EXPECT_EQ(journal[2].key, "k4");
  absl::StatusOr<StoreStats> stats = store->Stats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->conflict_entries, 3u);
  EXPECT_EQ(stats->conflicts_dropped, 2u);
  // A dropped entry cannot be restored.
  absl::StatusOr<std::optional<Record>> k0 = store->Get("ks", "k0");
  ASSERT_THAT(k0, IsOk());
  EXPECT_THAT(store->RestoreConflict("ks", "k0", Version{MakeHlc(kT0 + 10'000, 0), 1}),
              StatusIs(StatusCode::kNotFound));
  // Kept across a reopen, bounds included.
  store.reset();
  store = Open(options);
  journal = List(*store);
  ASSERT_THAT(journal, SizeIs(3));
  EXPECT_EQ(journal[0].key, "k2");
  ASSERT_THAT(store->Put("ks", "k9", "mine"), IsOk());
  ASSERT_THAT(store->Merge({Remote("k9", 20'000, "theirs", Version{})}), IsOk());
  journal = List(*store);
  ASSERT_THAT(journal, SizeIs(3));
  EXPECT_EQ(journal[0].key, "k3");
  EXPECT_EQ(journal[2].key, "k9");
}

TEST_F(ConflictsTest, ByteBoundDropsOldestAndAnEntryLargerThanItIsDropped) {
  StoreOptions options = Options();
  options.max_conflict_bytes = 300;
  auto store = Open(options);
  const std::string hundred(100, 'x');
  for (int i = 0; i < 4; ++i) {
    const std::string key = "k" + std::to_string(i);
    ASSERT_THAT(store->Put("ks", key, hundred), IsOk());
    // Later than ours (the clock observed the previous one): ours loses.
    ASSERT_THAT(store->Merge({Remote(key, 10'000 + 5'000 * (i + 1), "theirs", Version{})}), IsOk());
  }
  // About 160 bytes each: one fits with the next, not two.
  std::vector<ConflictEntry> journal = List(*store);
  ASSERT_THAT(journal, SizeIs(1));
  EXPECT_EQ(journal[0].key, "k3");
  ASSERT_THAT(store->Put("ks", "big", std::string(400, 'y')), IsOk());
  ASSERT_THAT(store->Merge({Remote("big", 40'000, "theirs", Version{})}), IsOk());
  journal = List(*store);
  ASSERT_THAT(journal, SizeIs(1));
  EXPECT_EQ(journal[0].key, "k3");
  absl::StatusOr<StoreStats> stats = store->Stats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->conflicts_dropped, 4u);
  EXPECT_LE(stats->conflict_bytes, 300u);
}

TEST_F(ConflictsTest, ListFiltersByKeyAndClearEmptiesOneKeyspace) {
  auto store = Open(Options());
  for (const char* ks : {"ks", "other"}) {
    for (const char* key : {"a", "b"}) {
      ASSERT_THAT(store->Put(ks, key, "mine"), IsOk());
      Record r = Remote(key, 20'000, "theirs", Version{});
      r.keyspace = ks;
      ASSERT_THAT(store->Merge({r}), IsOk());
    }
  }
  absl::StatusOr<ConflictList> only_b = store->ListConflicts("ks", "b");
  ASSERT_THAT(only_b, IsOk());
  ASSERT_THAT(only_b->entries, SizeIs(1));
  EXPECT_EQ(only_b->entries[0].key, "b");
  EXPECT_FALSE(only_b->more);
  absl::StatusOr<uint64_t> cleared = store->ClearConflicts("ks");
  ASSERT_THAT(cleared, IsOk());
  EXPECT_EQ(*cleared, 2u);
  EXPECT_THAT(List(*store, "ks"), IsEmpty());
  EXPECT_THAT(List(*store, "other"), SizeIs(2));
  cleared = store->ClearConflicts("ks");
  ASSERT_THAT(cleared, IsOk());
  EXPECT_EQ(*cleared, 0u);
  EXPECT_THAT(store->ListConflicts(""), StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT(store->RestoreConflict("other", "a", Version{1, 1}),
              StatusIs(StatusCode::kNotFound));
}

TEST_F(ConflictsTest, ReservedKeyspacesAreNotJournaled) {
  StoreOptions options = Options();
  options.reserved_check = [](std::string_view, std::string_view, std::string_view, bool) {
    return absl::OkStatus();
  };
  auto store = Open(options);
  ASSERT_THAT(store->WriteReserved({Mutation{"peerkv.test", "k", std::string("mine")}}), IsOk());
  Record r = Remote("k", 20'000, "theirs", Version{});
  r.keyspace = "peerkv.test";
  ASSERT_THAT(store->Merge({r}), IsOk());
  EXPECT_THAT(List(*store, "peerkv.test"), IsEmpty());
}

TEST_F(ConflictsTest, BadMarksAndBoundsAreRefused) {
  auto store = Open(Options());
  // A mark not older than the record's own version.
  Record r = Remote("k", 20'000, "v", Version{MakeHlc(kT0 + 20'000, 0), kPeer});
  absl::StatusOr<MergeResult> merged = store->Merge({r});
  ASSERT_THAT(merged, IsOk());
  ASSERT_THAT(merged->refused, SizeIs(1));
  EXPECT_THAT(merged->refused[0].reason,
              StatusIs(StatusCode::kInvalidArgument, "causal mark (replaces)"));
  r.replaces = Version{5, 0};
  merged = store->Merge({r});
  ASSERT_THAT(merged, IsOk());
  EXPECT_THAT(merged->refused, SizeIs(1));
  store.reset();
  StoreOptions options = Options();
  options.max_conflict_entries = 0;
  EXPECT_THAT(Store::Open(options), StatusIs(StatusCode::kInvalidArgument, "max_conflict_entries"));
  options = Options();
  options.max_conflict_bytes = kMaxConflictBytesBound + 1;
  EXPECT_THAT(Store::Open(options), StatusIs(StatusCode::kInvalidArgument, "max_conflict_bytes"));
}

TEST_F(ConflictsTest, TheMarkTravelsThroughTheLog) {
  auto store = Open(Options());
  ASSERT_THAT(store->Put("ks", "k", "one"), IsOk());
  absl::StatusOr<std::optional<Record>> one = store->Get("ks", "k");
  ASSERT_THAT(one, IsOk());
  ASSERT_THAT(store->Put("ks", "k", "two"), IsOk());
  ASSERT_THAT(store->Merge({Remote("n", 20'000, "theirs", std::nullopt)}), IsOk());
  absl::StatusOr<Changes> changes = store->ChangesSince(0, 100);
  ASSERT_THAT(changes, IsOk());
  ASSERT_THAT(changes->records, SizeIs(2));
  EXPECT_EQ(changes->records[0].replaces, std::optional<Version>((*one)->version));
  EXPECT_EQ(changes->records[1].replaces, std::nullopt);
}

}  // namespace
}  // namespace peerkv
