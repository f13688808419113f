// replication/serve.cc: answering pulls.
#include "replication/serve.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "common/macros.h"
#include "replication/reconcile.h"
#include "replication/restore_guard.h"

namespace peerkv::replication {

absl::StatusOr<SnapshotResponse> ServeSnapshot(const Store& store,
                                               const SnapshotRequest& request) {
  SnapshotResponse response;
  response.replica_id = store.replica_id();
  response.incarnation = store.incarnation();
  response.nonce = store.open_nonce();
  if (request.incarnation == 0) {
    // The watermarks first, then the point: everything they cover is held
    // by the point, and every page read later is at least that new.
    response.watermarks = store.ServedWatermarks();
    response.point_seq = store.max_seq();
  } else {
    if (request.incarnation != response.incarnation) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "snapshot of incarnation %s asked for; this replica's incarnation is now %s: start "
          "the snapshot again",
          ReplicaIdToString(request.incarnation), ReplicaIdToString(response.incarnation)));
    }
    if (request.point_seq > store.max_seq()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "snapshot point seq %d is beyond this replica's log (max seq %d): start the "
          "snapshot again",
          request.point_seq, store.max_seq()));
    }
    response.point_seq = request.point_seq;
  }
  const size_t max_records =
      std::clamp<size_t>(request.max_records, 1, kMaxSnapshotRecords);
  const size_t max_bytes = std::clamp<size_t>(request.max_bytes, 1, kMaxSnapshotBytes);
  PEERKV_ASSIGN_OR_RETURN(
      Store::SnapshotPage page,
      store.ReadSnapshot(request.after_keyspace, request.after_key, max_records, max_bytes,
                         request.max_value_bytes));
  response.records = std::move(page.records);
  response.count = response.records.size();
  response.done = page.done;
  return response;
}

absl::StatusOr<PullResponse> ServePull(const Store& store, const PullRequest& request,
                                       const KeyspaceFilter* readable,
                                       const ReservedRecordFilter* reserved) {
  PullResponse response;
  response.replica_id = store.replica_id();
  response.incarnation = store.incarnation();
  response.nonce = store.open_nonce();
  // A checkpoint into another life of this data directory means nothing;
  // nor does one beyond the end of the log (the directory was restored
  // from an older copy, or lost unsynced writes): start over.
  const bool usable =
      request.incarnation == store.incarnation() && request.after_seq <= store.max_seq();
  response.from_seq = usable ? request.after_seq : 0;
  const size_t limit = std::clamp<uint32_t>(request.max_records, 1, kMaxPullRecords);
  const size_t max_bytes = std::clamp<uint32_t>(request.max_bytes, 1, kMaxPullBytes);
  // Watermarks first, then the log: whatever they cover was committed
  // before the log is read, so it is in what the requester gets.
  if (readable == nullptr) {
    response.watermarks = store.ServedWatermarks();
    // What the requester holds: tombstone collection waits for it.
    store.NotePeerHolds(request.requester, request.watermarks, request.physical_ms);
  } else {
    // A friend's device: by how far it merged this log (nothing, if its
    // checkpoint is of another life of it: it starts over).
    store.NoteFriendHolds(request.requester, store.incarnation(),
                          usable ? std::min(request.merged_seq, request.after_seq) : 0);
  }
  ChangesFilter filter{.skip_source = request.requester,
                       .skip_origin = request.requester,
                       // Its own writes it lacks: restore evidence.
                       .send_uncovered_of = request.requester,
                       .max_value_bytes = request.max_value_bytes,
                       .covered = &request.watermarks};
  if (readable != nullptr) {
    if (reserved != nullptr) {
      filter.keyspace_allowed = [readable](std::string_view keyspace) {
        return IsReservedKeyspace(keyspace) || (*readable)(keyspace);
      };
    } else {
      filter.keyspace_allowed = *readable;
    }
  }
  PEERKV_ASSIGN_OR_RETURN(Changes changes,
                          store.ChangesSince(response.from_seq, limit, max_bytes, filter));
  if (readable != nullptr && reserved != nullptr) {
    // Reserved records one by one: only those the friend may read.
    std::erase_if(changes.records, [readable, reserved](const Record& record) {
      return IsReservedKeyspace(record.keyspace) && !(*readable)(record.keyspace) &&
             !(*reserved)(record.keyspace, record.key);
    });
  }
  response.records = std::move(changes.records);
  response.last_seq = changes.last_seq;
  response.max_seq = changes.max_seq;
  // Not while a snapshot bootstrap is half done: the fingerprints differ
  // until it ends, which is no reason to reconcile.
  if (response.last_seq == response.max_seq && !store.Bootstrap().has_value()) {
    if (readable == nullptr) {
      PEERKV_ASSIGN_OR_RETURN(response.store_fingerprint, StoreFingerprint(store));
    } else {
      PEERKV_ASSIGN_OR_RETURN(response.store_fingerprint, StoreFingerprint(store, *readable));
    }
  }
  return response;
}

absl::Status ValidatePeerInfo(const PeerInfo& info) {
  if (info.replica_id == 0 || info.incarnation == 0) {
    return absl::InvalidArgumentError("hello without a replica id and incarnation");
  }
  if (info.protocol_version != kProtocolVersion) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "peer speaks replication protocol %d; this replica speaks %d", info.protocol_version,
        kProtocolVersion));
  }
  if (info.name.size() > kMaxReplicaNameBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "replica name is %d bytes; the limit is %d", info.name.size(), kMaxReplicaNameBytes));
  }
  if (info.physical_ms < 0 || static_cast<uint64_t>(info.physical_ms) > kHlcMaxMillis) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "hello physicalTimeMs is %d; it must be 0 (not told) up to %d", info.physical_ms,
        kHlcMaxMillis));
  }
  if (info.retired.size() > kMaxRetiredIdsInHello) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "hello lists %d retired replica ids; the limit is %d", info.retired.size(),
        kMaxRetiredIdsInHello));
  }
  return absl::OkStatus();
}

absl::Status CheckPeer(const PeerInfo& info, uint64_t self) {
  if (info.replica_id != 0 && info.replica_id == self) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "the peer is this replica (replica id %s)", ReplicaIdToString(self)));
  }
  return ValidatePeerInfo(info);
}

PeerInfo LocalInfo(const Store& store, const std::string& name, uint64_t to) {
  PeerInfo info{store.replica_id(), store.incarnation(), kProtocolVersion, name};
  info.boot_nonce = store.open_nonce();
  info.physical_ms = store.wall_clock().NowMillis();
  if (to != 0 && to != info.replica_id) info.held = WhatWeHoldOf(store, to);
  // The most recent retirements, own ones first.
  const Lineage lineage = store.GetLineage();
  for (auto it = lineage.retired_ids.rbegin();
       it != lineage.retired_ids.rend() && info.retired.size() < kMaxRetiredIdsInHello; ++it) {
    info.retired.push_back(*it);
  }
  for (auto it = lineage.forgotten_ids.rbegin();
       it != lineage.forgotten_ids.rend() && info.retired.size() < kMaxRetiredIdsInHello; ++it) {
    info.retired.push_back(*it);
  }
  return info;
}

}  // namespace peerkv::replication
