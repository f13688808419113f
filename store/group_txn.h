// store/group_txn.h: one write transaction of the store's writer thread, as
// a class. It begins; applies local writes and remote records by the merge
// rule (the greater version stays), appending each change with its value to
// the log; collects the checkpoints and watermarks its batches claim;
// writes checkpoints, watermarks and the meta state; and commits. It keeps
// the store's counters as the transaction leaves them: the store publishes
// them only after Commit succeeds, and a failed attempt (a full map) is
// simply dropped and retried with a new GroupTxn. Internal to store/; lives
// on the writer thread (or
// in ~Store, after the writer has stopped).
#ifndef PEERKV_STORE_GROUP_TXN_H_
#define PEERKV_STORE_GROUP_TXN_H_

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "store/lmdb_util.h"
#include "store/quarantine.h"
#include "store/range_table.h"
#include "store/tables.h"
#include "store/types.h"
#include "store/version.h"

namespace peerkv::writer {

class GroupTxn {
 public:
  // The store's counters, as of its last commit or as this transaction
  // leaves them.
  struct Counters {
    uint64_t max_seq = 0;
    uint64_t live_records = 0;
    uint64_t tombstones = 0;
    uint64_t log_entries = 0;
    uint64_t fingerprint = 0;
  };

  GroupTxn(const tables::Dbis& dbis, const Counters& base) : dbis_(dbis), counters_(base) {}
  GroupTxn(const GroupTxn&) = delete;
  GroupTxn& operator=(const GroupTxn&) = delete;

  // Begins the write transaction. An MDB_MAP_FULL from this or any later
  // call, Commit included, is returned as is (see lmdb::IsMapFull): the
  // transaction is then gone and the group must be retried in a bigger map.
  // `sync_meta` false: the commit does not flush the meta page
  // (MDB_NOMETASYNC for this transaction alone: lmdb::Txn::Begin).
  absl::Status Begin(MDB_env* env, bool sync_meta = true);
  bool syncs_meta() const { return sync_meta_; }

  // A local write at `version`. False if a stored version beats it, which
  // the writer's clock never lets happen (the caller checks).
  absl::StatusOr<bool> ApplyLocal(const Mutation& mutation, const Version& version);
  // Keeps `mutation` as long as this transaction, for a local write the
  // writer makes itself (a fresh tombstone): changes() views its keyspace
  // and key until the commit listeners have run.
  const Mutation& Keep(Mutation mutation) {
    kept_.push_back(std::move(mutation));
    return kept_.back();
  }
  // A remote record merged from peer `source` (0: none named). False if the
  // stored version is not older: nothing is written.
  absl::StatusOr<bool> ApplyRemote(const Record& record, uint64_t source);
  // As ApplyRemote, trying MDB_APPEND first (records in key order into a
  // tree whose keys all come before): a full leaf is left full instead of
  // split in half. A key that does not come last is merged as usual.
  absl::StatusOr<bool> ApplyRemoteAppend(const Record& record, uint64_t source);
  // A meta entry put or deleted in this transaction (something to commit).
  absl::Status PutMeta(std::string_view name, std::string_view value);
  absl::Status DeleteMeta(std::string_view name);
  bool meta_changed() const { return meta_changed_; }
  // The version the key holds in this transaction (writes applied in it
  // included); nullopt if it holds none.
  absl::StatusOr<std::optional<Version>> CurrentVersion(std::string_view keyspace,
                                                        std::string_view key);
  // Conflict detection (README "Conflict journal"): when on, an applied
  // remote record that overwrites a version its causal mark is older than,
  // or that loses to a stored version whose mark is older than it, is
  // noted in conflicts() with the loser's value (reserved keyspaces never).
  void set_detect_conflicts(bool on) { detect_conflicts_ = on; }
  // StoreOptions::signer for local writes (nullptr or empty: unsigned);
  // borrowed.
  void set_signer(const RecordSigner* signer) {
    signer_ = signer != nullptr && *signer ? signer : nullptr;
  }
  // Losers found in this transaction (when_ms unset), in the order found.
  const std::vector<ConflictEntry>& conflicts() const { return conflicts_; }
  // The conflict journal's table, for the store (store_conflicts.cc).
  absl::Status PutConflict(const std::string& key, const std::string& value);
  absl::Status DeleteConflict(const std::string& key);

  // Notes a batch's checkpoint advance and watermark claim for this group.
  // Written only if the caller puts them; see claimed_*().
  void Claim(const CheckpointUpdate& update);

  // Puts a record in the quarantine table, or deletes one (absent: no-op).
  // Noted in quarantine_changes() for the store's index.
  absl::Status PutQuarantine(const std::string& key, std::string_view value,
                             const quarantine::Index::Entry& entry);
  absl::Status ReleaseQuarantine(const std::string& key);
  // Quarantine keys put (an entry) or deleted (nullopt) in this transaction.
  const std::map<std::string, std::optional<quarantine::Index::Entry>>& quarantine_changes()
      const {
    return quarantine_changes_;
  }

  absl::Status PutCheckpoint(uint64_t peer_id, const PeerCheckpoint& checkpoint);
  absl::Status PutWatermarks(const Watermarks& watermarks);
  // The counters() and the clock's high-water mark, as meta "state".
  absl::Status PutMetaState(uint64_t clock_mark);
  // The clock mark PutMetaState wrote (nullopt: none).
  std::optional<uint64_t> clock_mark() const { return clock_mark_; }

  // Adds the range deltas (see range_deltas()) and commits.
  absl::Status Commit();
  void Abort();

  // Some record changed (won): there is something to commit.
  bool changed() const { return !changes_.empty(); }
  // The quarantine table changed (to commit even if no record did).
  bool quarantine_changed() const { return !quarantine_changes_.empty(); }
  // Some local write was applied.
  bool local() const { return local_; }
  const Counters& counters() const { return counters_; }
  // Every change, in seq order; views into the applied writes and records,
  // which must outlive their use.
  const std::vector<CommitChange>& changes() const { return changes_; }
  const absl::flat_hash_map<uint64_t, PeerCheckpoint>& claimed_checkpoints() const {
    return claimed_checkpoints_;
  }
  const Watermarks& claimed_watermarks() const { return claimed_watermarks_; }
  // What the applied changes do to the range fingerprints (the "ranges"
  // table, which Commit updates, and the store's in-memory roots, which the
  // store updates once the commit is durable).
  const ranges::Deltas& range_deltas() const { return range_deltas_; }

 private:
  // `remote_mark`: the remote record's causal mark; nullptr for a local
  // write (whose mark is the version it replaces here).
  absl::StatusOr<bool> Apply(std::string_view keyspace, std::string_view key,
                             const Version& version, bool deleted, std::string_view value,
                             uint64_t source, const std::optional<Version>* remote_mark,
                             bool append = false, std::string_view remote_signature = {});
  // A remote record lost to the stored `old`: noted if old's mark (in its
  // log entry) is older than the record.
  absl::Status NoteIfStoredWins(std::string_view keyspace, std::string_view key,
                                const Version& version, bool deleted, std::string_view value,
                                const Version& old_version, uint64_t old_seq);
  void CloseCursors();

  const tables::Dbis dbis_;
  Counters counters_;
  bool local_ = false;
  bool sync_meta_ = true;
  std::optional<uint64_t> clock_mark_;
  bool detect_conflicts_ = false;
  const RecordSigner* signer_ = nullptr;
  std::string signature_;
  std::vector<ConflictEntry> conflicts_;
  bool meta_changed_ = false;
  std::vector<CommitChange> changes_;
  std::deque<Mutation> kept_;  // see Keep
  absl::flat_hash_map<uint64_t, PeerCheckpoint> claimed_checkpoints_;
  Watermarks claimed_watermarks_;
  std::map<std::string, std::optional<quarantine::Index::Entry>> quarantine_changes_;
  ranges::Deltas range_deltas_;

  // Declared before the cursors, which must close first.
  lmdb::Txn txn_;
  lmdb::Cursor records_;
  lmdb::Cursor log_;
  lmdb::Cursor index_;
  // Buffers reused by every Apply.
  std::string record_key_;
  std::string header_;
  std::string seq_key_;
  std::string log_value_;
  std::string index_key_;
};

}  // namespace peerkv::writer

#endif  // PEERKV_STORE_GROUP_TXN_H_
