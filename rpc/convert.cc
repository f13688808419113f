// rpc/convert.cc: copies between schema structs and plain types (see
// convert.h).
#include "rpc/convert.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"
#include "common/macros.h"

namespace peerkv::rpc {

void ToWire(const absl::Status& status, wire::Error::Builder out) {
  out.setCode(static_cast<uint8_t>(status.code()));
  const std::string message(status.message());
  out.setMessage(AsText(message));
}

absl::Status FromWire(wire::Error::Reader error) {
  const int code = error.getCode();
  const std::string message = ToString(error.getMessage());
  if (code == 0) return absl::OkStatus();
  if (code > static_cast<int>(absl::StatusCode::kUnauthenticated)) {
    return absl::UnknownError(message);
  }
  return absl::Status(static_cast<absl::StatusCode>(code), message);
}

void ToWire(const Version& version, wire::Version::Builder out) {
  out.setHlc(version.hlc);
  out.setOrigin(version.origin);
}

Version FromWire(wire::Version::Reader version) {
  return Version{version.getHlc(), version.getOrigin()};
}

void ToWire(const Record& record, wire::Record::Builder out) {
  out.setKeyspace(AsText(record.keyspace));
  out.setKey(AsData(record.key));
  ToWire(record.version, out.initVersion());
  out.setDeleted(record.deleted);
  out.setValue(AsData(record.value));
  out.setSeq(record.seq);
  if (record.replaces.has_value()) ToWire(*record.replaces, out.initReplaces());
  if (!record.signature.empty()) out.setSignature(AsData(record.signature));
}

void ToWire(const RecordView& record, wire::Record::Builder out) {
  // initKeyspace allocates the NUL too: the view's bytes need none.
  auto keyspace = out.initKeyspace(record.keyspace.size());
  std::memcpy(keyspace.begin(), record.keyspace.data(), record.keyspace.size());
  out.setKey(AsData(record.key));
  ToWire(record.version, out.initVersion());
  out.setDeleted(record.deleted);
  out.setValue(AsData(record.value));
  out.setSeq(record.seq);
  if (!record.signature.empty()) out.setSignature(AsData(record.signature));
}

Record FromWire(wire::Record::Reader record) {
  Record out;
  out.keyspace = ToString(record.getKeyspace());
  out.key = ToString(record.getKey());
  out.version = FromWire(record.getVersion());
  out.deleted = record.getDeleted();
  out.value = ToString(record.getValue());
  out.seq = record.getSeq();
  if (record.hasReplaces()) out.replaces = FromWire(record.getReplaces());
  // Checked against kMaxSignatureBytes with the rest of a remote record
  // (ValidateRemoteRecord).
  if (record.hasSignature()) out.signature = ToString(record.getSignature());
  return out;
}

void ToWire(const Watermarks& watermarks, capnp::List<wire::Watermark>::Builder out) {
  size_t i = 0;
  for (const auto& [origin, hlc] : watermarks) {
    out[i].setOrigin(origin);
    out[i].setHlc(hlc);
    ++i;
  }
}

Watermarks FromWire(capnp::List<wire::Watermark>::Reader watermarks) {
  Watermarks out;
  for (auto w : watermarks) out.Raise(w.getOrigin(), w.getHlc());
  return out;
}

absl::StatusOr<const Watermarks*> Incoming(WatermarkChannel& channel, std::string_view what,
                                           capnp::List<wire::Watermark>::Reader delta) {
  return channel.Incoming(what, delta.size(), [delta] { return FromWire(delta); });
}

void ToWire(std::string_view keyspace, std::string_view key, std::optional<std::string_view> value,
            wire::Mutation::Builder out) {
  auto ks = out.initKeyspace(keyspace.size());
  std::memcpy(ks.begin(), keyspace.data(), keyspace.size());
  out.setKey(AsData(key));
  if (value.has_value()) {
    out.setPut(AsData(*value));
  } else {
    out.setDelete();
  }
}

void ToWire(const Mutation& mutation, wire::Mutation::Builder out) {
  std::optional<std::string_view> value;
  if (mutation.value.has_value()) value = *mutation.value;
  ToWire(mutation.keyspace, mutation.key, value, out);
}

Mutation FromWire(wire::Mutation::Reader mutation) {
  Mutation out{ToString(mutation.getKeyspace()), ToString(mutation.getKey()), std::nullopt};
  if (mutation.isPut()) out.value = ToString(mutation.getPut());
  return out;
}

Mutation FromWire(wire::Kv::PutParams::Reader put) {
  return Mutation{ToString(put.getKeyspace()), ToString(put.getKey()), ToString(put.getValue())};
}

Mutation FromWire(wire::Kv::DeleteParams::Reader del) {
  return Mutation{ToString(del.getKeyspace()), ToString(del.getKey()), std::nullopt};
}

void ToWire(std::string_view keyspace, std::string_view key, wire::KeyRef::Builder out) {
  auto ks = out.initKeyspace(keyspace.size());
  std::memcpy(ks.begin(), keyspace.data(), keyspace.size());
  out.setKey(AsData(key));
}

void ToWire(const ScanOptions& options, wire::Kv::ScanParams::Builder out) {
  out.setPrefix(AsData(options.prefix));
  out.setStartAfter(AsData(options.start_after));
  out.setLimit(static_cast<uint32_t>(options.limit));
  out.setIncludeTombstones(options.include_tombstones);
}

ScanOptions FromWire(wire::Kv::ScanParams::Reader scan) {
  ScanOptions options;
  options.prefix = ToString(scan.getPrefix());
  options.start_after = ToString(scan.getStartAfter());
  options.limit = scan.getLimit();
  options.include_tombstones = scan.getIncludeTombstones();
  return options;
}

absl::StatusOr<std::optional<Record>> FromWire(wire::GetResult::Reader result) {
  PEERKV_RETURN_IF_ERROR(ResponseStatus(result));
  if (!result.getFound()) return std::optional<Record>();
  return std::optional<Record>(FromWire(result.getRecord()));
}

absl::StatusOr<Version> FromWire(wire::WriteResult::Reader result) {
  PEERKV_RETURN_IF_ERROR(ResponseStatus(result));
  return FromWire(result.getVersion());
}

void ToWire(const PeerStatus& peer, wire::PeerStatus::Builder out) {
  out.setName(AsText(peer.name));
  out.setAddress(AsText(peer.address));
  out.setReplicaId(peer.replica_id);
  out.setInbound(peer.inbound);
  out.setReachable(peer.reachable);
  out.setLastExchangeMs(
      peer.last_exchange == absl::InfinitePast() ? 0 : absl::ToUnixMillis(peer.last_exchange));
  out.setCheckpointSeq(peer.checkpoint_seq);
  out.setBehind(peer.behind);
  out.setRefused(peer.refused);
  out.setLastError(AsText(peer.last_error));
  out.setLinks(peer.links);
  out.setSuspectLinks(peer.suspect_links);
  out.setDeadLinks(peer.dead_links);
  out.setClockKnown(peer.clock_known);
  out.setClockOffsetMs(peer.clock_offset_ms);
  out.setClockRttMs(peer.clock_rtt_ms);
  out.setReconciles(peer.reconciles);
  out.setLastReconcileMs(peer.last_reconcile == absl::InfinitePast()
                             ? 0
                             : absl::ToUnixMillis(peer.last_reconcile));
  out.setLastReconcile(AsText(peer.last_reconcile_result));
}

void ToWire(const replication::ReconcileReport& report, wire::ReconcileReport::Builder out) {
  out.setPeer(AsText(report.peer));
  out.setInSync(report.in_sync);
  out.setWasInSync(report.was_in_sync);
  out.setRounds(static_cast<uint32_t>(report.rounds));
  out.setPasses(static_cast<uint32_t>(report.passes));
  out.setBytesSent(report.bytes_sent);
  out.setBytesReceived(report.bytes_received);
  out.setTimeUs(static_cast<uint64_t>(absl::ToInt64Microseconds(report.time)));
  out.setWonHere(report.won_here);
  out.setRefusedHere(report.refused_here);
  out.setRefusedThere(report.refused_there);
  out.setConflicts(report.conflicts);
  out.setIncomplete(AsText(report.incomplete));
  auto keyspaces = out.initKeyspaces(static_cast<unsigned>(report.keyspaces.size()));
  for (size_t i = 0; i < report.keyspaces.size(); ++i) {
    keyspaces[i].setKeyspace(AsText(report.keyspaces[i].keyspace));
    keyspaces[i].setFetched(report.keyspaces[i].fetched);
    keyspaces[i].setPeerLacked(report.keyspaces[i].peer_lacked);
  }
}

replication::ReconcileReport FromWire(wire::ReconcileReport::Reader report) {
  replication::ReconcileReport out;
  out.peer = ToString(report.getPeer());
  out.in_sync = report.getInSync();
  out.was_in_sync = report.getWasInSync();
  out.rounds = static_cast<int>(report.getRounds());
  out.passes = static_cast<int>(report.getPasses());
  out.bytes_sent = report.getBytesSent();
  out.bytes_received = report.getBytesReceived();
  out.time = absl::Microseconds(report.getTimeUs());
  out.won_here = report.getWonHere();
  out.refused_here = report.getRefusedHere();
  out.refused_there = report.getRefusedThere();
  out.conflicts = report.getConflicts();
  out.incomplete = ToString(report.getIncomplete());
  for (auto k : report.getKeyspaces()) {
    out.keyspaces.push_back({ToString(k.getKeyspace()), k.getFetched(), k.getPeerLacked()});
  }
  return out;
}

PeerStatus FromWire(wire::PeerStatus::Reader peer) {
  PeerStatus out;
  out.name = ToString(peer.getName());
  out.address = ToString(peer.getAddress());
  out.replica_id = peer.getReplicaId();
  out.inbound = peer.getInbound();
  out.reachable = peer.getReachable();
  out.last_exchange = peer.getLastExchangeMs() == 0
                          ? absl::InfinitePast()
                          : absl::FromUnixMillis(peer.getLastExchangeMs());
  out.checkpoint_seq = peer.getCheckpointSeq();
  out.behind = peer.getBehind();
  out.refused = peer.getRefused();
  out.last_error = ToString(peer.getLastError());
  out.links = peer.getLinks();
  out.suspect_links = peer.getSuspectLinks();
  out.dead_links = peer.getDeadLinks();
  out.clock_known = peer.getClockKnown();
  out.clock_offset_ms = peer.getClockOffsetMs();
  out.clock_rtt_ms = peer.getClockRttMs();
  out.reconciles = peer.getReconciles();
  out.last_reconcile = peer.getLastReconcileMs() == 0
                           ? absl::InfinitePast()
                           : absl::FromUnixMillis(peer.getLastReconcileMs());
  out.last_reconcile_result = ToString(peer.getLastReconcile());
  return out;
}

void ToWire(const ServerStatus& status, wire::ServerStatus::Builder out) {
  out.setReplicaId(status.replica_id);
  out.setIncarnation(status.incarnation);
  out.setLiveRecords(status.live_records);
  out.setTombstones(status.tombstones);
  out.setMaxSeq(status.max_seq);
  out.setDiskBytes(status.disk_bytes);
  out.setFingerprint(status.fingerprint);
  out.setUptimeMs(status.uptime_ms);
  out.setConnectedClients(status.connected_clients);
  out.setReplicaName(AsText(status.replica_name));
  out.setDataDir(AsText(status.data_dir));
  out.setMaxValueBytes(status.max_value_bytes);
  out.setPeersOmitted(status.peers_omitted);
  out.setClockPeers(status.clock_peers);
  out.setClockOffsetMs(status.clock_offset_ms);
  out.setClockCorrectionMs(status.clock_correction_ms);
  out.setClonesRefused(status.clones_refused);
  out.setTombstonesCollected(status.tombstones_collected);
  out.setTombstonesHeld(status.tombstones_held);
  out.setTombstonesHeldBy(status.tombstones_held_by);
  out.setTombstonesHeldByCount(status.tombstones_held_by_count);
  out.setAcknowledgedPeers(status.acknowledged_peers);
  out.setForgottenPeers(status.forgotten_peers);
  out.setStaleRefused(status.stale_refused);
  out.setGateRefused(status.gate_refused);
  auto retired = out.initRetiredIds(status.retired_ids.size());
  for (size_t i = 0; i < status.retired_ids.size(); ++i) retired.set(i, status.retired_ids[i]);
  auto peers = out.initPeers(status.peers.size());
  for (size_t i = 0; i < status.peers.size(); ++i) ToWire(status.peers[i], peers[i]);
  out.setQuarantineRecords(status.quarantine_records);
  out.setQuarantineOrigins(status.quarantine_origins);
  out.setQuarantineDropped(status.quarantine_dropped);
  const size_t listed = std::min(status.quarantined.size(), kMaxQuarantineOriginsListed);
  auto quarantined = out.initQuarantined(listed);
  for (size_t i = 0; i < listed; ++i) {
    const QuarantinedOrigin& q = status.quarantined[i];
    quarantined[i].setOrigin(q.origin);
    quarantined[i].setRecords(q.records);
    quarantined[i].setFirstDueMs(q.first_due_ms);
    quarantined[i].setLastDueMs(q.last_due_ms);
  }
  out.setConflictEntries(status.conflict_entries);
  out.setConflictBytes(status.conflict_bytes);
  out.setConflictsDropped(status.conflicts_dropped);
  const size_t journals = std::min(status.conflict_keyspaces.size(), kMaxConflictKeyspacesListed);
  auto keyspaces = out.initConflictKeyspaces(journals);
  for (size_t i = 0; i < journals; ++i) {
    const ConflictKeyspaceStats& c = status.conflict_keyspaces[i];
    keyspaces[i].setKeyspace(AsText(c.keyspace));
    keyspaces[i].setEntries(c.entries);
    keyspaces[i].setBytes(c.bytes);
    keyspaces[i].setDropped(c.dropped);
  }
}

ServerStatus FromWire(wire::ServerStatus::Reader status) {
  ServerStatus out;
  out.replica_id = status.getReplicaId();
  out.incarnation = status.getIncarnation();
  out.live_records = status.getLiveRecords();
  out.tombstones = status.getTombstones();
  out.max_seq = status.getMaxSeq();
  out.disk_bytes = status.getDiskBytes();
  out.fingerprint = status.getFingerprint();
  out.uptime_ms = status.getUptimeMs();
  out.connected_clients = status.getConnectedClients();
  out.replica_name = ToString(status.getReplicaName());
  out.data_dir = ToString(status.getDataDir());
  out.max_value_bytes = status.getMaxValueBytes();
  out.peers_omitted = status.getPeersOmitted();
  out.clock_peers = status.getClockPeers();
  out.clock_offset_ms = status.getClockOffsetMs();
  out.clock_correction_ms = status.getClockCorrectionMs();
  out.clones_refused = status.getClonesRefused();
  out.tombstones_collected = status.getTombstonesCollected();
  out.tombstones_held = status.getTombstonesHeld();
  out.tombstones_held_by = status.getTombstonesHeldBy();
  out.tombstones_held_by_count = status.getTombstonesHeldByCount();
  out.acknowledged_peers = status.getAcknowledgedPeers();
  out.forgotten_peers = status.getForgottenPeers();
  out.stale_refused = status.getStaleRefused();
  out.gate_refused = status.getGateRefused();
  for (uint64_t id : status.getRetiredIds()) out.retired_ids.push_back(id);
  for (auto p : status.getPeers()) out.peers.push_back(FromWire(p));
  out.quarantine_records = status.getQuarantineRecords();
  out.quarantine_origins = status.getQuarantineOrigins();
  out.quarantine_dropped = status.getQuarantineDropped();
  // At most what a server lists: a peer's answer is outside input.
  for (auto q : status.getQuarantined()) {
    if (out.quarantined.size() == kMaxQuarantineOriginsListed) break;
    out.quarantined.push_back(
        QuarantinedOrigin{q.getOrigin(), q.getRecords(), q.getFirstDueMs(), q.getLastDueMs()});
  }
  out.conflict_entries = status.getConflictEntries();
  out.conflict_bytes = status.getConflictBytes();
  out.conflicts_dropped = status.getConflictsDropped();
  for (auto c : status.getConflictKeyspaces()) {
    if (out.conflict_keyspaces.size() == kMaxConflictKeyspacesListed) break;
    out.conflict_keyspaces.push_back(ConflictKeyspaceStats{
        ToString(c.getKeyspace()), c.getEntries(), c.getBytes(), c.getDropped()});
  }
  return out;
}

void ToWire(const ConflictEntry& entry, wire::ConflictEntry::Builder out) {
  out.setKey(AsData(entry.key));
  ToWire(entry.loser, out.initLoser());
  out.setLoserDeleted(entry.loser_deleted);
  out.setLoserValue(AsData(entry.loser_value));
  ToWire(entry.winner, out.initWinner());
  out.setWhenMs(entry.when_ms);
}

ConflictEntry FromWire(std::string_view keyspace, wire::ConflictEntry::Reader entry) {
  ConflictEntry out;
  out.keyspace = std::string(keyspace);
  out.key = ToString(entry.getKey());
  out.loser = FromWire(entry.getLoser());
  out.loser_deleted = entry.getLoserDeleted();
  out.loser_value = ToString(entry.getLoserValue());
  out.winner = FromWire(entry.getWinner());
  out.when_ms = entry.getWhenMs();
  return out;
}

absl::Status FromKjException(const kj::Exception& e, std::string_view context) {
  const std::string description = e.getDescription().cStr();
  const std::string message = absl::StrFormat("%s: %s", context, description);
  // A TLS refusal (rpc/tls.h's Refusal), maybe relayed as a remote one.
  constexpr std::string_view kRefused = "peerkv permission denied: ";
  if (const size_t at = description.find(kRefused); at != std::string::npos) {
    return absl::PermissionDeniedError(
        absl::StrFormat("%s: %s", context, description.substr(at + kRefused.size())));
  }
  switch (e.getType()) {
    case kj::Exception::Type::DISCONNECTED:
    case kj::Exception::Type::OVERLOADED:
      return absl::UnavailableError(message);
    case kj::Exception::Type::UNIMPLEMENTED:
      return absl::UnimplementedError(message);
    default:
      return absl::InternalError(message);
  }
}

}  // namespace peerkv::rpc
