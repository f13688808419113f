// tests/clock_skew_test.cc: records from a clock far ahead, between real
// `peerkv serve` processes on loopback. A relay whose clock is a day ahead
// and that wrote before it met anyone must still carry a correct replica's
// later writes along a chain (its own far-future records wait in
// quarantine at the far end); and the refused counter counts each such
// record once, however many rounds pass.
#include <signal.h>

#include <chrono>
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

constexpr char kADayAhead[] = "86400000";
constexpr auto kTimeout = std::chrono::seconds(20);

class ClockSkewTest : public ::testing::Test {
 protected:
  std::unique_ptr<ServerProcess> Start(const std::string& name,
                                       std::vector<std::string> peers = {},
                                       std::vector<std::string> extra = {}) {
    return testing::StartReplica(dir_, name, peers, extra);
  }

  static std::unique_ptr<Client> Connect(const ServerProcess& server) {
    return testing::ConnectTo(server);
  }

  static rpc::ServerStatus Status(const ServerProcess& server) {
    auto client = Connect(server);
    if (client == nullptr) return {};
    absl::StatusOr<rpc::ServerStatus> status = client->Status();
    EXPECT_THAT(status, IsOk());
    return status.ok() ? *status : rpc::ServerStatus{};
  }

  static rpc::PeerStatus PeerNamed(const rpc::ServerStatus& status, const std::string& name) {
    for (const rpc::PeerStatus& p : status.peers) {
      if (p.name == name) return p;
    }
    return {};
  }

  static std::string Value(const ServerProcess& server, const std::string& ks,
                           const std::string& key) {
    auto client = Connect(server);
    if (client == nullptr) return "<no connection>";
    absl::StatusOr<std::optional<Record>> got = client->Get(ks, key);
    if (!got.ok() || !got->has_value()) return "<missing>";
    return (*got)->deleted ? "<deleted>" : (*got)->value;
  }

  // Polls `server` (another process holds the answer), bounded by kTimeout,
  // until `done` holds for its status; returns the last status seen.
  template <typename Done>
  static rpc::ServerStatus WaitForStatus(const ServerProcess& server, Done done) {
    const auto deadline = std::chrono::steady_clock::now() + kTimeout;
    rpc::ServerStatus status = Status(server);
    while (!done(status) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      status = Status(server);
    }
    return status;
  }

  // A replica a day ahead that writes `n` records before it meets anyone
  // (so they are stamped a day ahead whatever it learns of peers later).
  // Its clock stays wrong (--clock-correction false: an old device, or one
  // whose operator turned correction off): these tests are about the far
  // side's quarantine; a replica that corrects itself (it forks to a fresh
  // clock once it meets peers) is clock_correction_test's.
  std::unique_ptr<ServerProcess> StartSkewedWithWrites(const std::string& name, int n) {
    auto skewed =
        Start(name, {}, {"--clock-offset-ms", kADayAhead, "--clock-correction", "false"});
    if (skewed == nullptr) return nullptr;
    auto client = Connect(*skewed);
    for (int i = 0; i < n; ++i) {
      EXPECT_THAT(client->Put("notes", absl::StrFormat("early-%d", i), "from a day ahead"),
                  IsOk());
    }
    return skewed;
  }

  testing::TempDir dir_;
};

TEST_F(ClockSkewTest, ACorrectReplicasWritesCrossARelayWhoseClockIsADayAhead) {
  auto relay = StartSkewedWithWrites("relay", 3);
  ASSERT_NE(relay, nullptr);
  auto a = Start("a", {relay->address()});
  auto c = Start("c", {relay->address()});
  ASSERT_TRUE(a && c);
  auto writer = Connect(*a);
  for (int i = 0; i < 5; ++i) {
    ASSERT_THAT(writer->Put("notes", absl::StrFormat("from-a-%d", i), "on time"), IsOk());
  }
  // a's writes reach c through the relay, behind the relay's far-future
  // records in its log.
  const rpc::ServerStatus at_c = WaitForStatus(*c, [](const rpc::ServerStatus& s) {
    return s.live_records == 5 && s.quarantine_records == 3;
  });
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(Value(*c, "notes", absl::StrFormat("from-a-%d", i)), "on time") << i;
  }
  // The relay's own early writes wait at c, named by origin.
  EXPECT_EQ(Value(*c, "notes", "early-0"), "<missing>");
  EXPECT_EQ(at_c.quarantine_records, 3u);
  ASSERT_EQ(at_c.quarantined.size(), 1u);
  EXPECT_EQ(at_c.quarantined[0].origin, Status(*relay).replica_id);
  EXPECT_EQ(at_c.quarantined[0].records, 3u);
  // Mergeable about a day from now (less the 60 s bound).
  const int64_t in_a_day = absl::ToUnixMillis(absl::Now()) + 86'400'000 - 60'000;
  EXPECT_NEAR(static_cast<double>(at_c.quarantined[0].first_due_ms), in_a_day, 120'000.0);
  const rpc::PeerStatus relay_at_c = PeerNamed(at_c, "relay");
  EXPECT_EQ(relay_at_c.refused, 3u);
  EXPECT_EQ(relay_at_c.behind, 0u);
  EXPECT_THAT(c->WaitForLog("quarantined until local time reaches"),
              HasSubstr("refused 3 records from peer relay"));
  // The CLI shows it.
  testing::RunResult cli = testing::Run(
      {testing::RunfilePath("cli/peerkv"), "--server", c->address(), "status"});
  EXPECT_THAT(cli.out, HasSubstr("quarantined: 3 records from 1 origin"));
  EXPECT_THAT(cli.out, ::testing::ContainsRegex("quarantined_from: [0-9a-f]{16} 3 records, "
                                                "mergeable from 20"));
}

TEST_F(ClockSkewTest, RefusedCountsEachFarAheadRecordOnceOverManyRounds) {
  auto fast = StartSkewedWithWrites("fast", 3);
  ASSERT_NE(fast, nullptr);
  auto v = Start("v", {fast->address()});
  ASSERT_NE(v, nullptr);
  ASSERT_EQ(WaitForStatus(*v, [](const rpc::ServerStatus& s) {
              return s.quarantine_records == 3;
            }).quarantine_records,
            3u);
  // Many rounds: every pull from `fast` moves its last exchange (rounds
  // run every 100 ms); wait for 20 of them.
  absl::Time last = PeerNamed(Status(*v), "fast").last_exchange;
  int exchanges = 0;
  WaitForStatus(*v, [&](const rpc::ServerStatus& s) {
    const absl::Time now = PeerNamed(s, "fast").last_exchange;
    if (now != last) ++exchanges;
    last = now;
    return exchanges >= 20;
  });
  EXPECT_GE(exchanges, 20);
  const rpc::ServerStatus status = Status(*v);
  EXPECT_EQ(PeerNamed(status, "fast").refused, 3u);
  EXPECT_EQ(status.quarantine_records, 3u);
  EXPECT_EQ(status.quarantine_dropped, 0u);
  testing::RunResult cli = testing::Run(
      {testing::RunfilePath("cli/peerkv"), "--server", v->address(), "status"});
  EXPECT_THAT(cli.out, ::testing::ContainsRegex("fast .* refused=3 "));
}

}  // namespace
}  // namespace peerkv
