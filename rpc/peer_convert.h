// rpc/peer_convert.h: conversions between the Replica interface's wire
// structs and the replication engine's types (PeerInfo, PullRequest,
// PullResponse), used by both ends of a link (peer_links.cc dials and
// pulls, replica_service.cc answers). Apart from convert.h because these
// need //replication, which the client library must not link. The
// watermarks travel as per-connection deltas: callers set and read them
// through their link's WatermarkChannel (see convert.h's Incoming).
// Internal to rpc/.
#ifndef PEERKV_RPC_PEER_CONVERT_H_
#define PEERKV_RPC_PEER_CONVERT_H_

#include "absl/status/statusor.h"
#include "replication/transport.h"
#include "rpc/peerkv.capnp.h"

namespace peerkv::rpc {

void ToWire(const replication::PeerInfo& info, wire::PeerInfo::Builder out);
replication::PeerInfo FromWire(wire::PeerInfo::Reader info);

// Everything of a pull request but its watermarks.
void ToWire(const replication::PullRequest& pull, wire::Replica::PullParams::Builder out);
replication::PullRequest FromWire(wire::Replica::PullParams::Reader pull);

// Everything of a pull's answer but its watermarks; the records in the
// batch codec's form. Decoding refuses a batch that does not parse or holds
// more than replication::kMaxPullRecords records.
void ToWire(const replication::PullResponse& response, wire::Replica::PullResults::Builder out);
absl::StatusOr<replication::PullResponse> FromWire(wire::Replica::PullResults::Reader response);

// A snapshot page request and its answer (watermarks included: a snapshot
// tells them whole, not as deltas). Decoding refuses a batch that does not
// parse or holds more than replication::kMaxSnapshotRecords records, and
// more than kMaxWatermarks watermarks, naming the field and the limit.
void ToWire(const replication::SnapshotRequest& request,
            wire::Replica::SnapshotParams::Builder out);
absl::StatusOr<replication::SnapshotRequest> FromWire(
    wire::Replica::SnapshotParams::Reader request);
void ToWire(const replication::SnapshotResponse& response,
            wire::Replica::SnapshotResults::Builder out);
absl::StatusOr<replication::SnapshotResponse> FromWire(
    wire::Replica::SnapshotResults::Reader response);

}  // namespace peerkv::rpc

#endif  // PEERKV_RPC_PEER_CONVERT_H_
