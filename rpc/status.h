// rpc/status.h: what a server's `status` answer reports, as plain values
// (no kj or capnp): the store's statistics as the server's store counts
// them, the server's own facts beside them, and the engine's view of each
// peer (replication::PeerStatus, the one peer status type). Adding a
// statistic: StoreStats (or here), the schema, and both directions in
// rpc/convert.cc.
#ifndef PEERKV_RPC_STATUS_H_
#define PEERKV_RPC_STATUS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "replication/status.h"
#include "store/types.h"

namespace peerkv::rpc {

using PeerStatus = replication::PeerStatus;

// The store's facts are the base (status.live_records, and a StoreStats&
// for code that prints any replica's facts). The wire carries replica_id,
// incarnation, live_records, tombstones, max_seq, disk_bytes, fingerprint,
// retired_ids, the quarantine_, clock_ and conflict_ fields of them; the
// others arrive as 0.
struct ServerStatus : StoreStats {
  std::string replica_name;
  std::string data_dir;
  uint64_t max_value_bytes = 0;
  uint64_t uptime_ms = 0;
  uint32_t connected_clients = 0;
  std::vector<PeerStatus> peers;
  // Peers not in `peers`: the server keeps its answer within its message
  // limit.
  uint32_t peers_omitted = 0;
  // Links refused since the server started because the peer claimed this
  // replica's id from another process (a cloned data directory), or a
  // known peer's id from a second one (ReplicatorCounters::clones_refused).
  uint64_t clones_refused = 0;
};

}  // namespace peerkv::rpc

#endif  // PEERKV_RPC_STATUS_H_
