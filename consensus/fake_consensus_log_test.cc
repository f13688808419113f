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

}  // namespace
}  // namespace peerkv::consensus
