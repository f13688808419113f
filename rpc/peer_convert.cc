// rpc/peer_convert.cc: the Replica interface's structs to and from the
// replication engine's types (see peer_convert.h).
#include "rpc/peer_convert.h"

#include "absl/strings/str_format.h"
#include "common/macros.h"
#include "replication/serve.h"
#include "rpc/batch_codec.h"
#include "rpc/convert.h"
#include "store/validation.h"

namespace peerkv::rpc {

void ToWire(const replication::PeerInfo& info, wire::PeerInfo::Builder out) {
  out.setReplicaId(info.replica_id);
  out.setIncarnation(info.incarnation);
  out.setProtocolVersion(info.protocol_version);
  out.setName(AsText(info.name));
  out.setBootNonce(info.boot_nonce);
  out.setHeldOf(info.held.replica_id);
  out.setHeldIncarnation(info.held.incarnation);
  out.setHeldSeq(info.held.seq);
  out.setHeldWatermark(info.held.watermark);
  out.setPhysicalTimeMs(info.physical_ms);
  out.setHeldNonce(info.held.nonce);
  auto retired = out.initRetired(static_cast<unsigned>(info.retired.size()));
  for (size_t i = 0; i < info.retired.size(); ++i) retired.set(i, info.retired[i]);
}

replication::PeerInfo FromWire(wire::PeerInfo::Reader info) {
  replication::PeerInfo out{info.getReplicaId(), info.getIncarnation(),
                            info.getProtocolVersion(), ToString(info.getName())};
  out.boot_nonce = info.getBootNonce();
  out.held = replication::HeldOf{info.getHeldOf(), info.getHeldIncarnation(), info.getHeldSeq(),
                                 info.getHeldWatermark(), info.getHeldNonce()};
  // More than the limit is refused by ValidatePeerInfo: keep one too many.
  for (uint64_t id : info.getRetired()) {
    if (out.retired.size() > replication::kMaxRetiredIdsInHello) break;
    out.retired.push_back(id);
  }
  out.physical_ms = info.getPhysicalTimeMs();
  return out;
}

void ToWire(const replication::PullRequest& pull, wire::Replica::PullParams::Builder out) {
  out.setRequester(pull.requester);
  out.setIncarnation(pull.incarnation);
  out.setAfterSeq(pull.after_seq);
  out.setAfterNonce(pull.after_nonce);
  out.setMergedSeq(pull.merged_seq);
  out.setMaxRecords(pull.max_records);
  out.setMaxBytes(pull.max_bytes);
  out.setMaxValueBytes(pull.max_value_bytes);
  out.setPhysicalTimeMs(pull.physical_ms);
}

replication::PullRequest FromWire(wire::Replica::PullParams::Reader pull) {
  replication::PullRequest request;
  request.requester = pull.getRequester();
  request.incarnation = pull.getIncarnation();
  request.after_seq = pull.getAfterSeq();
  request.after_nonce = pull.getAfterNonce();
  request.merged_seq = pull.getMergedSeq();
  request.max_records = pull.getMaxRecords();
  request.max_bytes = pull.getMaxBytes();
  request.max_value_bytes = pull.getMaxValueBytes();
  request.physical_ms = pull.getPhysicalTimeMs();
  return request;
}

void ToWire(const replication::PullResponse& response, wire::Replica::PullResults::Builder out) {
  out.setReplicaId(response.replica_id);
  out.setIncarnation(response.incarnation);
  out.setNonce(response.nonce);
  out.setFromSeq(response.from_seq);
  out.setLastSeq(response.last_seq);
  out.setMaxSeq(response.max_seq);
  out.setBatch(AsData(EncodeBatch(response.records)));
  if (response.store_fingerprint.has_value()) {
    out.setStoreSum(AsData(response.store_fingerprint->sum.ToBytes()));
    out.setStoreCount(response.store_fingerprint->count);
  }
}

absl::StatusOr<replication::PullResponse> FromWire(wire::Replica::PullResults::Reader response) {
  replication::PullResponse out;
  out.replica_id = response.getReplicaId();
  out.incarnation = response.getIncarnation();
  out.nonce = response.getNonce();
  out.from_seq = response.getFromSeq();
  out.last_seq = response.getLastSeq();
  out.max_seq = response.getMaxSeq();
  PEERKV_ASSIGN_OR_RETURN(out.records,
                          DecodeBatch(View(response.getBatch()), replication::kMaxPullRecords));
  if (response.hasStoreSum()) {
    rbsr::Fingerprint fp;
    PEERKV_RETURN_IF_ERROR(rbsr::Sum256::FromBytes(View(response.getStoreSum()), fp.sum));
    fp.count = response.getStoreCount();
    out.store_fingerprint = fp;
  }
  return out;
}

void ToWire(const replication::SnapshotRequest& request,
            wire::Replica::SnapshotParams::Builder out) {
  out.setRequester(request.requester);
  out.setIncarnation(request.incarnation);
  out.setPointSeq(request.point_seq);
  out.setAfterKeyspace(request.after_keyspace);
  out.setAfterKey(AsData(request.after_key));
  out.setMaxRecords(request.max_records);
  out.setMaxBytes(request.max_bytes);
  out.setMaxValueBytes(request.max_value_bytes);
}

absl::StatusOr<replication::SnapshotRequest> FromWire(
    wire::Replica::SnapshotParams::Reader request) {
  replication::SnapshotRequest out;
  out.requester = request.getRequester();
  out.incarnation = request.getIncarnation();
  out.point_seq = request.getPointSeq();
  if (request.getAfterKeyspace().size() > kMaxKeyspaceBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "snapshot afterKeyspace is %d bytes; the limit is %d", request.getAfterKeyspace().size(),
        kMaxKeyspaceBytes));
  }
  if (request.getAfterKey().size() > kMaxKeyBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "snapshot afterKey is %d bytes; the limit is %d", request.getAfterKey().size(),
        kMaxKeyBytes));
  }
  out.after_keyspace = std::string(request.getAfterKeyspace().cStr(),
                                   request.getAfterKeyspace().size());
  out.after_key = std::string(View(request.getAfterKey()));
  out.max_records = request.getMaxRecords();
  out.max_bytes = request.getMaxBytes();
  out.max_value_bytes = request.getMaxValueBytes();
  return out;
}

void ToWire(const replication::SnapshotResponse& response,
            wire::Replica::SnapshotResults::Builder out) {
  out.setReplicaId(response.replica_id);
  out.setIncarnation(response.incarnation);
  out.setNonce(response.nonce);
  out.setPointSeq(response.point_seq);
  ToWire(response.watermarks, out.initWatermarks(response.watermarks.size()));
  out.setBatch(AsData(EncodeBatch(response.records)));
  out.setCount(response.count);
  out.setDone(response.done);
}

absl::StatusOr<replication::SnapshotResponse> FromWire(
    wire::Replica::SnapshotResults::Reader response) {
  replication::SnapshotResponse out;
  out.replica_id = response.getReplicaId();
  out.incarnation = response.getIncarnation();
  out.nonce = response.getNonce();
  out.point_seq = response.getPointSeq();
  if (response.getWatermarks().size() > kMaxWatermarks) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "snapshot answer lists %d watermarks; the limit is %d", response.getWatermarks().size(),
        kMaxWatermarks));
  }
  out.watermarks = FromWire(response.getWatermarks());
  out.count = response.getCount();
  PEERKV_ASSIGN_OR_RETURN(out.records, DecodeBatch(View(response.getBatch()),
                                                   replication::kMaxSnapshotRecords, out.count));
  out.done = response.getDone();
  return out;
}

}  // namespace peerkv::rpc
