// store/lmdb_util.h: the thin layer between the store and the LMDB C API:
// translation of return codes to absl::Status (in exactly one function),
// MDB_val conversions, and a transaction wrapper that aborts unless
// committed. Internal to store/.
#ifndef PEERKV_STORE_LMDB_UTIL_H_
#define PEERKV_STORE_LMDB_UTIL_H_

#include <lmdb.h>

#include <cstdint>
#include <optional>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace peerkv::lmdb {

// The only translation of LMDB and errno codes: MDB_MAP_FULL, ENOSPC,
// EFBIG and EDQUOT become ResourceExhausted; MDB_CORRUPTED, MDB_PAGE_NOTFOUND
// and MDB_VERSION_MISMATCH DataLoss; EACCES, EPERM and EROFS
// PermissionDenied; ENOTDIR and EEXIST FailedPrecondition; the rest
// Internal. The message names `operation`. MDB_MAP_FULL also carries a
// payload that IsMapFull() finds, however the status travels.
absl::Status Error(int rc, std::string_view operation);

// True if `status` is (or was made from) an MDB_MAP_FULL, from whichever
// LMDB call: the map must grow and the transaction be retried.
bool IsMapFull(const absl::Status& status);

inline MDB_val Val(std::string_view bytes) {
  return MDB_val{bytes.size(), const_cast<char*>(bytes.data())};
}
inline std::string_view View(const MDB_val& val) {
  return std::string_view(static_cast<const char*>(val.mv_data), val.mv_size);
}

// The value under `key` in `dbi` (a view that lives as long as `txn`), or
// nullopt if there is none. Errors name `operation`.
absl::StatusOr<std::optional<std::string_view>> Get(MDB_txn* txn, MDB_dbi dbi,
                                                    std::string_view key,
                                                    std::string_view operation);
// mdb_put of `value` under `key` with `flags`. Errors name `operation`.
absl::Status Put(MDB_txn* txn, MDB_dbi dbi, std::string_view key, std::string_view value,
                 std::string_view operation, unsigned flags = 0);
// The number of entries in `dbi`. Errors name `operation`.
absl::StatusOr<uint64_t> Entries(MDB_txn* txn, MDB_dbi dbi, std::string_view operation);

// An LMDB transaction that aborts in its destructor unless committed.
// Lives on one thread and never outlives the store call that made it.
class Txn {
 public:
  Txn() = default;
  ~Txn() { Abort(); }
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;

  // Begins a read-only (`flags` = MDB_RDONLY) or write transaction. The
  // store opens its environment with MDB_NOMETASYNC (a commit writes the
  // meta page without flushing it), and Commit of a write transaction
  // then flushes it with mdb_env_sync, unless `flags` has MDB_NOMETASYNC:
  // that commit's meta page stays unflushed until the next flushed
  // commit. LMDB 0.9 ignores MDB_NOMETASYNC in mdb_txn_begin (only its
  // 1.0 branch takes it per transaction), and mdb_env_set_flags around a
  // commit would change flags that reads on other threads use.
  absl::Status Begin(MDB_env* env, unsigned flags);
  // Aborts the process if the meta page's flush fails: the commit is
  // visible then and its durability unknown (after a failed fsync Linux
  // may drop the dirty pages), and LMDB itself stops an environment whose
  // meta page write failed; the store reopens from what is on disk.
  absl::Status Commit();
  void Abort();

  MDB_txn* get() const { return txn_; }

 private:
  MDB_txn* txn_ = nullptr;
  bool sync_meta_ = false;
};

// A cursor closed in its destructor or by Close(). REQUIRES: closed before
// its transaction commits or aborts (LMDB frees a write transaction's
// cursors when it ends; closing one afterwards would free it twice).
class Cursor {
 public:
  Cursor() = default;
  ~Cursor() { Close(); }
  void Close() {
    if (cursor_ != nullptr) mdb_cursor_close(cursor_);
    cursor_ = nullptr;
  }
  Cursor(const Cursor&) = delete;
  Cursor& operator=(const Cursor&) = delete;

  absl::Status Open(const Txn& txn, MDB_dbi dbi) { return Open(txn.get(), dbi); }
  absl::Status Open(MDB_txn* txn, MDB_dbi dbi);
  MDB_cursor* get() const { return cursor_; }

 private:
  MDB_cursor* cursor_ = nullptr;
};

}  // namespace peerkv::lmdb

#endif  // PEERKV_STORE_LMDB_UTIL_H_
