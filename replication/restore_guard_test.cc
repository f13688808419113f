// replication/restore_guard_test.cc: restore and clone evidence over real
// stores, one of them a copy of another's data directory.
#include "replication/restore_guard.h"

#include <filesystem>

#include "absl/strings/str_format.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "replication/serve.h"
#include "testing/temp_dir.h"

namespace peerkv::replication {
namespace {

using ::testing::HasSubstr;
using ::testing::Optional;

constexpr int64_t kT0 = 1'700'000'000'000;

MATCHER_P(Why, inner, "") {
  return ::testing::ExplainMatchResult(inner, arg.why, result_listener);
}

class RestoreGuardTest : public ::testing::Test {
 protected:
  std::unique_ptr<Store> Open(const std::string& dir) {
    StoreOptions options;
    options.dir = dir;
    options.wall_clock = &wall_;
    options.sync = false;
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
    EXPECT_THAT(store, IsOk());
    return store.ok() ? std::move(*store) : nullptr;
  }
  void Write(Store& store, int from, int to) {
    for (int i = from; i <= to; ++i) {
      wall_.Advance(10);
      ASSERT_THAT(store.Put("ks", absl::StrFormat("k%d", i), absl::StrFormat("v%d", i)), IsOk());
    }
  }
  // What a peer that pulled `store` to its end holds of it.
  static HeldOf PeerView(const Store& store) {
    return HeldOf{store.replica_id(), store.incarnation(), store.max_seq(),
                  store.GetWatermarks().at(store.replica_id())};
  }
  testing::TempDir tmp_;
  ManualWallClock wall_{kT0};
};

// Issue 8's gap (a): a peer pulled part of the lost life's log (seq 15 of
// 20) without adopting its watermark (it did not reach the end), and the
// restored copy's clock did not jump at its open (its clock mark is ahead
// of wall time), so neither seq, nor clock, nor a gap shows it; the
// checkpoint's nonce, an open the restored directory never had, does.
TEST_F(RestoreGuardTest, ACheckpointIntoALostLifeIsCaughtByItsOpenNonce) {
  const std::string dir = tmp_.Sub("x");
  const std::string copy = tmp_.Sub("copy");
  {
    auto x = Open(dir);
    Write(*x, 1, 10);
  }
  std::filesystem::copy(dir, copy, std::filesystem::copy_options::recursive);
  HeldOf peer;
  {
    auto x = Open(dir);
    Write(*x, 11, 20);
    // Pulled up to seq 15 of this life; its watermark is older (0).
    peer = HeldOf{x->replica_id(), x->incarnation(), 15, 0, x->open_nonce()};
    EXPECT_EQ(RestoreEvidence(*x, peer), std::nullopt);
  }
  // A normal restart of the real directory: the claim still fits (its
  // open is known, and ended at seq 20).
  EXPECT_EQ(RestoreEvidence(*Open(dir), peer), std::nullopt);

  std::filesystem::remove_all(dir);
  std::filesystem::rename(copy, dir);
  wall_.Set(kT0);  // no clock gap at the restored open
  auto restored = Open(dir);
  Write(*restored, 11, 25);
  ASSERT_EQ(restored->max_seq(), 25u);
  EXPECT_THAT(RestoreEvidence(*restored, peer),
              Optional(Why(HasSubstr("has no record of: it was restored"))));
  // A checkpoint into the restored life itself fits.
  EXPECT_EQ(RestoreEvidence(*restored, HeldOf{restored->replica_id(), restored->incarnation(),
                                              25, 0, restored->open_nonce()}),
            std::nullopt);
}

// Seed 8149 of the simulation: the peer that pulled the lost life had
// just dropped every checkpoint (a retired id it learned of: it pulls
// everyone from zero once) when the copy was restored, and the restored
// copy's clock then ran past the peer's watermark for it before they met.
// What the peer tells in its hello still says how far it pulled.
TEST_F(RestoreGuardTest, ADroppedCheckpointStillToldInTheHelloShowsTheRestore) {
  const std::string dir = tmp_.Sub("x");
  const std::string copy = tmp_.Sub("copy");
  {
    auto x = Open(dir);
    Write(*x, 1, 10);
  }
  std::filesystem::copy(dir, copy, std::filesystem::copy_options::recursive);
  auto y = Open(tmp_.Sub("y"));
  uint64_t x_id = 0;
  {
    auto x = Open(dir);
    x_id = x->replica_id();
    Write(*x, 11, 20);
    ASSERT_THAT(y->Merge({}, CheckpointUpdate{x_id, PeerCheckpoint{x->incarnation(), 20,
                                                                   x->open_nonce()},
                                              {}}),
                IsOk());
  }
  ASSERT_THAT(y->ForgetRetiredIds({42}), IsOk());
  ASSERT_FALSE(y->GetCheckpoint(x_id)->has_value());
  std::filesystem::remove_all(dir);
  std::filesystem::rename(copy, dir);
  auto restored = Open(dir);
  Write(*restored, 11, 25);
  const HeldOf told = WhatWeHoldOf(*y, x_id);
  EXPECT_EQ(told.seq, 20u);
  EXPECT_THAT(RestoreEvidence(*restored, told),
              Optional(Why(HasSubstr("has no record of: it was restored"))));
  // Pulled from zero again since, not as far yet: the furthest is told.
  ASSERT_THAT(y->Merge({}, CheckpointUpdate{x_id, PeerCheckpoint{restored->incarnation(), 3,
                                                                 restored->open_nonce()},
                                            {}}),
              IsOk());
  EXPECT_EQ(WhatWeHoldOf(*y, x_id).seq, 20u);
}

// A lost log tail: the peer pulled seq 20 of an open this directory knows,
// but in this directory that open's log ended at seq 10 (the next open
// began there).
TEST_F(RestoreGuardTest, ACheckpointBeyondWhereItsOpenEndedIsALostTail) {
  const std::string dir = tmp_.Sub("x");
  const std::string copy = tmp_.Sub("copy");
  uint64_t first_nonce = 0;
  {
    auto x = Open(dir);
    first_nonce = x->open_nonce();
    Write(*x, 1, 10);
    std::filesystem::copy(dir, copy, std::filesystem::copy_options::recursive);
    Write(*x, 11, 20);
  }
  std::filesystem::remove_all(dir);
  std::filesystem::rename(copy, dir);
  wall_.Set(kT0);
  auto restored = Open(dir);
  Write(*restored, 11, 25);
  const HeldOf peer{restored->replica_id(), restored->incarnation(), 20, 0, first_nonce};
  EXPECT_THAT(RestoreEvidence(*restored, peer),
              Optional(Why(HasSubstr("whose log ended at seq 10"))));
  // Up to seq 10 of that open is what this directory holds.
  EXPECT_EQ(RestoreEvidence(*restored, HeldOf{restored->replica_id(), restored->incarnation(),
                                              10, 0, first_nonce}),
            std::nullopt);
}

// The reproduction of issue 8: a copy taken after 10 writes, 10 more, a
// peer pulls 20, the copy is restored and writes 15 (seq 11..25, its clock
// past the peer's claim): neither seq nor clock shows it, the gap does.
TEST_F(RestoreGuardTest, ARestoredCopyThatWroteOnIsCaughtByItsClockGap) {
  const std::string dir = tmp_.Sub("x");
  const std::string copy = tmp_.Sub("copy");
  {
    auto x = Open(dir);
    Write(*x, 1, 10);
  }
  std::filesystem::copy(dir, copy, std::filesystem::copy_options::recursive);
  HeldOf peer;
  {
    wall_.Advance(60'000);
    auto x = Open(dir);
    Write(*x, 11, 20);
    peer = PeerView(*x);
    EXPECT_EQ(RestoreEvidence(*x, peer), std::nullopt);
  }
  // A normal restart of the real directory: the claim still fits.
  wall_.Advance(60'000);
  EXPECT_EQ(RestoreEvidence(*Open(dir), peer), std::nullopt);

  std::filesystem::remove_all(dir);
  std::filesystem::rename(copy, dir);
  wall_.Advance(60'000);
  auto restored = Open(dir);
  Write(*restored, 11, 25);
  ASSERT_EQ(restored->max_seq(), 25u);
  EXPECT_THAT(RestoreEvidence(*restored, peer),
              Optional(Why(HasSubstr("restored from an older copy"))));
  // Its writes since the restored open (seq 11..25) are the ones to re-stamp.
  EXPECT_EQ(RestoreEvidence(*restored, peer)->since_seq, 10u);
  // Above the lost life's clock as far as the peer holds it (seed 311).
  EXPECT_EQ(RestoreEvidence(*restored, peer)->clock_floor, peer.watermark);
  // And after another restart of the restored directory.
  restored.reset();
  wall_.Advance(60'000);
  restored = Open(dir);
  EXPECT_THAT(RestoreEvidence(*restored, peer), Optional(Why(HasSubstr("restored"))));
  EXPECT_EQ(RestoreEvidence(*restored, peer)->since_seq, 10u);
  // Claims about another id, an older one of ours included, say nothing.
  peer.replica_id = 12345;
  EXPECT_EQ(RestoreEvidence(*restored, peer), std::nullopt);
}

// Seed 3807: evidence that is no clock gap (here a checkpoint beyond the
// log) re-stamps the writes since the latest open, even when that open
// left no clock gap (its clock mark was ahead of wall time): the latest
// gap is the copy's first open, and re-stamping from there made the whole
// shared history, which peers hold and may have replaced, new writes.
TEST_F(RestoreGuardTest, EvidenceWithoutAGapReStampsFromTheLatestOpenNotTheLatestGap) {
  const std::string dir = tmp_.Sub("x");
  {
    auto x = Open(dir);
    Write(*x, 1, 10);
  }
  wall_.Set(kT0);  // behind the clock mark: no gap at this open
  auto restored = Open(dir);
  ASSERT_EQ(restored->GetLineage().gaps.size(), 1u);
  ASSERT_EQ(restored->GetLineage().gaps.back().seq, 0u);
  Write(*restored, 11, 15);
  HeldOf claim = PeerView(*restored);
  claim.seq = 20;
  const std::optional<Restored> evidence = RestoreEvidence(*restored, claim);
  ASSERT_THAT(evidence, Optional(Why(HasSubstr("log ends at seq 15"))));
  EXPECT_EQ(evidence->since_seq, 10u);
}

TEST_F(RestoreGuardTest, ACheckpointBeyondTheLogOrAClockBeyondOursIsEvidence) {
  auto x = Open(tmp_.Sub("x"));
  Write(*x, 1, 3);
  HeldOf claim = PeerView(*x);
  EXPECT_EQ(RestoreEvidence(*x, claim), std::nullopt);
  claim.seq = 4;
  EXPECT_THAT(RestoreEvidence(*x, claim), Optional(Why(HasSubstr("log ends at seq 3"))));
  EXPECT_EQ(RestoreEvidence(*x, claim)->clock_floor, claim.watermark);
  // Of another incarnation the seq means nothing.
  claim.incarnation ^= 1;
  EXPECT_EQ(RestoreEvidence(*x, claim), std::nullopt);
  claim = PeerView(*x);
  claim.watermark += 1;
  EXPECT_THAT(RestoreEvidence(*x, claim), Optional(Why(HasSubstr("beyond this replica's own clock"))));
  // An old peer tells nothing.
  EXPECT_EQ(RestoreEvidence(*x, HeldOf{}), std::nullopt);
}

// Seeds 456 and 1193: a replica that forked for its clock (nothing lost)
// serves, beside its watermarks, how far its retired id wrote; a peer level
// with it keeps that as stale evidence for the retired id, not as a
// watermark, and serves it on. Without it, a write of the retired id the
// peer never held came back from a directory restored from before the
// fork once the key's newer tombstone was collected.
TEST_F(RestoreGuardTest, APullServesHowFarARetiredIdWrote) {
  auto x = Open(tmp_.Sub("x"));
  auto y = Open(tmp_.Sub("y"));
  Write(*x, 1, 3);
  const uint64_t old_id = x->replica_id();
  const uint64_t last = x->GetWatermarks().at(old_id);
  absl::StatusOr<Store::ForkResult> fork = x->Fork(UINT64_MAX, /*fresh_clock=*/true);
  ASSERT_THAT(fork, IsOk());
  EXPECT_EQ(x->GetWatermarks().count(old_id), 0u);
  PullRequest request;
  request.requester = y->replica_id();
  request.max_records = 100;
  request.max_bytes = 1 << 20;
  absl::StatusOr<PullResponse> pulled = ServePull(*x, request, nullptr, nullptr);
  ASSERT_THAT(pulled, IsOk());
  ASSERT_EQ(pulled->watermarks.count(old_id), 1u);
  EXPECT_GE(pulled->watermarks.at(old_id), last);

  // y learnt of the retirement (x's hello), then pulled x to its end.
  ASSERT_THAT(y->ForgetRetiredIds({old_id}), IsOk());
  ASSERT_THAT(y->Merge(std::move(pulled->records),
                       CheckpointUpdate{x->replica_id(), {x->incarnation(), pulled->last_seq},
                                        pulled->watermarks}),
              IsOk());
  EXPECT_EQ(y->GetWatermarks().count(old_id), 0u);
  ASSERT_EQ(y->ServedWatermarks().count(old_id), 1u);
  EXPECT_GE(y->ServedWatermarks().at(old_id), last);
}

TEST_F(RestoreGuardTest, PullsAndHellosCarryTheClaim) {
  auto x = Open(tmp_.Sub("x"));
  auto y = Open(tmp_.Sub("y"));
  Write(*x, 1, 2);
  PullRequest request;
  request.requester = y->replica_id();
  request.incarnation = x->incarnation();
  request.after_seq = 2;
  request.watermarks = x->GetWatermarks();
  EXPECT_EQ(ClaimOfPull(*x, request), PeerView(*x));
  request.after_seq = 7;
  EXPECT_THAT(RestoreEvidence(*x, ClaimOfPull(*x, request)), Optional(Why(HasSubstr("seq 7"))));

  ASSERT_THAT(y->Merge({}, CheckpointUpdate{x->replica_id(), {x->incarnation(), 2},
                                            x->GetWatermarks()}),
              IsOk());
  const PeerInfo hello = LocalInfo(*y, "y", x->replica_id());
  EXPECT_EQ(hello.held, PeerView(*x));
  EXPECT_EQ(hello.boot_nonce, y->open_nonce());
  EXPECT_EQ(LocalInfo(*y, "y").held, HeldOf{});
}

TEST_F(RestoreGuardTest, ACopyRunningElsewhereIsToldFromThisProcess) {
  const std::string dir = tmp_.Sub("x");
  const std::string copy = tmp_.Sub("copy");
  {
    auto x = Open(dir);
    Write(*x, 1, 1);
  }
  std::filesystem::copy(dir, copy, std::filesystem::copy_options::recursive);
  auto x = Open(dir);
  auto clone = Open(copy);
  ASSERT_EQ(x->replica_id(), clone->replica_id());
  EXPECT_NE(x->open_nonce(), clone->open_nonce());
  EXPECT_THAT(CloneEvidence(*x, LocalInfo(*clone, "clone")),
              Optional(HasSubstr("copy of this one")));
  EXPECT_EQ(CloneEvidence(*x, LocalInfo(*x, "self")), std::nullopt);
  PeerInfo old_peer = LocalInfo(*clone, "old");
  old_peer.boot_nonce = 0;
  EXPECT_EQ(CloneEvidence(*x, old_peer), std::nullopt);
}

}  // namespace
}  // namespace peerkv::replication
