// replication/restore_guard.cc: restore and clone evidence (see
// restore_guard.h).
#include "replication/restore_guard.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_format.h"

namespace peerkv::replication {

HeldOf WhatWeHoldOf(const Store& store, uint64_t peer_id) {
  HeldOf held;
  held.replica_id = peer_id;
  if (peer_id == 0) return held;
  absl::StatusOr<std::optional<PeerCheckpoint>> checkpoint = store.GetCheckpoint(peer_id);
  std::optional<PeerCheckpoint> told;
  if (checkpoint.ok()) told = *checkpoint;
  // A checkpoint a fork or a forgotten retired id dropped (to pull the
  // peer from zero) still says how far this replica pulled its log: the
  // furthest of one incarnation is told (seed 8149 of the simulation: every
  // peer had just dropped theirs when a replica was restored, and its
  // clock then ran past the watermarks that were the only evidence left).
  if (std::optional<PeerCheckpoint> forgotten = store.ForgottenCheckpoint(peer_id)) {
    if (!told.has_value() ||
        (forgotten->incarnation == told->incarnation && forgotten->seq > told->seq)) {
      told = forgotten;
    }
  }
  if (told.has_value()) {
    held.incarnation = told->incarnation;
    held.seq = told->seq;
    held.nonce = told->nonce;
  }
  const Watermarks marks = store.GetWatermarks();
  auto it = marks.find(peer_id);
  if (it != marks.end()) held.watermark = it->second;
  return held;
}

namespace {
// The watermark checks of RestoreEvidence (see restore_guard.h).
std::optional<Restored> WatermarkEvidence(const Store& store, const Lineage& lineage,
                                          const HeldOf& claim, Restored restored);
}  // namespace

std::optional<Restored> RestoreEvidence(const Store& store, const HeldOf& claim) {
  const uint64_t self = store.replica_id();
  if (claim.replica_id != self) return std::nullopt;
  const Lineage lineage = store.GetLineage();
  Restored restored;
  restored.replica_id = self;
  // The latest open, unless a clock gap names the restored one (below):
  // not the latest gap, which an open whose clock mark was ahead of wall
  // time does not leave, so it may be an open of the copy's own history
  // before the copy was taken; re-stamping from there made the copy's
  // older writes, which peers hold and may have replaced, new writes
  // (seed 3807: from seq 0, the whole shared history).
  restored.since_seq = !lineage.opens.empty()  ? lineage.opens.back().seq
                       : !lineage.gaps.empty() ? lineage.gaps.back().seq
                                               : 0;
  restored.clock_floor = claim.watermark;
  if (claim.incarnation == store.incarnation() && claim.seq > store.max_seq()) {
    restored.why = absl::StrFormat(
        "the peer has pulled this replica's log up to seq %d, but the log ends at seq %d",
        claim.seq, store.max_seq());
    return restored;
  }
  if (std::optional<Restored> by_watermark = WatermarkEvidence(store, lineage, claim, restored)) {
    return by_watermark;
  }
  // Checked after the watermark, whose gap names the restored open more
  // precisely (Restored::since_seq).
  if (claim.incarnation == store.incarnation() && claim.seq > 0 && claim.nonce != 0) {
    // The checkpoint points into the log of one open of this directory:
    // one it has no record of (and has not forgotten), or beyond where
    // that open's log ended in this directory's history (where the next
    // open began), is a life the directory lost.
    const std::vector<OpenMark>& opens = lineage.opens;
    auto open = std::find_if(opens.begin(), opens.end(),
                             [&](const OpenMark& o) { return o.nonce == claim.nonce; });
    if (open == opens.end() && !lineage.opens_dropped) {
      restored.why = absl::StrFormat(
          "the peer has pulled this replica's log up to seq %d from an open of it (nonce "
          "%016x) this data directory has no record of: it was restored from an older copy",
          claim.seq, claim.nonce);
      return restored;
    }
    if (open != opens.end() && open + 1 != opens.end() && claim.seq > (open + 1)->seq) {
      restored.why = absl::StrFormat(
          "the peer has pulled this replica's log up to seq %d from an open of it (nonce "
          "%016x) whose log ended at seq %d in this data directory: it was restored from an "
          "older copy, or lost its log tail",
          claim.seq, claim.nonce, (open + 1)->seq);
      return restored;
    }
  }
  return std::nullopt;
}

namespace {
std::optional<Restored> WatermarkEvidence(const Store& store, const Lineage& lineage,
                                          const HeldOf& claim, Restored restored) {
  const uint64_t self = store.replica_id();
  if (claim.watermark == 0) return std::nullopt;
  const Watermarks marks = store.GetWatermarks();
  auto it = marks.find(self);
  const uint64_t mine = it == marks.end() ? 0 : it->second;
  if (claim.watermark > mine) {
    restored.why = absl::StrFormat(
        "the peer holds this replica's writes up to clock %d ms, beyond this replica's own "
        "clock (%d ms)",
        HlcMillis(claim.watermark), HlcMillis(mine));
    return restored;
  }
  for (const ClockGap& gap : lineage.gaps) {
    if (gap.Contains(claim.watermark)) {
      restored.since_seq = gap.seq;
      restored.why = absl::StrFormat(
          "the peer holds this replica's writes up to clock %d ms, a time this data "
          "directory has no writes from (its clock jumped from %d ms to %d ms when it was "
          "opened at seq %d): it was restored from an older copy",
          HlcMillis(claim.watermark), HlcMillis(gap.after), HlcMillis(gap.before), gap.seq);
      return restored;
    }
  }
  return std::nullopt;
}
}  // namespace

std::optional<Restored> RetiredIdEvidence(const Store& store, const PeerInfo& peer) {
  const uint64_t self = store.replica_id();
  if (std::find(peer.retired.begin(), peer.retired.end(), self) == peer.retired.end()) {
    return std::nullopt;
  }
  const Lineage lineage = store.GetLineage();
  Restored restored;
  restored.replica_id = self;
  // Which open the copy was restored at is not known: the writes since the
  // latest open are re-stamped (not since the latest clock gap: an open
  // with a clock mark ahead of wall time leaves no gap, and re-stamping
  // the copy's older writes, which peers hold already, would make them
  // new writes that beat later ones; a copy of a replica that forked since
  // re-stamped all its source's writes so, in the simulation).
  restored.since_seq = lineage.opens.empty() ? 0 : lineage.opens.back().seq;
  restored.why = absl::StrFormat(
      "the peer says this replica's id %s was retired by a fork, which this data directory "
      "has no record of: it was restored from a copy taken before the fork",
      ReplicaIdToString(self));
  return restored;
}

HeldOf ClaimOfPull(const Store& store, const PullRequest& request) {
  HeldOf claim;
  claim.replica_id = store.replica_id();
  claim.incarnation = request.incarnation;
  claim.seq = request.after_seq;
  claim.nonce = request.after_nonce;
  auto it = request.watermarks.find(claim.replica_id);
  if (it != request.watermarks.end()) claim.watermark = it->second;
  return claim;
}

std::optional<std::string> CloneEvidence(const Store& store, const PeerInfo& peer) {
  if (peer.replica_id != store.replica_id() || peer.boot_nonce == 0 ||
      peer.boot_nonce == store.open_nonce()) {
    return std::nullopt;
  }
  return absl::StrFormat(
      "replica %s (\"%s\") claims this replica's id %s from another process (open nonce "
      "%016x, ours %016x): its data directory is a copy of this one; two live replicas "
      "must not share an id (give the copy a fresh data directory)",
      ReplicaIdToString(peer.replica_id), peer.name, ReplicaIdToString(peer.replica_id),
      peer.boot_nonce, store.open_nonce());
}

}  // namespace peerkv::replication
