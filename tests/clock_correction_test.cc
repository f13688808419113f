// tests/clock_correction_test.cc: wrong clocks between real `peerkv serve`
// processes on loopback, made with --clock-offset-ms: a replica whose clock
// is a day behind takes honest writes once two peers show it is behind
// (issue 8, fact 2: it refused them all as "ahead of local time"), and says
// so in status; a replica whose clock was a day ahead, then fixed, forks to
// a fresh clock when it meets its peers after the restart, and its new
// writes reach them (fact 1: its persisted clock mark kept stamping them a
// day ahead, and the peers refused them).
#include <signal.h>

#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
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

constexpr auto kTimeout = std::chrono::seconds(30);
constexpr int64_t kDay = 86'400'000;

class ClockCorrectionProcessTest : public ::testing::Test {
 protected:
  std::unique_ptr<ServerProcess> Start(const std::string& name,
                                       std::vector<std::string> peers = {},
                                       std::vector<std::string> extra = {}) {
    return testing::StartReplica(dir_, name, peers, extra);
  }

  static std::unique_ptr<Client> Connect(const ServerProcess& server) {
    return testing::ConnectTo(server);
  }

  static std::string Value(const ServerProcess& server, const std::string& key) {
    auto client = Connect(server);
    if (client == nullptr) return "<no client>";
    absl::StatusOr<std::optional<Record>> got = client->Get("notes", key);
    if (!got.ok() || !got->has_value()) return "<missing>";
    return (*got)->value;
  }

  // Another process holds the answer, so this polls, bounded.
  static bool WaitForValue(const ServerProcess& server, const std::string& key,
                           const std::string& want) {
    const auto deadline = std::chrono::steady_clock::now() + kTimeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (Value(server, key) == want) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  static rpc::ServerStatus Status(const ServerProcess& server) {
    auto client = Connect(server);
    if (client == nullptr) return {};
    absl::StatusOr<rpc::ServerStatus> status = client->Status();
    EXPECT_THAT(status, IsOk());
    return status.ok() ? *status : rpc::ServerStatus{};
  }

  testing::TempDir dir_;
};

TEST_F(ClockCorrectionProcessTest, AReplicaADayBehindTakesHonestWritesAndShowsItsOffset) {
  auto a = Start("a");
  auto b = Start("b", {a->address()});
  ASSERT_TRUE(a && b);
  ASSERT_THAT(Connect(*a)->Put("notes", "honest", "from a"), IsOk());
  auto slow = Start("slow", {a->address(), b->address()},
                    {"--clock-offset-ms", absl::StrCat(-kDay)});
  ASSERT_NE(slow, nullptr);
  EXPECT_TRUE(WaitForValue(*slow, "honest", "from a")) << slow->Log();
  // And what it writes reaches the others (stamped from its own clock: a
  // clock behind is not moved forward, see README "Clock skew").
  ASSERT_THAT(Connect(*slow)->Put("notes", "from-slow", "s"), IsOk());
  EXPECT_TRUE(WaitForValue(*b, "from-slow", "s")) << b->Log();
  const rpc::ServerStatus status = Status(*slow);
  EXPECT_EQ(status.clock_peers, 2u);
  EXPECT_NEAR(static_cast<double>(status.clock_offset_ms), -kDay, 2000);
  EXPECT_EQ(status.clock_correction_ms, 0);
  testing::RunResult cli = testing::Run(
      {testing::RunfilePath("cli/peerkv"), "--server", slow->address(), "status"});
  EXPECT_THAT(cli.out, ::testing::ContainsRegex("clock_offset: -86[34][0-9]{5}ms \\(from 2 peers\\)"));
  EXPECT_THAT(cli.out, ::testing::ContainsRegex("  a .* clock-offset=\\+86[34][0-9]{5}ms rtt=[0-9]+ms"));
}

TEST_F(ClockCorrectionProcessTest, AClockFixedAfterRunningADayAheadForksAndItsWritesReachPeers) {
  auto a = Start("a");
  ASSERT_NE(a, nullptr);
  ASSERT_THAT(Connect(*a)->Put("notes", "seed", "from a"), IsOk());
  {
    // A day ahead (and left wrong): merging a's write commits, and the
    // commit persists its clock mark, a day ahead. Nothing of its own is in
    // its log, so nothing of it is held back by the peers later.
    auto dev = Start("dev", {a->address()},
                     {"--clock-offset-ms", absl::StrCat(kDay), "--clock-correction", "false"});
    ASSERT_NE(dev, nullptr);
    ASSERT_TRUE(WaitForValue(*dev, "seed", "from a"));
    EXPECT_EQ(dev->Stop(SIGTERM), 0);
  }
  auto b = Start("b", {a->address()});
  ASSERT_NE(b, nullptr);
  // The clock is fixed (no offset); its persisted mark is still a day
  // ahead, until it meets its peers.
  auto dev = Start("dev", {a->address(), b->address()});
  ASSERT_NE(dev, nullptr);
  EXPECT_THAT(dev->WaitForLog("with a fresh clock"), HasSubstr("with a fresh clock"));
  ASSERT_THAT(Connect(*dev)->Put("notes", "after-fix", "reaches"), IsOk());
  EXPECT_TRUE(WaitForValue(*a, "after-fix", "reaches")) << a->Log() << dev->Log();
  EXPECT_TRUE(WaitForValue(*b, "after-fix", "reaches")) << b->Log();
  EXPECT_EQ(Status(*dev).retired_ids.size(), 1u) << dev->Log() << a->Log() << b->Log();
}

}  // namespace
}  // namespace peerkv
