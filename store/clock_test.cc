// store/clock_test.cc: the hybrid logical clock: monotonic, follows physical
// time, observes remote readings, refuses readings beyond the skew bound.
#include "store/clock.h"

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "store/version.h"

namespace peerkv {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kT0 = 1'700'000'000'000;

TEST(HybridClockTest, FollowsPhysicalTimeWhenItIsAhead) {
  ManualWallClock wall(kT0);
  HybridClock clock(wall, 0);
  EXPECT_EQ(clock.Now(), MakeHlc(kT0, 0));
  wall.Advance(5);
  EXPECT_EQ(clock.Now(), MakeHlc(kT0 + 5, 0));
}

TEST(HybridClockTest, CountsUpWhenPhysicalTimeStandsStillOrGoesBack) {
  ManualWallClock wall(kT0);
  HybridClock clock(wall, 0);
  uint64_t previous = clock.Now();
  for (int i = 0; i < 1000; ++i) {
    if (i == 500) wall.Set(kT0 - 10'000);  // the wall clock jumps back
    const uint64_t now = clock.Now();
    ASSERT_GT(now, previous) << "at step " << i;
    previous = now;
  }
  EXPECT_EQ(HlcMillis(previous), kT0);
  EXPECT_EQ(HlcLogical(previous), 1000);
}

TEST(HybridClockTest, LogicalOverflowCarriesIntoMillis) {
  ManualWallClock wall(kT0);
  HybridClock clock(wall, MakeHlc(kT0, kHlcLogicalMask));
  const uint64_t next = clock.Now();
  EXPECT_EQ(next, MakeHlc(kT0 + 1, 0));
}

TEST(HybridClockTest, StartsAboveItsFloor) {
  ManualWallClock wall(kT0);
  const uint64_t floor = MakeHlc(kT0 + 60'000, 7);  // persisted by a past run
  HybridClock clock(wall, floor);
  EXPECT_EQ(clock.Last(), floor);
  EXPECT_EQ(clock.Now(), floor + 1);
}

TEST(HybridClockTest, ObserveMovesTheClockPastRemoteReadings) {
  ManualWallClock wall(kT0);
  HybridClock clock(wall, 0);
  const uint64_t remote = MakeHlc(kT0 + 30'000, 3);
  clock.Observe(remote);
  EXPECT_EQ(clock.Last(), remote);
  EXPECT_GT(clock.Now(), remote);
  // Observing an older reading changes nothing.
  const uint64_t last = clock.Last();
  clock.Observe(MakeHlc(kT0 - 1, 0));
  EXPECT_EQ(clock.Last(), last);
}

TEST(HybridClockTest, CheckSkewAcceptsUpToTheBoundAndRefusesBeyond) {
  ManualWallClock wall(kT0);
  HybridClock clock(wall, 0);
  EXPECT_THAT(clock.CheckSkew(MakeHlc(kT0 + 60'000, 9), 60'000), IsOk());
  EXPECT_THAT(clock.CheckSkew(MakeHlc(kT0 - 3'600'000, 0), 60'000), IsOk());
  const absl::Status refused = clock.CheckSkew(MakeHlc(kT0 + 60'001, 0), 60'000);
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(std::string(refused.message()), HasSubstr("60001 ms ahead"));
  EXPECT_THAT(std::string(refused.message()), HasSubstr("max_clock_skew 60000 ms"));
}

TEST(OffsetWallClockTest, ShiftsTheBaseClock) {
  ManualWallClock wall(kT0);
  OffsetWallClock ahead(wall, 3'600'000);
  EXPECT_EQ(ahead.NowMillis(), kT0 + 3'600'000);
  wall.Advance(1);
  EXPECT_EQ(ahead.NowMillis(), kT0 + 3'600'001);
}

}  // namespace
}  // namespace peerkv
