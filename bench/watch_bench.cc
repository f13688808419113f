// bench/watch_bench.cc: what idle watches cost writers. A server runs in
// this process on a durable store (on disk, under --dir); one client puts
// records one after another (each acknowledged once durable) with no
// watches open, then with --watches watches open on a keyspace nobody
// writes, in --rounds paired rounds. Prints the median puts/s of each and
// the median of the rounds' ratios. The watches come from a separate thread with its own
// Cap'n Proto client over loopback TCP, spread over --watch-connections.
#include <sys/resource.h>

#include <algorithm>
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
  // Watches start after the current seq instead of 0 (no catch-up).
  bool from_now = false;
  int puts = 500;
  int rounds = 15;
  int value_bytes = 100;
  std::string dir = "/var/tmp";
};

// Records delivered to a set of watches, and a promise kept once there are
// as many as expected. Used on the watches' thread only.
struct Tally {
  int64_t records = 0;
  int64_t expected = 0;
  kj::Own<kj::PromiseFulfiller<void>> done;
};

class CountingWatcher final : public wire::Watcher::Server {
 public:
  explicit CountingWatcher(Tally& tally) : tally_(tally) {}
  kj::Promise<void> changes(ChangesContext context) override {
    tally_.records += context.getParams().getRecords().size();
    if (tally_.records >= tally_.expected && tally_.done.get() != nullptr) {
      tally_.done->fulfill();
      tally_.done = nullptr;
    }
    return kj::READY_NOW;
  }
  kj::Promise<void> failed(FailedContext) override { return kj::READY_NOW; }

 private:
  Tally& tally_;
};

// `count` watches of keyspace "idle" from seq 0 (as `peerkv watch idle`
// starts), open until the object is destroyed. The constructor returns
// once they have been sent `expected` records together (the log read to
// its end) and the server has handled everything they sent.
class IdleWatches {
 public:
  IdleWatches(const std::string& address, int count, int connections, uint64_t from_seq,
              int64_t expected) {
    const absl::Time start = absl::Now();
    thread_ = std::thread([this, address, count, connections, from_seq, expected, start] {
      auto io = kj::setupAsyncIo();
      Tally tally;
      tally.expected = expected;
      auto caught_up = kj::newPromiseAndFulfiller<void>();
      tally.done = kj::mv(caught_up.fulfiller);
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
          request.setFromSeq(from_seq);
          request.setWatcher(kj::heap<CountingWatcher>(tally));
          Conn* raw = conn.get();
          opened.add(request.send().then([raw](auto response) {
            PEERKV_CHECK(!response.hasError());
            raw->handles.add(response.getHandle());
          }));
        }
        conns.add(kj::mv(conn));
      }
      kj::joinPromises(opened.releaseAsArray()).wait(io.waitScope);
      open_ms = absl::ToDoubleMilliseconds(absl::Now() - start);
      if (expected > 0) caught_up.promise.wait(io.waitScope);
      // One round trip per connection: the server has handled the
      // watchers' answers before it.
      kj::Vector<kj::Promise<void>> trips;
      for (auto& conn : conns) {
        trips.add(conn->client->bootstrap().castAs<wire::Gateway>().kvRequest().send().ignoreResult());
      }
      kj::joinPromises(trips.releaseAsArray()).wait(io.waitScope);
      caught_up_ms = absl::ToDoubleMilliseconds(absl::Now() - start);
      ready_.Notify();
      stop.promise.wait(io.waitScope);
    });
    ready_.WaitForNotification();
  }

  // Time to open the watches, and until they had caught up.
  double open_ms = 0;
  double caught_up_ms = 0;

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

// CPU time this process (server, client and watchers) has used, in us.
double CpuMicros() {
  rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1e6 + usage.ru_utime.tv_usec +
         usage.ru_stime.tv_usec;
}

struct Rate {
  double puts_per_second = 0;
  // CPU of the whole process per put: far less sensitive than wall time
  // to other work on a shared machine.
  double cpu_us_per_put = 0;
};

// Sequential durable puts.
Rate PutRate(rpc::Client& client, const Flags& flags, int round, const char* phase) {
  const std::string value(flags.value_bytes, 'v');
  const absl::Time start = absl::Now();
  const double cpu = CpuMicros();
  for (int i = 0; i < flags.puts; ++i) {
    PEERKV_CHECK(
        client.Put("bench", absl::StrFormat("%s-%d-%06d", phase, round, i), value).ok());
  }
  return Rate{flags.puts / absl::ToDoubleSeconds(absl::Now() - start),
              (CpuMicros() - cpu) / flags.puts};
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
    } else if (arg == "--from-now") {
      flags.from_now = true;
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
                   "usage: watch_bench [--watches N] [--watch-connections N] [--from-now] [--puts N] "
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
  std::vector<double> without, with, ratios, cpu_without, cpu_with, cpu_ratios;
  for (int round = 0; round < flags.rounds; ++round) {
    Rate none, idle;
    const bool idle_first = round % 2 == 1;
    if (!idle_first) none = PutRate(**client, flags, round, "none");
    {
      // One write to "idle", before the watches open and long before the
      // measurement: once every watch has had it (and those of earlier
      // rounds), every watch has read the log to its end and is idle.
      PEERKV_CHECK((*client)->Put("idle", absl::StrFormat("sentinel-%d", round), "x").ok());
      IdleWatches watches((*server)->address(), flags.watches, flags.watch_connections,
                          flags.from_now ? (*store)->max_seq() : 0,
                          flags.from_now ? 0 : int64_t{flags.watches} * (round + 1));
      if (round == 0) {
        std::printf("%d watches open in %.0f ms, caught up with the log (%llu entries) in %.0f ms\n",
                    flags.watches, watches.open_ms,
                    static_cast<unsigned long long>((*store)->max_seq()), watches.caught_up_ms);
        std::fflush(stdout);
      }
      idle = PutRate(**client, flags, round, "idle");
    }
    WaitForClients(**client, 1);
    if (idle_first) none = PutRate(**client, flags, round, "none");
    without.push_back(none.puts_per_second);
    with.push_back(idle.puts_per_second);
    ratios.push_back(idle.puts_per_second / none.puts_per_second);
    cpu_without.push_back(none.cpu_us_per_put);
    cpu_with.push_back(idle.cpu_us_per_put);
    cpu_ratios.push_back(idle.cpu_us_per_put / none.cpu_us_per_put);
    std::printf(
        "round %d: 0 watches %.0f puts/s (%.0f us CPU/put), %d idle watches %.0f puts/s "
        "(%.0f us CPU/put): ratio %.3f\n",
        round, none.puts_per_second, none.cpu_us_per_put, flags.watches, idle.puts_per_second,
        idle.cpu_us_per_put, ratios.back());
    std::fflush(stdout);
  }
  std::printf(
      "median: 0 watches %.0f puts/s, %d idle watches %.0f puts/s: median ratio %.3f\n"
      "median CPU per put: 0 watches %.0f us, %d idle watches %.0f us: median ratio %.3f\n",
      Median(without), flags.watches, Median(with), Median(ratios), Median(cpu_without),
      flags.watches, Median(cpu_with), Median(cpu_ratios));
  return 0;
}

}  // namespace
}  // namespace peerkv

int main(int argc, char** argv) { return peerkv::Main(argc, argv); }
