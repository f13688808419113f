// store/watermarks_test.cc: watermarks are a join semilattice. Merge is
// commutative, associative and idempotent, Dominates is the order it
// induces (a.Dominates(b) exactly when merging b into a changes nothing),
// and Covers agrees with both. Checked over seeded random watermarks with
// few origins and hlcs so that ties, zeros and missing origins are common.
#include "store/watermarks.h"

#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace peerkv {
namespace {

constexpr uint64_t kSeed = 20261201;
constexpr int kRounds = 2000;

Watermarks RandomWatermarks(std::mt19937_64& rng) {
  Watermarks w;
  const int entries = static_cast<int>(rng() % 5);
  for (int i = 0; i < entries; ++i) w[1 + rng() % 4] = rng() % 4;  // hlc 0 included
  return w;
}

Watermarks Merged(Watermarks a, const Watermarks& b) {
  a.Merge(b);
  return a;
}

TEST(WatermarksTest, MergeIsCommutativeAssociativeAndIdempotent) {
  std::mt19937_64 rng(kSeed);
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE(testing::Message() << "seed " << kSeed << " round " << round);
    const Watermarks a = RandomWatermarks(rng), b = RandomWatermarks(rng),
                     c = RandomWatermarks(rng);
    EXPECT_EQ(Merged(a, b), Merged(b, a));
    EXPECT_EQ(Merged(Merged(a, b), c), Merged(a, Merged(b, c)));
    EXPECT_EQ(Merged(a, a), a);
  }
}

TEST(WatermarksTest, DominatesIsTheOrderOfMerge) {
  std::mt19937_64 rng(kSeed + 1);
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE(testing::Message() << "seed " << kSeed + 1 << " round " << round);
    const Watermarks a = RandomWatermarks(rng), b = RandomWatermarks(rng),
                     c = RandomWatermarks(rng);
    // The order the join induces.
    EXPECT_EQ(a.Dominates(b), Merged(a, b) == a);
    // A partial order: reflexive, antisymmetric, transitive.
    EXPECT_TRUE(a.Dominates(a));
    if (a.Dominates(b) && b.Dominates(a)) EXPECT_EQ(a, b);
    if (a.Dominates(b) && b.Dominates(c)) EXPECT_TRUE(a.Dominates(c));
    // The join is the least upper bound.
    const Watermarks ab = Merged(a, b);
    EXPECT_TRUE(ab.Dominates(a));
    EXPECT_TRUE(ab.Dominates(b));
    EXPECT_EQ(c.Dominates(a) && c.Dominates(b), c.Dominates(ab));
  }
}

TEST(WatermarksTest, CoversAgreesWithTheOrder) {
  std::mt19937_64 rng(kSeed + 2);
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE(testing::Message() << "seed " << kSeed + 2 << " round " << round);
    const Watermarks a = RandomWatermarks(rng), b = RandomWatermarks(rng);
    const Version v{rng() % 4, 1 + rng() % 4};
    // What a smaller claim covers, a greater one covers too.
    if (a.Dominates(b) && b.Covers(v)) EXPECT_TRUE(a.Covers(v));
    // A merge covers what either side covered, and nothing else.
    EXPECT_EQ(Merged(a, b).Covers(v), a.Covers(v) || b.Covers(v));
    // A single claim covers exactly the versions at or below it.
    EXPECT_EQ(Watermarks({{v.origin, v.hlc}}).Covers(v), true);
    EXPECT_EQ(a.Covers(v), a.Dominates(Watermarks({{v.origin, v.hlc}})));
  }
}

TEST(WatermarksTest, AMissingOriginIsBelowZero) {
  const Watermarks none;
  const Watermarks zero{{7, 0}};
  EXPECT_TRUE(zero.Dominates(none));
  EXPECT_FALSE(none.Dominates(zero));
  EXPECT_FALSE(none.Covers(Version{0, 7}));
  EXPECT_TRUE(zero.Covers(Version{0, 7}));
  EXPECT_FALSE(zero.Covers(Version{1, 7}));
  Watermarks w{{1, 5}, {3, 2}};
  w.Raise(1, 4);
  w.Raise(3, 9);
  w.Raise(2, 1);
  EXPECT_EQ(w, (Watermarks{{1, 5}, {2, 1}, {3, 9}}));
}

}  // namespace
}  // namespace peerkv
