// resp/server_test.cc: the RESP front end over real sockets, in process:
// pipelining (replies in order, writes durable before their reply, reads
// after writes see them), bad input (each gets a protocol error and only
// its own connection closed), a client that never reads (its commands stop
// being read, others are served), many idle connections, a half-sent
// command timed out, and the start-up checks of the listen address.
#include "resp/server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/temp_dir.h"

namespace peerkv::resp {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// A blocking client socket with a receive deadline.
class Client {
 public:
  explicit Client(const std::string& address, int rcvbuf = 0) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    if (rcvbuf > 0) setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(address.rfind(':') + 1))));
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~Client() { close(fd_); }
  bool connected() const { return connected_; }
  int fd() const { return fd_; }

  bool Send(std::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t n = send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }
  // Reads until `n` bytes arrived, the peer closed, or 10 s passed.
  std::string Read(size_t n) {
    std::string out;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (out.size() < n) {
      const int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                            deadline - std::chrono::steady_clock::now())
                                            .count());
      if (left <= 0) break;
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, left) <= 0) break;
      char buf[65536];
      ssize_t r = recv(fd_, buf, std::min(sizeof(buf), n - out.size()), 0);
      if (r <= 0) {
        closed_ = true;
        break;
      }
      out.append(buf, static_cast<size_t>(r));
    }
    return out;
  }
  // Reads everything until the server closes (or 10 s).
  std::string ReadUntilClosed() {
    std::string out = Read(SIZE_MAX);
    return out;
  }
  bool closed() const { return closed_; }
  // Sends a command and reads its (known-length) reply.
  std::string Call(std::string_view command, size_t reply_bytes) {
    Send(command);
    return Read(reply_bytes);
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  bool closed_ = false;
};

std::string Command(const std::vector<std::string>& args) {
  std::string out = absl::StrCat("*", args.size(), "\r\n");
  for (const std::string& a : args) absl::StrAppend(&out, "$", a.size(), "\r\n", a, "\r\n");
  return out;
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StoreOptions options;
    options.dir = dir_.Sub("db");
    options.max_value_bytes = 1000;
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }
  void StartServer(RespOptions options = {}) {
    options.listen = "127.0.0.1:0";
    options.insecure_loopback = true;
    options.log = [](const std::string&) {};
    absl::StatusOr<std::unique_ptr<RespServer>> server =
        RespServer::Start(store_.get(), std::move(options));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }
  void TearDown() override {
    if (server_) server_->Stop();
  }

  testing::TempDir dir_{"resp-server"};
  std::unique_ptr<Store> store_;
  std::unique_ptr<RespServer> server_;
};

TEST_F(ServerTest, PipelinedCommandsAnswerInOrder) {
  StartServer();
  Client c(server_->address());
  ASSERT_TRUE(c.connected());
  std::string pipeline;
  std::string expected;
  for (int i = 0; i < 200; ++i) {
    const std::string key = absl::StrCat("k", i % 7);
    const std::string value = absl::StrCat("v", i);
    pipeline += Command({"SET", key, value});
    expected += "+OK\r\n";
    pipeline += Command({"GET", key});
    expected += absl::StrCat("$", value.size(), "\r\n", value, "\r\n");
  }
  pipeline += "PING\r\n";  // inline
  expected += "+PONG\r\n";
  const uint64_t commits_before = store_->Stats()->commits;
  ASSERT_TRUE(c.Send(pipeline));
  EXPECT_EQ(c.Read(expected.size()), expected);
  // The GETs did not wait for each SET's commit: the SETs shared commits.
  EXPECT_LT(store_->Stats()->commits - commits_before, 100u);
  // Durable before acknowledged: the store holds the last values.
  absl::StatusOr<std::optional<Record>> r = store_->Get("default", "k3");
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ((*r)->value, "v199");
}

TEST_F(ServerTest, PipelinedSetsShareCommits) {
  StartServer();
  Client c(server_->address());
  std::string pipeline;
  for (int i = 0; i < 500; ++i) pipeline += Command({"SET", absl::StrCat("k", i), "v"});
  const uint64_t commits_before = store_->Stats()->commits;
  ASSERT_TRUE(c.Send(pipeline));
  std::string expected;
  for (int i = 0; i < 500; ++i) expected += "+OK\r\n";
  EXPECT_EQ(c.Read(expected.size()), expected);
  // Blind writes go on while earlier ones are in flight: far fewer fsyncs
  // than writes.
  EXPECT_LT(store_->Stats()->commits - commits_before, 250u);
}

TEST_F(ServerTest, ProtocolErrorClosesOnlyThatConnection) {
  StartServer();
  Client good(server_->address());
  ASSERT_EQ(good.Call(Command({"SET", "a", "1"}), 5), "+OK\r\n");
  const std::vector<std::string> bad = {
      "*1\r\n$x\r\n",                          // bad bulk length
      "*2\r\n$3\r\nGET\r\n$1001\r\n",          // bulk over the value limit
      "*1\r\n$3\r\nGETX\r\n",                  // bulk not ended by CRLF
      "*1\r\n+PING\r\n",                       // not a bulk string
      std::string(1 << 20, '*'),               // a mebibyte of stars
      std::string(100'000, 'a'),               // inline line too long
  };
  for (const std::string& input : bad) {
    Client c(server_->address());
    ASSERT_TRUE(c.connected());
    c.Send(input);
    const std::string reply = c.ReadUntilClosed();
    EXPECT_THAT(reply, StartsWith("-ERR Protocol error: ")) << input.substr(0, 40);
    EXPECT_TRUE(c.closed()) << input.substr(0, 40);
  }
  EXPECT_EQ(good.Call(Command({"GET", "a"}), 7), "$1\r\n1\r\n");
  EXPECT_EQ(server_->stats().protocol_errors.load(), bad.size());
}

TEST_F(ServerTest, UnknownCommandKeepsTheConnection) {
  StartServer();
  Client c(server_->address());
  const std::string reply = "-ERR unknown command 'NOPE', with args beginning with: 'x' \r\n";
  EXPECT_EQ(c.Call(Command({"NOPE", "x"}), reply.size()), reply);
  EXPECT_EQ(c.Call("PING\r\n", 7), "+PONG\r\n");
}

TEST_F(ServerTest, QuitAnswersThenCloses) {
  StartServer();
  Client c(server_->address());
  c.Send(Command({"QUIT"}) + Command({"PING"}));
  EXPECT_EQ(c.ReadUntilClosed(), "+OK\r\n");
  EXPECT_TRUE(c.closed());
}

TEST_F(ServerTest, AClientThatNeverReadsDoesNotStopOthers) {
  RespOptions options;
  options.output_soft_limit = 64 * 1024;
  StartServer(options);
  std::string value(1000, 'x');
  {
    Client setter(server_->address());
    ASSERT_EQ(setter.Call(Command({"SET", "big", value}), 5), "+OK\r\n");
  }
  // A client that sends a great many GETs and reads nothing: 40 MB of
  // replies would be due.
  Client hog(server_->address(), /*rcvbuf=*/4096);
  const std::string get = Command({"GET", "big"});
  std::string burst;
  for (int i = 0; i < 1000; ++i) burst += get;
  // Sends until the server stops reading (the socket buffers fill), with
  // a bound on how much is tried.
  int fl = fcntl(hog.fd(), F_GETFL);
  fcntl(hog.fd(), F_SETFL, fl | O_NONBLOCK);
  size_t sent = 0;
  for (int round = 0; round < 40'000 && sent < (size_t{40} << 20); ++round) {
    ssize_t n = send(hog.fd(), burst.data(), burst.size(), MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    pollfd p{hog.fd(), POLLOUT, 0};
    if (poll(&p, 1, 200) == 0) break;  // nothing moved for 200 ms: stalled
  }
  // The server stopped reading it long before it sent everything.
  EXPECT_LT(sent, size_t{40} << 20);
  Client other(server_->address());
  EXPECT_EQ(other.Call(Command({"GET", "big"}), 1009).size(), 1009u);
  EXPECT_EQ(other.Call("PING\r\n", 7), "+PONG\r\n");
}

TEST_F(ServerTest, ManyIdleConnectionsAreHeldAndReleased) {
  StartServer();
  std::vector<std::unique_ptr<Client>> idle;
  for (int i = 0; i < 500; ++i) {
    idle.push_back(std::make_unique<Client>(server_->address()));
    ASSERT_TRUE(idle.back()->connected());
  }
  Client c(server_->address());
  EXPECT_EQ(c.Call("PING\r\n", 7), "+PONG\r\n");
  EXPECT_EQ(server_->stats().connections.load(), 501u);
  idle.clear();
  // The server notices each close; bounded wait for the count to drop.
  for (int i = 0; i < 1000 && server_->stats().connections.load() > 1; ++i) {
    c.Call("PING\r\n", 7);
  }
  EXPECT_EQ(server_->stats().connections.load(), 1u);
}

TEST_F(ServerTest, TooManyConnectionsAreRefusedOneByOne) {
  RespOptions options;
  options.max_connections = 2;
  StartServer(options);
  Client a(server_->address());
  Client b(server_->address());
  EXPECT_EQ(a.Call("PING\r\n", 7), "+PONG\r\n");
  EXPECT_EQ(b.Call("PING\r\n", 7), "+PONG\r\n");
  Client c(server_->address());
  EXPECT_EQ(c.ReadUntilClosed(), "-ERR max number of clients reached\r\n");
  EXPECT_EQ(a.Call("PING\r\n", 7), "+PONG\r\n");
}

TEST_F(ServerTest, HalfSentCommandTimesOut) {
  RespOptions options;
  options.idle_timeout_ms = 200;
  StartServer(options);
  Client idle(server_->address());  // idle between commands: kept
  Client slow(server_->address());
  slow.Send("*2\r\n$3\r\nGET\r\n$5\r\nab");
  EXPECT_EQ(slow.ReadUntilClosed(), "");
  EXPECT_TRUE(slow.closed());
  EXPECT_EQ(idle.Call("PING\r\n", 7), "+PONG\r\n");
}

TEST_F(ServerTest, StartRefusesUnsafeListenAddresses) {
  RespOptions options;
  options.listen = "0.0.0.0:0";
  options.insecure_loopback = true;
  EXPECT_THAT(RespServer::Start(store_.get(), options).status().message(),
              HasSubstr("only on a loopback address"));
  options.insecure_loopback = false;
  // Off loopback only with TLS: AUTH tokens must not cross a network in
  // clear text (this was accepted, in plaintext, when an authenticator was
  // set).
  options.authenticate = [](std::string_view) -> absl::StatusOr<std::string> {
    return std::string("x");
  };
  EXPECT_THAT(RespServer::Start(store_.get(), options).status().message(),
              HasSubstr("add --resp-tls"));
  options.authenticate = nullptr;
  options.listen = "127.0.0.1:0";
  EXPECT_THAT(RespServer::Start(store_.get(), options).status().message(),
              HasSubstr("needs authentication"));
  options.listen = "nonsense";
  EXPECT_THAT(RespServer::Start(store_.get(), options).status().message(),
              HasSubstr("must be HOST:PORT"));
  EXPECT_TRUE(IsLoopbackListen("127.0.0.2:1"));
  EXPECT_TRUE(IsLoopbackListen("[::1]:1"));
  EXPECT_TRUE(IsLoopbackListen("localhost:1"));
  EXPECT_FALSE(IsLoopbackListen("10.0.0.1:1"));
  EXPECT_FALSE(IsLoopbackListen("[::]:1"));
}

TEST_F(ServerTest, AuthOverTheWire) {
  RespOptions options;
  options.listen = "127.0.0.1:0";
  options.authenticate = [](std::string_view token) -> absl::StatusOr<std::string> {
    if (token == "t0ken") return std::string("alice");
    return absl::PermissionDeniedError("no");
  };
  options.log = [](const std::string&) {};
  absl::StatusOr<std::unique_ptr<RespServer>> server = RespServer::Start(store_.get(), options);
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string port = (*server)->address().substr((*server)->address().rfind(':') + 1);
  Client c("127.0.0.1:" + port);
  const std::string noauth = "-NOAUTH Authentication required.\r\n";
  EXPECT_EQ(c.Call(Command({"GET", "k"}), noauth.size()), noauth);
  EXPECT_EQ(c.Call(Command({"AUTH", "t0ken"}), 5), "+OK\r\n");
  EXPECT_EQ(c.Call(Command({"GET", "k"}), 5), "$-1\r\n");
  (*server)->Stop();
}

TEST_F(ServerTest, SeveralLoopsShareThePort) {
  RespOptions options;
  options.threads = 3;
  StartServer(options);
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < 12; ++i) {
    clients.push_back(std::make_unique<Client>(server_->address()));
    ASSERT_EQ(clients.back()->Call(Command({"SET", absl::StrCat("k", i), "v"}), 5), "+OK\r\n");
  }
  for (int i = 0; i < 12; ++i) {
    EXPECT_EQ(clients[(i + 5) % 12]->Call(Command({"GET", absl::StrCat("k", i)}), 7),
              "$1\r\nv\r\n");
  }
}

}  // namespace
}  // namespace peerkv::resp
