// store/tables.cc: single-entry reads and writes of the store's databases.
#include "store/tables.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/macros.h"
#include "store/lmdb_util.h"

namespace peerkv::tables {

absl::Status OpenDbis(MDB_txn* txn, Dbis* dbis) {
  const struct {
    const char* name;
    MDB_dbi* dbi;
  } dbs[] = {{"records", &dbis->records},
             {"log", &dbis->log},
             {"peers", &dbis->peers},
             {"meta", &dbis->meta},
             {"quarantine", &dbis->quarantine},
             {"ranges", &dbis->ranges},
             {"conflicts", &dbis->conflicts},
             {"ks_changes", &dbis->change_index}};
  for (const auto& db : dbs) {
    PEERKV_RETURN_IF_ERROR(lmdb::Error(mdb_dbi_open(txn, db.name, MDB_CREATE, db.dbi),
                                       absl::StrCat("open database ", db.name)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<uint64_t>> ReadMetaU64(MDB_txn* txn, MDB_dbi meta,
                                                    std::string_view name) {
  PEERKV_ASSIGN_OR_RETURN(const std::optional<std::string_view> stored,
                          lmdb::Get(txn, meta, name, absl::StrFormat("read meta %s", name)));
  if (!stored.has_value()) return std::nullopt;
  PEERKV_ASSIGN_OR_RETURN(const uint64_t value, codec::DecodeMetaU64(*stored, name));
  return value;
}

absl::Status WriteMetaU64(MDB_txn* txn, MDB_dbi meta, std::string_view name,
                          uint64_t value) {
  return lmdb::Put(txn, meta, name, codec::EncodeMetaU64(value),
                   absl::StrFormat("write meta %s", name));
}

absl::StatusOr<std::optional<codec::MetaState>> ReadMetaState(MDB_txn* txn, MDB_dbi meta) {
  PEERKV_ASSIGN_OR_RETURN(const std::optional<std::string_view> stored,
                          lmdb::Get(txn, meta, codec::kMetaState, "read meta state"));
  if (!stored.has_value()) return std::nullopt;
  PEERKV_ASSIGN_OR_RETURN(const codec::MetaState state, codec::DecodeMetaState(*stored));
  return state;
}

absl::Status WriteMetaState(MDB_txn* txn, MDB_dbi meta, const codec::MetaState& state) {
  return lmdb::Put(txn, meta, codec::kMetaState, codec::EncodeMetaState(state),
                   "write meta state");
}

absl::StatusOr<std::optional<Watermarks>> ReadWatermarks(MDB_txn* txn, MDB_dbi meta) {
  PEERKV_ASSIGN_OR_RETURN(
      const std::optional<std::string_view> stored,
      lmdb::Get(txn, meta, codec::kMetaWatermarks, "read meta watermarks"));
  if (!stored.has_value()) return std::nullopt;
  PEERKV_ASSIGN_OR_RETURN(Watermarks watermarks, codec::DecodeWatermarks(*stored));
  return watermarks;
}

absl::Status WriteWatermarks(MDB_txn* txn, MDB_dbi meta, const Watermarks& watermarks) {
  return lmdb::Put(txn, meta, codec::kMetaWatermarks, codec::EncodeWatermarks(watermarks),
                   "write watermarks");
}

absl::StatusOr<std::optional<PeerCheckpoint>> ReadCheckpoint(MDB_txn* txn, MDB_dbi peers,
                                                             uint64_t peer_id) {
  PEERKV_ASSIGN_OR_RETURN(
      const std::optional<std::string_view> stored,
      lmdb::Get(txn, peers, codec::BigEndian64(peer_id), "read checkpoint"));
  if (!stored.has_value()) return std::nullopt;
  PEERKV_ASSIGN_OR_RETURN(const PeerCheckpoint checkpoint,
                          codec::DecodeCheckpoint(*stored, peer_id));
  return checkpoint;
}

absl::Status WriteCheckpoint(MDB_txn* txn, MDB_dbi peers, uint64_t peer_id,
                             const PeerCheckpoint& checkpoint) {
  return lmdb::Put(txn, peers, codec::BigEndian64(peer_id), codec::EncodeCheckpoint(checkpoint),
                   "write checkpoint");
}

absl::StatusOr<std::string_view> ReadValue(MDB_txn* txn, MDB_dbi log,
                                           std::string_view record_key, uint64_t seq) {
  PEERKV_ASSIGN_OR_RETURN(const codec::LogEntry entry, ReadEntry(txn, log, record_key, seq));
  return entry.value;
}

absl::StatusOr<codec::LogEntry> ReadEntry(MDB_txn* txn, MDB_dbi log,
                                          std::string_view record_key, uint64_t seq) {
  PEERKV_ASSIGN_OR_RETURN(const std::optional<std::string_view> stored,
                          lmdb::Get(txn, log, codec::BigEndian64(seq), "read log entry"));
  if (!stored.has_value()) {
    return absl::DataLossError(
        absl::StrFormat("log entry %d, which holds a current value, is missing", seq));
  }
  PEERKV_ASSIGN_OR_RETURN(const codec::LogEntry entry, codec::DecodeLogEntry(*stored));
  if (entry.record_key != record_key) {
    return absl::DataLossError(absl::StrFormat("log entry %d belongs to another key", seq));
  }
  return entry;
}

absl::StatusOr<codec::LogEntry> LogEntryReader::Read(std::string_view record_key, uint64_t seq) {
  MDB_val k, v;
  bool found = false;
  if (last_seq_ != 0 && seq == last_seq_ + 1) {
    found = mdb_cursor_get(cursor_.get(), &k, &v, MDB_NEXT) == MDB_SUCCESS &&
            k.mv_size == 8 && codec::GetBigEndian64(static_cast<const char*>(k.mv_data)) == seq;
  }
  if (!found) {
    key_.clear();
    codec::PutBigEndian64(&key_, seq);
    k = lmdb::Val(key_);
    const int rc = mdb_cursor_get(cursor_.get(), &k, &v, MDB_SET_KEY);
    if (rc == MDB_NOTFOUND) {
      return absl::DataLossError(
          absl::StrFormat("log entry %d, which holds a current value, is missing", seq));
    }
    PEERKV_RETURN_IF_ERROR(lmdb::Error(rc, "read log entry"));
  }
  last_seq_ = seq;
  PEERKV_ASSIGN_OR_RETURN(const codec::LogEntry entry, codec::DecodeLogEntry(lmdb::View(v)));
  if (entry.record_key != record_key) {
    return absl::DataLossError(absl::StrFormat("log entry %d belongs to another key", seq));
  }
  return entry;
}

}  // namespace peerkv::tables
