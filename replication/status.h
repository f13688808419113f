// replication/status.h: what the engine reports about each peer
// (Replicator::Statuses), as plain values: the server sends it in its
// status answer and the client library hands it back, so this header has
// no dependency beyond Abseil's time and links no engine.
#ifndef PEERKV_REPLICATION_STATUS_H_
#define PEERKV_REPLICATION_STATUS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace peerkv::replication {

// What `peerkv status` shows about one peer.
struct PeerStatus {
  std::string name;
  // Empty for a peer that dialled us.
  std::string address;
  uint64_t replica_id = 0;
  bool inbound = false;
  bool reachable = false;
  // When the last pull from it succeeded; InfinitePast if never.
  absl::Time last_exchange = absl::InfinitePast();
  // Our checkpoint in its log, and how far its log went beyond it when it
  // last answered.
  uint64_t checkpoint_seq = 0;
  uint64_t behind = 0;
  // Records from it refused since this replica started, each counted once:
  // invalid ones, and those whose clock was too far ahead (put in
  // quarantine, or dropped because the quarantine was full).
  uint64_t refused = 0;
  // Why the last attempt failed, if it did.
  std::string last_error;
  // Links to it now, and how many of them are suspect (a pull or nudge on
  // them went unanswered: they are used only when no other link is left).
  uint32_t links = 0;
  uint32_t suspect_links = 0;
  // Links to it found dead (no answer within a deadline: a half-open
  // connection) and closed, since this replica started.
  uint64_t dead_links = 0;
  // Its clock offset (its wall clock minus ours) as estimated at the last
  // hello, if it told its time, and the round trip that bounds the error
  // (twice it, at most); -1: it dialled us, and the estimate is short by
  // the one-way delay (store/clock.h).
  bool clock_known = false;
  int64_t clock_offset_ms = 0;
  int64_t clock_rtt_ms = -1;
  // Reconcile sessions with it since this replica started (see
  // replication/reconcile.h), when the last one ended (InfinitePast if
  // never) and what it found ("in sync", or per keyspace what differed).
  uint64_t reconciles = 0;
  absl::Time last_reconcile = absl::InfinitePast();
  std::string last_reconcile_result;
};

// What a session found, per keyspace.
struct KeyspaceDiff {
  std::string keyspace;
  // Records newer on the peer (or that we lacked), merged here.
  uint64_t fetched = 0;
  // Records the peer lacked or held older, pushed to it.
  uint64_t peer_lacked = 0;
};

struct ReconcileReport {
  // The peer, as status names it.
  std::string peer;
  // Equal roots at the end: the two replicas held the same registers.
  bool in_sync = false;
  // The first compare found them equal (nothing differed).
  bool was_in_sync = false;
  int rounds = 0;
  int passes = 0;
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  uint64_t nodes_expanded = 0;
  // Records merged here that beat what we held, and that Merge refused (a
  // clock too far ahead...).
  uint64_t won_here = 0;
  uint64_t refused_here = 0;
  // Pushed records the peer refused.
  uint64_t refused_there = 0;
  // Equal versions with different contents (clones): LWW cannot choose.
  uint64_t conflicts = 0;
  std::vector<KeyspaceDiff> keyspaces;  // by name, those that differed
  absl::Duration time = absl::ZeroDuration();
  // Why the session stopped early (round or time limit), if it did.
  std::string incomplete;
};

// One line for logs and status: "in sync", or per keyspace what differed.
inline std::string ReconcileSummary(const ReconcileReport& report) {
  if (report.was_in_sync) return "in sync";
  std::string out;
  for (const KeyspaceDiff& d : report.keyspaces) {
    if (!out.empty()) out += "; ";
    out += d.keyspace + ": fetched " + std::to_string(d.fetched) + ", peer lacked " +
           std::to_string(d.peer_lacked);
  }
  if (out.empty()) out = "roots differed, no record did";
  if (report.conflicts > 0) out += "; " + std::to_string(report.conflicts) + " conflicts";
  if (report.in_sync) {
    out += "; now in sync";
  } else if (!report.incomplete.empty()) {
    out += "; incomplete: " + report.incomplete;
  }
  return out;
}

}  // namespace peerkv::replication

#endif  // PEERKV_REPLICATION_STATUS_H_
