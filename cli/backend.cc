// cli/backend.cc: what both backends share: the facts `info` and `status`
// print about a replica (see backend.h).
#include "cli/backend.h"

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/text.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"

namespace peerkv::cli {
namespace {

std::string UtcTime(int64_t unix_ms) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixMillis(unix_ms),
                          absl::UTCTimeZone());
}

// A JSON value for fact `name`: a number if it is a count (a decimal
// integer), else a string.
std::string FactValueJson(const std::string& name, const std::string& value) {
  // Ids are hex and names are text, even when they happen to be all digits.
  static const auto* kText = new std::set<std::string>{
      "server", "replica_name", "data_dir", "replica_id", "incarnation", "fingerprint",
      "forked_from"};
  const bool integer = kText->count(name) == 0 &&
      !value.empty() && value.size() <= 19 &&
      std::all_of(value.begin() + (value[0] == '-' ? 1 : 0), value.end(),
                  [](char c) { return absl::ascii_isdigit(static_cast<unsigned char>(c)); }) &&
      value != "-" && (value.size() == 1 || value[value[0] == '-' ? 1 : 0] != '0');
  if (integer) return value;
  return IsUtf8(value) ? JsonString(value) : JsonString(EscapeText(value));
}

}  // namespace

std::string FactsJsonMembers(const std::vector<std::pair<std::string, std::string>>& facts) {
  // Names in the order they first appear, each with all its values: a name
  // given once is a member, a repeated one an array.
  std::vector<std::string> order;
  std::map<std::string, std::vector<std::string>> values;
  for (const auto& [name, value] : facts) {
    std::vector<std::string>& of_name = values[name];
    if (of_name.empty()) order.push_back(name);
    of_name.push_back(FactValueJson(name, value));
  }
  std::vector<std::string> members;
  members.reserve(order.size());
  for (const std::string& name : order) {
    const std::vector<std::string>& of_name = values[name];
    members.push_back(of_name.size() == 1
                          ? absl::StrCat(JsonString(name), ":", of_name[0])
                          : absl::StrCat(JsonString(name), ":[", absl::StrJoin(of_name, ","), "]"));
  }
  return absl::StrJoin(members, ",");
}

std::vector<std::pair<std::string, std::string>> ReplicaFacts(const StoreStats& stats,
                                                              const std::string& data_dir,
                                                              const rpc::ServerStatus* server,
                                                              const std::string& address) {
  std::vector<std::pair<std::string, std::string>> facts;
  if (server != nullptr) {
    facts.push_back({"server", address});
    facts.push_back({"replica_name", server->replica_name});
  }
  facts.push_back({"data_dir", data_dir});
  facts.push_back({"replica_id", ReplicaIdToString(stats.replica_id)});
  facts.push_back({"incarnation", ReplicaIdToString(stats.incarnation)});
  facts.push_back({"live_records", absl::StrCat(stats.live_records)});
  facts.push_back({"tombstones", absl::StrCat(stats.tombstones)});
  facts.push_back({"max_seq", absl::StrCat(stats.max_seq)});
  if (server != nullptr) {
    facts.push_back({"fingerprint", ReplicaIdToString(stats.fingerprint)});
  } else {
    facts.push_back({"log_entries", absl::StrCat(stats.log_entries)});
  }
  facts.push_back({"disk_bytes", absl::StrCat(stats.disk_bytes)});
  if (server != nullptr) {
    facts.push_back({"uptime_ms", absl::StrCat(server->uptime_ms)});
    facts.push_back({"connected_clients", absl::StrCat(server->connected_clients)});
    facts.push_back({"max_value_bytes", absl::StrCat(server->max_value_bytes)});
  }
  // Durable: the forks of this data directory (restores it found), on
  // both backends.
  facts.push_back({"forks", absl::StrCat(stats.retired_ids.size())});
  if (server != nullptr) {
    facts.push_back({"clones_refused", absl::StrCat(server->clones_refused)});
  }
  if (!stats.retired_ids.empty()) {
    // Only after a fork (a restored data directory): the ids it had, oldest
    // first.
    std::string ids;
    for (uint64_t id : stats.retired_ids) {
      absl::StrAppend(&ids, ids.empty() ? "" : " ", ReplicaIdToString(id));
    }
    facts.push_back({"forked_from", ids});
  }
  if (stats.quarantine_records > 0) {
    // Records whose clock is too far ahead, held aside until local time
    // allows (README "Quarantine").
    facts.push_back({"quarantined", absl::StrFormat("%d record%s from %d origin%s",
                                                    stats.quarantine_records,
                                                    stats.quarantine_records == 1 ? "" : "s",
                                                    stats.quarantine_origins,
                                                    stats.quarantine_origins == 1 ? "" : "s")});
    for (const QuarantinedOrigin& q : stats.quarantined) {
      facts.push_back({"quarantined_from",
                       absl::StrFormat("%s %d record%s, mergeable from %s to %s",
                                       ReplicaIdToString(q.origin), q.records,
                                       q.records == 1 ? "" : "s", UtcTime(q.first_due_ms),
                                       UtcTime(q.last_due_ms))});
    }
  }
  if (stats.quarantine_dropped > 0) {
    facts.push_back({"quarantine_dropped", absl::StrCat(stats.quarantine_dropped)});
  }
  if (stats.gate_refused > 0) {
    // The merge gate (README "Signed records"): the server's log names them.
    facts.push_back({"signature_refused", absl::StrCat(stats.gate_refused)});
  }
  if (stats.tombstones_collected > 0 || stats.tombstones_held > 0 || stats.stale_refused > 0 ||
      stats.forgotten_peers > 0) {
    // Tombstone collection (README "Tombstone collection").
    facts.push_back({"tombstones_collected", absl::StrCat(stats.tombstones_collected)});
    facts.push_back(
        {"tombstones_held",
         stats.tombstones_held == 0
             ? "0"
             : absl::StrFormat("%d (%d by peer %s; `peerkv peer forget PEER` releases a peer "
                               "that is gone)",
                               stats.tombstones_held, stats.tombstones_held_by_count,
                               stats.tombstones_held_by == 0
                                   ? "(none: this replica's own watermarks)"
                                   : ReplicaIdToString(stats.tombstones_held_by))});
    facts.push_back({"peers_acknowledging", absl::StrFormat("%d (forgotten %d)",
                                                            stats.acknowledged_peers,
                                                            stats.forgotten_peers)});
    facts.push_back({"stale_refused", absl::StrCat(stats.stale_refused)});
  }
  // The conflict journal (README "Conflict journal"): always shown, so a
  // script can read it; per keyspace only where something is held.
  facts.push_back({"conflicts", absl::StrFormat("%d entr%s, %d bytes, %d dropped",
                                                stats.conflict_entries,
                                                stats.conflict_entries == 1 ? "y" : "ies",
                                                stats.conflict_bytes, stats.conflicts_dropped)});
  for (const ConflictKeyspaceStats& k : stats.conflict_keyspaces) {
    facts.push_back({"conflicts_in", absl::StrFormat("%s %d entr%s, %d bytes, %d dropped",
                                                     k.keyspace, k.entries,
                                                     k.entries == 1 ? "y" : "ies", k.bytes,
                                                     k.dropped)});
  }
  if (stats.clock_peers > 0) {
    // This clock against real time as the peers' clocks tell (README
    // "Clock skew").
    facts.push_back({"clock_offset",
                     absl::StrFormat("%+dms (from %d peers)%s", stats.clock_offset_ms,
                                     stats.clock_peers,
                                     stats.clock_correction_ms == 0
                                         ? ""
                                         : absl::StrFormat("; writes stamped %+dms",
                                                           stats.clock_correction_ms))});
  }
  return facts;
}

}  // namespace peerkv::cli
