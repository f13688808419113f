// store/lmdb_util.cc: LMDB return codes, transactions and cursors.
#include "store/lmdb_util.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/cord.h"
#include "absl/strings/str_format.h"

namespace peerkv::lmdb {
namespace {

constexpr char kMapFullPayload[] = "peerkv/lmdb/MDB_MAP_FULL";

}  // namespace

absl::Status Error(int rc, std::string_view operation) {
  if (rc == MDB_SUCCESS) return absl::OkStatus();
  const std::string message =
      absl::StrFormat("%s: %s (%d)", operation, mdb_strerror(rc), rc);
  switch (rc) {
    case MDB_MAP_FULL: {
      absl::Status status = absl::ResourceExhaustedError(message);
      status.SetPayload(kMapFullPayload, absl::Cord("1"));
      return status;
    }
    case ENOSPC:
    case EFBIG:
    case EDQUOT:
      return absl::ResourceExhaustedError(message);
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_VERSION_MISMATCH:
    case MDB_INVALID:
      return absl::DataLossError(message);
    case EACCES:
    case EPERM:
    case EROFS:
      return absl::PermissionDeniedError(message);
    case ENOTDIR:
    case EEXIST:
      return absl::FailedPreconditionError(message);
    default:
      return absl::InternalError(message);
  }
}

bool IsMapFull(const absl::Status& status) {
  return status.GetPayload(kMapFullPayload).has_value();
}

absl::StatusOr<std::optional<std::string_view>> Get(MDB_txn* txn, MDB_dbi dbi,
                                                    std::string_view key,
                                                    std::string_view operation) {
  MDB_val k = Val(key), v;
  const int rc = mdb_get(txn, dbi, &k, &v);
  if (rc == MDB_NOTFOUND) return std::nullopt;
  if (rc != MDB_SUCCESS) return Error(rc, operation);
  return View(v);
}

absl::Status Put(MDB_txn* txn, MDB_dbi dbi, std::string_view key, std::string_view value,
                 std::string_view operation, unsigned flags) {
  MDB_val k = Val(key), v = Val(value);
  return Error(mdb_put(txn, dbi, &k, &v, flags), operation);
}

absl::StatusOr<uint64_t> Entries(MDB_txn* txn, MDB_dbi dbi, std::string_view operation) {
  MDB_stat stat;
  const int rc = mdb_stat(txn, dbi, &stat);
  if (rc != MDB_SUCCESS) return Error(rc, operation);
  return stat.ms_entries;
}

absl::Status Txn::Begin(MDB_env* env, unsigned flags) {
  Abort();
  sync_meta_ = (flags & (MDB_RDONLY | MDB_NOMETASYNC)) == 0;
  const int rc = mdb_txn_begin(env, nullptr, flags & ~MDB_NOMETASYNC, &txn_);
  if (rc != MDB_SUCCESS) {
    txn_ = nullptr;
    return Error(rc, "mdb_txn_begin");
  }
  return absl::OkStatus();
}

absl::Status Txn::Commit() {
  MDB_txn* txn = txn_;
  txn_ = nullptr;
  MDB_env* env = mdb_txn_env(txn);
  // mdb_txn_commit frees the transaction even when it fails.
  const int rc = mdb_txn_commit(txn);
  if (rc != MDB_SUCCESS) return Error(rc, "mdb_txn_commit");
  // Not forced: a no-op in an environment opened with MDB_NOSYNC.
  if (sync_meta_) {
    const int synced = mdb_env_sync(env, 0);
    if (synced != MDB_SUCCESS) {
      std::fprintf(stderr, "mdb_env_sync after a commit failed: %s\n", mdb_strerror(synced));
      std::abort();
    }
  }
  return absl::OkStatus();
}

void Txn::Abort() {
  if (txn_ != nullptr) mdb_txn_abort(txn_);
  txn_ = nullptr;
}

absl::Status Cursor::Open(MDB_txn* txn, MDB_dbi dbi) {
  const int rc = mdb_cursor_open(txn, dbi, &cursor_);
  if (rc != MDB_SUCCESS) {
    cursor_ = nullptr;
    return Error(rc, "mdb_cursor_open");
  }
  return absl::OkStatus();
}

}  // namespace peerkv::lmdb
