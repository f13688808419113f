// store/store_conflicts.cc: the store's conflict journal (README "Conflict
// journal"): losers that the writer's transaction found (GroupTxn) written
// to the "conflicts" table within the per-keyspace bounds, the mirror
// loaded at open, and the calls that list, restore and clear entries.
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/macros.h"
#include "store/codec.h"
#include "store/conflict_journal.h"
#include "store/group_txn.h"
#include "store/lmdb_util.h"
#include "store/read_txn.h"
#include "store/store.h"
#include "store/validation.h"

namespace peerkv {

using lmdb::Cursor;
using lmdb::Val;
using lmdb::View;

absl::Status Store::LoadConflicts(MDB_txn* txn) {
  Cursor cursor;
  PEERKV_RETURN_IF_ERROR(cursor.Open(txn, conflicts_dbi_));
  std::vector<std::string> malformed;
  absl::Status first_reason;
  absl::MutexLock lock(&conflicts_mu_);
  MDB_val k, v;
  int rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_FIRST);
  while (rc == MDB_SUCCESS) {
    const std::string_view key = View(k), value = View(v);
    std::string_view keyspace;
    uint64_t id = 0;
    absl::Status valid = conflicts::DecodeKey(key, &keyspace, &id);
    absl::StatusOr<ConflictEntry> entry =
        valid.ok() ? conflicts::DecodeValue(keyspace, value) : absl::StatusOr<ConflictEntry>(valid);
    if (entry.ok()) {
      conflicts_->Get(keyspace).Add(
          id, conflicts::Index::Entry{entry->key, entry->loser, conflicts::EntryBytes(key, value)});
    } else {
      if (malformed.empty()) first_reason = entry.status();
      malformed.emplace_back(key);
    }
    rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_NEXT);
  }
  if (rc != MDB_NOTFOUND) return lmdb::Error(rc, "read conflict journal");
  cursor.Close();
  if (malformed.empty()) return absl::OkStatus();
  for (const std::string& key : malformed) {
    MDB_val dk = Val(key);
    PEERKV_RETURN_IF_ERROR(lmdb::Error(mdb_del(txn, conflicts_dbi_, &dk, nullptr),
                                       "delete malformed conflict journal entry"));
  }
  Log(absl::StrFormat("peerkv: dropped %d conflict journal entr%s that did not decode (first: %s)",
                      malformed.size(), malformed.size() == 1 ? "y" : "ies",
                      first_reason.ToString()));
  return absl::OkStatus();
}

absl::Status Store::JournalConflicts(writer::GroupTxn& txn, conflicts::Index* plan) {
  if (txn.conflicts().empty()) return absl::OkStatus();
  const int64_t now_ms = clock_->RealNowMillis();
  absl::MutexLock lock(&conflicts_mu_);
  for (const ConflictEntry& found : txn.conflicts()) {
    // The keyspace's state as this transaction leaves it so far.
    const conflicts::Index::Keyspace* planned = plan->Find(found.keyspace);
    if (planned == nullptr) {
      const conflicts::Index::Keyspace* held = conflicts_->Find(found.keyspace);
      plan->Replace(found.keyspace, held != nullptr ? *held : conflicts::Index::Keyspace{});
    }
    conflicts::Index::Keyspace& journal = plan->Get(found.keyspace);
    // The same loser pulled again (from another peer, or re-pulled).
    if (journal.Find(found.key, found.loser) != 0) continue;
    ConflictEntry entry = found;
    entry.when_ms = now_ms;
    const uint64_t id = journal.next_id;
    const std::string key = conflicts::EncodeKey(entry.keyspace, id);
    const std::string value = conflicts::EncodeValue(entry);
    const size_t bytes = conflicts::EntryBytes(key, value);
    if (bytes > options_.max_conflict_bytes) {
      // Larger than the whole bound: kept nowhere, counted.
      ++journal.dropped;
      continue;
    }
    // Oldest first, until the new entry fits.
    while (!journal.entries.empty() &&
           (journal.entries.size() + 1 > options_.max_conflict_entries ||
            journal.bytes + bytes > options_.max_conflict_bytes)) {
      const uint64_t oldest = journal.entries.begin()->first;
      PEERKV_RETURN_IF_ERROR(txn.DeleteConflict(conflicts::EncodeKey(entry.keyspace, oldest)));
      journal.Remove(oldest);
      ++journal.dropped;
    }
    PEERKV_RETURN_IF_ERROR(txn.PutConflict(key, value));
    journal.Add(id, conflicts::Index::Entry{entry.key, entry.loser, bytes});
  }
  return absl::OkStatus();
}

void Store::InstallConflicts(conflicts::Index& plan) {
  if (plan.keyspaces().empty()) return;
  absl::MutexLock lock(&conflicts_mu_);
  for (const auto& [keyspace, state] : plan.keyspaces()) conflicts_->Replace(keyspace, state);
}

absl::StatusOr<ConflictList> Store::ListConflicts(std::string_view keyspace,
                                                  std::optional<std::string_view> key) const {
  PEERKV_RETURN_IF_ERROR(ValidateKeyspace(keyspace));
  if (key.has_value()) PEERKV_RETURN_IF_ERROR(ValidateKey(*key));
  ConflictList list;
  ReadTxn txn(*this);
  PEERKV_RETURN_IF_ERROR(txn.Begin());
  Cursor cursor;
  PEERKV_RETURN_IF_ERROR(cursor.Open(txn.get(), conflicts_dbi_));
  const std::string start = conflicts::EncodeKey(keyspace, 0);
  const std::string_view prefix = std::string_view(start).substr(0, keyspace.size() + 1);
  MDB_val k = Val(start), v;
  int rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_SET_RANGE);
  size_t bytes = 0;
  while (rc == MDB_SUCCESS) {
    const std::string_view stored_key = View(k);
    if (!stored_key.starts_with(prefix) || stored_key.size() != prefix.size() + 8) break;
    PEERKV_ASSIGN_OR_RETURN(ConflictEntry entry, conflicts::DecodeValue(keyspace, View(v)));
    if (!key.has_value() || entry.key == *key) {
      const size_t entry_bytes = entry.key.size() + entry.loser_value.size() + kRecordOverheadBytes;
      if (!list.entries.empty() && bytes + entry_bytes > kMaxPageBytes) {
        list.more = true;
        break;
      }
      bytes += entry_bytes;
      list.entries.push_back(std::move(entry));
    }
    rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_NEXT);
  }
  if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) return lmdb::Error(rc, "read conflict journal");
  return list;
}

absl::StatusOr<Version> Store::RestoreConflict(std::string_view keyspace, std::string_view key,
                                               const Version& version) {
  PEERKV_RETURN_IF_ERROR(ValidateKeyspace(keyspace));
  PEERKV_RETURN_IF_ERROR(ValidateKey(key));
  uint64_t id = 0;
  {
    absl::MutexLock lock(&conflicts_mu_);
    const conflicts::Index::Keyspace* journal = conflicts_->Find(keyspace);
    if (journal != nullptr) id = journal->Find(key, version);
  }
  auto not_found = [&] {
    return absl::NotFoundError(
        absl::StrFormat("the conflict journal of keyspace '%s' holds no version %s of key '%s'",
                        keyspace, version.ToString(), key));
  };
  if (id == 0) return not_found();
  const std::string journal_key = conflicts::EncodeKey(keyspace, id);
  ConflictEntry entry;
  {
    ReadTxn txn(*this);
    PEERKV_RETURN_IF_ERROR(txn.Begin());
    PEERKV_ASSIGN_OR_RETURN(
        const std::optional<std::string_view> stored,
        lmdb::Get(txn.get(), conflicts_dbi_, journal_key, "read conflict journal"));
    // Dropped (over the bounds) or restored since the look-up.
    if (!stored.has_value()) return not_found();
    PEERKV_ASSIGN_OR_RETURN(entry, conflicts::DecodeValue(keyspace, *stored));
  }
  std::vector<Mutation> write;
  write.push_back(Mutation{entry.keyspace, entry.key,
                           entry.loser_deleted ? std::nullopt
                                               : std::optional<std::string>(entry.loser_value)});
  // A local write: it replaces what the key holds here, so it is no
  // conflict itself.
  PEERKV_ASSIGN_OR_RETURN(const std::vector<Version> versions, Write(std::move(write)));
  PEERKV_RETURN_IF_ERROR(RunOnWriter([&]() -> absl::Status {
    lmdb::Txn txn;
    PEERKV_RETURN_IF_ERROR(txn.Begin(env_, 0));
    MDB_val dk = Val(journal_key);
    const int rc = mdb_del(txn.get(), conflicts_dbi_, &dk, nullptr);
    if (rc == MDB_NOTFOUND) return absl::OkStatus();
    PEERKV_RETURN_IF_ERROR(lmdb::Error(rc, "delete from conflict journal"));
    PEERKV_RETURN_IF_ERROR(txn.Commit());
    absl::MutexLock lock(&conflicts_mu_);
    conflicts_->Get(keyspace).Remove(id);
    return absl::OkStatus();
  }));
  return versions.front();
}

absl::StatusOr<uint64_t> Store::ClearConflicts(std::string_view keyspace) {
  PEERKV_RETURN_IF_ERROR(ValidateKeyspace(keyspace));
  uint64_t cleared = 0;
  PEERKV_RETURN_IF_ERROR(RunOnWriter([&]() -> absl::Status {
    std::vector<uint64_t> ids;
    {
      absl::MutexLock lock(&conflicts_mu_);
      const conflicts::Index::Keyspace* journal = conflicts_->Find(keyspace);
      if (journal == nullptr) return absl::OkStatus();
      for (const auto& [id, entry] : journal->entries) ids.push_back(id);
    }
    if (ids.empty()) return absl::OkStatus();
    lmdb::Txn txn;
    PEERKV_RETURN_IF_ERROR(txn.Begin(env_, 0));
    for (uint64_t id : ids) {
      const std::string journal_key = conflicts::EncodeKey(keyspace, id);
      MDB_val dk = Val(journal_key);
      const int rc = mdb_del(txn.get(), conflicts_dbi_, &dk, nullptr);
      if (rc == MDB_NOTFOUND) continue;
      PEERKV_RETURN_IF_ERROR(lmdb::Error(rc, "delete from conflict journal"));
    }
    PEERKV_RETURN_IF_ERROR(txn.Commit());
    absl::MutexLock lock(&conflicts_mu_);
    conflicts::Index::Keyspace& journal = conflicts_->Get(keyspace);
    for (uint64_t id : ids) journal.Remove(id);
    cleared = ids.size();
    return absl::OkStatus();
  }));
  return cleared;
}

}  // namespace peerkv
