// store/tables.h: typed reads and writes of single entries of the store's
// LMDB databases (meta's ids, state and watermarks; a peer's checkpoint; a
// register's value in the log), over codec.h's layout and lmdb_util.h's
// calls, so that the store itself handles values, not bytes. Internal to
// store/.
#ifndef PEERKV_STORE_TABLES_H_
#define PEERKV_STORE_TABLES_H_

#include <lmdb.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "store/codec.h"
#include "store/lmdb_util.h"
#include "store/types.h"

namespace peerkv::tables {

// The store's databases in one write transaction, created if missing.
struct Dbis {
  MDB_dbi records = 0;
  MDB_dbi log = 0;
  MDB_dbi peers = 0;
  MDB_dbi meta = 0;
  // Records too far ahead (store/quarantine.h).
  MDB_dbi quarantine = 0;
  // store/range_table.h.
  MDB_dbi ranges = 0;
  // The conflict journal (store/conflict_journal.h).
  MDB_dbi conflicts = 0;
  // The per-keyspace change index (store/change_index.h).
  MDB_dbi change_index = 0;
};
// Databases a store's environment is opened for (mdb_env_set_maxdbs): the
// ones above, with room for more.
inline constexpr unsigned kMaxDbs = 12;
absl::Status OpenDbis(MDB_txn* txn, Dbis* dbis);

// A meta "format", "replica_id" or "incarnation" entry; nullopt if absent.
absl::StatusOr<std::optional<uint64_t>> ReadMetaU64(MDB_txn* txn, MDB_dbi meta,
                                                    std::string_view name);
absl::Status WriteMetaU64(MDB_txn* txn, MDB_dbi meta, std::string_view name,
                          uint64_t value);

// Meta "state"; nullopt if absent (a store with no commit yet).
absl::StatusOr<std::optional<codec::MetaState>> ReadMetaState(MDB_txn* txn, MDB_dbi meta);
absl::Status WriteMetaState(MDB_txn* txn, MDB_dbi meta, const codec::MetaState& state);

// Meta "watermarks"; nullopt if absent.
absl::StatusOr<std::optional<Watermarks>> ReadWatermarks(MDB_txn* txn, MDB_dbi meta);
absl::Status WriteWatermarks(MDB_txn* txn, MDB_dbi meta, const Watermarks& watermarks);

// The checkpoint of `peer_id` in `peers`; nullopt if absent.
absl::StatusOr<std::optional<PeerCheckpoint>> ReadCheckpoint(MDB_txn* txn, MDB_dbi peers,
                                                             uint64_t peer_id);
absl::Status WriteCheckpoint(MDB_txn* txn, MDB_dbi peers, uint64_t peer_id,
                             const PeerCheckpoint& checkpoint);

// The value of the register whose header names log entry `seq`, checked to
// belong to `record_key`; DataLoss if the entry is missing or another
// key's. The view lives as long as `txn`.
absl::StatusOr<std::string_view> ReadValue(MDB_txn* txn, MDB_dbi log,
                                           std::string_view record_key, uint64_t seq);
// As ReadValue, the whole entry (its signature and mark too).
absl::StatusOr<codec::LogEntry> ReadEntry(MDB_txn* txn, MDB_dbi log,
                                          std::string_view record_key, uint64_t seq);

// ReadEntry through one cursor, for a scan of the registers (a snapshot
// page): when the seq asked for follows the one read before (registers
// written in key order), it is the cursor's next entry, reached without a
// descent of the log's tree; any other seq is sought. Lives inside `txn`.
class LogEntryReader {
 public:
  absl::Status Open(MDB_txn* txn, MDB_dbi log) { return cursor_.Open(txn, log); }
  absl::StatusOr<codec::LogEntry> Read(std::string_view record_key, uint64_t seq);

 private:
  lmdb::Cursor cursor_;
  uint64_t last_seq_ = 0;  // 0: none read yet
  std::string key_;
};

}  // namespace peerkv::tables

#endif  // PEERKV_STORE_TABLES_H_
