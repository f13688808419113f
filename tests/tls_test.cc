// tests/tls_test.cc: TLS on real server processes: two devices of one user
// pair and sync; a friend's device connects and gets nothing; a stranger, a
// plaintext client, a forged or self-made certificate, a wrong key type, a
// removed device and a replayed handshake are refused and change nothing
// while the server keeps serving others; a removal, once it reaches a
// replica, closes the removed device's links and connections there; a
// server showing another key is refused by the client, and a man in the
// middle re-terminating TLS between two devices is refused by both; a wire
// capture of replication holds no value bytes.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "auth/certificate.h"
#include "auth/identity.h"
#include "auth/ids.h"
#include "auth/keys.h"
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

using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::RunResult;
using testing::ServerProcess;

// Occurrences of `needle` in `hay`.
int Count(const std::string& hay, const std::string& needle) {
  int n = 0;
  for (size_t at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + 1)) ++n;
  return n;
}

// The first line of `log` that holds `text` (empty if none).
std::string LineWith(const std::string& log, const std::string& text) {
  const size_t at = log.find(text);
  if (at == std::string::npos) return "";
  const size_t begin = log.rfind('\n', at);
  const size_t end = log.find('\n', at);
  return log.substr(begin == std::string::npos ? 0 : begin + 1,
                    end == std::string::npos ? std::string::npos
                                             : end - (begin == std::string::npos ? 0 : begin + 1));
}

// A client identity of its own: a fresh data directory's device key, and a
// certificate by its own user if `user_name` is given.
struct OwnIdentity {
  std::unique_ptr<auth::Identity> identity;
  rpc::TlsIdentity tls;
};
OwnIdentity NewUserDevice(const std::string& dir, const std::string& user_name) {
  OwnIdentity out;
  out.identity = *auth::Identity::CreateUser(dir, user_name);
  out.tls.key = *auth::SigningKey::FromSeed(out.identity->device_key().seed());
  out.tls.device_certificate =
      *out.identity->IssueOwnCertificate("laptop", absl::ToUnixMillis(absl::Now()));
  return out;
}

absl::StatusOr<std::unique_ptr<rpc::Client>> ConnectAs(const ServerProcess& server,
                                                       rpc::TlsIdentity tls) {
  auto user = auth::ParseUserId(testing::TestUserId(), "test user");
  return rpc::Client::Connect(rpc::ClientOptions{.address = server.address(),
                                                 .timeout = absl::Seconds(10),
                                                 .tls = std::move(tls),
                                                 .server_user = *user});
}

// A TLS 1.3 client made with OpenSSL directly, for certificates peerkv
// would not make: the outcome of a handshake and one read after it.
struct RawOutcome {
  bool handshake = false;
  bool closed_by_server = false;  // a read after the handshake got EOF/error
};
// From `source` (a loopback address of its own, so that the server's
// rejection log, which folds repeats per client host, names each case).
RawOutcome RawTls(const std::string& address, EVP_PKEY* key, X509* cert, const char* source) {
  RawOutcome out;
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in from{};
  from.sin_family = AF_INET;
  inet_pton(AF_INET, source, &from.sin_addr);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  to.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(address.rfind(':') + 1))));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof(from)) != 0 ||
      ::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)) != 0) {
    ::close(fd);
    return out;
  }
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  SSL_CTX_use_certificate(ctx, cert);
  SSL_CTX_use_PrivateKey(ctx, key);
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  out.handshake = SSL_connect(ssl) == 1;
  if (out.handshake) {
    char buf[64];
    out.closed_by_server = SSL_read(ssl, buf, sizeof(buf)) <= 0;
  }
  ERR_clear_error();
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  ::close(fd);
  return out;
}

// A self-signed certificate for `key`, with `extension` (the device
// certificate extension's bytes) if not empty.
X509* SelfSigned(EVP_PKEY* key, const std::string& extension) {
  X509* x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("mallory"), -1, -1, 0);
  X509_set_issuer_name(x, name);
  X509_set_pubkey(x, key);
  if (!extension.empty()) {
    ASN1_OCTET_STRING* data = ASN1_OCTET_STRING_new();
    ASN1_OCTET_STRING_set(data, reinterpret_cast<const unsigned char*>(extension.data()),
                          static_cast<int>(extension.size()));
    ASN1_OBJECT* oid = OBJ_txt2obj("1.3.6.1.4.1.59999.9.1", 1);
    X509_EXTENSION* ext = X509_EXTENSION_create_by_OBJ(nullptr, oid, 0, data);
    ASN1_OBJECT_free(oid);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    ASN1_OCTET_STRING_free(data);
  }
  const bool ed = EVP_PKEY_id(key) == EVP_PKEY_ED25519;
  X509_sign(x, key, ed ? nullptr : EVP_sha256());
  return x;
}

EVP_PKEY* Ed25519Of(const auth::SigningKey& key) {
  const std::string_view seed = key.seed();
  return EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr,
                                      reinterpret_cast<const unsigned char*>(seed.data()),
                                      seed.size());
}

// The device certificate (rpc/tls.cc's extension, encoded) in the
// certificate the TLS server at `address` shows: empty if it carries none,
// nullopt if no handshake. The client shows a bare self-signed
// certificate: the server closes the connection afterwards, but its
// certificate has been seen by then.
std::optional<std::string> ShownDeviceCertificate(const std::string& address) {
  std::unique_ptr<auth::SigningKey> key = auth::SigningKey::Generate();
  EVP_PKEY* ed = Ed25519Of(*key);
  X509* bare = SelfSigned(ed, "");
  std::optional<std::string> out;
  const int fd = testing::ConnectTcp(address);
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  SSL_CTX_use_certificate(ctx, bare);
  SSL_CTX_use_PrivateKey(ctx, ed);
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  if (fd >= 0 && SSL_connect(ssl) == 1) {
    out = "";
    X509* server = SSL_get1_peer_certificate(ssl);
    ASN1_OBJECT* oid = OBJ_txt2obj("1.3.6.1.4.1.59999.9.1", 1);
    const int at = server == nullptr ? -1 : X509_get_ext_by_OBJ(server, oid, -1);
    if (at >= 0) {
      const ASN1_OCTET_STRING* data = X509_EXTENSION_get_data(X509_get_ext(server, at));
      out->assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(data)),
                  ASN1_STRING_length(data));
    }
    ASN1_OBJECT_free(oid);
    X509_free(server);
  }
  ERR_clear_error();
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  if (fd >= 0) ::close(fd);
  X509_free(bare);
  EVP_PKEY_free(ed);
  return out;
}

// Whether that certificate carries a device certificate; nullopt if no
// handshake.
std::optional<bool> ServerShowsDeviceCertificate(const std::string& address) {
  const std::optional<std::string> shown = ShownDeviceCertificate(address);
  if (!shown.has_value()) return std::nullopt;
  return !shown->empty();
}

// A listening TCP socket on 127.0.0.1 at a free port; its address in
// *address. Fails the test (and returns -1) if the socket cannot be made.
int ListenOnLoopback(std::string* address) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(fd, 16) != 0 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ADD_FAILURE() << "listening on 127.0.0.1: " << std::strerror(errno);
    if (fd >= 0) ::close(fd);
    return -1;
  }
  *address = absl::StrFormat("127.0.0.1:%d", ntohs(addr.sin_port));
  return fd;
}

// A TCP forwarder on loopback that records both directions.
class RecordingProxy {
 public:
  explicit RecordingProxy(std::string upstream) : upstream_(std::move(upstream)) {
    listen_fd_ = ListenOnLoopback(&address_);
    thread_ = std::thread([this] { Run(); });
  }
  ~RecordingProxy() {
    stop_ = true;
    thread_.join();
    ::close(listen_fd_);
  }
  const std::string& address() const { return address_; }
  // Bytes clients sent (to the server) and received, over all connections.
  std::string ToServer() {
    std::lock_guard<std::mutex> lock(mu_);
    return to_server_;
  }
  std::string ToClient() {
    std::lock_guard<std::mutex> lock(mu_);
    return to_client_;
  }
  // What the first connection's client sent.
  std::string FirstToServer() {
    std::lock_guard<std::mutex> lock(mu_);
    return first_to_server_;
  }

 private:
  void Run() {
    struct Pair {
      int client, server;
      bool first;
    };
    std::vector<Pair> pairs;
    bool seen_first = false;
    while (!stop_) {
      std::vector<pollfd> fds = {{listen_fd_, POLLIN, 0}};
      for (const Pair& p : pairs) {
        fds.push_back({p.client, POLLIN, 0});
        fds.push_back({p.server, POLLIN, 0});
      }
      if (::poll(fds.data(), fds.size(), 50) <= 0) continue;
      std::vector<Pair> alive;
      for (size_t i = 0; i < pairs.size(); ++i) {
        bool open = true;
        for (int dir = 0; dir < 2 && open; ++dir) {
          const pollfd& f = fds[1 + 2 * i + dir];
          if (!(f.revents & (POLLIN | POLLHUP | POLLERR))) continue;
          char buf[65536];
          const ssize_t n = ::read(f.fd, buf, sizeof(buf));
          if (n <= 0) {
            open = false;
            break;
          }
          const int to = dir == 0 ? pairs[i].server : pairs[i].client;
          for (ssize_t done = 0; done < n;) {
            const ssize_t w = ::write(to, buf + done, n - done);
            if (w <= 0) break;
            done += w;
          }
          std::lock_guard<std::mutex> lock(mu_);
          (dir == 0 ? to_server_ : to_client_).append(buf, n);
          if (dir == 0 && pairs[i].first) first_to_server_.append(buf, n);
        }
        if (open) {
          alive.push_back(pairs[i]);
        } else {
          ::close(pairs[i].client);
          ::close(pairs[i].server);
        }
      }
      pairs = alive;
      // New connections last: their descriptors were not polled yet.
      if (fds[0].revents & POLLIN) {
        const int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        const int s = testing::ConnectTcp(upstream_);
        if (c >= 0 && s >= 0) {
          pairs.push_back({c, s, !seen_first});
          seen_first = true;
        }
      }
    }
    for (const Pair& p : pairs) {
      ::close(p.client);
      ::close(p.server);
    }
  }

  const std::string upstream_;
  int listen_fd_ = -1;
  std::string address_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::string to_server_, to_client_, first_to_server_;
};

// A man in the middle on loopback that re-terminates TLS: it accepts each
// client's TLS with its own key and certificate `cert` (asking for the
// client's, as a peerkv server does), opens a TLS connection of its own,
// with the same key and certificate, to `upstream`, and relays the
// plaintext both ways. A thread per connection; all joined when it goes.
class TlsProxy {
 public:
  TlsProxy(std::string upstream, EVP_PKEY* key, X509* cert) : upstream_(std::move(upstream)) {
    server_ctx_ = SSL_CTX_new(TLS_server_method());
    client_ctx_ = SSL_CTX_new(TLS_client_method());
    for (SSL_CTX* ctx : {server_ctx_, client_ctx_}) {
      SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
      SSL_CTX_use_certificate(ctx, cert);
      SSL_CTX_use_PrivateKey(ctx, key);
    }
    SSL_CTX_set_num_tickets(server_ctx_, 0);
    SSL_CTX_set_verify(server_ctx_, SSL_VERIFY_PEER, [](int, X509_STORE_CTX*) { return 1; });
    SSL_CTX_set_verify(client_ctx_, SSL_VERIFY_NONE, nullptr);
    listen_fd_ = ListenOnLoopback(&address_);
    thread_ = std::thread([this] { AcceptLoop(); });
  }
  ~TlsProxy() {
    stop_ = true;
    thread_.join();
    for (std::thread& t : connections_) t.join();
    ::close(listen_fd_);
    SSL_CTX_free(server_ctx_);
    SSL_CTX_free(client_ctx_);
  }
  const std::string& address() const { return address_; }
  // Waits (up to 10 s) until every connection accepted so far has ended, so
  // that the counts below are complete for the clients that have returned
  // (a client may be done before the proxy's side of its connection is).
  bool WaitUntilIdle() {
    std::unique_lock<std::mutex> lock(mu_);
    return idle_.wait_for(lock, std::chrono::seconds(10), [this] { return ended_ == accepted_; });
  }
  // Handshakes the proxy finished with clients, and with the upstream.
  int client_handshakes() const { return client_handshakes_; }
  int upstream_handshakes() const { return upstream_handshakes_; }
  // Plaintext bytes clients sent through it, and the upstream answered.
  size_t plaintext_from_clients() const { return from_clients_; }
  size_t plaintext_from_upstream() const { return from_upstream_; }

 private:
  void AcceptLoop() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++accepted_;
      }
      connections_.emplace_back([this, c] {
        Relay(c);
        std::lock_guard<std::mutex> lock(mu_);
        ++ended_;
        idle_.notify_all();
      });
    }
  }
  void Relay(int client_fd) {
    timeval tv{10, 0};
    ::setsockopt(client_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    SSL* down = SSL_new(server_ctx_);
    SSL_set_fd(down, client_fd);
    const bool down_ok = SSL_accept(down) == 1;
    if (down_ok) ++client_handshakes_;
    const int up_fd = testing::ConnectTcp(upstream_);
    SSL* up = SSL_new(client_ctx_);
    bool up_ok = false;
    if (up_fd >= 0) {
      ::setsockopt(up_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
      SSL_set_fd(up, up_fd);
      up_ok = SSL_connect(up) == 1;
      if (up_ok) ++upstream_handshakes_;
    }
    // Relays until either side closes (a refusal closes it).
    while (down_ok && up_ok && !stop_) {
      pollfd fds[2] = {{client_fd, POLLIN, 0}, {up_fd, POLLIN, 0}};
      const bool pending = SSL_pending(down) > 0 || SSL_pending(up) > 0;
      if (!pending && ::poll(fds, 2, 50) <= 0) continue;
      bool open = true;
      for (int dir = 0; dir < 2 && open; ++dir) {
        SSL* from = dir == 0 ? down : up;
        SSL* to = dir == 0 ? up : down;
        if (!(fds[dir].revents & (POLLIN | POLLHUP | POLLERR)) && SSL_pending(from) == 0) {
          continue;
        }
        char buf[16384];
        const int n = SSL_read(from, buf, sizeof(buf));
        if (n <= 0) {
          open = false;
          break;
        }
        (dir == 0 ? from_clients_ : from_upstream_) += static_cast<size_t>(n);
        open = SSL_write(to, buf, n) == n;
      }
      if (!open) break;
    }
    ERR_clear_error();
    SSL_free(up);
    SSL_free(down);
    if (up_fd >= 0) ::close(up_fd);
    ::close(client_fd);
  }

  const std::string upstream_;
  SSL_CTX* server_ctx_ = nullptr;
  SSL_CTX* client_ctx_ = nullptr;
  int listen_fd_ = -1;
  std::string address_;
  std::atomic<bool> stop_{false};
  std::atomic<int> client_handshakes_{0};
  std::atomic<int> upstream_handshakes_{0};
  std::atomic<size_t> from_clients_{0};
  std::atomic<size_t> from_upstream_{0};
  std::mutex mu_;
  std::condition_variable idle_;
  int accepted_ = 0;  // guarded by mu_
  int ended_ = 0;     // guarded by mu_
  std::thread thread_;
  std::vector<std::thread> connections_;  // touched by thread_ only, until joined
};

// The TLS identity of the data directory `dir` (a device holding its
// user's key): its device key and a device certificate issued now.
rpc::TlsIdentity TlsOf(const std::string& dir) {
  std::unique_ptr<auth::Identity> id = *auth::Identity::Load(dir);
  return rpc::TlsIdentity{*auth::SigningKey::FromSeed(id->device_key().seed()),
                          *id->IssueOwnCertificate("device", absl::ToUnixMillis(absl::Now()))};
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::UseTestUser();
    server_ = testing::StartReplica(dir_, "a");
    ASSERT_NE(server_, nullptr);
    data_ = dir_.Sub("a");
  }
  // device and friend commands open the directory itself: the server
  // stops for them and starts again (on a new port).
  RunResult WithServerStopped(std::vector<std::string> args) {
    EXPECT_EQ(server_->Stop(SIGTERM), 0);
    RunResult r = Peerkv(data_, std::move(args));
    server_ = testing::StartReplica(dir_, "a");
    EXPECT_NE(server_, nullptr);
    return r;
  }
  void TearDown() override {
    if (server_ != nullptr) {
      EXPECT_EQ(server_->Stop(SIGTERM), 0) << server_->Log();
    }
  }
  RunResult Peerkv(const std::string& data, std::vector<std::string> args) {
    args.insert(args.begin(), {testing::RunfilePath("cli/peerkv"), "--data", data});
    return testing::Run(args);
  }
  // `peerkv --data DATA init INIT_ARGS...`: the id it printed after
  // `label` ("user" or "device"), or "" with a failure recorded.
  std::string Init(const std::string& data, std::vector<std::string> init_args,
                   const std::string& label) {
    init_args.insert(init_args.begin(), "init");
    RunResult init = Peerkv(data, std::move(init_args));
    EXPECT_EQ(init.exit_code, 0) << init.err;
    const std::string id = testing::IdAfter(init.out, label);
    EXPECT_FALSE(id.empty()) << "no " << label << " id in: " << init.out;
    return id;
  }
  // The server still serves its own clients, and holds exactly one put.
  void ExpectServingAndUnchanged(uint64_t fingerprint) {
    EXPECT_EQ(testing::FingerprintOf(*server_), fingerprint);
    std::unique_ptr<rpc::Client> client = testing::ConnectTo(*server_);
    ASSERT_NE(client, nullptr);
    EXPECT_THAT(client->Get("ks", "k"), IsOk());
  }
  uint64_t PutOne() {
    std::unique_ptr<rpc::Client> client = testing::ConnectTo(*server_);
    EXPECT_THAT(client->Put("ks", "k", "v"), IsOk());
    return testing::FingerprintOf(*server_);
  }

  testing::TempDir dir_;
  std::string data_;
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(TlsTest, TwoDevicesOfOneUserPairBySyncOverTls) {
  const std::string phone = dir_.Sub("phone");
  const std::string tablet = dir_.Sub("tablet");
  const std::string user = Init(phone, {"--user", "jane", "--name", "phone"}, "user");
  ASSERT_FALSE(user.empty());
  const std::string device = Init(tablet, {"--join", user}, "device");
  ASSERT_FALSE(device.empty());
  ASSERT_EQ(Peerkv(phone, {"device", "add", device, "--name", "tablet"}).exit_code, 0);
  auto p = ServerProcess::Start(phone, testing::ReplicaArgs("phone"));
  ASSERT_THAT(p, IsOk());
  auto t = ServerProcess::Start(tablet, testing::ReplicaArgs("tablet", {(*p)->address()}));
  ASSERT_THAT(t, IsOk());
  EXPECT_THAT((*p)->Log(), HasSubstr(", TLS"));
  ASSERT_EQ(Peerkv(phone, {"put", "notes", "n1", "over tls"}).exit_code, 0);
  // Jane's servers, not the test user's: asked through their local sockets
  // (another process holds the answer, so this polls, bounded).
  RunResult got;
  for (int i = 0; i < 200 && got.out.find("over tls") == std::string::npos; ++i) {
    if (i > 0) absl::SleepFor(absl::Milliseconds(50));
    got = Peerkv(tablet, {"get", "notes", "n1"});
  }
  EXPECT_THAT(got.out, HasSubstr("over tls")) << got.err << (*t)->Log();
  // Neither is the test user's: the test's own client is refused by both.
  EXPECT_THAT(rpc::Client::Connect(rpc::ClientOptions{.address = (*p)->address()}).status(),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_EQ((*t)->Stop(SIGTERM), 0);
  EXPECT_EQ((*p)->Stop(SIGTERM), 0);
}

// A device whose certificate expired is refused (after the handshake, the
// phone's log naming it and the expiry) while another device of the same
// user keeps syncing. The phone's clock runs 2 hours ahead
// (--clock-offset-ms, the injected clock): the pc was certified for 1 hour,
// the tablet for the default year. The phone's renewal pass at start
// leaves the expired pc alone (only `device renew` brings it back).
// The line of `out` that starts with `prefix` (empty if none).
std::string Line(const std::string& out, const std::string& prefix) {
  std::istringstream lines(out);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(prefix, 0) == 0) return line;
  }
  return "";
}
// The second word of `out`'s line that starts with `name `.
std::string Field(const std::string& out, const std::string& name) {
  const std::string line = Line(out, name + " ");
  return line.empty() ? "" : line.substr(name.size() + 1, line.find(' ', name.size() + 1) -
                                                              name.size() - 1);
}

TEST_F(TlsTest, AnExpiredDeviceIsRefusedWhileAnotherKeepsSyncing) {
  const std::string phone = dir_.Sub("phone");
  const std::string tablet = dir_.Sub("tablet");
  const std::string pc = dir_.Sub("pc");
  const std::string user = Init(phone, {"--user", "jane", "--name", "phone"}, "user");
  ASSERT_FALSE(user.empty());
  const std::string tablet_id = Init(tablet, {"--join", user}, "device");
  ASSERT_FALSE(tablet_id.empty());
  const std::string pc_id = Init(pc, {"--join", user}, "device");
  ASSERT_FALSE(pc_id.empty());
  ASSERT_EQ(Peerkv(phone, {"device", "add", tablet_id, "--name", "tablet"}).exit_code, 0);
  RunResult bad = Peerkv(phone, {"device", "add", pc_id, "--name", "pc", "--valid-for", "30s"});
  EXPECT_EQ(bad.exit_code, 2) << bad.err;
  EXPECT_THAT(bad.err, HasSubstr("--valid-for must be a duration such as 365d"));
  RunResult add = Peerkv(phone, {"device", "add", pc_id, "--name", "pc", "--valid-for", "1h"});
  ASSERT_EQ(add.exit_code, 0) << add.err;
  EXPECT_THAT(add.out, HasSubstr("certified until "));
  // A laptop certified for 3 hours: 2 hours in (the phone's clock), it is in
  // the last third and not expired, so the phone's serve renews it.
  const std::string laptop_id =
      Field(Peerkv(dir_.Sub("laptop"), {"init", "--join", user}).out, "device");
  ASSERT_EQ(Peerkv(phone, {"device", "add", laptop_id, "--name", "laptop", "--valid-for", "3h"})
                .exit_code,
            0);
  const std::string laptop_before = Line(Peerkv(phone, {"device", "list"}).out, laptop_id);

  std::vector<std::string> phone_args = testing::ReplicaArgs("phone");
  phone_args.insert(phone_args.end(), {"--clock-offset-ms", "7200000", "--max-clock-skew", "3h"});
  auto p = ServerProcess::Start(phone, phone_args);
  ASSERT_THAT(p, IsOk());
  std::vector<std::string> tablet_args = testing::ReplicaArgs("tablet", {(*p)->address()});
  tablet_args.insert(tablet_args.end(), {"--max-clock-skew", "3h"});
  auto t = ServerProcess::Start(tablet, tablet_args);
  ASSERT_THAT(t, IsOk());
  EXPECT_THAT((*t)->WaitForLog("this device is now a device of user"),
              HasSubstr("this device is now a device of user"));
  auto c = ServerProcess::Start(pc, testing::ReplicaArgs("pc", {(*p)->address()}));
  ASSERT_THAT(c, IsOk());
  EXPECT_THAT((*p)->WaitForLog("refused device " + pc_id + " (pc): its device certificate "
                               "expired at "),
              ContainsRegex("refused device " + pc_id +
                            " \\(pc\\): its device certificate expired at "
                            "[0-9-]+T[0-9:]+Z \\(now [0-9-]+T[0-9:]+Z, 300s of clock skew "
                            "allowed\\); renew it with `peerkv device renew " + pc_id));
  EXPECT_THAT((*p)->WaitForLog("renewed the certificate of device " + laptop_id),
              ContainsRegex("renewed the certificate of device " + laptop_id +
                            " \\(laptop\\) until [0-9-]+T[0-9:]+Z"));
  EXPECT_THAT((*p)->Log(), Not(HasSubstr("renewed the certificate of device " + pc_id)));
  EXPECT_THAT((*p)->Log(), Not(HasSubstr("renewed the certificate of device " + tablet_id)));

  // The tablet keeps syncing both ways while the pc is refused.
  ASSERT_EQ(Peerkv(tablet, {"put", "notes", "t1", "from the tablet"}).exit_code, 0);
  RunResult got;
  for (int i = 0; i < 200 && got.out.find("from the tablet") == std::string::npos; ++i) {
    if (i > 0) absl::SleepFor(absl::Milliseconds(50));
    got = Peerkv(phone, {"get", "notes", "t1"});
  }
  EXPECT_THAT(got.out, HasSubstr("from the tablet")) << got.err << (*p)->Log();
  // And the phone's writes (after the renewal, so the renewed record is
  // pulled first) reach the tablet.
  ASSERT_EQ(Peerkv(phone, {"put", "notes", "p1", "from the phone"}).exit_code, 0);
  got = RunResult{};
  for (int i = 0; i < 200 && got.out.find("from the phone") == std::string::npos; ++i) {
    if (i > 0) absl::SleepFor(absl::Milliseconds(50));
    got = Peerkv(tablet, {"get", "notes", "p1"});
  }
  EXPECT_THAT(got.out, HasSubstr("from the phone")) << got.err << (*t)->Log();
  EXPECT_EQ((*c)->Stop(SIGTERM), 0);
  EXPECT_THAT((*c)->Log(), Not(HasSubstr("this device is now a device of user")));
  EXPECT_EQ((*t)->Stop(SIGTERM), 0);
  EXPECT_EQ((*p)->Stop(SIGTERM), 0);
  // Nothing reached the pc; the phone's list shows it expired.
  EXPECT_THAT(Peerkv(pc, {"id"}).out, HasSubstr("(waiting to be added)"));
  RunResult list = Peerkv(phone, {"device", "list"});
  EXPECT_THAT(list.out, ContainsRegex(pc_id + " pc added [^ ]+ expires "));
  EXPECT_THAT(list.out, ContainsRegex(tablet_id + " tablet added [^ ]+ expires "));
  // The renewal replaced the laptop's record, and travelled to the tablet
  // like the add did.
  const std::string laptop_after = Line(list.out, laptop_id);
  EXPECT_NE(laptop_after, laptop_before);
  EXPECT_THAT(laptop_after, ContainsRegex(" laptop added [^ ]+ expires "));
  EXPECT_EQ(Line(Peerkv(tablet, {"device", "list"}).out, laptop_id), laptop_after);
}

// A client whose device certificate expires while its connection is open
// is cut off at that moment (its expiry plus the clock skew allowed), not
// at the next change of the device or friend lists: at the server's
// injected clock, two hours ahead (--clock-offset-ms). The certificate,
// issued by the test user for a device key of its own, has 8 s left when
// the test starts; another client keeps being served.
TEST_F(TlsTest, AConnectionIsClosedAtTheMomentItsCertificateExpires) {
  constexpr int64_t kAheadMs = 7'200'000;
  constexpr int64_t kLeftMs = 8'000;
  constexpr int64_t kValidForMs = 3'600'000;
  std::unique_ptr<ServerProcess> e = testing::StartReplica(
      dir_, "e", {}, {"--clock-offset-ms", std::to_string(kAheadMs), "--max-clock-skew", "3h"});
  ASSERT_NE(e, nullptr);
  std::unique_ptr<auth::Identity> user = *auth::Identity::Load(testing::TestIdentityDir());
  std::unique_ptr<auth::SigningKey> device = auth::SigningKey::Generate();
  const std::string device_id = auth::DeviceId(device->public_key());
  // Refused from due_ms on (the real clock; the server's is kAheadMs on).
  const int64_t due_ms = absl::ToUnixMillis(absl::Now()) + kLeftMs;
  const int64_t issued_ms = due_ms + kAheadMs - kValidForMs - auth::kExpiryToleranceMs - 1;
  rpc::TlsIdentity tls{*auth::SigningKey::FromSeed(device->seed()),
                       auth::IssueDeviceCertificate(*user->user_key(), device->public_key(),
                                                    "laptop", issued_ms, kValidForMs)
                           .Encode()};
  absl::StatusOr<std::unique_ptr<rpc::Client>> client = ConnectAs(*e, tls);
  ASSERT_THAT(client, IsOk()) << e->Log();
  ASSERT_THAT((*client)->Put("ks", "k", "before the expiry"), IsOk());

  const std::string expired = ": refused device " + device_id + ": the device certificate of "
                              "device " + device_id + " (laptop) expired at ";
  EXPECT_THAT(LineWith(e->WaitForLog(expired), expired), HasSubstr("closed connection from "));
  EXPECT_GE(absl::ToUnixMillis(absl::Now()), due_ms) << "closed before the expiry";
  absl::Status after = (*client)->Get("ks", "k").status();
  EXPECT_FALSE(after.ok());
  EXPECT_NE(after.code(), absl::StatusCode::kPermissionDenied) << after;
  EXPECT_THAT(ConnectAs(*e, tls).status(), StatusIs(absl::StatusCode::kUnavailable));
  std::unique_ptr<rpc::Client> other = testing::ConnectTo(*e);
  ASSERT_NE(other, nullptr);
  EXPECT_THAT(other->Get("ks", "k"), IsOk());
  EXPECT_EQ(e->Stop(SIGTERM), 0);
}

// The certificate a server shows on new links is its renewed one, whether
// it renewed itself (holding the user key) or the renewal was made on
// another device and replicated to it, so that it is still accepted after
// its old certificate's expiry. The phone is certified for 1 hour and runs
// 45 minutes ahead (--clock-offset-ms): its first renewal pass renews
// itself and shows the new certificate; the tablet, 70 minutes ahead (past
// the old one's expiry and the skew allowed), still accepts it. Then the
// tablet renews the phone for 3 hours: the phone's next pass (every 100 ms
// here, --renew-interval-ms; hourly by default) shows that one.
TEST_F(TlsTest, AServerShowsItsRenewedCertificateOnNewLinks) {
  const std::string phone = dir_.Sub("phone");
  const std::string tablet = dir_.Sub("tablet");
  RunResult init = Peerkv(phone, {"init", "--user", "jane", "--name", "phone"});
  ASSERT_EQ(init.exit_code, 0) << init.err;
  const std::string user = Field(init.out, "user");
  const std::string phone_id = Field(init.out, "device");
  const std::string tablet_id = Field(Peerkv(tablet, {"init", "--join", user}).out, "device");
  ASSERT_EQ(Peerkv(phone, {"device", "add", tablet_id, "--name", "tablet"}).exit_code, 0);
  RunResult hour = Peerkv(phone, {"device", "renew", phone_id, "--valid-for", "1h"});
  ASSERT_EQ(hour.exit_code, 0) << hour.err;
  auto user_key = auth::ParseUserId(user, "user");
  ASSERT_THAT(user_key, IsOk());
  // The expiry of the certificate `server` shows on a new link.
  auto shown_expiry = [&](const ServerProcess& server) -> std::string {
    const std::optional<std::string> shown = ShownDeviceCertificate(server.address());
    if (!shown.has_value() || shown->empty()) return "(none)";
    absl::StatusOr<auth::DeviceCertificate> cert = auth::VerifyDeviceCertificate(*shown, *user_key);
    return cert.ok() ? auth::FormatUtcMs(cert->ExpiresMs()) : std::string(cert.status().message());
  };

  std::vector<std::string> phone_args = testing::ReplicaArgs("phone");
  phone_args.insert(phone_args.end(), {"--clock-offset-ms", "2700000", "--max-clock-skew", "3h",
                                       "--renew-interval-ms", "100"});
  auto p = ServerProcess::Start(phone, phone_args);
  ASSERT_THAT(p, IsOk());
  const std::string shows = "TLS links now show a renewed device certificate, valid until ";
  const std::string renewed = (*p)->WaitForLog(shows);
  ASSERT_THAT(renewed, HasSubstr("renewed the certificate of device " + phone_id)) << renewed;
  const std::string line = LineWith(renewed, shows);
  ASSERT_NE(line, "") << renewed;
  const std::string first_expiry = line.substr(line.find(shows) + shows.size());
  EXPECT_EQ(shown_expiry(**p), first_expiry);
  // `device list` (through the phone's socket) lists the one it shows.
  EXPECT_THAT(Line(Peerkv(phone, {"device", "list"}).out, phone_id),
              HasSubstr(" expires " + first_expiry));

  std::vector<std::string> tablet_args = testing::ReplicaArgs("tablet", {(*p)->address()});
  tablet_args.insert(tablet_args.end(), {"--clock-offset-ms", "4200000", "--max-clock-skew", "3h"});
  auto t = ServerProcess::Start(tablet, tablet_args);
  ASSERT_THAT(t, IsOk());
  EXPECT_THAT((*t)->WaitForLog("this device is now a device of user"),
              HasSubstr("this device is now a device of user"));

  // The renewal made on the tablet (the command opens its directory).
  ASSERT_EQ((*t)->Stop(SIGTERM), 0);
  RunResult three = Peerkv(tablet, {"device", "renew", phone_id, "--valid-for", "3h"});
  ASSERT_EQ(three.exit_code, 0) << three.err;
  ASSERT_THAT(three.out, HasSubstr("certified until "));
  const std::string second_expiry =
      three.out.substr(three.out.find("certified until ") + 16, 20);
  t = ServerProcess::Start(tablet, tablet_args);
  ASSERT_THAT(t, IsOk());
  EXPECT_THAT((*p)->WaitForLog(shows + second_expiry), HasSubstr(shows + second_expiry));
  EXPECT_EQ(shown_expiry(**p), second_expiry);
  EXPECT_EQ((*t)->Stop(SIGTERM), 0);
  EXPECT_EQ((*p)->Stop(SIGTERM), 0);
}

// A device that joins while serving shows its new device certificate on
// the TLS links it makes from then on, without a restart (it used to show
// the bare key until restarted).
TEST_F(TlsTest, AJoinedDeviceShowsItsCertificateWithoutARestart) {
  const std::string phone = dir_.Sub("phone");
  const std::string tablet = dir_.Sub("tablet");
  const std::string user = Init(phone, {"--user", "jane", "--name", "phone"}, "user");
  ASSERT_FALSE(user.empty());
  const std::string device = Init(tablet, {"--join", user}, "device");
  ASSERT_FALSE(device.empty());
  ASSERT_EQ(Peerkv(phone, {"device", "add", device, "--name", "tablet"}).exit_code, 0);
  auto p = ServerProcess::Start(phone, testing::ReplicaArgs("phone"));
  ASSERT_THAT(p, IsOk());
  EXPECT_EQ(ServerShowsDeviceCertificate((*p)->address()), true);
  auto t = ServerProcess::Start(tablet, testing::ReplicaArgs("tablet", {(*p)->address()}));
  ASSERT_THAT(t, IsOk());
  const std::string shown = "TLS links now show this device's certificate";
  EXPECT_THAT((*t)->WaitForLog(shown), HasSubstr(shown));
  EXPECT_THAT((*t)->Log(), HasSubstr("this device is now a device of user " + user));
  EXPECT_EQ(ServerShowsDeviceCertificate((*t)->address()), true) << (*t)->Log();
  EXPECT_EQ((*t)->Stop(SIGTERM), 0);
  EXPECT_EQ((*p)->Stop(SIGTERM), 0);
}

// A friend's device gets a Kv that acts as the friend: nothing without a
// policy that names the friend (tests/policy_test.cc has the policies).
TEST_F(TlsTest, AFriendsDeviceConnectsAndGetsNothing) {
  const uint64_t fingerprint = PutOne();
  OwnIdentity fred = NewUserDevice(dir_.Sub("fred"), "fred");
  const std::string fred_id = auth::UserId(fred.identity->user());
  RunResult add = WithServerStopped({"friend", "add", fred_id, "--name", "fred"});
  ASSERT_EQ(add.exit_code, 0) << add.err << add.out;
  const uint64_t with_friend = testing::FingerprintOf(*server_);
  absl::StatusOr<std::unique_ptr<rpc::Client>> client = ConnectAs(*server_, fred.tls);
  ASSERT_THAT(client, IsOk());
  const std::string refused = "user " + fred_id + " may not read keyspace 'ks'";
  EXPECT_THAT((*client)->Get("ks", "k"), StatusIs(absl::StatusCode::kPermissionDenied, refused));
  // The same answer for a keyspace that does not exist.
  EXPECT_THAT((*client)->Get("nothing", "k"),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       "user " + fred_id + " may not read keyspace 'nothing'"));
  EXPECT_THAT((*client)->Put("ks", "k", "x"),
              StatusIs(absl::StatusCode::kPermissionDenied, "may not write keyspace 'ks'"));
  EXPECT_THAT((*client)->Status(), StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_NE(fingerprint, with_friend);
  ExpectServingAndUnchanged(with_friend);
}

TEST_F(TlsTest, AStrangerIsRefusedAndLoggedOnceWithItsDeviceId) {
  const uint64_t fingerprint = PutOne();
  OwnIdentity stranger = NewUserDevice(dir_.Sub("mallory"), "mallory");
  const std::string id = auth::DeviceId(stranger.tls.key->public_key());
  // The server closes the connection after the handshake (the client sees
  // it lost, Unavailable) and logs why, once.
  for (int i = 0; i < 2; ++i) {
    EXPECT_THAT(ConnectAs(*server_, stranger.tls).status(),
                StatusIs(absl::StatusCode::kUnavailable));
  }
  const std::string line = "refused device " + id + ": not a device of user";
  EXPECT_THAT(server_->WaitForLog(line), HasSubstr("add it with `peerkv device add " + id + "`"));
  ExpectServingAndUnchanged(fingerprint);
  EXPECT_EQ(Count(server_->Log(), line), 1) << server_->Log();
}

TEST_F(TlsTest, APlaintextClientIsRefused) {
  const uint64_t fingerprint = PutOne();
  const int fd = testing::ConnectTcp(server_->address());
  ASSERT_GE(fd, 0);
  // A Cap'n Proto bootstrap's first bytes, in the clear.
  const char hello[] = "\x00\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x01\x00\x08\x00";
  ASSERT_EQ(::write(fd, hello, sizeof(hello)), static_cast<ssize_t>(sizeof(hello)));
  char buf[64];
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) {
  }
  // Closed by the server (EOF, or a reset over unread bytes), not timed out.
  const int read_errno = errno;
  EXPECT_TRUE(n == 0 || (n < 0 && read_errno == ECONNRESET)) << std::strerror(read_errno);
  ::close(fd);
  EXPECT_THAT(server_->WaitForLog("rejected tls handshake"), HasSubstr("rejected tls handshake"));
  ExpectServingAndUnchanged(fingerprint);
}

TEST_F(TlsTest, ForgedAndSelfMadeCertificatesAndWrongKeyTypesAreRefused) {
  const uint64_t fingerprint = PutOne();
  std::unique_ptr<auth::SigningKey> device = auth::SigningKey::Generate();
  std::unique_ptr<auth::SigningKey> forger = auth::SigningKey::Generate();
  EVP_PKEY* ed = Ed25519Of(*device);
  // A device certificate naming the test user, signed by someone else.
  auth::DeviceCertificate forged =
      auth::IssueDeviceCertificate(*forger, device->public_key(), "evil", 1);
  forged.user = *auth::ParseUserId(testing::TestUserId(), "test user");
  X509* forged_cert = SelfSigned(ed, forged.Encode());
  RawOutcome r = RawTls(server_->address(), ed, forged_cert, "127.0.0.2");
  EXPECT_TRUE(r.handshake);
  EXPECT_TRUE(r.closed_by_server);
  EXPECT_THAT(server_->WaitForLog("device certificate of peer " + auth::DeviceId(device->public_key()) +
                                  " refused"),
              HasSubstr("signature"));
  // Garbage in the extension.
  X509* garbage = SelfSigned(ed, "not a certificate");
  r = RawTls(server_->address(), ed, garbage, "127.0.0.3");
  EXPECT_TRUE(r.closed_by_server);
  EXPECT_THAT(server_->WaitForLog("rejected tls from 127.0.0.3"), HasSubstr("is truncated"));
  // Self-made: a self-signed certificate and nothing else.
  X509* bare = SelfSigned(ed, "");
  r = RawTls(server_->address(), ed, bare, "127.0.0.4");
  EXPECT_TRUE(r.closed_by_server);
  EXPECT_THAT(server_->WaitForLog("refused device " + auth::DeviceId(device->public_key())),
              HasSubstr("not a device of user"));
  // An ECDSA key: not a peerkv device.
  EVP_PKEY* ec = EVP_EC_gen("P-256");
  X509* ec_cert = SelfSigned(ec, "");
  r = RawTls(server_->address(), ec, ec_cert, "127.0.0.5");
  EXPECT_TRUE(r.closed_by_server);
  const std::string log = server_->WaitForLog("peerkv devices use Ed25519");
  EXPECT_THAT(log, HasSubstr("has a id-ecPublicKey key")) << log.substr(log.size() > 1500 ? log.size() - 1500 : 0);
  for (X509* x : {forged_cert, garbage, bare, ec_cert}) X509_free(x);
  EVP_PKEY_free(ed);
  EVP_PKEY_free(ec);
  ExpectServingAndUnchanged(fingerprint);
}

TEST_F(TlsTest, ARemovedDeviceIsRefused) {
  PutOne();
  const std::string laptop = dir_.Sub("laptop");
  RunResult join = Peerkv(laptop, {"init", "--join", testing::TestUserId()});
  ASSERT_EQ(join.exit_code, 0) << join.err;
  std::unique_ptr<auth::Identity> id = *auth::Identity::Load(laptop);
  const std::string device = auth::DeviceId(id->device_key().public_key());
  rpc::TlsIdentity tls{*auth::SigningKey::FromSeed(id->device_key().seed()), ""};
  // Waiting to be added: refused.
  EXPECT_THAT(ConnectAs(*server_, tls).status(), StatusIs(absl::StatusCode::kUnavailable));
  // Added: served.
  RunResult add = WithServerStopped({"device", "add", device, "--name", "laptop"});
  ASSERT_EQ(add.exit_code, 0) << add.err;
  absl::StatusOr<std::unique_ptr<rpc::Client>> added = ConnectAs(*server_, tls);
  ASSERT_TRUE(added.ok());
  EXPECT_THAT((*added)->Get("ks", "k"), IsOk());
  // Removed: refused again, and says so.
  RunResult removal = WithServerStopped({"device", "remove", device});
  ASSERT_EQ(removal.exit_code, 0) << removal.err;
  const uint64_t fingerprint = testing::FingerprintOf(*server_);
  EXPECT_THAT(ConnectAs(*server_, tls).status(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(server_->WaitForLog("refused device " + device + ": it was removed"),
              HasSubstr("it was removed from user"));
  ExpectServingAndUnchanged(fingerprint);
}

// `peerkv bench` over TLS with a device the server refuses: TLS 1.3 ends
// the client's handshake before the server checks the client's
// certificate, so the refusal reaches the client as the connection
// closing. bench used to drop the failed calls' requests unanswered and die
// with kj's "PromiseFulfiller was destroyed without fulfilling the
// promise"; it names the device and the fix now, as rpc::Client does.
TEST_F(TlsTest, BenchWithARefusedDeviceSaysWhy) {
  const uint64_t fingerprint = PutOne();
  const std::string laptop = dir_.Sub("laptop");
  const std::string device = Init(laptop, {"--join", testing::TestUserId()}, "device");
  ASSERT_FALSE(device.empty());
  RunResult bench = testing::Run({testing::RunfilePath("cli/peerkv"), "--server",
                                  server_->address(), "--identity", laptop, "bench", "-c", "3",
                                  "-n", "30"});
  EXPECT_EQ(bench.exit_code, 1) << bench.out << bench.err;
  EXPECT_THAT(bench.err, HasSubstr("does not accept device " + device));
  EXPECT_THAT(bench.err, ::testing::Not(HasSubstr("PromiseFulfiller")));
  std::unique_ptr<auth::Identity> id = *auth::Identity::Load(laptop);
  rpc::TlsIdentity tls{*auth::SigningKey::FromSeed(id->device_key().seed()), ""};
  EXPECT_THAT(ConnectAs(*server_, tls).status(),
              StatusIs(absl::StatusCode::kUnavailable, "does not accept device " + device));
  ExpectServingAndUnchanged(fingerprint);
}

// The TLS stream (rpc/tls.cc drives OpenSSL itself) carries values that
// span many TLS records and many small calls in a row, byte for byte, and
// a bench run with pipelined calls over TLS has no errors.
TEST_F(TlsTest, LargeValuesAndManySmallCallsCrossTheTlsLinkIntact) {
  std::unique_ptr<rpc::Client> client = testing::ConnectTo(*server_);
  ASSERT_NE(client, nullptr);
  std::string big(3 * 1024 * 1024 + 17, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 131 + i / 7) & 0xff);
  ASSERT_THAT(client->Put("ks", "big", big), IsOk());
  for (int i = 0; i < 200; ++i) {
    // 0 bytes up to past one 16 KiB record and past the 64 KiB buffers.
    const std::string value(static_cast<size_t>(i * i * 2), static_cast<char>('a' + i % 26));
    ASSERT_THAT(client->Put("ks", absl::StrFormat("k%d", i), value), IsOk()) << i;
  }
  auto got = client->Get("ks", "big");
  ASSERT_THAT(got, IsOk());
  ASSERT_TRUE(got->has_value());
  EXPECT_TRUE((*got)->value == big) << "a 3 MiB value came back changed";
  for (int i = 0; i < 200; ++i) {
    got = client->Get("ks", absl::StrFormat("k%d", i));
    ASSERT_THAT(got, IsOk());
    ASSERT_TRUE(got->has_value());
    EXPECT_EQ((*got)->value.size(), static_cast<size_t>(i * i * 2));
    EXPECT_EQ((*got)->value, std::string((*got)->value.size(), static_cast<char>('a' + i % 26)));
  }
  // The test's identity ($PEERKV_IDENTITY) is a device of the server's user.
  RunResult bench = testing::Run({testing::RunfilePath("cli/peerkv"), "--server", server_->address(), "bench",
                        "-c", "4", "-P", "8", "-n", "2000", "-d", "5000"});
  EXPECT_EQ(bench.exit_code, 0) << bench.out << bench.err;
  EXPECT_THAT(bench.out, HasSubstr("GET: ")) << bench.err;
  EXPECT_THAT(bench.out, ::testing::Not(HasSubstr("errors"))) << bench.out;
}

// A TCP client that never starts its TLS handshake is closed after the
// handshake timeout (--idle-timeout-ms bounds it), and logged; everyone
// else is served meanwhile.
TEST_F(TlsTest, ASilentTcpClientIsClosedAfterTheHandshakeTimeout) {
  std::unique_ptr<ServerProcess> quick =
      testing::StartReplica(dir_, "quick", {}, {"--idle-timeout-ms", "300"});
  ASSERT_NE(quick, nullptr);
  const auto opened = std::chrono::steady_clock::now();
  const int silent = testing::ConnectTcp(quick->address());
  ASSERT_GE(silent, 0);
  std::unique_ptr<rpc::Client> client = testing::ConnectTo(*quick);
  ASSERT_NE(client, nullptr);
  EXPECT_THAT(client->Put("ks", "k", "v"), IsOk());
  // Closed by the server: EOF or reset, within a bounded wait.
  bool closed = false;
  char buf[256];
  for (int i = 0; i < 100 && !closed; ++i) {
    pollfd p{silent, POLLIN, 0};
    if (poll(&p, 1, 100) > 0) closed = read(silent, buf, sizeof(buf)) <= 0;
  }
  EXPECT_TRUE(closed) << quick->Log();
  EXPECT_GE(std::chrono::steady_clock::now() - opened, std::chrono::milliseconds(300));
  close(silent);
  const std::string line = "timed out waiting for the client's TLS handshake";
  EXPECT_THAT(quick->WaitForLog(line), HasSubstr(line));
  EXPECT_THAT(client->Get("ks", "k"), IsOk());
  EXPECT_EQ(quick->Stop(SIGTERM), 0) << quick->Log();
}

// Replica ids are minted from the device key (README "Bound to the
// device"). Replica b says hello to a; then c, a copy of b's directory with
// a device key of its own (another device of the same user), starts: its
// stored id (b's) is not minted from its key, so it forks to one that is
// and links under it, instead of claiming b's id (which a would refuse,
// whatever a remembers).
class ReplicaIdTest : public TlsTest {
 protected:
  // Starts b dialling a until they hold the same data, stops b, and makes
  // c (not started) from b's directory. Fills b's replica id.
  void SyncBThenCopyIt() {
    auto b = testing::StartReplica(dir_, "b", {server_->address()});
    ASSERT_NE(b, nullptr);
    PutOne();
    ASSERT_TRUE(testing::Converged({server_.get(), b.get()}, absl::Seconds(20)))
        << server_->Log() << b->Log();
    ASSERT_EQ(b->Stop(SIGTERM), 0);
    b_replica_ = ReplicaOf("b");
    ASSERT_EQ(b_replica_.size(), 16u);
    RunResult copy = testing::Run({"/bin/sh", "-c",
                                   absl::StrFormat("cp -r %s %s && rm -rf %s/keys %s/peerkv.sock",
                                                   dir_.Sub("b"), dir_.Sub("c"), dir_.Sub("c"),
                                                   dir_.Sub("c"))});
    ASSERT_EQ(copy.exit_code, 0) << copy.err;
  }
  std::string ReplicaOf(const std::string& name) {
    RunResult id = Peerkv(dir_.Sub(name), {"id"});
    EXPECT_EQ(id.exit_code, 0) << id.err;
    const size_t at = id.out.find("replica ");
    return at == std::string::npos ? "" : id.out.substr(at + 8, 16);
  }

  std::string b_replica_;
};

TEST_F(ReplicaIdTest, ADirectoryUnderANewDeviceKeyForksToAnIdOfThatKey) {
  SyncBThenCopyIt();
  auto c = testing::StartReplica(dir_, "c", {server_->address()});
  ASSERT_NE(c, nullptr);
  const std::string forked = "was not minted from this data directory's device key";
  EXPECT_THAT(c->WaitForLog(forked), HasSubstr("forked to replica id"));
  std::unique_ptr<rpc::Client> to_c = testing::ConnectTo(*c);
  ASSERT_NE(to_c, nullptr);
  ASSERT_THAT(to_c->Put("ks", "from-c", "v"), IsOk());
  EXPECT_TRUE(testing::Converged({server_.get(), c.get()}, absl::Seconds(20)))
      << server_->Log() << c->Log();
  const std::string c_replica = ReplicaOf("c");
  EXPECT_EQ(c_replica.size(), 16u);
  EXPECT_NE(c_replica, b_replica_);
  EXPECT_THAT(server_->Log(), ::testing::Not(HasSubstr("claims replica id")));
  EXPECT_EQ(c->Stop(SIGTERM), 0);
}

TEST_F(TlsTest, AServerShowingAnotherKeyIsRefusedByTheClient) {
  // A man in the middle re-terminating TLS shows its own certificate: the
  // client pins the user, so it refuses before sending anything.
  auto mitm = ServerProcess::Start(dir_.Sub("mitm"), {"--user", "mallory"});
  ASSERT_THAT(mitm, IsOk());
  absl::StatusOr<std::unique_ptr<rpc::Client>> client =
      rpc::Client::Connect(rpc::ClientOptions{.address = (*mitm)->address()});
  EXPECT_THAT(client.status(),
              StatusIs(absl::StatusCode::kPermissionDenied, "not a device of user"));
  RunResult cli = testing::Run(
      {testing::RunfilePath("cli/peerkv"), "--server", (*mitm)->address(), "put", "ks", "k", "v"});
  EXPECT_NE(cli.exit_code, 0);
  EXPECT_THAT(cli.err, HasSubstr("nor of a friend"));
  EXPECT_EQ((*mitm)->Stop(SIGTERM), 0);
}

TEST_F(TlsTest, AWireCaptureOfReplicationHoldsNoValueBytesAndCannotBeReplayed) {
  RecordingProxy proxy(server_->address());
  auto b = testing::StartReplica(dir_, "b", {proxy.address()});
  ASSERT_NE(b, nullptr);
  const std::string value = "SECRET-VALUE-7f3a9c-in-the-clear?";
  {
    std::unique_ptr<rpc::Client> client = testing::ConnectTo(*server_);
    ASSERT_THAT(client->Put("secrets", "the-key-name", value), IsOk());
  }
  ASSERT_TRUE(testing::Converged({server_.get(), b.get()}, absl::Seconds(20)))
      << server_->Log() << b->Log();
  const std::string up = proxy.ToServer();
  const std::string down = proxy.ToClient();
  EXPECT_GT(down.size(), 100u);
  EXPECT_EQ(down.find("SECRET-VALUE"), std::string::npos);
  EXPECT_EQ(down.find("the-key-name"), std::string::npos);
  EXPECT_EQ(up.find("SECRET-VALUE"), std::string::npos);
  // The dialler's recorded bytes, replayed on a new connection: the server's
  // fresh handshake secrets make them worthless.
  const uint64_t fingerprint = testing::FingerprintOf(*server_);
  const std::string replay = proxy.FirstToServer();
  ASSERT_GT(replay.size(), 0u);
  const int fd = testing::ConnectTcp(server_->address());
  ASSERT_GE(fd, 0);
  ::signal(SIGPIPE, SIG_IGN);
  (void)::write(fd, replay.data(), replay.size());
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char buf[4096];
  ssize_t n;
  size_t got = 0;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) got += n;
  // Closed by the server: an orderly EOF, or a reset when it closed with
  // the replayed bytes unread; not the read timeout.
  const int read_errno = errno;
  EXPECT_TRUE(n == 0 || (n < 0 && read_errno == ECONNRESET))
      << "the server kept the replayed connection open: " << std::strerror(read_errno);
  ::close(fd);
  (void)got;
  EXPECT_THAT(server_->WaitForLog("rejected tls handshake"), HasSubstr("rejected tls handshake"));
  EXPECT_EQ(testing::FingerprintOf(*server_), fingerprint);
  EXPECT_EQ(b->Stop(SIGTERM), 0);
}

// A man in the middle between two paired devices, re-terminating TLS with
// a certificate of its own (a valid-looking peerkv one: an Ed25519 key
// certified by a user of its own) and opening its own TLS connection to
// the real server, relaying the plaintext. Both ends refuse it: the
// dialling device pins its user, so it refuses the proxy's certificate and
// sends nothing; the server is shown the proxy's key, never the client's,
// and refuses that, even for a client that does not pin and shows its real
// identity. Nothing is stored; the same pair then syncs directly.
TEST_F(TlsTest, AManInTheMiddleReTerminatingTlsIsRefusedBothWays) {
  const uint64_t fingerprint = PutOne();
  OwnIdentity mallory = NewUserDevice(dir_.Sub("mallory"), "mallory");
  const std::string mallory_device = auth::DeviceId(mallory.tls.key->public_key());
  const std::string mallory_user = auth::UserId(mallory.identity->user());
  EVP_PKEY* key = Ed25519Of(*mallory.tls.key);
  X509* cert = SelfSigned(key, mallory.tls.device_certificate);
  TlsProxy proxy(server_->address(), key, cert);

  // b, a device of the same user as a, dials a through the proxy.
  std::unique_ptr<ServerProcess> b = testing::StartReplica(dir_, "b", {proxy.address()});
  ASSERT_NE(b, nullptr);
  std::unique_ptr<rpc::Client> to_b = testing::ConnectTo(*b);
  ASSERT_NE(to_b, nullptr);
  ASSERT_THAT(to_b->Put("ks", "from-b", "b"), IsOk());
  const uint64_t b_fingerprint = testing::FingerprintOf(*b);
  const std::string b_device = auth::DeviceId(TlsOf(dir_.Sub("b")).key->public_key());
  // b refuses the certificate the proxy shows, naming it and its user.
  // (Logs shorten a long error: the line names the device and why.)
  const std::string b_refused = "server at " + proxy.address() + ": refused device " +
                                mallory_device + ": not a device of user " +
                                testing::TestUserId() + " nor of a friend";
  EXPECT_THAT(b->WaitForLog(b_refused), HasSubstr(b_refused));
  // a refuses the proxy's own connection, naming the proxy's device.
  const std::string a_refused = "refused device " + mallory_device + ": not a device of user";
  EXPECT_THAT(server_->WaitForLog(a_refused), HasSubstr(a_refused));

  // A client that pins (the CLI and rpc::Client, as a device of the user)
  // refuses too, before sending anything.
  const absl::Status pinned =
      rpc::Client::Connect(rpc::ClientOptions{.address = proxy.address()}).status();
  EXPECT_THAT(pinned, StatusIs(absl::StatusCode::kPermissionDenied, "nor of a friend"));
  EXPECT_THAT(std::string(pinned.message()),
              HasSubstr("refused device " + mallory_device + ": not a device of user " +
                        testing::TestUserId() + " nor of a friend (it is certified by user " +
                        mallory_user + ")"));
  RunResult cli = testing::Run({testing::RunfilePath("cli/peerkv"), "--server", proxy.address(),
                                "put", "ks", "k", "through the proxy"});
  EXPECT_NE(cli.exit_code, 0);
  EXPECT_THAT(cli.err, HasSubstr("refused device " + mallory_device));
  ASSERT_TRUE(proxy.WaitUntilIdle());
  EXPECT_GE(proxy.client_handshakes(), 3);
  EXPECT_GE(proxy.upstream_handshakes(), 3);
  EXPECT_EQ(proxy.plaintext_from_clients(), 0u) << "a pinning client sent bytes to the proxy";

  // A client that does not pin, showing b's real key and certificate: the
  // proxy accepts it, but what reaches a is the proxy's key, which a
  // refuses and closes; the client's identity never reaches a.
  rpc::TlsIdentity b_tls = TlsOf(dir_.Sub("b"));
  EVP_PKEY* b_key = Ed25519Of(*b_tls.key);
  X509* b_cert = SelfSigned(b_key, b_tls.device_certificate);
  RawOutcome fooled = RawTls(proxy.address(), b_key, b_cert, "127.0.0.1");
  EXPECT_TRUE(fooled.handshake);
  EXPECT_TRUE(fooled.closed_by_server);
  ASSERT_TRUE(proxy.WaitUntilIdle());
  EXPECT_EQ(proxy.plaintext_from_upstream(), 0u) << "a answered the proxy";
  EXPECT_THAT(server_->Log(), ::testing::Not(HasSubstr(b_device)));
  X509_free(b_cert);
  EVP_PKEY_free(b_key);

  // Nothing crossed: each holds what it held.
  EXPECT_EQ(testing::FingerprintOf(*server_), fingerprint);
  EXPECT_EQ(testing::FingerprintOf(*b), b_fingerprint);
  auto got = to_b->Get("ks", "k");
  ASSERT_THAT(got, IsOk());
  EXPECT_FALSE(got->has_value());

  // The same pair, directly: they sync.
  to_b.reset();
  ASSERT_EQ(b->Stop(SIGTERM), 0);
  b = testing::StartReplica(dir_, "b", {server_->address()});
  ASSERT_NE(b, nullptr);
  EXPECT_TRUE(testing::Converged({server_.get(), b.get()}, absl::Seconds(20)))
      << server_->Log() << b->Log();
  to_b = testing::ConnectTo(*b);
  got = to_b->Get("ks", "k");
  ASSERT_THAT(got, IsOk());
  EXPECT_TRUE(got->has_value());
  EXPECT_EQ(b->Stop(SIGTERM), 0);
  X509_free(cert);
  EVP_PKEY_free(key);
}

// Devices a1 and a2 and d, all of one user; a1 dials a2, a2 dials d, and d
// holds a client connection to a2 (a remote CLI of d). `device remove d`
// on a1 replicates to a2; from then on a2 refuses d: the link it had
// dialled and d's open client connection are closed, a new connection of
// d is refused (by a1 too) naming the removal, and what d writes
// afterwards never reaches a2 (nor a1), even when a2 starts again and
// dials d. (The links used to be checked only at the handshake: a link
// made before the removal carried d's writes for as long as it stayed up.)
TEST_F(TlsTest, ARemovedDeviceIsRefusedByEveryReplicaOnceTheRemovalReachesIt) {
  std::unique_ptr<ServerProcess> d = testing::StartReplica(dir_, "d");
  ASSERT_NE(d, nullptr);
  std::unique_ptr<ServerProcess> a2 = testing::StartReplica(dir_, "a2", {d->address()});
  ASSERT_NE(a2, nullptr);
  const std::string a2_address = a2->address();
  std::unique_ptr<ServerProcess> a1 = testing::StartReplica(dir_, "a1", {a2_address});
  ASSERT_NE(a1, nullptr);
  const rpc::TlsIdentity d_tls = TlsOf(dir_.Sub("d"));
  const std::string d_device = auth::DeviceId(d_tls.key->public_key());
  std::unique_ptr<rpc::Client> to_d = testing::ConnectTo(*d);
  ASSERT_NE(to_d, nullptr);
  ASSERT_THAT(to_d->Put("ks", "before", "d"), IsOk());
  absl::StatusOr<std::unique_ptr<rpc::Client>> d_on_a2 = ConnectAs(*a2, d_tls);
  ASSERT_THAT(d_on_a2, IsOk());
  ASSERT_THAT((*d_on_a2)->Put("ks", "client-before", "d"), IsOk());
  ASSERT_TRUE(testing::Converged({a1.get(), a2.get(), d.get()}, absl::Seconds(20)))
      << a1->Log() << a2->Log() << d->Log();

  // The removal, on a1 (the command opens the directory itself).
  ASSERT_EQ(a1->Stop(SIGTERM), 0);
  RunResult removal = Peerkv(dir_.Sub("a1"), {"device", "remove", d_device});
  ASSERT_EQ(removal.exit_code, 0) << removal.err;
  a1 = testing::StartReplica(dir_, "a1", {a2_address});
  ASSERT_NE(a1, nullptr);
  // It reaches a2 (another process holds the answer: polled, bounded).
  std::unique_ptr<rpc::Client> to_a2 = testing::ConnectTo(*a2);
  ASSERT_NE(to_a2, nullptr);
  bool reached = false;
  for (int i = 0; i < 400 && !reached; ++i) {
    if (i > 0) absl::SleepFor(absl::Milliseconds(25));
    auto r = to_a2->Get(auth::kDevicesKeyspace, "removed/" + d_device);
    reached = r.ok() && r->has_value();
  }
  ASSERT_TRUE(reached) << a2->Log();
  const std::string removed = "refused device " + d_device + ": it was removed from user " +
                              testing::TestUserId();
  // a2 closes the link it dialled to d, and redials: refused, naming why.
  const std::string link_refused = "server at " + d->address() + ": " + removed;
  EXPECT_THAT(a2->WaitForLog(link_refused), HasSubstr(link_refused));
  // And d's client connection, made before the removal.
  const std::string closed = "closed connection from ";
  EXPECT_THAT(LineWith(a2->WaitForLog(closed), closed), HasSubstr(removed));
  EXPECT_THAT((*d_on_a2)->Put("ks", "client-after", "d"), ::testing::Not(IsOk()));
  // A new connection of d, to either replica that holds the removal.
  EXPECT_THAT(ConnectAs(*a2, d_tls).status(),
              StatusIs(absl::StatusCode::kUnavailable, "does not accept device " + d_device));
  EXPECT_THAT(ConnectAs(*a1, d_tls).status(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(a1->WaitForLog(removed), HasSubstr(removed));

  // d writes after the removal; a2, started again, dials d at once and is
  // refused (a dial made after the write), and never has the write.
  ASSERT_THAT(to_d->Put("ks", "after", "d"), IsOk());
  ASSERT_EQ(a2->Stop(SIGTERM), 0);
  std::vector<std::string> again = testing::ReplicaArgs("a2", {d->address()});
  again.insert(again.end(), {"--listen", a2_address});
  auto restarted = ServerProcess::Start(dir_.Sub("a2"), again);
  ASSERT_THAT(restarted, IsOk());
  a2 = std::move(*restarted);
  EXPECT_THAT(a2->WaitForLog(link_refused), HasSubstr(link_refused));
  EXPECT_TRUE(testing::Converged({a1.get(), a2.get()}, absl::Seconds(20)))
      << a1->Log() << a2->Log();
  for (ServerProcess* s : {a1.get(), a2.get()}) {
    std::unique_ptr<rpc::Client> c = testing::ConnectTo(*s);
    ASSERT_NE(c, nullptr);
    for (const char* key : {"after", "client-after"}) {
      auto got = c->Get("ks", key);
      ASSERT_THAT(got, IsOk());
      EXPECT_FALSE(got->has_value()) << key << " reached " << s->address();
    }
    auto before = c->Get("ks", "before");
    ASSERT_THAT(before, IsOk());
    EXPECT_TRUE(before->has_value());
  }
  EXPECT_EQ(a1->Stop(SIGTERM), 0);
  EXPECT_EQ(a2->Stop(SIGTERM), 0);
  EXPECT_EQ(d->Stop(SIGTERM), 0);
}

// The same for a friend: a friend's device connected to a2 while the
// friend is removed on a1 is cut off once the removal replicates to a2.
TEST_F(TlsTest, ARemovedFriendsOpenConnectionIsClosedOnceTheRemovalReachesIt) {
  std::unique_ptr<ServerProcess> a2 = testing::StartReplica(dir_, "a2");
  ASSERT_NE(a2, nullptr);
  std::unique_ptr<ServerProcess> a1 = testing::StartReplica(dir_, "a1", {a2->address()});
  ASSERT_NE(a1, nullptr);
  OwnIdentity fred = NewUserDevice(dir_.Sub("fred"), "fred");
  const std::string fred_user = auth::UserId(fred.identity->user());
  const std::string fred_device = auth::DeviceId(fred.tls.key->public_key());
  // Friend and unfriend on a1 (the commands open the directory themselves).
  auto on_a1 = [&](std::vector<std::string> args) {
    EXPECT_EQ(a1->Stop(SIGTERM), 0);
    RunResult r = Peerkv(dir_.Sub("a1"), std::move(args));
    a1 = testing::StartReplica(dir_, "a1", {a2->address()});
    return r;
  };
  RunResult add = on_a1({"friend", "add", fred_user, "--name", "fred"});
  ASSERT_EQ(add.exit_code, 0) << add.err;
  ASSERT_NE(a1, nullptr);
  // Once the friend record reaches a2, fred's device connects (refused
  // until then: polled, bounded).
  absl::StatusOr<std::unique_ptr<rpc::Client>> client = absl::UnavailableError("not tried");
  for (int i = 0; i < 400 && !client.ok(); ++i) {
    if (i > 0) absl::SleepFor(absl::Milliseconds(25));
    client = ConnectAs(*a2, fred.tls);
  }
  ASSERT_THAT(client, IsOk()) << a2->Log();
  EXPECT_THAT((*client)->Get("ks", "k"),
              StatusIs(absl::StatusCode::kPermissionDenied, "may not read keyspace 'ks'"));

  RunResult removal = on_a1({"friend", "remove", fred_user});
  ASSERT_EQ(removal.exit_code, 0) << removal.err;
  ASSERT_NE(a1, nullptr);
  const std::string closed = "closed connection from ";
  EXPECT_THAT(LineWith(a2->WaitForLog(closed), closed),
              HasSubstr("refused device " + fred_device + ": not a device of user " +
                        testing::TestUserId() + " nor of a friend"));
  // Its calls now fail as a lost connection, not as a friend's refusal.
  absl::Status after = (*client)->Get("ks", "k").status();
  EXPECT_FALSE(after.ok());
  EXPECT_NE(after.code(), absl::StatusCode::kPermissionDenied) << after;
  EXPECT_THAT(ConnectAs(*a2, fred.tls).status(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(a1->Stop(SIGTERM), 0);
  EXPECT_EQ(a2->Stop(SIGTERM), 0);
}

}  // namespace
}  // namespace peerkv
