// store/group_txn.cc: the writer's transaction: merge rule, log append,
// checkpoints, watermarks, meta state and commit.
#include "store/group_txn.h"

#include "absl/strings/str_format.h"
#include "common/macros.h"
#include "store/change_index.h"
#include "store/codec.h"
#include "store/range_fingerprint.h"
#include "store/tables.h"
#include "store/validation.h"

namespace peerkv::writer {

using lmdb::Val;
using lmdb::View;

absl::Status GroupTxn::Begin(MDB_env* env, bool sync_meta) {
  sync_meta_ = sync_meta;
  PEERKV_RETURN_IF_ERROR(txn_.Begin(env, sync_meta ? 0 : MDB_NOMETASYNC));
  PEERKV_RETURN_IF_ERROR(records_.Open(txn_, dbis_.records));
  PEERKV_RETURN_IF_ERROR(log_.Open(txn_, dbis_.log));
  return index_.Open(txn_, dbis_.change_index);
}

absl::StatusOr<bool> GroupTxn::ApplyLocal(const Mutation& mutation, const Version& version) {
  local_ = true;
  const bool deleted = !mutation.value.has_value();
  return Apply(mutation.keyspace, mutation.key, version, deleted,
               deleted ? std::string_view() : std::string_view(*mutation.value),
               /*source=*/0, /*remote_mark=*/nullptr);
}

absl::StatusOr<bool> GroupTxn::ApplyRemote(const Record& record, uint64_t source) {
  return Apply(record.keyspace, record.key, record.version, record.deleted, record.value,
               source, &record.replaces, /*append=*/false, record.signature);
}

absl::StatusOr<bool> GroupTxn::ApplyRemoteAppend(const Record& record, uint64_t source) {
  return Apply(record.keyspace, record.key, record.version, record.deleted, record.value,
               source, &record.replaces, /*append=*/true, record.signature);
}

absl::Status GroupTxn::PutMeta(std::string_view name, std::string_view value) {
  PEERKV_RETURN_IF_ERROR(lmdb::Put(txn_.get(), dbis_.meta, name, value, "write meta"));
  meta_changed_ = true;
  return absl::OkStatus();
}

absl::Status GroupTxn::DeleteMeta(std::string_view name) {
  MDB_val k = Val(name);
  const int rc = mdb_del(txn_.get(), dbis_.meta, &k, nullptr);
  if (rc == MDB_NOTFOUND) return absl::OkStatus();
  PEERKV_RETURN_IF_ERROR(lmdb::Error(rc, "delete from meta"));
  meta_changed_ = true;
  return absl::OkStatus();
}

// Writes `version` for the key if it beats the stored one, and appends the
// change (with the value) to the log. One B-tree descent: a put that refuses
// to overwrite leaves the cursor on the existing header and hands back its
// bytes; headers are fixed-size, so the overwrite is in place.
absl::StatusOr<bool> GroupTxn::Apply(std::string_view keyspace, std::string_view key,
                                     const Version& version, bool deleted,
                                     std::string_view value, uint64_t source,
                                     const std::optional<Version>* remote_mark, bool append,
                                     std::string_view remote_signature) {
  const uint64_t seq = counters_.max_seq + 1;
  // A local write replaces what is here (nothing: Version{}); a remote
  // record keeps the mark it came with.
  std::optional<Version> mark = remote_mark != nullptr ? *remote_mark : Version{};
  codec::AppendRecordKey(keyspace, key, &record_key_);
  codec::EncodeRecordHeader(codec::RecordHeader{version, deleted, seq}, &header_);
  MDB_val k = Val(record_key_), d = Val(header_);
  int rc = MDB_KEYEXIST;
  if (append) {
    // KEYEXIST, with nothing written, unless the key comes after the
    // tree's last: then it is a new key.
    rc = mdb_cursor_put(records_.get(), &k, &d, MDB_APPEND);
    d = Val(header_);
  }
  if (rc == MDB_KEYEXIST) rc = mdb_cursor_put(records_.get(), &k, &d, MDB_NOOVERWRITE);
  std::optional<uint64_t> position;
  if (rc == MDB_KEYEXIST) {
    PEERKV_ASSIGN_OR_RETURN(const codec::RecordHeader old, codec::DecodeRecordHeader(View(d)));
    if (!(version > old.version)) {
      if (detect_conflicts_ && remote_mark != nullptr && version < old.version) {
        PEERKV_RETURN_IF_ERROR(
            NoteIfStoredWins(keyspace, key, version, deleted, value, old.version, old.seq));
      }
      return false;
    }
    if (remote_mark == nullptr) mark = old.version;
    (old.deleted ? counters_.tombstones : counters_.live_records) -= 1;
    // The value takes part in the fingerprints: the old one is read back
    // (one lookup, and only when a register is overwritten).
    PEERKV_ASSIGN_OR_RETURN(const std::string_view old_value,
                            tables::ReadValue(txn_.get(), dbis_.log, record_key_, old.seq));
    position = rbsr::KeyPosition(key);
    const rbsr::Sum256 old_hash =
        rbsr::ItemHash(keyspace, key, old.version, old.deleted, old_value);
    range_deltas_.Remove(keyspace, *position, old_hash);
    // Incoming wins: a conflict if its writer had not seen what it beats
    // here (its mark is older). The loser's value is at hand already.
    if (detect_conflicts_ && remote_mark != nullptr && remote_mark->has_value() &&
        **remote_mark < old.version && !IsReservedKeyspace(keyspace)) {
      conflicts_.push_back(ConflictEntry{std::string(keyspace), std::string(key), old.version,
                                         old.deleted, std::string(old_value), version, 0});
    }
    counters_.fingerprint -= old_hash.limbs[0];
    // The superseded change leaves the change index (which holds current
    // changes only) in this transaction.
    PEERKV_RETURN_IF_ERROR(
        change_index::Delete(txn_.get(), dbis_.change_index, keyspace, old.seq));
    d = Val(header_);
    rc = mdb_cursor_put(records_.get(), &k, &d, MDB_CURRENT);
  }
  PEERKV_RETURN_IF_ERROR(lmdb::Error(rc, "write record"));
  (deleted ? counters_.tombstones : counters_.live_records) += 1;
  // The range fingerprints and the store's 64-bit fingerprint (their low
  // limb) move by the new item hash, less the old one's above.
  const rbsr::Sum256 hash = rbsr::ItemHash(keyspace, key, version, deleted, value);
  range_deltas_.Add(keyspace, position.has_value() ? *position : rbsr::KeyPosition(key), hash);
  counters_.fingerprint += hash.limbs[0];
  seq_key_.clear();
  codec::PutBigEndian64(&seq_key_, seq);
  // A local write is signed now that its version is final (the signer
  // decides whether its keyspace needs it); a remote record keeps its own.
  std::string_view signature = remote_signature;
  if (remote_mark == nullptr && signer_ != nullptr) {
    signature_ = (*signer_)(keyspace, key, version, deleted, value);
    PEERKV_CHECK(signature_.size() <= kMaxSignatureBytes);
    signature = signature_;
  }
  codec::EncodeLogEntry(record_key_, source, value, &log_value_, mark, signature);
  MDB_val lk = Val(seq_key_), lv = Val(log_value_);
  PEERKV_RETURN_IF_ERROR(
      lmdb::Error(mdb_cursor_put(log_.get(), &lk, &lv, MDB_APPEND), "append to log"));
  PEERKV_RETURN_IF_ERROR(change_index::Put(index_.get(), keyspace, seq, header_, &index_key_));
  changes_.push_back(CommitChange{seq, keyspace, key});
  counters_.max_seq = seq;
  ++counters_.log_entries;
  return true;
}

absl::Status GroupTxn::NoteIfStoredWins(std::string_view keyspace, std::string_view key,
                                        const Version& version, bool deleted,
                                        std::string_view value, const Version& old_version,
                                        uint64_t old_seq) {
  if (IsReservedKeyspace(keyspace)) return absl::OkStatus();
  // One log lookup, only for a record older than the stored one.
  PEERKV_ASSIGN_OR_RETURN(
      const std::optional<std::string_view> stored,
      lmdb::Get(txn_.get(), dbis_.log, codec::BigEndian64(old_seq), "read log entry"));
  if (!stored.has_value()) {
    return absl::DataLossError(
        absl::StrFormat("log entry %d, which holds a current value, is missing", old_seq));
  }
  PEERKV_ASSIGN_OR_RETURN(const codec::LogEntry entry, codec::DecodeLogEntry(*stored));
  if (!entry.replaces.has_value() || !(*entry.replaces < version)) return absl::OkStatus();
  conflicts_.push_back(ConflictEntry{std::string(keyspace), std::string(key), version, deleted,
                                     std::string(value), old_version, 0});
  return absl::OkStatus();
}

absl::Status GroupTxn::PutConflict(const std::string& key, const std::string& value) {
  return lmdb::Put(txn_.get(), dbis_.conflicts, key, value, "write conflict journal");
}

absl::Status GroupTxn::DeleteConflict(const std::string& key) {
  MDB_val k = Val(key);
  const int rc = mdb_del(txn_.get(), dbis_.conflicts, &k, nullptr);
  if (rc == MDB_NOTFOUND) return absl::OkStatus();
  return lmdb::Error(rc, "delete from conflict journal");
}

absl::StatusOr<std::optional<Version>> GroupTxn::CurrentVersion(std::string_view keyspace,
                                                                std::string_view key) {
  codec::AppendRecordKey(keyspace, key, &record_key_);
  PEERKV_ASSIGN_OR_RETURN(const std::optional<std::string_view> stored,
                          lmdb::Get(txn_.get(), dbis_.records, record_key_, "read record"));
  if (!stored.has_value()) return std::nullopt;
  PEERKV_ASSIGN_OR_RETURN(const codec::RecordHeader header, codec::DecodeRecordHeader(*stored));
  return header.version;
}

void GroupTxn::Claim(const CheckpointUpdate& update) {
  claimed_checkpoints_[update.peer_id] = update.checkpoint;
  claimed_watermarks_.Merge(update.watermarks);
}

absl::Status GroupTxn::PutCheckpoint(uint64_t peer_id, const PeerCheckpoint& checkpoint) {
  return tables::WriteCheckpoint(txn_.get(), dbis_.peers, peer_id, checkpoint);
}

absl::Status GroupTxn::PutWatermarks(const Watermarks& watermarks) {
  return tables::WriteWatermarks(txn_.get(), dbis_.meta, watermarks);
}

absl::Status GroupTxn::PutMetaState(uint64_t clock_mark) {
  clock_mark_ = clock_mark;
  return tables::WriteMetaState(
      txn_.get(), dbis_.meta,
      codec::MetaState{clock_mark, counters_.max_seq, counters_.live_records,
                       counters_.tombstones, counters_.fingerprint});
}

absl::Status GroupTxn::PutQuarantine(const std::string& key, std::string_view value,
                                     const quarantine::Index::Entry& entry) {
  PEERKV_RETURN_IF_ERROR(lmdb::Put(txn_.get(), dbis_.quarantine, key, value, "write quarantine"));
  quarantine_changes_[key] = entry;
  return absl::OkStatus();
}

absl::Status GroupTxn::ReleaseQuarantine(const std::string& key) {
  MDB_val k = Val(key);
  const int rc = mdb_del(txn_.get(), dbis_.quarantine, &k, nullptr);
  if (rc == MDB_NOTFOUND) return absl::OkStatus();
  PEERKV_RETURN_IF_ERROR(lmdb::Error(rc, "delete from quarantine"));
  quarantine_changes_[key] = std::nullopt;
  return absl::OkStatus();
}

absl::Status GroupTxn::Commit() {
  CloseCursors();
  if (!range_deltas_.empty()) {
    // One read-modify-write per touched bucket and keyspace root.
    PEERKV_RETURN_IF_ERROR(ranges::ApplyDeltas(txn_.get(), dbis_.ranges, range_deltas_));
  }
  return txn_.Commit();
}

void GroupTxn::Abort() {
  CloseCursors();
  txn_.Abort();
}

void GroupTxn::CloseCursors() {
  records_.Close();
  log_.Close();
  index_.Close();
}

}  // namespace peerkv::writer
