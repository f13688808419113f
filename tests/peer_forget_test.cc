// tests/peer_forget_test.cc: tombstone collection with real `peerkv serve`
// processes: a peer that is stopped holds collection back (status names
// it), `peerkv peer forget` releases it and the tombstones are collected;
// forgetting an unknown peer is NotFound (exit 1).
#include <signal.h>

#include <chrono>
#include <thread>

#include "absl/strings/str_format.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rpc/client.h"
#include "testing/server_process.h"
#include "testing/subprocess.h"
#include "testing/temp_dir.h"

namespace peerkv {
namespace {

using ::testing::HasSubstr;
using rpc::Client;
using testing::ServerProcess;

constexpr auto kTimeout = std::chrono::seconds(20);

std::unique_ptr<ServerProcess> Start(const std::string& name, const std::string& dir,
                                     std::vector<std::string> peers) {
  std::vector<std::string> args = testing::ReplicaArgs(name, peers);
  args.push_back("--tombstone-min-age=0s");
  args.push_back("--tombstone-collect-interval=50ms");
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(dir, args);
  EXPECT_THAT(server, IsOk());
  return server.ok() ? std::move(*server) : nullptr;
}

std::unique_ptr<Client> Connect(const ServerProcess& server) {
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Connect(rpc::ClientOptions{.address = server.address()});
  EXPECT_THAT(client, IsOk());
  return client.ok() ? std::move(*client) : nullptr;
}

// Polls `server`'s status until `done` holds (another process answers),
// bounded.
template <typename F>
bool StatusUntil(const ServerProcess& server, F done) {
  const auto deadline = std::chrono::steady_clock::now() + kTimeout;
  auto client = Connect(server);
  while (client != nullptr && std::chrono::steady_clock::now() < deadline) {
    absl::StatusOr<rpc::ServerStatus> status = client->Status();
    if (status.ok() && done(*status)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

TEST(PeerForgetProcessTest, AStoppedPeerHoldsCollectionBackUntilForgotten) {
  testing::TempDir dir;
  auto a = Start("a", dir.Sub("a"), {});
  ASSERT_NE(a, nullptr);
  auto b = Start("b", dir.Sub("b"), {a->address()});
  ASSERT_NE(b, nullptr);
  auto client_a = Connect(*a);
  ASSERT_NE(client_a, nullptr);
  auto client_b = Connect(*b);
  ASSERT_NE(client_b, nullptr);
  absl::StatusOr<rpc::ServerStatus> b_status = client_b->Status();
  ASSERT_THAT(b_status, IsOk());
  const uint64_t b_id = b_status->replica_id;

  // While b is linked it acknowledges: the tombstone is collected.
  ASSERT_THAT(client_a->Put("notes", "k1", "v"), IsOk());
  ASSERT_THAT(client_a->Delete("notes", "k1"), IsOk());
  ASSERT_TRUE(StatusUntil(*a, [](const rpc::ServerStatus& s) {
    return s.tombstones_collected >= 1 && s.tombstones == 0;
  })) << a->Log();
  client_b.reset();
  ASSERT_EQ(b->Stop(SIGTERM), 0);

  // b is gone: a new tombstone is held, by b.
  ASSERT_THAT(client_a->Put("notes", "k2", "v"), IsOk());
  ASSERT_THAT(client_a->Delete("notes", "k2"), IsOk());
  ASSERT_TRUE(StatusUntil(*a, [&](const rpc::ServerStatus& s) {
    return s.tombstones_held == 1 && s.tombstones_held_by == b_id;
  })) << a->Log();
  testing::RunResult run =
      testing::Run({testing::RunfilePath("cli/peerkv"), "--server", a->address(), "status"});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(run.out, HasSubstr(absl::StrFormat("tombstones_held: 1 (1 by peer %s",
                                                 ReplicaIdToString(b_id))));

  // Bad input: an unknown peer is NotFound (exit 1).
  run = testing::Run(
      {testing::RunfilePath("cli/peerkv"), "--server", a->address(), "peer", "forget", "nobody"});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.err, HasSubstr("no peer named 'nobody'"));
  run = testing::Run({testing::RunfilePath("cli/peerkv"), "--server", a->address(), "peer",
                      "forget", "00000000000000ab"});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.err, HasSubstr("not a peer this replica waits for"));
  EXPECT_THAT(client_a->ForgetPeer("nobody"), StatusIs(absl::StatusCode::kNotFound));

  // peer forget releases it; the tombstone goes.
  run = testing::Run({testing::RunfilePath("cli/peerkv"), "--server", a->address(), "peer",
                      "forget", ReplicaIdToString(b_id)});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(run.out, HasSubstr("forgot peer " + ReplicaIdToString(b_id)));
  EXPECT_TRUE(StatusUntil(*a, [](const rpc::ServerStatus& s) {
    return s.tombstones == 0 && s.tombstones_held == 0 && s.tombstones_collected >= 2 &&
           s.forgotten_peers == 1;
  })) << a->Log();
  // Forgotten already: NotFound.
  run = testing::Run({testing::RunfilePath("cli/peerkv"), "--server", a->address(), "peer",
                      "forget", ReplicaIdToString(b_id)});
  EXPECT_EQ(run.exit_code, 1);

  run = testing::Run({testing::RunfilePath("cli/peerkv"), "peer", "--help"});
  EXPECT_EQ(run.exit_code, 0);
  EXPECT_THAT(run.out, HasSubstr("forget PEER"));
}

}  // namespace
}  // namespace peerkv
