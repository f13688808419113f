// consensus/etcd/http_client_test.cc: the HTTP/1.1 client against a scripted
// loopback server: chunked bodies with trailers, keep-alive reuse of one
// connection, a pooled connection the server closed, deadlines, limits.
#include "consensus/etcd/http_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/macros.h"
#include "common/status_matchers.h"
#include "gtest/gtest.h"

namespace peerkv::consensus::etcd {
namespace {

// Serves each accepted connection on its own thread with `script`, which
// reads requests with ReadRequest and writes answers.
class ScriptedServer {
 public:
  using Script = std::function<void(int fd)>;
  explicit ScriptedServer(Script script) : script_(std::move(script)) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    PEERKV_CHECK(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    PEERKV_CHECK(listen(fd_, 16) == 0);
    PEERKV_CHECK(getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    url_ = *ParseHttpUrl(absl::StrCat("http://127.0.0.1:", ntohs(addr.sin_port)));
    acceptor_ = std::thread([this] {
      while (!stop_) {
        pollfd pfd{fd_, POLLIN, 0};
        if (poll(&pfd, 1, 20) <= 0) continue;
        const int conn = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (conn < 0) continue;
        ++accepted_;
        workers_.emplace_back([this, conn] {
          script_(conn);
          close(conn);
          absl::MutexLock lock(&mu_);
          ++closed_;
        });
      }
    });
  }
  ~ScriptedServer() {
    stop_ = true;
    acceptor_.join();
    for (auto& w : workers_) w.join();
    close(fd_);
  }
  const HttpUrl& url() const { return url_; }
  int accepted() const { return accepted_.load(); }
  // Waits (up to 5 s) until the server has closed `n` connections.
  bool WaitClosed(int n) {
    absl::MutexLock lock(&mu_);
    auto done = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return closed_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&done), absl::Seconds(5));
  }

 private:
  absl::Mutex mu_;
  int closed_ ABSL_GUARDED_BY(mu_) = 0;
  Script script_;
  int fd_ = -1;
  HttpUrl url_;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::thread acceptor_;
  std::vector<std::thread> workers_;
};

// Reads one request (head and Content-Length body); false at EOF/timeout.
bool ReadRequest(int fd, std::string* body = nullptr) {
  std::string data;
  char buf[4096];
  for (;;) {
    const size_t end = data.find("\r\n\r\n");
    if (end != std::string::npos) {
      const size_t at = data.find("Content-Length: ");
      const size_t length = at == std::string::npos ? 0 : std::stoul(data.substr(at + 16));
      if (data.size() >= end + 4 + length) {
        if (body != nullptr) *body = data.substr(end + 4, length);
        return true;
      }
    }
    pollfd pfd{fd, POLLIN, 0};
    if (poll(&pfd, 1, 5000) <= 0) return false;
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) return false;
    data.append(buf, static_cast<size_t>(n));
  }
}

void Send(int fd, const std::string& s) { (void)!write(fd, s.data(), s.size()); }

absl::Time Soon() { return absl::Now() + absl::Seconds(5); }

TEST(HttpClient, ReadsChunkedBodiesWithTrailers) {
  ScriptedServer server([](int fd) {
    if (!ReadRequest(fd)) return;
    Send(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
             "7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n");
  });
  HttpClient http(server.url());
  auto r = http.Post("/x", "{}", Soon(), true);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "hello, world");
}

TEST(HttpClient, ReusesOneKeepAliveConnection) {
  ScriptedServer server([](int fd) {
    std::string body;
    while (ReadRequest(fd, &body)) {
      Send(fd, absl::StrCat("HTTP/1.1 200 OK\r\nContent-Length: ", body.size(), "\r\n\r\n", body));
    }
  });
  HttpClient http(server.url());
  for (int i = 0; i < 5; ++i) {
    auto r = http.Post("/echo", absl::StrCat("request ", i), Soon(), false);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->body, absl::StrCat("request ", i));
  }
  EXPECT_EQ(server.accepted(), 1);
}

TEST(HttpClient, APooledConnectionTheServerClosedIsNotUsed) {
  // Answers one request per connection without saying so, then closes:
  // the client must not send the next request into the closed connection.
  ScriptedServer server([](int fd) {
    if (!ReadRequest(fd)) return;
    Send(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
  });
  HttpClient http(server.url());
  for (int i = 0; i < 3; ++i) {
    // Not idempotent: no retry may hide a request sent into a dead
    // connection; the client must see the close before it sends.
    auto r = http.Post("/x", "{}", Soon(), /*idempotent=*/false);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->body, "ok");
    ASSERT_TRUE(server.WaitClosed(i + 1));
  }
  EXPECT_EQ(server.accepted(), 3);
}

TEST(HttpClient, ASilentServerIsADeadlineNotAHang) {
  ScriptedServer server([](int fd) {
    ReadRequest(fd);
    // Say nothing; the client gives up at its deadline (the server thread
    // ends when the client closes).
    char c;
    pollfd pfd{fd, POLLIN, 0};
    if (poll(&pfd, 1, 5000) > 0) (void)!read(fd, &c, 1);
  });
  HttpClient http(server.url());
  const absl::Time start = absl::Now();
  auto r = http.Post("/x", "{}", absl::Now() + absl::Milliseconds(300), true);
  EXPECT_THAT(r.status(), StatusIs(absl::StatusCode::kDeadlineExceeded, "timed out"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

TEST(HttpClient, RefusesAnswersOverItsLimits) {
  ScriptedServer big_head([](int fd) {
    if (!ReadRequest(fd)) return;
    Send(fd, "HTTP/1.1 200 OK\r\nX: " + std::string(kHttpMaxHeaderBytes + 10, 'a'));
  });
  HttpClient a(big_head.url());
  EXPECT_THAT(a.Post("/x", "{}", Soon(), true).status(),
              StatusIs(absl::StatusCode::kInternal, "headers longer than"));
  ScriptedServer big_body([](int fd) {
    if (!ReadRequest(fd)) return;
    Send(fd, absl::StrCat("HTTP/1.1 200 OK\r\nContent-Length: ", kHttpMaxBodyBytes + 1,
                          "\r\n\r\n"));
  });
  HttpClient b(big_body.url());
  EXPECT_THAT(b.Post("/x", "{}", Soon(), true).status(),
              StatusIs(absl::StatusCode::kInternal, "Content-Length"));
  ScriptedServer gzip([](int fd) {
    if (!ReadRequest(fd)) return;
    Send(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
  });
  HttpClient c(gzip.url());
  EXPECT_THAT(c.Post("/x", "{}", Soon(), true).status(),
              StatusIs(absl::StatusCode::kInternal, "Transfer-Encoding"));
}

TEST(HttpClient, StreamsChunksAsTheyArrive) {
  ScriptedServer server([](int fd) {
    if (!ReadRequest(fd)) return;
    Send(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\na\n\r\n");
    Send(fd, "2\r\nb\n\r\n");
    // Then hold the stream open; the client stops on its own.
    char c;
    pollfd pfd{fd, POLLIN, 0};
    if (poll(&pfd, 1, 5000) > 0) (void)!read(fd, &c, 1);
  });
  HttpClient http(server.url());
  std::string seen;
  absl::Status status = http.Stream("/watch", "{}", Soon(), [&](absl::string_view data) {
    seen.append(data.data(), data.size());
    return seen.find("b") == std::string::npos;
  });
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(seen, "a\nb\n");
}

}  // namespace
}  // namespace peerkv::consensus::etcd
