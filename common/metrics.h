// common/metrics.h: the process's counters and histograms, which store/,
// replication/, rpc/ and the front ends increment and http/ renders as
// Prometheus text (GET /metrics). Lock-free on the hot path (relaxed
// atomics); a labelled family takes a mutex only to find or add a child,
// so callers on a hot path look a child up once and keep the pointer.
// No kj: every module may use it. Process-wide: several servers in one
// process (tests) share them.
#ifndef PEERKV_COMMON_METRICS_H_
#define PEERKV_COMMON_METRICS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace peerkv::metrics {

class Counter {
 public:
  void Add(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// Cumulative buckets with fixed upper bounds (Prometheus' `le`), their
// sum and count.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void Observe(double v);
  struct Snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;  // one per bound, then +Inf (== count)
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot Read() const;

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds_.size() + 1
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_micro_{0};  // sum * 1e6, rounded
};

// Bucket bounds: seconds from 50 us to 10 s, and counts 1..4096.
std::vector<double> LatencyBounds();
std::vector<double> CountBounds();

// A family of children told apart by label values (label names fixed at
// construction). Children live as long as the family.
template <typename T>
class Family {
 public:
  Family(std::string name, std::string help, std::vector<std::string> labels,
         std::function<std::unique_ptr<T>()> make)
      : name_(std::move(name)), help_(std::move(help)), labels_(std::move(labels)),
        make_(std::move(make)) {}
  T& Get(const std::vector<std::string>& values) {
    absl::MutexLock lock(&mu_);
    std::unique_ptr<T>& child = children_[values];
    if (child == nullptr) child = make_();
    return *child;
  }
  void ForEach(const std::function<void(const std::vector<std::string>&, const T&)>& f) const {
    absl::MutexLock lock(&mu_);
    for (const auto& [values, child] : children_) f(values, *child);
  }
  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  const std::vector<std::string>& labels() const { return labels_; }

 private:
  const std::string name_, help_;
  const std::vector<std::string> labels_;
  const std::function<std::unique_ptr<T>()> make_;
  mutable absl::Mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<T>> children_ ABSL_GUARDED_BY(mu_);
};

// One operation of one front end (peerkv_requests_total{frontend,op,code}
// and peerkv_request_duration_seconds{frontend,op}) with its latency
// histogram and its "OK" counter looked up once: a hot path keeps one per
// operation, and a request costs an Observe and an Add (other codes look
// their counter up, under the family's mutex). The RPC calls
// (rpc/call_metrics.cc) and the RESP commands (resp/session.cc) count
// through it.
class OpMetrics {
 public:
  OpMetrics(std::string frontend, std::string op);
  // A request that took `seconds` and ended with `code` ("OK", ...).
  void Count(double seconds, std::string_view code) const;
  const std::string& op() const { return op_; }

 private:
  const std::string frontend_, op_;
  Histogram* const seconds_;
  Counter* const ok_;
};

// The metrics peerkv increments. Names follow Prometheus conventions
// (README "Metrics" lists them).
struct Registry {
  Registry();
  // Front-end requests: by front end ("http", "rpc", "resp"), operation
  // ("get", "put", ...) and outcome code ("OK", "NOT_FOUND", ...).
  Family<Counter> requests;           // peerkv_requests_total
  Family<Histogram> request_seconds;  // peerkv_request_duration_seconds{frontend,op}
  // The store's writer: requests per durable commit group, and the time of
  // the commit (LMDB's write and fsync).
  Histogram commit_group_requests;  // peerkv_commit_group_requests
  Histogram commit_seconds;         // peerkv_commit_duration_seconds
  // HTTP connections refused because the limit was reached, and watch
  // events sent over server-sent events.
  Counter http_connections_refused;  // peerkv_http_connections_refused_total
  Counter sse_events;                // peerkv_sse_events_total
  // Replication traffic by peer (its replica id, %016x) and direction
  // ("in", "out"): the Cap'n Proto bytes of the connections a peer link
  // runs on (inside TLS), counted by rpc/buffered_stream once the peer's
  // hello names it. Process-wide, like the rest: servers sharing a process
  // (tests) share a peer's counters.
  Family<Counter> peer_bytes;  // peerkv_peer_{received,sent}_bytes_total
};
Registry& Global();

}  // namespace peerkv::metrics

#endif  // PEERKV_COMMON_METRICS_H_
