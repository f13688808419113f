// http/metrics_text.h: GET /metrics: the process's metrics
// (common/metrics.h) and the server's facts (store statistics, peers) in
// the Prometheus text exposition format 0.0.4.
#ifndef PEERKV_HTTP_METRICS_TEXT_H_
#define PEERKV_HTTP_METRICS_TEXT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "common/metrics.h"
#include "replication/status.h"
#include "store/types.h"

namespace peerkv::http {

struct MetricsInput {
  StoreStats stats;
  std::vector<replication::PeerStatus> peers;
  double uptime_seconds = 0;
  uint64_t rpc_connections = 0;
  uint64_t http_connections = 0;
  uint64_t bytes_sent = 0;
  absl::Time now;
};

std::string RenderMetrics(const metrics::Registry& registry, const MetricsInput& in);

// A label value escaped for the text format (\\, \", \n).
std::string EscapeLabel(std::string_view value);

}  // namespace peerkv::http

#endif  // PEERKV_HTTP_METRICS_TEXT_H_
