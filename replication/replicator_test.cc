// replication/replicator_test.cc: the engine's nudge and peer policies,
// driven step by step on a ManualExecutor with a transport that only
// records what the engine asks of it: a local write nudges every peer of a
// small group but only `fanout` peers of a big mesh; a nudge from a peer
// whose watermarks ours cover is not followed by a pull; peers beyond the
// limit are refused, unless a peer long gone can be forgotten for them;
// hellos with names over the limit are refused both ways; a pull or nudge
// that goes unanswered makes its link suspect, and requests go on the
// peer's other links (or, with none left, the link we dialled is closed and
// redialled). (Convergence under faults is the simulation's job.)
#include "replication/replicator.h"

#include "replication/serve.h"

#include <map>
#include <set>

#include "absl/strings/str_cat.h"
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
    auto it = dial_answers.find(address);
    if (it != dial_answers.end() && !it->second.empty()) {
      Connected answer = it->second.front();
      it->second.erase(it->second.begin());
      done(answer);
      return;
    }
    if (dial_answer.replica_id == 0) {
      done(absl::UnavailableError("no dialling in this test: " + address));
      return;
    }
    done(Connected{next_dial_link++, dial_answer});
  }
  void Pull(LinkId link, const PullRequest& request,
            absl::AnyInvocable<void(absl::StatusOr<PullResponse>)> done) override {
    if (on_pull) on_pull();
    pulls.push_back(link);
    requests.push_back(request);
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

  // What dialling each address answers, once each; then Unavailable.
  std::map<std::string, std::vector<Connected>> dial_answers;
  std::vector<LinkId> pulls;
  std::vector<PullRequest> requests;
  std::vector<absl::AnyInvocable<void(absl::StatusOr<PullResponse>)>> pending_pulls;
  std::vector<LinkId> nudges;
  Watermarks nudge_watermarks;
  std::vector<LinkId> closed;
  // Dials of an address in dial_answers get its answers, once each; other
  // dials fail unless dial_answer is set (answered on links from 100 up).
  PeerInfo dial_answer{.replica_id = 0};
  LinkId next_dial_link = 100;
  int connects = 0;
  // Called as each pull is asked for (before it is recorded).
  std::function<void()> on_pull;
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

TEST_F(ReplicatorTest, APeerGoingAndReturningIsLoggedOnceEachWay) {
  std::vector<std::string> lines;
  auto count = [&lines](const std::string& text) {
    return std::count_if(lines.begin(), lines.end(), [&](const std::string& l) {
      return l.find(text) != std::string::npos;
    });
  };
  StartReplicator(ReplicatorOptions{.peers = {"peer:1"},
                                    .backoff_min = absl::Milliseconds(100),
                                    .backoff_max = absl::Milliseconds(400),
                                    .log = [&](const std::string& l) { lines.push_back(l); }});
  // Many failed dials: one line.
  Advance(absl::Seconds(5));
  ASSERT_GE(transport_.connects, 5);
  EXPECT_EQ(count("peer at peer:1 is unreachable"), 1) << ::testing::PrintToString(lines);
  EXPECT_EQ(count("reachable again"), 0);
  // It answers: one line.
  transport_.dial_answer = PeerInfo{.replica_id = 9, .incarnation = kIncarnation, .protocol_version = kProtocolVersion, .name = "pc"};
  Advance(absl::Seconds(1));
  EXPECT_EQ(count("peer at peer:1 is reachable again (replica 0000000000000009, pc)"), 1)
      << ::testing::PrintToString(lines);
  // Its link drops and dials fail again: one more "unreachable".
  transport_.dial_answer = PeerInfo{.replica_id = 0};
  replicator_->OnLinkDown(transport_.next_dial_link - 1, absl::UnavailableError("reset"));
  Advance(absl::Seconds(5));
  EXPECT_EQ(count("peer at peer:1 is unreachable"), 2) << ::testing::PrintToString(lines);

  // A peer that dials us: its last link going and its return, once each.
  replicator_->OnInboundLink(1, PeerInfo{.replica_id = 7, .incarnation = kIncarnation});
  replicator_->OnInboundLink(2, PeerInfo{.replica_id = 7, .incarnation = kIncarnation});
  Advance(absl::Milliseconds(1));
  replicator_->OnLinkDown(1, absl::UnavailableError("reset"));
  Advance(absl::Milliseconds(1));
  EXPECT_EQ(count("peer 0000000000000007, which dials us, is unreachable"), 0);
  replicator_->OnLinkDown(2, absl::UnavailableError("reset"));
  Advance(absl::Milliseconds(1));
  EXPECT_EQ(count("peer 0000000000000007, which dials us, is unreachable"), 1);
  replicator_->OnInboundLink(3, PeerInfo{.replica_id = 7, .incarnation = kIncarnation});
  Advance(absl::Milliseconds(1));
  EXPECT_EQ(count("peer 0000000000000007, which dials us, is connected again"), 1)
      << ::testing::PrintToString(lines);
}

TEST_F(ReplicatorTest, AFullTableForgetsTheLeastRecentlySeenGonePeerForANewOne) {
  StartReplicator(ReplicatorOptions{.max_peers = 8, .evict_gone_peers_after = absl::Minutes(1)});
  // Peer 1 is pulled from once: our checkpoint in its log is seq 7.
  replicator_->OnInboundLink(1, PeerInfo{.replica_id = 1, .incarnation = kIncarnation});
  Advance(absl::Milliseconds(1));
  ASSERT_EQ(transport_.pending_pulls.size(), 1u);
  {
    PullResponse response;
    response.replica_id = 1;
    response.incarnation = kIncarnation;
    response.last_seq = 7;
    response.max_seq = 7;
    auto done = std::move(transport_.pending_pulls.front());
    transport_.pending_pulls.clear();
    done(response);
  }
  Advance(absl::Milliseconds(1));
  ASSERT_THAT(store_->GetCheckpoint(1), IsOk());
  ASSERT_TRUE(store_->GetCheckpoint(1)->has_value());
  // Made-up replicas fill the rest of the table (their pulls go unanswered
  // and time out: they are not pulling any more when they are gone).
  for (uint64_t i = 2; i <= 8; ++i) {
    replicator_->OnInboundLink(i, PeerInfo{.replica_id = i, .incarnation = kIncarnation});
  }
  Advance(absl::Milliseconds(1));
  transport_.pending_pulls.clear();
  // Peer 1 leaves first, the others a second later.
  replicator_->OnLinkDown(1, absl::UnavailableError("gone"));
  Advance(absl::Seconds(1));
  for (LinkId i = 2; i <= 8; ++i) replicator_->OnLinkDown(i, absl::UnavailableError("gone"));
  Advance(absl::Seconds(30));

  // Gone, but not for long enough: a new replica is still refused.
  replicator_->OnInboundLink(5000, PeerInfo{.replica_id = 5000, .incarnation = kIncarnation});
  Advance(absl::Milliseconds(1));
  EXPECT_THAT(transport_.closed, ::testing::ElementsAre(5000));
  EXPECT_EQ(replicator_->Counters().peers_evicted, 0u);

  // A minute on, the least recently seen (peer 1) makes room for it, and
  // the engine still pulls (the pull slot was not lost with the peer).
  Advance(absl::Minutes(1));
  transport_.pulls.clear();
  transport_.requests.clear();
  replicator_->OnInboundLink(5001, PeerInfo{.replica_id = 5000, .incarnation = kIncarnation});
  Advance(absl::Milliseconds(1));
  EXPECT_THAT(transport_.closed, ::testing::ElementsAre(5000));
  EXPECT_THAT(transport_.pulls, ::testing::ElementsAre(5001));
  EXPECT_EQ(replicator_->Counters().peers_evicted, 1u);
  std::vector<PeerStatus> statuses = replicator_->Statuses();
  EXPECT_EQ(statuses.size(), 8u);
  for (const PeerStatus& s : statuses) EXPECT_NE(s.replica_id, 1u);
  transport_.AnswerPullsEmpty(5000, kIncarnation);
  Advance(absl::Milliseconds(1));

  // Peer 1 comes back (and peer 2, now the least recently seen, goes): it
  // resumes from its checkpoint, not from the start of its log.
  transport_.pulls.clear();
  transport_.requests.clear();
  replicator_->OnInboundLink(5002, PeerInfo{.replica_id = 1, .incarnation = kIncarnation});
  Advance(absl::Milliseconds(1));
  ASSERT_THAT(transport_.pulls, ::testing::ElementsAre(5002));
  EXPECT_EQ(transport_.requests[0].incarnation, kIncarnation);
  EXPECT_EQ(transport_.requests[0].after_seq, 7u);
  EXPECT_EQ(replicator_->Counters().peers_evicted, 2u);
  statuses = replicator_->Statuses();
  EXPECT_EQ(statuses.size(), 8u);
  for (const PeerStatus& s : statuses) EXPECT_NE(s.replica_id, 2u);
  // Its pull, once answered, counts as in its first life.
  const uint64_t pulls_before = replicator_->Counters().pulls;
  transport_.AnswerPullsEmpty(1, kIncarnation);
  Advance(absl::Milliseconds(1));
  EXPECT_EQ(replicator_->Counters().pulls, pulls_before + 1);
}

TEST_F(ReplicatorTest, AConfiguredPeerIsNeverForgotten) {
  transport_.dial_answers["peer-a:1"] = {
      Transport::Connected{.link = 1, .peer = PeerInfo{.replica_id = 1, .incarnation = kIncarnation}}};
  ReplicatorOptions options{
      .peers = {"peer-a:1"}, .max_peers = 8, .evict_gone_peers_after = absl::Minutes(1)};
  options.backoff_min = absl::Hours(1);  // no redial during the test
  options.backoff_max = absl::Hours(1);
  StartReplicator(options);
  for (uint64_t i = 2; i <= 8; ++i) {
    replicator_->OnInboundLink(i, PeerInfo{.replica_id = i, .incarnation = kIncarnation});
  }
  Advance(absl::Milliseconds(1));
  replicator_->OnLinkDown(1, absl::UnavailableError("gone"));
  Advance(absl::Seconds(1));
  for (LinkId i = 2; i <= 8; ++i) replicator_->OnLinkDown(i, absl::UnavailableError("gone"));
  Advance(absl::Minutes(2));
  replicator_->OnInboundLink(5000, PeerInfo{.replica_id = 5000, .incarnation = kIncarnation});
  Advance(absl::Milliseconds(1));
  EXPECT_EQ(replicator_->Counters().peers_evicted, 1u);
  bool configured_listed = false, second_listed = false;
  for (const PeerStatus& s : replicator_->Statuses()) {
    configured_listed = configured_listed || s.replica_id == 1;
    second_listed = second_listed || s.replica_id == 2;
  }
  EXPECT_TRUE(configured_listed);
  EXPECT_FALSE(second_listed);
}

// A fork whose re-stamp fails after the durable id switch is still a fork:
// links known by the old id are dropped, it is counted and shown, and the
// failed re-stamp is logged. (The reopened store refuses the stored value
// at its smaller value limit, so the re-stamp fails.)
TEST_F(ReplicatorTest, AForkWhoseRestampFailsStillDropsTheOldIdsLinks) {
  ASSERT_THAT(store_->Put("ks", "big", std::string(200, 'x')), IsOk());
  const uint64_t old_id = store_->replica_id();
  store_.reset();
  StoreOptions options;
  options.dir = dir_.Sub("db");
  options.max_value_bytes = 100;
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
  ASSERT_THAT(store, IsOk());
  store_ = std::move(*store);
  std::vector<std::string> lines;
  StartReplicator(ReplicatorOptions{.log = [&](const std::string& l) { lines.push_back(l); }});
  ConnectPeers(1);
  replicator_->ForkAfterRestore(Restored{.replica_id = old_id, .since_seq = 0, .why = "test"});
  Advance(absl::Milliseconds(1));
  EXPECT_NE(store_->replica_id(), old_id);
  EXPECT_EQ(replicator_->LastFork().new_id, store_->replica_id());
  EXPECT_EQ(replicator_->Counters().forks, 1u);
  EXPECT_THAT(transport_.closed, ::testing::Contains(1));
  EXPECT_THAT(lines, ::testing::Contains(::testing::HasSubstr("re-stamping the writes made")));
}

// A data directory restored from a copy taken before it forked still has
// the id it forked away from. Its peers forgot their watermarks and
// checkpoints of that retired id, so their hellos claim nothing of it, but
// they list it as retired: that is the evidence (the simulation's seed
// 1907: the restored replica kept writing as the retired id, and never
// pulled its own lost writes back from the peers).
TEST_F(ReplicatorTest, AHelloThatListsOurIdAsRetiredForksUs) {
  StartReplicator(ReplicatorOptions{});
  const uint64_t old_id = store_->replica_id();
  replicator_->OnInboundLink(
      1, PeerInfo{.replica_id = 1, .incarnation = kIncarnation, .retired = {7, old_id}});
  Advance(absl::Milliseconds(1));
  EXPECT_NE(store_->replica_id(), old_id);
  EXPECT_EQ(replicator_->Counters().forks, 1u);
  EXPECT_THAT(replicator_->LastFork().evidence, ::testing::HasSubstr("retired by a fork"));
  EXPECT_THAT(transport_.closed, ::testing::Contains(1));

  // The dialling side too.
  const uint64_t second_id = store_->replica_id();
  transport_.dial_answers["peer2"] = {Transport::Connected{
      50, PeerInfo{.replica_id = 2, .incarnation = kIncarnation, .retired = {second_id}}}};
  replicator_->AddPeer("peer2");
  Advance(absl::Milliseconds(1));
  EXPECT_NE(store_->replica_id(), second_id);
  EXPECT_EQ(replicator_->Counters().forks, 2u);
  EXPECT_THAT(transport_.closed, ::testing::Contains(50));
}

// A hello listing other ids as retired is no evidence against us.
TEST_F(ReplicatorTest, AHelloThatListsOtherRetiredIdsDoesNotForkUs) {
  StartReplicator(ReplicatorOptions{});
  const uint64_t id = store_->replica_id();
  replicator_->OnInboundLink(
      1, PeerInfo{.replica_id = 1, .incarnation = kIncarnation, .retired = {7, 8}});
  Advance(absl::Milliseconds(1));
  EXPECT_EQ(store_->replica_id(), id);
  EXPECT_EQ(replicator_->Counters().forks, 0u);
}

TEST_F(ReplicatorTest, HellosWithNamesOverTheLimitAreRefusedBothWays) {
  const std::string longest(kMaxReplicaNameBytes, 'n');
  const std::string too_long(kMaxReplicaNameBytes + 1, 'n');
  transport_.dial_answers["peer-a:1"] = {Transport::Connected{
      .link = 1, .peer = PeerInfo{.replica_id = 1, .incarnation = kIncarnation, .name = too_long}}};
  ReplicatorOptions options{.peers = {"peer-a:1"}};
  options.backoff_min = absl::Hours(1);
  options.backoff_max = absl::Hours(1);
  StartReplicator(options);
  // Dialled: the peer's answer is refused and the link closed.
  EXPECT_THAT(transport_.closed, ::testing::ElementsAre(1));
  std::vector<PeerStatus> statuses = replicator_->Statuses();
  ASSERT_EQ(statuses.size(), 1u);
  EXPECT_EQ(statuses[0].replica_id, 0u);
  EXPECT_EQ(statuses[0].last_error, "replica name is 65 bytes; the limit is 64");
  // Inbound: likewise; a name at the limit is welcome.
  replicator_->OnInboundLink(2, PeerInfo{.replica_id = 2, .incarnation = kIncarnation, .name = too_long});
  replicator_->OnInboundLink(3, PeerInfo{.replica_id = 3, .incarnation = kIncarnation, .name = longest});
  Advance(absl::Milliseconds(1));
  EXPECT_THAT(transport_.closed, ::testing::ElementsAre(1, 2));
  statuses = replicator_->Statuses();
  ASSERT_EQ(statuses.size(), 2u);
  EXPECT_EQ(statuses[0].replica_id, 3u);
  EXPECT_EQ(statuses[0].name, longest);
}

// A page of a pull from peer 1: records with seqs (from, last] (keys
// p<seq>, `value_bytes` each), and the peer's log going up to max_seq.
PullResponse Page(uint64_t from, uint64_t last, uint64_t max_seq, size_t value_bytes = 10) {
  PullResponse response;
  response.replica_id = 1;
  response.incarnation = kIncarnation;
  response.from_seq = from;
  response.last_seq = last;
  response.max_seq = max_seq;
  const uint64_t hlc = MakeHlc(absl::ToUnixMillis(absl::Now()), 0);
  for (uint64_t seq = from + 1; seq <= last; ++seq) {
    response.records.push_back(Record{"ks", absl::StrFormat("p%04d", seq), Version{hlc, 1}, false,
                                      std::string(value_bytes, 'v'), seq});
  }
  return response;
}

// The oldest pending pull gets `answer`; then the engine runs.
void Answer(RecordingTransport& transport, absl::StatusOr<PullResponse> answer) {
  ASSERT_FALSE(transport.pending_pulls.empty());
  auto done = std::move(transport.pending_pulls.front());
  transport.pending_pulls.erase(transport.pending_pulls.begin());
  done(std::move(answer));
}

// A restored replica that wrote on before meeting a peer whose claims
// would show it (seed 2661: the only peer it met had forked, and a fork
// drops every watermark and checkpoint) still gets its lost writes in a
// pull (ChangesFilter::send_uncovered_of): a record of its own id beyond
// its own clock is the evidence, and it forks before merging the page.
TEST_F(ReplicatorTest, APulledWriteOfOurOwnBeyondOurClockForksUsBeforeItMerges) {
  ASSERT_THAT(store_->Put("ks", "mine", "v"), IsOk());
  const uint64_t old_id = store_->replica_id();
  const uint64_t mark = store_->GetWatermarks().at(old_id);
  StartReplicator(ReplicatorOptions{});
  ConnectPeers(1, /*answer_pulls=*/false);
  PullResponse page = Page(0, 1, 1);
  page.records[0].version = Version{mark + 5, old_id};
  page.records[0].key = "lost";
  Answer(transport_, page);
  Advance(absl::Milliseconds(1));
  EXPECT_NE(store_->replica_id(), old_id);
  EXPECT_EQ(replicator_->Counters().forks, 1u);
  EXPECT_THAT(replicator_->LastFork().evidence, ::testing::HasSubstr("own that it lacks"));
  absl::StatusOr<std::optional<Record>> lost = store_->Get("ks", "lost");
  ASSERT_THAT(lost, IsOk());
  EXPECT_FALSE(lost->has_value());  // not merged under the old id
}

// A record of our own id that our clock covers is no evidence.
TEST_F(ReplicatorTest, APulledWriteOfOurOwnWithinOurClockDoesNotForkUs) {
  ASSERT_THAT(store_->Put("ks", "mine", "v"), IsOk());
  const uint64_t id = store_->replica_id();
  const uint64_t mark = store_->GetWatermarks().at(id);
  StartReplicator(ReplicatorOptions{});
  ConnectPeers(1, /*answer_pulls=*/false);
  PullResponse page = Page(0, 1, 1);
  page.records[0].version = Version{mark, id};
  Answer(transport_, page);
  Advance(absl::Milliseconds(1));
  EXPECT_EQ(store_->replica_id(), id);
  EXPECT_EQ(replicator_->Counters().forks, 0u);
}

// After a fresh-clock fork, a key stored with a version ahead of the
// fresh clock is written again stamped just above that version, beyond
// the replica's own clock (Store::StampLocal). A peer that pulled it
// sends it back (it is beyond our watermark for ourselves), and it is no
// evidence of a lost life: we hold it. Seed 5577 of the simulation forked
// spuriously on it (and re-stamped its writes since as new ones, beating
// later writes of others).
class OwnWriteAheadTest : public ReplicatorTest {
 protected:
  void SetUp() override {
    StoreOptions options;
    options.dir = dir_.Sub("ahead");
    options.wall_clock = &wall_;
    options.sync = false;
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
    ASSERT_THAT(store, IsOk());
    store_ = std::move(*store);
    ASSERT_THAT(store_->Put("ks", "k", "a day ahead"), IsOk());
    store_->SetClockEstimate(ClockEstimate{2, -kDay}, /*apply=*/true);
    ASSERT_THAT(store_->Fork(UINT64_MAX, /*fresh_clock=*/true), IsOk());
    wall_.Set(kT0);  // the clock was fixed
    absl::StatusOr<Version> again = store_->Put("ks", "k", "again");
    ASSERT_THAT(again, IsOk());
    again_ = *again;
    ASSERT_EQ(again_.origin, store_->replica_id());
    ASSERT_GT(again_.hlc, store_->GetWatermarks().at(again_.origin));  // beyond our clock
    StartReplicator(ReplicatorOptions{});
    ConnectPeers(1, /*answer_pulls=*/false);
  }

  void TearDown() override {
    // The store reads wall_, which goes before the base's members.
    ReplicatorTest::TearDown();
    replicator_.reset();
    store_.reset();
  }

  // A page from peer 1 holding our write of "k" at again_ with `value`.
  void AnswerWith(const std::string& value) {
    PullResponse page = Page(0, 1, 1);
    page.records[0] = Record{"ks", "k", again_, false, value, 1};
    Answer(transport_, page);
    Advance(absl::Milliseconds(1));
  }

  static constexpr int64_t kDay = 86'400'000;
  static constexpr int64_t kT0 = 1'700'000'000'000;
  ManualWallClock wall_{kT0 + kDay};
  Version again_;
};

TEST_F(OwnWriteAheadTest, APulledWriteOfOurOwnThatWeHoldBeyondOurClockDoesNotForkUs) {
  const uint64_t id = store_->replica_id();
  AnswerWith("again");
  EXPECT_EQ(store_->replica_id(), id);
  EXPECT_EQ(replicator_->Counters().forks, 0u);
}

// The same version with another value is a write of a lost life that a
// restored copy stamped again: still evidence.
TEST_F(OwnWriteAheadTest, OurVersionWithAnotherValueBeyondOurClockForksUs) {
  const uint64_t id = store_->replica_id();
  AnswerWith("lost");
  EXPECT_NE(store_->replica_id(), id);
  EXPECT_EQ(replicator_->Counters().forks, 1u);
  EXPECT_THAT(replicator_->LastFork().evidence, ::testing::HasSubstr("own that it lacks"));
}

// A bulk pull asks for page N+1 (from where page N ends) before page N
// merges, merges pages strictly in order with the checkpoint, and when a
// page fails (an error, no answer, a merge the store refuses) drops what
// was prefetched and starts again from the last committed checkpoint.
TEST_F(ReplicatorTest, APipelinedPullMergesPagesInOrderAndRestartsFromTheCommittedCheckpoint) {
  store_.reset();
  StoreOptions options;
  options.dir = dir_.Sub("small");
  options.initial_map_bytes = 1 << 20;
  options.max_map_bytes = 1 << 20;  // a 2 MB page cannot merge
  options.sync = false;
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
  ASSERT_THAT(store, IsOk());
  store_ = std::move(*store);
  StartReplicator(ReplicatorOptions{.pull_timeout = absl::Seconds(1)});
  ConnectPeers(1);
  auto checkpoint = [&]() -> uint64_t {
    absl::StatusOr<std::optional<PeerCheckpoint>> c = store_->GetCheckpoint(1);
    EXPECT_THAT(c, IsOk());
    return c.ok() && c->has_value() ? (*c)->seq : 0;
  };
  auto has = [&](uint64_t seq) {
    absl::StatusOr<std::optional<Record>> r = store_->Get("ks", absl::StrFormat("p%04d", seq));
    EXPECT_THAT(r, IsOk());
    return r.ok() && r->has_value();
  };
  // The committed checkpoint at the moment each pull is asked for.
  std::vector<uint64_t> committed_at_request;
  transport_.on_pull = [&] { committed_at_request.push_back(checkpoint()); };
  transport_.requests.clear();
  auto after_seqs = [&] {
    std::vector<uint64_t> seqs;
    for (const PullRequest& r : transport_.requests) seqs.push_back(r.after_seq);
    return seqs;
  };

  replicator_->OnNudged(1, Watermarks{});
  Advance(absl::Milliseconds(1));
  ASSERT_THAT(after_seqs(), ::testing::ElementsAre(0));
  // Page 1 of 4: page 2 is asked for from seq 3 while page 1 is not yet
  // merged (the checkpoint was still 0), then page 1 commits.
  Answer(transport_, Page(0, 3, 12));
  Advance(absl::Milliseconds(1));
  EXPECT_THAT(after_seqs(), ::testing::ElementsAre(0, 3));
  EXPECT_THAT(committed_at_request, ::testing::ElementsAre(0, 0));
  EXPECT_EQ(checkpoint(), 3u);
  EXPECT_TRUE(has(3));
  EXPECT_EQ(replicator_->Counters().pages_prefetched, 1u);
  // Page 2 likewise: page 3 asked from 6 before page 2 commits.
  Answer(transport_, Page(3, 6, 12));
  Advance(absl::Milliseconds(1));
  EXPECT_THAT(after_seqs(), ::testing::ElementsAre(0, 3, 6));
  EXPECT_THAT(committed_at_request, ::testing::ElementsAre(0, 0, 3));
  EXPECT_EQ(checkpoint(), 6u);

  // Page 3 fails on the wire: the pull ends at the committed checkpoint,
  // and the next one starts there.
  Answer(transport_, absl::UnavailableError("link broke"));
  Advance(absl::Milliseconds(1));
  EXPECT_TRUE(transport_.pending_pulls.empty());
  EXPECT_EQ(checkpoint(), 6u);
  replicator_->OnNudged(1, Watermarks{});
  Advance(absl::Milliseconds(1));
  EXPECT_THAT(after_seqs(), ::testing::ElementsAre(0, 3, 6, 6));

  // Page 3 again; page 4 (asked from 9) never comes: after the timeout the
  // pull starts again from 9, committed by page 3.
  Answer(transport_, Page(6, 9, 12));
  Advance(absl::Milliseconds(1));
  EXPECT_THAT(after_seqs(), ::testing::ElementsAre(0, 3, 6, 6, 9));
  EXPECT_EQ(checkpoint(), 9u);
  transport_.pending_pulls.clear();  // lost
  Advance(absl::Seconds(1));
  EXPECT_THAT(after_seqs(), ::testing::ElementsAre(0, 3, 6, 6, 9, 9));
  EXPECT_EQ(checkpoint(), 9u);

  // Page 4 is more than the store's map holds: its merge fails, so the
  // page 5 already asked for (from 600) is dropped when it comes, and
  // the checkpoint stays at 9.
  Answer(transport_, Page(9, 600, 700, 3000));
  Advance(absl::Milliseconds(1));
  EXPECT_THAT(after_seqs(), ::testing::ElementsAre(0, 3, 6, 6, 9, 9, 600));
  EXPECT_EQ(checkpoint(), 9u);
  EXPECT_FALSE(has(10));
  EXPECT_EQ(replicator_->Counters().prefetches_discarded, 1u);
  Answer(transport_, Page(600, 603, 700));
  Advance(absl::Milliseconds(1));
  EXPECT_FALSE(has(601));
  EXPECT_EQ(checkpoint(), 9u);
  EXPECT_THAT(replicator_->Statuses()[0].last_error, ::testing::HasSubstr("merging 591 records"));
  // The next pull starts from the committed checkpoint, and a last page
  // (reaching the peer's max seq) asks for nothing more.
  replicator_->OnNudged(1, Watermarks{});
  Advance(absl::Milliseconds(1));
  EXPECT_THAT(after_seqs(), ::testing::ElementsAre(0, 3, 6, 6, 9, 9, 600, 9));
  Answer(transport_, Page(9, 12, 12));
  Advance(absl::Milliseconds(1));
  EXPECT_EQ(transport_.requests.size(), 8u);
  EXPECT_TRUE(transport_.pending_pulls.empty());
  EXPECT_EQ(checkpoint(), 12u);
  EXPECT_TRUE(has(12));
  EXPECT_EQ(replicator_->Counters().pages_prefetched, 4u);
  // Each request tells the checkpoint it had merged (PullRequest::
  // merged_seq): the committed one, a page behind a pipelined after_seq,
  // never ahead of it (a friend's server waits for it before collecting).
  std::vector<uint64_t> merged_seqs;
  for (const PullRequest& r : transport_.requests) merged_seqs.push_back(r.merged_seq);
  EXPECT_EQ(merged_seqs, committed_at_request);
  EXPECT_THAT(merged_seqs, ::testing::ElementsAre(0, 0, 3, 6, 6, 9, 9, 9));
}

// A peer whose log holds one record from a clock an hour ahead and then a
// normal one: the far one is quarantined once, the normal one merges, the
// checkpoint passes both, and later rounds pull nothing again (held-out
// testing saw the victim re-pull that page 23 times in 4 s, counting the
// far record as refused each time). Once local time allows, the
// quarantined record is merged by the retry the engine scheduled.
class QuarantineReplicatorTest : public ReplicatorTest {
 protected:
  void SetUp() override {
    StoreOptions options;
    options.dir = dir_.Sub("q");
    options.wall_clock = &wall_;
    options.sync = false;
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
    ASSERT_THAT(store, IsOk());
    store_ = std::move(*store);
  }

  // Peer 1's log: seq 1 an hour ahead (origin kFast), seq 2 normal.
  PullResponse Answer(const PullRequest& request) const {
    PullResponse response;
    response.replica_id = 1;
    response.incarnation = kIncarnation;
    response.from_seq = request.after_seq;
    response.max_seq = 2;
    response.last_seq = 2;
    const int64_t now = wall_.NowMillis();
    const Record log[] = {
        Record{"ks", "far", Version{MakeHlc(now + 3'600'000, 0), kFast}, false, "ahead", 1},
        Record{"ks", "near", Version{MakeHlc(now - 5, 0), 1}, false, "normal", 2}};
    for (const Record& r : log) {
      if (r.seq > request.after_seq) response.records.push_back(r);
    }
    response.watermarks = Watermarks{{1, MakeHlc(now - 5, 0)}, {kFast, MakeHlc(now + 3'600'000, 0)}};
    return response;
  }
  // Answers every pending pull from the log above; the engine runs.
  void AnswerAll() {
    for (int i = 0; i < 10 && !transport_.pending_pulls.empty(); ++i) {
      const PullRequest request = transport_.requests[transport_.requests.size() -
                                                      transport_.pending_pulls.size()];
      auto done = std::move(transport_.pending_pulls.front());
      transport_.pending_pulls.erase(transport_.pending_pulls.begin());
      PullResponse response = Answer(request);
      received_ += response.records.size();
      done(std::move(response));
      Advance(absl::Milliseconds(1));
    }
  }

  static constexpr uint64_t kFast = 0xfa57;
  ManualWallClock wall_{absl::ToUnixMillis(absl::FromUnixSeconds(1'700'000'000))};
  size_t received_ = 0;
};

TEST_F(QuarantineReplicatorTest, AFarFuturePageIsPulledOnceAndItsRecordMergesWhenDue) {
  replicator_ = std::make_unique<Replicator>(
      store_.get(), &executor_, &transport_,
      ReplicatorOptions{.gossip_interval = absl::Milliseconds(100), .fanout = 1});
  replicator_->Start();
  replicator_->OnInboundLink(1, PeerInfo{.replica_id = 1, .incarnation = kIncarnation});
  // 40 rounds (4 s), every pull answered.
  for (int round = 0; round < 40; ++round) {
    Advance(absl::Milliseconds(100));
    AnswerAll();
  }
  const ReplicatorCounters counters = replicator_->Counters();
  EXPECT_GE(counters.rounds, 39u);
  EXPECT_GE(counters.pulls, 39u);
  // Each record crossed once: later pulls start after both.
  EXPECT_EQ(received_, 2u);
  EXPECT_EQ(counters.records_received, 2u);
  EXPECT_EQ(counters.quarantined, 1u);
  EXPECT_EQ((**store_->GetCheckpoint(1)).seq, 2u);
  ASSERT_THAT(replicator_->Statuses(), ::testing::SizeIs(1));
  EXPECT_EQ(replicator_->Statuses()[0].refused, 1u);
  EXPECT_EQ(replicator_->Statuses()[0].last_error, "");
  EXPECT_TRUE((*store_->Get("ks", "near")).has_value());
  EXPECT_FALSE((*store_->Get("ks", "far")).has_value());
  // Not covered by what we claim: a peer holding it will still send it.
  const Version far{MakeHlc(absl::ToUnixMillis(absl::FromUnixSeconds(1'700'000'000)) + 3'600'000, 0),
                    kFast};
  EXPECT_FALSE(store_->GetWatermarks().Covers(far));

  // An hour later (less the bound) the scheduled retry merges it.
  // (The wall clock stood still so far; the retry was scheduled for when
  // it reaches the record's time less the bound.)
  const absl::Duration wait = absl::Milliseconds(3'600'000 - 60'000);
  EXPECT_EQ(store_->NextQuarantineRetry(), wait);
  wall_.Advance(absl::ToInt64Milliseconds(wait));
  transport_.nudges.clear();
  executor_.RunUntil(executor_.Now() + wait);
  AnswerAll();
  ASSERT_TRUE((*store_->Get("ks", "far")).has_value());
  EXPECT_EQ((*store_->Get("ks", "far"))->value, "ahead");
  EXPECT_EQ(replicator_->Counters().quarantine_won, 1u);
  EXPECT_THAT(store_->Stats()->quarantined, ::testing::SizeIs(0));
  EXPECT_EQ(replicator_->Statuses()[0].refused, 1u);
}

TEST(CheckPeerTest, RefusesThisReplicaAndInvalidHellos) {
  EXPECT_THAT(CheckPeer(PeerInfo{.replica_id = 1, .incarnation = 1}, 2), IsOk());
  EXPECT_THAT(CheckPeer(PeerInfo{.replica_id = 2, .incarnation = 1}, 2),
              StatusIs(absl::StatusCode::kFailedPrecondition, "is this replica"));
  EXPECT_THAT(CheckPeer(PeerInfo{.replica_id = 0, .incarnation = 1}, 2),
              StatusIs(absl::StatusCode::kInvalidArgument, "replica id"));
}

TEST(ValidatePeerInfoTest, NamesIdsAndProtocol) {
  EXPECT_THAT(ValidatePeerInfo(PeerInfo{.replica_id = 1, .incarnation = 1,
                                        .name = std::string(kMaxReplicaNameBytes, 'n')}),
              IsOk());
  EXPECT_THAT(ValidatePeerInfo(PeerInfo{.replica_id = 1, .incarnation = 1,
                                        .name = std::string(4 << 20, 'n')}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "replica name is 4194304 bytes; the limit is 64"));
  EXPECT_THAT(ValidatePeerInfo(PeerInfo{.replica_id = 0, .incarnation = 1}),
              StatusIs(absl::StatusCode::kInvalidArgument, "replica id"));
  EXPECT_THAT(ValidatePeerInfo(PeerInfo{.replica_id = 1, .incarnation = 1, .protocol_version = 9}),
              StatusIs(absl::StatusCode::kFailedPrecondition, "protocol 9"));
}

// Answers the pending pull from peer 1 with `response`.
void Answer(RecordingTransport& transport, PullResponse response) {
  ASSERT_EQ(transport.pending_pulls.size(), 1u);
  auto done = std::move(transport.pending_pulls.front());
  transport.pending_pulls.clear();
  done(std::move(response));
}

// A page of peer 1 carrying one record at `seq` (its log ends there).
PullResponse PageOf(uint64_t incarnation, uint64_t from_seq, uint64_t seq) {
  PullResponse response;
  response.replica_id = 1;
  response.incarnation = incarnation;
  response.from_seq = from_seq;
  if (seq > from_seq) {
    response.records.push_back(
        Record{"ks", "k" + std::to_string(seq), Version{MakeHlc(1'700'000'000'000, seq), 1},
               false, "v", seq});
  }
  response.last_seq = seq;
  response.max_seq = seq;
  return response;
}

// A peer whose log started over (a new incarnation) although we held a
// checkpoint in it: its log no longer vouches for what we merged, so the
// engine reconciles with it (here the transport cannot, so the session
// fails, and says so in status).
TEST_F(ReplicatorTest, APeerWhoseLogStartedOverIsReconciledWith) {
  StartReplicator(ReplicatorOptions{.reconcile_interval = absl::ZeroDuration()});
  replicator_->OnInboundLink(1, PeerInfo{.replica_id = 1, .incarnation = kIncarnation});
  Advance(absl::Milliseconds(1));
  Answer(transport_, PageOf(kIncarnation, 0, 5));
  Advance(absl::Milliseconds(1));
  EXPECT_EQ(replicator_->Counters().reconciles, 0u);
  // Same incarnation, more of its log: no reason to reconcile.
  replicator_->OnNudged(1, Watermarks{});
  Advance(absl::Milliseconds(1));
  Answer(transport_, PageOf(kIncarnation, 5, 6));
  Advance(absl::Milliseconds(1));
  EXPECT_EQ(replicator_->Counters().reconciles, 0u);
  // A new incarnation: served from seq 0.
  replicator_->OnNudged(1, Watermarks{});
  Advance(absl::Milliseconds(1));
  Answer(transport_, PageOf(kIncarnation + 1, 0, 2));
  Advance(absl::Milliseconds(1));
  const ReplicatorCounters counters = replicator_->Counters();
  EXPECT_EQ(counters.reconciles, 1u);
  EXPECT_EQ(counters.reconciles_failed, 1u);
  const std::vector<PeerStatus> statuses = replicator_->Statuses();
  ASSERT_EQ(statuses.size(), 1u);
  EXPECT_EQ(statuses[0].reconciles, 1u);
  EXPECT_THAT(statuses[0].last_reconcile_result,
              ::testing::HasSubstr("this transport does not reconcile"));
}

// Whole-store fingerprints that differ after two caught-up pulls in a row
// start a session once the peer said it holds all we hold (the watermarks
// its pulls carry cover ours); with the interval at zero they do not. A
// peer that has not (it is still pulling our log) is not reconciled with:
// its pull brings it what a session would push.
TEST_F(ReplicatorTest, FingerprintsThatDifferWithNothingBehindStartASession) {
  int run = 0;
  for (const bool peer_holds_ours : {false, true}) {
    for (const absl::Duration interval : {absl::ZeroDuration(), absl::Hours(1)}) {
      SCOPED_TRACE(absl::StrCat(absl::FormatDuration(interval), " holds ours ", peer_holds_ours));
      TearDown();
      replicator_.reset();
      // A store of its own: a checkpoint left by the run before would be
      // "beyond the peer's log", another reason to reconcile.
      StoreOptions options;
      options.dir = dir_.Sub(absl::StrCat("run", ++run));
      absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
      ASSERT_THAT(store, IsOk());
      store_ = std::move(*store);
      ASSERT_THAT(store_->Put("ks", "ours", "v"), IsOk());
      StartReplicator(ReplicatorOptions{.reconcile_interval = interval});
      replicator_->OnInboundLink(1, PeerInfo{.replica_id = 1, .incarnation = kIncarnation});
      // What peer 1's pull requests last said it holds.
      store_->NotePeerHolds(1, peer_holds_ours ? store_->GetWatermarks() : Watermarks{});
      Advance(absl::Milliseconds(1));
      rbsr::Fingerprint other;
      other.count = 12345;
      for (uint64_t seq = 1; seq <= 2; ++seq) {
        if (seq > 1) {
          replicator_->OnNudged(1, Watermarks{});
          Advance(absl::Milliseconds(1));
        }
        PullResponse page = PageOf(kIncarnation, seq - 1, seq - 1);
        page.store_fingerprint = other;
        Answer(transport_, std::move(page));
        Advance(absl::Milliseconds(1));
      }
      EXPECT_EQ(replicator_->Counters().reconciles,
                interval > absl::ZeroDuration() && peer_holds_ours ? 1u : 0u);
    }
  }
}

}  // namespace
}  // namespace peerkv::replication
