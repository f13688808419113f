// replication/replicator_test.cc: the engine's nudge and peer policies,
// driven step by step on a ManualExecutor with a transport that only
// records what the engine asks of it: a local write nudges every peer of a
// small group but only `fanout` peers of a big mesh; a nudge from a peer
// whose watermarks ours cover is not followed by a pull; peers beyond the
// limit are refused; a pull or nudge that goes unanswered makes its link
// suspect, and requests go on the peer's other links (or, with none left,
// the link we dialled is closed and redialled). (Convergence under faults
// is the simulation's job.)
#include "replication/replicator.h"

#include <set>

#include "absl/strings/str_format.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/temp_dir.h"

namespace peerkv::replication {
namespace {

// Records the engine's requests; pulls stay unanswered unless answered.
class RecordingTransport final : public Transport {
 public:
  void Connect(const std::string& address,
               absl::AnyInvocable<void(absl::StatusOr<Connected>)> done) override {
    ++connects;
    if (dial_answer.replica_id == 0) {
      done(absl::UnavailableError("no dialling in this test: " + address));
      return;
    }
    done(Connected{next_dial_link++, dial_answer});
  }
  void Pull(LinkId link, const PullRequest& request,
            absl::AnyInvocable<void(absl::StatusOr<PullResponse>)> done) override {
    pulls.push_back(link);
    pending_pulls.push_back(std::move(done));
  }
  void Nudge(LinkId link, const Watermarks& mine) override {
    nudges.push_back(link);
    nudge_watermarks = mine;
  }
  void Close(LinkId link) override { closed.push_back(link); }

  // Answers every pending pull with "nothing new".
  void AnswerPullsEmpty(uint64_t replica_id, uint64_t incarnation) {
    std::vector<absl::AnyInvocable<void(absl::StatusOr<PullResponse>)>> answering;
    answering.swap(pending_pulls);
    for (auto& done : answering) {
      PullResponse response;
      response.replica_id = replica_id;
      response.incarnation = incarnation;
      done(response);
    }
  }

  std::vector<LinkId> pulls;
  std::vector<absl::AnyInvocable<void(absl::StatusOr<PullResponse>)>> pending_pulls;
  std::vector<LinkId> nudges;
  Watermarks nudge_watermarks;
  std::vector<LinkId> closed;
  // Dials fail unless a peer is set to answer them (on links from 100 up).
  PeerInfo dial_answer{.replica_id = 0};
  LinkId next_dial_link = 100;
  int connects = 0;
};

constexpr uint64_t kIncarnation = 1;

class ReplicatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StoreOptions options;
    options.dir = dir_.Sub("db");
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
    ASSERT_THAT(store, IsOk());
    store_ = std::move(*store);
  }

  void TearDown() override {
    if (replicator_ != nullptr) replicator_->Stop();
  }

  void StartReplicator(ReplicatorOptions options) {
    options.gossip_interval = absl::Hours(1);  // no rounds during a test
    replicator_ = std::make_unique<Replicator>(store_.get(), &executor_, &transport_, options);
    replicator_->Start();
    Advance(absl::ZeroDuration());
  }

  // Peers 1..n dial in on links 1..n; the pulls their arrival starts are
  // answered (nothing new) if asked, and the bookkeeping cleared.
  void ConnectPeers(int n, bool answer_pulls = true) {
    for (int i = 1; i <= n; ++i) {
      replicator_->OnInboundLink(i, PeerInfo{.replica_id = static_cast<uint64_t>(i),
                                             .incarnation = kIncarnation});
    }
    Advance(absl::Milliseconds(1));
    // One pull at a time: each answer lets the next start.
    for (int i = 0; answer_pulls && i < n && !transport_.pending_pulls.empty(); ++i) {
      transport_.AnswerPullsEmpty(0, kIncarnation);
      Advance(absl::Milliseconds(1));
    }
    if (answer_pulls) {
      ASSERT_TRUE(transport_.pending_pulls.empty());
    }
    transport_.pulls.clear();
    transport_.nudges.clear();
  }

  // A local write, then time for its nudges to go out.
  void WriteLocally() {
    ASSERT_THAT(store_->Put("ks", "k", "v"), IsOk());
    Advance(absl::Milliseconds(1));
  }

  // Runs what is due within `d`, moving simulated time.
  void Advance(absl::Duration d) { executor_.RunUntil(executor_.Now() + d); }

  testing::TempDir dir_;
  std::unique_ptr<Store> store_;
  ManualExecutor executor_{absl::FromUnixSeconds(1'700'000'000)};
  RecordingTransport transport_;
  std::unique_ptr<Replicator> replicator_;
};

TEST_F(ReplicatorTest, ALocalWriteNudgesEveryPeerOfASmallGroup) {
  StartReplicator(ReplicatorOptions{.fanout = 2, .nudge_all_up_to = 8});
  ConnectPeers(5);
  WriteLocally();
  EXPECT_THAT(transport_.nudges, ::testing::UnorderedElementsAre(1, 2, 3, 4, 5));
  // The nudge carries our watermarks: the write's origin is us.
  EXPECT_EQ(transport_.nudge_watermarks.count(store_->replica_id()), 1u);
}

TEST_F(ReplicatorTest, ALocalWriteNudgesFanoutPeersOfABigMesh) {
  StartReplicator(ReplicatorOptions{.fanout = 3, .nudge_all_up_to = 8});
  ConnectPeers(20);
  WriteLocally();
  EXPECT_EQ(transport_.nudges.size(), 3u);
  EXPECT_EQ(std::set<LinkId>(transport_.nudges.begin(), transport_.nudges.end()).size(), 3u);
}

TEST_F(ReplicatorTest, ANudgeIsIgnoredOnlyWhenOurWatermarksCoverTheSenders) {
  StartReplicator(ReplicatorOptions{});
  ConnectPeers(1);
  WriteLocally();

  // The peer holds our write and nothing else: nothing to pull.
  replicator_->OnNudged(1, store_->GetWatermarks());
  Advance(absl::Milliseconds(1));
  EXPECT_TRUE(transport_.pulls.empty());
  EXPECT_EQ(replicator_->Counters().nudges_ignored, 1u);

  // It holds a write by a third replica that we lack: pull.
  Watermarks more = store_->GetWatermarks();
  more[777] = MakeHlc(1'700'000'000'000, 0);
  replicator_->OnNudged(1, more);
  Advance(absl::Milliseconds(1));
  EXPECT_THAT(transport_.pulls, ::testing::ElementsAre(1));
  transport_.AnswerPullsEmpty(1, kIncarnation);

  // Watermarks unknown (empty): pull.
  replicator_->OnNudged(1, Watermarks{});
  Advance(absl::Milliseconds(1));
  EXPECT_THAT(transport_.pulls, ::testing::ElementsAre(1, 1));
  EXPECT_EQ(replicator_->Counters().nudges_ignored, 1u);
}

TEST_F(ReplicatorTest, PeersBeyondTheLimitAreRefused) {
  StartReplicator(ReplicatorOptions{});
  ConnectPeers(1024, /*answer_pulls=*/false);
  EXPECT_TRUE(transport_.closed.empty());
  replicator_->OnInboundLink(5000, PeerInfo{.replica_id = 5000, .incarnation = kIncarnation});
  // A known peer on a second link is still welcome.
  replicator_->OnInboundLink(5001, PeerInfo{.replica_id = 7, .incarnation = kIncarnation});
  Advance(absl::Milliseconds(1));
  EXPECT_THAT(transport_.closed, ::testing::ElementsAre(5000));
  EXPECT_EQ(replicator_->Statuses().size(), 1024u);
}

// A store that refuses every merge (here its map is at max_map_bytes):
// the link says so in status at once and in the log once per minute, not
// on every retry and not never.
TEST_F(ReplicatorTest, FailingMergesAreLoggedOncePerMinuteAndShownInStatus) {
  store_.reset();
  StoreOptions options;
  options.dir = dir_.Sub("small");
  options.initial_map_bytes = 1 << 20;
  options.max_map_bytes = 1 << 20;
  options.sync = false;
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
  ASSERT_THAT(store, IsOk());
  store_ = std::move(*store);
  std::vector<std::string> lines;
  StartReplicator(ReplicatorOptions{
      .name = "b", .log = [&lines](const std::string& line) { lines.push_back(line); }});
  ConnectPeers(1);

  // A page of 2 MB of records, more than the map may hold.
  auto answer_big_page = [&] {
    ASSERT_EQ(transport_.pending_pulls.size(), 1u);
    PullResponse response;
    response.replica_id = 1;
    response.incarnation = kIncarnation;
    response.from_seq = 0;
    response.last_seq = response.max_seq = 600;
    const uint64_t hlc = MakeHlc(absl::ToUnixMillis(absl::Now()), 0);
    for (uint64_t seq = 1; seq <= 600; ++seq) {
      response.records.push_back(Record{"ks", absl::StrFormat("k%04d", seq), Version{hlc, 1},
                                        false, std::string(3000, 'v'), seq});
    }
    auto done = std::move(transport_.pending_pulls.front());
    transport_.pending_pulls.clear();
    done(std::move(response));
    Advance(absl::Milliseconds(1));
  };
  auto pull = [&] {
    replicator_->OnNudged(1, Watermarks{});
    Advance(absl::Milliseconds(1));
  };

  pull();
  answer_big_page();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_THAT(lines[0], ::testing::HasSubstr("merges from peer (unnamed)"));
  EXPECT_THAT(lines[0], ::testing::HasSubstr("max_map_bytes"));
  const std::vector<PeerStatus> statuses = replicator_->Statuses();
  ASSERT_EQ(statuses.size(), 1u);
  EXPECT_THAT(statuses[0].last_error, ::testing::HasSubstr("merging 600 records"));
  EXPECT_THAT(statuses[0].last_error, ::testing::HasSubstr("max_map_bytes"));

  // Retries within the minute fail silently; the next after it is logged
  // with the count.
  for (int i = 0; i < 3; ++i) {
    Advance(absl::Seconds(10));
    pull();
    answer_big_page();
  }
  EXPECT_EQ(lines.size(), 1u);
  Advance(absl::Seconds(31));
  pull();
  answer_big_page();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_THAT(lines[1], ::testing::HasSubstr("(4 since the last such line)"));
}

TEST_F(ReplicatorTest, AnUnansweredPullMakesItsLinkSuspectAndTheNextGoesOnAnother) {
  StartReplicator(ReplicatorOptions{.pull_timeout = absl::Seconds(1)});
  // One peer, two links (it dialled us twice, or we each dialled the other).
  replicator_->OnInboundLink(1, PeerInfo{.replica_id = 7, .incarnation = kIncarnation});
  replicator_->OnInboundLink(2, PeerInfo{.replica_id = 7, .incarnation = kIncarnation});
  Advance(absl::Milliseconds(1));
  for (int i = 0; i < 4 && !transport_.pending_pulls.empty(); ++i) {
    transport_.AnswerPullsEmpty(7, kIncarnation);
    Advance(absl::Milliseconds(1));
  }
  ASSERT_TRUE(transport_.pending_pulls.empty());
  transport_.pulls.clear();

  // Link 1 is half-open: the pull on it is never answered.
  replicator_->OnNudged(1, Watermarks{});
  Advance(absl::Milliseconds(1));
  ASSERT_THAT(transport_.pulls, ::testing::ElementsAre(1));
  transport_.pending_pulls.clear();  // lost
  Advance(absl::Seconds(1));
  // The timeout retries at once, on the other link.
  EXPECT_THAT(transport_.pulls, ::testing::ElementsAre(1, 2));
  std::vector<PeerStatus> statuses = replicator_->Statuses();
  ASSERT_EQ(statuses.size(), 1u);
  EXPECT_EQ(statuses[0].links, 2u);
  EXPECT_EQ(statuses[0].suspect_links, 1u);
  EXPECT_THAT(statuses[0].last_error, ::testing::HasSubstr("link suspect"));
  transport_.AnswerPullsEmpty(7, kIncarnation);
  Advance(absl::Milliseconds(1));

  // Nudges and later pulls avoid it too.
  transport_.nudges.clear();
  WriteLocally();
  EXPECT_THAT(transport_.nudges, ::testing::ElementsAre(2));
  replicator_->OnNudged(2, Watermarks{});
  Advance(absl::Milliseconds(1));
  EXPECT_THAT(transport_.pulls, ::testing::ElementsAre(1, 2, 2));
  transport_.AnswerPullsEmpty(7, kIncarnation);
  Advance(absl::Milliseconds(1));

  // A nudge the transport saw go unanswered makes link 2 suspect as well;
  // with every link suspect, requests go on the first one again, and its
  // answer clears it.
  replicator_->OnLinkSuspect(2, absl::DeadlineExceededError("nudge unanswered"));
  Advance(absl::Milliseconds(1));
  EXPECT_EQ(replicator_->Statuses()[0].suspect_links, 2u);
  replicator_->OnNudged(2, Watermarks{});
  Advance(absl::Milliseconds(1));
  EXPECT_THAT(transport_.pulls, ::testing::ElementsAre(1, 2, 2, 1));
  transport_.AnswerPullsEmpty(7, kIncarnation);
  Advance(absl::Milliseconds(1));
  EXPECT_EQ(replicator_->Statuses()[0].suspect_links, 1u);

  // A dead link (the transport's keepalive) is counted and shown.
  replicator_->OnLinkDown(2, absl::DeadlineExceededError("no answer to a keepalive"));
  Advance(absl::Milliseconds(1));
  statuses = replicator_->Statuses();
  EXPECT_EQ(statuses[0].links, 1u);
  EXPECT_EQ(statuses[0].suspect_links, 0u);
  EXPECT_EQ(statuses[0].dead_links, 1u);
  EXPECT_THAT(statuses[0].last_error, ::testing::HasSubstr("keepalive"));
  // Inbound links are never closed by the engine (it cannot redial them).
  EXPECT_TRUE(transport_.closed.empty());
}

TEST_F(ReplicatorTest, WithEveryLinkSuspectTheDialledOneIsClosedAndRedialled) {
  transport_.dial_answer = PeerInfo{.replica_id = 9, .incarnation = kIncarnation};
  StartReplicator(ReplicatorOptions{.peers = {"peer:1"},
                                    .pull_timeout = absl::Seconds(1),
                                    .backoff_min = absl::Milliseconds(100)});
  ASSERT_EQ(transport_.connects, 1);
  ASSERT_THAT(transport_.pulls, ::testing::ElementsAre(100));
  transport_.pending_pulls.clear();  // never answered
  Advance(absl::Seconds(1));
  EXPECT_THAT(transport_.closed, ::testing::ElementsAre(100));
  // Redialled after the backoff (100 ms, jittered up to 1.5x), on a new
  // link, which the next pull uses.
  Advance(absl::Milliseconds(200));
  EXPECT_EQ(transport_.connects, 2);
  EXPECT_THAT(transport_.pulls, ::testing::Contains(101));
  std::vector<PeerStatus> statuses = replicator_->Statuses();
  ASSERT_EQ(statuses.size(), 1u);
  EXPECT_EQ(statuses[0].links, 1u);
  EXPECT_EQ(statuses[0].suspect_links, 0u);
}

}  // namespace
}  // namespace peerkv::replication
