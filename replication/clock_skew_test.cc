// replication/clock_skew_test.cc: what the engine does with the wall times
// peers tell in hello, on a ManualExecutor with stores on ManualWallClocks
// and peers that only say hello: a replica a day behind accepts honest
// writes once its peers show it is behind (fact 2 of issue 8); a replica
// whose persisted clock mark is a day ahead (its clock was fixed, then it
// restarted) forks to a fresh clock when it meets its peers, and its new
// writes, including one of a key it wrote while ahead, win and are stamped
// at real time (fact 1); a replica ahead warns once and shows its offset;
// with correction off nothing is corrected, only shown; a skew within the
// bound, observed, spreads no further than the bound, and a replica behind
// that knows it takes what it spread (fact 3).
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "replication/replicator.h"
#include "replication/serve.h"
#include "testing/temp_dir.h"

namespace peerkv::replication {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;

constexpr int64_t kReal = 1'700'000'000'000;  // real time in these tests
constexpr int64_t kDay = 86'400'000;
constexpr uint64_t kIncarnation = 7;

// Pulls stay unanswered; dialling fails (peers only dial in).
class SilentTransport final : public Transport {
 public:
  void Connect(const std::string& address,
               absl::AnyInvocable<void(absl::StatusOr<Connected>)> done) override {
    done(absl::UnavailableError("no dialling in this test: " + address));
  }
  void Pull(LinkId, const PullRequest&,
            absl::AnyInvocable<void(absl::StatusOr<PullResponse>)> done) override {
    pending.push_back(std::move(done));
  }
  void Nudge(LinkId, const Watermarks&) override {}
  void Close(LinkId link) override { closed.push_back(link); }

  std::vector<absl::AnyInvocable<void(absl::StatusOr<PullResponse>)>> pending;
  std::vector<LinkId> closed;
};

class ClockSkewTest : public ::testing::Test {
 protected:
  void TearDown() override { StopReplicator(); }

  // (Re)opens the store on a wall clock `offset_ms` off real time.
  void OpenStore(int64_t offset_ms) {
    StopReplicator();
    store_.reset();
    wall_.Set(kReal + offset_ms);
    StoreOptions options;
    options.dir = dir_.Sub("db");
    options.wall_clock = &wall_;
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
    ASSERT_THAT(store, IsOk());
    store_ = std::move(*store);
  }

  void StartReplicator(bool correct_clock = true) {
    ReplicatorOptions options;
    options.gossip_interval = absl::Hours(1);
    options.correct_clock = correct_clock;
    options.log = [this](const std::string& line) { log_.push_back(line); };
    replicator_ = std::make_unique<Replicator>(store_.get(), &executor_, &transport_, options);
    replicator_->Start();
    Advance();
  }

  void StopReplicator() {
    if (replicator_ != nullptr) replicator_->Stop();
    replicator_.reset();
  }

  // Peers 1..n, with clocks at real time, dial in and say hello.
  void HonestPeersSayHello(int n) {
    for (int i = 1; i <= n; ++i) {
      replicator_->OnInboundLink(next_link_++,
                                 PeerInfo{.replica_id = static_cast<uint64_t>(i),
                                          .incarnation = kIncarnation,
                                          .physical_ms = kReal});
    }
    Advance();
  }

  void Advance() { executor_.RunUntil(executor_.Now() + absl::Milliseconds(1)); }

  static Record HonestRecord(const std::string& key) {
    return Record{"ks", key, Version{MakeHlc(kReal, 0), 1}, false, "honest", 0};
  }

  testing::TempDir dir_;
  ManualWallClock wall_{kReal};
  std::unique_ptr<Store> store_;
  ManualExecutor executor_{absl::FromUnixMillis(kReal)};
  SilentTransport transport_;
  std::unique_ptr<Replicator> replicator_;
  std::vector<std::string> log_;
  LinkId next_link_ = 1;
};

// Fact 2: a device a day behind refused every honest write as "ahead of
// local time" and kept its stale values.
TEST_F(ClockSkewTest, AReplicaADayBehindAcceptsHonestWritesOnceItsPeersShowIt) {
  OpenStore(-kDay);
  StartReplicator();
  absl::StatusOr<MergeResult> before = store_->Merge({HonestRecord("a")});
  ASSERT_THAT(before, IsOk());
  ASSERT_EQ(before->quarantined.size(), 1u);  // alone, it cannot know
  HonestPeersSayHello(2);
  absl::StatusOr<MergeResult> after = store_->Merge({HonestRecord("a")});
  ASSERT_THAT(after, IsOk());
  EXPECT_TRUE(after->refused.empty());
  EXPECT_EQ(after->won, 1u);
  // Its own writes are not moved forward (behind is harmless), and status
  // shows the offset, for itself and per peer.
  absl::StatusOr<StoreStats> stats = store_->Stats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->clock_peers, 2u);
  EXPECT_EQ(stats->clock_offset_ms, -kDay);
  EXPECT_EQ(stats->clock_correction_ms, 0);
  std::vector<PeerStatus> peers = replicator_->Statuses();
  ASSERT_EQ(peers.size(), 2u);
  EXPECT_TRUE(peers[0].clock_known);
  EXPECT_NEAR(peers[0].clock_offset_ms, kDay, 10);
  EXPECT_EQ(peers[0].clock_rtt_ms, -1);  // it dialled us
  EXPECT_EQ(replicator_->Counters().clock_forks, 0u);
}

// Fact 1: fixing the fast device's clock did not help: its persisted clock
// mark kept stamping its writes a day ahead after a restart.
TEST_F(ClockSkewTest, AClockMarkADayAheadForksToAFreshClockWhenPeersShowIt) {
  OpenStore(+kDay);
  ASSERT_THAT(store_->Put("ks", "while-ahead", "old"), IsOk());
  const uint64_t old_id = store_->replica_id();
  OpenStore(0);  // the clock is fixed; the mark is still a day ahead
  StartReplicator();
  absl::StatusOr<Version> stale = store_->Put("ks", "before-meeting", "x");
  ASSERT_THAT(stale, IsOk());
  EXPECT_GE(HlcMillis(stale->hlc), static_cast<uint64_t>(kReal + kDay));
  HonestPeersSayHello(2);
  EXPECT_EQ(replicator_->Counters().clock_forks, 1u);
  EXPECT_NE(store_->replica_id(), old_id);
  EXPECT_THAT(log_, Contains(HasSubstr("with a fresh clock")));
  // New writes are stamped at real time, as the new id (no peer's
  // watermark covers them) ...
  absl::StatusOr<Version> fresh = store_->Put("ks", "new", "y");
  ASSERT_THAT(fresh, IsOk());
  EXPECT_EQ(fresh->origin, store_->replica_id());
  EXPECT_LT(HlcMillis(fresh->hlc), static_cast<uint64_t>(kReal + 1000));
  // ... and a write of a key stored with a version a day ahead still wins.
  absl::StatusOr<Version> again = store_->Put("ks", "while-ahead", "new");
  ASSERT_THAT(again, IsOk());
  absl::StatusOr<std::optional<Record>> got = store_->Get("ks", "while-ahead");
  ASSERT_THAT(got, IsOk());
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->value, "new");
  EXPECT_EQ((*got)->version, *again);
  // Once: meeting the peers again does not fork again.
  HonestPeersSayHello(2);
  EXPECT_EQ(replicator_->Counters().clock_forks, 1u);
}

TEST_F(ClockSkewTest, AReplicaAheadWarnsOnceStampsAtRealTimeAndShowsItsOffset) {
  OpenStore(+kDay);
  StartReplicator();
  HonestPeersSayHello(2);
  HonestPeersSayHello(2);
  int warnings = 0;
  for (const std::string& line : log_) {
    if (line.find("clock is +86400000 ms ahead of real time") != std::string::npos) {
      ++warnings;
    }
  }
  EXPECT_EQ(warnings, 1) << ::testing::PrintToString(log_);
  absl::StatusOr<StoreStats> stats = store_->Stats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->clock_offset_ms, kDay);
  EXPECT_EQ(stats->clock_correction_ms, -kDay);
  absl::StatusOr<Version> v = store_->Put("ks", "k", "v");
  ASSERT_THAT(v, IsOk());
  EXPECT_LT(HlcMillis(v->hlc), static_cast<uint64_t>(kReal + 1000));
}

// A link that stays up keeps its peer's offset in the estimate; once the
// peers are gone and their samples old, the last estimate stands until a
// peer is met again.
TEST_F(ClockSkewTest, ALinkedPeerKeepsVouchingForItsOffset) {
  OpenStore(-kDay);
  StartReplicator();
  HonestPeersSayHello(2);
  wall_.Advance(PeerClockOffsets::kWindowMs + 60'000);
  executor_.RunUntil(executor_.Now() + absl::Hours(1) + absl::Milliseconds(1));  // a round
  // A third honest peer: the two linked ones still count with it.
  replicator_->OnInboundLink(next_link_++,
                             PeerInfo{.replica_id = 3, .incarnation = kIncarnation,
                                      .physical_ms = wall_.NowMillis() + kDay});
  Advance();
  absl::StatusOr<StoreStats> stats = store_->Stats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->clock_peers, 3u);
  EXPECT_NEAR(static_cast<double>(stats->clock_offset_ms), -kDay, 10);
  // All gone, and their samples old: the last estimate stands (a fast
  // replica gone offline must not stamp far ahead again).
  for (LinkId link = 1; link < next_link_; ++link) {
    replicator_->OnLinkDown(link, absl::UnavailableError("gone"));
  }
  wall_.Advance(PeerClockOffsets::kWindowMs + 1);
  executor_.RunUntil(executor_.Now() + absl::Hours(1) + absl::Milliseconds(1));
  const Record now_honest{"ks", "b", Version{MakeHlc(wall_.NowMillis() + kDay, 0), 1}, false,
                          "honest", 0};
  absl::StatusOr<MergeResult> merged = store_->Merge({now_honest});
  ASSERT_THAT(merged, IsOk());
  EXPECT_TRUE(merged->refused.empty());
}

// Fact 3: after merging a write from a replica 59 s ahead, an honest
// replica's next write was stamped 59 s ahead, and a replica 50 s behind
// held it back. With the estimate the slow one measures from real time; and
// nothing observed drags the honest one beyond the bound.
TEST(ObserveBoundTest, ASkewWithinTheBoundSpreadsNoFurtherThanTheBound) {
  testing::TempDir dir;
  ManualWallClock honest_wall(kReal), slow_wall(kReal - 50'000);
  StoreOptions honest_options{.dir = dir.Sub("honest"), .wall_clock = &honest_wall};
  StoreOptions slow_options{.dir = dir.Sub("slow"), .wall_clock = &slow_wall};
  absl::StatusOr<std::unique_ptr<Store>> honest = Store::Open(honest_options);
  absl::StatusOr<std::unique_ptr<Store>> slow = Store::Open(slow_options);
  ASSERT_THAT(honest, IsOk());
  ASSERT_THAT(slow, IsOk());
  const Record from_fast{"ks", "f", Version{MakeHlc(kReal + 59'000, 0), 99}, false, "fast", 0};
  absl::StatusOr<MergeResult> merged = (*honest)->Merge({from_fast});
  ASSERT_THAT(merged, IsOk());
  ASSERT_EQ(merged->won, 1u);
  absl::StatusOr<Version> next = (*honest)->Put("ks", "h", "honest");
  ASSERT_THAT(next, IsOk());
  EXPECT_GT(next->hlc, from_fast.version.hlc);  // causality: it saw the fast write
  EXPECT_LE(HlcMillis(next->hlc), static_cast<uint64_t>(kReal + 60'000));
  const Record spread{"ks", "h", *next, false, "honest", 0};
  // Alone, the slow replica holds it back (109 s ahead of its clock) ...
  EXPECT_THAT((*slow)->CheckSkew(spread.version.hlc), StatusIs(absl::StatusCode::kOutOfRange));
  // ... knowing from two peers that it is 50 s behind, it takes it.
  (*slow)->SetClockEstimate(ClockEstimate{2, 50'000}, /*apply=*/true);
  absl::StatusOr<MergeResult> taken = (*slow)->Merge({spread});
  ASSERT_THAT(taken, IsOk());
  EXPECT_TRUE(taken->refused.empty());
  EXPECT_EQ(taken->won, 1u);
  // A remote clock beyond the bound is quarantined, so never observed.
  const Record too_far{"ks", "g", Version{MakeHlc(kReal + 61'000, 0), 99}, false, "x", 0};
  merged = (*honest)->Merge({too_far});
  ASSERT_THAT(merged, IsOk());
  EXPECT_EQ(merged->quarantined.size(), 1u);
  next = (*honest)->Put("ks", "h2", "honest");
  ASSERT_THAT(next, IsOk());
  EXPECT_LE(HlcMillis(next->hlc), static_cast<uint64_t>(kReal + 60'000));
}

TEST_F(ClockSkewTest, WithCorrectionOffTheEstimateIsOnlyShown) {
  OpenStore(-kDay);
  StartReplicator(/*correct_clock=*/false);
  HonestPeersSayHello(2);
  absl::StatusOr<MergeResult> merged = store_->Merge({HonestRecord("a")});
  ASSERT_THAT(merged, IsOk());
  EXPECT_EQ(merged->quarantined.size(), 1u);
  absl::StatusOr<StoreStats> stats = store_->Stats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->clock_offset_ms, -kDay);
}

TEST_F(ClockSkewTest, AHelloWithAnAbsurdTimeIsRefused) {
  OpenStore(0);
  StartReplicator();
  replicator_->OnInboundLink(9, PeerInfo{.replica_id = 9, .incarnation = kIncarnation,
                                         .physical_ms = -1});
  Advance();
  EXPECT_THAT(transport_.closed, Contains(9));
  EXPECT_THAT(ValidatePeerInfo(PeerInfo{.replica_id = 9, .incarnation = kIncarnation,
                                        .physical_ms = int64_t{1} << 50}),
              StatusIs(absl::StatusCode::kInvalidArgument, "hello physicalTimeMs is"));
}

}  // namespace
}  // namespace peerkv::replication
