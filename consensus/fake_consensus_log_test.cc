// consensus/fake_consensus_log_test.cc: the fake orders commits, checks
// preconditions and refuses while unreachable, as a real backend must.
#include "consensus/fake_consensus_log.h"

#include "common/status_matchers.h"
#include "gtest/gtest.h"

namespace peerkv::consensus {
namespace {

Proposal Put(std::string key, std::string value, uint64_t min_hlc = 10) {
  Proposal p;
  p.keyspace = "names";
  p.key = std::move(key);
  p.value = std::move(value);
  p.origin = 7;
  p.min_hlc = min_hlc;
  return p;
}

TEST(FakeConsensusLog, VersionsGrowInCommitOrderEvenFromAnOlderClock) {
  FakeConsensusLog log;
  auto first = log.Propose(Put("a", "1", 100), absl::Seconds(1));
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(first->applied);
  auto second = log.Propose(Put("a", "2", 5), absl::Seconds(1));
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_TRUE(second->applied);
  EXPECT_GT(second->committed.record.version, first->committed.record.version);
  EXPECT_GT(second->committed.position, first->committed.position);
  auto read = log.Read("names", "a", absl::Seconds(1));
  ASSERT_TRUE(read.ok());
  ASSERT_TRUE(read->has_value());
  EXPECT_EQ((*read)->record.value, "2");
}

TEST(FakeConsensusLog, PreconditionsAreCheckedAgainstTheLastCommit) {
  FakeConsensusLog log;
  Proposal absent = Put("bob", "phone");
  absent.precondition.kind = Precondition::Kind::kIfAbsent;
  auto won = log.Propose(absent, absl::Seconds(1));
  ASSERT_TRUE(won.ok());
  EXPECT_TRUE(won->applied);
  absent.value = "tablet";
  auto lost = log.Propose(absent, absl::Seconds(1));
  ASSERT_TRUE(lost.ok());
  EXPECT_FALSE(lost->applied);
  ASSERT_TRUE(lost->current.has_value());
  EXPECT_EQ(lost->current->record.value, "phone");

  Proposal cas = Put("bob", "pc");
  cas.precondition.kind = Precondition::Kind::kIfVersion;
  cas.precondition.version = Version{1, 1};
  auto stale = log.Propose(cas, absl::Seconds(1));
  ASSERT_TRUE(stale.ok());
  EXPECT_FALSE(stale->applied);
  cas.precondition.version = won->committed.record.version;
  auto fresh = log.Propose(cas, absl::Seconds(1));
  ASSERT_TRUE(fresh.ok());
  EXPECT_TRUE(fresh->applied);
  EXPECT_EQ(log.History().size(), 2u);
}

TEST(FakeConsensusLog, UnreachableRefusesAndReadAfterResumes) {
  FakeConsensusLog log("fake etcd");
  ASSERT_TRUE(log.Propose(Put("a", "1"), absl::Seconds(1)).ok());
  log.SetAvailable(false);
  EXPECT_THAT(log.Propose(Put("b", "2"), absl::Seconds(1)).status(),
              StatusIs(absl::StatusCode::kUnavailable, "fake etcd"));
  EXPECT_FALSE(log.Reachable());
  log.SetAvailable(true);
  auto after = log.ReadAfter(0, 10, absl::ZeroDuration());
  ASSERT_TRUE(after.ok());
  ASSERT_EQ(after->size(), 1u);
  EXPECT_EQ((*after)[0].record.key, "a");
  EXPECT_TRUE(log.Reachable());
}

TEST(FakeConsensusLog, RefusesAMalformedProposal) {
  FakeConsensusLog log;
  Proposal p = Put("", "x");
  EXPECT_THAT(log.Propose(p, absl::Seconds(1)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "key"));
  p = Put("k", "x");
  p.origin = 0;
  EXPECT_THAT(log.Propose(p, absl::Seconds(1)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "origin"));
}

TEST(FakeConsensusLogFaults, UnavailabilityWindowsFollowTheCallersClock) {
  FakeConsensusLog log("fake etcd");
  log.AddUnavailableWindow(10, 20);
  log.AddUnavailableWindow(30, 30);  // empty: ignored
  ASSERT_TRUE(log.Propose(Put("a", "1"), absl::Seconds(1)).ok());
  log.AdvanceTo(10);
  EXPECT_THAT(log.Propose(Put("a", "2"), absl::Seconds(1)).status(),
              StatusIs(absl::StatusCode::kUnavailable, "fake etcd"));
  EXPECT_THAT(log.Read("names", "a", absl::Seconds(1)).status(),
              StatusIs(absl::StatusCode::kUnavailable));
  // Unavailable means at once, not after the timeout.
  EXPECT_THAT(log.ReadAfter(0, 10, absl::Hours(1)).status(),
              StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_FALSE(log.Reachable());
  log.AdvanceTo(5);  // time does not go back
  EXPECT_EQ(log.Now(), 10u);
  log.AdvanceTo(20);
  auto read = log.Read("names", "a", absl::Seconds(1));
  ASSERT_TRUE(read.ok() && read->has_value());
  EXPECT_EQ((*read)->record.value, "1");
  EXPECT_TRUE(log.Reachable());
  log.AdvanceTo(30);
  EXPECT_TRUE(log.Propose(Put("a", "3"), absl::Seconds(1)).ok());
}

TEST(FakeConsensusLogFaults, ASlowCommitIsInFlightUntilTheClockReachesIt) {
  FakeConsensusLog log;
  log.SetCommitDelay(5);
  Proposal first = Put("bob", "phone");
  first.precondition.kind = Precondition::Kind::kIfAbsent;
  EXPECT_THAT(log.Propose(first, absl::Seconds(1)).status(),
              StatusIs(absl::StatusCode::kDeadlineExceeded, "in flight"));
  log.AdvanceTo(2);
  Proposal second = Put("bob", "tablet");
  second.precondition.kind = Precondition::Kind::kIfAbsent;
  EXPECT_THAT(log.Propose(second, absl::Seconds(1)).status(),
              StatusIs(absl::StatusCode::kDeadlineExceeded, "in flight"));
  EXPECT_EQ(log.InFlight(), 2u);
  // Not visible yet.
  auto read = log.Read("names", "bob", absl::Seconds(1));
  ASSERT_TRUE(read.ok());
  EXPECT_FALSE(read->has_value());
  auto nothing = log.ReadAfter(0, 10, absl::ZeroDuration());
  ASSERT_TRUE(nothing.ok());
  EXPECT_TRUE(nothing->empty());

  std::vector<ProposeResult> applied = log.AdvanceTo(5);
  ASSERT_EQ(applied.size(), 1u);
  EXPECT_TRUE(applied[0].applied);
  EXPECT_EQ(log.InFlight(), 1u);
  // The second one is checked when it commits: the name is taken by then.
  applied = log.AdvanceTo(7);
  ASSERT_EQ(applied.size(), 1u);
  EXPECT_FALSE(applied[0].applied);
  ASSERT_TRUE(applied[0].current.has_value());
  EXPECT_EQ(applied[0].current->record.value, "phone");
  auto after = log.ReadAfter(0, 10, absl::ZeroDuration());
  ASSERT_TRUE(after.ok());
  ASSERT_EQ(after->size(), 1u);
  EXPECT_EQ((*after)[0].record.value, "phone");

  // Explicit stepping and losing in-flight proposals.
  ASSERT_FALSE(log.Propose(Put("x", "1"), absl::Seconds(1)).ok());
  ASSERT_FALSE(log.Propose(Put("y", "1"), absl::Seconds(1)).ok());
  std::optional<ProposeResult> next = log.CommitNextInFlight();
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(next->committed.record.key, "x");
  EXPECT_EQ(log.DropInFlight(), 1u);
  EXPECT_FALSE(log.CommitNextInFlight().has_value());
  EXPECT_TRUE(log.AdvanceTo(100).empty());
  EXPECT_EQ(log.History().size(), 2u);

  // Delay 0 again: commits inside Propose.
  log.SetCommitDelay(0);
  auto now = log.Propose(Put("z", "1"), absl::Seconds(1));
  ASSERT_TRUE(now.ok()) << now.status();
  EXPECT_TRUE(now->applied);
}

}  // namespace
}  // namespace peerkv::consensus
