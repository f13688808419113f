// http/metrics_text.cc: the Prometheus text rendering.
#include "http/metrics_text.h"

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"

namespace peerkv::http {
namespace {

void Header(std::string& out, std::string_view name, std::string_view type,
            std::string_view help) {
  absl::StrAppendFormat(&out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

std::string Labels(const std::vector<std::string>& names, const std::vector<std::string>& values,
                   std::string_view extra = "") {
  std::string out;
  for (size_t i = 0; i < names.size() && i < values.size(); ++i) {
    if (!out.empty()) out.push_back(',');
    absl::StrAppendFormat(&out, "%s=\"%s\"", names[i], EscapeLabel(values[i]));
  }
  if (!extra.empty()) {
    if (!out.empty()) out.push_back(',');
    out += extra;
  }
  return out.empty() ? out : "{" + out + "}";
}

std::string Number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return absl::StrFormat("%.15g", v);
}

void Histogram(std::string& out, std::string_view name, const std::vector<std::string>& names,
               const std::vector<std::string>& values, const metrics::Histogram::Snapshot& s) {
  for (size_t i = 0; i < s.bounds.size(); ++i) {
    absl::StrAppendFormat(&out, "%s_bucket%s %d\n", name,
                          Labels(names, values, absl::StrFormat("le=\"%s\"", Number(s.bounds[i]))),
                          s.cumulative[i]);
  }
  absl::StrAppendFormat(&out, "%s_bucket%s %d\n", name, Labels(names, values, "le=\"+Inf\""),
                        s.count);
  absl::StrAppendFormat(&out, "%s_sum%s %s\n", name, Labels(names, values), Number(s.sum));
  absl::StrAppendFormat(&out, "%s_count%s %d\n", name, Labels(names, values), s.count);
}

void Gauge(std::string& out, std::string_view name, std::string_view help, double v,
           std::string_view type = "gauge") {
  Header(out, name, type, help);
  absl::StrAppendFormat(&out, "%s %s\n", name, Number(v));
}

}  // namespace

std::string EscapeLabel(std::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out.push_back(c);
  }
  return out;
}

std::string RenderMetrics(const metrics::Registry& r, const MetricsInput& in) {
  std::string out;
  Header(out, r.requests.name(), "counter", r.requests.help());
  r.requests.ForEach([&](const std::vector<std::string>& values, const metrics::Counter& c) {
    absl::StrAppendFormat(&out, "%s%s %d\n", r.requests.name(),
                          Labels(r.requests.labels(), values), c.value());
  });
  Header(out, r.request_seconds.name(), "histogram", r.request_seconds.help());
  r.request_seconds.ForEach(
      [&](const std::vector<std::string>& values, const metrics::Histogram& h) {
        Histogram(out, r.request_seconds.name(), r.request_seconds.labels(), values, h.Read());
      });
  Header(out, "peerkv_commit_group_requests", "histogram",
         "Write requests (local writes and merged batches) per durable commit group.");
  Histogram(out, "peerkv_commit_group_requests", {}, {}, r.commit_group_requests.Read());
  Header(out, "peerkv_commit_duration_seconds", "histogram",
         "Time of a commit group's LMDB commit (its writes and fsync).");
  Histogram(out, "peerkv_commit_duration_seconds", {}, {}, r.commit_seconds.Read());

  const StoreStats& s = in.stats;
  Gauge(out, "peerkv_records", "Live records (not deleted).", s.live_records);
  Gauge(out, "peerkv_tombstones", "Tombstones (deleted keys kept for replication).", s.tombstones);
  Gauge(out, "peerkv_log_entries", "Change-log entries, superseded ones not yet compacted.",
        s.log_entries);
  Gauge(out, "peerkv_max_seq", "The greatest local sequence number committed.", s.max_seq);
  Gauge(out, "peerkv_disk_bytes", "Size of the data file on disk.", s.disk_bytes);
  Gauge(out, "peerkv_map_bytes", "Size of the LMDB memory map.", s.map_bytes);
  Gauge(out, "peerkv_commits_total", "Durable write transactions since open.", s.commits,
        "counter");
  Gauge(out, "peerkv_quarantine_records", "Records held in quarantine (a clock too far ahead).",
        s.quarantine_records);
  Gauge(out, "peerkv_signature_refused_total",
        "Records the merge gate refused: unsigned, forged or altered, or signed by a user who "
        "may not write the keyspace.",
        s.gate_refused, "counter");
  Gauge(out, "peerkv_clock_offset_seconds",
        "This replica's wall clock minus real time as its peers' clocks tell.",
        s.clock_offset_ms / 1000.0);
  Gauge(out, "peerkv_uptime_seconds", "Seconds since the server started.", in.uptime_seconds);
  Gauge(out, "peerkv_rpc_connections", "Open Cap'n Proto connections (clients and peers).",
        in.rpc_connections);
  Gauge(out, "peerkv_http_connections", "Open HTTP connections.", in.http_connections);
  Gauge(out, "peerkv_http_connections_refused_total",
        "HTTP connections refused at the connection limit.",
        r.http_connections_refused.value(), "counter");
  Gauge(out, "peerkv_sse_events_total", "Watch events sent as server-sent events.",
        r.sse_events.value(), "counter");
  Gauge(out, "peerkv_sent_bytes_total", "Bytes written to RPC sockets (clients and peers).",
        in.bytes_sent, "counter");

  const std::vector<std::string> peer_labels = {"peer", "address", "replica_id"};
  auto per_peer = [&](std::string_view name, std::string_view type, std::string_view help,
                      auto value) {
    Header(out, name, type, help);
    for (const replication::PeerStatus& p : in.peers) {
      const std::optional<double> v = value(p);
      if (!v.has_value()) continue;
      absl::StrAppendFormat(
          &out, "%s%s %s\n", name,
          Labels(peer_labels, {p.name, p.address, absl::StrFormat("%016x", p.replica_id)}),
          Number(*v));
    }
  };
  per_peer("peerkv_peer_reachable", "gauge", "1 if the last exchange with the peer succeeded.",
           [](const auto& p) -> std::optional<double> { return p.reachable ? 1 : 0; });
  per_peer("peerkv_peer_behind_records", "gauge",
           "Records of the peer's log beyond our checkpoint when it last answered.",
           [](const auto& p) -> std::optional<double> { return p.behind; });
  per_peer("peerkv_peer_last_exchange_age_seconds", "gauge",
           "Seconds since the last successful pull from the peer (absent if never).",
           [&](const auto& p) -> std::optional<double> {
             if (p.last_exchange == absl::InfinitePast()) return std::nullopt;
             return absl::ToDoubleSeconds(in.now - p.last_exchange);
           });
  per_peer("peerkv_peer_clock_offset_seconds", "gauge",
           "The peer's wall clock minus ours, estimated at the last hello (absent if unknown).",
           [](const auto& p) -> std::optional<double> {
             if (!p.clock_known) return std::nullopt;
             return p.clock_offset_ms / 1000.0;
           });
  per_peer("peerkv_peer_refused_records_total", "counter",
           "Records from the peer refused since start (invalid, or clock too far ahead).",
           [](const auto& p) -> std::optional<double> { return p.refused; });
  // Replication bytes by replica id (hex) and direction.
  std::map<std::vector<std::string>, uint64_t> peer_bytes;
  r.peer_bytes.ForEach([&](const std::vector<std::string>& values, const metrics::Counter& c) {
    peer_bytes[values] = c.value();
  });
  auto bytes_of = [&](const replication::PeerStatus& p, const char* direction) {
    auto it = peer_bytes.find({absl::StrFormat("%016x", p.replica_id), direction});
    return static_cast<double>(it == peer_bytes.end() ? 0 : it->second);
  };
  per_peer("peerkv_peer_received_bytes_total", "counter",
           "Bytes received from the peer on its links' connections since start (Cap'n Proto "
           "messages, inside TLS).",
           [&](const auto& p) -> std::optional<double> { return bytes_of(p, "in"); });
  per_peer("peerkv_peer_sent_bytes_total", "counter",
           "Bytes sent to the peer on its links' connections since start (Cap'n Proto "
           "messages, inside TLS).",
           [&](const auto& p) -> std::optional<double> { return bytes_of(p, "out"); });
  per_peer("peerkv_peer_links", "gauge", "Links open to the peer.",
           [](const auto& p) -> std::optional<double> { return p.links; });
  per_peer("peerkv_peer_dead_links_total", "counter",
           "Links to the peer found dead (unanswered) and closed since start.",
           [](const auto& p) -> std::optional<double> { return p.dead_links; });
  return out;
}

}  // namespace peerkv::http
