// tests/snapshot_bootstrap_test.cc: snapshot bootstrap between real `peerkv
// serve` processes on loopback: an empty replica copies a peer's snapshot
// and then receives its later writes as deltas (and with
// --snapshot-bootstrap=false pulls the log instead); and 20 bootstraps,
// each interrupted by a kill -9 of one side (by its PID) at a random
// moment, each end, once the killed side is restarted on its data
// directory, in a complete replica that converged with its peer and
// completed a snapshot.
#include <signal.h>

#include <random>
#include <thread>

#include "absl/strings/str_format.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rpc/client.h"
#include "testing/replica_client.h"
#include "testing/server_process.h"
#include "testing/temp_dir.h"

namespace peerkv {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::ServerProcess;

constexpr absl::Duration kConvergeTimeout = absl::Seconds(60);
constexpr char kCopied[] = "copied the snapshot of peer";

class SnapshotBootstrapTest : public ::testing::Test {
 protected:
  std::unique_ptr<ServerProcess> Start(const std::string& name,
                                       std::vector<std::string> peers = {},
                                       std::vector<std::string> extra = {}) {
    return testing::StartReplica(dir_, name, peers, extra);
  }

  // `n` registers with 100-byte values, 1000 per putMany, and a few
  // deleted.
  static void Fill(const ServerProcess& server, int n, const std::string& prefix) {
    auto client = testing::ConnectTo(server);
    ASSERT_NE(client, nullptr);
    std::vector<Mutation> batch;
    for (int i = 0; i < n; ++i) {
      batch.push_back(Mutation{i % 2 ? "docs" : "mail", absl::StrFormat("%s-%07d", prefix, i),
                               std::string(100, 'a' + i % 26)});
      if (batch.size() == 1000 || i + 1 == n) {
        ASSERT_THAT(client->WriteBatch(std::move(batch)), IsOk());
        batch.clear();
      }
    }
    ASSERT_THAT(client->Delete("docs", prefix + "-0000001"), IsOk());
  }

  static std::string Value(const ServerProcess& server, const std::string& ks,
                           const std::string& key) {
    auto client = testing::ConnectTo(server);
    absl::StatusOr<std::optional<Record>> got = client->Get(ks, key);
    if (!got.ok() || !got->has_value()) return "<missing>";
    return (*got)->deleted ? "<deleted>" : (*got)->value;
  }

  testing::TempDir dir_;
};

TEST_F(SnapshotBootstrapTest, AnEmptyReplicaCopiesASnapshotThenReceivesDeltas) {
  auto source = Start("source");
  ASSERT_NE(source, nullptr);
  Fill(*source, 20'000, "doc");
  auto fresh = Start("fresh", {source->address()}, {"--snapshot-page-records", "2000"});
  ASSERT_NE(fresh, nullptr);
  ASSERT_TRUE(testing::Converged({source.get(), fresh.get()}, kConvergeTimeout));
  EXPECT_THAT(fresh->WaitForLog(kCopied), HasSubstr("20000 records"));
  EXPECT_THAT(fresh->Log(), HasSubstr("pulling its log from seq"));
  EXPECT_EQ(Value(*fresh, "docs", "doc-0000001"), "<deleted>");
  // Later writes travel as deltas.
  ASSERT_THAT(testing::ConnectTo(*source)->Put("mail", "later", "delta"), IsOk());
  ASSERT_TRUE(testing::Converged({source.get(), fresh.get()}, kConvergeTimeout));
  EXPECT_EQ(Value(*fresh, "mail", "later"), "delta");
  // And the other way: the new replica's own writes reach the source.
  ASSERT_THAT(testing::ConnectTo(*fresh)->Put("mail", "from-fresh", "hi"), IsOk());
  ASSERT_TRUE(testing::Converged({source.get(), fresh.get()}, kConvergeTimeout));
  EXPECT_EQ(Value(*source, "mail", "from-fresh"), "hi");

  // Turned off, a new replica pulls the log instead.
  auto puller = Start("puller", {source->address()}, {"--snapshot-bootstrap", "false"});
  ASSERT_NE(puller, nullptr);
  ASSERT_TRUE(testing::Converged({source.get(), fresh.get(), puller.get()}, kConvergeTimeout));
  EXPECT_THAT(puller->Log(), Not(HasSubstr(kCopied)));
}

TEST_F(SnapshotBootstrapTest, TwentyBootstrapsInterruptedByAKillAtRandomEachEndComplete) {
  auto source = Start("source");
  ASSERT_NE(source, nullptr);
  Fill(*source, 20'000, "doc");
  std::mt19937 rng(::testing::UnitTest::GetInstance()->random_seed());
  const std::vector<std::string> page = {"--snapshot-page-records", "500"};
  int killed_fresh = 0, killed_source = 0;
  for (int round = 0; round < 20; ++round) {
    SCOPED_TRACE(absl::StrFormat("round %d", round));
    const std::string name = absl::StrFormat("fresh-%d", round);
    auto fresh = Start(name, {source->address()}, page);
    ASSERT_NE(fresh, nullptr);
    // A random moment of the bootstrap (which takes a few hundred ms here):
    // a deliberate kill point, not a wait for anything.
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 400)(rng)));
    std::string fresh_log;
    if (rng() % 2 == 0) {
      ++killed_fresh;
      fresh->Stop(SIGKILL);
      fresh_log = fresh->Log();
      fresh = Start(name, {source->address()}, page);
      ASSERT_NE(fresh, nullptr);
    } else {
      ++killed_source;
      source->Stop(SIGKILL);
      // The source comes back on another port and dials the new replica.
      source = Start("source", {fresh->address()});
      ASSERT_NE(source, nullptr);
    }
    ASSERT_TRUE(testing::Converged({source.get(), fresh.get()}, kConvergeTimeout));
    // A snapshot was completed (the marker cleared, checkpoint claimed) by
    // the run that was killed or by the one after it; a run killed between
    // that commit and its log line leaves a replica that starts with no
    // snapshot to copy.
    // The line follows the commit that made the fingerprints equal: it may
    // still be on its way through the pipe.
    const std::string log =
        fresh_log + (fresh_log.find(kCopied) == std::string::npos ? fresh->WaitForLog(kCopied)
                                                                   : fresh->Log());
    if (log.find(kCopied) == std::string::npos) {
      EXPECT_THAT(fresh->Log(), Not(HasSubstr("snapshot of peer"))) << log;
    }
    // A delta after it arrives too.
    ASSERT_THAT(testing::ConnectTo(*source)->Put("mail", "round", name), IsOk());
    ASSERT_TRUE(testing::Converged({source.get(), fresh.get()}, kConvergeTimeout));
    EXPECT_EQ(Value(*fresh, "mail", "round"), name);
    fresh->Stop(SIGKILL);
  }
  EXPECT_GT(killed_fresh, 0);
  EXPECT_GT(killed_source, 0);
}

}  // namespace
}  // namespace peerkv
