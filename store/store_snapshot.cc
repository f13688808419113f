// store/store_snapshot.cc: snapshot bootstrap on the store's side (README
// "Snapshot bootstrap"): reading every register in records-table order in
// pages, and loading such pages into a new replica with the durable
// bootstrap marker.
#include <algorithm>
#include <tuple>

#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "common/macros.h"
#include "store/codec.h"
#include "store/lmdb_util.h"
#include "store/read_txn.h"
#include "store/store.h"
#include "store/tables.h"
#include "store/validation.h"

namespace peerkv {

using lmdb::Cursor;
using lmdb::Val;
using lmdb::View;

absl::StatusOr<Store::SnapshotPage> Store::ReadSnapshot(std::string_view after_keyspace,
                                                        std::string_view after_key,
                                                        size_t max_records, size_t max_bytes,
                                                        uint64_t max_value_bytes) const {
  if (max_records == 0 || max_records > kMaxSnapshotRecords) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "snapshot max_records is %d; it must be 1..%d", max_records, kMaxSnapshotRecords));
  }
  std::string start;
  if (!after_keyspace.empty()) {
    PEERKV_RETURN_IF_ERROR(ValidateKeyspace(after_keyspace));
    if (after_key.size() > kMaxKeyBytes) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "snapshot after_key is %d bytes; the limit is %d", after_key.size(), kMaxKeyBytes));
    }
    start = codec::RecordKey(after_keyspace, after_key);
  } else if (!after_key.empty()) {
    return absl::InvalidArgumentError("snapshot after_key is set without after_keyspace");
  }
  SnapshotPage page;
  // Room for as many as the page may hold (untouched room costs no memory).
  page.records.reserve(std::min(max_records, max_bytes / kRecordOverheadBytes + 1));
  ReadTxn txn(*this);
  PEERKV_RETURN_IF_ERROR(txn.Begin());
  Cursor cursor;
  PEERKV_RETURN_IF_ERROR(cursor.Open(txn.get(), records_dbi_));
  tables::LogEntryReader log;
  PEERKV_RETURN_IF_ERROR(log.Open(txn.get(), log_dbi_));
  MDB_val k = Val(start), v;
  int rc = start.empty() ? mdb_cursor_get(cursor.get(), &k, &v, MDB_FIRST)
                         : mdb_cursor_get(cursor.get(), &k, &v, MDB_SET_RANGE);
  if (rc == MDB_SUCCESS && !start.empty() && View(k) == start) {
    rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_NEXT);
  }
  size_t bytes = 0;
  while (rc == MDB_SUCCESS) {
    if (page.records.size() == max_records || (bytes >= max_bytes && !page.records.empty())) {
      return page;
    }
    PEERKV_ASSIGN_OR_RETURN(const codec::RecordHeader header, codec::DecodeRecordHeader(View(v)));
    PEERKV_ASSIGN_OR_RETURN(const codec::LogEntry entry, log.Read(View(k), header.seq));
    const std::string_view value = entry.value;
    if (max_value_bytes == 0 || value.size() <= max_value_bytes) {
      PEERKV_ASSIGN_OR_RETURN(
          Record record, codec::MakeRecord(header, codec::LogEntry{View(k), 0, value, std::nullopt,
                                                                   entry.signature}));
      bytes += record.keyspace.size() + record.key.size() + record.value.size() +
               kRecordOverheadBytes;
      page.records.push_back(std::move(record));
    }
    rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_NEXT);
  }
  if (rc != MDB_NOTFOUND) return lmdb::Error(rc, "read snapshot");
  page.done = true;
  return page;
}

absl::StatusOr<MergeResult> Store::LoadSnapshotPage(std::vector<Record> records,
                                                    std::optional<BootstrapMarker> progress,
                                                    std::optional<CheckpointUpdate> complete,
                                                    MergeSource from) {
  if (progress.has_value() == complete.has_value()) {
    return absl::InvalidArgumentError(
        "a snapshot page carries either its progress or its completion");
  }
  for (size_t i = 1; i < records.size(); ++i) {
    const Record& a = records[i - 1];
    const Record& b = records[i];
    if (!(std::tie(a.keyspace, a.key) < std::tie(b.keyspace, b.key))) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "snapshot page record %d (keyspace '%s') is not after record %d in key order", i,
          b.keyspace, i - 1));
    }
  }
  const bool last_page = complete.has_value();
  absl::Notification finished;
  absl::StatusOr<MergeResult> result;
  SubmitMerge(
      std::move(records), std::move(complete),
      [&](absl::StatusOr<MergeResult> r) {
        if (r.ok()) {
          absl::MutexLock lock(&bootstrap_mu_);
          bootstrap_ = progress;
        }
        result = std::move(r);
        finished.Notify();
      },
      /*wait_for_room=*/true, std::optional<std::optional<BootstrapMarker>>(progress), from,
      // A page in progress is committed without the meta page's fsync (one
      // fdatasync, not two): a machine crash may lose it and the pages after
      // it together with the marker that counts them, so the snapshot
      // resumes from an earlier page. The last page, which claims the
      // peer's checkpoint and watermarks, waits for its fsync.
      MergeOptions{.wait_for_sync = last_page});
  finished.WaitForNotification();
  return result;
}

std::optional<BootstrapMarker> Store::Bootstrap() const {
  absl::MutexLock lock(&bootstrap_mu_);
  return bootstrap_;
}

}  // namespace peerkv
