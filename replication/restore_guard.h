// replication/restore_guard.h: telling, from what a peer says it holds of
// this replica, that this replica's data directory was restored from an
// older copy (or lost its log tail), and telling a copy of this replica
// running elsewhere (a cloned directory) from a restart. Pure functions
// over a Store; the engine acts on them (Replicator::ForkAfterRestore) and
// the server and the simulation run them on what peers send.
//
// The evidence that a peer holds writes of ours that we lack (any one):
//  - its checkpoint of our log (same incarnation) is beyond our max seq;
//  - its watermark for our origin is beyond our own clock's committed mark;
//  - its watermark for our origin falls inside one of the clock gaps of our
//    lineage (store/lineage.h): a value our clock never took in the history
//    this directory holds, so it was taken in a life the directory lost.
// The third catches the common case the first two miss: a restored replica
// that wrote new records before it met a peer (its seq and clock moved past
// what the peer holds, but along another history).
#ifndef PEERKV_REPLICATION_RESTORE_GUARD_H_
#define PEERKV_REPLICATION_RESTORE_GUARD_H_

#include <cstdint>
#include <optional>
#include <string>

#include "replication/transport.h"
#include "store/store.h"

namespace peerkv::replication {

// What `store` holds of replica `peer_id`: its checkpoint of that log and
// its watermark for that origin (zeros where it holds nothing). The
// checkpoint is the furthest of the current one and the one a fork or a
// forgotten retired id dropped (Store::ForgottenCheckpoint).
HeldOf WhatWeHoldOf(const Store& store, uint64_t peer_id);

// Why `store` must have been restored, if `claim` (a peer's, about
// claim.replica_id) shows it holds writes of this replica that the store
// lacks; nullopt if the claim fits (or is about another replica id, an
// older one of ours included).
// Restored::since_seq is the seq at the open whose clock gap the claim
// fell in, else at the latest open (a restored replica restarted since is
// then re-stamped only from its latest open: documented in README).
std::optional<Restored> RestoreEvidence(const Store& store, const HeldOf& claim);

// Why `store` must have been restored, if `peer`'s hello lists this
// replica's current id among the ids retired by forks: only a process
// running this id forks away from it, and it never takes it again, so a
// data directory still on it is a copy from before that fork (restored
// from a backup, or a lost log tail). The peers forgot their watermarks
// and checkpoints of a retired id, so RestoreEvidence has no claim to go
// on. nullopt if the id is not listed.
std::optional<Restored> RetiredIdEvidence(const Store& store, const PeerInfo& peer);

// The claim a pull request makes about the server (`store`): the
// requester's checkpoint and its watermark for the server's origin.
HeldOf ClaimOfPull(const Store& store, const PullRequest& request);

// Why `peer` must be another process running a copy of this replica's data
// directory (it says it is this replica id, but was opened separately: its
// open nonce differs); nullopt if it is not (another id, or this very
// process, or a peer too old to send a nonce).
std::optional<std::string> CloneEvidence(const Store& store, const PeerInfo& peer);

}  // namespace peerkv::replication

#endif  // PEERKV_REPLICATION_RESTORE_GUARD_H_
