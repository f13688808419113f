// tests/half_open_test.cc: two real `peerkv serve` processes that dial each
// other, one of the two connections through a TCP proxy inside the test.
// The proxy stops forwarding one direction of that connection without
// closing anything (a half-open link, as a stuck middlebox makes one);
// writes must still arrive both ways within a bounded time, and status must
// show the dead link.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <thread>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "common/macros.h"
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
using testing::ServerProcess;

sockaddr_in Loopback(uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  return addr;
}

// Writes all of `data` to a blocking socket; false if the socket broke.
bool WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    const ssize_t n = send(fd, data, size, MSG_NOSIGNAL);
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

// A TCP proxy on a free loopback port, forwarding each connection to the
// target on a connection of its own. Connections accepted before the
// target is known wait for it. Pause(i) stops forwarding the target's bytes
// back to the client of connection i (the i-th accepted): nothing is
// closed, the bytes wait in the kernel. One thread, poll(2).
class PausingProxy {
 public:
  PausingProxy() {
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    PEERKV_CHECK(listen_fd_ >= 0);
    sockaddr_in addr = Loopback(0);
    PEERKV_CHECK(bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    PEERKV_CHECK(listen(listen_fd_, 16) == 0);
    socklen_t len = sizeof(addr);
    PEERKV_CHECK(getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    port_ = ntohs(addr.sin_port);
    PEERKV_CHECK(pipe2(wake_, O_CLOEXEC) == 0);
    thread_ = std::thread([this] { Loop(); });
  }

  ~PausingProxy() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    Wake();
    thread_.join();
    for (auto& [i, c] : connections_) {
      close(c.client);
      if (c.target >= 0) close(c.target);
    }
    close(listen_fd_);
    close(wake_[0]);
    close(wake_[1]);
  }

  std::string address() const { return absl::StrFormat("127.0.0.1:%d", port_); }

  void SetTarget(const std::string& address) {
    const std::vector<std::string> parts = absl::StrSplit(address, ':');
    absl::MutexLock lock(&mu_);
    target_port_ = static_cast<uint16_t>(std::stoi(parts[1]));
    Wake();
  }

  void Pause(int connection) {
    absl::MutexLock lock(&mu_);
    paused_.insert(connection);
    Wake();
  }

  // Connections accepted so far.
  int accepted() {
    absl::MutexLock lock(&mu_);
    return next_;
  }

 private:
  struct Connection {
    int client = -1;
    int target = -1;
  };

  void Wake() {
    const char c = 0;
    PEERKV_CHECK(write(wake_[1], &c, 1) == 1);
  }

  void Loop() {
    for (;;) {
      uint16_t target_port;
      std::set<int> paused;
      {
        absl::MutexLock lock(&mu_);
        if (stop_) return;
        target_port = target_port_;
        paused = paused_;
      }
      // Connect those waiting for the target.
      for (auto& [i, c] : connections_) {
        if (c.target >= 0 || target_port == 0) continue;
        c.target = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in addr = Loopback(target_port);
        PEERKV_CHECK(connect(c.target, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
      }
      std::vector<pollfd> fds = {{listen_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
      // (connection, true: client->target) for each polled fd past the two.
      std::vector<std::pair<int, bool>> what;
      for (auto& [i, c] : connections_) {
        if (c.target < 0) continue;
        fds.push_back({c.client, POLLIN, 0});
        what.push_back({i, true});
        if (paused.count(i) == 0) {
          fds.push_back({c.target, POLLIN, 0});
          what.push_back({i, false});
        }
      }
      if (poll(fds.data(), fds.size(), -1) < 0) {
        PEERKV_CHECK(errno == EINTR);
        continue;
      }
      if (fds[1].revents != 0) {
        char buf[64];
        PEERKV_CHECK(read(wake_[0], buf, sizeof(buf)) > 0);
      }
      if (fds[0].revents != 0) {
        const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) {
          absl::MutexLock lock(&mu_);
          connections_[next_++].client = fd;
        }
      }
      std::set<int> broken;
      for (size_t k = 2; k < fds.size(); ++k) {
        if (fds[k].revents == 0) continue;
        const auto [i, forward] = what[k - 2];
        if (broken.count(i) > 0) continue;
        Connection& c = connections_[i];
        const int from = forward ? c.client : c.target;
        const int to = forward ? c.target : c.client;
        char buf[65536];
        const ssize_t n = read(from, buf, sizeof(buf));
        if (n <= 0 || !WriteAll(to, buf, static_cast<size_t>(n))) broken.insert(i);
      }
      for (int i : broken) {
        close(connections_[i].client);
        close(connections_[i].target);
        connections_.erase(i);
      }
    }
  }

  int listen_fd_ = -1;
  uint16_t port_ = 0;
  int wake_[2] = {-1, -1};
  std::thread thread_;
  // Only the proxy thread touches connections_ after the constructor.
  std::map<int, Connection> connections_;
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  uint16_t target_port_ ABSL_GUARDED_BY(mu_) = 0;
  std::set<int> paused_ ABSL_GUARDED_BY(mu_);
  int next_ ABSL_GUARDED_BY(mu_) = 0;
};

class HalfOpenTest : public ::testing::Test {
 protected:
  std::unique_ptr<ServerProcess> Start(const std::string& name, const std::string& peer) {
    absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(
        dir_.Sub(name), {"--replica-name", name, "--gossip-interval-ms", "100", "--keepalive-ms",
                         "200", "--peer", peer});
    EXPECT_THAT(server, IsOk());
    return server.ok() ? std::move(*server) : nullptr;
  }

  // The one peer `server` knows, as its status shows it now.
  static std::optional<rpc::PeerStatus> OnlyPeer(const ServerProcess& server) {
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(
        rpc::ClientOptions{.address = server.address(), .timeout = absl::Seconds(5)});
    if (!client.ok()) return std::nullopt;
    absl::StatusOr<rpc::ServerStatus> status = (*client)->Status();
    if (!status.ok()) return std::nullopt;
    for (const rpc::PeerStatus& p : status->peers) {
      if (p.replica_id != 0) return p;
    }
    return std::nullopt;
  }

  // Waits (bounded) until `done` holds for the peer `server` shows; another
  // process holds the answer, so this polls.
  template <typename Done>
  static bool WaitForPeer(const ServerProcess& server, Done done,
                          std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      std::optional<rpc::PeerStatus> p = OnlyPeer(server);
      if (p.has_value() && done(*p)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  // Time until `key` is readable on `server`, or nullopt after `timeout`.
  static std::optional<std::chrono::milliseconds> TimeUntilPresent(
      const ServerProcess& server, const std::string& key, std::chrono::milliseconds timeout) {
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(
        rpc::ClientOptions{.address = server.address(), .timeout = absl::Seconds(5)});
    if (!client.ok()) return std::nullopt;
    while (std::chrono::steady_clock::now() - start < timeout) {
      absl::StatusOr<std::optional<Record>> got = (*client)->Get("ks", key);
      if (got.ok() && got->has_value()) {
        return std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::steady_clock::now() - start);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return std::nullopt;
  }

  static absl::Status Put(const ServerProcess& server, const std::string& key) {
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(
        rpc::ClientOptions{.address = server.address(), .timeout = absl::Seconds(5)});
    if (!client.ok()) return client.status();
    return (*client)->Put("ks", key, "v").status();
  }

  testing::TempDir dir_;
};

TEST_F(HalfOpenTest, WritesStillArriveBothWaysWhileOneDirectionOfALinkIsStalled) {
  // A dials B through the proxy; B dials A directly.
  PausingProxy proxy;
  auto a = Start("a", proxy.address());
  ASSERT_NE(a, nullptr);
  auto b = Start("b", a->address());
  ASSERT_NE(b, nullptr);
  proxy.SetTarget(b->address());
  ASSERT_TRUE(WaitForPeer(*a, [](const rpc::PeerStatus& p) { return p.links == 2; }))
      << a->Log() << b->Log();
  ASSERT_TRUE(WaitForPeer(*b, [](const rpc::PeerStatus& p) { return p.links == 2; }))
      << a->Log() << b->Log();
  ASSERT_EQ(proxy.accepted(), 1);
  ASSERT_THAT(Put(*b, "before"), IsOk());
  ASSERT_TRUE(TimeUntilPresent(*a, "before", std::chrono::seconds(10)).has_value());

  // B's answers to A on the proxied connection stop; nothing is closed.
  proxy.Pause(0);
  ASSERT_THAT(Put(*b, "from-b"), IsOk());
  ASSERT_THAT(Put(*a, "from-a"), IsOk());
  // Keepalive 200 ms: a link is dead after 1 s unanswered. Before, the
  // pull timeout (10 s) retried on the same link for as long as the pause.
  const auto bound = std::chrono::seconds(5);
  const std::optional<std::chrono::milliseconds> to_a = TimeUntilPresent(*a, "from-b", bound);
  const std::optional<std::chrono::milliseconds> to_b = TimeUntilPresent(*b, "from-a", bound);
  ASSERT_TRUE(to_a.has_value()) << a->Log() << b->Log();
  ASSERT_TRUE(to_b.has_value()) << a->Log() << b->Log();
  std::printf("write B->A arrived after %lld ms, A->B after %lld ms more\n",
              static_cast<long long>(to_a->count()), static_cast<long long>(to_b->count()));

  // The first end whose ping went unanswered found the connection dead,
  // said so, and closed it (the other end then sees it close); A
  // redialled, through the proxy, which forwards the fresh connection.
  // That takes 5 keepalive intervals (1 s), and the writes may have come
  // sooner over the other link, while A still had both links: so wait for
  // the dead link to be counted and the fresh one to be up, not for
  // `links == 2`, which may still hold from before the pause.
  std::optional<rpc::PeerStatus> a_peer;
  std::optional<rpc::PeerStatus> b_peer;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    a_peer = OnlyPeer(*a);
    b_peer = OnlyPeer(*b);
    if (a_peer.has_value() && b_peer.has_value() &&
        a_peer->dead_links + b_peer->dead_links >= 1 && a_peer->links == 2 &&
        proxy.accepted() >= 2) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(a_peer.has_value() && b_peer.has_value());
  EXPECT_EQ(a_peer->links, 2u) << a->Log();
  EXPECT_GE(a_peer->dead_links + b_peer->dead_links, 1u);
  EXPECT_GE(proxy.accepted(), 2);
  // Written by whichever side found the link dead; wait for it on that side.
  const std::string dead = "link dead (half-open connection)";
  EXPECT_THAT(a_peer->dead_links > 0 ? a->WaitForLog(dead) : b->WaitForLog(dead),
              ::testing::HasSubstr(dead));
  EXPECT_EQ(a->Stop(SIGINT), 0);
  EXPECT_EQ(b->Stop(SIGINT), 0);
}

}  // namespace
}  // namespace peerkv
