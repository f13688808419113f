// tests/restore_clone_test.cc: issue 8's restore and clone scenarios with
// real `peerkv serve` processes. A data directory restored from an older
// copy (which then wrote on before meeting a peer) must not make its peers
// skip writes: it forks to a new replica id, and every write reaches
// everyone. Two processes running copies of one directory are refused and
// named in the logs.
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
#include "testing/temp_dir.h"

namespace peerkv {
namespace {

using ::testing::HasSubstr;
using rpc::Client;
using testing::ServerProcess;

constexpr auto kConvergeTimeout = std::chrono::seconds(20);

class RestoreCloneTest : public ::testing::Test {
 protected:
  std::unique_ptr<ServerProcess> Start(const std::string& name, const std::string& dir,
                                       std::vector<std::string> peers = {}) {
    std::vector<std::string> args = testing::ReplicaArgs(name, peers);
    absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(dir, args);
    EXPECT_THAT(server, IsOk());
    return server.ok() ? std::move(*server) : nullptr;
  }

  static std::unique_ptr<Client> Connect(const ServerProcess& server) {
    return testing::ConnectTo(server);
  }

  static rpc::ServerStatus Status(const ServerProcess& server) {
    auto client = Connect(server);
    if (client == nullptr) return {};
    absl::StatusOr<rpc::ServerStatus> status = client->Status();
    return status.ok() ? *status : rpc::ServerStatus{};
  }

  static void Write(const ServerProcess& server, const std::string& prefix, int from, int to) {
    auto client = Connect(server);
    ASSERT_NE(client, nullptr);
    for (int i = from; i <= to; ++i) {
      ASSERT_THAT(client->Put("notes", absl::StrFormat("%s%02d", prefix, i),
                              absl::StrFormat("%s value %d", prefix, i)),
                  IsOk());
    }
  }

  // Until both hold `records` live records and equal fingerprints (which
  // cover values). Another process holds the answer: polls, bounded.
  static bool Converged(const ServerProcess& a, const ServerProcess& b, uint64_t records) {
    const auto deadline = std::chrono::steady_clock::now() + kConvergeTimeout;
    while (std::chrono::steady_clock::now() < deadline) {
      const rpc::ServerStatus sa = Status(a), sb = Status(b);
      if (sa.live_records == records && sb.live_records == records &&
          sa.fingerprint == sb.fingerprint) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  testing::TempDir dir_;
};

// The reproduction: x writes 10, is stopped and copied; x writes 10 more
// (seq 11..20) and y pulls them (checkpoint 20); x's directory is restored
// from the copy (max seq 10) and x writes 15 new records (seq 11..25)
// before it meets y again. On main y then received only seq 21..25, its
// status said behind=0, the fingerprints differed, and nothing noticed.
TEST_F(RestoreCloneTest, ARestoredReplicaForksAndEveryWriteReachesEveryone) {
  const std::string x_dir = dir_.Sub("x");
  const std::string backup = dir_.Sub("x-backup");
  auto x = Start("x", x_dir);
  ASSERT_NE(x, nullptr);
  Write(*x, "first", 1, 10);
  ASSERT_EQ(x->Stop(SIGTERM), 0);
  std::filesystem::copy(x_dir, backup, std::filesystem::copy_options::recursive);

  x = Start("x", x_dir);
  ASSERT_NE(x, nullptr);
  Write(*x, "lost", 11, 20);
  const uint64_t old_id = Status(*x).replica_id;
  auto y = Start("y", dir_.Sub("y"), {x->address()});
  ASSERT_NE(y, nullptr);
  ASSERT_TRUE(Converged(*x, *y, 20));
  ASSERT_EQ(x->Stop(SIGTERM), 0);

  std::filesystem::remove_all(x_dir);
  std::filesystem::rename(backup, x_dir);
  x = Start("x", x_dir);
  ASSERT_NE(x, nullptr);
  EXPECT_EQ(Status(*x).replica_id, old_id);
  EXPECT_EQ(Status(*x).max_seq, 10u);
  Write(*x, "after", 11, 25);  // seq 11..25, before it meets a peer
  ASSERT_EQ(x->Stop(SIGTERM), 0);

  // Now it meets y.
  x = Start("x", x_dir, {y->address()});
  ASSERT_NE(x, nullptr);
  EXPECT_THAT(x->WaitForLog("Forked from replica id"), HasSubstr("restored from an older copy"));
  ASSERT_TRUE(Converged(*x, *y, 35)) << x->Log() << y->Log();
  const rpc::ServerStatus sx = Status(*x);
  EXPECT_NE(sx.replica_id, old_id);
  EXPECT_THAT(sx.retired_ids, ::testing::ElementsAre(old_id)) << x->Log();
  // The writes it lost came back; its new ones reached y.
  auto cx = Connect(*x);
  auto cy = Connect(*y);
  for (const std::string key : {"lost11", "lost20", "after11", "after25", "first01"}) {
    absl::StatusOr<std::optional<Record>> at_x = cx->Get("notes", key);
    absl::StatusOr<std::optional<Record>> at_y = cy->Get("notes", key);
    ASSERT_THAT(at_x, IsOk());
    ASSERT_THAT(at_y, IsOk());
    ASSERT_TRUE(at_x->has_value() && at_y->has_value()) << key;
    EXPECT_EQ((*at_x)->value, (*at_y)->value) << key;
    EXPECT_EQ((*at_x)->version, (*at_y)->version) << key;
  }
  // Records from before the copy, and the lost ones it got back, keep
  // their versions (the old id is their origin); those written since the
  // restored open were re-stamped as writes of the new id.
  EXPECT_EQ((*cx->Get("notes", "first01"))->version.origin, old_id);
  EXPECT_EQ((*cx->Get("notes", "lost11"))->version.origin, old_id);
  EXPECT_EQ((*cx->Get("notes", "after11"))->version.origin, sx.replica_id);
  EXPECT_EQ((*cx->Get("notes", "after11"))->value, "after value 11");
  // New writes carry the new id.
  absl::StatusOr<Version> next = cx->Put("notes", "next", "n");
  ASSERT_THAT(next, IsOk());
  EXPECT_EQ(next->origin, sx.replica_id);
  ASSERT_TRUE(Converged(*x, *y, 36));
}

// A copy of x's data directory started as a second process: x and the copy
// claim one replica id. They refuse each other, naming it in both logs, and
// a replica that meets both keeps only the first.
TEST_F(RestoreCloneTest, TwoLiveCopiesOfOneDirectoryAreRefusedAndNamed) {
  const std::string x_dir = dir_.Sub("x");
  const std::string copy = dir_.Sub("x-copy");
  auto x = Start("x", x_dir);
  ASSERT_NE(x, nullptr);
  Write(*x, "k", 1, 3);
  ASSERT_EQ(x->Stop(SIGTERM), 0);
  std::filesystem::copy(x_dir, copy, std::filesystem::copy_options::recursive);

  x = Start("x", x_dir);
  ASSERT_NE(x, nullptr);
  auto twin = Start("twin", copy, {x->address()});
  ASSERT_NE(twin, nullptr);
  ASSERT_EQ(Status(*x).replica_id, Status(*twin).replica_id);
  EXPECT_THAT(twin->WaitForLog("copy of this one"), HasSubstr("refused a link"));
  EXPECT_THAT(x->WaitForLog("copy of this one"), HasSubstr("refused a link"));

  auto y = Start("y", dir_.Sub("y"), {x->address(), twin->address()});
  ASSERT_NE(y, nullptr);
  EXPECT_THAT(y->WaitForLog("is live in two processes"), HasSubstr("refusing the second link"));
  // Counted in status, on both sides of the refused link and at y.
  EXPECT_GE(Status(*x).clones_refused, 1u);
  EXPECT_GE(Status(*twin).clones_refused, 1u);
  EXPECT_GE(Status(*y).clones_refused, 1u);
  EXPECT_EQ(Status(*x).retired_ids.size(), 0u);
}

}  // namespace
}  // namespace peerkv
