// tests/replication_test.cc: replication between real `peerkv serve`
// processes on loopback: the seed's phone/tablet/pc scenario with the tablet
// stopped and restarted, a chain with no direct link between its ends, a
// replica whose data directory is wiped and recreated, and a replica whose
// clock is an hour ahead.
#include <signal.h>

#include <filesystem>
#include <thread>

#include "absl/strings/str_format.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rpc/client.h"
#include "testing/replica_client.h"
#include "testing/server_process.h"
#include "testing/subprocess.h"
#include "testing/temp_dir.h"

namespace peerkv {
namespace {

using ::testing::HasSubstr;
using rpc::Client;
using testing::ServerProcess;

constexpr auto kConvergeTimeout = std::chrono::seconds(30);

class ReplicationTest : public ::testing::Test {
 protected:
  std::unique_ptr<ServerProcess> Start(const std::string& name,
                                       std::vector<std::string> peers = {},
                                       std::vector<std::string> extra = {}) {
    return testing::StartReplica(dir_, name, peers, extra);
  }

  static std::unique_ptr<Client> Connect(const ServerProcess& server) {
    return testing::ConnectTo(server);
  }



  static std::string Value(const ServerProcess& server, const std::string& ks,
                           const std::string& key) {
    auto client = Connect(server);
    absl::StatusOr<std::optional<Record>> got = client->Get(ks, key);
    if (!got.ok() || !got->has_value()) return "<missing>";
    return (*got)->deleted ? "<deleted>" : (*got)->value;
  }

  static rpc::ServerStatus Status(const ServerProcess& server) {
    auto client = Connect(server);
    absl::StatusOr<rpc::ServerStatus> status = client->Status();
    EXPECT_THAT(status, IsOk());
    return status.ok() ? *status : rpc::ServerStatus{};
  }

  testing::TempDir dir_;
};

TEST_F(ReplicationTest, PhoneTabletPcScenarioWithTheTabletAway) {
  auto phone = Start("phone");
  auto pc = Start("pc", {phone->address()});
  auto tablet = Start("tablet", {phone->address(), pc->address()});
  ASSERT_TRUE(phone && pc && tablet);

  // The contact, added on the phone, reaches every device.
  ASSERT_THAT(Connect(*phone)->Put("contacts", "bob", "Bob <bob@example.org>"), IsOk());
  ASSERT_TRUE(testing::Converged({phone.get(), pc.get(), tablet.get()}, absl::FromChrono(kConvergeTimeout)));
  EXPECT_EQ(Value(*tablet, "contacts", "bob"), "Bob <bob@example.org>");
  // The tablet writes a draft, then goes to sleep.
  ASSERT_THAT(Connect(*tablet)->Put("drafts", "mail-1", "Hi Bob"), IsOk());
  ASSERT_TRUE(testing::Converged({phone.get(), pc.get(), tablet.get()}, absl::FromChrono(kConvergeTimeout)));
  const std::string tablet_address = tablet->address();
  EXPECT_EQ(tablet->Stop(SIGTERM), 0);

  // Meanwhile the pc finishes and sends the mail, and the phone and then the
  // pc edit Bob's address. The pc edits after it has seen the phone's edit,
  // so its edit must win. (Two edits made before either side saw the other
  // are concurrent: within one millisecond the replica ids decide, so a test
  // may not assume an order for them.)
  auto pc_client = Connect(*pc);
  ASSERT_THAT(pc_client->Put("sent", "mail-1", "Hi Bob, dinner at 8?"), IsOk());
  ASSERT_THAT(pc_client->Delete("drafts", "mail-1"), IsOk());
  ASSERT_THAT(Connect(*phone)->Put("contacts", "bob", "Bob <bob@work.example>"), IsOk());
  ASSERT_TRUE(testing::Converged({phone.get(), pc.get()}, absl::FromChrono(kConvergeTimeout)));
  ASSERT_EQ(Value(*pc, "contacts", "bob"), "Bob <bob@work.example>");
  ASSERT_THAT(pc_client->Put("contacts", "bob", "Bob <bob@home.example>"), IsOk());
  ASSERT_TRUE(testing::Converged({phone.get(), pc.get()}, absl::FromChrono(kConvergeTimeout)));

  // The tablet wakes up on the same data and catches up.
  tablet = Start("tablet", {phone->address(), pc->address()});
  ASSERT_NE(tablet, nullptr);
  ASSERT_TRUE(testing::Converged({phone.get(), pc.get(), tablet.get()}, absl::FromChrono(kConvergeTimeout)));
  for (const ServerProcess* device : {phone.get(), pc.get(), tablet.get()}) {
    EXPECT_EQ(Value(*device, "contacts", "bob"), "Bob <bob@home.example>");
    EXPECT_EQ(Value(*device, "drafts", "mail-1"), "<deleted>");
    EXPECT_EQ(Value(*device, "sent", "mail-1"), "Hi Bob, dinner at 8?");
  }
  // Everyone sees the others as reachable peers with nothing left to pull.
  const rpc::ServerStatus status = Status(*tablet);
  ASSERT_EQ(status.peers.size(), 2u);
  for (const rpc::PeerStatus& p : status.peers) {
    EXPECT_TRUE(p.reachable) << p.name;
    EXPECT_GT(p.last_exchange, absl::InfinitePast()) << p.name;
    EXPECT_EQ(p.behind, 0u) << p.name;
  }
}

TEST_F(ReplicationTest, AChainConvergesWithoutALinkBetweenItsEnds) {
  auto b = Start("b");
  auto a = Start("a", {b->address()});
  auto c = Start("c", {b->address()});
  ASSERT_TRUE(a && b && c);
  ASSERT_THAT(Connect(*a)->Put("notes", "from-a", "1"), IsOk());
  ASSERT_THAT(Connect(*c)->Put("notes", "from-c", "2"), IsOk());
  ASSERT_TRUE(testing::Converged({a.get(), b.get(), c.get()}, absl::FromChrono(kConvergeTimeout)));
  EXPECT_EQ(Value(*c, "notes", "from-a"), "1");
  EXPECT_EQ(Value(*a, "notes", "from-c"), "2");
  // a's only peer is b: what it knows of c came through b.
  const rpc::ServerStatus status = Status(*a);
  ASSERT_EQ(status.peers.size(), 1u);
  EXPECT_EQ(status.peers[0].name, "b");
}

TEST_F(ReplicationTest, AWipedReplicaRejoinsAsANewIncarnationAndConverges) {
  auto a = Start("a");
  auto b = Start("b", {a->address()});
  auto c = Start("c", {a->address(), b->address()});
  ASSERT_TRUE(a && b && c);
  auto writer = Connect(*a);
  for (int i = 0; i < 200; ++i) {
    ASSERT_THAT(writer->Put("notes", absl::StrFormat("n%03d", i), "v"), IsOk());
  }
  ASSERT_TRUE(testing::Converged({a.get(), b.get(), c.get()}, absl::FromChrono(kConvergeTimeout)));
  const rpc::ServerStatus before = Status(*c);
  EXPECT_EQ(c->Stop(SIGTERM), 0);
  std::filesystem::remove_all(dir_.Sub("c"));

  c = Start("c", {a->address(), b->address()});
  ASSERT_NE(c, nullptr);
  const rpc::ServerStatus fresh = Status(*c);
  EXPECT_NE(fresh.replica_id, before.replica_id);
  EXPECT_NE(fresh.incarnation, before.incarnation);
  ASSERT_TRUE(testing::Converged({a.get(), b.get(), c.get()}, absl::FromChrono(kConvergeTimeout)));
  EXPECT_EQ(Status(*c).live_records, 200u);
  // And it takes part again: its writes reach the others.
  ASSERT_THAT(Connect(*c)->Put("notes", "after-wipe", "x"), IsOk());
  ASSERT_TRUE(testing::Converged({a.get(), b.get(), c.get()}, absl::FromChrono(kConvergeTimeout)));
  EXPECT_EQ(Value(*a, "notes", "after-wipe"), "x");
}

TEST_F(ReplicationTest, AClockAnHourAheadHasItsWritesRefusedVisibly) {
  auto a = Start("a");
  auto b = Start("b", {a->address()});
  // Correction off: this test is about a clock that stays wrong.
  auto fast = Start("fast", {a->address()},
                    {"--clock-offset-ms", "3600000", "--clock-correction", "false"});
  ASSERT_TRUE(a && b && fast);
  ASSERT_THAT(Connect(*fast)->Put("notes", "from-the-future", "x"), IsOk());
  ASSERT_THAT(Connect(*a)->Put("notes", "normal", "y"), IsOk());

  // a refuses the record, counts it against the peer, and logs it once.
  const auto deadline = std::chrono::steady_clock::now() + kConvergeTimeout;
  uint64_t refused = 0;
  while (refused == 0 && std::chrono::steady_clock::now() < deadline) {
    for (const rpc::PeerStatus& p : Status(*a).peers) {
      if (p.name == "fast") refused = p.refused;
    }
    if (refused == 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_GE(refused, 1u);
  EXPECT_THAT(a->WaitForLog("refused 1 record from peer fast"),
              HasSubstr("refused 1 record from peer fast"));
  EXPECT_THAT(a->Log(), HasSubstr("ahead of local time (max_clock_skew 60000 ms)"));
  EXPECT_EQ(Value(*a, "notes", "from-the-future"), "<missing>");
  // The rest still flows: the fast replica learns a's write, b gets it too,
  // and the refused record reaches neither a nor b.
  ASSERT_TRUE(testing::Converged({a.get(), b.get()}, absl::FromChrono(kConvergeTimeout)));
  EXPECT_EQ(Value(*b, "notes", "from-the-future"), "<missing>");
  EXPECT_EQ(Value(*b, "notes", "normal"), "y");
  const auto until = std::chrono::steady_clock::now() + kConvergeTimeout;
  while (Value(*fast, "notes", "normal") != "y" && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(Value(*fast, "notes", "normal"), "y");
  // The CLI shows it.
  testing::RunResult cli = testing::Run(
      {testing::RunfilePath("cli/peerkv"), "--server", a->address(), "status"});
  EXPECT_THAT(cli.out, ::testing::ContainsRegex("fast .* refused=[1-9]"));
}

}  // namespace
}  // namespace peerkv
