// store/change_index.h: the per-keyspace change index (README "Filtered
// replication"): for every register's current log entry one key (keyspace,
// NUL, big-endian seq) in the "ks_changes" database whose value is the
// register's header (codec::RecordHeader: version, tombstone flag, seq),
// written in the transaction that appends the entry, deleted in the one
// that supersedes it (an overwrite) or drops it (tombstone collection), so
// every entry is a current change and a read of the changes
// of some keyspaces (Store::ChangesSince with a keyspace filter: a friend's
// pull, a watch) seeks to each keyspace's part and costs what matches, not
// the whole log. Keyspace names hold no NUL, so "ks\0" bounds exactly the
// entries of ks. Internal to store/.
#ifndef PEERKV_STORE_CHANGE_INDEX_H_
#define PEERKV_STORE_CHANGE_INDEX_H_

#include <lmdb.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace peerkv::change_index {

// The index key of log entry `seq` of `keyspace`, into `out` (cleared).
void EncodeKey(std::string_view keyspace, uint64_t seq, std::string* out);
// Splits an index key; DataLoss if it is not one.
absl::Status DecodeKey(std::string_view stored, std::string_view* keyspace, uint64_t* seq);

// Puts the index entry of log entry `seq` with `header` (its encoded
// RecordHeader) through `cursor` (of the index database, in a write
// transaction): appended when it sorts last (a merge of one keyspace),
// else inserted.
absl::Status Put(MDB_cursor* cursor, std::string_view keyspace, uint64_t seq,
                 std::string_view header, std::string* buffer);
// Deletes it; absent is not an error.
absl::Status Delete(MDB_txn* txn, MDB_dbi index, std::string_view keyspace, uint64_t seq);

// Fills `index` from every register of `records` (a store of format 4 or
// older being upgraded), in `txn`. O(registers). Returns how many it wrote.
absl::StatusOr<uint64_t> Rebuild(MDB_txn* txn, MDB_dbi records, MDB_dbi index);

// The keyspaces that have index entries, in name order: one seek per
// keyspace (O(keyspaces x log entries' depth)), not a scan.
absl::StatusOr<std::vector<std::string>> Keyspaces(MDB_txn* txn, MDB_dbi index);

}  // namespace peerkv::change_index

#endif  // PEERKV_STORE_CHANGE_INDEX_H_
