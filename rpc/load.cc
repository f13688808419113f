// rpc/load.cc: the load generator: one kj event loop on the calling thread,
// `clients` connections, `pipeline` request lanes on each; a lane sends its
// next request as soon as the previous one is answered, and the requests a
// connection's lanes issue together travel in one call.
#include "rpc/load.h"

#include <algorithm>
#include <chrono>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "kj/async-io.h"
#include "rpc/connection.h"
#include "rpc/convert.h"
#include "rpc/peerkv.capnp.h"
#include "rpc/tls.h"

namespace peerkv::rpc {
namespace {

using Clock = std::chrono::steady_clock;

struct Connection {
  explicit Connection(kj::Own<kj::AsyncIoStream> socket)
      : link(kj::mv(socket)), kv(link.gateway().kvRequest().send().getKv()) {}
  GatewayConnection link;
  wire::Kv::Client kv;
};

// The state of one operation's run, shared by all lanes.
struct Run {
  bool put = false;
  int64_t total = 0;
  int64_t issued = 0;
  int64_t errors = 0;
  std::vector<uint32_t> latencies_us;
  std::string value;
  const LoadOptions* options = nullptr;
};

// Gathers the requests a connection's lanes issue in one turn of the event
// loop and sends them as one call: a single request alone as get/put, more
// as getMany/putMany. This is what pipelining means here, as a Redis client
// pipelining writes several commands at once.
class Batcher {
 public:
  Batcher(Run& run, wire::Kv::Client kv) : run_(run), kv_(kj::mv(kv)) {}

  // Resolves to true if the server answered this request with an error.
  kj::Promise<bool> Send(std::string key) {
    auto paf = kj::newPromiseAndFulfiller<bool>();
    pending_.push_back(Pending{std::move(key), kj::mv(paf.fulfiller)});
    if (!flush_scheduled_) {
      flush_scheduled_ = true;
      // evalLater, not evalLast: the lanes an answer releases continue
      // depth-first, so they have all queued their requests before this
      // runs; and it runs before BufferedStream's flush (an evalLast), so
      // the call rides in the same socket write (and TLS record) as the
      // Finish of the answer before it. With evalLast (LIFO) the transport
      // flushed first: two writes and two TLS records per request
      // (bench/README.md, "TLS CPU per request").
      flushes_.add(kj::evalLater([this] { return Flush(); }));
    }
    return kj::mv(paf.promise);
  }

 private:
  struct Pending {
    std::string key;
    kj::Own<kj::PromiseFulfiller<bool>> done;
  };

  // Sends the gathered requests. A call that fails (the connection lost,
  // the server refusing this device) rejects each of its requests with the
  // call's own error: destroying their fulfillers instead left the run
  // failing with kj's "PromiseFulfiller was destroyed without fulfilling
  // the promise", which names nothing.
  kj::Promise<void> Flush() {
    flush_scheduled_ = false;
    auto batch = std::make_shared<std::vector<Pending>>(std::move(pending_));
    pending_.clear();
    return Send(*batch).catch_([batch](kj::Exception&& e) {
      for (Pending& p : *batch) {
        if (p.done->isWaiting()) p.done->reject(kj::cp(e));
      }
    });
  }

  kj::Promise<void> Send(std::vector<Pending>& batch) {
    // Size hints keep Cap'n Proto from allocating (and zeroing) its default
    // 8 KiB first segment for a small request.
    const size_t per = (run_.value.size() + 64) / 8 + 16;
    const capnp::MessageSize hint{per * batch.size() + 16, 0};
    if (batch.size() == 1) {
      auto key = AsData(batch[0].key);
      if (run_.put) {
        auto request = kv_.putRequest(hint);
        request.setKeyspace(AsText(run_.options->keyspace));
        request.setKey(key);
        request.setValue(AsData(run_.value));
        return request.send().then([&batch](auto response) {
          batch[0].done->fulfill(Failed(response));
        });
      }
      auto request = kv_.getRequest(hint);
      request.setKeyspace(AsText(run_.options->keyspace));
      request.setKey(key);
      return request.send().then([&batch](auto response) {
        batch[0].done->fulfill(Failed(response));
      });
    }
    if (run_.put) {
      auto request = kv_.putManyRequest(hint);
      auto list = request.initMutations(batch.size());
      for (size_t i = 0; i < batch.size(); ++i) {
        ToWire(run_.options->keyspace, batch[i].key, run_.value, list[i]);
      }
      return request.send().then([&batch](auto response) {
        auto results = response.getResults();
        for (size_t i = 0; i < batch.size(); ++i) {
          batch[i].done->fulfill(i >= results.size() ||
                                 Failed(results[i]));
        }
      });
    }
    auto request = kv_.getManyRequest(hint);
    auto list = request.initGets(batch.size());
    for (size_t i = 0; i < batch.size(); ++i) {
      ToWire(run_.options->keyspace, batch[i].key, list[i]);
    }
    return request.send().then([&batch](auto response) {
      auto results = response.getResults();
      for (size_t i = 0; i < batch.size(); ++i) {
        batch[i].done->fulfill(i >= results.size() ||
                               Failed(results[i]));
      }
    });
  }

  // Flush rejects a failed call's requests, which fails their lanes and so
  // the run: nothing more to do here.
  struct IgnoreErrors : public kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&&) override {}
  };

  Run& run_;
  wire::Kv::Client kv_;
  std::vector<Pending> pending_;
  bool flush_scheduled_ = false;
  IgnoreErrors ignore_errors_;
  kj::TaskSet flushes_{ignore_errors_};
};

class Lane {
 public:
  Lane(Run& run, Batcher& batcher, uint64_t seed) : run_(run), batcher_(batcher), rng_(seed | 1) {}

  kj::Promise<void> Next() {
    if (run_.issued >= run_.total) return kj::READY_NOW;
    ++run_.issued;
    // "key:" and 12 decimal digits.
    char key[16] = {'k', 'e', 'y', ':'};
    uint64_t n = Random() % static_cast<uint64_t>(run_.options->key_space);
    for (int i = 15; i >= 4; --i, n /= 10) key[i] = static_cast<char>('0' + n % 10);
    const auto start = Clock::now();
    return batcher_.Send(std::string(key, sizeof(key))).then([this, start](bool error) {
      const auto us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
      run_.latencies_us.push_back(static_cast<uint32_t>(us.count()));
      if (error) ++run_.errors;
      return Next();
    });
  }

 private:
  uint64_t Random() {
    // xorshift64*: cheap and good enough to spread keys.
    rng_ ^= rng_ >> 12;
    rng_ ^= rng_ << 25;
    rng_ ^= rng_ >> 27;
    return rng_ * 2685821657736338717ULL;
  }

  Run& run_;
  Batcher& batcher_;
  uint64_t rng_;
};

int64_t SocketWrites(std::vector<kj::Own<Connection>>& connections) {
  int64_t n = 0;
  for (auto& c : connections) n += static_cast<int64_t>(c->link.stream().writes());
  return n;
}

double Percentile(const std::vector<uint32_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  const size_t index = std::min(sorted.size() - 1, static_cast<size_t>(p * sorted.size()));
  return sorted[index] / 1000.0;
}

}  // namespace

std::string FormatReport(const LoadReport& report) {
  return absl::StrFormat("%s: %.2f requests per second, p50=%.3f msec, p99=%.3f msec, max=%.3f msec%s",
                         absl::AsciiStrToUpper(report.operation), report.requests_per_second,
                         report.p50_ms, report.p99_ms, report.max_ms,
                         report.errors > 0 ? absl::StrFormat(" (%d errors)", report.errors) : "");
}

absl::StatusOr<std::vector<LoadReport>> RunLoad(const LoadOptions& options) {
  if (options.clients < 1 || options.pipeline < 1 || options.requests < 1 ||
      options.key_space < 1) {
    return absl::InvalidArgumentError("clients, pipeline, requests and key space must be >= 1");
  }
  for (const std::string& op : options.operations) {
    if (op != "get" && op != "put") {
      return absl::InvalidArgumentError(
          absl::StrFormat("unknown operation '%s'; the load generator knows get and put", op));
    }
  }
  std::vector<LoadReport> reports;
  try {
    kj::AsyncIoContext io = kj::setupAsyncIo();
    std::unique_ptr<TlsEndpoint> tls;
    TrustSource trust;
    if (options.tls.has_value() && options.address.rfind("unix:", 0) != 0) {
      absl::StatusOr<std::unique_ptr<TlsEndpoint>> made =
          TlsEndpoint::Create(*options.tls, io.provider->getTimer(), 10'000);
      if (!made.ok()) return made.status();
      tls = std::move(*made);
      if (!options.server_user.has_value()) {
        return absl::InvalidArgumentError("LoadOptions.tls needs server_user");
      }
      trust = [user = *options.server_user]() -> absl::StatusOr<TrustView> {
        return TrustView{user, {}, {}};
      };
    }
    std::vector<kj::Own<Connection>> connections;
    for (int i = 0; i < options.clients; ++i) {
      connections.push_back(kj::heap<Connection>(
          DialAuthenticated(io.provider->getNetwork(), options.address, tls.get(), trust)
              .wait(io.waitScope)));
      // The server answers the bootstrap before the load starts. Over TLS
      // 1.3 the client's handshake ends before the server has checked the
      // client's certificate, so a server refusing this device shows only
      // as the connection closing here: say so, instead of failing the run
      // later.
      auto answered = connections.back()->kv.whenResolved().then(
          []() -> absl::Status { return absl::OkStatus(); },
          [&](kj::Exception&& e) -> absl::Status {
            const absl::Status status =
                FromKjException(e, absl::StrFormat("load against %s", options.address));
            if (tls == nullptr || e.getType() != kj::Exception::Type::DISCONNECTED) return status;
            return ClosedAfterHandshake(status, *options.tls);
          });
      if (absl::Status s = answered.wait(io.waitScope); !s.ok()) return s;
    }
    for (const std::string& op : options.operations) {
      Run run;
      run.put = op == "put";
      run.total = options.requests;
      run.options = &options;
      run.value = std::string(options.value_bytes, 'x');
      run.latencies_us.reserve(options.requests);
      std::vector<kj::Own<Batcher>> batchers;
      std::vector<kj::Own<Lane>> lanes;
      kj::Vector<kj::Promise<void>> running;
      const auto start = Clock::now();
      const int64_t writes_before = SocketWrites(connections);
      uint64_t seed = 0x9e3779b97f4a7c15ULL;
      for (auto& c : connections) {
        batchers.push_back(kj::heap<Batcher>(run, c->kv));
        for (int p = 0; p < options.pipeline; ++p) {
          lanes.push_back(kj::heap<Lane>(run, *batchers.back(), seed += 0x9e3779b97f4a7c15ULL));
          running.add(lanes.back()->Next());
        }
      }
      kj::joinPromises(running.releaseAsArray()).wait(io.waitScope);
      const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
      std::sort(run.latencies_us.begin(), run.latencies_us.end());
      LoadReport report;
      report.operation = op;
      report.requests = run.total;
      report.errors = run.errors;
      report.seconds = seconds;
      report.requests_per_second = run.total / seconds;
      report.socket_writes = SocketWrites(connections) - writes_before;
      report.p50_ms = Percentile(run.latencies_us, 0.50);
      report.p99_ms = Percentile(run.latencies_us, 0.99);
      report.max_ms = run.latencies_us.empty() ? 0 : run.latencies_us.back() / 1000.0;
      reports.push_back(report);
    }
  } catch (const kj::Exception& e) {
    return FromKjException(e, absl::StrFormat("load against %s", options.address));
  }
  return reports;
}

}  // namespace peerkv::rpc
