// tests/connection_limits_test.cc: a real `peerkv serve` at the edge of its
// connection resources: run out of file descriptors (a low RLIMIT_NOFILE
// set in the child before exec) and recover once clients leave; and
// connections that never finish a message (slowloris) are closed after the
// idle timeout while idle clients that did finish theirs are kept.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rpc/client.h"
#include "testing/server_process.h"
#include "testing/subprocess.h"
#include "testing/temp_dir.h"

namespace peerkv {
namespace {

using rpc::Client;
using rpc::ClientOptions;
using testing::ServerProcess;

constexpr int kFdLimit = 64;

// Waits up to `timeout` for the peer to close `fd`; true if it did.
bool ClosedByPeer(int fd, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) return true;  // EOF or reset
  }
}

// One fresh connection and one durable put, within `timeout`.
absl::Status FreshPut(const std::string& address, absl::Duration timeout) {
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Connect(ClientOptions{.address = address, .timeout = timeout});
  if (!client.ok()) return client.status();
  return (*client)->Put("ks", "fresh", "v").status();
}

int Count(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

class ConnectionLimitsTest : public ::testing::Test {
 protected:
  testing::TempDir dir_;
};

TEST_F(ConnectionLimitsTest, AcceptRecoversAfterTheFileDescriptorTableWasFull) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> started = ServerProcess::Start(
      dir_.Sub("db"), {}, testing::ProcessOptions{.max_open_files = kFdLimit});
  ASSERT_THAT(started, IsOk());
  ServerProcess& server = **started;
  absl::StatusOr<std::unique_ptr<Client>> probe =
      Client::Connect(ClientOptions{.address = server.address(), .timeout = absl::Seconds(10)});
  ASSERT_THAT(probe, IsOk());
  ASSERT_THAT((*probe)->Put("ks", "k", "v"), IsOk());
  ASSERT_LT(testing::OpenFileDescriptors(server.pid()), kFdLimit - 8);

  // More idle connections than the server has descriptors: the kernel
  // completes them all (the listen queue), the server accepts until its
  // table is full, and then accept(2) fails with EMFILE.
  std::vector<int> idle;
  for (int i = 0; i < 2 * kFdLimit; ++i) {
    const int fd = testing::ConnectTcp(server.address());
    ASSERT_GE(fd, 0) << "connection " << i;
    idle.push_back(fd);
  }
  // The event: the server's descriptor table is full (another process, so
  // this polls, bounded).
  bool full = false;
  for (int i = 0; i < 1000 && !full; ++i) {
    full = testing::OpenFileDescriptors(server.pid()) >= kFdLimit;
    if (!full) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(full) << "the server never filled its table; it has "
                    << testing::OpenFileDescriptors(server.pid());
  // Existing connections keep working while it is full.
  EXPECT_THAT((*probe)->Put("ks", "k", "v2"), IsOk());

  for (int fd : idle) close(fd);
  // The event awaited: a new client is served. Each try is bounded by its
  // own timeout; the whole wait by the loop.
  absl::Status last = absl::UnknownError("not tried");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    last = FreshPut(server.address(), absl::Seconds(1));
    if (last.ok()) break;
  }
  EXPECT_THAT(last, IsOk()) << server.Log();
  // Logged, once per episode rather than once per failed accept.
  const std::string log = server.WaitForLog("accept failed");
  const int lines = Count(log, "accept failed");
  EXPECT_GE(lines, 1) << log;
  EXPECT_LE(lines, 3) << log;
  EXPECT_THAT(log, ::testing::HasSubstr("open files")) << log;
  EXPECT_EQ(server.Stop(SIGINT), 0);
}

TEST_F(ConnectionLimitsTest, ConnectionsThatNeverFinishAMessageAreClosedAfterTheIdleTimeout) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> started =
      ServerProcess::Start(dir_.Sub("db"), {"--idle-timeout-ms", "300"});
  ASSERT_THAT(started, IsOk());
  ServerProcess& server = **started;
  // A client that finished its messages and then waits is not idle in this
  // sense: it is kept however long it waits.
  absl::StatusOr<std::unique_ptr<Client>> patient =
      Client::Connect(ClientOptions{.address = server.address(), .timeout = absl::Seconds(10)});
  ASSERT_THAT(patient, IsOk());
  ASSERT_THAT((*patient)->Put("ks", "k", "v"), IsOk());

  const auto opened = std::chrono::steady_clock::now();
  // Over the local socket (on TCP a connection that never finishes its
  // TLS handshake is dropped after the handshake timeout instead).
  // Says nothing at all.
  const int silent = testing::ConnectLocal(dir_.Sub("db"));
  ASSERT_GE(silent, 0);
  // Starts a message (announces 100 words, sends 10) and stalls.
  const int stalled = testing::ConnectLocal(dir_.Sub("db"));
  ASSERT_GE(stalled, 0);
  const uint32_t header[2] = {0, 100};
  ASSERT_EQ(write(stalled, header, sizeof(header)), static_cast<ssize_t>(sizeof(header)));
  const std::string ten_words(80, '\0');
  ASSERT_EQ(write(stalled, ten_words.data(), ten_words.size()), 80);

  EXPECT_TRUE(ClosedByPeer(silent, std::chrono::seconds(10)));
  EXPECT_TRUE(ClosedByPeer(stalled, std::chrono::seconds(10)));
  EXPECT_GE(std::chrono::steady_clock::now() - opened, std::chrono::milliseconds(300));
  close(silent);
  close(stalled);
  // The patient client has waited longer than either, on the same
  // connection.
  EXPECT_THAT((*patient)->Put("ks", "k", "v2"), IsOk());
  const std::string log = server.WaitForLog("no complete message within 300 ms", 2);
  EXPECT_EQ(Count(log, "no complete message within 300 ms"), 2) << log;
  EXPECT_EQ(server.Stop(SIGINT), 0);
}

TEST_F(ConnectionLimitsTest, TimeoutFlagsAreValidated) {
  for (const std::string flag : {"--idle-timeout-ms", "--keepalive-ms"}) {
    for (const std::string bad : {"0", "99", "3600001", "soon"}) {
      testing::RunResult r = testing::Run({testing::RunfilePath("cli/peerkv"), "serve", "--data",
                                           dir_.Sub("v"), "--listen", "127.0.0.1:0", flag, bad});
      EXPECT_EQ(r.exit_code, 2) << flag << " " << bad << ": " << r.err;
      EXPECT_THAT(r.err, ::testing::HasSubstr(flag + " must be an integer in 100..")) << bad;
    }
  }
}

}  // namespace
}  // namespace peerkv
