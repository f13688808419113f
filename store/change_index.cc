// store/change_index.cc: the per-keyspace change index's keys, upkeep and
// rebuild.
#include "store/change_index.h"

#include "absl/strings/str_format.h"
#include "common/macros.h"
#include "store/codec.h"
#include "store/lmdb_util.h"

namespace peerkv::change_index {

using lmdb::Val;
using lmdb::View;

void EncodeKey(std::string_view keyspace, uint64_t seq, std::string* out) {
  out->clear();
  out->reserve(keyspace.size() + 1 + 8);
  out->append(keyspace);
  out->push_back('\0');
  codec::PutBigEndian64(out, seq);
}

absl::Status DecodeKey(std::string_view stored, std::string_view* keyspace, uint64_t* seq) {
  if (stored.size() < 10 || stored[stored.size() - 9] != '\0') {
    return absl::DataLossError(
        absl::StrFormat("change index key of %d bytes is not keyspace, NUL, seq", stored.size()));
  }
  *keyspace = stored.substr(0, stored.size() - 9);
  *seq = codec::GetBigEndian64(stored.data() + stored.size() - 8);
  return absl::OkStatus();
}

absl::Status Put(MDB_cursor* cursor, std::string_view keyspace, uint64_t seq,
                 std::string_view header, std::string* buffer) {
  EncodeKey(keyspace, seq, buffer);
  MDB_val k = Val(*buffer), v = Val(header);
  int rc = mdb_cursor_put(cursor, &k, &v, MDB_APPEND);
  if (rc == MDB_KEYEXIST) {
    // Not last (another keyspace sorts after it): an ordinary insert.
    k = Val(*buffer);
    v = Val(header);
    rc = mdb_cursor_put(cursor, &k, &v, 0);
  }
  return lmdb::Error(rc, "write change index");
}

absl::Status Delete(MDB_txn* txn, MDB_dbi index, std::string_view keyspace, uint64_t seq) {
  std::string key;
  EncodeKey(keyspace, seq, &key);
  MDB_val k = Val(key);
  const int rc = mdb_del(txn, index, &k, nullptr);
  if (rc == MDB_NOTFOUND) return absl::OkStatus();
  return lmdb::Error(rc, "delete from change index");
}

absl::StatusOr<uint64_t> Rebuild(MDB_txn* txn, MDB_dbi records, MDB_dbi index) {
  lmdb::Cursor registers, out;
  PEERKV_RETURN_IF_ERROR(registers.Open(txn, records));
  PEERKV_RETURN_IF_ERROR(out.Open(txn, index));
  uint64_t written = 0;
  std::string buffer;
  MDB_val k, v;
  int rc = mdb_cursor_get(registers.get(), &k, &v, MDB_FIRST);
  for (; rc == MDB_SUCCESS; rc = mdb_cursor_get(registers.get(), &k, &v, MDB_NEXT)) {
    std::string_view keyspace, key;
    PEERKV_RETURN_IF_ERROR(codec::SplitRecordKey(View(k), &keyspace, &key));
    PEERKV_ASSIGN_OR_RETURN(const codec::RecordHeader header, codec::DecodeRecordHeader(View(v)));
    PEERKV_RETURN_IF_ERROR(Put(out.get(), keyspace, header.seq, View(v), &buffer));
    ++written;
  }
  if (rc != MDB_NOTFOUND) return lmdb::Error(rc, "read records to build the change index");
  return written;
}

absl::StatusOr<std::vector<std::string>> Keyspaces(MDB_txn* txn, MDB_dbi index) {
  std::vector<std::string> out;
  lmdb::Cursor cursor;
  PEERKV_RETURN_IF_ERROR(cursor.Open(txn, index));
  MDB_val k, v;
  int rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_FIRST);
  std::string next;
  while (rc == MDB_SUCCESS) {
    std::string_view keyspace;
    uint64_t seq = 0;
    PEERKV_RETURN_IF_ERROR(DecodeKey(View(k), &keyspace, &seq));
    out.emplace_back(keyspace);
    // The first key after every "keyspace\0...": "keyspace\1".
    next.assign(keyspace);
    next.push_back('\1');
    k = Val(next);
    rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_SET_RANGE);
  }
  if (rc != MDB_NOTFOUND) return lmdb::Error(rc, "read change index keyspaces");
  return out;
}

}  // namespace peerkv::change_index
