// replication/snapshot.h: the requester's checks of a snapshot page
// (README "Snapshot bootstrap"): a page that does not continue the
// snapshot it was asked for is refused, and the engine starts the snapshot
// again from the first register.
#ifndef PEERKV_REPLICATION_SNAPSHOT_H_
#define PEERKV_REPLICATION_SNAPSHOT_H_

#include <cstdint>

#include "absl/status/status.h"
#include "replication/transport.h"

namespace peerkv::replication {

// OK if `response` answers `request` from replica `peer_id`: that replica
// (FailedPrecondition otherwise: the peer changed its id), the snapshot's
// incarnation and point when continuing one (FailedPrecondition: the peer
// changed incarnation mid-way), a known incarnation when starting one, as
// many records as it says it sent (DataLoss: truncated), at most
// request.max_records, each after the one before and the first after the
// requested register, in records-table order (InvalidArgument: reordered).
absl::Status ValidateSnapshotPage(uint64_t peer_id, const SnapshotRequest& request,
                                  const SnapshotResponse& response);

}  // namespace peerkv::replication

#endif  // PEERKV_REPLICATION_SNAPSHOT_H_
