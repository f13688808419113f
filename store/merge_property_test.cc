// store/merge_property_test.cc: the lattice laws of last-writer-wins merge,
// checked on real stores over at least 1000 random seeds. For each seed, the
// same random records reach separate stores in different orders, batchings
// and groupings; every store must end with identical registers, equal to the
// last-writer-wins fold of the records:
//   commutative  - any order of the records gives the same result;
//   associative  - (X merge Y) merge Z == X merge (Y merge Z), the right-hand
//                  side shipped between stores through ChangesSince;
//   idempotent   - merging what a store holds again wins nothing and writes
//                  nothing.
// A failure names its seed; PEERKV_PROPERTY_SEED=N replays one seed and
// PEERKV_PROPERTY_SEEDS=N runs N seeds.
#include <algorithm>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "store/store.h"
#include "testing/temp_dir.h"

namespace peerkv {
namespace {

constexpr int64_t kT0 = 1'700'000'000'000;
constexpr int kDefaultSeeds = 1000;

uint64_t EnvOr(const char* name, uint64_t fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? std::strtoull(value, nullptr, 10)
                                            : fallback;
}

// Random records over a small key space so that conflicts, equal clocks and
// duplicates are common. A version names one write, so the same version
// always carries the same value and deletion flag.
std::vector<Record> RandomRecords(std::mt19937_64& rng) {
  const int count = std::uniform_int_distribution<int>(1, 40)(rng);
  const int keys = std::uniform_int_distribution<int>(1, 10)(rng);
  std::vector<Record> records;
  for (int i = 0; i < count; ++i) {
    Record r;
    r.keyspace = (rng() % 4 == 0) ? "ks2" : "ks";
    r.key = absl::StrFormat("key%d", std::uniform_int_distribution<int>(0, keys - 1)(rng));
    r.version.hlc = MakeHlc(kT0 + std::uniform_int_distribution<int>(0, 5)(rng),
                            std::uniform_int_distribution<int>(0, 2)(rng));
    r.version.origin = std::uniform_int_distribution<uint64_t>(1, 3)(rng);
    const uint64_t identity = r.version.hlc * 31 + r.version.origin * 7 + r.key.size() +
                              static_cast<uint64_t>(r.key.back());
    r.deleted = identity % 5 == 0;
    if (!r.deleted) r.value = absl::StrFormat("%s/%s by %s", r.keyspace, r.key, r.version.ToString());
    records.push_back(std::move(r));
    // Sometimes the very same write arrives twice.
    if (rng() % 6 == 0) records.push_back(records.back());
  }
  return records;
}

// The expected registers: for each (keyspace, key), the record with the
// greatest version.
std::map<std::pair<std::string, std::string>, Record> Fold(const std::vector<Record>& records) {
  std::map<std::pair<std::string, std::string>, Record> fold;
  for (const Record& r : records) {
    auto [it, inserted] = fold.try_emplace({r.keyspace, r.key}, r);
    if (!inserted && r.version > it->second.version) it->second = r;
  }
  return fold;
}

// What a store holds, seq aside (seqs are local to each store).
std::vector<Record> Registers(Store& store) {
  std::vector<Record> all;
  for (const char* keyspace : {"ks", "ks2"}) {
    absl::StatusOr<ScanResult> scan =
        store.Scan(keyspace, ScanOptions{.limit = kMaxScanLimit, .include_tombstones = true});
    EXPECT_THAT(scan, IsOk());
    if (!scan.ok()) return all;
    for (Record& r : scan->records) {
      r.seq = 0;
      all.push_back(std::move(r));
    }
  }
  return all;
}

std::vector<Record> Expected(const std::vector<Record>& records) {
  std::vector<Record> expected;
  for (auto& [key, r] : Fold(records)) {
    Record copy = r;
    copy.seq = 0;
    expected.push_back(std::move(copy));
  }
  return expected;
}

// Merges `records` in consecutive batches of random sizes.
void MergeInRandomBatches(Store& store, const std::vector<Record>& records,
                          std::mt19937_64& rng) {
  size_t i = 0;
  while (i < records.size()) {
    const size_t n = std::uniform_int_distribution<size_t>(1, records.size() - i)(rng);
    std::vector<Record> batch(records.begin() + i, records.begin() + i + n);
    ASSERT_THAT(store.Merge(std::move(batch)), IsOk());
    i += n;
  }
}

// Everything a store holds, as a batch another store can merge.
std::vector<Record> Dump(Store& store) {
  absl::StatusOr<Changes> changes = store.ChangesSince(0, kMaxScanLimit);
  EXPECT_THAT(changes, IsOk());
  return changes.ok() ? changes->records : std::vector<Record>{};
}

class MergePropertyTest : public ::testing::Test {
 protected:
  std::unique_ptr<Store> NewStore(const std::string& name) {
    StoreOptions options;
    options.dir = dir_->Sub(name);
    options.wall_clock = &wall_;
    // Durability is not what these laws are about; the crash test covers it.
    options.sync = false;
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
    EXPECT_THAT(store, IsOk());
    return store.ok() ? std::move(*store) : nullptr;
  }

  void CheckSeed(uint64_t seed) {
    dir_ = std::make_unique<testing::TempDir>("merge-seed");
    std::mt19937_64 rng(seed);
    const std::vector<Record> x = RandomRecords(rng);
    const std::vector<Record> y = RandomRecords(rng);
    const std::vector<Record> z = RandomRecords(rng);
    std::vector<Record> all = x;
    all.insert(all.end(), y.begin(), y.end());
    all.insert(all.end(), z.begin(), z.end());
    const std::vector<Record> expected = Expected(all);

    // Left fold: ((X merge Y) merge Z), each in random batches.
    auto left = NewStore("left");
    ASSERT_NE(left, nullptr);
    MergeInRandomBatches(*left, x, rng);
    MergeInRandomBatches(*left, y, rng);
    MergeInRandomBatches(*left, z, rng);
    EXPECT_EQ(Registers(*left), expected) << "left fold";

    // Right fold: X merge (Y merge Z), where (Y merge Z) is built in its own
    // store and shipped as that store's change log.
    auto yz = NewStore("yz");
    auto right = NewStore("right");
    ASSERT_NE(yz, nullptr);
    ASSERT_NE(right, nullptr);
    MergeInRandomBatches(*yz, y, rng);
    MergeInRandomBatches(*yz, z, rng);
    MergeInRandomBatches(*right, x, rng);
    ASSERT_THAT(right->Merge(Dump(*yz)), IsOk());
    EXPECT_EQ(Registers(*right), expected) << "right fold";

    // Any order, any batching.
    std::vector<Record> shuffled = all;
    std::shuffle(shuffled.begin(), shuffled.end(), rng);
    auto any = NewStore("shuffled");
    ASSERT_NE(any, nullptr);
    MergeInRandomBatches(*any, shuffled, rng);
    EXPECT_EQ(Registers(*any), expected) << "shuffled";
    EXPECT_EQ(*any->Digest(), *left->Digest());
    EXPECT_EQ(any->fingerprint(), left->fingerprint());
    EXPECT_EQ(right->fingerprint(), left->fingerprint());

    // Idempotence: everything again, and each store's own state again.
    const uint64_t max_seq = left->max_seq();
    absl::StatusOr<MergeResult> again = left->Merge(all);
    ASSERT_THAT(again, IsOk());
    EXPECT_EQ(again->won, 0u) << "re-merging the same records won";
    absl::StatusOr<MergeResult> own = left->Merge(Dump(*right));
    ASSERT_THAT(own, IsOk());
    EXPECT_EQ(own->won, 0u) << "merging an equal replica won";
    EXPECT_EQ(left->max_seq(), max_seq) << "an idempotent merge wrote";
    EXPECT_EQ(Registers(*left), expected);
  }

  ManualWallClock wall_{kT0};
  std::unique_ptr<testing::TempDir> dir_;
};

TEST_F(MergePropertyTest, MergeIsCommutativeAssociativeAndIdempotent) {
  const uint64_t only = EnvOr("PEERKV_PROPERTY_SEED", 0);
  const uint64_t seeds = EnvOr("PEERKV_PROPERTY_SEEDS", kDefaultSeeds);
  const uint64_t first = only != 0 ? only : 1;
  const uint64_t last = only != 0 ? only : seeds;
  int checked = 0;
  for (uint64_t seed = first; seed <= last; ++seed) {
    SCOPED_TRACE(absl::StrFormat("seed %d (replay: PEERKV_PROPERTY_SEED=%d)", seed, seed));
    CheckSeed(seed);
    ++checked;
    if (HasFailure()) {
      ADD_FAILURE() << "stopping at the first failing seed: " << seed;
      break;
    }
  }
  EXPECT_EQ(checked, static_cast<int>(last - first + 1));
}

}  // namespace
}  // namespace peerkv
