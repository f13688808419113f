// replication/status.h: what the engine reports about each peer
// (Replicator::Statuses), as plain values: the server sends it in its
// status answer and the client library hands it back, so this header has
// no dependency beyond Abseil's time and links no engine.
#ifndef PEERKV_REPLICATION_STATUS_H_
#define PEERKV_REPLICATION_STATUS_H_

#include <cstdint>
#include <string>

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
};

}  // namespace peerkv::replication

#endif  // PEERKV_REPLICATION_STATUS_H_
