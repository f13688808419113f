// store/types.h: the plain value types of the store's interface (records
// as views, checkpoints, watermarks, merge results, change-log pages, scan
// options, statistics) and its bounds. Copyable values with no LMDB in them:
// the client library, the replication engine and the wire include this, not
// store.h.
#ifndef PEERKV_STORE_TYPES_H_
#define PEERKV_STORE_TYPES_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "store/version.h"
#include "store/watermarks.h"

namespace peerkv {

// A record as it lies in the store's memory map: see Store::GetView.
struct RecordView {
  std::string_view keyspace;
  std::string_view key;
  Version version;
  bool deleted = false;
  std::string_view value;
  uint64_t seq = 0;
  // Record::signature (empty: unsigned).
  std::string_view signature;
};

// How far this replica has pulled the change log of one peer.
struct PeerCheckpoint {
  // The peer's incarnation the seq belongs to.
  uint64_t incarnation = 0;
  // Every change of the peer up to and including this seq is merged.
  uint64_t seq = 0;
  // The peer's open nonce (Store::open_nonce) when it served that seq: the
  // life of its log the checkpoint points into. 0: not known (an older
  // peer or store).
  uint64_t nonce = 0;

  friend bool operator==(const PeerCheckpoint&, const PeerCheckpoint&) = default;
};

// A checkpoint advance that Merge commits together with its batch. Also
// names the source of the batch's changes (see ChangesFilter).
struct CheckpointUpdate {
  uint64_t peer_id = 0;
  PeerCheckpoint checkpoint;
  // Coverage this replica may claim once the batch is merged (the peer's
  // own watermarks, when the batch brought us level with the peer's log);
  // merged into the store's with max, in the same transaction.
  Watermarks watermarks;
};

// A snapshot bootstrap in progress (Store::LoadSnapshotPage), kept
// durably in meta "bootstrap" with every page it loads: while it is there
// the replica holds only part of the peer's records, so it has claimed no
// checkpoint of that peer and none of its watermarks. Cleared in the
// transaction that loads the last page and claims both.
struct BootstrapMarker {
  // The peer the snapshot is read from, its incarnation and open nonce.
  uint64_t peer_id = 0;
  uint64_t incarnation = 0;
  uint64_t nonce = 0;
  // The peer's max seq when the snapshot began: every register it sends is
  // at least as new as at that seq; deltas continue from there.
  uint64_t point_seq = 0;
  // The peer's watermarks, read before point_seq: claimed once complete.
  Watermarks watermarks;
  // Pages are in records-table order; the last register loaded (empty
  // keyspace: none yet).
  std::string after_keyspace;
  std::string after_key;
  // Registers loaded so far (for status and logs).
  uint64_t records = 0;

  friend bool operator==(const BootstrapMarker&, const BootstrapMarker&) = default;
};

// A remote record that Merge did not accept, and why (InvalidArgument for a
// malformed record, OutOfRange for a clock too far ahead).
// Who sent a batch of remote records, for the merge gate
// (StoreOptions::record_gate): a device of this store's user, or a
// friend's device (whose records must all be signed). kOwnWriteFromFriend
// is no batch's: the gate is asked (Store::CheckRecordGate) whether a
// record of this replica's own id that a friend's device sent, and that
// this replica lacks, was signed by a device of this store's own user, so
// that the friend's page may count as evidence that this replica was
// restored (a friend cannot forge that signature; replication/
// replicator.cc, OwnWritesWeLack).
enum class MergeSource { kOwnDevice, kFriend, kOwnWriteFromFriend };

// Signs a local write (StoreOptions::signer): the Record::signature to
// store with it, or empty.
using RecordSigner = std::function<std::string(std::string_view keyspace, std::string_view key,
                                               const Version& version, bool deleted,
                                               std::string_view value)>;

struct RefusedRecord {
  std::string keyspace;
  std::string key;
  Version version;
  absl::Status reason;
};

struct MergeResult {
  // Records whose version beat the stored one (or that were new).
  size_t won = 0;
  // Records refused; the rest of the batch merged regardless. A record
  // dropped because the quarantine is full is here (ResourceExhausted).
  std::vector<RefusedRecord> refused;
  // Records whose clock is too far ahead, newly put in quarantine (not
  // merged; retried once local time allows: see Store::RetryQuarantined).
  std::vector<RefusedRecord> quarantined;
  // Too far ahead too, but already in quarantine (a record pulled again).
  size_t already_quarantined = 0;
  // Old tombstones dropped without an answer: their key holds nothing here
  // and a tombstone that covers them was collected (the stale rule, README
  // "Tombstone collection"). Not refusals: nothing is counted against the
  // sender. A friend's device never collects this user's tombstones, so a
  // reconcile with it remembers these (replication::RefusedMemory).
  std::vector<RefusedRecord> stale_tombstones;
};

// A page of the change log.
struct Changes {
  // Current records changed after the requested seq, in seq order; entries
  // superseded by a later change to the same key are skipped.
  std::vector<Record> records;
  // Resume point: pass it as `after_seq` to get the next page. Equals
  // max_seq when the log has been read to its end.
  uint64_t last_seq = 0;
  // The greatest seq committed when the page was read.
  uint64_t max_seq = 0;
};

// Changes a peer does not need, left out of ChangesSince. Both rules are
// sound because a replica never loses its own acknowledged writes while it
// keeps its id (a recreated data directory gets a new id).
struct ChangesFilter {
  // Skip changes merged from this replica (it has them, or newer): without
  // it every change would travel back to where it came from. 0: none.
  uint64_t skip_source = 0;
  // Skip changes written by this replica. 0: none.
  uint64_t skip_origin = 0;
  // Except (when set, and `covered` is given): changes written by this
  // replica that `covered` does not cover are never skipped by the two
  // rules above. The requester's watermarks cover its own committed clock,
  // so such a change is a write of its own that it lacks: its data
  // directory was restored (or lost its log tail), and the change is the
  // evidence it needs to fork (replication/restore_guard.h). 0: none.
  uint64_t send_uncovered_of = 0;
  // Skip values longer than this (a peer with a lower limit would refuse
  // them). 0: no limit.
  uint64_t max_value_bytes = 0;
  // Skip records whose version is covered by the peer's watermarks (it has
  // them, or newer). Borrowed for the call; null: none.
  const Watermarks* covered = nullptr;
  // Only records of this keyspace (empty: every keyspace) whose key starts
  // with `key_prefix`: what a watch reads. Entries of other keyspaces cost
  // no record look-up. Borrowed for the call.
  std::string_view keyspace;
  std::string_view key_prefix;
  // Only records of these keyspaces (borrowed for the call; null: no such
  // restriction), and, if `keyspace_allowed` is set, of keyspaces it
  // accepts (asked once per keyspace that has changes, outside the call's
  // read transaction, so it may read the store: a friend's pull, README
  // "Filtered replication"). Any of
  // `keyspace`, `keyspaces` and `keyspace_allowed` makes ChangesSince read
  // the per-keyspace change index: its work is proportional to the
  // changes of those keyspaces (and the number of keyspaces), not to the
  // log.
  const std::vector<std::string>* keyspaces = nullptr;
  std::function<bool(std::string_view keyspace)> keyspace_allowed;
};

// One change a commit made: the log seq it took and the register it set
// (what Store::AddCommitListener's listeners learn). Views into the
// committed writes, valid only during the listener call.
struct CommitChange {
  uint64_t seq = 0;
  std::string_view keyspace;
  std::string_view key;
};

struct ScanOptions {
  // Only keys that start with these bytes.
  std::string prefix;
  // Only keys strictly greater than this (the last key of the previous
  // page); empty starts at the beginning.
  std::string start_after;
  // At most this many records per page: 1..kMaxScanLimit.
  size_t limit = 1000;
  // Also return tombstones (deleted keys).
  bool include_tombstones = false;
  // About this many bytes of records per page (always at least one).
  size_t max_bytes = size_t{16} << 20;
};

inline constexpr size_t kMaxScanLimit = 100'000;
inline constexpr size_t kMaxPageBytes = size_t{16} << 20;
// Bounds of one Write or Merge call.
inline constexpr size_t kMaxBatchRecords = 10'000;
inline constexpr size_t kMaxBatchBytes = size_t{64} << 20;
// Bytes a record counts for beyond its keyspace, key and value (its
// version, seq and framing) when the store sizes batches, pages and its
// write queue.
inline constexpr size_t kRecordOverheadBytes = 32;

struct ScanResult {
  std::vector<Record> records;
  // More matching keys may follow: continue with start_after set to the
  // last returned key.
  bool more = false;
};

// Records of one origin in quarantine (see Store::RetryQuarantined).
struct QuarantinedOrigin {
  uint64_t origin = 0;
  uint64_t records = 0;
  // When the first and the last of them become mergeable by local time
  // (Unix millis): the hlc's time minus max_clock_skew.
  int64_t first_due_ms = 0;
  int64_t last_due_ms = 0;
};

inline constexpr size_t kMaxQuarantineOriginsListed = 32;

// A value that lost to a concurrent write (README "Conflict journal"): the
// loser's version and value (or tombstone), the version that beat it, and
// when this replica found the conflict.
struct ConflictEntry {
  std::string keyspace;
  std::string key;
  Version loser;
  bool loser_deleted = false;
  std::string loser_value;
  Version winner;
  // Unix millis (this replica's estimated real time) when it was journaled.
  int64_t when_ms = 0;

  friend bool operator==(const ConflictEntry&, const ConflictEntry&) = default;
};

// Store::ListConflicts' answer, oldest entry first.
struct ConflictList {
  std::vector<ConflictEntry> entries;
  // More entries matched than fit in the answer (about kMaxPageBytes).
  bool more = false;
};

// One keyspace's journal (StoreStats::conflict_keyspaces).
struct ConflictKeyspaceStats {
  std::string keyspace;
  uint64_t entries = 0;
  uint64_t bytes = 0;
  // Entries dropped (oldest first) to stay within the bounds, since open.
  uint64_t dropped = 0;
};
inline constexpr size_t kMaxConflictKeyspacesListed = 32;

struct StoreStats {
  uint64_t replica_id = 0;
  uint64_t incarnation = 0;
  uint64_t live_records = 0;
  uint64_t tombstones = 0;
  uint64_t max_seq = 0;
  // Change-log entries, superseded ones not yet compacted included.
  uint64_t log_entries = 0;
  // Size of the data file on disk, and of the memory map.
  uint64_t disk_bytes = 0;
  uint64_t map_bytes = 0;
  // Durable write transactions since open: with group commit, fewer than
  // the writes that were acknowledged.
  uint64_t commits = 0;
  // The low 64 bits of the sum of every register's item hash (SHA-256 of
  // keyspace, key, version, tombstone flag and value; see
  // store/range_fingerprint.h), i.e. of the keyspaces' root sums: two
  // replicas with the same registers have the same fingerprint, whatever
  // order they were written in. O(1) to read.
  uint64_t fingerprint = 0;
  // Replica ids this data directory had before it forked (it was restored
  // from an older copy, see README "Restore and clone safety"), oldest
  // first; empty for a directory that never forked.
  std::vector<uint64_t> retired_ids;
  // Records in quarantine (a clock too far ahead), and how many origins
  // they are from; per origin, the kMaxQuarantineOriginsListed with the
  // earliest due first. And records dropped from it since open (the
  // quarantine was full, or an entry on disk did not decode).
  uint64_t quarantine_records = 0;
  uint64_t quarantine_origins = 0;
  std::vector<QuarantinedOrigin> quarantined;
  uint64_t quarantine_dropped = 0;
  // This replica's clock as its peers' clocks tell (see README "Clock
  // skew"): how many peers, and its wall clock minus estimated real time
  // (positive: ahead); the correction its writes are stamped with (0 or
  // negative). All 0 when no peer told its time.
  uint32_t clock_peers = 0;
  int64_t clock_offset_ms = 0;
  int64_t clock_correction_ms = 0;
  // Tombstone collection (README "Tombstone collection"): tombstones
  // dropped since open; tombstones old enough that the last full pass kept
  // because a peer's (or this replica's own) watermarks do not cover them,
  // and the peer that held back most of them with its count (0: none, or
  // this replica's own watermarks); peers waited for (friends' devices
  // included) and forgotten; live
  // records refused as stale since open (their tombstone was collected).
  uint64_t tombstones_collected = 0;
  uint64_t tombstones_held = 0;
  uint64_t tombstones_held_by = 0;
  uint64_t tombstones_held_by_count = 0;
  uint64_t acknowledged_peers = 0;
  uint64_t forgotten_peers = 0;
  uint64_t stale_refused = 0;
  // Remote records the merge gate refused since open (StoreOptions::
  // record_gate: unsigned, forged or altered records, or signed by a user
  // who may not write the keyspace).
  uint64_t gate_refused = 0;
  // The conflict journal: entries and bytes held in every keyspace, entries
  // dropped over the bounds since open; per keyspace, the
  // kMaxConflictKeyspacesListed with the most entries.
  uint64_t conflict_entries = 0;
  uint64_t conflict_bytes = 0;
  uint64_t conflicts_dropped = 0;
  std::vector<ConflictKeyspaceStats> conflict_keyspaces;
};

// What Store::Compact did (`peerkv compact`, README "Tombstone
// collection"): tombstones its pass collected, log entries and table
// entries its repack compacted and rewrote, and LMDB pages in use (used
// minus free) before and after.
struct CompactResult {
  uint64_t tombstones_collected = 0;
  uint64_t log_entries_compacted = 0;
  uint64_t entries_copied = 0;
  uint64_t pages_before = 0;
  uint64_t pages_after = 0;
};

}  // namespace peerkv

#endif  // PEERKV_STORE_TYPES_H_
