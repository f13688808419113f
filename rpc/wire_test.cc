// rpc/wire_test.cc: the wire seen from outside the client library. A raw
// Cap'n Proto peer says hello to a real server with names at and over the
// limit; a fake server whose `status` always fails still serves put and
// get to the client library and to the CLI, which never ask for status.
// Reconcile rounds: absurd ones close only their link; one being answered
// does not stop the server answering others.
#include <atomic>
#include <map>
#include <string>
#include <thread>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "capnp/ez-rpc.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kj/async.h"
#include "replication/reconcile.h"
#include "replication/transport.h"
#include "rpc/client.h"
#include "rpc/peerkv.capnp.h"
#include "rpc/server.h"
#include "store/store.h"
#include "testing/subprocess.h"
#include "testing/temp_dir.h"

namespace peerkv::rpc {
namespace {

using absl::StatusCode;
using ::testing::HasSubstr;

// A Replica that answers nothing (the `back` of our hellos).
class SilentReplica final : public wire::Replica::Server {};

// Says hello on `client`'s connection as replica `id` named `name`; the
// code and message of the error answered (OK if accepted).
absl::Status Hello(capnp::EzRpcClient& client, uint64_t id, const std::string& name) {
  auto gateway = client.getMain<wire::Gateway>();
  auto replica = gateway.replicaRequest().send().getReplica();
  auto hello = replica.helloRequest();
  auto info = hello.initInfo();
  info.setReplicaId(id);
  info.setIncarnation(1);
  info.setProtocolVersion(replication::kProtocolVersion);
  info.setName(capnp::Text::Reader(name.data(), name.size()));
  hello.setBack(kj::heap<SilentReplica>());
  auto response = hello.send().wait(client.getWaitScope());
  if (!response.hasError()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(response.getError().getCode()),
                      response.getError().getMessage().cStr());
}

// The same on a connection of its own.
absl::Status Hello(const std::string& address, uint64_t id, const std::string& name) {
  capnp::EzRpcClient client(address);
  return Hello(client, id, name);
}

TEST(WireTest, AHelloWithANameOverTheLimitIsRefused) {
  testing::TempDir dir;
  StoreOptions options;
  options.dir = dir.Sub("db");
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
  ASSERT_THAT(store, IsOk());
  absl::StatusOr<std::unique_ptr<Server>> server =
      Server::Start(store->get(), ServerOptions{.listen = "127.0.0.1:0"});
  ASSERT_THAT(server, IsOk());
  const std::string address = (*server)->address();

  EXPECT_THAT(Hello(address, 11, std::string(replication::kMaxReplicaNameBytes + 1, 'n')),
              StatusIs(StatusCode::kInvalidArgument, "replica name is 65 bytes; the limit is 64"));
  EXPECT_THAT(
      Hello(address, 12, std::string(4 << 20, 'n')),
      StatusIs(StatusCode::kInvalidArgument, "replica name is 4194304 bytes; the limit is 64"));
  // At the limit: welcome, once per connection (so that one connection
  // cannot fill the peer table with made-up replicas).
  capnp::EzRpcClient connection(address);
  EXPECT_THAT(Hello(connection, 13, std::string(replication::kMaxReplicaNameBytes, 'n')), IsOk());
  EXPECT_THAT(Hello(connection, 14, "second"),
              StatusIs(StatusCode::kResourceExhausted, "already carries 1 replication link"));
  // Only the last became a peer. (The engine learns of it on its own
  // thread: wait for it, boundedly.)
  std::vector<replication::PeerStatus> peers;
  for (int i = 0; i < 1000 && peers.empty(); ++i) {
    peers = (*server)->PeerStatuses();
    if (peers.empty()) absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_EQ(peers.size(), 1u);
  EXPECT_EQ(peers[0].replica_id, 13u);
  // A server cannot be started with a name its peers would refuse.
  EXPECT_THAT(Server::Start(store->get(), ServerOptions{.listen = "127.0.0.1:0",
                                                        .replica_name = std::string(65, 'n')}),
              StatusIs(StatusCode::kInvalidArgument, "the limit is 64"));
}

// A reconcile round on `replica`: the error answered, or the answer.
absl::StatusOr<std::string> ReconcileRound(capnp::EzRpcClient& client,
                                           wire::Replica::Client& replica,
                                           const std::string& bytes) {
  auto request = replica.reconcileRequest();
  request.setRequest(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(bytes.data()),
                                         bytes.size()));
  auto response = request.send().wait(client.getWaitScope());
  if (response.hasError()) {
    return absl::Status(static_cast<absl::StatusCode>(response.getError().getCode()),
                        response.getError().getMessage().cStr());
  }
  return std::string(reinterpret_cast<const char*>(response.getResponse().begin()),
                     response.getResponse().size());
}

// A reconcile message out of bounds is refused with InvalidArgument naming
// the field and the limit, and closes that link (its connection) only; a
// well-formed one on another link is answered.
TEST(WireTest, AnAbsurdReconcileIsRefusedAndClosesOnlyItsLink) {
  testing::TempDir dir;
  StoreOptions options;
  options.dir = dir.Sub("db");
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
  ASSERT_THAT(store, IsOk());
  ASSERT_THAT((*store)->Put("ks", "k", "v"), IsOk());
  absl::StatusOr<std::unique_ptr<Server>> server =
      Server::Start(store->get(), ServerOptions{.listen = "127.0.0.1:0"});
  ASSERT_THAT(server, IsOk());
  const std::string address = (*server)->address();

  // Hello on the capability the rounds then use (each replica() call
  // makes a new one).
  auto hello_on = [](capnp::EzRpcClient& client, wire::Replica::Client& replica, uint64_t id) {
    auto hello = replica.helloRequest();
    auto info = hello.initInfo();
    info.setReplicaId(id);
    info.setIncarnation(1);
    info.setProtocolVersion(replication::kProtocolVersion);
    hello.setBack(kj::heap<SilentReplica>());
    return !hello.send().wait(client.getWaitScope()).hasError();
  };
  capnp::EzRpcClient bad(address);
  wire::Replica::Client bad_replica =
      bad.getMain<wire::Gateway>().replicaRequest().send().getReplica();
  ASSERT_TRUE(hello_on(bad, bad_replica, 31));
  capnp::EzRpcClient good(address);
  wire::Replica::Client good_replica =
      good.getMain<wire::Gateway>().replicaRequest().send().getReplica();
  ASSERT_TRUE(hello_on(good, good_replica, 32));

  // Before hello on a link: refused, not served.
  capnp::EzRpcClient stranger(address);
  wire::Replica::Client stranger_replica =
      stranger.getMain<wire::Gateway>().replicaRequest().send().getReplica();
  EXPECT_THAT(ReconcileRound(stranger, stranger_replica, "x"),
              StatusIs(StatusCode::kFailedPrecondition, "before hello"));

  // A request asking to expand 1,000,000 nodes: format 1, no keyspaces,
  // pass 0, width 2, no compare, no answer limit, no roots, then the count.
  const std::string absurd =
      std::string("\x01\x00\x00\x02\x00\x00\x00", 7) + "\xc0\x84\x3d";
  EXPECT_THAT(ReconcileRound(bad, bad_replica, absurd),
              StatusIs(StatusCode::kInvalidArgument,
                       "expand: 1000000 entries; the limit is 16384"));
  // That link is closed: nothing more is served on it, and the engine
  // dropped it (waited for boundedly: it learns on its own thread).
  EXPECT_THAT(ReconcileRound(bad, bad_replica, absurd),
              StatusIs(StatusCode::kFailedPrecondition, "closed after a request out of bounds"));
  bool dropped = false;
  for (int i = 0; i < 1000 && !dropped; ++i) {
    for (const replication::PeerStatus& p : (*server)->PeerStatuses()) {
      if (p.replica_id == 31 && p.links == 0) dropped = true;
    }
    if (!dropped) absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_TRUE(dropped);

  // The other link is still served: a compare of no roots finds keyspace
  // ks on the server only.
  replication::ReconcileRequest compare;
  compare.compare = true;
  absl::StatusOr<std::string> answer =
      ReconcileRound(good, good_replica, replication::EncodeReconcileRequest(compare));
  ASSERT_THAT(answer, IsOk());
  absl::StatusOr<replication::ReconcileResponse> response =
      replication::DecodeReconcileResponse(*answer, kMaxValueBytes);
  ASSERT_THAT(response, IsOk());
  ASSERT_EQ(response->differing.size(), 1u);
  EXPECT_EQ(response->differing[0].keyspace, "ks");
  EXPECT_EQ(response->differing[0].fingerprint.count, 1u);
}

// Says hello as replica `id` on `replica`, the capability later rounds use
// (each replica() call makes a new one); true if accepted.
bool HelloOn(capnp::EzRpcClient& client, wire::Replica::Client& replica, uint64_t id) {
  auto hello = replica.helloRequest();
  auto info = hello.initInfo();
  info.setReplicaId(id);
  info.setIncarnation(1);
  info.setProtocolVersion(replication::kProtocolVersion);
  hello.setBack(kj::heap<SilentReplica>());
  return !hello.send().wait(client.getWaitScope()).hasError();
}

// A reconcile round is answered off the server's event loop (the first
// question below the stored levels scans and hashes a whole keyspace, 1.5 s
// at 1,000,000 records). The test holds a round inside the responder (the
// server's test hook, on the thread that answers it) and meanwhile a get,
// a put and a ping on other connections are answered. When the round was
// answered on the loop, the get waited for it and ran into its timeout.
TEST(WireTest, TheServerKeepsAnsweringWhileAReconcileRoundIsServed) {
  testing::TempDir dir;
  StoreOptions options;
  options.dir = dir.Sub("db");
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
  ASSERT_THAT(store, IsOk());
  ASSERT_THAT((*store)->Put("ks", "k", "v"), IsOk());
  absl::Notification entered;
  absl::Notification release;
  std::atomic<int> rounds{0};
  std::atomic<bool> held_to_the_end{false};
  ServerOptions server_options{.listen = "127.0.0.1:0"};
  server_options.reconcile_serve_hook = [&] {
    if (rounds.fetch_add(1) > 0) return;
    entered.Notify();
    // Bounded, so that a server that cannot answer meanwhile fails the
    // test instead of hanging it.
    if (!release.WaitForNotificationWithTimeout(absl::Seconds(10))) held_to_the_end = true;
  };
  absl::StatusOr<std::unique_ptr<Server>> server =
      Server::Start(store->get(), std::move(server_options));
  ASSERT_THAT(server, IsOk());
  const std::string address = (*server)->address();

  absl::StatusOr<std::string> answer = absl::UnknownError("not answered");
  std::thread initiator([&] {
    capnp::EzRpcClient client(address);
    wire::Replica::Client replica =
        client.getMain<wire::Gateway>().replicaRequest().send().getReplica();
    if (!HelloOn(client, replica, 41)) {
      answer = absl::InternalError("hello refused");
      entered.Notify();
      return;
    }
    replication::ReconcileRequest compare;
    compare.compare = true;
    answer = ReconcileRound(client, replica, replication::EncodeReconcileRequest(compare));
  });
  ASSERT_TRUE(entered.WaitForNotificationWithTimeout(absl::Seconds(10)));

  // The round is held. Others are served.
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Connect(ClientOptions{.address = address, .timeout = absl::Seconds(3)});
  EXPECT_THAT(client, IsOk());
  if (client.ok()) {
    absl::StatusOr<std::optional<Record>> got = (*client)->Get("ks", "k");
    EXPECT_THAT(got, IsOk());
    if (got.ok() && got->has_value()) EXPECT_EQ((*got)->value, "v");
    EXPECT_THAT((*client)->Put("ks", "k2", "v2"), IsOk());
  }
  {
    capnp::EzRpcClient other(address);
    wire::Replica::Client replica =
        other.getMain<wire::Gateway>().replicaRequest().send().getReplica();
    EXPECT_TRUE(HelloOn(other, replica, 42));
    replica.pingRequest().send().wait(other.getWaitScope());
  }
  EXPECT_FALSE(held_to_the_end) << "the server answered nothing while the round was held";
  release.Notify();
  initiator.join();

  // And the held round is answered once it may go on.
  ASSERT_THAT(answer, IsOk());
  absl::StatusOr<replication::ReconcileResponse> response =
      replication::DecodeReconcileResponse(*answer, kMaxValueBytes);
  ASSERT_THAT(response, IsOk());
  ASSERT_EQ(response->differing.size(), 1u);
  EXPECT_EQ(response->differing[0].keyspace, "ks");
}

// What the fake server saw; written on its thread, read by the test.
struct FakeState {
  std::atomic<int> status_calls{0};
  std::atomic<int> puts{0};
  absl::Mutex mu;
  std::map<std::string, std::string> values ABSL_GUARDED_BY(mu);
};

class FakeKv final : public wire::Kv::Server {
 public:
  explicit FakeKv(FakeState* state) : state_(state) {}

  kj::Promise<void> put(PutContext context) override {
    auto params = context.getParams();
    ++state_->puts;
    const std::string key(reinterpret_cast<const char*>(params.getKey().begin()),
                          params.getKey().size());
    absl::MutexLock lock(&state_->mu);
    state_->values[key] = std::string(reinterpret_cast<const char*>(params.getValue().begin()),
                                      params.getValue().size());
    auto version = context.getResults().initVersion();
    version.setHlc(uint64_t{1'700'000'000'000} << 16);
    version.setOrigin(0x1234);
    return kj::READY_NOW;
  }

  kj::Promise<void> get(GetContext context) override {
    auto params = context.getParams();
    const std::string key(reinterpret_cast<const char*>(params.getKey().begin()),
                          params.getKey().size());
    absl::MutexLock lock(&state_->mu);
    auto it = state_->values.find(key);
    if (it == state_->values.end()) return kj::READY_NOW;
    auto results = context.getResults();
    results.setFound(true);
    auto record = results.initRecord();
    record.setKeyspace(params.getKeyspace());
    record.setKey(params.getKey());
    record.setValue(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(it->second.data()),
                                        it->second.size()));
    record.initVersion().setOrigin(0x1234);
    return kj::READY_NOW;
  }

  // A status that never works (as when a server's peers made it too big).
  kj::Promise<void> status(StatusContext context) override {
    ++state_->status_calls;
    auto error = context.getResults().initError();
    error.setCode(static_cast<uint8_t>(absl::StatusCode::kInternal));
    error.setMessage("status is broken on this server");
    return kj::READY_NOW;
  }

 private:
  FakeState* state_;
};

class FakeGateway final : public wire::Gateway::Server {
 public:
  explicit FakeGateway(FakeState* state) : state_(state) {}
  kj::Promise<void> kv(KvContext context) override {
    context.getResults().setKv(kj::heap<FakeKv>(state_));
    return kj::READY_NOW;
  }

 private:
  FakeState* state_;
};

// The fake server on its own thread and loopback port.
class FakeServer {
 public:
  FakeServer() {
    thread_ = std::thread([this] { Run(); });
    ready_.WaitForNotification();
  }
  ~FakeServer() {
    stop_->fulfill();
    thread_.join();
  }
  std::string address() const { return absl::StrFormat("127.0.0.1:%d", port_); }
  FakeState& state() { return state_; }

 private:
  void Run() {
    capnp::EzRpcServer server(kj::heap<FakeGateway>(&state_), "127.0.0.1", 0);
    auto& wait_scope = server.getWaitScope();
    port_ = server.getPort().wait(wait_scope);
    auto stop = kj::newPromiseAndCrossThreadFulfiller<void>();
    stop_ = kj::mv(stop.fulfiller);
    ready_.Notify();
    stop.promise.wait(wait_scope);
  }

  FakeState state_;
  std::thread thread_;
  absl::Notification ready_;
  uint port_ = 0;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> stop_;
};

TEST(WireTest, PutAndGetNeedNoStatus) {
  FakeServer fake;
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Connect(ClientOptions{.address = fake.address()});
  ASSERT_THAT(client, IsOk());
  ASSERT_THAT((*client)->Put("ks", "k", "from the library"), IsOk());
  absl::StatusOr<std::optional<Record>> got = (*client)->Get("ks", "k");
  ASSERT_THAT(got, IsOk());
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->value, "from the library");

  const std::string cli = testing::RunfilePath("cli/peerkv");
  testing::RunResult put = testing::Run({cli, "--server", fake.address(), "put", "ks", "k2", "v2"});
  EXPECT_EQ(put.exit_code, 0) << put.err;
  testing::RunResult from_stdin =
      testing::Run({cli, "--server", fake.address(), "put", "ks", "k3", "-"}, "piped");
  EXPECT_EQ(from_stdin.exit_code, 0) << from_stdin.err;
  testing::RunResult get = testing::Run({cli, "--server", fake.address(), "get", "ks", "k2"});
  EXPECT_EQ(get.exit_code, 0) << get.err;
  EXPECT_EQ(get.out, "v2");
  EXPECT_EQ(fake.state().puts.load(), 3);
  EXPECT_EQ(fake.state().status_calls.load(), 0);

  // status itself says what is wrong.
  testing::RunResult status = testing::Run({cli, "--server", fake.address(), "status"});
  EXPECT_EQ(status.exit_code, 1);
  EXPECT_THAT(status.err, HasSubstr("status is broken on this server"));
}

TEST(WireTest, NoServerIsStillAClearUnavailable) {
  std::string address;
  {
    FakeServer gone;
    address = gone.address();
  }
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Connect(ClientOptions{.address = address});
  EXPECT_THAT(client, StatusIs(StatusCode::kUnavailable,
                               absl::StrFormat("peerkv server at %s: connect", address)));
  testing::RunResult put = testing::Run(
      {testing::RunfilePath("cli/peerkv"), "--server", address, "put", "ks", "k", "v"});
  EXPECT_EQ(put.exit_code, 1);
  EXPECT_THAT(put.err, ::testing::StartsWith(absl::StrFormat(
                           "peerkv put: connect to peerkv server at %s: ", address)));
  EXPECT_THAT(put.err, HasSubstr("Connection refused"));
}

}  // namespace
}  // namespace peerkv::rpc
