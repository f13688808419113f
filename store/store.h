// store/store.h: the durable replica state. Maps (keyspace, key) to a
// last-writer-wins register kept in LMDB; Merge() keeps the greater Version,
// so replicas that see the same records in any order converge. Every change
// takes the next local sequence number and is appended to a change log, the
// spine that replication and watches read. Thread-safe: readers never wait
// for writers, and writes from many threads share one durable transaction
// (group commit). Knows nothing of the network.
#ifndef PEERKV_STORE_STORE_H_
#define PEERKV_STORE_STORE_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "store/clock.h"
#include "store/lineage.h"
#include "store/quarantine.h"
#include "store/range_fingerprint.h"
#include "store/validation.h"
#include "store/types.h"
#include "store/version.h"

// LMDB's handle types, declared as lmdb.h declares them, so that this
// header (and everything that includes it) does not include lmdb.h.
typedef struct MDB_env MDB_env;
typedef struct MDB_txn MDB_txn;
typedef unsigned int MDB_dbi;

namespace peerkv {

class DataDir;
namespace tables {
struct Dbis;
}  // namespace tables
namespace writer {
struct WriteRequest;
struct LocalWrite;
struct RemoteBatch;
struct RestampBatch;
struct Compaction;
struct RangeRepair;
class GroupTxn;
}  // namespace writer
namespace ranges {
class Deltas;
}  // namespace ranges
namespace conflicts {
class Index;
}  // namespace conflicts

// Which keyspaces a friend's device may read now (replication's
// KeyspaceFilter for its link: auth::Access::MayRead of its user).
// Thread-safe; Store::NoteFriend.
using FriendReads = std::shared_ptr<const std::function<bool(std::string_view keyspace)>>;

// Store::MergeWith's options.
struct MergeOptions {
  // false: acknowledged once committed and visible to reads, without
  // waiting for the fsync of the meta page that makes the commit durable
  // (the commit's group is written with MDB_NOMETASYNC unless another
  // request in it waits: one fdatasync instead of two). A crash of the
  // machine (not of the process) may then lose this commit and every
  // later unsynced one, never an earlier synced one, and never corrupts
  // the store: for records that can be fetched again (a consensus log's
  // committed writes). The next synced commit makes it durable too.
  bool wait_for_sync = true;
  // Written to the store's meta under "ext." + first, in the merge's
  // own transaction (so it is lost or kept together with the records);
  // committed even when no record wins. Read with GetExtMeta.
  std::optional<std::pair<std::string, std::string>> ext_meta;
};

struct StoreOptions {
  // Directory of the LMDB environment; created (with parents) if missing.
  std::string dir;
  // Largest value accepted from local writes and from peers; at most
  // kMaxValueBytes (4 MiB).
  size_t max_value_bytes = kMaxValueBytes;
  // A remote version further than this ahead of local physical time is
  // refused by Merge.
  int64_t max_clock_skew_ms = 60'000;
  // Records too far ahead are kept in quarantine, up to this many records
  // and bytes (keys and values); a record that does not fit is dropped
  // (counted in StoreStats::quarantine_dropped, listed as refused).
  size_t max_quarantine_records = 10'000;
  size_t max_quarantine_bytes = size_t{64} << 20;
  // Physical time source; nullptr means SystemWallClock(). Borrowed: must
  // outlive the store.
  const WallClock* wall_clock = nullptr;
  // Initial size of the LMDB memory map. The map doubles by itself when
  // full, up to max_map_bytes; the file on disk only holds what is used.
  size_t initial_map_bytes = size_t{64} << 20;
  size_t max_map_bytes = size_t{1} << 40;
  // false skips fsync at commit (MDB_NOSYNC): a crash of the machine may
  // lose acknowledged writes. For simulations and tests only.
  bool sync = true;
  // Bounds of one group commit: requests are taken from the queue until
  // either is reached.
  size_t max_group_records = 8192;
  size_t max_group_bytes = size_t{64} << 20;
  // Bytes of writes that may wait for the writer; beyond it WriteAsync and
  // MergeAsync fail with Unavailable and the blocking calls wait.
  size_t max_queued_bytes = size_t{256} << 20;
  // The log is compacted once superseded entries exceed both this and the
  // number of records.
  size_t compaction_min_garbage = 4096;
  // Seeds replica id and incarnation when the store is created, so a
  // simulation can be replayed exactly. nullopt: operating-system entropy.
  std::optional<uint64_t> id_seed;
  // The public key of this data directory's device (auth/, the TLS key;
  // at most kMaxReplicaIdKeyBytes). Non-empty: every replica id this store
  // takes is minted from it (store/replica_id.h: DeriveReplicaId of the
  // key and the incarnation), when the store is created and at each Fork,
  // so a peer checks a hello's claim without state. A store whose id was
  // not minted from it (made by an older peerkv, or without a key, or a
  // directory moved to a new device key) takes a minted one at Open: in
  // place if its log is empty (no write was ever made under the old id),
  // else by a Fork (no re-stamp), so the old id is retired and its writes
  // stay with their versions; logged, and in
  // open_rederived(). Empty: random ids (no identities).
  std::string replica_id_key;
  // Check the stored range fingerprints against the records once, in the
  // background, after opening, and repair them where they differ (see
  // ScrubRangeFingerprints): a store whose files were changed behind its
  // back (records deleted with LMDB tools, a partial restore) then does not
  // hide the change from reconciliation. Open itself does not wait for it.
  bool scrub_at_open = true;
  // Memory one range view (OpenRangeView) may hold for the registers it
  // lists; a keyspace larger than that is refused with ResourceExhausted.
  size_t max_range_view_bytes = size_t{256} << 20;
  // Where the store's few log lines go (a failed compaction step, held
  // checkpoints that could not be saved at close, a lost local write just
  // before the process stops, range fingerprints repaired by the open
  // scrub), each a whole line without its newline. Called on the writer
  // thread, on the open scrub's thread or in ~Store; must not call into the
  // store. Empty: each line is written to stderr.
  std::function<void(const std::string&)> log;
  // Decides whether a record of a reserved keyspace ("peerkv.*", see
  // validation.h) may be stored: called for every such record a peer sends
  // (Merge, before the skew check) and for every WriteReserved mutation
  // (`deleted` with an empty value for a tombstone). auth/ provides it (a
  // record signed by this store's user). Empty: reserved records from peers
  // are refused and WriteReserved writes unchecked. Called on any thread;
  // must not call into the store.
  std::function<absl::Status(std::string_view keyspace, std::string_view key,
                             std::string_view value, bool deleted)>
      reserved_check;

  // Asked about every valid remote record before Merge admits it (on the
  // calling thread; must not call into the store): a non-OK status refuses
  // the record (listed in MergeResult::refused with that status). The
  // strong-keyspace barrier (consensus/strong_keyspaces.h). Empty: none.
  std::function<absl::Status(const Record&)> merge_filter;

  // Signs local writes (README "Signed records"): called on the writer
  // thread for every local write once its version is assigned, before it
  // is logged; returns the Record::signature to store with it, empty for
  // none (auth/record_signature.h's MakeRecordSigner signs keyspaces whose
  // Access::RequiresSignature). Must not call into the store. Empty: no
  // local write is signed.
  RecordSigner signer;

  // The merge gate (README "Signed records"): asked about every valid
  // remote record after merge_filter, with who sent the batch (the link's
  // peer: one of this user's devices, or a friend's); a non-OK status
  // refuses the record (listed in MergeResult::refused, counted in
  // StoreStats::gate_refused). Called on the merging thread (and by
  // CheckRecordGate on its caller's: it must be thread-safe, as
  // MakeRecordGate's is); must not call into the store.
  // auth/record_signature.h's MakeRecordGate. Empty: none.
  std::function<absl::Status(const Record&, MergeSource from)> record_gate;

  // Tombstone collection (README "Tombstone collection"; store/tombstones.cc).
  // A tombstone is dropped once it is at least this old (by this replica's
  // clock and by each peer's clock reading with its acknowledgement), this
  // replica's watermarks cover it and so do the acknowledged watermarks of
  // every peer it met (NotePeerHolds; a friend's device: its checkpoint
  // into this log, NoteFriendHolds) and did not forget (ForgetPeer).
  // Default 7 days; at least 0.
  int64_t tombstone_min_age_ms = int64_t{7} * 24 * 3600 * 1000;
  // A background thread runs a full collection pass this often, in
  // transactions that examine at most kTombstoneStepRecords records each;
  // zero: only when CollectTombstones is called (the simulation).
  absl::Duration tombstone_collect_interval = absl::Minutes(1);
  // The conflict journal (README "Conflict journal"): a merged record that
  // overwrites a version its writer had not seen (its causal mark,
  // Record::replaces, is older), or that loses to a stored version whose
  // writer had not seen it, leaves the loser in a per-keyspace journal,
  // bounded by entries and bytes (keys and values) per keyspace; beyond
  // either the oldest entries are dropped (StoreStats::conflicts_dropped),
  // and writes never wait for it. false: no detection, no journal.
  bool journal_conflicts = true;
  // 1..kMaxConflictEntriesBound and 1..kMaxConflictBytesBound.
  size_t max_conflict_entries = 1000;
  size_t max_conflict_bytes = size_t{16} << 20;
};
inline constexpr size_t kMaxConflictEntriesBound = 1'000'000;
inline constexpr size_t kMaxConflictBytesBound = size_t{1} << 30;

class Store {
 public:
  // Opens or creates the store in `options.dir`. Errors: InvalidArgument
  // for bad options; FailedPrecondition if the directory is open in this
  // process, locked by another process, not a directory, or written by a
  // newer peerkv; PermissionDenied if it cannot be written; DataLoss if the
  // files are not a peerkv store.
  static absl::StatusOr<std::unique_ptr<Store>> Open(StoreOptions options);

  // Finishes every queued write, persists held checkpoints, and closes.
  // REQUIRES: no other call in progress.
  ~Store();

  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Random ids made when the store was created: who this replica is, and
  // which life of its data directory this is.
  // Both change only in Fork().
  uint64_t replica_id() const { return replica_id_.load(); }
  uint64_t incarnation() const { return incarnation_.load(); }

  // What this store remembers of its own history (see store/lineage.h).
  Lineage GetLineage() const;
  // Random, drawn each time the store is opened: two processes that claim
  // one replica id tell each other apart by it (a copied data directory).
  uint64_t open_nonce() const { return open_nonce_; }

  struct ForkResult {
    uint64_t old_id = 0;
    uint64_t new_id = 0;
    uint64_t new_incarnation = 0;
    // Registers re-stamped as writes of the new id (see Fork).
    uint64_t restamped = 0;
    // The re-stamp's outcome. The fork itself (new id, durable) is done
    // even if this is an error; `restamped` then counts the registers
    // re-stamped before it failed.
    absl::Status restamp_status;
  };
  // The Fork Open made because the stored replica id was not minted from
  // StoreOptions::replica_id_key (see there); nullopt if it made none.
  const std::optional<ForkResult>& open_rederived() const { return open_rederived_; }
  // This data directory was restored from an older copy (a peer holds
  // writes of this replica id that it lacks): becomes a new replica, with a
  // new random id (never one it used before) and incarnation, durably. Its
  // records keep their versions (the old id is now a foreign origin it
  // holds); its watermarks are dropped (for the old id: it must not claim
  // the writes it lost, so peers send them back; for the others: they were
  // adopted after pulls that left out what came from the old id), and so
  // are its checkpoints of every peer (advanced by those pulls). The
  // switch runs on the writer thread between groups: writes queued before
  // Fork is called commit under the old id, every later one is stamped
  // with the new id. Defined in store_fork.cc.
  // An error only if nothing changed; once the new id is durable, a failed
  // re-stamp is reported in ForkResult::restamp_status.
  // Merges the caller submits after calling it were pulled as the old id:
  // the caller drops them (Replicator::Fork abandons its pulls).
  //
  // Writes of the old id logged after `restamp_after_seq` (made since the
  // restored copy was opened) are written again as new writes of the new
  // id: their old versions may be covered by peers' watermarks for the old
  // id (the lost life's clock may have run ahead of the copy's), so they
  // could otherwise never reach those peers. UINT64_MAX: none. A
  // re-stamped write beats concurrent writes of other replicas made before
  // the fork (a fresh version); that is the price of not losing it.
  //
  // `fresh_clock`: the fork's reason is this replica's clock, not a restore:
  // its persisted clock mark is far ahead of real time (as its peers tell,
  // see SetClockEstimate), so every write would still be stamped that far
  // ahead even after the wall clock was fixed. The new id starts its clock
  // afresh at the stamping time (new versions of a new id: no peer's
  // watermark covers them), and the old id's writes committed during the
  // fork are re-stamped. Its dropped watermarks were honest (nothing was
  // lost), so what they claimed is kept as stale evidence for collected
  // tombstones (fork_marks_, see StaleRuleFor). A restore fork keeps, of
  // all that, only its old id up to the clock floor the id's second open
  // found (FirstOpen in store/lineage.h): the restored copy's open or one
  // before it, so every write of the lost life (and of the restored one)
  // is above it, and every write of the old id at or below it was held. Records keep their versions; a later local write
  // of a key whose stored version is ahead of the fresh clock is stamped
  // just above that version (see ApplyLocalWrite), so it still wins.
  //
  // Records of a reserved keyspace (policies, groups: signed by user keys)
  // are never re-stamped: they keep their signed version, so a removal
  // signed since in the lost life still wins over them. Other signed
  // records are re-stamped and signed anew by `StoreOptions::signer`
  // (without a signer they keep their version).
  //
  // `clock_floor` (restore forks): the highest version of the old id that
  // a peer holds (Restored::clock_floor). The clock observes it first
  // (within the clock bound, CheckSkew), so the re-stamps are stamped
  // above every write of the lost life, and above any tombstone a peer
  // collected under them.
  absl::StatusOr<ForkResult> Fork(uint64_t restamp_after_seq = UINT64_MAX,
                                  bool fresh_clock = false, uint64_t clock_floor = 0);
  // A peer said that these replica ids were retired by forks (their data
  // directories were restored from older copies). Any watermark held for
  // them may claim writes of a life this replica never saw (it adopted the
  // claim from the restored life before the fork), and the writes it
  // skipped because of it lie behind its checkpoints: the watermarks are
  // dropped and never kept or claimed again (Distrusts), and so are the
  // checkpoints of every peer, so they are pulled from zero once. Ids
  // already known, and this replica's own id, are ignored. Returns whether
  // anything changed. Runs on the writer thread between groups, as Fork's
  // switch does. Defined in store_fork.cc.
  absl::StatusOr<bool> ForgetRetiredIds(const std::vector<uint64_t>& ids);
  // The checkpoint of `peer_id` that the last fork or ForgetRetiredIds
  // dropped (to pull that peer from zero), if any: what this replica once
  // pulled of that peer's log, still evidence in a hello that the peer was
  // restored or lost its log tail (replication/restore_guard.h's
  // WhatWeHoldOf). At most kMaxForgottenCheckpoints peers are kept.
  std::optional<PeerCheckpoint> ForgottenCheckpoint(uint64_t peer_id) const;
  static constexpr size_t kMaxForgottenCheckpoints = 1024;
  // True if no watermark is kept or claimed for `origin`: a peer's id it
  // forgot (above), or one this replica retired by a fork.
  bool Distrusts(uint64_t origin) const;
  // Writes each record's mutation again as a new local write (a fresh
  // version of this replica) if its key still holds `expected`, decided in
  // the writer's transaction; a key written since is left alone. Returns
  // how many were written. Fork's re-stamp (store_fork.cc). Limits as for
  // Write().
  absl::StatusOr<uint64_t> RestampIfUnchanged(std::vector<RestampRecord> records);
  const StoreOptions& options() const { return options_; }
  // OK if `hlc` is at most options().max_clock_skew_ms ahead of this
  // replica's physical time; otherwise OutOfRange saying by how much. The
  // clock itself is the writer's: only it stamps and observes versions.
  absl::Status CheckSkew(uint64_t hlc) const;

  // What the peers' clocks say about this one (the engine's
  // PeerClockOffsets): the skew check measures from estimated real time,
  // and a clock ahead by more than max_clock_skew / 2 stamps from the
  // corrected time (HybridClock::SetEstimate). `apply` false
  // (--clock-correction=false): only kept for Stats. Any thread.
  void SetClockEstimate(const ClockEstimate& estimate, bool apply);
  // The clock's high-water mark (persisted at each commit) and estimated
  // real time (ms; the wall clock when nothing is known).
  uint64_t clock_mark() const { return clock_->Last(); }
  int64_t RealNowMillis() const { return clock_->RealNowMillis(); }
  // This replica's wall clock, uncorrected (what hello tells peers).
  const WallClock& wall_clock() const { return clock_->wall(); }

  // Writes `value` under (keyspace, key); returns the assigned version once
  // the write is durable.
  absl::StatusOr<Version> Put(std::string_view keyspace, std::string_view key,
                              std::string_view value);
  // Writes a tombstone; deleting a missing key is not an error.
  absl::StatusOr<Version> Delete(std::string_view keyspace,
                                 std::string_view key);
  // Applies all mutations atomically, in order; returns their versions.
  // At most kMaxBatchRecords mutations and kMaxBatchBytes bytes.
  absl::StatusOr<std::vector<Version>> Write(std::vector<Mutation> mutations);
  // Like Write, but returns at once; `done` runs on the store's writer
  // thread once the batch is durable (or failed) and must not block.
  using WriteCallback =
      absl::AnyInvocable<void(absl::StatusOr<std::vector<Version>>)>;
  void WriteAsync(std::vector<Mutation> mutations, WriteCallback done);
  // Put, Delete, Write and WriteAsync refuse reserved keyspaces
  // (InvalidArgument); this writes mutations that are all in reserved
  // keyspaces, checked by options().reserved_check. For auth/ only.
  absl::StatusOr<std::vector<Version>> WriteReserved(std::vector<Mutation> mutations);

  // Merges remote records: for each key the greater version stays. Invalid
  // records are refused (listed in the result); records whose clock is more
  // than max_clock_skew ahead (CheckSkew) are put in quarantine in the same
  // transaction (MergeResult::quarantined), not merged, and no watermark
  // this store claims covers them while they are there; the rest merge. The winners and the
  // checkpoint advance commit in one transaction; a batch that wins nothing
  // writes nothing (its checkpoint is held in memory and written with the
  // next commit, which is safe: a checkpoint that lags only re-pulls).
  // `from`: who sent the records (StoreOptions::record_gate).
  absl::StatusOr<MergeResult> Merge(
      std::vector<Record> batch,
      std::optional<CheckpointUpdate> checkpoint = std::nullopt,
      MergeSource from = MergeSource::kOwnDevice);
  // What the merge gate (options().record_gate) says of `record` from
  // `from`, without merging it (the engine asks it with MergeSource::
  // kOwnWriteFromFriend before a friend's page counts as restore
  // evidence). No gate installed: OK, but PermissionDenied for
  // kOwnWriteFromFriend (nothing can vouch for such a record). Calls the
  // gate on this thread; counts nothing in StoreStats::gate_refused.
  absl::Status CheckRecordGate(const Record& record, MergeSource from) const;
  using MergeCallback = absl::AnyInvocable<void(absl::StatusOr<MergeResult>)>;
  // Merge with `options` (the consensus layer's; no checkpoint).
  using MergeOptions = ::peerkv::MergeOptions;
  absl::StatusOr<MergeResult> MergeWith(std::vector<Record> batch, MergeOptions options);
  // A value written by MergeOptions::ext_meta (nullopt: never written).
  absl::StatusOr<std::optional<std::string>> GetExtMeta(std::string_view name) const;
  // Merges (and commits) that did not wait for their fsync, since open.
  uint64_t unsynced_commits() const { return unsynced_commits_.load(); }
  // The LMDB environment's flags (mdb_env_get_flags): set at open and never
  // changed, as reads on other threads use them.
  unsigned environment_flags() const;
  void MergeAsync(std::vector<Record> batch,
                  std::optional<CheckpointUpdate> checkpoint,
                  MergeCallback done, MergeSource from = MergeSource::kOwnDevice);

  // How long until the earliest quarantined record becomes mergeable by
  // local time (zero if it is now); nullopt if the quarantine is empty.
  // A hint for scheduling RetryQuarantined: CheckSkew decides.
  std::optional<absl::Duration> NextQuarantineRetry() const;
  // Merges the quarantined records that CheckSkew now admits (at most one
  // batch's worth; earliest first), through the normal merge (they may
  // lose), and removes them from quarantine in the same transaction.
  absl::StatusOr<MergeResult> RetryQuarantined();
  // Whether the quarantine holds this version of the register: it is not
  // merged here, but not lost either (the simulation's fold asks).
  bool InQuarantine(std::string_view keyspace, std::string_view key,
                    const Version& version) const;

  // The register's record (value or tombstone) or nullopt if never written.
  absl::StatusOr<std::optional<Record>> Get(std::string_view keyspace,
                                            std::string_view key) const;

  // Get without copies: calls `fn` with the record (nullptr if never
  // written) while its bytes are still those in the map. The view dies when
  // `fn` returns; `fn` must not call into the store.
  absl::Status GetView(std::string_view keyspace, std::string_view key,
                       absl::FunctionRef<void(const RecordView*)> fn) const;

  // Records of one keyspace in key order; see ScanOptions. A page holds at
  // most options.limit records and about options.max_bytes of them.
  absl::StatusOr<ScanResult> Scan(std::string_view keyspace,
                                  const ScanOptions& options) const;

  // The change log after `after_seq`: at most `limit` records and about
  // `max_bytes` of them (always at least one record if any is due), minus
  // those `filter` leaves out (which still advance last_seq).
  absl::StatusOr<Changes> ChangesSince(uint64_t after_seq, size_t limit,
                                       size_t max_bytes = kMaxPageBytes,
                                       const ChangesFilter& filter = {}) const;

  // How far this replica has merged `peer_id`'s log; nullopt if never.
  absl::StatusOr<std::optional<PeerCheckpoint>> GetCheckpoint(
      uint64_t peer_id) const;

  absl::StatusOr<StoreStats> Stats() const;

  // The greatest committed local seq.
  uint64_t max_seq() const { return max_seq_.load(); }
  // See StoreStats::fingerprint.
  uint64_t fingerprint() const { return fingerprint_.load(); }

  // This replica's watermarks: those merged from peers, and its own id at
  // its clock's mark as of its last commit (it holds all its own committed
  // writes). Read them before reading the log when answering a peer.
  Watermarks GetWatermarks() const;
  // GetWatermarks, plus what this replica holds of each replica id retired
  // by a fork (Distrusts): its own retired ids up to their final clock mark
  // (kept by a fresh-clock fork, fork_marks_) or, retired by a restore
  // fork, up to the floor their second open found (what every copy of the
  // directory held of them, see Fork), others' up to what it held
  // of them when it learnt of the retirement or was told since
  // (RaiseRetiredMarks). Served with pulls and snapshots to this user's
  // devices: a requester level with this log holds every write of those
  // ids up to there, so a copy of one arriving later from a directory
  // restored from before the fork is stale once the key's newer tombstone
  // is collected (sim seeds 456, 1193; README "Tombstone collection").
  Watermarks ServedWatermarks() const;
  // Claims for retired ids (Distrusts) a peer's level pull carried: kept as
  // stale evidence (with what the ids were forgotten with), never as
  // watermarks. Merge calls it once the batch committed.
  void RaiseRetiredMarks(const Watermarks& marks);

  // A 64-bit digest of every record (tombstones included) in key order:
  // two replicas with equal digests hold the same registers.
  absl::StatusOr<uint64_t> Digest() const;

  // Snapshot bootstrap (store_snapshot.cc; README "Snapshot bootstrap").
  // A page of every register (tombstones included) in records-table order
  // (keyspace, then key), with values, after (after_keyspace, after_key);
  // an empty after_keyspace starts at the first. At most max_records
  // (1..kMaxSnapshotRecords) and about max_bytes (always one if any is
  // left); values longer than max_value_bytes (0: no limit) are left out.
  // One read transaction per page: a register changed after an earlier
  // page was read is sent as it is now (never older than it was).
  struct SnapshotPage {
    std::vector<Record> records;
    // No register follows the last one sent.
    bool done = false;
  };
  absl::StatusOr<SnapshotPage> ReadSnapshot(std::string_view after_keyspace,
                                            std::string_view after_key, size_t max_records,
                                            size_t max_bytes, uint64_t max_value_bytes) const;
  static constexpr size_t kMaxSnapshotRecords = 65'536;
  // Loads a snapshot page: merged by the normal rule (validation, skew
  // bound and quarantine, LWW) in one transaction, its records tree
  // appended to (MDB_APPEND) while the keys come after every stored one,
  // together with `progress` (written as the durable bootstrap marker) or,
  // for the last page, `complete` (the marker is cleared and the peer's
  // checkpoint and watermarks claimed). Records must be in records-table
  // order (InvalidArgument otherwise); at most kMaxSnapshotRecords and
  // kMaxBatchBytes. A page in progress is committed as a merge with
  // MergeOptions::wait_for_sync false (a machine crash may take it back,
  // with its marker); the last page waits for its fsync.
  absl::StatusOr<MergeResult> LoadSnapshotPage(std::vector<Record> records,
                                               std::optional<BootstrapMarker> progress,
                                               std::optional<CheckpointUpdate> complete,
                                               MergeSource from = MergeSource::kOwnDevice);
  // The bootstrap in progress, if any (as of the last commit).
  std::optional<BootstrapMarker> Bootstrap() const;

  // Range-based reconciliation (store/range_fingerprint.h; defined in
  // store_rbsr.cc). The store keeps, inside every write transaction, each
  // keyspace's root and its 256 depth-2 nodes (store/range_table.h), and
  // the roots in memory. The upkeep: one SHA-256 of each changed register
  // (about 0.25 us for 100 bytes; an overwrite also hashes the old one),
  // aggregated per commit, then one read-modify-write of a 40-byte entry
  // per touched node (at most 257 per keyspace per commit); see
  // bench/README.md for what it costs a merge.
  //
  // Every keyspace that holds a register, with its root fingerprint, in
  // name order: a copy of the in-memory roots, O(number of keyspaces).
  absl::StatusOr<std::vector<std::pair<std::string, rbsr::Fingerprint>>>
  KeyspaceFingerprints() const;
  // A view of one keyspace (an unknown keyspace is an empty view); see
  // rbsr::RangeView. Opening reads the keyspace's stored nodes (257 entries
  // under one read transaction); fingerprints at depth 0..2 are then sums
  // of at most 256 of them. The first fingerprint below depth 2, or the
  // first ForEachItem at any depth, scans the keyspace once: every record
  // and its value (from the log), one SHA-256 each, about 100 bytes of
  // memory per register plus its key; ResourceExhausted beyond
  // options().max_range_view_bytes. After that each call is a binary
  // search. InvalidArgument for an invalid keyspace name. The view must not
  // outlive the store.
  absl::StatusOr<std::unique_ptr<rbsr::RangeView>> OpenRangeView(
      std::string_view keyspace) const;
  // Recomputes the range fingerprints (and the 64-bit fingerprint) from the
  // records, under one read transaction (O(records): every value read and
  // hashed; writes go on meanwhile), and repairs the stored ones where they
  // differ, through the writer. Returns the keyspaces that differed, in
  // name order (empty: all was right). Runs by itself once after each open
  // (StoreOptions::scrub_at_open).
  absl::StatusOr<std::vector<std::string>> ScrubRangeFingerprints();
  // Waits for the scrub that Open started (at once if none) and returns
  // its outcome: the keyspaces it repaired, or its error.
  absl::StatusOr<std::vector<std::string>> WaitForOpenScrub() const;

  // One change a commit made (see types.h).
  using CommitChange = ::peerkv::CommitChange;
  // What a commit listener learns about a commit.
  struct CommitInfo {
    uint64_t max_seq = 0;
    // The commit holds local writes (not only merged changes).
    bool local = false;
    // Every change of the commit, in seq order. The views are valid only
    // during the listener call.
    const std::vector<CommitChange>* changes = nullptr;
  };
  // Called on the writer thread after every commit that changed records,
  // before the writes in it are acknowledged. Must be quick and must not
  // call back into the store's write path synchronously. Returns an id for
  // RemoveCommitListener.
  using CommitListener = std::function<void(const CommitInfo&)>;
  int AddCommitListener(CommitListener listener);
  // After it returns, the listener is not running and will not run again.
  void RemoveCommitListener(int id);

  // The conflict journal (store_conflicts.cc; README "Conflict journal").
  // Entries of `keyspace` (of `key` alone if given), oldest first, about
  // kMaxPageBytes at most (ConflictList::more says some were left out).
  // InvalidArgument for an invalid keyspace or key.
  absl::StatusOr<ConflictList> ListConflicts(std::string_view keyspace,
                                             std::optional<std::string_view> key = {}) const;
  // Writes the journaled loser `version` of the key back as a new local
  // write (its value, or a delete for a tombstone), which beats the
  // current value, and removes the entry; returns the new version.
  // NotFound if the journal holds no entry for that key and version.
  absl::StatusOr<Version> RestoreConflict(std::string_view keyspace, std::string_view key,
                                          const Version& version);
  // Removes every entry of `keyspace`; returns how many.
  absl::StatusOr<uint64_t> ClearConflicts(std::string_view keyspace);

  // Removes every superseded log entry now (normally done in bounded steps
  // by the writer). Returns how many entries were removed.
  absl::StatusOr<uint64_t> CompactLog();

  // Tombstone collection (store/tombstones.cc; README "Tombstone
  // collection"). A peer met (a hello): registered with nothing
  // acknowledged if new, so it holds every tombstone back until it says
  // what it holds. Bookkeeping, not data: const, any thread; persisted with
  // the next collection step (collection decides only on persisted acks).
  void NotePeer(uint64_t peer_id) const;
  // What `peer_id` says it holds (the watermarks of its pull request or
  // hello): replaces what it acknowledged before (a peer may hold less
  // than it did: it forgot an origin). `clock_ms`: the peer's estimate of
  // real time when it asked (PullRequest::physical_ms); a tombstone this
  // acknowledgement covers is collected only once it is also
  // tombstone_min_age_ms old by that reading, so a clock of ours far ahead
  // alone cannot age it (seed 7845). 0: not told (an older peer), this
  // replica's clock alone measures the age.
  void NotePeerHolds(uint64_t peer_id, const Watermarks& held, int64_t clock_ms = 0) const;
  // A friend's device met (a filtered link, README "Filtered replication"):
  // waited for by its checkpoint into this log, not by watermarks (it holds
  // only the keyspaces it may read, and never collects this user's
  // tombstones, so one collected before it received it would stay behind
  // there for good as an older tombstone: seeds 9051, 9140). Registered
  // with nothing held if new; like NotePeer, bookkeeping, any thread.
  // `reads`, when given, says which keyspaces it may read now (the link's
  // filter, asked at every collection step, outside its transaction):
  // only their tombstones are held back for it (it will never receive the
  // others). Kept in memory only, replacing any earlier one: a friend
  // read back from meta "friend_acks" after reopening holds back every
  // keyspace until it is noted with its filter again (its next hello).
  void NoteFriend(uint64_t peer_id, FriendReads reads = nullptr) const;
  // What friend `peer_id` merged of this log (PullRequest::merged_seq): it
  // holds every record logged up to `seq` of `incarnation` that it may
  // read (its filtered pull moved past the others). A tombstone logged
  // after that is held back for it. Replaces what it said before.
  void NoteFriendHolds(uint64_t peer_id, uint64_t incarnation, uint64_t seq) const;
  // Releases the tombstones `peer_id` holds back: as a peer, it is no
  // longer waited for; as an origin (any replica whose writes this one
  // holds), its clock no longer bounds the origin floor (see
  // CollectTombstones). What it acknowledged (and this replica's watermark
  // for it) is kept as what it was forgotten with: a live record it sends
  // later that they cover and that would win is refused as stale. A
  // friend's device (NoteFriend) is no longer waited for either. NotFound
  // if it is neither a peer waited for nor a known origin (never met,
  // already forgotten, or retired by a fork).
  absl::Status ForgetPeer(uint64_t peer_id);
  // The peers waited for, with what they acknowledged, by id (friends'
  // devices aside: FriendCheckpoints).
  std::vector<std::pair<uint64_t, Watermarks>> AcknowledgedPeers() const;
  // The friends' devices waited for, with the seq each merged of this log
  // (0 if it was of another incarnation), by id.
  std::vector<std::pair<uint64_t, uint64_t>> FriendCheckpoints() const;

  struct CollectResult {
    uint64_t examined = 0;
    uint64_t collected = 0;
    // The step began a pass at the first record, and reached the end of
    // the records (a pass ended).
    bool began_pass = false;
    bool reached_end = false;
  };
  // A tombstone is collected once it is tombstone_min_age_ms old (by this
  // replica's estimate of real time, and by the clock reading of each
  // acknowledgement that covers it), this replica's watermarks cover it,
  // every peer waited for acknowledged holding it (a friend's device:
  // merged this log past its seq), and its hlc is at most the origin
  // floor: the least of this
  // replica's watermarks over every origin it knows (but itself and the
  // forgotten), so no known replica can still write its key with an older
  // version that would not be recognised as stale.
  // One bounded step of collection on the writer thread: examines up to
  // `max_examined` records after where the last step stopped, in one
  // transaction, and drops the collectable tombstones with their log
  // entries and their share of the range fingerprints.
  static constexpr size_t kTombstoneStepRecords = 10'000;
  absl::StatusOr<CollectResult> CollectTombstones(size_t max_examined = kTombstoneStepRecords);
  // Steps until a whole pass has been made; returns the tombstones dropped.
  absl::StatusOr<uint64_t> CollectAllTombstones();
  static constexpr size_t kMaxAcknowledgedPeers = 4096;

  // Pages back after a large deletion (store/tombstones.cc; README
  // "Tombstone collection"). Deleting most entries of a B-tree leaves its
  // leaves mostly empty, and LMDB merges a leaf only below a quarter full,
  // so the survivors stay spread over the pages the whole set needed. A
  // repack compacts the log (CompactLog), then rewrites `records`, `log`
  // and `ks_changes` densely: each, in one write transaction of its own,
  // is copied in key order into a scratch database (MDB_APPEND fills every
  // leaf), emptied, copied back the same way, and the scratch dropped; the
  // old pages go to LMDB's free list, where later writes reuse them. The
  // contents do not change. Runs on the writer, alone; costs a copy of
  // the three tables twice. Done by itself at the end of a collection
  // pass that collected at least kRepackMinCollected tombstones and at
  // least as many as the store still holds (it at least halved the store).
  struct RepackResult {
    uint64_t log_entries_compacted = 0;
    uint64_t entries_copied = 0;
  };
  absl::StatusOr<RepackResult> Repack();

  // `peerkv compact`: a tombstone collection pass now, over `keyspace`'s
  // registers (empty: every keyspace; a keyspace's pass leaves the
  // background pass and its held counts alone), then a Repack, with the
  // pages in use before and after. Not on the writer thread.
  absl::StatusOr<CompactResult> Compact(std::string_view keyspace);
  // LMDB pages in use: the environment's pages (last page + 1) minus those
  // on its free list, as mdb_stat -ef counts them.
  absl::StatusOr<uint64_t> PagesInUse() const;
  static constexpr uint64_t kRepackMinCollected = 10'000;

 private:
  using WriteRequest = writer::WriteRequest;
  using Group = std::vector<std::unique_ptr<WriteRequest>>;
  class ReadTxn;

  // Reset read-only transactions kept for reuse: renewing one is much
  // cheaper than beginning a new one (no search of the reader table).
  // Thread-safe. Drain() before the environment closes.
  class ReadTxnPool {
   public:
    ReadTxnPool() = default;
    ReadTxnPool(const ReadTxnPool&) = delete;
    ReadTxnPool& operator=(const ReadTxnPool&) = delete;
    // REQUIRES: drained.
    ~ReadTxnPool();

    // A reset transaction, or nullptr if none is kept.
    MDB_txn* Take();
    // Keeps a reset transaction, or aborts it when enough are kept.
    void Give(MDB_txn* txn);
    // Aborts every kept transaction.
    void Drain();

   private:
    static constexpr size_t kMaxKept = 64;
    absl::Mutex mu_;
    std::vector<MDB_txn*> txns_ ABSL_GUARDED_BY(mu_);
  };

  explicit Store(StoreOptions options);

  // Opening.
  absl::Status OpenEnvironment();
  absl::Status LoadOrInitMeta();
  // A new store: draws its ids and writes them. REQUIRES: no meta yet.
  absl::Status InitMeta(MDB_txn* txn);
  // An existing store of `format`: reads ids, state and watermarks; returns
  // the clock's floor.
  absl::StatusOr<uint64_t> LoadMeta(MDB_txn* txn, uint64_t format);
  tables::Dbis dbis() const;

  // At open, inside the meta transaction: records the clock gap of this
  // open in the lineage and raises `clock_floor` to the current time, so no
  // reading ever falls into the gap (store_fork.cc). `id_began`: the
  // replica id began in this open (a new store, an id re-derived): it is
  // the id's first open (FirstOpen); else the id's second open records the
  // floor it found there.
  absl::Status RecordOpen(MDB_txn* txn, uint64_t* clock_floor, bool id_began);
  // Fork's steps (store_fork.cc): a new id (never a retired one) and
  // incarnation; the durable switch to them (meta, lineage, watermarks,
  // checkpoints dropped); the old id's writes logged after `after_seq`
  // written again as new writes where unchanged since read, counted in
  // `restamped`.
  std::pair<uint64_t, uint64_t> DrawForkIds(const Lineage& lineage) const;
  // At open (store.cc): a stored id not minted from replica_id_key is
  // replaced in place when nothing was ever written under it, else
  // rederive_by_fork_ is set.
  absl::Status RederiveIfUnwritten(MDB_txn* txn);
  // Runs `apply` on the writer thread between groups (a MetaSwitch
  // request) and waits for it: what Fork and ForgetRetiredIds change.
  absl::Status RunOnWriter(absl::AnyInvocable<absl::Status()> apply);
  // `kept_marks`: the watermarks before a fresh-clock fork, kept as stale
  // evidence (fork_marks_); after a restore, whose watermarks may claim
  // records of the lost life, only the old id up to the floor its second
  // open found (FirstOpen), or nullptr when that is not known.
  absl::Status SwitchToForkedId(ForkResult& result, const Watermarks* kept_marks);
  absl::Status CommitForgotten(const std::vector<uint64_t>& fresh);
  // In `txn`, before the checkpoints are dropped: adds them (and the held
  // ones) to the forgotten checkpoints, written to meta; *out gets the new
  // set, installed by the caller once `txn` committed.
  absl::Status RememberCheckpoints(
      MDB_txn* txn, absl::flat_hash_map<uint64_t, PeerCheckpoint>* out) const;
  absl::Status LoadForgottenCheckpoints(MDB_txn* txn);
  absl::Status CommitFork(const ForkResult& fork, const Lineage& lineage,
                          const Watermarks* kept_marks);
  absl::Status Restamp(uint64_t old_id, uint64_t after_seq, uint64_t* restamped);

  // Submission (any thread).
  // `reserved`: the mutations must all be in reserved keyspaces (else none
  // may be).
  void SubmitWrite(std::vector<Mutation> mutations, WriteCallback done,
                   bool wait_for_room, bool reserved = false);
  // SubmitWrite, waiting for room and for the commit (Write, WriteReserved).
  absl::StatusOr<std::vector<Version>> WriteAndWait(std::vector<Mutation> mutations,
                                                    bool reserved);
  // `bootstrap` set: a snapshot page (LoadSnapshotPage) that writes or
  // clears the bootstrap marker.
  void SubmitMerge(std::vector<Record> batch,
                   std::optional<CheckpointUpdate> checkpoint,
                   MergeCallback done, bool wait_for_room,
                   std::optional<std::optional<BootstrapMarker>> bootstrap = std::nullopt,
                   MergeSource from = MergeSource::kOwnDevice,
                   MergeOptions extra = {});
  // Moves the records of `batch` that are valid and within the skew limit
  // into `out.records` (`batch` itself, in its order, the others taken
  // out), those too far ahead into `out.too_far_ahead`, lists the others
  // in `out.result.refused`; returns the bytes admitted.
  size_t AdmitRemote(std::vector<Record>& batch, writer::RemoteBatch& out,
                     MergeSource from) const;
  // Queues a request for the writer; when the queue is full, waits for room
  // or fails the request with Unavailable.
  void Submit(std::unique_ptr<WriteRequest> request, bool wait_for_room);

  // The writer thread.
  void WriterLoop();
  // Takes the next group from the queue; empty once stopping and drained.
  Group NextGroup();
  void ApplyGroup(Group& group);
  // Commits a group of writes, growing the map and retrying while it is
  // full; then publishes the counters and tells the listeners.
  absl::Status CommitWrites(Group& group);
  // One attempt at the group in `txn`. An MDB_MAP_FULL from any LMDB call,
  // commit included, is returned as is (see lmdb::IsMapFull).
  absl::Status TryApplyGroup(Group& group, writer::GroupTxn& txn, size_t group_bytes);
  absl::Status ApplyLocalWrite(writer::GroupTxn& txn, writer::LocalWrite& write);
  // Writes `m` as a local write stamped by the clock; after a fresh-clock
  // fork, just above a stored version that is ahead of the clock. Returns
  // the version, or nullopt if it lost (a bug).
  absl::StatusOr<std::optional<Version>> StampLocal(writer::GroupTxn& txn, const Mutation& m);
  // Writes `m` (a fresh tombstone answering a stale record, for a key this
  // replica holds nothing of) stamped just above hlc `above` (the newest
  // collected tombstone's, or the stale record's if newer); store.cc says
  // when it is stamped by the clock instead.
  absl::StatusOr<std::optional<Version>> StampAboveCollected(writer::GroupTxn& txn,
                                                             const Mutation& m, uint64_t above);
  absl::Status ApplyRemoteBatch(writer::GroupTxn& txn, writer::RemoteBatch& batch);
  // Tombstone collection's side of a merge (tombstones.cc): true if
  // `remote` is stale (a live record for a key this replica holds nothing
  // of, covered by its watermarks (or its fork marks), or by what peer
  // `source` was forgotten with, and not after the newest tombstone it
  // collected): it is refused (in `result`) and answered with a fresh
  // tombstone written in `txn`. A stale tombstone is dropped silently.
  // A record from peer `source` that what it was forgotten with covers
  // (ForgetPeer) is refused too, if it would win. `rule` is read once per
  // batch (StaleRuleFor; nullopt: nothing can be stale).
  struct StaleRule {
    uint64_t horizon = 0;
    Watermarks own;
    std::optional<Watermarks> forgotten_with;
  };
  std::optional<StaleRule> StaleRuleFor(uint64_t source) const;
  absl::StatusOr<bool> RefuseIfStale(writer::GroupTxn& txn, const Record& remote,
                                     const StaleRule& rule, MergeResult& result);
  static bool IsStaleRefusal(const absl::Status& reason);
  void DropRetiredAcks(const std::vector<uint64_t>& ids, const Watermarks& held);
  absl::Status LoadTombstoneState(MDB_txn* txn);
  // A pass over one keyspace (Compact): its record-key prefix, and the
  // last record key examined (the prefix before the first step; empty
  // once done).
  struct CollectScope {
    std::string prefix;
    std::string from;
  };
  // `scope`: a keyspace's pass; nullptr: the background pass.
  absl::Status CollectStep(size_t max_examined, CollectResult& result, CollectScope* scope);
  // CollectTombstones, and CollectAllTombstones, that repack only if
  // `repack_when_due` (Compact repacks by itself).
  absl::StatusOr<CollectResult> CollectTombstonesThen(size_t max_examined, bool repack_when_due);
  absl::StatusOr<uint64_t> CollectWholePass(bool repack_when_due);
  absl::Status WriteAcks(MDB_txn* txn) const;
  absl::Status WriteForkMarks(MDB_txn* txn, const Watermarks& marks) const;
  void CollectorLoop();
  absl::Status ApplyRestamp(writer::GroupTxn& txn, writer::RestampBatch& batch);
  // Writes the claimed and held checkpoints and watermarks and the meta
  // state, and commits (without the meta page's fsync if `txn` began so:
  // MergeOptions::wait_for_sync).
  absl::Status CommitGroup(writer::GroupTxn& txn, size_t group_bytes);
  // Keeps what a group that changed nothing claimed, for the next commit.
  void HoldClaims(const writer::GroupTxn& txn);
  void Publish(const writer::GroupTxn& txn);
  void NotifyListeners(const writer::GroupTxn& txn);
  absl::Status GrowMap(size_t needed_bytes);
  absl::Status CompactAll(writer::Compaction& compaction);
  // Range fingerprints (store_rbsr.cc). At open, in the meta transaction:
  // a store older than format 3 gets its "ranges" table computed from the
  // records; then the roots are read into memory.
  absl::Status UpgradeRanges(MDB_txn* txn);
  absl::Status LoadRoots(MDB_txn* txn);
  // After a commit: the in-memory roots move by the commit's deltas.
  void PublishRanges(const ranges::Deltas& deltas);
  // The scrub; Cancelled once `cancel` is set.
  absl::StatusOr<std::vector<std::string>> Scrub(const std::atomic<bool>* cancel);
  void RunOpenScrub();
  // On the writer thread: adds a scrub's repair (growing the map if full).
  absl::Status RepairRanges(writer::RangeRepair& repair);
  absl::Status TryRepairRanges(const writer::RangeRepair& repair);
  absl::StatusOr<uint64_t> CompactStep(size_t max_entries, bool* reached_end);
  // Up to `max_entries` log entries after compact_from_seq_: the seqs of
  // those superseded; `last_seq` is the last one examined.
  // Each with its keyspace, whose change index entry goes with it.
  struct Superseded {
    uint64_t seq = 0;
    std::string keyspace;
  };
  absl::StatusOr<std::vector<Superseded>> FindSuperseded(MDB_txn* txn, size_t max_entries,
                                                         uint64_t* last_seq,
                                                         bool* reached_end) const;
  // ChangesSince with a keyspace filter: through the change index.
  absl::StatusOr<Changes> IndexedChangesSince(MDB_txn* txn, Changes changes, size_t limit,
                                              size_t max_bytes,
                                              const ChangesFilter& filter) const;
  bool CompactionDue() const;
  absl::Status FlushHeldCheckpoints();
  // The conflict journal (store_conflicts.cc). At open: fills conflicts_
  // from the table (entries that do not decode are deleted, logged once).
  absl::Status LoadConflicts(MDB_txn* txn);
  // In the writer's transaction: journals txn.conflicts() within the
  // bounds; `plan` gets the new state of each keyspace touched, installed
  // by InstallConflicts once the transaction committed.
  absl::Status JournalConflicts(writer::GroupTxn& txn, conflicts::Index* plan);
  void InstallConflicts(conflicts::Index& plan);
  // At open: fills quarantine_ from the table; entries that do not decode
  // are deleted (and logged once), never retried.
  absl::Status LoadQuarantine(MDB_txn* txn);
  // In the writer's transaction: quarantines `records` (too far ahead),
  // within the bounds, noting the outcome in `result`.
  absl::Status QuarantineRecords(writer::GroupTxn& txn, const std::vector<Record>& records,
                                 MergeResult& result);
  // `claims` lowered below every quarantined hlc of their origin (those in
  // `txn` included).
  Watermarks CapClaims(const Watermarks& claims, const writer::GroupTxn* txn) const;
  void Log(const std::string& line) const;
  // True on the writer thread (the only one that stamps versions, applies
  // groups and compacts).
  bool OnWriterThread() const { return std::this_thread::get_id() == writer_id_; }

  const StoreOptions options_;
  std::atomic<uint64_t> replica_id_{0};
  std::atomic<uint64_t> incarnation_{0};
  mutable absl::Mutex lineage_mu_;
  Lineage lineage_ ABSL_GUARDED_BY(lineage_mu_);
  // The current id's first open (meta "first_open"; replica_id 0: not
  // known, the id began before it was kept).
  FirstOpen first_open_ ABSL_GUARDED_BY(lineage_mu_);
  uint64_t open_nonce_ = 0;
  // Set once by Open (see open_rederived()); read-only afterwards.
  std::optional<ForkResult> open_rederived_;
  // Open found a stored replica id not minted from replica_id_key and a
  // non-empty log: it forks once the writer runs.
  bool rederive_by_fork_ = false;
  // Destroyed after the environment is closed (in ~Store's body).
  std::unique_ptr<DataDir> dir_;
  std::unique_ptr<HybridClock> clock_;

  MDB_env* env_ = nullptr;
  MDB_dbi records_dbi_ = 0;
  MDB_dbi log_dbi_ = 0;
  MDB_dbi peers_dbi_ = 0;
  MDB_dbi meta_dbi_ = 0;
  MDB_dbi quarantine_dbi_ = 0;
  MDB_dbi ranges_dbi_ = 0;
  MDB_dbi conflicts_dbi_ = 0;
  MDB_dbi change_index_dbi_ = 0;

  // Mutable: const reads borrow transactions from it.
  mutable ReadTxnPool read_pool_;

  // Readers hold it shared for the life of their transaction; the writer
  // holds it exclusively only while it grows the map (LMDB requires that no
  // transaction is active then).
  mutable absl::Mutex resize_mu_;
  std::atomic<size_t> map_bytes_{0};

  // Committed state, written by the writer thread after each commit.
  std::atomic<uint64_t> max_seq_{0};
  std::atomic<uint64_t> live_records_{0};
  std::atomic<uint64_t> tombstones_{0};
  std::atomic<uint64_t> log_entries_{0};
  std::atomic<uint64_t> commits_{0};
  std::atomic<uint64_t> fingerprint_{0};
  // The clock's high-water mark at the last commit: see GetWatermarks.
  std::atomic<uint64_t> committed_clock_{0};
  // Fork(fresh_clock) resets the clock below stored versions (see
  // StampLocal). The reset and committed_clock_'s updates hold
  // clock_reset_mu_ (see Publish).
  absl::Mutex clock_reset_mu_;
  // The last SetClockEstimate, for Stats.
  mutable absl::Mutex estimate_mu_;
  ClockEstimate estimate_ ABSL_GUARDED_BY(estimate_mu_);
  // Every keyspace's root range fingerprint as of the last commit; written
  // by the writer thread (and at open).
  mutable absl::Mutex roots_mu_;
  std::map<std::string, rbsr::Fingerprint, std::less<>> roots_ ABSL_GUARDED_BY(roots_mu_);

  // The scrub after open (StoreOptions::scrub_at_open): its thread, its
  // stop flag (set by ~Store) and its outcome once `open_scrub_done_`.
  std::thread open_scrub_;
  std::atomic<bool> stop_scrub_{false};
  mutable absl::Mutex open_scrub_mu_;
  bool open_scrub_finished_ ABSL_GUARDED_BY(open_scrub_mu_) = false;
  absl::StatusOr<std::vector<std::string>> open_scrub_result_ ABSL_GUARDED_BY(open_scrub_mu_);

  // The write queue.
  absl::Mutex queue_mu_;
  std::deque<std::unique_ptr<WriteRequest>> queue_ ABSL_GUARDED_BY(queue_mu_);
  size_t queued_bytes_ ABSL_GUARDED_BY(queue_mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(queue_mu_) = false;

  // Watermarks as claimed now; `watermarks_dirty_` when some are not yet
  // written (claimed by batches that won nothing: their data was durable).
  mutable absl::Mutex watermarks_mu_;
  Watermarks watermarks_ ABSL_GUARDED_BY(watermarks_mu_);
  // See Distrusts: the lineage's retired and forgotten ids.
  absl::flat_hash_set<uint64_t> distrusted_ ABSL_GUARDED_BY(watermarks_mu_);
  bool watermarks_dirty_ ABSL_GUARDED_BY(watermarks_mu_) = false;

  // Checkpoints of batches that won nothing, written with the next commit.
  mutable absl::Mutex checkpoints_mu_;
  absl::flat_hash_map<uint64_t, PeerCheckpoint> held_checkpoints_
      ABSL_GUARDED_BY(checkpoints_mu_);
  // See ForgottenCheckpoint.
  absl::flat_hash_map<uint64_t, PeerCheckpoint> forgotten_checkpoints_
      ABSL_GUARDED_BY(checkpoints_mu_);

  // See Bootstrap(); written after the commit that changed it.
  mutable absl::Mutex bootstrap_mu_;
  std::optional<BootstrapMarker> bootstrap_ ABSL_GUARDED_BY(bootstrap_mu_);

  // The quarantine table's mirror; changed by the writer after a commit.
  mutable absl::Mutex quarantine_mu_;
  quarantine::Index quarantine_ ABSL_GUARDED_BY(quarantine_mu_);
  std::atomic<uint64_t> quarantine_dropped_{0};

  // The conflict journal's mirror; changed by the writer after a commit.
  mutable absl::Mutex conflicts_mu_;
  std::unique_ptr<conflicts::Index> conflicts_ ABSL_GUARDED_BY(conflicts_mu_);

  // Writer-thread state: where the next compaction step starts.
  uint64_t compact_from_seq_ = 0;
  // Set by the writer thread itself as it starts, read only by it (a
  // default id, which no thread has, everywhere else).
  std::thread::id writer_id_;

  absl::Mutex listeners_mu_;
  std::vector<std::pair<int, CommitListener>> listeners_
      ABSL_GUARDED_BY(listeners_mu_);
  int next_listener_id_ ABSL_GUARDED_BY(listeners_mu_) = 1;

  std::thread writer_;

  // Tombstone collection (tombstones.cc): peers waited for and what each
  // acknowledged; peers forgotten and what they were forgotten with; the
  // newest collected tombstone's hlc (persisted); the last full pass's
  // held count and the peer holding most; where the next step starts
  // (writer thread); the background thread and its stop flag.
  mutable absl::Mutex acks_mu_;
  mutable absl::flat_hash_map<uint64_t, Watermarks> acks_ ABSL_GUARDED_BY(acks_mu_);
  // Friends' devices waited for: the checkpoint into this log each merged
  // (NoteFriendHolds). Persisted in meta "friend_acks" with peer_acks.
  struct FriendAck {
    uint64_t incarnation = 0;
    uint64_t seq = 0;
    // Not persisted; null: not known since this open (holds back all).
    FriendReads reads;
  };
  mutable absl::flat_hash_map<uint64_t, FriendAck> friend_acks_ ABSL_GUARDED_BY(acks_mu_);
  // Each peer's clock reading (ms) with its latest acknowledgement, for
  // the peers that told one (persisted in meta "peer_ack_clocks").
  mutable absl::flat_hash_map<uint64_t, int64_t> ack_clocks_ ABSL_GUARDED_BY(acks_mu_);
  absl::flat_hash_map<uint64_t, Watermarks> forgotten_peers_ ABSL_GUARDED_BY(acks_mu_);
  // What this replica's watermarks claimed before its fresh-clock forks
  // (merged over them): a fork drops the watermarks, yet tombstones
  // collected under them stay collected, so a record these cover, for a
  // key held nothing of and not after the collected horizon, is still
  // stale (StaleRuleFor). Persisted in meta "fork_marks".
  Watermarks fork_marks_ ABSL_GUARDED_BY(acks_mu_);
  mutable bool acks_overflow_ ABSL_GUARDED_BY(acks_mu_) = false;
  std::atomic<uint64_t> collected_horizon_{0};
  std::atomic<uint64_t> tombstones_collected_{0};
  std::atomic<uint64_t> stale_refused_{0};
  // Records the merge gate refused (StoreOptions::record_gate).
  mutable std::atomic<uint64_t> gate_refused_{0};
  std::atomic<uint64_t> unsynced_commits_{0};
  std::atomic<uint64_t> tombstones_held_{0};
  std::atomic<uint64_t> tombstones_held_by_{0};
  std::atomic<uint64_t> tombstones_held_by_count_{0};
  std::string collect_from_key_;
  // Tombstones the collection pass under way has collected (writer).
  uint64_t pass_collected_ = 0;
  std::atomic<uint64_t> repacks_{0};
  // Tombstones of the pass the last collection step ended, when they call
  // for a repack (writer); CollectTombstones runs it after the step.
  uint64_t repack_due_ = 0;
  absl::StatusOr<RepackResult> RepackOnWriter();
  absl::StatusOr<uint64_t> RepackTable(MDB_dbi dbi, const char* name);
  uint64_t pass_held_ = 0;
  absl::flat_hash_map<uint64_t, uint64_t> pass_held_by_;
  absl::Mutex collector_mu_;
  bool stop_collector_ ABSL_GUARDED_BY(collector_mu_) = false;
  std::thread collector_;
};

}  // namespace peerkv

#endif  // PEERKV_STORE_STORE_H_
