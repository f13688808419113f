// replication/snapshot.cc: checks of a snapshot page.
#include "replication/snapshot.h"

#include <tuple>

#include "absl/strings/str_format.h"

namespace peerkv::replication {

absl::Status ValidateSnapshotPage(uint64_t peer_id, const SnapshotRequest& request,
                                  const SnapshotResponse& response) {
  if (response.replica_id != peer_id) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "snapshot page: expected replica %s, answered by %s", ReplicaIdToString(peer_id),
        ReplicaIdToString(response.replica_id)));
  }
  if (response.incarnation == 0) {
    return absl::InvalidArgumentError("snapshot page: incarnation is 0");
  }
  if (request.incarnation != 0 && (response.incarnation != request.incarnation ||
                                   response.point_seq != request.point_seq)) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "snapshot page: the snapshot of incarnation %s at seq %d was asked for, incarnation "
        "%s at seq %d answered (the peer changed incarnation mid-way)",
        ReplicaIdToString(request.incarnation), request.point_seq,
        ReplicaIdToString(response.incarnation), response.point_seq));
  }
  if (response.count != response.records.size()) {
    return absl::DataLossError(absl::StrFormat(
        "snapshot page: the peer sent %d records, %d arrived (truncated)", response.count,
        response.records.size()));
  }
  if (response.records.size() > request.max_records) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "snapshot page holds %d records; at most %d were asked for", response.records.size(),
        request.max_records));
  }
  const std::string* prev_keyspace = request.after_keyspace.empty() ? nullptr
                                                                    : &request.after_keyspace;
  const std::string* prev_key = &request.after_key;
  for (size_t i = 0; i < response.records.size(); ++i) {
    const Record& r = response.records[i];
    if (prev_keyspace != nullptr &&
        !(std::tie(*prev_keyspace, *prev_key) < std::tie(r.keyspace, r.key))) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "snapshot page: record %d (keyspace '%s') is not after the one before it in key "
          "order (reordered)",
          i, r.keyspace.substr(0, 64)));
    }
    prev_keyspace = &r.keyspace;
    prev_key = &r.key;
  }
  return absl::OkStatus();
}

}  // namespace peerkv::replication
