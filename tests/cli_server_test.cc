// tests/cli_server_test.cc: the CLI against real servers, as an operator
// meets it: status --json, keyspace list with counts, bench in a keyspace of
// its own with --cleanup, watch resuming across a server restart, and the
// server's one log line when a peer goes and one when it returns.
#include <algorithm>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/server_process.h"
#include "testing/subprocess.h"
#include "testing/temp_dir.h"

namespace peerkv {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using testing::RunResult;
using testing::ServerProcess;

class CliServerTest : public ::testing::Test {
 protected:
  // The CLI against the server holding `data`, through its socket.
  RunResult Peerkv(const std::string& data, std::vector<std::string> args) {
    args.insert(args.begin(),
                {testing::RunfilePath("cli/peerkv"), "--server", "unix:" + data + "/peerkv.sock"});
    return testing::Run(args);
  }

  static int Count(const std::string& text, const std::string& part) {
    int n = 0;
    for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
    return n;
  }

  testing::TempDir dir_;
};

TEST_F(CliServerTest, StatusJsonIsOneObjectWithTheFactsAndPeers) {
  const std::string data = dir_.Sub("a");
  auto server = ServerProcess::Start(data, {"--replica-name", "123"});
  ASSERT_TRUE(server.ok()) << server.status();
  RunResult put = Peerkv(data, {"put", "ks", "k", "v"});
  ASSERT_EQ(put.exit_code, 0) << put.err;
  RunResult status = Peerkv(data, {"status", "--json"});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  EXPECT_EQ(Count(status.out, "\n"), 1);
  EXPECT_THAT(status.out, MatchesRegex("\\{.*\\}\n"));
  EXPECT_THAT(status.out, HasSubstr("\"live_records\":1,"));
  // A name of digits stays a string; ids are strings.
  EXPECT_THAT(status.out, HasSubstr("\"replica_name\":\"123\""));
  EXPECT_THAT(status.out, MatchesRegex(".*\"replica_id\":\"[0-9a-f]{16}\".*"));
  EXPECT_THAT(status.out, HasSubstr("\"peers\":[]"));
  // The same through Python's JSON parser, if the machine has one.
  RunResult parsed = testing::Run(
      {"/usr/bin/python3", "-c",
       "import json,sys; d=json.loads(sys.stdin.read()); print(d['live_records'], "
       "len(d['peers']), d['replica_name'])"},
      status.out);
  ASSERT_EQ(parsed.exit_code, 0) << parsed.err;
  EXPECT_EQ(parsed.out, "1 0 123\n");
  EXPECT_EQ(server.value()->Stop(SIGTERM), 0);
}

TEST_F(CliServerTest, KeyspaceListCountsAndBenchCleansUpItsOwnKeyspace) {
  const std::string data = dir_.Sub("a");
  auto server = ServerProcess::Start(data);
  ASSERT_TRUE(server.ok()) << server.status();
  for (const char* key : {"a", "b", "c"}) ASSERT_EQ(Peerkv(data, {"put", "mine", key, "v"}).exit_code, 0);
  RunResult bench = Peerkv(data, {"bench", "-c", "2", "-n", "200", "-r", "50", "-t", "put",
                                  "--keyspace", "load", "--cleanup"});
  ASSERT_EQ(bench.exit_code, 0) << bench.err;
  EXPECT_THAT(bench.out, HasSubstr("PUT: "));
  EXPECT_THAT(bench.out, MatchesRegex("(.|\n)*cleanup: deleted [1-9][0-9]* keys of keyspace load\n"));
  // The user's keyspace is untouched; the bench keyspace holds no live key.
  EXPECT_EQ(Peerkv(data, {"scan", "mine"}).out, "a\tv\nb\tv\nc\tv\n");
  EXPECT_EQ(Peerkv(data, {"scan", "load"}).out, "");
  RunResult list = Peerkv(data, {"keyspace", "list"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_THAT(list.out, HasSubstr("mine\tlww\t3 registers\t-\t0 switches\n"));
  EXPECT_THAT(list.out, MatchesRegex("(.|\n)*load\tlww\t[1-9][0-9]* registers(.|\n)*"));
  RunResult again = Peerkv(data, {"bench", "--keyspace", "load", "--cleanup", "--no-run"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(again.out, "cleanup: deleted 0 keys of keyspace load\n");
  RunResult bad = Peerkv(data, {"bench", "--no-run"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.err, HasSubstr("--no-run goes with --cleanup"));
  EXPECT_EQ(server.value()->Stop(SIGTERM), 0);
}

TEST_F(CliServerTest, WatchResumesAfterTheServerRestarts) {
  const std::string data = dir_.Sub("a");
  auto server = ServerProcess::Start(data);
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string address = server.value()->address();
  ASSERT_EQ(Peerkv(data, {"put", "feed", "first", "1"}).exit_code, 0);
  testing::Process watch({testing::RunfilePath("cli/peerkv"), "--server", address, "watch",
                          "feed", "--reconnect-for", "60s"});
  ASSERT_TRUE(watch.WaitForOutput("\"key\":\"first\"", std::chrono::seconds(30)).has_value())
      << watch.Output();
  ASSERT_EQ(server.value()->Stop(SIGTERM), 0);
  ASSERT_TRUE(watch.WaitForOutput("reconnecting for up to", std::chrono::seconds(30)).has_value())
      << watch.Output();
  EXPECT_TRUE(watch.running());

  server = ServerProcess::Start(data, {"--listen", address});
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_EQ(Peerkv(data, {"put", "feed", "second", "2"}).exit_code, 0);
  ASSERT_TRUE(watch.WaitForOutput("\"key\":\"second\"", std::chrono::seconds(30)).has_value())
      << watch.Output();
  const std::string out = watch.Output();
  EXPECT_THAT(out, HasSubstr("reconnected to " + address + "; resumed after seq "));
  // Resumed after the last seq printed: the first record is not printed again.
  EXPECT_EQ(Count(out, "\"key\":\"first\""), 1) << out;
  watch.Kill();
  EXPECT_EQ(server.value()->Stop(SIGTERM), 0);
}

TEST_F(CliServerTest, WatchWithoutReconnectEndsWhenTheServerGoes) {
  const std::string data = dir_.Sub("a");
  auto server = ServerProcess::Start(data);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_EQ(Peerkv(data, {"put", "feed", "first", "1"}).exit_code, 0);
  testing::Process watch({testing::RunfilePath("cli/peerkv"), "--server",
                          server.value()->address(), "watch", "feed", "--reconnect-for", "0"});
  ASSERT_TRUE(watch.WaitForOutput("\"key\":\"first\"", std::chrono::seconds(30)).has_value())
      << watch.Output();
  ASSERT_EQ(server.value()->Stop(SIGTERM), 0);
  EXPECT_EQ(watch.Wait(std::chrono::seconds(30)), 1) << watch.Output();
  EXPECT_THAT(watch.Output(), HasSubstr("lost"));
}

TEST_F(CliServerTest, APeerGoingAndComingBackIsLoggedOnceEach) {
  auto b = ServerProcess::Start(dir_.Sub("b"), testing::ReplicaArgs("b"));
  ASSERT_TRUE(b.ok()) << b.status();
  const std::string b_address = b.value()->address();
  auto a = ServerProcess::Start(dir_.Sub("a"), testing::ReplicaArgs("a", {b_address}));
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_EQ(Peerkv(dir_.Sub("a"), {"put", "ks", "k1", "v"}).exit_code, 0);
  ASSERT_EQ(b.value()->Stop(SIGTERM), 0);
  const std::string gone = "peer at " + b_address + " is unreachable";
  EXPECT_THAT(a.value()->WaitForLog(gone), HasSubstr(gone));

  b = ServerProcess::Start(dir_.Sub("b"), {"--listen", b_address, "--replica-name", "b",
                                            "--gossip-interval-ms", "100"});
  ASSERT_TRUE(b.ok()) << b.status();
  const std::string back = "peer at " + b_address + " is reachable again";
  const std::string log = a.value()->WaitForLog(back);
  EXPECT_THAT(log, HasSubstr(back));
  // Many failed dials in between, one line each way.
  EXPECT_EQ(Count(log, gone), 1) << log;
  EXPECT_EQ(Count(log, back), 1) << log;
  EXPECT_EQ(a.value()->Stop(SIGTERM), 0);
  EXPECT_EQ(b.value()->Stop(SIGTERM), 0);
}

}  // namespace
}  // namespace peerkv
