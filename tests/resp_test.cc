// tests/resp_test.cc: a real `peerkv serve --resp-listen` driven by the
// Redis tools and client library from Debian: redis-cli (one command per
// call, inline from stdin, RESP3, --pipe for a pipelined stream),
// redis-benchmark (unchanged, a short run), python3-redis (tests/
// resp_client.py), and bad input at the process level: malformed frames,
// thousands of idle connections, after which the server's descriptors
// return to their level and it keeps serving. Also the refusals of unsafe
// start-up flags.
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/server_process.h"
#include "testing/subprocess.h"
#include "testing/temp_dir.h"

namespace peerkv {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

class RespProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<testing::ServerProcess>> server =
        testing::ServerProcess::Start(dir_.Sub("db"), {"--resp-listen", "127.0.0.1:0",
                                                       "--resp-insecure-loopback",
                                                       "--replica-name", "resp-test"});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    const std::string log = server_->Log();
    const std::string marker = "RESP clients: 127.0.0.1:";
    const size_t at = log.find(marker);
    ASSERT_NE(at, std::string::npos) << log;
    port_ = log.substr(at + marker.size(), log.find(' ', at + marker.size()) - at - marker.size());
  }

  testing::RunResult Cli(std::vector<std::string> args, const std::string& input = "") {
    std::vector<std::string> argv = {"/usr/bin/redis-cli", "-p", port_};
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::Run(argv, input, std::chrono::seconds(30));
  }
  std::string Out(std::vector<std::string> args) { return Cli(std::move(args)).out; }

  testing::TempDir dir_{"resp-process"};
  std::unique_ptr<testing::ServerProcess> server_;
  std::string port_;
};

TEST_F(RespProcessTest, RedisCliCommands) {
  EXPECT_EQ(Out({"PING"}), "PONG\n");
  EXPECT_EQ(Out({"SET", "a", "1"}), "OK\n");
  EXPECT_EQ(Out({"GET", "a"}), "1\n");
  EXPECT_EQ(Out({"MSET", "b", "2", "c", "3"}), "OK\n");
  EXPECT_EQ(Out({"MGET", "a", "b", "nope", "c"}), "1\n2\n\n3\n");
  EXPECT_EQ(Out({"EXISTS", "a", "nope"}), "1\n");
  EXPECT_EQ(Out({"TYPE", "a"}), "string\n");
  EXPECT_EQ(Out({"DBSIZE"}), "3\n");
  EXPECT_EQ(Out({"KEYS", "*"}), "a\nb\nc\n");
  EXPECT_EQ(Out({"--scan"}), "a\nb\nc\n");
  EXPECT_THAT(Out({"SCAN", "0", "COUNT", "2"}), ::testing::MatchesRegex("[1-9][0-9]*\na\nb\n"));
  EXPECT_EQ(Out({"--scan", "--pattern", "[bc]"}), "b\nc\n");
  EXPECT_EQ(Out({"DEL", "a", "nope"}), "1\n");
  EXPECT_EQ(Out({"GET", "a"}), "\n");
  EXPECT_EQ(Out({"ECHO", "hi"}), "hi\n");
  EXPECT_EQ(Out({"SET", "a", "1", "PX", "5"}),
            "ERR SET option 'PX' is not supported: peerkv records do not expire\n\n");
  EXPECT_EQ(Out({"FLUSHALL"}), "ERR unknown command 'FLUSHALL', with args beginning with: \n\n");
  EXPECT_EQ(Out({"COMMAND", "COUNT"}), "20\n");
  EXPECT_THAT(Out({"INFO"}), HasSubstr("replica_name:resp-test"));
  EXPECT_THAT(Out({"INFO", "replication"}), HasSubstr("peers:0"));
  EXPECT_THAT(Out({"INFO", "keyspace"}), HasSubstr("ks:default:registers=3"));
  // -n 5: SELECT 5, keyspace db5.
  EXPECT_EQ(Out({"-n", "5", "SET", "b", "five"}), "OK\n");
  EXPECT_EQ(Out({"-n", "5", "GET", "b"}), "five\n");
  EXPECT_EQ(Out({"GET", "b"}), "2\n");
  // Commands on stdin, and RESP3.
  EXPECT_EQ(Cli({}, "SET x 9\nGET x\nCLIENT SETNAME me\nCLIENT GETNAME\n").out, "OK\n9\nOK\nme\n");
  EXPECT_EQ(Out({"-3", "HELLO", "3"}).substr(0, 6), "server");
  EXPECT_EQ(Out({"-3", "GET", "nope"}), "\n");
  // The data went through the store: the CLI reads it over Cap'n Proto.
  testing::RunResult get = testing::Run(
      {testing::RunfilePath("cli/peerkv"), "--server", server_->address(), "get", "default", "x"});
  EXPECT_THAT(get.out, HasSubstr("9"));
}

TEST_F(RespProcessTest, RedisCliPipe) {
  // 5,000 SETs, then GETs of each: the SETs share commits, the GETs wait
  // for them (a connection reads its own writes).
  std::string stream;
  for (int i = 0; i < 5000; ++i) {
    const std::string key = absl::StrCat("pipe:", i);
    const std::string value = absl::StrCat("v", i);
    absl::StrAppend(&stream, "*3\r\n$3\r\nSET\r\n$", key.size(), "\r\n", key, "\r\n$", value.size(),
                    "\r\n", value, "\r\n");
  }
  for (int i = 0; i < 5000; ++i) {
    const std::string key = absl::StrCat("pipe:", i);
    absl::StrAppend(&stream, "*2\r\n$3\r\nGET\r\n$", key.size(), "\r\n", key, "\r\n");
  }
  stream += "*2\r\n$3\r\nGET\r\n$4\r\nnope\r\n*1\r\n$5\r\nBOGUS\r\n";
  testing::RunResult r = Cli({"--pipe"}, stream);
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;  // one error reply: BOGUS
  EXPECT_THAT(r.out, HasSubstr("errors: 1, replies: 10002"));
  EXPECT_EQ(Out({"GET", "pipe:4999"}), "v4999\n");
  EXPECT_EQ(Out({"DBSIZE"}), "5000\n");
}

TEST_F(RespProcessTest, RedisBenchmarkRunsUnchanged) {
  testing::RunResult r = testing::Run({"/usr/bin/redis-benchmark", "-p", port_, "-c", "10", "-n", "2000",
                                       "-P", "8", "-d", "100", "-r", "1000", "-t", "set,get", "-q"},
                                      "", std::chrono::seconds(60));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("SET: "));
  EXPECT_THAT(r.out, HasSubstr("GET: "));
  EXPECT_THAT(Out({"DBSIZE"}), Not(StartsWith("0")));
}

TEST_F(RespProcessTest, PythonRedisClient) {
  testing::RunResult r = testing::Run(
      {"/usr/bin/python3", testing::RunfilePath("tests/resp_client.py"), port_}, "", std::chrono::seconds(60));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.out, "ok\n") << r.err;
}

TEST_F(RespProcessTest, BadInputAndIdleConnectionsLeaveTheServerServing) {
  const int fds_before = testing::OpenFileDescriptors(server_->pid());
  const std::string resp_address = "127.0.0.1:" + port_;
  // Malformed frames: each answered with a protocol error on its own
  // connection, which is closed.
  for (const std::string& bad : {std::string("*1\r\n$-5\r\n"), std::string(1 << 20, '*'),
                                 std::string("*1\r\n$5000000\r\n"), std::string("*2\r\n$3\r\nGET")}) {
    int fd = testing::ConnectTcp(resp_address);
    ASSERT_GE(fd, 0);
    size_t sent = 0;
    while (sent < bad.size()) {
      ssize_t n = send(fd, bad.data() + sent, bad.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
    shutdown(fd, SHUT_WR);
    std::string reply;
    char buf[4096];
    timeval tv{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    while (true) {
      ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      reply.append(buf, static_cast<size_t>(n));
    }
    close(fd);
    // The unterminated frame ends with the client's EOF: closed, no reply.
    if (bad == "*2\r\n$3\r\nGET") {
      EXPECT_EQ(reply, "");
    } else {
      EXPECT_THAT(reply, StartsWith("-ERR Protocol error: ")) << bad.substr(0, 20);
    }
  }
  // 5,000 idle connections.
  rlimit limit;
  getrlimit(RLIMIT_NOFILE, &limit);
  const int idle_count = static_cast<int>(std::min<rlim_t>(5000, limit.rlim_max - 100));
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
  std::vector<int> idle;
  for (int i = 0; i < idle_count; ++i) {
    int fd = testing::ConnectTcp(resp_address);
    ASSERT_GE(fd, 0) << i;
    idle.push_back(fd);
  }
  EXPECT_EQ(Out({"PING"}), "PONG\n");
  EXPECT_THAT(Out({"INFO", "clients"}), HasSubstr(absl::StrCat("connected_clients:", idle_count + 1)));
  for (int fd : idle) close(fd);
  // Bounded wait for the server to see every close.
  int fds_after = 0;
  for (int i = 0; i < 200; ++i) {
    fds_after = testing::OpenFileDescriptors(server_->pid());
    if (fds_after <= fds_before) break;
    Out({"PING"});
  }
  EXPECT_LE(fds_after, fds_before);
  EXPECT_EQ(Out({"SET", "still", "here"}), "OK\n");
  EXPECT_EQ(Out({"GET", "still"}), "here\n");
}

// Without --resp-insecure-loopback a connection must AUTH with an access
// token of the data directory (peerkv token create), made while the server
// runs.
TEST(RespAuth, AuthWithAnAccessTokenOfTheDataDirectory) {
  testing::TempDir dir("resp-auth");
  const std::string peerkv = testing::RunfilePath("cli/peerkv");
  absl::StatusOr<std::unique_ptr<testing::ServerProcess>> server =
      testing::ServerProcess::Start(dir.Sub("db"), {"--resp-listen", "127.0.0.1:0"});
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string log = (*server)->Log();
  const std::string marker = "RESP clients: 127.0.0.1:";
  const size_t at = log.find(marker);
  ASSERT_NE(at, std::string::npos) << log;
  const std::string port =
      log.substr(at + marker.size(), log.find(' ', at + marker.size()) - at - marker.size());
  auto cli = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"/usr/bin/redis-cli", "--no-auth-warning", "-p", port});
    return testing::Run(args, "", std::chrono::seconds(30));
  };
  EXPECT_EQ(cli({"PING"}).out, "PONG\n");
  EXPECT_THAT(cli({"SET", "k", "v"}).out, HasSubstr("NOAUTH Authentication required."));
  testing::RunResult token = testing::Run({peerkv, "--data", dir.Sub("db"), "token", "create",
                                           "app"});
  ASSERT_EQ(token.exit_code, 0) << token.err;
  const std::string secret = token.out.substr(0, token.out.find('\n'));
  ASSERT_THAT(secret, StartsWith("pkv_"));
  EXPECT_EQ(cli({"-a", secret, "SET", "k", "v"}).out, "OK\n");
  EXPECT_EQ(cli({"-a", secret, "GET", "k"}).out, "v\n");
  // redis-cli reports the failed AUTH on stderr, then the command is refused.
  testing::RunResult wrong = cli({"-a", "pkv_wrong", "GET", "k"});
  EXPECT_THAT(wrong.err, HasSubstr("WRONGPASS"));
  EXPECT_THAT(wrong.out, HasSubstr("NOAUTH"));
  // Removed while the server runs: refused from the next AUTH.
  ASSERT_EQ(testing::Run({peerkv, "--data", dir.Sub("db"), "token", "remove", "app"}).exit_code,
            0);
  testing::RunResult removed = cli({"-a", secret, "GET", "k"});
  EXPECT_THAT(removed.err, HasSubstr("WRONGPASS"));
  EXPECT_THAT(removed.out, HasSubstr("NOAUTH"));
  EXPECT_EQ((*server)->Stop(SIGTERM), 0);
}

TEST(RespFlags, UnsafeStartsAreRefused) {
  testing::TempDir dir("resp-flags");
  const std::string peerkv = testing::RunfilePath("cli/peerkv");
  testing::RunResult r = testing::Run({peerkv, "serve", "--data", dir.Sub("a"), "--listen",
                                       "127.0.0.1:0", "--resp-listen", "0.0.0.0:0",
                                       "--resp-insecure-loopback"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("only on a loopback address"));
  r = testing::Run({peerkv, "serve", "--data", dir.Sub("c"), "--listen", "127.0.0.1:0",
                    "--resp-insecure-loopback"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("need --resp-listen"));
}

}  // namespace
}  // namespace peerkv
