// bench/watch_bench.cc: what idle watches cost writers. A server runs in
// this process on a durable store (on disk, under --dir); one client puts
// records one after another (each acknowledged once durable) with no
// watches open, then with --watches watches open on a keyspace nobody
// writes, in --rounds paired rounds. Prints the median puts/s of each and
// the median of the rounds' ratios. The watches come from a separate thread with its own
// Cap'n Proto client over loopback TCP, spread over --watch-connections.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "bench/baseline.h"
#include "capnp/rpc-twoparty.h"
#include "common/macros.h"
#include "kj/async-io.h"
#include "rpc/client.h"
#include "rpc/peerkv.capnp.h"
#include "rpc/server.h"
#include "store/store.h"

namespace peerkv {
namespace {

struct Flags {
  int watches = 5000;
  int watch_connections = 10;
  int puts = 500;
  int rounds = 15;
  int value_bytes = 100;
  std::string dir = "/var/tmp";
};

// Counts the records it is sent.
class CountingWatcher final : public wire::Watcher::Server {
 public:
  explicit CountingWatcher(std::atomic<int64_t>& records) : records_(records) {}
  kj::Promise<void> changes(ChangesContext context) override {
    records_ += context.getParams().getRecords().size();
    return kj::READY_NOW;
  }
  kj::Promise<void> failed(FailedContext) override { return kj::READY_NOW; }

 private:
  std::atomic<int64_t>& records_;
};

// `count` watches of keyspace "idle" from seq 0 (as `peerkv watch idle`
// starts), open until the object is destroyed.
class IdleWatches {
 public:
  // Records delivered to all the watches together.
  std::atomic<int64_t> records{0};

  IdleWatches(const std::string& address, int count, int connections) {
    thread_ = std::thread([this, address, count, connections] {
      auto io = kj::setupAsyncIo();
      auto stop = kj::newPromiseAndCrossThreadFulfiller<void>();
      {
        absl::MutexLock lock(&mu_);
        stop_ = kj::mv(stop.fulfiller);
      }
      struct Conn {
        kj::Own<kj::AsyncIoStream> stream;
        kj::Own<capnp::TwoPartyClient> client;
        kj::Vector<wire::WatchHandle::Client> handles;
      };
      kj::Vector<kj::Own<Conn>> conns;
      kj::Vector<kj::Promise<void>> opened;
      for (int c = 0; c < connections; ++c) {
        auto conn = kj::heap<Conn>();
        conn->stream = io.provider->getNetwork()
                           .parseAddress(address)
                           .wait(io.waitScope)
                           ->connect()
                           .wait(io.waitScope);
        conn->client = kj::heap<capnp::TwoPartyClient>(*conn->stream);
        auto kv = conn->client->bootstrap().castAs<wire::Gateway>().kvRequest().send().getKv();
        const int here = count / connections + (c < count % connections ? 1 : 0);
        for (int i = 0; i < here; ++i) {
          auto request = kv.watchRequest();
          request.setKeyspace("idle");
          request.setFromSeq(0);
          request.setWatcher(kj::heap<CountingWatcher>(records));
          Conn* raw = conn.get();
          opened.add(request.send().then([raw](auto response) {
            PEERKV_CHECK(!response.hasError());
            raw->handles.add(response.getHandle());
          }));
        }
        conns.add(kj::mv(conn));
      }
      kj::joinPromises(opened.releaseAsArray()).wait(io.waitScope);
      ready_.Notify();
      stop.promise.wait(io.waitScope);
    });
    ready_.WaitForNotification();
  }

  ~IdleWatches() {
    {
      absl::MutexLock lock(&mu_);
      stop_->fulfill();
    }
    thread_.join();
  }

 private:
  absl::Mutex mu_;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> stop_;
  absl::Notification ready_;
  std::thread thread_;
};

// Sequential durable puts per second.
double PutRate(rpc::Client& client, const Flags& flags, int round, const char* phase) {
  const std::string value(flags.value_bytes, 'v');
  const absl::Time start = absl::Now();
  for (int i = 0; i < flags.puts; ++i) {
    PEERKV_CHECK(
        client.Put("bench", absl::StrFormat("%s-%d-%06d", phase, round, i), value).ok());
  }
  return flags.puts / absl::ToDoubleSeconds(absl::Now() - start);
}

// Waits (bounded) until the server counts `clients` connections.
void WaitForClients(rpc::Client& client, uint32_t clients) {
  for (int i = 0; i < 10'000; ++i) {
    absl::StatusOr<rpc::ServerStatus> status = client.Status();
    PEERKV_CHECK(status.ok());
    if (status->connected_clients == clients) return;
    absl::SleepFor(absl::Milliseconds(1));
  }
  PEERKV_CHECK(false);
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int Main(int argc, char** argv) {
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    auto number = [&](int* out, int min) {
      const std::string v = value();
      if (!absl::SimpleAtoi(v, out) || *out < min) {
        std::fprintf(stderr, "%s must be an integer >= %d, got '%s'\n", arg.c_str(), min,
                     v.c_str());
        std::exit(2);
      }
    };
    if (arg == "--watches") {
      number(&flags.watches, 1);
    } else if (arg == "--watch-connections") {
      number(&flags.watch_connections, 1);
    } else if (arg == "--puts") {
      number(&flags.puts, 1);
    } else if (arg == "--rounds") {
      number(&flags.rounds, 1);
    } else if (arg == "--value-bytes") {
      number(&flags.value_bytes, 1);
    } else if (arg == "--dir") {
      flags.dir = value();
    } else {
      std::fprintf(stderr,
                   "usage: watch_bench [--watches N] [--watch-connections N] [--puts N] "
                   "[--rounds N] [--value-bytes N] [--dir DIR]\n");
      return 2;
    }
  }
  bench::ScratchDir scratch(flags.dir);
  StoreOptions options;
  options.dir = scratch.path() + "/db";
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
  PEERKV_CHECK(store.ok());
  absl::StatusOr<std::unique_ptr<rpc::Server>> server = rpc::Server::Start(
      store->get(), rpc::ServerOptions{.listen = "127.0.0.1:0", .replica_name = "bench"});
  PEERKV_CHECK(server.ok());
  absl::StatusOr<std::unique_ptr<rpc::Client>> client =
      rpc::Client::Connect(rpc::ClientOptions{.address = (*server)->address()});
  PEERKV_CHECK(client.ok());
  // Warm up the store and the connection.
  PutRate(**client, flags, -1, "warm");

  // Paired rounds, the order alternating (ABBA) so that drift on a shared
  // machine falls on both sides; the ratio is the median of the rounds'.
  std::vector<double> without, with, ratios;
  for (int round = 0; round < flags.rounds; ++round) {
    double none = 0, idle = 0;
    const bool idle_first = round % 2 == 1;
    if (!idle_first) none = PutRate(**client, flags, round, "none");
    {
      const absl::Time start = absl::Now();
      IdleWatches watches((*server)->address(), flags.watches, flags.watch_connections);
      const absl::Time open = absl::Now();
      // One write to "idle", before the measurement: once every watch has
      // it, every watch has read the log to its end and is idle.
      PEERKV_CHECK((*client)->Put("idle", absl::StrFormat("sentinel-%d", round), "x").ok());
      // (Each watch replays the sentinels of earlier rounds too.)
      const int64_t expected = int64_t{flags.watches} * (round + 1);
      for (int i = 0; i < 600'000 && watches.records.load() < expected; ++i) {
        absl::SleepFor(absl::Milliseconds(1));
      }
      PEERKV_CHECK(watches.records.load() == expected);
      if (round == 0) {
        std::printf("%d watches open in %.0f ms; caught up with the log (%llu entries) %.0f ms later\n",
                    flags.watches, absl::ToDoubleMilliseconds(open - start),
                    static_cast<unsigned long long>((*store)->max_seq()),
                    absl::ToDoubleMilliseconds(absl::Now() - open));
      }
      idle = PutRate(**client, flags, round, "idle");
    }
    WaitForClients(**client, 1);
    if (idle_first) none = PutRate(**client, flags, round, "none");
    without.push_back(none);
    with.push_back(idle);
    ratios.push_back(idle / none);
    std::printf("round %d: %.0f puts/s with 0 watches, %.0f with %d idle watches (%.3f)\n", round,
                none, idle, flags.watches, idle / none);
    std::fflush(stdout);
  }
  std::printf(
      "median: %.0f puts/s with 0 watches, %.0f with %d idle watches; median ratio %.3f\n",
      Median(without), Median(with), flags.watches, Median(ratios));
  return 0;
}

}  // namespace
}  // namespace peerkv

int main(int argc, char** argv) { return peerkv::Main(argc, argv); }
