// store/clock_test.cc: the hybrid logical clock: monotonic, follows physical
// time, observes remote readings, refuses readings beyond the skew bound;
// the estimate from peers' clocks (median, the slower clock when two
// disagree) and what it changes: the skew check measures from estimated
// real time, a clock ahead by more than half the bound stamps from the
// corrected time, and a remote reading observed within the bound never
// makes readings more than the bound ahead of real time.
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

constexpr int64_t kDay = 86'400'000;
constexpr int64_t kBound = 60'000;

TEST(PeerClockOffsetsTest, TheMedianOutvotesOneWrongClockEitherWay) {
  PeerClockOffsets offsets;
  EXPECT_EQ(offsets.Estimate(kT0).peers, 0u);
  // We are a day ahead of two peers that agree: real time is theirs.
  offsets.Note(1, -kDay, kT0);
  offsets.Note(2, -kDay + 5, kT0);
  ClockEstimate e = offsets.Estimate(kT0);
  EXPECT_EQ(e.peers, 2u);
  EXPECT_EQ(e.real_offset_ms, -kDay + 5);
  // We are right and one of two peers is a day ahead: ours stands.
  offsets.Note(1, 3, kT0);
  offsets.Note(2, kDay, kT0);
  EXPECT_EQ(offsets.Estimate(kT0).real_offset_ms, 3);
  // A day behind two honest peers: real time is a day later than ours.
  offsets.Note(1, kDay, kT0);
  offsets.Note(2, kDay + 7, kT0);
  EXPECT_EQ(offsets.Estimate(kT0).real_offset_ms, kDay);
}

TEST(PeerClockOffsetsTest, WithOnePeerBothFollowTheSlowerClock) {
  PeerClockOffsets fast_side, slow_side;
  fast_side.Note(1, -kDay, kT0);  // the peer is a day behind us
  slow_side.Note(2, kDay, kT0);   // the peer is a day ahead of us
  EXPECT_EQ(fast_side.Estimate(kT0).real_offset_ms, -kDay);
  EXPECT_EQ(slow_side.Estimate(kT0).real_offset_ms, 0);
}

TEST(PeerClockOffsetsTest, OldSamplesAndForgottenPeersDoNotCount) {
  PeerClockOffsets offsets;
  offsets.Note(1, -kDay, kT0);
  offsets.Note(2, -kDay, kT0 + PeerClockOffsets::kWindowMs);
  EXPECT_EQ(offsets.Estimate(kT0 + PeerClockOffsets::kWindowMs).peers, 2u);
  EXPECT_EQ(offsets.Estimate(kT0 + PeerClockOffsets::kWindowMs + 1).peers, 1u);
  offsets.Forget(2);
  EXPECT_EQ(offsets.Estimate(kT0 + PeerClockOffsets::kWindowMs + 1).peers, 0u);
}

TEST(ClockSampleTest, TheDiallerUsesTheMidpointAndTheAnswererTheArrival) {
  // Sent at 1000, answered at 1010 by a clock 500 ahead that read 1505.
  ClockSample dialled = DiallerSample(1000, 1010, 1505);
  EXPECT_EQ(dialled.offset_ms, 500);
  EXPECT_EQ(dialled.rtt_ms, 10);
  // A wall clock stepping back between the two counts as no round trip.
  EXPECT_EQ(DiallerSample(1000, 990, 1500).rtt_ms, 0);
  ClockSample answered = AnswererSample(1010, 1505);
  EXPECT_EQ(answered.offset_ms, 495);  // short by the one-way delay
  EXPECT_EQ(answered.rtt_ms, -1);
}

// Fact 2: a clock a day behind refused every honest write as "ahead of
// local time". With the peers' estimate it measures from real time.
TEST(HybridClockTest, ABehindClockAcceptsHonestReadingsOnceItKnowsItIsBehind) {
  ManualWallClock wall(kT0 - kDay);
  HybridClock clock(wall, 0);
  const uint64_t honest = MakeHlc(kT0, 0);
  EXPECT_THAT(clock.CheckSkew(honest, kBound), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_EQ(clock.SetEstimate(ClockEstimate{2, kDay}, kBound), 0);  // not moved forward
  EXPECT_THAT(clock.CheckSkew(honest, kBound), IsOk());
  EXPECT_THAT(clock.CheckSkew(MakeHlc(kT0 + kBound + 1, 0), kBound),
              StatusIs(absl::StatusCode::kOutOfRange,
                       "ahead of real time as estimated from 2 peer(s)"));
  // Stamping stays on the local clock (behind is not corrected).
  EXPECT_EQ(HlcMillis(clock.Now()), static_cast<uint64_t>(kT0 - kDay));
}

TEST(HybridClockTest, AClockAheadByMoreThanHalfTheBoundStampsFromTheCorrectedTime) {
  ManualWallClock wall(kT0 + kDay);
  HybridClock clock(wall, 0);
  // Ahead by less than half the bound: left alone.
  EXPECT_EQ(clock.SetEstimate(ClockEstimate{2, -kBound / 2}, kBound), 0);
  EXPECT_EQ(HlcMillis(clock.Now()), static_cast<uint64_t>(kT0 + kDay));
  EXPECT_EQ(clock.SetEstimate(ClockEstimate{2, -kDay}, kBound), -kDay);
  wall.Advance(1);
  // Readings stay monotonic after the correction back: they count up
  // logically from the last one until the corrected time passes it.
  const uint64_t next = clock.Now();
  EXPECT_EQ(HlcMillis(next), static_cast<uint64_t>(kT0 + kDay));
  clock.Reset(MakeHlc(kT0, 0));  // what a fresh-clock fork does
  wall.Advance(1);
  EXPECT_EQ(HlcMillis(clock.Now()), static_cast<uint64_t>(kT0 + 2));
}

// Fact 3: after observing a reading 59 s ahead, the next local reading is
// 59 s ahead; a replica 50 s behind refused it. With estimates it does not,
// and a reading beyond the bound cannot be observed (the check refuses it
// first), so readings stay within the bound of real time.
TEST(HybridClockTest, ObservingWithinTheBoundKeepsReadingsWithinTheBoundOfRealTime) {
  ManualWallClock honest_wall(kT0), slow_wall(kT0 - 50'000);
  HybridClock honest(honest_wall, 0), slow(slow_wall, 0);
  const uint64_t remote = MakeHlc(kT0 + 59'000, 0);
  ASSERT_THAT(honest.CheckSkew(remote, kBound), IsOk());
  honest.Observe(remote);
  const uint64_t next = honest.Now();
  EXPECT_GT(next, remote);
  EXPECT_LE(HlcMillis(next), static_cast<uint64_t>(kT0 + kBound));
  // The slow replica, alone, holds it back (109 s ahead of its clock) ...
  EXPECT_THAT(slow.CheckSkew(next, kBound), StatusIs(absl::StatusCode::kOutOfRange));
  // ... but knowing it is 50 s behind (two peers say so), it takes it.
  slow.SetEstimate(ClockEstimate{2, 50'000}, kBound);
  EXPECT_THAT(slow.CheckSkew(next, kBound), IsOk());
  // One beyond the bound of real time is refused wherever it is checked.
  const uint64_t too_far = MakeHlc(kT0 + kBound + 1, 0);
  EXPECT_THAT(honest.CheckSkew(too_far, kBound), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(slow.CheckSkew(too_far, kBound), StatusIs(absl::StatusCode::kOutOfRange));
}

}  // namespace
}  // namespace peerkv
