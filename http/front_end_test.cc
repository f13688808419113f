// http/front_end_test.cc: the HTTP front end in process (an rpc::Server on
// loopback with a store in a temporary directory), driven over raw
// sockets: every read and write is checked against an auth::Access as the
// RPC client API checks it (a fake one, as Josephine's phone sees Jane's
// keyspaces: the blog readable, not writable; the drafts neither), and a
// watch ends once its keyspace is no longer readable.
#include "http/front_end.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "auth/access.h"
#include "auth/keys.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rpc/peer_auth.h"
#include "rpc/server.h"
#include "store/store.h"
#include "testing/temp_dir.h"

namespace peerkv::http {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class FakeAccess : public auth::Access {
 public:
  bool MayRead(const auth::Principal&, std::string_view ks) const override {
    if (ks == "jane.blog") return blog_readable.load();
    return ks != "jane.drafts";
  }
  bool MayWrite(const auth::Principal&, std::string_view ks) const override {
    return ks != "jane.blog" && ks != "jane.drafts";
  }
  bool RequiresSignature(std::string_view) const override { return false; }
  std::atomic<bool> blog_readable{true};
};

// A connection to HOST:PORT (loopback) with a receive timeout.
int Connect(const std::string& address) {
  const size_t colon = address.rfind(':');
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
  inet_pton(AF_INET, address.substr(0, colon).c_str(), &sa.sin_addr);
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

void SendAll(int fd, const std::string& data) {
  size_t at = 0;
  while (at < data.size()) {
    const ssize_t n = send(fd, data.data() + at, data.size() - at, MSG_NOSIGNAL);
    if (n <= 0) return;
    at += static_cast<size_t>(n);
  }
}

struct Reply {
  int code = 0;
  std::string body;
};

class HttpAccessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StoreOptions store_options;
    store_options.dir = dir_.Sub("db");
    store_options.sync = false;
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(store_options);
    ASSERT_THAT(store, IsOk());
    store_ = std::move(*store);
    ASSERT_THAT(store_->Write({Mutation{"jane.blog", "post1", "hello"},
                               Mutation{"jane.drafts", "d1", "secret draft"}}),
                IsOk());
    rpc::ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.replicate = false;
    options.access = access_;
    HttpOptions http;
    http.listen = "127.0.0.1:0";
    http.insecure_loopback = true;
    http.heartbeat_ms = 100;
    http.on_listening = [this](const std::string& address) {
      absl::MutexLock lock(&mu_);
      http_ = address;
    };
    options.front_ends.push_back(HttpFrontEnd(std::move(http)));
    absl::StatusOr<std::unique_ptr<rpc::Server>> server = rpc::Server::Start(store_.get(), options);
    ASSERT_THAT(server, IsOk());
    server_ = std::move(*server);
    absl::MutexLock lock(&mu_);
    ASSERT_FALSE(http_.empty());
  }
  void TearDown() override { server_.reset(); }

  std::string Address() {
    absl::MutexLock lock(&mu_);
    return http_;
  }

  Reply Request(const std::string& method, const std::string& path, const std::string& body = "") {
    const int fd = Connect(Address());
    EXPECT_GE(fd, 0);
    if (fd < 0) return {};
    SendAll(fd, absl::StrFormat("%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                "Content-Length: %d\r\n\r\n%s",
                                method, path, body.size(), body));
    // The headers, then Content-Length bytes of body (every answer here
    // carries one), or until the server closes.
    std::string in;
    char buf[4096];
    size_t head = std::string::npos;
    size_t want = std::string::npos;
    while (want == std::string::npos || in.size() < want) {
      const ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      in.append(buf, static_cast<size_t>(n));
      if (head == std::string::npos && (head = in.find("\r\n\r\n")) != std::string::npos) {
        std::string lower = absl::AsciiStrToLower(in.substr(0, head));
        const size_t at = lower.find("content-length:");
        if (at != std::string::npos) want = head + 4 + std::stoul(lower.substr(at + 15));
      }
    }
    close(fd);
    Reply r;
    if (in.size() > 12) r.code = std::stoi(in.substr(9, 3));
    if (head != std::string::npos) r.body = in.substr(head + 4);
    return r;
  }

  void ExpectRefused(const Reply& r, const std::string& right, const std::string& ks) {
    EXPECT_EQ(r.code, 403) << r.body;
    EXPECT_THAT(r.body, HasSubstr("\"code\":\"PERMISSION_DENIED\""));
    EXPECT_THAT(r.body, HasSubstr(absl::StrFormat("may not %s keyspace '%s'", right, ks)));
    EXPECT_THAT(r.body, Not(HasSubstr("secret")));
  }

  testing::TempDir dir_{"http-access"};
  std::shared_ptr<FakeAccess> access_ = std::make_shared<FakeAccess>();
  std::unique_ptr<Store> store_;
  std::unique_ptr<rpc::Server> server_;
  absl::Mutex mu_;
  std::string http_ ABSL_GUARDED_BY(mu_);
};

TEST_F(HttpAccessTest, WritesAreCheckedAsThroughRpc) {
  EXPECT_EQ(Request("GET", "/v1/kv/jane.blog/post1").body, "hello");
  ExpectRefused(Request("PUT", "/v1/kv/jane.blog/post1", "forged"), "write", "jane.blog");
  ExpectRefused(Request("PUT", "/v1/kv/jane.blog/new", "forged"), "write", "jane.blog");
  ExpectRefused(Request("DELETE", "/v1/kv/jane.blog/post1"), "write", "jane.blog");
  ExpectRefused(Request("POST", "/v1/batch",
                        R"({"writes":[{"keyspace":"mine","key":"a","value":"1"},)"
                        R"({"keyspace":"jane.blog","key":"b","value":"2"}]})"),
                "write", "jane.blog");
  // Nothing was written, not even the batch's allowed write.
  absl::StatusOr<std::optional<Record>> post = store_->Get("jane.blog", "post1");
  ASSERT_TRUE(post.ok() && post->has_value());
  EXPECT_EQ((*post)->value, "hello");
  EXPECT_EQ(Request("GET", "/v1/kv/jane.blog/new").code, 404);
  EXPECT_EQ(Request("GET", "/v1/kv/mine/a").code, 404);
  // What the user may write is written.
  EXPECT_EQ(Request("PUT", "/v1/kv/mine/a", "1").code, 200);
  EXPECT_EQ(Request("GET", "/v1/kv/mine/a").body, "1");
}

TEST_F(HttpAccessTest, ReadsOfAnUnreadableKeyspaceRevealNothing) {
  ExpectRefused(Request("GET", "/v1/kv/jane.drafts/d1"), "read", "jane.drafts");
  // The same answer for a key (or keyspace) not held here.
  ExpectRefused(Request("GET", "/v1/kv/jane.drafts/nope"), "read", "jane.drafts");
  ExpectRefused(Request("GET", "/v1/kv/jane.drafts"), "read", "jane.drafts");
  ExpectRefused(Request("GET", "/v1/kv/jane.drafts?prefix=d"), "read", "jane.drafts");
  ExpectRefused(Request("GET", "/v1/watch/jane.drafts?from_seq=0"), "read", "jane.drafts");
  // The status page's facts name no keyspace.
  Reply status = Request("GET", "/v1/status");
  EXPECT_EQ(status.code, 200);
  EXPECT_THAT(status.body, Not(HasSubstr("drafts")));
}

TEST_F(HttpAccessTest, AWatchEndsWhenItsKeyspaceIsNoLongerReadable) {
  const int fd = Connect(Address());
  ASSERT_GE(fd, 0);
  SendAll(fd, "GET /v1/watch/jane.blog?from_seq=0 HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string in;
  char buf[4096];
  // Bounded: heartbeats (every 100 ms) keep the socket busy, so a
  // deadline, not the receive timeout, ends the wait.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  auto read_until = [&](const std::string& want) {
    while (in.find(want) == std::string::npos) {
      if (absl::Now() > deadline) return false;
      const ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) return false;  // closed, or the 10 s timeout
      in.append(buf, static_cast<size_t>(n));
    }
    return true;
  };
  ASSERT_TRUE(read_until("\"hello\"")) << in;
  access_->blog_readable = false;
  ASSERT_THAT(store_->Write({Mutation{"jane.blog", "post2", "after the removal"}}), IsOk());
  ASSERT_TRUE(read_until("event: error")) << in;
  read_until("\n\n");
  EXPECT_THAT(in, HasSubstr("may not read keyspace 'jane.blog'"));
  EXPECT_THAT(in, Not(HasSubstr("after the removal")));
  close(fd);
}

// A non-loopback address is taken only with TLS, and never without tokens.
TEST(HttpOptionsTest, NonLoopbackNeedsTlsAndTokens) {
  HttpOptions options;
  options.listen = "0.0.0.0:8080";
  EXPECT_THAT(ValidateHttpOptions(options),
              StatusIs(absl::StatusCode::kInvalidArgument, "--http-tls"));
  rpc::TlsIdentity identity;
  identity.key = auth::SigningKey::Generate();
  testing::TempDir dir("front-tls");
  absl::StatusOr<std::shared_ptr<ssl_ctx_st>> tls =
      StartFrontEndTls(identity, {options.listen}, dir.Sub("cert.pem"));
  ASSERT_THAT(tls, IsOk());
  options.tls = *tls;
  EXPECT_THAT(ValidateHttpOptions(options), IsOk());
  options.insecure_loopback = true;
  EXPECT_THAT(ValidateHttpOptions(options),
              StatusIs(absl::StatusCode::kInvalidArgument, "--http-insecure-loopback"));
}

// The certificate names the loopback addresses and the listen host, and is
// the same bytes at every start with the same names (pinned once).
TEST(HttpOptionsTest, TheFrontEndCertificateIsStable) {
  const std::vector<std::string> names = FrontEndTlsNames({"192.0.2.7:8443"});
  for (const char* want : {"127.0.0.1", "::1", "localhost", "192.0.2.7"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want;
  }
  rpc::TlsIdentity identity;
  identity.key = auth::SigningKey::Generate();
  testing::TempDir dir("front-tls");
  std::string pem[2];
  for (int i = 0; i < 2; ++i) {
    ASSERT_THAT(StartFrontEndTls(identity, {"192.0.2.7:8443"}, dir.Sub("cert.pem")), IsOk());
    std::ifstream in(dir.Sub("cert.pem"));
    pem[i].assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  EXPECT_THAT(pem[0], HasSubstr("BEGIN CERTIFICATE"));
  EXPECT_EQ(pem[0], pem[1]);
}

}  // namespace
}  // namespace peerkv::http
