// rpc/rpc_test.cc: the server and the client library in one process, over
// real loopback TCP: every operation's round trip, error codes passed
// through unchanged, watches, reconnection and connection errors, and the
// load generator's socket writes per request.
#include <algorithm>
#include <atomic>
#include <thread>

#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rpc/client.h"
#include "rpc/load.h"
#include "rpc/server.h"
#include "store/store.h"
#include "testing/temp_dir.h"

namespace peerkv::rpc {
namespace {

using absl::StatusCode;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;

class RpcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StoreOptions options;
    options.dir = dir_.Sub("db");
    options.max_value_bytes = 1000;
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
    ASSERT_THAT(store, IsOk());
    store_ = std::move(*store);
    StartServer();
  }

  void StartServer() {
    absl::StatusOr<std::unique_ptr<Server>> server =
        Server::Start(store_.get(), ServerOptions{.listen = "127.0.0.1:0", .replica_name = "test"});
    ASSERT_THAT(server, IsOk());
    server_ = std::move(*server);
  }

  std::unique_ptr<Client> Connect() {
    absl::StatusOr<std::unique_ptr<Client>> client =
        Client::Connect(ClientOptions{.address = server_->address()});
    EXPECT_THAT(client, IsOk());
    return client.ok() ? std::move(*client) : nullptr;
  }

  testing::TempDir dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Server> server_;
};

TEST_F(RpcTest, EveryOperationRoundTrips) {
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  absl::StatusOr<Version> put = client->Put("ks", "a", "alpha");
  ASSERT_THAT(put, IsOk());
  EXPECT_EQ(put->origin, store_->replica_id());

  absl::StatusOr<std::optional<Record>> got = client->Get("ks", "a");
  ASSERT_THAT(got, IsOk());
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->value, "alpha");
  EXPECT_EQ((*got)->version, *put);
  EXPECT_FALSE((*client->Get("ks", "missing")).has_value());

  ASSERT_THAT(client->WriteBatch({{"ks", "b", "beta"}, {"ks", "c", "gamma"}, {"ks", "a", std::nullopt}}),
              IsOk());
  absl::StatusOr<ScanResult> scan = client->Scan("ks", ScanOptions{});
  ASSERT_THAT(scan, IsOk());
  ASSERT_THAT(scan->records, SizeIs(2));
  EXPECT_EQ(scan->records[0].key, "b");
  EXPECT_EQ(scan->records[1].value, "gamma");
  absl::StatusOr<ScanResult> paged = client->Scan("ks", ScanOptions{.limit = 1, .include_tombstones = true});
  ASSERT_THAT(paged, IsOk());
  EXPECT_TRUE(paged->more);
  EXPECT_TRUE(paged->records[0].deleted);

  ASSERT_THAT(client->Delete("ks", "b"), IsOk());
  EXPECT_TRUE((*client->Get("ks", "b"))->deleted);

  absl::StatusOr<ServerStatus> status = client->Status();
  ASSERT_THAT(status, IsOk());
  EXPECT_EQ(status->replica_id, store_->replica_id());
  EXPECT_EQ(status->live_records, 1u);
  EXPECT_EQ(status->tombstones, 2u);
  EXPECT_EQ(status->max_seq, 5u);
  EXPECT_EQ(status->connected_clients, 1u);
  EXPECT_EQ(status->replica_name, "test");
  EXPECT_EQ(status->max_value_bytes, 1000u);
}

TEST_F(RpcTest, ServerErrorsKeepTheirCodeAndMessage) {
  auto client = Connect();
  EXPECT_THAT(client->Put("ks", "k", std::string(1001, 'v')),
              StatusIs(StatusCode::kInvalidArgument, "value is 1001 bytes; the limit is 1000"));
  EXPECT_THAT(client->Put("ks", std::string(401, 'k'), "v"),
              StatusIs(StatusCode::kInvalidArgument, "key is 401 bytes; the limit is 400"));
  EXPECT_THAT(client->Get("BAD", "k"), StatusIs(StatusCode::kInvalidArgument, "keyspace"));
  EXPECT_THAT(client->WriteBatch({{"ks", "ok", "v"}, {"ks", "", "v"}}),
              StatusIs(StatusCode::kInvalidArgument, "mutation 1: key is empty"));
  // The client refuses values beyond the protocol's limit without sending.
  EXPECT_THAT(client->Put("ks", "k", std::string(kMaxValueBytes + 1, 'v')),
              StatusIs(StatusCode::kInvalidArgument, "the limit is 4194304"));
  // The connection survived all of it.
  EXPECT_THAT(client->Put("ks", "k", "fine"), IsOk());
}

TEST_F(RpcTest, WatchDeliversChangesInCommitOrderAndResumes) {
  auto writer = Connect();
  ASSERT_THAT(writer->Put("ks", "before", "0"), IsOk());           // seq 1
  ASSERT_THAT(writer->Put("other", "x", "not watched"), IsOk());   // seq 2

  auto watcher = Connect();
  std::vector<std::string> seen;
  uint64_t resume = 0;
  std::thread watching([&] {
    absl::Status s = watcher->Watch(
        WatchOptions{.keyspace = "ks", .prefix = "", .from_seq = 0},
        [&](const std::vector<Record>& records, uint64_t last_seq) {
          for (const Record& r : records) seen.push_back(r.key + "=" + r.value);
          resume = last_seq;
          return seen.size() < 6;
        });
    EXPECT_THAT(s, IsOk());
  });
  for (int i = 1; i <= 5; ++i) {
    ASSERT_THAT(writer->Put("ks", absl::StrFormat("k%d", i), absl::StrFormat("%d", i)), IsOk());
  }
  watching.join();
  EXPECT_THAT(seen, ElementsAre("before=0", "k1=1", "k2=2", "k3=3", "k4=4", "k5=5"));
  EXPECT_EQ(resume, 7u);

  // Resume after the last delivered seq: only what came later.
  ASSERT_THAT(writer->Put("ks", "k6", "6"), IsOk());
  std::vector<std::string> later;
  ASSERT_THAT(watcher->Watch(WatchOptions{.keyspace = "ks", .from_seq = resume},
                             [&](const std::vector<Record>& records, uint64_t) {
                               for (const Record& r : records) later.push_back(r.key);
                               return false;
                             }),
              IsOk());
  EXPECT_THAT(later, ElementsAre("k6"));
}

TEST_F(RpcTest, WatchWithPrefixFiltersAndBadArgumentsAreRefused) {
  auto client = Connect();
  ASSERT_THAT(client->Put("ks", "a/1", "x"), IsOk());
  ASSERT_THAT(client->Put("ks", "b/1", "x"), IsOk());
  ASSERT_THAT(client->Put("ks", "a/2", "x"), IsOk());
  std::vector<std::string> keys;
  ASSERT_THAT(client->Watch(WatchOptions{.keyspace = "ks", .prefix = "a/"},
                            [&](const std::vector<Record>& records, uint64_t) {
                              for (const Record& r : records) keys.push_back(r.key);
                              return keys.size() < 2;
                            }),
              IsOk());
  EXPECT_THAT(keys, ElementsAre("a/1", "a/2"));
  EXPECT_THAT(client->Watch(WatchOptions{.keyspace = "Nope"},
                            [](const std::vector<Record>&, uint64_t) { return false; }),
              StatusIs(StatusCode::kInvalidArgument, "keyspace"));
}

// Records larger than a connection's watch window, and two watches that
// share one connection's window: everything arrives, in commit order.
TEST(RpcWatchWindowTest, RecordsLargerThanTheWindowAndWatchesSharingIt) {
  testing::TempDir dir;
  absl::StatusOr<std::unique_ptr<Store>> store =
      Store::Open(StoreOptions{.dir = dir.Sub("db"), .sync = false});
  ASSERT_THAT(store, IsOk());
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(
      store->get(), ServerOptions{.listen = "127.0.0.1:0", .replica_name = "test"});
  ASSERT_THAT(server, IsOk());
  absl::StatusOr<std::unique_ptr<Client>> writer =
      Client::Connect(ClientOptions{.address = (*server)->address()});
  ASSERT_THAT(writer, IsOk());
  // 6 MiB in all: big values (above the 256 KiB window) between small ones.
  std::vector<std::string> expected_all, expected_small;
  for (int i = 0; i < 6; ++i) {
    const std::string big = absl::StrFormat("big/%d", i);
    ASSERT_THAT((*writer)->Put("ks", big, std::string(1 << 20, 'a' + i)), IsOk());
    expected_all.push_back(big);
    for (int j = 0; j < 50; ++j) {
      const std::string small = absl::StrFormat("s/%d-%02d", i, j);
      ASSERT_THAT((*writer)->Put("ks", small, std::string(10'000, 'x')), IsOk());
      expected_all.push_back(small);
      expected_small.push_back(small);
    }
  }
  absl::StatusOr<std::unique_ptr<Client>> watcher =
      Client::Connect(ClientOptions{.address = (*server)->address()});
  ASSERT_THAT(watcher, IsOk());
  auto watch = [&](const std::string& prefix, size_t want, std::vector<std::string>* keys) {
    std::vector<uint64_t> seqs;
    EXPECT_THAT((*watcher)->Watch(WatchOptions{.keyspace = "ks", .prefix = prefix},
                                  [&](const std::vector<Record>& records, uint64_t) {
                                    for (const Record& r : records) {
                                      keys->push_back(r.key);
                                      seqs.push_back(r.seq);
                                      if (r.key.starts_with("big/")) {
                                        EXPECT_EQ(r.value.size(), size_t{1} << 20);
                                      }
                                    }
                                    return keys->size() < want;
                                  }),
                IsOk());
    EXPECT_TRUE(std::is_sorted(seqs.begin(), seqs.end()));
  };
  std::vector<std::string> all, small;
  std::thread a([&] { watch("", expected_all.size(), &all); });
  std::thread b([&] { watch("s/", expected_small.size(), &small); });
  a.join();
  b.join();
  EXPECT_EQ(all, expected_all);
  EXPECT_EQ(small, expected_small);
}

TEST_F(RpcTest, GetManyAndPutManyAnswerEachItemOnItsOwn) {
  auto client = Connect();
  absl::StatusOr<std::vector<absl::StatusOr<Version>>> puts = client->PutMany(
      {{"ks", "a", "1"}, {"ks", "", "bad key"}, {"ks", "b", "2"}, {"ks", "a", std::nullopt}});
  ASSERT_THAT(puts, IsOk());
  ASSERT_EQ(puts->size(), 4u);
  EXPECT_THAT((*puts)[0], IsOk());
  EXPECT_THAT((*puts)[1], StatusIs(StatusCode::kInvalidArgument, "key is empty"));
  EXPECT_THAT((*puts)[2], IsOk());
  EXPECT_GT(*(*puts)[3], *(*puts)[0]);  // in order, after the put of a

  auto gets = client->GetMany({{"ks", "a"}, {"ks", "b"}, {"ks", "none"}, {"BAD", "x"}});
  ASSERT_THAT(gets, IsOk());
  ASSERT_EQ(gets->size(), 4u);
  EXPECT_TRUE((*(*gets)[0])->deleted);
  EXPECT_EQ((*(*gets)[1])->value, "2");
  EXPECT_FALSE((*(*gets)[2]).has_value());
  EXPECT_THAT((*gets)[3], StatusIs(StatusCode::kInvalidArgument, "keyspace"));
}

TEST_F(RpcTest, ManyItemCallsAreBoundedByWhatAnAnswerCanHold) {
  // This server's values are at most 1000 bytes, so a message may be about
  // 1 MiB and an answer half that: 2056 items at most per call.
  auto client = Connect();
  std::vector<Mutation> too_many(3000, Mutation{"ks", "k", "v"});
  EXPECT_THAT(client->PutMany(too_many),
              StatusIs(StatusCode::kInvalidArgument, "putMany carries 3000 writes; the limit is"));
  std::vector<Mutation> many;
  for (int i = 0; i < 2000; ++i) many.push_back({"ks", absl::StrFormat("k%05d", i), "v"});
  absl::StatusOr<std::vector<absl::StatusOr<Version>>> puts = client->PutMany(many);
  ASSERT_THAT(puts, IsOk());
  for (const auto& p : *puts) ASSERT_THAT(p, IsOk());
  EXPECT_EQ(store_->Stats()->live_records, 2000u);

  // 2000 gets of a 1000-byte value would be 2 MB: the answer carries what
  // fits and refuses the rest, which can be asked again.
  ASSERT_THAT(client->Put("ks", "big", std::string(1000, 'v')), IsOk());
  std::vector<Client::KeyRef> keys(2000, Client::KeyRef{"ks", "big"});
  auto gets = client->GetMany(keys);
  ASSERT_THAT(gets, IsOk());
  EXPECT_THAT(gets->front(), IsOk());
  EXPECT_THAT(gets->back(), StatusIs(StatusCode::kResourceExhausted, "ask again"));
  // A scan of every key comes in pages that fit.
  size_t seen = 0;
  ScanOptions page{.limit = kMaxScanLimit};
  for (int i = 0; i < 100; ++i) {
    absl::StatusOr<ScanResult> result = client->Scan("ks", page);
    ASSERT_THAT(result, IsOk());
    seen += result->records.size();
    if (!result->more) break;
    page.start_after = result->records.back().key;
  }
  EXPECT_EQ(seen, 2001u);
}

TEST_F(RpcTest, NoServerIsUnavailable) {
  const std::string address = server_->address();
  server_.reset();
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Connect(ClientOptions{.address = address});
  EXPECT_THAT(client, StatusIs(StatusCode::kUnavailable, address));
}

TEST_F(RpcTest, ClientReconnectsAfterTheServerRestarts) {
  auto client = Connect();
  ASSERT_THAT(client->Put("ks", "k", "1"), IsOk());
  const std::string address = server_->address();
  server_.reset();
  EXPECT_THAT(client->Get("ks", "k"), StatusIs(StatusCode::kUnavailable));
  // Same port again.
  absl::StatusOr<std::unique_ptr<Server>> again =
      Server::Start(store_.get(), ServerOptions{.listen = address});
  ASSERT_THAT(again, IsOk());
  server_ = std::move(*again);
  absl::StatusOr<std::optional<Record>> got = client->Get("ks", "k");
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ((*got)->value, "1");
}

TEST_F(RpcTest, ConcurrentWritersShareTheConnectionAndCommits) {
  auto client = Connect();
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        if (!client->Put("ks", absl::StrFormat("t%d-%d", t, i), "v").ok()) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(store_->Stats()->live_records, 400u);
  EXPECT_LT(store_->Stats()->commits, 400u);
}

// `peerkv bench` sends each request in the same socket write as the
// Finish of the answer before it: one write (one TLS record) per request,
// not two (bench/README.md, "TLS CPU per request").
TEST_F(RpcTest, TheLoadGeneratorWritesOncePerRequest) {
  LoadOptions options;
  options.address = server_->address();
  options.clients = 2;
  options.requests = 400;
  options.value_bytes = 100;
  absl::StatusOr<std::vector<LoadReport>> reports = RunLoad(options);
  ASSERT_THAT(reports, IsOk());
  ASSERT_THAT(*reports, SizeIs(2));
  for (const LoadReport& r : *reports) {
    EXPECT_EQ(r.errors, 0) << r.operation;
    // The last answer's Finish (one per connection) goes alone.
    EXPECT_LE(r.socket_writes, r.requests + options.clients) << r.operation;
    EXPECT_GE(r.socket_writes, r.requests) << r.operation;
  }
}

TEST_F(RpcTest, ABadListenAddressIsAnError) {
  EXPECT_THAT(Server::Start(store_.get(), ServerOptions{.listen = "no-port"}),
              StatusIs(StatusCode::kInvalidArgument, "HOST:PORT"));
  EXPECT_THAT(Server::Start(store_.get(), ServerOptions{.listen = server_->address()}),
              StatusIs(StatusCode::kUnavailable, "cannot listen"));
}

}  // namespace
}  // namespace peerkv::rpc
