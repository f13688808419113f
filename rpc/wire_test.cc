// rpc/wire_test.cc: the wire seen from outside the client library. A raw
// Cap'n Proto peer says hello to a real server with names at and over the
// limit; a fake server whose `status` always fails still serves put and
// get to the client library and to the CLI, which never ask for status.
// Reconcile rounds: absurd ones (requests, and answers to the server's own
// session) close only their link; one being answered does not stop the
// server answering others. The server's dialler says in its hello what it
// holds of the replica it expects at the address.
#include <atomic>
#include <map>
#include <optional>
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

  // A request asking to expand 1,000,000 nodes: the format, no keyspaces,
  // pass 0, width 2, no compare, no answer limit, no roots, then the count.
  const std::string absurd =
      std::string(1, replication::kReconcileFormat) + std::string("\x00\x00\x02\x00\x00\x00", 6) +
      "\xc0\x84\x3d";
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

capnp::Data::Reader AsData(const std::string& bytes) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(bytes.data()), bytes.size());
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
  absl::Status second_round = absl::UnknownError("not sent");
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
    const std::string bytes = replication::EncodeReconcileRequest(compare);
    auto first = replica.reconcileRequest();
    first.setRequest(AsData(bytes));
    auto held = first.send();
    // A second round on the same link while the first is answered: the
    // initiator never does that, and it would queue scans: refused.
    auto second = replica.reconcileRequest();
    second.setRequest(AsData(bytes));
    auto refused = second.send().wait(client.getWaitScope());
    second_round = refused.hasError()
                       ? absl::Status(static_cast<absl::StatusCode>(refused.getError().getCode()),
                                      refused.getError().getMessage().cStr())
                       : absl::OkStatus();
    auto response = held.wait(client.getWaitScope());
    if (response.hasError()) {
      answer = absl::Status(static_cast<absl::StatusCode>(response.getError().getCode()),
                            response.getError().getMessage().cStr());
    } else {
      answer = std::string(reinterpret_cast<const char*>(response.getResponse().begin()),
                           response.getResponse().size());
    }
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
  EXPECT_THAT(second_round, StatusIs(StatusCode::kResourceExhausted,
                                     "a reconcile round is already being answered on this link"));

  // And the held round is answered once it may go on.
  ASSERT_THAT(answer, IsOk());
  absl::StatusOr<replication::ReconcileResponse> response =
      replication::DecodeReconcileResponse(*answer, kMaxValueBytes);
  ASSERT_THAT(response, IsOk());
  ASSERT_EQ(response->differing.size(), 1u);
  EXPECT_EQ(response->differing[0].keyspace, "ks");
}

std::string Varint(uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
  return out;
}

// A reconcile request's bytes: the format, a keyspace table naming "ks"
// (`keyspaces` entries claimed), pass, width, no compare, no answer limit,
// no roots, then `rest` (the expand, fetch and push sections).
std::string RequestBytes(uint64_t keyspaces, uint8_t pass, uint8_t width, const std::string& rest) {
  std::string out = std::string(1, replication::kReconcileFormat) + Varint(keyspaces) +
                    (keyspaces > 0 ? "\x02ks" : "");
  out += static_cast<char>(pass);
  out += static_cast<char>(width);
  out += std::string("\x00\x00\x00", 3);
  return out + rest;
}

// Each kind of absurd field of a reconcile request, over a real connection:
// refused with InvalidArgument naming the field and the limit, that link
// closed (nothing more served on it, the engine drops it), and a link made
// before them all still served afterwards.
TEST(WireTest, EveryAbsurdReconcileFieldIsRefusedAndClosesOnlyItsLink) {
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
  capnp::EzRpcClient good(address);
  wire::Replica::Client good_replica =
      good.getMain<wire::Gateway>().replicaRequest().send().getReplica();
  ASSERT_TRUE(HelloOn(good, good_replica, 60));

  // Sections after the header: expand, fetch, push (counts, then entries).
  const std::string none = Varint(0);
  const std::string no_children(1, '\0');
  const std::string node_of = Varint(1) + Varint(0);  // one node, keyspace 0
  struct Case {
    std::string what;
    std::string bytes;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"a depth below the deepest level",
       RequestBytes(1, 0, 2, node_of + "\x11" + Varint(0) + no_children + none + none),
       "reconcile request: expand: depth 17; the limit is 16"},
      {"a range (prefix) outside its depth",
       RequestBytes(1, 0, 2, node_of + "\x01" + Varint(16) + no_children + none + none),
       "reconcile request: expand: prefix 0x10 does not fit depth 1 (at most 4 bits)"},
      {"a prefix of 2^64 - 1 at depth 2",
       RequestBytes(1, 0, 2, node_of + "\x02" + Varint(~uint64_t{0}) + no_children + none + none),
       "does not fit depth 2 (at most 8 bits)"},
      {"children asked of the deepest level",
       RequestBytes(1, 0, 2, node_of + "\x10" + Varint(0) + "\x01" + none + none),
       "reconcile request: expand: children of a node at the deepest level"},
      {"a keyspace index the table does not have",
       RequestBytes(1, 0, 2, Varint(1) + Varint(7) + "\x01" + Varint(0) + no_children + none + none),
       "reconcile request: expand: keyspace index 7; the message names 1"},
      {"a sparse children list claiming all 16 occupied",
       RequestBytes(1, 0, 2, node_of + "\x01" + Varint(3) + "\x02" + "\xff\xff" +
                                 std::string(32, 'c') + none + none),
       "reconcile request: expand: occupancy 0xffff would be cheaper sent dense"},
      {"too many nodes", RequestBytes(0, 0, 2, Varint(1'000'000)),
       "reconcile request: expand: 1000000 entries; the limit is 16384"},
      {"too many keys to fetch", RequestBytes(0, 0, 2, none + Varint(20'001)),
       "reconcile request: fetch: 20001 entries; the limit is 20000"},
      {"too many pushed records", RequestBytes(0, 0, 2, none + none + Varint(1'000'000)),
       "reconcile request: push: 1000000 entries; the limit is 10000"},
      // One over what one Store::Merge takes (kMaxBatchRecords): before,
      // the decoder let up to 20,000 through and the merge refused them.
      {"one more pushed record than a merge takes",
       RequestBytes(0, 0, 2, none + none + Varint(10'001)),
       "reconcile request: push: 10001 entries; the limit is 10000"},
      {"too many keyspaces", RequestBytes(2000, 0, 2, ""),
       "reconcile request: keyspaces: 2000 entries; the limit is 1024"},
      {"a pass beyond the last", RequestBytes(0, 9, 2, none + none + none),
       "reconcile request: pass: 9; the limit is 3"},
      {"a fingerprint width of 7 bytes", RequestBytes(0, 0, 7, none + none + none),
       "reconcile request: width: 7 bytes; fingerprints take 1..4"},
      {"a count of 2^64 - 1 nodes", RequestBytes(0, 0, 2, Varint(~uint64_t{0})),
       "reconcile request: expand: 18446744073709551615 entries; the limit is 16384"},
      {"bytes after the end", RequestBytes(0, 0, 2, none + none + none + "xyz"),
       "reconcile request: message: 3 bytes after its end"},
  };
  uint64_t id = 70;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    capnp::EzRpcClient bad(address);
    wire::Replica::Client bad_replica =
        bad.getMain<wire::Gateway>().replicaRequest().send().getReplica();
    ASSERT_TRUE(HelloOn(bad, bad_replica, ++id));
    EXPECT_THAT(ReconcileRound(bad, bad_replica, c.bytes),
                StatusIs(StatusCode::kInvalidArgument, c.message));
    EXPECT_THAT(ReconcileRound(bad, bad_replica, c.bytes),
                StatusIs(StatusCode::kFailedPrecondition, "closed after a request out of bounds"));
  }
  // The engine dropped every one of those links (it learns on its own
  // thread: waited for boundedly), and kept the good one.
  size_t dropped = 0;
  bool good_linked = false;
  for (int i = 0; i < 1000; ++i) {
    dropped = 0;
    good_linked = false;
    for (const replication::PeerStatus& p : (*server)->PeerStatuses()) {
      if (p.replica_id > 70 && p.replica_id <= id && p.links == 0) ++dropped;
      if (p.replica_id == 60 && p.links == 1) good_linked = true;
    }
    if (dropped == cases.size()) break;
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(dropped, cases.size());
  EXPECT_TRUE(good_linked);
  replication::ReconcileRequest compare;
  compare.compare = true;
  absl::StatusOr<std::string> answer =
      ReconcileRound(good, good_replica, replication::EncodeReconcileRequest(compare));
  ASSERT_THAT(answer, IsOk());
  absl::StatusOr<replication::ReconcileResponse> response =
      replication::DecodeReconcileResponse(*answer, kMaxValueBytes);
  ASSERT_THAT(response, IsOk());
  ASSERT_EQ(response->differing.size(), 1u);
}

// A peer that answers our reconcile rounds with absurd bytes (the server is
// the initiator here: `peerkv reconcile evil`). Its Replica (the `back` of
// its hello) runs on its own thread and loop; pulls are left unanswered so
// that only the answer decides what happens to the link.
class EvilPeer {
 public:
  EvilPeer(std::string address, uint64_t id, std::string answer)
      : address_(std::move(address)), id_(id), answer_(std::move(answer)) {
    thread_ = std::thread([this] { Run(); });
    ready_.WaitForNotification();
  }
  ~EvilPeer() {
    stop_->fulfill();
    thread_.join();
  }
  bool hello_ok() const { return hello_ok_; }
  int reconciles() const { return reconciles_.load(); }

 private:
  class Back final : public wire::Replica::Server {
   public:
    explicit Back(EvilPeer& peer) : peer_(peer) {}
    kj::Promise<void> pull(PullContext) override { return kj::NEVER_DONE; }
    kj::Promise<void> ping(PingContext) override { return kj::READY_NOW; }
    kj::Promise<void> reconcile(ReconcileContext context) override {
      ++peer_.reconciles_;
      context.getResults().setResponse(AsData(peer_.answer_));
      return kj::READY_NOW;
    }

   private:
    EvilPeer& peer_;
  };

  void Run() {
    capnp::EzRpcClient client(address_);
    wire::Replica::Client replica =
        client.getMain<wire::Gateway>().replicaRequest().send().getReplica();
    auto hello = replica.helloRequest();
    auto info = hello.initInfo();
    info.setReplicaId(id_);
    info.setIncarnation(1);
    info.setProtocolVersion(replication::kProtocolVersion);
    info.setName("evil");
    hello.setBack(kj::heap<Back>(*this));
    hello_ok_ = !hello.send().wait(client.getWaitScope()).hasError();
    auto stop = kj::newPromiseAndCrossThreadFulfiller<void>();
    stop_ = kj::mv(stop.fulfiller);
    ready_.Notify();
    stop.promise.wait(client.getWaitScope());
  }

  const std::string address_;
  const uint64_t id_;
  const std::string answer_;
  std::atomic<int> reconciles_{0};
  bool hello_ok_ = false;
  std::thread thread_;
  absl::Notification ready_;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> stop_;
};

// The initiator's side: an answer out of bounds ends the session with
// InvalidArgument naming the field and the limit, and closes that link only;
// the server still serves a good peer's reconcile and a client's get.
TEST(WireTest, AnAbsurdReconcileAnswerEndsTheSessionAndClosesOnlyThatLink) {
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
  capnp::EzRpcClient good(address);
  wire::Replica::Client good_replica =
      good.getMain<wire::Gateway>().replicaRequest().send().getReplica();
  ASSERT_TRUE(HelloOn(good, good_replica, 90));

  // An answer: the format, no keyspaces, width 2, no differing roots, then
  // 1,000,000 nodes said to be expanded.
  EvilPeer evil(address, 91,
                std::string(1, replication::kReconcileFormat) + std::string("\x00\x02\x00", 3) +
                    Varint(1'000'000));
  ASSERT_TRUE(evil.hello_ok());
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Connect(ClientOptions{.address = address});
  ASSERT_THAT(client, IsOk());
  // The engine learns of the link on its own thread: until then "evil" is
  // not a peer (NotFound); boundedly.
  absl::StatusOr<replication::ReconcileReport> report = absl::NotFoundError("not tried");
  for (int i = 0; i < 1000; ++i) {
    report = (*client)->Reconcile("evil");
    if (report.status().code() != StatusCode::kNotFound) break;
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_THAT(report, StatusIs(StatusCode::kInvalidArgument,
                               "reconcile answer: expanded: 1000000 entries; the limit is 16384"));
  EXPECT_EQ(evil.reconciles(), 1);
  bool dropped = false;
  for (int i = 0; i < 1000 && !dropped; ++i) {
    for (const replication::PeerStatus& p : (*server)->PeerStatuses()) {
      if (p.replica_id == 91 && p.links == 0) dropped = true;
    }
    if (!dropped) absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_TRUE(dropped);
  // The others are still served.
  replication::ReconcileRequest compare;
  compare.compare = true;
  EXPECT_THAT(ReconcileRound(good, good_replica, replication::EncodeReconcileRequest(compare)),
              IsOk());
  absl::StatusOr<std::optional<Record>> got = (*client)->Get("ks", "k");
  ASSERT_THAT(got, IsOk());
  EXPECT_TRUE(got->has_value());
  bool good_linked = false;
  for (const replication::PeerStatus& p : (*server)->PeerStatuses()) {
    if (p.replica_id == 90 && p.links == 1) good_linked = true;
  }
  EXPECT_TRUE(good_linked);
}

// A peer that answers hello as replica 77 and nothing else (no ping, no
// pull answer), on its own thread; it keeps the hellos it was sent.
class HelloRecorder {
 public:
  static constexpr uint64_t kId = 77;

  HelloRecorder() {
    thread_ = std::thread([this] { Run(); });
    ready_.WaitForNotification();
  }
  ~HelloRecorder() {
    stop_->fulfill();
    thread_.join();
  }
  std::string address() const { return absl::StrFormat("127.0.0.1:%d", port_); }
  // Waits (at most 20 s) for the n-th hello; what it said, or nullopt.
  std::optional<replication::PeerInfo> WaitForHello(size_t n) {
    absl::MutexLock lock(&mu_);
    auto arrived = [this, n]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return hellos_.size() >= n; };
    mu_.AwaitWithTimeout(absl::Condition(&arrived), absl::Seconds(20));
    if (hellos_.size() < n) return std::nullopt;
    return hellos_[n - 1];
  }

 private:
  class Replica final : public wire::Replica::Server {
   public:
    explicit Replica(HelloRecorder& recorder) : recorder_(recorder) {}
    kj::Promise<void> hello(HelloContext context) override {
      {
        absl::MutexLock lock(&recorder_.mu_);
        auto in = context.getParams().getInfo();
        replication::PeerInfo info;
        info.replica_id = in.getReplicaId();
        info.held = replication::HeldOf{in.getHeldOf(), in.getHeldIncarnation(), in.getHeldSeq(),
                                        in.getHeldWatermark(), in.getHeldNonce()};
        recorder_.hellos_.push_back(std::move(info));
      }
      auto info = context.getResults().initInfo();
      info.setReplicaId(kId);
      info.setIncarnation(1);
      info.setProtocolVersion(replication::kProtocolVersion);
      info.setName("x");
      return kj::READY_NOW;
    }
    // Unanswered: the dialler finds the link dead and dials again.
    kj::Promise<void> ping(PingContext) override { return kj::NEVER_DONE; }
    kj::Promise<void> pull(PullContext) override { return kj::NEVER_DONE; }

   private:
    HelloRecorder& recorder_;
  };
  class Gateway final : public wire::Gateway::Server {
   public:
    explicit Gateway(HelloRecorder& recorder) : recorder_(recorder) {}
    kj::Promise<void> replica(ReplicaContext context) override {
      context.getResults().setReplica(kj::heap<Replica>(recorder_));
      return kj::READY_NOW;
    }

   private:
    HelloRecorder& recorder_;
  };

  void Run() {
    capnp::EzRpcServer server(kj::heap<Gateway>(*this), "127.0.0.1", 0);
    auto& wait_scope = server.getWaitScope();
    port_ = server.getPort().wait(wait_scope);
    auto stop = kj::newPromiseAndCrossThreadFulfiller<void>();
    stop_ = kj::mv(stop.fulfiller);
    ready_.Notify();
    stop.promise.wait(wait_scope);
  }

  absl::Mutex mu_;
  std::vector<replication::PeerInfo> hellos_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
  absl::Notification ready_;
  uint port_ = 0;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> stop_;
};

// The TCP transport's dialler says in its hello what it holds of the
// replica it expects at the address (Transport::ConnectExpecting), so a
// restored peer sees the evidence before anything else is exchanged: the
// first hello knows nobody there; after the link died, the redial's hello
// claims replica 77. The TCP transport used to ignore the expectation (a
// plain Connect), and every hello claimed nothing.
TEST(WireTest, TheDiallersHelloSaysWhatItHoldsOfTheReplicaItExpects) {
  HelloRecorder x;
  testing::TempDir dir;
  StoreOptions options;
  options.dir = dir.Sub("db");
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
  ASSERT_THAT(store, IsOk());
  ServerOptions server_options{.listen = "127.0.0.1:0", .replica_name = "y"};
  // x answers no ping: its link is dead after 5 intervals and redialled.
  server_options.keepalive_ms = 20;
  server_options.replication.peers = {x.address()};
  absl::StatusOr<std::unique_ptr<Server>> server =
      Server::Start(store->get(), std::move(server_options));
  ASSERT_THAT(server, IsOk());

  std::optional<replication::PeerInfo> first = x.WaitForHello(1);
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->replica_id, (*store)->replica_id());
  EXPECT_EQ(first->held.replica_id, 0u);
  std::optional<replication::PeerInfo> again = x.WaitForHello(2);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->held.replica_id, HelloRecorder::kId);
  // What y holds of x: nothing pulled yet (x answers no pull).
  EXPECT_EQ(again->held, replication::HeldOf{.replica_id = HelloRecorder::kId});
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
