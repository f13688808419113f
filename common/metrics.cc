// common/metrics.cc: histogram buckets and the process's registry.
#include "common/metrics.h"

#include <algorithm>
#include <cmath>

namespace peerkv::metrics {

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)),
      buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::Observe(double v) {
  const size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  if (v > 0 && std::isfinite(v)) {
    sum_micro_.fetch_add(static_cast<uint64_t>(std::llround(v * 1e6)), std::memory_order_relaxed);
  }
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot s;
  s.bounds = bounds_;
  uint64_t total = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    total += buckets_[i].load(std::memory_order_relaxed);
    s.cumulative.push_back(total);
  }
  s.count = total;  // consistent with the buckets, whatever raced
  s.sum = static_cast<double>(sum_micro_.load(std::memory_order_relaxed)) / 1e6;
  return s;
}

std::vector<double> LatencyBounds() {
  return {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
          0.025,   0.05,   0.1,     0.25,   0.5,   1,      2.5,   10};
}

std::vector<double> CountBounds() {
  std::vector<double> b;
  for (double v = 1; v <= 4096; v *= 2) b.push_back(v);
  return b;
}

Registry::Registry()
    : requests("peerkv_requests_total", "Front-end requests by front end, operation and outcome.",
               {"frontend", "op", "code"}, [] { return std::make_unique<Counter>(); }),
      request_seconds("peerkv_request_duration_seconds",
                      "Time to answer a front-end request, by front end and operation.",
                      {"frontend", "op"},
                      [] { return std::make_unique<Histogram>(LatencyBounds()); }),
      commit_group_requests(CountBounds()),
      commit_seconds(LatencyBounds()),
      peer_bytes("peerkv_peer_bytes_total", "Replication bytes by peer and direction.",
                 {"replica_id", "direction"}, [] { return std::make_unique<Counter>(); }) {}

OpMetrics::OpMetrics(std::string frontend, std::string op)
    : frontend_(std::move(frontend)),
      op_(std::move(op)),
      seconds_(&Global().request_seconds.Get({frontend_, op_})),
      ok_(&Global().requests.Get({frontend_, op_, "OK"})) {}

void OpMetrics::Count(double seconds, std::string_view code) const {
  seconds_->Observe(seconds);
  if (code == "OK") {
    ok_->Add();
  } else {
    Global().requests.Get({frontend_, op_, std::string(code)}).Add();
  }
}

Registry& Global() {
  static Registry* registry = new Registry();
  return *registry;
}

}  // namespace peerkv::metrics
