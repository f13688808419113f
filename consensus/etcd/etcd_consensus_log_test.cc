// consensus/etcd/etcd_consensus_log_test.cc: the etcd backend against a real
// etcd on loopback (testing/etcd_server.h): commits, preconditions, CAS
// races, ReadAfter order and waiting, compaction, etcd killed and restarted
// under the same object, a server that answers garbage, and bad URLs.
#include "consensus/etcd/etcd_consensus_log.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/macros.h"
#include "common/status_matchers.h"
#include "consensus/etcd/http_client.h"
#include "gtest/gtest.h"
#include "testing/etcd_server.h"

namespace peerkv::consensus {
namespace {

using ::peerkv::testing::EtcdServer;

constexpr absl::Duration kTimeout = absl::Seconds(5);

Proposal Put(std::string key, std::optional<std::string> value, uint64_t min_hlc = 10) {
  Proposal p;
  p.keyspace = "names";
  p.key = std::move(key);
  p.value = std::move(value);
  p.origin = 7;
  p.min_hlc = min_hlc;
  return p;
}

class EtcdConsensusLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = EtcdServer::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    etcd_ = *std::move(server);
    auto log = EtcdConsensusLog::Create({etcd_->client_url()});
    ASSERT_TRUE(log.ok()) << log.status();
    log_ = *std::move(log);
  }

  // Another log object of the same etcd (as another replica holds one).
  std::unique_ptr<EtcdConsensusLog> NewLog() {
    auto log = EtcdConsensusLog::Create({etcd_->client_url()});
    EXPECT_TRUE(log.ok()) << log.status();
    return log.ok() ? *std::move(log) : nullptr;
  }

  // Adds 1 to the decimal counter under `key` `increments` times through
  // `log`, each a read and a compare-and-set on the version read (if-absent
  // for the first), again while the compare fails (bounded). The first
  // error of the log, if any.
  static absl::Status IncrementByCas(ConsensusLog& log, const std::string& key, uint64_t origin,
                                     int increments) {
    for (int done = 0, attempts = 0; done < increments; ++attempts) {
      if (attempts == 10000) return absl::DeadlineExceededError("10000 attempts");
      auto current = log.Read("names", key, kTimeout);
      if (!current.ok()) return current.status();
      Proposal p = Put(key, "");
      p.origin = origin;
      int value = 0;
      if (current->has_value()) {
        value = std::stoi((*current)->record.value);
        p.precondition.kind = Precondition::Kind::kIfVersion;
        p.precondition.version = (*current)->record.version;
      } else {
        p.precondition.kind = Precondition::Kind::kIfAbsent;
      }
      p.value = std::to_string(value + 1);
      auto r = log.Propose(p, kTimeout);
      if (!r.ok()) return r.status();
      if (r->applied) ++done;
    }
    return absl::OkStatus();
  }

  ProposeResult MustPropose(const Proposal& p) {
    auto r = log_->Propose(p, kTimeout);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : ProposeResult{};
  }

  std::unique_ptr<EtcdServer> etcd_;
  std::unique_ptr<EtcdConsensusLog> log_;
};

// The signature Proposal::sign makes for the version the commit assigns
// travels in the log entry: another log object (another replica) reads
// the record with it, by Read and by ReadAfter. A lost race signs again for
// the new version; a refusal commits nothing.
TEST_F(EtcdConsensusLogTest, TheSignatureOfTheCommittedVersionTravelsInTheEntry) {
  auto signature_of = [](const Record& r) {
    return absl::StrCat("signed:", r.keyspace, "/", r.key, "@", r.version.ToString(), ":",
                        r.deleted ? "deleted" : r.value);
  };
  Proposal p = Put("signed", "v1");
  std::vector<Version> signed_versions;
  p.sign = [&](const Record& r) -> absl::StatusOr<std::string> {
    EXPECT_TRUE(r.signature.empty());
    signed_versions.push_back(r.version);
    return signature_of(r);
  };
  ProposeResult first = MustPropose(p);
  ASSERT_TRUE(first.applied);
  EXPECT_EQ(first.committed.record.signature, signature_of(first.committed.record));
  ASSERT_EQ(signed_versions.size(), 1u);
  EXPECT_EQ(signed_versions[0], first.committed.record.version);

  std::unique_ptr<EtcdConsensusLog> other = NewLog();
  ASSERT_NE(other, nullptr);
  auto read = other->Read("names", "signed", kTimeout);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_TRUE(read->has_value());
  EXPECT_EQ((*read)->record, first.committed.record);
  auto after = other->ReadAfter(0, 100, kTimeout);
  ASSERT_TRUE(after.ok()) << after.status();
  ASSERT_EQ(after->size(), 1u);
  EXPECT_EQ((*after)[0].record, first.committed.record);

  // `other` commits a write the first object has not seen: the first
  // object's guess loses the race, and the retry is signed for its version.
  ProposeResult second = other->Propose(Put("signed", "v2"), kTimeout).value();
  ASSERT_TRUE(second.applied);
  EXPECT_TRUE(second.committed.record.signature.empty());  // no sign: unsigned, format 1
  signed_versions.clear();
  p.value = "v3";
  ProposeResult third = MustPropose(p);
  ASSERT_TRUE(third.applied);
  ASSERT_EQ(signed_versions.size(), 2u);
  EXPECT_EQ(signed_versions.back(), third.committed.record.version);
  EXPECT_GT(third.committed.record.version, second.committed.record.version);
  read = other->Read("names", "signed", kTimeout);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_TRUE(read->has_value());
  EXPECT_EQ((*read)->record.signature, signature_of(third.committed.record));

  // A tombstone is signed too.
  p.value.reset();
  ProposeResult deleted = MustPropose(p);
  ASSERT_TRUE(deleted.applied);
  read = other->Read("names", "signed", kTimeout);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_TRUE(read->has_value());
  EXPECT_TRUE((*read)->record.deleted);
  EXPECT_EQ((*read)->record.signature, signature_of(deleted.committed.record));

  // A refusal is Propose's answer, and nothing is written.
  Proposal refused = Put("refused", "never");
  refused.sign = [](const Record&) -> absl::StatusOr<std::string> {
    return absl::PermissionDeniedError("not a writer");
  };
  auto r = log_->Propose(refused, kTimeout);
  EXPECT_EQ(r.status(), absl::PermissionDeniedError("not a writer"));
  read = other->Read("names", "refused", kTimeout);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_FALSE(read->has_value());
  // A signature over kMaxSignatureBytes is refused naming the limit.
  refused.sign = [](const Record&) -> absl::StatusOr<std::string> {
    return std::string(kMaxSignatureBytes + 1, 's');
  };
  r = log_->Propose(refused, kTimeout);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("512"));
}

TEST_F(EtcdConsensusLogTest, CommitsAndReadsBackWithGrowingVersions) {
  EXPECT_EQ(log_->Describe(), "etcd at " + etcd_->client_url());
  auto none = log_->Read("names", "a", kTimeout);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());

  const std::string binary("k\0/\xff", 4);
  ProposeResult first = MustPropose(Put(binary, std::string("v\0\n", 3), 100));
  ASSERT_TRUE(first.applied);
  EXPECT_EQ(first.committed.record.version, (Version{101, 7}));
  // An older clock still gets a later version: it follows the last commit.
  ProposeResult second = MustPropose(Put(binary, "2", 5));
  ASSERT_TRUE(second.applied);
  EXPECT_EQ(second.committed.record.version, (Version{102, 7}));
  EXPECT_GT(second.committed.position, first.committed.position);

  auto read = log_->Read("names", binary, kTimeout);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_TRUE(read->has_value());
  EXPECT_EQ((*read)->record, second.committed.record);
  EXPECT_EQ((*read)->position, second.committed.position);
  // Same key in another keyspace is another register (the length framing).
  auto other = log_->Read("names2", binary, kTimeout);
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(other->has_value());

  ProposeResult del = MustPropose(Put(binary, std::nullopt));
  ASSERT_TRUE(del.applied);
  read = log_->Read("names", binary, kTimeout);
  ASSERT_TRUE(read.ok() && read->has_value());
  EXPECT_TRUE((*read)->record.deleted);
  EXPECT_EQ((*read)->record.value, "");
  EXPECT_EQ((*read)->record.version, del.committed.record.version);
  EXPECT_TRUE(log_->Reachable());
}

TEST_F(EtcdConsensusLogTest, PreconditionsAreCheckedAgainstTheLastCommit) {
  Proposal absent = Put("bob", "phone");
  absent.precondition.kind = Precondition::Kind::kIfAbsent;
  ProposeResult won = MustPropose(absent);
  EXPECT_TRUE(won.applied);
  absent.value = "tablet";
  ProposeResult lost = MustPropose(absent);
  EXPECT_FALSE(lost.applied);
  ASSERT_TRUE(lost.current.has_value());
  EXPECT_EQ(lost.current->record.value, "phone");
  EXPECT_EQ(lost.current->record.version, won.committed.record.version);

  Proposal cas = Put("bob", "pc");
  cas.precondition.kind = Precondition::Kind::kIfVersion;
  cas.precondition.version = Version{1, 1};
  ProposeResult stale = MustPropose(cas);
  EXPECT_FALSE(stale.applied);
  ASSERT_TRUE(stale.current.has_value());
  EXPECT_EQ(stale.current->record.value, "phone");
  cas.precondition.version = won.committed.record.version;
  ProposeResult fresh = MustPropose(cas);
  EXPECT_TRUE(fresh.applied);
  // The same CAS again is stale now.
  EXPECT_FALSE(MustPropose(cas).applied);

  // If-version on a key never written: fails with no current.
  Proposal nothing = Put("nobody", "x");
  nothing.precondition.kind = Precondition::Kind::kIfVersion;
  nothing.precondition.version = Version{5, 5};
  ProposeResult no = MustPropose(nothing);
  EXPECT_FALSE(no.applied);
  EXPECT_FALSE(no.current.has_value());

  // A tombstone counts as absent.
  Proposal del = Put("bob", std::nullopt);
  del.precondition.kind = Precondition::Kind::kIfVersion;
  del.precondition.version = fresh.committed.record.version;
  ASSERT_TRUE(MustPropose(del).applied);
  absent.value = "watch";
  ProposeResult again = MustPropose(absent);
  EXPECT_TRUE(again.applied);
  EXPECT_GT(again.committed.record.version, fresh.committed.record.version);
}

// Each log object remembers the last state it saw of a key to skip a read
// before its txn; another writer makes that memory stale. The txn's compare
// must catch it either way.
TEST_F(EtcdConsensusLogTest, AStaleMemoryOfTheKeyNeverDecidesAnOutcome) {
  std::unique_ptr<EtcdConsensusLog> other = NewLog();
  ASSERT_NE(other, nullptr);
  ProposeResult mine = MustPropose(Put("k", "mine"));
  ASSERT_TRUE(mine.applied);
  Proposal p = Put("k", "theirs");
  p.origin = 8;
  auto theirs = other->Propose(p, kTimeout);
  ASSERT_TRUE(theirs.ok() && theirs->applied);

  // Holds against the memory (mine), not against etcd (theirs): refused,
  // with theirs as current.
  Proposal stale = Put("k", "stale");
  stale.precondition.kind = Precondition::Kind::kIfVersion;
  stale.precondition.version = mine.committed.record.version;
  ProposeResult refused = MustPropose(stale);
  EXPECT_FALSE(refused.applied);
  ASSERT_TRUE(refused.current.has_value());
  EXPECT_EQ(refused.current->record.value, "theirs");

  // Fails against the memory, holds against etcd: applied.
  (void)other->Propose(p, kTimeout);  // theirs again, newer
  auto now = other->Read("names", "k", kTimeout);
  ASSERT_TRUE(now.ok() && now->has_value());
  // Make this object's memory stale again first.
  Proposal mine2 = Put("k", "mine2");
  ProposeResult m2 = MustPropose(mine2);
  ASSERT_TRUE(m2.applied);
  p.value = "theirs3";
  auto theirs3 = other->Propose(p, kTimeout);
  ASSERT_TRUE(theirs3.ok() && theirs3->applied);
  Proposal fresh = Put("k", "fresh");
  fresh.precondition.kind = Precondition::Kind::kIfVersion;
  fresh.precondition.version = theirs3->committed.record.version;
  ProposeResult applied = MustPropose(fresh);
  EXPECT_TRUE(applied.applied);
  EXPECT_GT(applied.committed.record.version, theirs3->committed.record.version);

  // Unconditional over a stale memory: applied, after the other's write.
  p.value = "theirs4";
  auto theirs4 = other->Propose(p, kTimeout);
  ASSERT_TRUE(theirs4.ok() && theirs4->applied);
  ProposeResult last = MustPropose(Put("k", "last", 1));
  ASSERT_TRUE(last.applied);
  EXPECT_GT(last.committed.record.version, theirs4->committed.record.version);
  EXPECT_GT(last.committed.position, theirs4->committed.position);

  // If-absent on a key this object never saw but etcd has: refused.
  p.key = "only-theirs";
  ASSERT_TRUE(other->Propose(p, kTimeout).ok());
  Proposal absent = Put("only-theirs", "x");
  absent.precondition.kind = Precondition::Kind::kIfAbsent;
  ProposeResult taken = MustPropose(absent);
  EXPECT_FALSE(taken.applied);
  ASSERT_TRUE(taken.current.has_value());
  EXPECT_EQ(taken.current->record.value, "theirs4");
}

// Concurrent compare-and-set increments through separate log objects (as
// separate replicas would): every applied increment is counted exactly once.
TEST_F(EtcdConsensusLogTest, ConcurrentCompareAndSetIncrementsLoseNothing) {
  constexpr int kClients = 4;
  constexpr int kIncrements = 25;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      std::unique_ptr<EtcdConsensusLog> log = NewLog();
      if (log == nullptr ||
          !IncrementByCas(*log, "counter", static_cast<uint64_t>(c + 1), kIncrements).ok()) {
        ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  auto read = log_->Read("names", "counter", kTimeout);
  ASSERT_TRUE(read.ok() && read->has_value());
  EXPECT_EQ((*read)->record.value, std::to_string(kClients * kIncrements));
}

// One log object shared by many threads, as one replica holds it: their
// proposals go to etcd together in shared txns (one revision for several
// commits). Counter increments by compare-and-set on one key, mixed into
// the same txns as writes of distinct keys (so txns fail on one op's
// compare and the others go again), lose nothing and commit nothing twice;
// and ReadAfter, in small pages, never cuts a shared revision in two.
TEST_F(EtcdConsensusLogTest, SharedTxnsOfOneLogLoseNothingAndReadAfterKeepsRevisionsWhole) {
  constexpr int kCounters = 6;
  constexpr int kIncrements = 15;
  constexpr int kWriters = 10;
  constexpr int kWrites = 20;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  absl::Mutex mu;
  std::map<std::string, ProposeResult> committed;
  for (int c = 0; c < kCounters; ++c) {
    threads.emplace_back([&, c] {
      if (!IncrementByCas(*log_, "counter", static_cast<uint64_t>(c + 1), kIncrements).ok()) {
        ++failures;
      }
    });
  }
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      for (int i = 0; i < kWrites; ++i) {
        const std::string key = absl::StrCat("w", w, "-", i);
        auto r = log_->Propose(Put(key, "x"), kTimeout);
        if (!r.ok() || !r->applied) {
          ++failures;
          return;
        }
        absl::MutexLock lock(&mu);
        committed[key] = *r;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  auto read = log_->Read("names", "counter", kTimeout);
  ASSERT_TRUE(read.ok() && read->has_value());
  EXPECT_EQ((*read)->record.value, std::to_string(kCounters * kIncrements));
  ASSERT_EQ(committed.size(), static_cast<size_t>(kWriters * kWrites));
  std::map<uint64_t, int> per_position;
  for (const auto& [key, r] : committed) ++per_position[r.committed.position];
  int shared = 0;
  for (const auto& [position, n] : per_position) shared = std::max(shared, n);
  EXPECT_GT(shared, 1) << "no two concurrent proposals shared a txn";

  // Pages of 3, up to the last commit: each ends with the whole of its
  // last revision.
  uint64_t last = 0;
  for (const auto& [key, r] : committed) last = std::max(last, r.committed.position);
  last = std::max(last, (*read)->position);
  std::map<std::string, Committed> folded;
  uint64_t at = 0;
  for (int page = 0; page < 1000 && at < last; ++page) {
    auto got = log_->ReadAfter(at, 3, kTimeout);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_FALSE(got->empty()) << "nothing after " << at << " of " << last;
    for (const Committed& c : *got) {
      EXPECT_GT(c.position, at);
      folded[c.record.key] = c;
    }
    at = got->back().position;
  }
  for (const auto& [key, r] : committed) {
    ASSERT_EQ(folded.count(key), 1u) << key << " at " << r.committed.position;
    EXPECT_EQ(folded[key].position, r.committed.position) << key;
    EXPECT_EQ(folded[key].record.version, r.committed.record.version) << key;
  }
  EXPECT_EQ(folded["counter"].record.value, std::to_string(kCounters * kIncrements));
}

TEST_F(EtcdConsensusLogTest, ReadAfterGivesTheLatestWritesInPositionOrder) {
  ProposeResult a1 = MustPropose(Put("a", "1"));
  ProposeResult b = MustPropose(Put("b", "1"));
  ProposeResult c = MustPropose(Put("c", "1"));
  ProposeResult a2 = MustPropose(Put("a", "2"));
  auto all = log_->ReadAfter(0, 100, kTimeout);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].record.key, "b");
  EXPECT_EQ((*all)[0].position, b.committed.position);
  EXPECT_EQ((*all)[1].record.key, "c");
  EXPECT_EQ((*all)[2].record.key, "a");
  EXPECT_EQ((*all)[2].record.value, "2");
  EXPECT_EQ((*all)[2].position, a2.committed.position);
  EXPECT_GT(a2.committed.position, a1.committed.position);

  // Read in pages of 2: every page in position order, after the last one,
  // and together they end with every key's last write.
  std::map<std::string, Committed> folded;
  uint64_t at = 0;
  for (int page = 0; page < 10; ++page) {
    auto got = log_->ReadAfter(at, 2, absl::Milliseconds(300));
    ASSERT_TRUE(got.ok()) << got.status();
    if (got->empty()) break;
    ASSERT_LE(got->size(), 2u);
    for (const Committed& w : *got) {
      EXPECT_GT(w.position, at);
      at = w.position;
      folded[w.record.key] = w;
    }
  }
  ASSERT_EQ(folded.size(), 3u);
  EXPECT_EQ(folded["a"].record.value, "2");
  EXPECT_EQ(folded["a"].position, a2.committed.position);
  EXPECT_EQ(folded["b"].position, b.committed.position);
  EXPECT_EQ(folded["c"].position, c.committed.position);
  EXPECT_EQ(at, a2.committed.position);

  // Nothing after the last: waits the timeout, returns empty.
  const absl::Time start = absl::Now();
  auto empty = log_->ReadAfter(a2.committed.position, 100, absl::Milliseconds(300));
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE(empty->empty());
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));

  // A waiting ReadAfter wakes for a write made while it waits.
  std::optional<absl::StatusOr<std::vector<Committed>>> woken;
  std::thread waiter([&] { woken = log_->ReadAfter(a2.committed.position, 100, kTimeout); });
  ProposeResult d = MustPropose(Put("d", "1"));
  waiter.join();
  ASSERT_TRUE(woken.has_value() && woken->ok()) << woken->status();
  ASSERT_EQ((*woken)->size(), 1u);
  EXPECT_EQ((**woken)[0].position, d.committed.position);
}

TEST_F(EtcdConsensusLogTest, ReadAfterSurvivesCompaction) {
  ProposeResult a1 = MustPropose(Put("a", "1"));
  ProposeResult a2 = MustPropose(Put("a", "2"));
  ProposeResult b = MustPropose(Put("b", "1"));
  etcd::HttpClient http(*etcd::ParseHttpUrl(etcd_->client_url()));
  auto compacted = http.Post(
      "/v3/kv/compaction", absl::StrCat("{\"revision\":\"", b.committed.position, "\"}"),
      absl::Now() + kTimeout, false);
  ASSERT_TRUE(compacted.ok()) << compacted.status();
  ASSERT_EQ(compacted->status, 200) << compacted->body;
  auto all = log_->ReadAfter(a1.committed.position - 1, 100, kTimeout);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].position, a2.committed.position);
  EXPECT_EQ((*all)[1].position, b.committed.position);
  // Waiting after a compaction still ends in time with nothing new.
  auto none = log_->ReadAfter(b.committed.position, 10, absl::Milliseconds(300));
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->empty());
}

TEST_F(EtcdConsensusLogTest, KilledEtcdIsUnavailableWithinTwoSecondsAndRestartHeals) {
  ProposeResult first = MustPropose(Put("a", "1"));
  ASSERT_TRUE(first.applied);
  // A ReadAfter waiting on a watch when etcd dies ends at once, not at its
  // timeout. It may or may not be on the watch yet when the kill lands;
  // either way it ends Unavailable.
  std::optional<absl::StatusOr<std::vector<Committed>>> waited;
  absl::Duration waited_for;
  std::thread waiter([&] {
    const absl::Time begin = absl::Now();
    waited = log_->ReadAfter(first.committed.position, 10, absl::Seconds(30));
    waited_for = absl::Now() - begin;
  });
  etcd_->Kill9();
  waiter.join();
  ASSERT_TRUE(waited.has_value());
  EXPECT_THAT(waited->status(), StatusIs(absl::StatusCode::kUnavailable, etcd_->client_url()));
  EXPECT_LT(waited_for, absl::Seconds(2));
  absl::Time start = absl::Now();
  auto refused = log_->Propose(Put("a", "2"), absl::Seconds(1));
  EXPECT_THAT(refused.status(), StatusIs(absl::StatusCode::kUnavailable, etcd_->client_url()));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_FALSE(log_->Reachable());
  EXPECT_THAT(log_->Read("names", "a", absl::Seconds(1)).status(),
              StatusIs(absl::StatusCode::kUnavailable, etcd_->client_url()));
  EXPECT_THAT(log_->ReadAfter(0, 10, absl::Seconds(1)).status(),
              StatusIs(absl::StatusCode::kUnavailable, etcd_->client_url()));

  ASSERT_TRUE(etcd_->Restart().ok()) << etcd_->Log();
  ProposeResult after = MustPropose(Put("a", "3"));
  EXPECT_TRUE(after.applied);
  EXPECT_TRUE(log_->Reachable());
  auto read = log_->Read("names", "a", kTimeout);
  ASSERT_TRUE(read.ok() && read->has_value());
  EXPECT_EQ((*read)->record.value, "3");
}

TEST_F(EtcdConsensusLogTest, TheLogIdentityOutlivesARestartButNotARecreation) {
  // Long enough for the marker txn and a watch on a loaded machine (100 ms
  // failed there at load 30); with nothing new a ReadAfter waits it out.
  constexpr absl::Duration kFollowWait = absl::Milliseconds(700);
  // Read the marker on every ReadAfter (the default trusts it for 1 s).
  auto created = EtcdConsensusLog::Create(
      {.url = etcd_->client_url(), .identity_recheck = absl::ZeroDuration()});
  ASSERT_TRUE(created.ok());
  log_ = *std::move(created);
  EXPECT_EQ(log_->LogIdentity(), "");  // nothing asked yet
  ASSERT_TRUE(log_->ReadAfter(0, 10, kFollowWait).ok());
  const std::string first = log_->LogIdentity();
  EXPECT_THAT(first, ::testing::StartsWith("etcd log "));
  // A second follower of the same etcd (another replica) sees the same log.
  std::unique_ptr<EtcdConsensusLog> other = NewLog();
  ASSERT_NE(other, nullptr);
  ASSERT_TRUE(other->ReadAfter(0, 10, kFollowWait).ok());
  EXPECT_EQ(other->LogIdentity(), first);
  // The marker key is not a record: ReadAfter returns none.
  auto none = log_->ReadAfter(0, 10, absl::Milliseconds(100));
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());

  ASSERT_TRUE(etcd_->Restart().ok()) << etcd_->Log();
  (void)log_->ReadAfter(0, 10, absl::Milliseconds(100));  // may meet the restart
  ASSERT_TRUE(log_->ReadAfter(0, 10, kFollowWait).ok());
  EXPECT_EQ(log_->LogIdentity(), first);

  // Recreated from nothing, same names and ports: a different log.
  ASSERT_TRUE(etcd_->RecreateEmpty().ok()) << etcd_->Log();
  (void)log_->ReadAfter(0, 10, absl::Milliseconds(100));
  ASSERT_TRUE(log_->ReadAfter(0, 10, kFollowWait).ok());
  EXPECT_THAT(log_->LogIdentity(), ::testing::StartsWith("etcd log "));
  EXPECT_NE(log_->LogIdentity(), first);
}

// A hung etcd (connections accepted, nothing answered): a read is
// Unavailable within its timeout; a write sent into it may commit once etcd
// runs again, so it is never called failed: after the timeout the log
// resends it to learn its outcome, for up to the outcome timeout, and then
// says the outcome is unknown (DeadlineExceeded).
TEST_F(EtcdConsensusLogTest, HungEtcdReadIsUnavailableAndWriteOutcomeUnknown) {
  EtcdOptions options{etcd_->client_url()};
  options.outcome_timeout = absl::Seconds(1);
  auto log = EtcdConsensusLog::Create(options);
  ASSERT_TRUE(log.ok()) << log.status();
  ASSERT_TRUE((*log)->Propose(Put("a", "1"), kTimeout).ok());
  etcd_->Pause();
  absl::Time start = absl::Now();
  auto read = (*log)->Read("names", "a", absl::Seconds(1));
  absl::Duration took = absl::Now() - start;
  EXPECT_THAT(read.status(), StatusIs(absl::StatusCode::kUnavailable, etcd_->client_url()));
  EXPECT_LT(took, absl::Seconds(2));
  start = absl::Now();
  auto unknown = (*log)->Propose(Put("a", "2"), absl::Seconds(1));
  took = absl::Now() - start;
  etcd_->Resume();
  EXPECT_THAT(unknown.status(), StatusIs(absl::StatusCode::kDeadlineExceeded,
                                         "the outcome of the write is unknown"));
  EXPECT_THAT(unknown.status(), StatusIs(absl::StatusCode::kDeadlineExceeded,
                                         etcd_->client_url()));
  EXPECT_GE(took, absl::Milliseconds(1900));
  EXPECT_LT(took, absl::Seconds(3));
  // Resumed: the same object works again (the hung connections were dropped).
  auto again = (*log)->Read("names", "a", kTimeout);
  ASSERT_TRUE(again.ok()) << again.status();
}

// etcd stalls past a write's timeout and then answers: the write is
// answered with its outcome (committed), not as failed.
TEST_F(EtcdConsensusLogTest, AStallPastTheTimeoutIsAnsweredWithTheOutcome) {
  ASSERT_TRUE(MustPropose(Put("a", "1")).applied);
  etcd_->Pause();
  absl::StatusOr<ProposeResult> result;
  std::thread writer([&] { result = log_->Propose(Put("a", "2"), absl::Seconds(1)); });
  // The stall (the fault itself, not a wait for an event).
  absl::SleepFor(absl::Milliseconds(1500));
  etcd_->Resume();
  writer.join();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->applied);
  auto read = log_->Read("names", "a", kTimeout);
  ASSERT_TRUE(read.ok() && read->has_value()) << read.status();
  EXPECT_EQ((*read)->record.value, "2");
  EXPECT_EQ((*read)->record.version, result->committed.record.version);
  EXPECT_EQ((*read)->position, result->committed.position);
}

// A log whose proposal txns' answers are lost (EtcdOptions::lose_txn_answer)
// while `lose` is positive, one per txn; `before_loss` runs first (another
// replica's write landing before the outcome is learned).
std::unique_ptr<EtcdConsensusLog> LosingLog(const std::string& url, std::atomic<int>& lose,
                                            std::function<void()> before_loss = nullptr) {
  EtcdOptions options{url};
  options.lose_txn_answer = [&lose, before_loss] {
    if (lose.load() <= 0) return false;
    --lose;
    if (before_loss) before_loss();
    return true;
  };
  auto log = EtcdConsensusLog::Create(options);
  EXPECT_TRUE(log.ok()) << log.status();
  return log.ok() ? *std::move(log) : nullptr;
}

// The answer of a txn that committed is lost: Propose still reports the
// commit (learned by resending it, which commits nothing more).
TEST_F(EtcdConsensusLogTest, ALostAnswerOfACommittedWriteIsLearned) {
  std::atomic<int> lose{1};
  auto log = LosingLog(etcd_->client_url(), lose);
  ASSERT_NE(log, nullptr);
  Proposal first = Put("a", "1");
  first.precondition.kind = Precondition::Kind::kIfAbsent;
  auto result = log->Propose(first, kTimeout);
  EXPECT_EQ(lose.load(), 0);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_TRUE(result->applied);
  auto read = log_->Read("names", "a", kTimeout);
  ASSERT_TRUE(read.ok() && read->has_value()) << read.status();
  EXPECT_EQ((*read)->record.version, result->committed.record.version);
  EXPECT_EQ((*read)->position, result->committed.position);
  // The same for a compare-and-set on that version.
  lose = 1;
  Proposal second = Put("a", "2");
  second.precondition.kind = Precondition::Kind::kIfVersion;
  second.precondition.version = result->committed.record.version;
  auto cas = log->Propose(second, kTimeout);
  ASSERT_TRUE(cas.ok()) << cas.status();
  EXPECT_TRUE(cas->applied);
  read = log_->Read("names", "a", kTimeout);
  ASSERT_TRUE(read.ok() && read->has_value()) << read.status();
  EXPECT_EQ((*read)->record.value, "2");
  EXPECT_EQ((*read)->position, cas->committed.position);
}

// The answer of a committed write is lost and another write replaces it
// before the outcome is learned: the write still committed (the first
// write after the state it compared carries its token), and says so.
TEST_F(EtcdConsensusLogTest, ALostAnswerOfAWriteReplacedSinceIsStillCommitted) {
  auto other = NewLog();
  ASSERT_NE(other, nullptr);
  std::atomic<int> lose{0};
  absl::Status replaced;
  auto log = LosingLog(etcd_->client_url(), lose, [&] {
    auto current = other->Read("names", "a", kTimeout);
    if (!current.ok() || !current->has_value()) {
      replaced = absl::InternalError("the lost write is not there to replace");
      return;
    }
    Proposal over = Put("a", "other");
    over.precondition.kind = Precondition::Kind::kIfVersion;
    over.precondition.version = (*current)->record.version;
    auto r = other->Propose(over, kTimeout);
    replaced = r.ok() ? (r->applied ? absl::OkStatus() : absl::InternalError("not applied"))
                      : r.status();
  });
  ASSERT_NE(log, nullptr);
  ASSERT_TRUE(log->Propose(Put("a", "0"), kTimeout).ok());  // "a" exists: a MOD compare
  lose = 1;
  auto result = log->Propose(Put("a", "mine"), kTimeout);
  ASSERT_TRUE(replaced.ok()) << replaced;
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->applied);
  auto read = log_->Read("names", "a", kTimeout);
  ASSERT_TRUE(read.ok() && read->has_value()) << read.status();
  EXPECT_EQ((*read)->record.value, "other");
  EXPECT_GT((*read)->position, result->committed.position);
  // A key created by the lost write (an absent compare), then replaced.
  lose = 1;
  result = log->Propose(Put("b", "mine"), kTimeout);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->applied);
}

// The answer of a txn that did not commit (its compare failed: another
// replica wrote first) is lost: Unavailable, saying it did not commit, and
// the other replica's write stands.
TEST_F(EtcdConsensusLogTest, ALostAnswerOfAWriteThatDidNotCommitIsUnavailable) {
  std::atomic<int> lose{0};
  auto log = LosingLog(etcd_->client_url(), lose);
  ASSERT_NE(log, nullptr);
  ASSERT_TRUE(log->Propose(Put("a", "0"), kTimeout).ok());
  auto other = NewLog();
  ASSERT_NE(other, nullptr);
  Proposal over = Put("a", "other");
  auto r = other->Propose(over, kTimeout);
  ASSERT_TRUE(r.ok() && r->applied) << r.status();
  // `log` remembers "a" as it wrote it: its txn compares a stale state.
  lose = 1;
  auto result = log->Propose(Put("a", "mine"), kTimeout);
  EXPECT_THAT(result.status(), StatusIs(absl::StatusCode::kUnavailable, "did not commit"));
  auto read = log_->Read("names", "a", kTimeout);
  ASSERT_TRUE(read.ok() && read->has_value()) << read.status();
  EXPECT_EQ((*read)->record.value, "other");
}

// A one-shot-per-connection server on loopback that answers every request
// with `answer` and closes.
class GarbageServer {
 public:
  explicit GarbageServer(std::string answer) : answer_(std::move(answer)) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    PEERKV_CHECK(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    PEERKV_CHECK(listen(fd_, 16) == 0);
    PEERKV_CHECK(getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    url_ = absl::StrCat("http://127.0.0.1:", ntohs(addr.sin_port));
    thread_ = std::thread([this] { Serve(); });
  }
  ~GarbageServer() {
    stop_ = true;
    thread_.join();
    close(fd_);
  }
  const std::string& url() const { return url_; }

 private:
  void Serve() {
    while (!stop_) {
      pollfd pfd{fd_, POLLIN, 0};
      if (poll(&pfd, 1, 20) <= 0) continue;
      const int conn = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (conn < 0) continue;
      // Read the request head (bounded), then answer.
      std::string request;
      char buf[4096];
      while (request.find("\r\n\r\n") == std::string::npos && request.size() < 65536) {
        pollfd cfd{conn, POLLIN, 0};
        if (poll(&cfd, 1, 2000) <= 0) break;
        const ssize_t n = read(conn, buf, sizeof(buf));
        if (n <= 0) break;
        request.append(buf, static_cast<size_t>(n));
      }
      if (!answer_.empty()) (void)!write(conn, answer_.data(), answer_.size());
      close(conn);
    }
  }

  const std::string answer_;
  int fd_ = -1;
  std::string url_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

std::string HttpOk(const std::string& body) {
  return absl::StrCat("HTTP/1.1 200 OK\r\nContent-Length: ", body.size(),
                      "\r\nConnection: close\r\n\r\n", body);
}

absl::Status ReadFrom(const std::string& answer) {
  GarbageServer server(answer);
  auto log = EtcdConsensusLog::Create({server.url()});
  PEERKV_CHECK(log.ok());
  return (*log)->Read("names", "a", absl::Seconds(2)).status();
}

TEST(EtcdConsensusLogGarbage, AnAnswerThatIsNotEtcdIsAClearError) {
  EXPECT_THAT(ReadFrom("SSH-2.0-OpenSSH_9.2\r\n\r\n"),
              StatusIs(absl::StatusCode::kInternal, "not HTTP"));
  EXPECT_THAT(ReadFrom("HTTP/1.1 two hundred\r\n\r\n"),
              StatusIs(absl::StatusCode::kInternal, "status line"));
  EXPECT_THAT(ReadFrom("HTTP/1.1 200 OK\r\nContent-Length: banana\r\n\r\n"),
              StatusIs(absl::StatusCode::kInternal, "Content-Length"));
  EXPECT_THAT(ReadFrom(HttpOk("<html>hi</html>")),
              StatusIs(absl::StatusCode::kInternal, "not a JSON object"));
  EXPECT_THAT(ReadFrom(HttpOk("[1,2]")), StatusIs(absl::StatusCode::kInternal, "not an object"));
  EXPECT_THAT(ReadFrom(HttpOk("{\"kvs\":7}")), StatusIs(absl::StatusCode::kInternal, "kvs"));
  EXPECT_THAT(ReadFrom(HttpOk("{\"kvs\":[{\"key\":\"!!!\"}]}")),
              StatusIs(absl::StatusCode::kInternal, "kv.key is not base64"));
  EXPECT_THAT(ReadFrom("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"kvs\""),
              StatusIs(absl::StatusCode::kUnavailable, "connection closed"));
  EXPECT_THAT(ReadFrom(""), StatusIs(absl::StatusCode::kUnavailable, "closed before an answer"));
  // A well-formed answer whose value is not a peerkv record: DataLoss.
  const std::string key = absl::Base64Escape("peerkv/5/names/a");
  EXPECT_THAT(ReadFrom(HttpOk(absl::StrCat("{\"kvs\":[{\"key\":\"", key,
                                           "\",\"mod_revision\":\"3\",\"value\":\"",
                                           absl::Base64Escape("plain text"), "\"}]}"))),
              StatusIs(absl::StatusCode::kDataLoss, "peerkv/5/names/a"));
  EXPECT_THAT(ReadFrom(HttpOk(absl::StrCat("{\"kvs\":[{\"key\":\"", key,
                                           "\",\"mod_revision\":\"3\",\"value\":\"",
                                           absl::Base64Escape(std::string(18, '\x04')), "\"}]}"))),
              StatusIs(absl::StatusCode::kDataLoss, "format byte 4"));
  // A signed record (format 3: header, token) cut short: no signature
  // length, or a signature longer than what follows.
  std::string signed_header = std::string(1, '\x03') + std::string(17 + 8, '\0');
  EXPECT_THAT(ReadFrom(HttpOk(absl::StrCat("{\"kvs\":[{\"key\":\"", key,
                                           "\",\"mod_revision\":\"3\",\"value\":\"",
                                           absl::Base64Escape(signed_header), "\"}]}"))),
              StatusIs(absl::StatusCode::kDataLoss, "signature's length"));
  EXPECT_THAT(ReadFrom(HttpOk(absl::StrCat("{\"kvs\":[{\"key\":\"", key,
                                           "\",\"mod_revision\":\"3\",\"value\":\"",
                                           absl::Base64Escape(signed_header + std::string("\x01\x00sig", 5)),
                                           "\"}]}"))),
              StatusIs(absl::StatusCode::kDataLoss, "signature of 256 bytes"));
  // etcd's own error answers keep their message.
  EXPECT_THAT(ReadFrom("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 43\r\n\r\n"
                       "{\"error\":\"etcdserver: no leader\",\"code\":14}"),
              StatusIs(absl::StatusCode::kUnavailable, "no leader"));
}

TEST(EtcdConsensusLogGarbage, NothingListeningIsUnavailableNamingTheUrl) {
  auto port = testing::FreeLoopbackPort();
  ASSERT_TRUE(port.ok());
  const std::string url = absl::StrCat("http://127.0.0.1:", *port);
  auto log = EtcdConsensusLog::Create({url});
  ASSERT_TRUE(log.ok());
  const absl::Time start = absl::Now();
  EXPECT_THAT((*log)->Propose(Put("a", "1"), absl::Seconds(1)).status(),
              StatusIs(absl::StatusCode::kUnavailable, url));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_FALSE((*log)->Reachable());
}

TEST(EtcdConsensusLogConfig, AMisconfiguredUrlIsRefusedAtConstruction) {
  for (const char* url : {"", "127.0.0.1:2379", "etcd://127.0.0.1:2379", "https://127.0.0.1:2379",
                          "http://", "http://127.0.0.1", "http://127.0.0.1:", "http://:2379",
                          "http://127.0.0.1:0", "http://127.0.0.1:65536", "http://127.0.0.1:23x9",
                          "http://127.0.0.1:2379/v3", "http://user@host:2379"}) {
    EXPECT_THAT(EtcdConsensusLog::Create({url}).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, "etcd URL"))
        << url;
  }
  EXPECT_TRUE(EtcdConsensusLog::Create({"http://localhost:2379/"}).ok());
  EXPECT_THAT(EtcdConsensusLog::Create({"http://127.0.0.1:2379", ""}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "prefix"));
}

TEST(EtcdConsensusLogConfig, AMalformedProposalIsRefusedBeforeAnyRequest) {
  auto log = EtcdConsensusLog::Create({"http://127.0.0.1:1"});
  ASSERT_TRUE(log.ok());
  EXPECT_THAT((*log)->Propose(Put("", "x"), absl::Seconds(1)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "key"));
  Proposal p = Put("k", "x");
  p.origin = 0;
  EXPECT_THAT((*log)->Propose(p, absl::Seconds(1)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "origin"));
  p = Put("k", std::string(kMaxEtcdValueBytes + 1, 'x'));
  EXPECT_THAT((*log)->Propose(p, absl::Seconds(1)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "limit"));
}

}  // namespace
}  // namespace peerkv::consensus
