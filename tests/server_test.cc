// tests/server_test.cc: the real `peerkv serve` binary on a free loopback
// port, driven by the client library, the CLI and raw sockets: round trips,
// watch order and resumption, concurrent writers across a restart, SIGKILL
// under write load, garbage and oversized messages, graceful shutdown, and
// file descriptors after many connections.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <random>
#include <thread>

#include "absl/strings/str_format.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rpc/client.h"
#include "testing/server_process.h"
#include "testing/subprocess.h"
#include "testing/seed.h"
#include "testing/temp_dir.h"

namespace peerkv {
namespace {

using absl::StatusCode;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using rpc::Client;
using rpc::ClientOptions;
using testing::ServerProcess;

class ServerTest : public ::testing::Test {
 protected:
  std::unique_ptr<ServerProcess> StartServer(std::vector<std::string> args = {}) {
    absl::StatusOr<std::unique_ptr<ServerProcess>> server =
        ServerProcess::Start(dir_.Sub("db"), args);
    EXPECT_THAT(server, IsOk());
    return server.ok() ? std::move(*server) : nullptr;
  }

  static std::unique_ptr<Client> Connect(const std::string& address) {
    absl::StatusOr<std::unique_ptr<Client>> client =
        Client::Connect(ClientOptions{.address = address, .timeout = absl::Seconds(20)});
    EXPECT_THAT(client, IsOk());
    return client.ok() ? std::move(*client) : nullptr;
  }

  static testing::RunResult Cli(const std::string& address, std::vector<std::string> args,
                                const std::string& input = "") {
    args.insert(args.begin(), {testing::RunfilePath("cli/peerkv"), "--server", address});
    return testing::Run(args, input);
  }

  // Waits (up to 10 s) for the peer to close `fd`; true if it did.
  static bool ClosedByPeer(int fd) {
    char buf[4096];
    for (int i = 0; i < 1000; ++i) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 10'000) <= 0) return false;
      const ssize_t n = read(fd, buf, sizeof(buf));
      if (n <= 0) return true;  // EOF or reset
    }
    return false;
  }

  testing::TempDir dir_;
};

TEST_F(ServerTest, EveryOperationRoundTripsThroughLibraryAndCli) {
  auto server = StartServer({"--replica-name", "pc"});
  ASSERT_NE(server, nullptr);
  auto client = Connect(server->address());
  ASSERT_NE(client, nullptr);

  ASSERT_THAT(client->Put("contacts", "bob", "Bob <bob@example.org>"), IsOk());
  ASSERT_THAT(client->WriteBatch({{"mail", "draft-1", "Hi Bob"}, {"mail", "draft-2", "Hi"}}),
              IsOk());
  ASSERT_THAT(client->Delete("mail", "draft-2"), IsOk());
  EXPECT_EQ((*client->Get("contacts", "bob"))->value, "Bob <bob@example.org>");
  absl::StatusOr<ScanResult> scan = client->Scan("mail", ScanOptions{});
  ASSERT_THAT(scan, IsOk());
  ASSERT_EQ(scan->records.size(), 1u);
  EXPECT_EQ(scan->records[0].key, "draft-1");

  // The CLI's remote mode sees the same data.
  testing::RunResult get = Cli(server->address(), {"get", "contacts", "bob"});
  EXPECT_EQ(get.exit_code, 0) << get.err;
  EXPECT_EQ(get.out, "Bob <bob@example.org>");
  testing::RunResult put = Cli(server->address(), {"put", "mail", "draft-3", "-"}, "from stdin");
  EXPECT_EQ(put.exit_code, 0) << put.err;
  EXPECT_EQ((*client->Get("mail", "draft-3"))->value, "from stdin");
  testing::RunResult scan_cli = Cli(server->address(), {"scan", "mail", "--tombstones"});
  EXPECT_EQ(scan_cli.out, "draft-1\tHi Bob\ndraft-2\t(deleted)\ndraft-3\tfrom stdin\n");
  testing::RunResult del = Cli(server->address(), {"del", "mail", "draft-1"});
  EXPECT_EQ(del.exit_code, 0);
  testing::RunResult gone = Cli(server->address(), {"get", "mail", "draft-1"});
  EXPECT_EQ(gone.exit_code, 1);
  EXPECT_EQ(gone.err, "not found\n");
  testing::RunResult status = Cli(server->address(), {"status"});
  EXPECT_EQ(status.exit_code, 0) << status.err;
  EXPECT_THAT(status.out, HasSubstr("replica_name: pc\n"));
  EXPECT_THAT(status.out, HasSubstr("live_records: 2\n"));
  EXPECT_THAT(status.out, HasSubstr("tombstones: 2\n"));
  EXPECT_THAT(status.out, HasSubstr("max_seq: 6\n"));
  EXPECT_THAT(status.out, ::testing::ContainsRegex("uptime_ms: [0-9]+\n"));
  EXPECT_THAT(status.out, ::testing::ContainsRegex("connected_clients: [1-9][0-9]*\n"));
  EXPECT_EQ(server->Stop(SIGTERM), 0);
}

TEST_F(ServerTest, BadInputIsRefusedNamingTheLimitAndLogged) {
  auto server = StartServer({"--max-value-bytes", "1000"});
  ASSERT_NE(server, nullptr);
  auto client = Connect(server->address());
  EXPECT_THAT(client->Put("ks", "k", std::string(1001, 'v')),
              StatusIs(StatusCode::kInvalidArgument, "value is 1001 bytes; the limit is 1000"));
  EXPECT_THAT(client->Put("ks", std::string(401, 'k'), "v"),
              StatusIs(StatusCode::kInvalidArgument, "key is 401 bytes; the limit is 400"));
  // The CLI does not ask the server's limit first (no status call): the
  // server refuses the value, naming its limit.
  testing::RunResult cli = Cli(server->address(), {"put", "ks", "k", "-"}, std::string(1001, 'v'));
  EXPECT_EQ(cli.exit_code, 2);
  EXPECT_EQ(cli.err, "peerkv put: value is 1001 bytes; the limit is 1000\n");
  EXPECT_THAT(server->WaitForLog("rejected put from"),
              ::testing::ContainsRegex("rejected put from 127\\.0\\.0\\.1:[0-9]+: value is 1001 "
                                       "bytes; the limit is 1000"));
  // A message beyond the reader limit (2 x 1000 + 1 MiB) closes only that
  // connection.
  EXPECT_FALSE(client->Put("ks", "k", std::string(3 << 20, 'v')).ok());
  auto other = Connect(server->address());
  EXPECT_THAT(other->Put("ks", "k", "still serving"), IsOk());
  // The rejections after the first from this host within a minute are
  // counted, not logged one by one; the count comes at the latest when the
  // server stops.
  EXPECT_EQ(server->Stop(SIGTERM), 0);
  EXPECT_THAT(server->Log(), ::testing::ContainsRegex(
                                 "rejected 3 more from 127\\.0\\.0\\.1 within 1m .*the last: "
                                 "connection from 127\\.0\\.0\\.1:[0-9]+: .*too large"));
}

TEST_F(ServerTest, RejectionsAreLoggedOncePerClientWithACount) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto client = Connect(server->address());
  ASSERT_NE(client, nullptr);
  // One putMany of 9,000 invalid writes, then 100 invalid puts.
  std::vector<Mutation> invalid;
  for (int i = 0; i < 9000; ++i) invalid.push_back({"BAD", absl::StrFormat("k%d", i), "v"});
  absl::StatusOr<std::vector<absl::StatusOr<Version>>> results = client->PutMany(invalid);
  ASSERT_THAT(results, IsOk());
  ASSERT_EQ(results->size(), 9000u);
  for (const auto& r : *results) EXPECT_THAT(r, StatusIs(StatusCode::kInvalidArgument, "keyspace"));
  for (int i = 0; i < 100; ++i) {
    EXPECT_THAT(client->Put("ks", "", "v"), StatusIs(StatusCode::kInvalidArgument, "key is empty"));
  }
  EXPECT_THAT(client->Put("ks", "fine", "v"), IsOk());
  EXPECT_EQ(server->Stop(SIGTERM), 0);
  std::vector<std::string> rejected;
  for (absl::string_view line : absl::StrSplit(server->Log(), '\n')) {
    if (absl::StrContains(line, "rejected")) rejected.emplace_back(line);
  }
  ASSERT_EQ(rejected.size(), 2u) << server->Log().substr(0, 4096);
  EXPECT_THAT(rejected[0], ::testing::ContainsRegex(
                               "rejected putMany from 127\\.0\\.0\\.1:[0-9]+: 9000 items, the "
                               "first: keyspace"));
  EXPECT_THAT(rejected[1], ::testing::ContainsRegex(
                               "rejected 100 more from 127\\.0\\.0\\.1 within 1m .*the last: put "
                               "from 127\\.0\\.0\\.1:[0-9]+: key is empty"));
}

TEST_F(ServerTest, GarbageAndTruncatedMessagesCloseOnlyThatConnection) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto client = Connect(server->address());
  ASSERT_THAT(client->Put("ks", "before", "v"), IsOk());

  // On TCP, TLS refuses such bytes before Cap'n Proto sees them; the RPC
  // layer's own checks are reached through the local socket.
  // Garbage: a segment table claiming 4 billion segments.
  const int garbage = testing::ConnectLocal(dir_.Sub("db"));
  ASSERT_GE(garbage, 0);
  const std::string junk(4096, '\xff');
  ASSERT_EQ(write(garbage, junk.data(), junk.size()), static_cast<ssize_t>(junk.size()));
  EXPECT_TRUE(ClosedByPeer(garbage));
  close(garbage);

  // Oversized: one segment of 2^28 words (2 GiB) announced.
  const int oversized = testing::ConnectLocal(dir_.Sub("db"));
  ASSERT_GE(oversized, 0);
  const uint32_t header[2] = {0, 1u << 28};
  ASSERT_EQ(write(oversized, header, sizeof(header)), static_cast<ssize_t>(sizeof(header)));
  EXPECT_TRUE(ClosedByPeer(oversized));
  close(oversized);

  // Truncated: a message announcing 100 words, 10 sent, then the client
  // goes away.
  const int truncated = testing::ConnectLocal(dir_.Sub("db"));
  ASSERT_GE(truncated, 0);
  const uint32_t partial_header[2] = {0, 100};
  ASSERT_EQ(write(truncated, partial_header, sizeof(partial_header)),
            static_cast<ssize_t>(sizeof(partial_header)));
  const std::string ten_words(80, '\0');
  ASSERT_EQ(write(truncated, ten_words.data(), ten_words.size()), 80);
  close(truncated);

  // The established client, and new ones, are served as before.
  EXPECT_THAT(client->Put("ks", "after", "v"), IsOk());
  auto fresh = Connect(server->address());
  EXPECT_EQ((*fresh->Get("ks", "before"))->value, "v");
  const std::string log = server->WaitForLog("too large");
  EXPECT_THAT(log, HasSubstr("rejected connection from local: "));
  EXPECT_THAT(log, HasSubstr("too large"));
  EXPECT_EQ(server->Stop(SIGINT), 0);
}

TEST_F(ServerTest, WatchSeesEveryChangeInCommitOrderAndResumes) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto writer = Connect(server->address());
  auto watcher = Connect(server->address());
  constexpr int kWrites = 300;
  std::vector<std::string> seen;
  std::vector<uint64_t> seqs;
  uint64_t resume = 0;
  std::thread watching([&] {
    EXPECT_THAT(watcher->Watch(rpc::WatchOptions{.keyspace = "feed"},
                               [&](const std::vector<Record>& records, uint64_t last_seq) {
                                 for (const Record& r : records) {
                                   seen.push_back(r.key);
                                   seqs.push_back(r.seq);
                                 }
                                 resume = last_seq;
                                 return seen.size() < kWrites;
                               }),
                IsOk());
  });
  // Writes from three clients at once, interleaved with another keyspace.
  std::vector<std::thread> writers;
  for (int w = 0; w < 3; ++w) {
    writers.emplace_back([&, w] {
      auto c = Connect(server->address());
      for (int i = w; i < kWrites; i += 3) {
        ASSERT_THAT(c->Put("feed", absl::StrFormat("post-%03d", i), "x"), IsOk());
        ASSERT_THAT(c->Put("other", absl::StrFormat("noise-%03d", i), "x"), IsOk());
      }
    });
  }
  for (auto& t : writers) t.join();
  watching.join();
  ASSERT_EQ(seen.size(), static_cast<size_t>(kWrites));
  // Commit order is seq order, and every key arrived once.
  EXPECT_TRUE(std::is_sorted(seqs.begin(), seqs.end()));
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), seen.size());

  // Resuming after the last seq delivers only later changes.
  ASSERT_THAT(writer->Put("feed", "late", "y"), IsOk());
  std::vector<std::string> later;
  ASSERT_THAT(watcher->Watch(rpc::WatchOptions{.keyspace = "feed", .from_seq = resume},
                             [&](const std::vector<Record>& records, uint64_t) {
                               for (const Record& r : records) later.push_back(r.key);
                               return false;
                             }),
              IsOk());
  EXPECT_THAT(later, ElementsAre("late"));

  // The CLI prints one JSON line per change.
  testing::RunResult watch_cli =
      testing::Run({testing::RunfilePath("cli/peerkv"), "--server", server->address(), "watch",
                    "feed", "--from-seq", std::to_string(resume)},
                   "", std::chrono::milliseconds(1500));
  EXPECT_THAT(watch_cli.out, ::testing::StartsWith("{\"keyspace\":\"feed\",\"key\":\"late\""));
}

TEST_F(ServerTest, ClientsThatLeaveMidWatchFreeWhatTheyHeld) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto probe = Connect(server->address());
  ASSERT_THAT(probe->Put("ks", "k", "v"), IsOk());
  const int baseline_fds = testing::OpenFileDescriptors(server->pid());
  for (int i = 0; i < 20; ++i) {
    // A watch CLI killed while it waits for changes: once it has printed
    // the existing record, it is watching.
    testing::Process watch(
        {testing::RunfilePath("cli/peerkv"), "--server", server->address(), "watch", "ks"});
    ASSERT_TRUE(watch.WaitForOutput("\"key\":\"k\"", std::chrono::seconds(30)).has_value())
        << watch.Output();
    EXPECT_TRUE(watch.running());
    watch.Kill();
  }
  // Bounded wait for the server to notice the 20 disconnects.
  absl::StatusOr<rpc::ServerStatus> status;
  for (int i = 0; i < 500; ++i) {
    status = probe->Status();
    if (status.ok() && status->connected_clients == 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_THAT(status, IsOk());
  EXPECT_EQ(status->connected_clients, 1u);
  EXPECT_EQ(testing::OpenFileDescriptors(server->pid()), baseline_fds);
  // Writes still flow (no watch session left behind blocks anything).
  EXPECT_THAT(probe->Put("ks", "k2", "v"), IsOk());
}

TEST_F(ServerTest, AThousandConnectionsLeaveNoFileDescriptorsBehind) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto probe = Connect(server->address());
  ASSERT_THAT(probe->Put("ks", "k", "v"), IsOk());
  const int baseline = testing::OpenFileDescriptors(server->pid());
  ASSERT_GT(baseline, 0);
  for (int round = 0; round < 10; ++round) {
    std::vector<int> fds;
    for (int i = 0; i < 100; ++i) {
      const int fd = testing::ConnectTcp(server->address());
      ASSERT_GE(fd, 0);
      fds.push_back(fd);
    }
    for (int fd : fds) close(fd);
  }
  // Bounded wait for the server to process the 1000 hang-ups.
  int fds_now = -1;
  for (int i = 0; i < 500; ++i) {
    absl::StatusOr<rpc::ServerStatus> status = probe->Status();
    ASSERT_THAT(status, IsOk());
    fds_now = testing::OpenFileDescriptors(server->pid());
    if (status->connected_clients == 1 && fds_now == baseline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(fds_now, baseline);
}

TEST_F(ServerTest, ConcurrentWritersAreAllAcknowledgedAndSurviveARestart) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  constexpr int kClients = 8;
  constexpr int kPerClient = 100;
  std::vector<std::thread> threads;
  std::atomic<int> acknowledged{0};
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      auto client = Connect(server->address());
      ASSERT_NE(client, nullptr);
      for (int i = 0; i < kPerClient; ++i) {
        ASSERT_THAT(client->Put("ks", absl::StrFormat("c%d-%03d", c, i),
                                absl::StrFormat("value %d/%d", c, i)),
                    IsOk());
        ++acknowledged;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(acknowledged.load(), kClients * kPerClient);
  EXPECT_EQ(server->Stop(SIGTERM), 0);
  EXPECT_THAT(server->Log(), HasSubstr("SIGTERM received, stopping"));
  EXPECT_THAT(server->Log(), HasSubstr("stopped"));

  auto restarted = StartServer();
  ASSERT_NE(restarted, nullptr);
  auto client = Connect(restarted->address());
  for (int c = 0; c < kClients; ++c) {
    for (int i = 0; i < kPerClient; ++i) {
      absl::StatusOr<std::optional<Record>> got = client->Get("ks", absl::StrFormat("c%d-%03d", c, i));
      ASSERT_THAT(got, IsOk());
      ASSERT_TRUE(got->has_value()) << c << "/" << i;
      EXPECT_EQ((*got)->value, absl::StrFormat("value %d/%d", c, i));
    }
  }
  EXPECT_EQ(client->Status()->live_records, static_cast<uint64_t>(kClients * kPerClient));
}

TEST_F(ServerTest, AcknowledgedWritesSurviveSigkillUnderLoad) {
  std::mt19937_64 rng(testing::TestSeed());
  absl::Mutex mu;
  std::map<std::string, std::string> acknowledged;  // guarded by mu
  constexpr int kKills = 10;
  for (int round = 0; round < kKills; ++round) {
    auto server = StartServer();
    ASSERT_NE(server, nullptr);
    // Everything acknowledged in earlier rounds is still there.
    auto checker = Connect(server->address());
    for (const auto& [key, value] : acknowledged) {
      absl::StatusOr<std::optional<Record>> got = checker->Get("ks", key);
      ASSERT_THAT(got, IsOk());
      ASSERT_TRUE(got->has_value()) << "round " << round << ": lost " << key;
      ASSERT_EQ((*got)->value, value);
    }
    checker.reset();

    int acks_this_round = 0;  // guarded by mu
    // Every writer connects before any writes: a writer that connected only
    // after the kill would fail to connect, which is not what is tested.
    std::vector<std::unique_ptr<Client>> clients;
    for (int w = 0; w < 4; ++w) {
      clients.push_back(Connect(server->address()));
      ASSERT_NE(clients.back(), nullptr);
    }
    std::vector<std::thread> writers;
    for (int w = 0; w < 4; ++w) {
      writers.emplace_back([&, w] {
        Client* client = clients[w].get();
        for (int i = 0; i < 100'000; ++i) {
          const std::string key = absl::StrFormat("r%d-w%d-%d", round, w, i);
          const std::string value = absl::StrFormat("v%d", i);
          if (!client->Put("ks", key, value).ok()) return;  // the server died
          absl::MutexLock lock(&mu);
          acknowledged[key] = value;
          ++acks_this_round;
        }
      });
    }
    // Kill after a random number of acknowledgements.
    const int target = std::uniform_int_distribution<int>(50, 800)(rng);
    {
      absl::MutexLock lock(&mu);
      auto reached = [&]() {
        mu.AssertHeld();
        return acks_this_round >= target;
      };
      mu.AwaitWithTimeout(absl::Condition(&reached), absl::Seconds(30));
    }
    server->process().Kill();
    for (auto& t : writers) t.join();
    absl::MutexLock lock(&mu);
    EXPECT_GE(acks_this_round, target) << "round " << round;
  }
  auto server = StartServer();
  auto checker = Connect(server->address());
  for (const auto& [key, value] : acknowledged) {
    absl::StatusOr<std::optional<Record>> got = checker->Get("ks", key);
    ASSERT_THAT(got, IsOk());
    ASSERT_TRUE(got->has_value()) << "lost " << key;
  }
  EXPECT_GE(checker->Status()->live_records, acknowledged.size());
}

TEST_F(ServerTest, GracefulShutdownFinishesInFlightWritesAndExitsZero) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  absl::Mutex mu;
  int acknowledged = 0;  // guarded by mu
  // Connected before the stop, so that every writer is refused mid-write
  // rather than at connect.
  std::vector<std::unique_ptr<Client>> clients;
  for (int w = 0; w < 4; ++w) {
    clients.push_back(Connect(server->address()));
    ASSERT_NE(clients.back(), nullptr);
  }
  std::vector<std::thread> writers;
  for (int w = 0; w < 4; ++w) {
    writers.emplace_back([&, w] {
      Client* client = clients[w].get();
      for (int i = 0; i < 100'000; ++i) {
        if (!client->Put("ks", absl::StrFormat("w%d-%d", w, i), "v").ok()) return;
        absl::MutexLock lock(&mu);
        ++acknowledged;
      }
    });
  }
  {
    absl::MutexLock lock(&mu);
    auto enough = [&]() {
      mu.AssertHeld();
      return acknowledged >= 200;
    };
    mu.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(30));
  }
  // Stop while the writers are still sending.
  EXPECT_EQ(server->Stop(SIGTERM), 0);
  for (auto& t : writers) t.join();
  absl::MutexLock lock(&mu);
  const int acked = acknowledged;
  ASSERT_GT(acked, 0);
  auto restarted = StartServer();
  auto client = Connect(restarted->address());
  // Every acknowledged write is there; an in-flight one may be too.
  EXPECT_GE(client->Status()->live_records, static_cast<uint64_t>(acked));
  EXPECT_LE(client->Status()->live_records, static_cast<uint64_t>(acked + 4));
}

}  // namespace
}  // namespace peerkv
