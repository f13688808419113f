// store/store.cc: the LMDB-backed last-writer-wins store: opening the
// environment (in a DataDir), the group-commit writer thread, merge, reads,
// log compaction and map growth.
#include "store/store.h"

#include <algorithm>
#include <cstdio>
#include <random>
#include <tuple>
#include <utility>
#include <variant>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "common/macros.h"
#include "common/metrics.h"
#include "store/change_index.h"
#include "store/codec.h"
#include "store/conflict_journal.h"
#include "store/data_dir.h"
#include "store/group_txn.h"
#include "store/lmdb_util.h"
#include "store/read_txn.h"
#include "store/replica_id.h"
#include "store/tables.h"
#include "store/write_request.h"

namespace peerkv {
namespace {

using lmdb::Cursor;
using lmdb::Txn;
using lmdb::Val;
using lmdb::View;
using writer::Compaction;
using writer::GroupTxn;
using writer::LocalWrite;
using writer::MetaSwitch;
using writer::Overloaded;
using writer::RemoteBatch;

constexpr size_t kCompactionStepEntries = 8192;
constexpr int kMaxMapGrowthAttempts = 64;

// A new store's replica id and incarnation, in that order: from `seed` if
// given (a replayable simulation), else from operating-system entropy; the
// id minted from `key` (DeriveReplicaId) if it is not empty, and never
// `avoid`. Never 0.
std::pair<uint64_t, uint64_t> DrawIds(std::optional<uint64_t> seed, std::string_view key,
                                      uint64_t avoid = 0) {
  std::seed_seq seeds{seed.value_or(0)};
  absl::BitGen os_random;
  std::mt19937_64 seeded(seeds);
  auto draw = [&]() -> uint64_t {
    uint64_t v = 0;
    while (v == 0) v = seed.has_value() ? seeded() : absl::Uniform<uint64_t>(os_random);
    return v;
  };
  if (!key.empty()) {
    // The incarnation is the id's nonce: drawn until it mints a usable id.
    for (;;) {
      const uint64_t incarnation = draw();
      const uint64_t replica_id = DeriveReplicaId(key, incarnation);
      if (replica_id != 0 && replica_id != avoid) return {replica_id, incarnation};
    }
  }
  uint64_t replica_id = draw();
  while (replica_id == avoid) replica_id = draw();
  const uint64_t incarnation = draw();
  return {replica_id, incarnation};
}

// The full record for a records-table entry.
absl::StatusOr<Record> ReadRecord(MDB_txn* txn, MDB_dbi log_dbi,
                                  std::string_view record_key,
                                  const codec::RecordHeader& header) {
  PEERKV_ASSIGN_OR_RETURN(const codec::LogEntry entry,
                          tables::ReadEntry(txn, log_dbi, record_key, header.seq));
  return codec::MakeRecord(header, codec::LogEntry{record_key, 0, entry.value, std::nullopt,
                                                   entry.signature});
}

size_t RecordBytes(const Record& r) {
  return r.keyspace.size() + r.key.size() + r.value.size() + r.signature.size() +
         kRecordOverheadBytes;
}

// Key order makes neighbouring records share B-tree pages: one descent per
// record over warm pages, and fewer dirty pages per commit.
void SortByRecordKey(std::vector<Record>& records) {
  std::sort(records.begin(), records.end(), [](const Record& a, const Record& b) {
    if (a.keyspace != b.keyspace) return a.keyspace < b.keyspace;
    if (a.key != b.key) return a.key < b.key;
    return a.version < b.version;
  });
}

absl::StatusOr<std::optional<Record>> KeptChange(const codec::RecordHeader& header, uint64_t seq,
                                                 const codec::LogEntry& entry,
                                                 const ChangesFilter& filter);

// The record log entry `seq` holds, if it is still the register's current
// one and `filter` keeps it; else nullopt.
absl::StatusOr<std::optional<Record>> CurrentChange(MDB_txn* txn, MDB_dbi records_dbi,
                                                    uint64_t seq,
                                                    const codec::LogEntry& entry,
                                                    const ChangesFilter& filter) {
  if (!filter.keyspace.empty()) {
    std::string_view keyspace, key;
    PEERKV_RETURN_IF_ERROR(codec::SplitRecordKey(entry.record_key, &keyspace, &key));
    if (keyspace != filter.keyspace || !key.starts_with(filter.key_prefix)) {
      return std::nullopt;
    }
  }
  PEERKV_ASSIGN_OR_RETURN(
      const std::optional<std::string_view> stored,
      lmdb::Get(txn, records_dbi, entry.record_key, "read record for log entry"));
  if (!stored.has_value()) return std::nullopt;
  PEERKV_ASSIGN_OR_RETURN(const codec::RecordHeader header, codec::DecodeRecordHeader(*stored));
  return KeptChange(header, seq, entry, filter);
}

// The record of log entry `seq`, whose register's header is `header`, if
// it is still the register's current one and `filter`'s rules (but the
// keyspace) keep it.
absl::StatusOr<std::optional<Record>> KeptChange(const codec::RecordHeader& header, uint64_t seq,
                                                 const codec::LogEntry& entry,
                                                 const ChangesFilter& filter) {
  const bool covered = filter.covered != nullptr && filter.covered->Covers(header.version);
  const bool lacked_own = filter.send_uncovered_of != 0 && filter.covered != nullptr &&
                          header.version.origin == filter.send_uncovered_of && !covered;
  const bool skip = (!lacked_own && filter.skip_source != 0 && entry.source == filter.skip_source) ||
                    (!lacked_own && filter.skip_origin != 0 &&
                     header.version.origin == filter.skip_origin) ||
                    (filter.max_value_bytes != 0 && entry.value.size() > filter.max_value_bytes) ||
                    covered;
  if (header.seq != seq || skip) return std::nullopt;
  PEERKV_ASSIGN_OR_RETURN(Record record, codec::MakeRecord(header, entry));
  return record;
}

}  // namespace

Store::ReadTxnPool::~ReadTxnPool() {
  absl::MutexLock lock(&mu_);
  PEERKV_CHECK(txns_.empty());
}

MDB_txn* Store::ReadTxnPool::Take() {
  absl::MutexLock lock(&mu_);
  if (txns_.empty()) return nullptr;
  MDB_txn* txn = txns_.back();
  txns_.pop_back();
  return txn;
}

void Store::ReadTxnPool::Give(MDB_txn* txn) {
  {
    absl::MutexLock lock(&mu_);
    if (txns_.size() < kMaxKept) {
      txns_.push_back(txn);
      return;
    }
  }
  mdb_txn_abort(txn);
}

void Store::ReadTxnPool::Drain() {
  absl::MutexLock lock(&mu_);
  for (MDB_txn* txn : txns_) mdb_txn_abort(txn);
  txns_.clear();
}

Store::Store(StoreOptions options)
    : options_(std::move(options)), conflicts_(std::make_unique<conflicts::Index>()) {}

absl::StatusOr<std::unique_ptr<Store>> Store::Open(StoreOptions options) {
  if (options.dir.empty()) {
    return absl::InvalidArgumentError("store directory is empty");
  }
  if (options.replica_id_key.size() > kMaxReplicaIdKeyBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("replica_id_key is %d bytes; it must be at most %d",
                        options.replica_id_key.size(), kMaxReplicaIdKeyBytes));
  }
  if (options.max_value_bytes < 1 || options.max_value_bytes > kMaxValueBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "max_value_bytes is %d; it must be 1..%d", options.max_value_bytes, kMaxValueBytes));
  }
  if (options.max_clock_skew_ms < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "max_clock_skew_ms is %d; it must be >= 0", options.max_clock_skew_ms));
  }
  if (options.initial_map_bytes < (size_t{1} << 20) ||
      options.initial_map_bytes > options.max_map_bytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "initial_map_bytes is %d; it must be between 1 MiB and max_map_bytes "
        "(%d)",
        options.initial_map_bytes, options.max_map_bytes));
  }
  if (options.max_group_records == 0 || options.max_group_bytes == 0) {
    return absl::InvalidArgumentError("group commit bounds must be positive");
  }
  if (options.max_range_view_bytes == 0) {
    return absl::InvalidArgumentError("max_range_view_bytes must be positive");
  }
  if (options.tombstone_min_age_ms < 0 || options.tombstone_collect_interval < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tombstone_min_age_ms is %d and tombstone_collect_interval %s; neither may be negative",
        options.tombstone_min_age_ms, absl::FormatDuration(options.tombstone_collect_interval)));
  }
  if (options.max_conflict_entries < 1 ||
      options.max_conflict_entries > kMaxConflictEntriesBound) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_conflict_entries is %d; it must be 1..%d",
                        options.max_conflict_entries, kMaxConflictEntriesBound));
  }
  if (options.max_conflict_bytes < 1 || options.max_conflict_bytes > kMaxConflictBytesBound) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_conflict_bytes is %d; it must be 1..%d",
                        options.max_conflict_bytes, kMaxConflictBytesBound));
  }

  PEERKV_ASSIGN_OR_RETURN(std::unique_ptr<DataDir> dir, DataDir::Open(options.dir));
  auto store = std::unique_ptr<Store>(new Store(std::move(options)));
  store->dir_ = std::move(dir);
  PEERKV_RETURN_IF_ERROR(store->OpenEnvironment());
  PEERKV_RETURN_IF_ERROR(store->LoadOrInitMeta());
  store->writer_ = std::thread([s = store.get()] { s->WriterLoop(); });
  if (store->rederive_by_fork_) {
    // A stored id not minted from the device key, with writes made under
    // it (StoreOptions::replica_id_key): retired by a fork to a minted id.
    // Nothing to re-stamp: the old id's writes were honest.
    PEERKV_ASSIGN_OR_RETURN(ForkResult fork, store->Fork(UINT64_MAX, /*fresh_clock=*/false));
    store->Log(absl::StrFormat(
        "store in %s: replica id %016x was not minted from this data directory's device key (a "
        "directory made by an older peerkv or without identities, or moved to a new device key): "
        "forked to replica id %016x, minted from it; peers pull this replica again from zero, "
        "once",
        store->dir_->path(), fork.old_id, fork.new_id));
    store->open_rederived_ = std::move(fork);
  }
  if (store->options_.tombstone_collect_interval > absl::ZeroDuration()) {
    store->collector_ = std::thread([s = store.get()] { s->CollectorLoop(); });
  }
  if (store->options_.scrub_at_open) {
    store->open_scrub_ = std::thread([s = store.get()] { s->RunOpenScrub(); });
  } else {
    absl::MutexLock lock(&store->open_scrub_mu_);
    store->open_scrub_finished_ = true;
    store->open_scrub_result_ = std::vector<std::string>{};
  }
  return store;
}

absl::Status Store::OpenEnvironment() {
  PEERKV_RETURN_IF_ERROR(lmdb::Error(mdb_env_create(&env_), "mdb_env_create"));
  PEERKV_RETURN_IF_ERROR(lmdb::Error(mdb_env_set_maxdbs(env_, tables::kMaxDbs), "mdb_env_set_maxdbs"));
  PEERKV_RETURN_IF_ERROR(
      lmdb::Error(mdb_env_set_maxreaders(env_, 1024), "mdb_env_set_maxreaders"));
  PEERKV_RETURN_IF_ERROR(lmdb::Error(
      mdb_env_set_mapsize(env_, options_.initial_map_bytes), "mdb_env_set_mapsize"));
  // MDB_NOTLS: read transactions belong to the call that made them, not to
  // a thread, so servers with thread pools do not exhaust reader slots.
  // MDB_NOMETASYNC: lmdb::Txn::Commit flushes the meta page itself, so a
  // transaction can skip it (lmdb_util.h). Set once here, never changed.
  unsigned flags = MDB_NOTLS | MDB_NORDAHEAD;
  flags |= options_.sync ? MDB_NOMETASYNC : MDB_NOSYNC;
  PEERKV_RETURN_IF_ERROR(lmdb::Error(
      mdb_env_open(env_, dir_->path().c_str(), flags, 0600),
      absl::StrCat("open LMDB environment in ", dir_->path())));
  MDB_envinfo info;
  PEERKV_RETURN_IF_ERROR(lmdb::Error(mdb_env_info(env_, &info), "mdb_env_info"));
  map_bytes_ = info.me_mapsize;
  return absl::OkStatus();
}

unsigned Store::environment_flags() const {
  unsigned flags = 0;
  mdb_env_get_flags(env_, &flags);
  return flags;
}

absl::Status Store::LoadOrInitMeta() {
  Txn txn;
  PEERKV_RETURN_IF_ERROR(txn.Begin(env_, 0));
  tables::Dbis opened;
  PEERKV_RETURN_IF_ERROR(tables::OpenDbis(txn.get(), &opened));
  records_dbi_ = opened.records;
  log_dbi_ = opened.log;
  peers_dbi_ = opened.peers;
  meta_dbi_ = opened.meta;
  quarantine_dbi_ = opened.quarantine;
  ranges_dbi_ = opened.ranges;
  conflicts_dbi_ = opened.conflicts;
  change_index_dbi_ = opened.change_index;

  PEERKV_ASSIGN_OR_RETURN(const std::optional<uint64_t> format,
                          tables::ReadMetaU64(txn.get(), meta_dbi_, codec::kMetaFormat));
  uint64_t clock_floor = 0;
  if (format.has_value()) {
    PEERKV_ASSIGN_OR_RETURN(clock_floor, LoadMeta(txn.get(), *format));
  } else {
    PEERKV_RETURN_IF_ERROR(InitMeta(txn.get()));
  }
  if (format.has_value() && *format < 3) {
    // Before format 3 there were no range fingerprints, and the 64-bit
    // fingerprint was another hash (before format 2 one without values):
    // both computed once from the records, O(records).
    PEERKV_RETURN_IF_ERROR(UpgradeRanges(txn.get()));
  }
  if (format.has_value() && *format < 5) {
    // Before format 5 there was no change index: built from the records,
    // once, O(registers), in this transaction (a crash leaves the old format
    // and no index, and the next open builds it again).
    PEERKV_ASSIGN_OR_RETURN(const uint64_t indexed,
                            change_index::Rebuild(txn.get(), records_dbi_, change_index_dbi_));
    if (indexed > 0) {
      Log(absl::StrFormat("store in %s: built the per-keyspace change index (%d registers)",
                          dir_->path(), indexed));
    }
  }
  if (format.has_value() && *format < codec::kFormatVersion) {
    // Format 4 (causal marks, the conflict journal) needs nothing more.
    PEERKV_RETURN_IF_ERROR(
        tables::WriteMetaU64(txn.get(), meta_dbi_, codec::kMetaFormat, codec::kFormatVersion));
  }
  const uint64_t loaded_id = replica_id_.load();
  if (format.has_value()) PEERKV_RETURN_IF_ERROR(RederiveIfUnwritten(txn.get()));
  PEERKV_RETURN_IF_ERROR(LoadRoots(txn.get()));
  PEERKV_RETURN_IF_ERROR(RecordOpen(txn.get(), &clock_floor,
                                    /*id_began=*/!format.has_value() ||
                                        replica_id_.load() != loaded_id));
  PEERKV_RETURN_IF_ERROR(LoadForgottenCheckpoints(txn.get()));
  PEERKV_RETURN_IF_ERROR(LoadTombstoneState(txn.get()));
  PEERKV_RETURN_IF_ERROR(LoadQuarantine(txn.get()));
  PEERKV_RETURN_IF_ERROR(LoadConflicts(txn.get()));
  PEERKV_ASSIGN_OR_RETURN(const uint64_t log_entries,
                          lmdb::Entries(txn.get(), log_dbi_, "mdb_stat log"));
  log_entries_ = log_entries;
  PEERKV_RETURN_IF_ERROR(txn.Commit());

  const WallClock& wall =
      options_.wall_clock != nullptr ? *options_.wall_clock : SystemWallClock();
  clock_ = std::make_unique<HybridClock>(wall, clock_floor);
  committed_clock_ = clock_floor;
  return absl::OkStatus();
}

absl::Status Store::InitMeta(MDB_txn* txn) {
  // A new store, unless records exist without meta: then these are not
  // files this code wrote, and guessing would risk the data.
  PEERKV_ASSIGN_OR_RETURN(const uint64_t records, lmdb::Entries(txn, records_dbi_, "mdb_stat"));
  if (records != 0) {
    return absl::DataLossError(
        absl::StrCat("store in ", dir_->path(), " has records but no format marker"));
  }
  std::tie(replica_id_, incarnation_) = DrawIds(options_.id_seed, options_.replica_id_key);
  PEERKV_RETURN_IF_ERROR(
      tables::WriteMetaU64(txn, meta_dbi_, codec::kMetaFormat, codec::kFormatVersion));
  PEERKV_RETURN_IF_ERROR(
      tables::WriteMetaU64(txn, meta_dbi_, codec::kMetaReplicaId, replica_id_));
  return tables::WriteMetaU64(txn, meta_dbi_, codec::kMetaIncarnation, incarnation_);
}

absl::Status Store::RederiveIfUnwritten(MDB_txn* txn) {
  const std::string& key = options_.replica_id_key;
  if (key.empty() || IsDerivedReplicaId(replica_id_, incarnation_, key)) return absl::OkStatus();
  PEERKV_ASSIGN_OR_RETURN(const uint64_t logged, lmdb::Entries(txn, log_dbi_, "mdb_stat log"));
  PEERKV_ASSIGN_OR_RETURN(const uint64_t records, lmdb::Entries(txn, records_dbi_, "mdb_stat"));
  if (logged != 0 || records != 0) {
    // Writes were made under the old id: it is retired by a fork (Open).
    rederive_by_fork_ = true;
    return absl::OkStatus();
  }
  // Nothing was ever written under the old id: no peer holds a write or a
  // watermark of it that a fork would have to retire.
  const uint64_t old_id = replica_id_;
  std::tie(replica_id_, incarnation_) = DrawIds(options_.id_seed, key, old_id);
  PEERKV_RETURN_IF_ERROR(tables::WriteMetaU64(txn, meta_dbi_, codec::kMetaReplicaId, replica_id_));
  PEERKV_RETURN_IF_ERROR(
      tables::WriteMetaU64(txn, meta_dbi_, codec::kMetaIncarnation, incarnation_));
  Log(absl::StrFormat(
      "store in %s: replica id %016x was not minted from this data directory's device key; its "
      "log is empty, so it takes replica id %016x, minted from it",
      dir_->path(), old_id, replica_id_.load()));
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Store::LoadMeta(MDB_txn* txn, uint64_t format) {
  if (format > codec::kFormatVersion) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "store in %s has format %d; this peerkv reads format %d or older",
        dir_->path(), format, codec::kFormatVersion));
  }
  PEERKV_ASSIGN_OR_RETURN(const std::optional<uint64_t> id,
                          tables::ReadMetaU64(txn, meta_dbi_, codec::kMetaReplicaId));
  PEERKV_ASSIGN_OR_RETURN(const std::optional<uint64_t> inc,
                          tables::ReadMetaU64(txn, meta_dbi_, codec::kMetaIncarnation));
  if (!id.has_value() || !inc.has_value() || *id == 0 || *inc == 0) {
    return absl::DataLossError(absl::StrCat(
        "store in ", dir_->path(), " lacks its replica id or incarnation"));
  }
  replica_id_ = *id;
  incarnation_ = *inc;
  uint64_t clock_floor = 0;
  PEERKV_ASSIGN_OR_RETURN(const std::optional<codec::MetaState> state,
                          tables::ReadMetaState(txn, meta_dbi_));
  if (state.has_value()) {
    clock_floor = state->clock_mark;
    max_seq_ = state->max_seq;
    live_records_ = state->live_records;
    tombstones_ = state->tombstones;
    fingerprint_ = state->fingerprint;
  }
  PEERKV_ASSIGN_OR_RETURN(const std::optional<std::string_view> bootstrap,
                          lmdb::Get(txn, meta_dbi_, codec::kMetaBootstrap, "read bootstrap"));
  if (bootstrap.has_value()) {
    PEERKV_ASSIGN_OR_RETURN(BootstrapMarker marker, codec::DecodeBootstrapMarker(*bootstrap));
    absl::MutexLock lock(&bootstrap_mu_);
    bootstrap_ = std::move(marker);
  }
  PEERKV_ASSIGN_OR_RETURN(std::optional<Watermarks> stored,
                          tables::ReadWatermarks(txn, meta_dbi_));
  if (stored.has_value()) {
    absl::MutexLock lock(&watermarks_mu_);
    watermarks_ = std::move(*stored);
  }
  return clock_floor;
}

tables::Dbis Store::dbis() const {
  return tables::Dbis{records_dbi_,     log_dbi_,    peers_dbi_,     meta_dbi_,
                      quarantine_dbi_, ranges_dbi_, conflicts_dbi_, change_index_dbi_};
}

Store::~Store() {
  // The scrub first: it may wait for the writer to add its repair.
  stop_scrub_ = true;
  if (open_scrub_.joinable()) open_scrub_.join();
  if (collector_.joinable()) {
    {
      absl::MutexLock lock(&collector_mu_);
      stop_collector_ = true;
    }
    collector_.join();
  }
  if (writer_.joinable()) {
    {
      absl::MutexLock lock(&queue_mu_);
      stopping_ = true;
    }
    writer_.join();
  }
  read_pool_.Drain();
  if (env_ != nullptr) {
    absl::Status flushed = FlushHeldCheckpoints();
    for (int attempt = 0; lmdb::IsMapFull(flushed) && attempt < kMaxMapGrowthAttempts;
         ++attempt) {
      flushed = GrowMap(0);
      if (flushed.ok()) flushed = FlushHeldCheckpoints();
    }
    if (!flushed.ok()) {
      // Losing a held checkpoint only means pulling those changes again.
      Log(absl::StrCat("peerkv: checkpoints not saved at close: ", flushed.ToString()));
    }
    mdb_env_close(env_);
  }
}

void Store::Log(const std::string& line) const {
  if (options_.log) {
    options_.log(line);
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
}

// ---------------------------------------------------------------------------
// Writes

absl::StatusOr<Version> Store::Put(std::string_view keyspace,
                                   std::string_view key,
                                   std::string_view value) {
  std::vector<Mutation> batch;
  batch.push_back(Mutation{std::string(keyspace), std::string(key),
                           std::string(value)});
  PEERKV_ASSIGN_OR_RETURN(std::vector<Version> versions, Write(std::move(batch)));
  return versions.front();
}

absl::StatusOr<Version> Store::Delete(std::string_view keyspace,
                                      std::string_view key) {
  std::vector<Mutation> batch;
  batch.push_back(Mutation{std::string(keyspace), std::string(key), std::nullopt});
  PEERKV_ASSIGN_OR_RETURN(std::vector<Version> versions, Write(std::move(batch)));
  return versions.front();
}

absl::StatusOr<std::vector<Version>> Store::Write(std::vector<Mutation> mutations) {
  return WriteAndWait(std::move(mutations), /*reserved=*/false);
}

void Store::WriteAsync(std::vector<Mutation> mutations, WriteCallback done) {
  SubmitWrite(std::move(mutations), std::move(done), /*wait_for_room=*/false);
}

absl::StatusOr<std::vector<Version>> Store::WriteReserved(std::vector<Mutation> mutations) {
  return WriteAndWait(std::move(mutations), /*reserved=*/true);
}

absl::StatusOr<std::vector<Version>> Store::WriteAndWait(std::vector<Mutation> mutations,
                                                         bool reserved) {
  absl::Notification finished;
  absl::StatusOr<std::vector<Version>> result;
  SubmitWrite(std::move(mutations),
              [&](absl::StatusOr<std::vector<Version>> r) {
                result = std::move(r);
                finished.Notify();
              },
              /*wait_for_room=*/true, reserved);
  finished.WaitForNotification();
  return result;
}

void Store::SubmitWrite(std::vector<Mutation> mutations, WriteCallback done,
                        bool wait_for_room, bool reserved) {
  if (mutations.empty()) {
    done(std::vector<Version>{});
    return;
  }
  if (mutations.size() > kMaxBatchRecords) {
    done(absl::InvalidArgumentError(absl::StrFormat(
        "batch has %d mutations; the limit is %d", mutations.size(),
        kMaxBatchRecords)));
    return;
  }
  size_t bytes = 0;
  for (size_t i = 0; i < mutations.size(); ++i) {
    const Mutation& m = mutations[i];
    absl::Status valid = ValidateMutation(m, options_.max_value_bytes);
    if (valid.ok() && !reserved) valid = ValidateNotReserved(m.keyspace);
    if (valid.ok() && reserved) {
      if (!IsReservedKeyspace(m.keyspace)) {
        valid = absl::InvalidArgumentError(absl::StrFormat(
            "keyspace '%s' is not reserved; WriteReserved writes only '%s*'", m.keyspace,
            kReservedKeyspacePrefix));
      } else if (options_.reserved_check) {
        valid = options_.reserved_check(m.keyspace, m.key, m.value.value_or(""),
                                        !m.value.has_value());
      }
    }
    if (!valid.ok()) {
      if (mutations.size() > 1) {
        valid = absl::Status(valid.code(), absl::StrFormat("mutation %d: %s", i,
                                                           valid.message()));
      }
      done(valid);
      return;
    }
    bytes += m.keyspace.size() + m.key.size() + (m.value.has_value() ? m.value->size() : 0) +
             kRecordOverheadBytes;
  }
  if (bytes > kMaxBatchBytes) {
    done(absl::InvalidArgumentError(absl::StrFormat(
        "batch is %d bytes; the limit is %d", bytes, kMaxBatchBytes)));
    return;
  }
  const size_t records = mutations.size();
  auto request = std::make_unique<WriteRequest>(WriteRequest{
      LocalWrite{std::move(mutations), {}, std::move(done)}, records, bytes});
  Submit(std::move(request), wait_for_room);
}

absl::StatusOr<MergeResult> Store::Merge(std::vector<Record> batch,
                                         std::optional<CheckpointUpdate> checkpoint,
                                         MergeSource from) {
  absl::Notification finished;
  absl::StatusOr<MergeResult> result;
  SubmitMerge(std::move(batch), std::move(checkpoint),
              [&](absl::StatusOr<MergeResult> r) {
                result = std::move(r);
                finished.Notify();
              },
              /*wait_for_room=*/true, std::nullopt, from);
  finished.WaitForNotification();
  return result;
}

void Store::MergeAsync(std::vector<Record> batch,
                       std::optional<CheckpointUpdate> checkpoint,
                       MergeCallback done, MergeSource from) {
  SubmitMerge(std::move(batch), std::move(checkpoint), std::move(done),
              /*wait_for_room=*/false, std::nullopt, from);
}

namespace {
constexpr char kExtMetaPrefix[] = "ext.";
}  // namespace

absl::StatusOr<MergeResult> Store::MergeWith(std::vector<Record> batch, MergeOptions options) {
  if (options.ext_meta.has_value() &&
      (options.ext_meta->first.empty() || options.ext_meta->first.size() > 64 ||
       options.ext_meta->second.size() > 4096)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ext meta name must be 1..64 bytes (is %d) and its value at most 4096 (is %d)",
        options.ext_meta->first.size(), options.ext_meta->second.size()));
  }
  absl::Notification finished;
  absl::StatusOr<MergeResult> result;
  SubmitMerge(std::move(batch), std::nullopt,
              [&](absl::StatusOr<MergeResult> r) {
                result = std::move(r);
                finished.Notify();
              },
              /*wait_for_room=*/true, std::nullopt, MergeSource::kOwnDevice, std::move(options));
  finished.WaitForNotification();
  return result;
}

absl::StatusOr<std::optional<std::string>> Store::GetExtMeta(std::string_view name) const {
  ReadTxn txn(*this);
  PEERKV_RETURN_IF_ERROR(txn.Begin());
  PEERKV_ASSIGN_OR_RETURN(
      const std::optional<std::string_view> stored,
      lmdb::Get(txn.get(), meta_dbi_, absl::StrCat(kExtMetaPrefix, std::string(name)),
                "read ext meta"));
  if (!stored.has_value()) return std::nullopt;
  return std::string(*stored);
}

void Store::SubmitMerge(std::vector<Record> batch,
                        std::optional<CheckpointUpdate> checkpoint,
                        MergeCallback done, bool wait_for_room,
                        std::optional<std::optional<BootstrapMarker>> bootstrap,
                        MergeSource from, MergeOptions extra) {
  const size_t max_records = bootstrap.has_value() ? kMaxSnapshotRecords : kMaxBatchRecords;
  if (batch.size() > max_records) {
    done(absl::InvalidArgumentError(absl::StrFormat(
        "merge batch has %d records; the limit is %d", batch.size(),
        max_records)));
    return;
  }
  auto request = std::make_unique<WriteRequest>(WriteRequest{RemoteBatch{}});
  RemoteBatch& remote = std::get<RemoteBatch>(request->kind);
  if (bootstrap.has_value()) {
    remote.append = true;
    remote.sets_bootstrap = true;
    remote.bootstrap = std::move(*bootstrap);
  }
  request->bytes = AdmitRemote(batch, remote, from);
  if (request->bytes > kMaxBatchBytes) {
    done(absl::InvalidArgumentError(absl::StrFormat(
        "merge batch is %d bytes; the limit is %d", request->bytes,
        kMaxBatchBytes)));
    return;
  }
  // A snapshot page is in key order already (LoadSnapshotPage checked).
  if (!bootstrap.has_value()) SortByRecordKey(remote.records);
  request->records = remote.records.size();
  remote.checkpoint = std::move(checkpoint);
  Watermarks retired_marks;
  remote.wait_for_sync = extra.wait_for_sync;
  if (extra.ext_meta.has_value()) {
    remote.ext_meta.emplace(absl::StrCat(kExtMetaPrefix, extra.ext_meta->first),
                            std::move(extra.ext_meta->second));
  }
  if (remote.checkpoint.has_value() && !remote.checkpoint->watermarks.empty()) {
    // No claim for an id whose claims cannot be trusted (see Distrusts).
    absl::MutexLock lock(&watermarks_mu_);
    Watermarks& claimed = remote.checkpoint->watermarks;
    std::vector<uint64_t> untrusted;
    for (const auto& [origin, hlc] : claimed) {
      if (distrusted_.count(origin) > 0) untrusted.push_back(origin);
    }
    for (uint64_t origin : untrusted) {
      // Yet what a peer level with us holds of a retired id is stale
      // evidence (ServedWatermarks), kept once the batch is merged.
      retired_marks.Raise(origin, claimed.find(origin)->second);
      claimed.erase(origin);
    }
  }
  if (remote.records.empty() && remote.too_far_ahead.empty() && !remote.checkpoint.has_value() &&
      !remote.sets_bootstrap && !remote.ext_meta.has_value()) {
    done(std::move(remote.result));
    return;
  }
  if (retired_marks.empty()) {
    remote.done = std::move(done);
  } else {
    remote.done = [this, retired_marks = std::move(retired_marks),
                   done = std::move(done)](absl::StatusOr<MergeResult> merged) mutable {
      if (merged.ok()) RaiseRetiredMarks(retired_marks);
      done(std::move(merged));
    };
  }
  Submit(std::move(request), wait_for_room);
}

absl::Status Store::CheckRecordGate(const Record& record, MergeSource from) const {
  if (options_.record_gate) return options_.record_gate(record, from);
  if (from != MergeSource::kOwnWriteFromFriend) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrFormat(
      "record %s/%s: this store checks no record signatures, so nothing vouches that its "
      "own user's device wrote it",
      record.keyspace, record.key));
}

size_t Store::AdmitRemote(std::vector<Record>& batch, RemoteBatch& out,
                          MergeSource from) const {
  size_t bytes = 0;
  // The skew test against one reading of the clock for the batch; a record
  // beyond it is tested again against the clock of its own moment.
  const int64_t now_ms = RealNowMillis();
  auto within_skew = [&](uint64_t hlc) {
    return static_cast<int64_t>(HlcMillis(hlc)) - now_ms <= options_.max_clock_skew_ms ||
           CheckSkew(hlc).ok();
  };
  // The admitted records stay in `batch`, moved down over the others in
  // place (no second vector of a page's records), and become out.records.
  size_t admitted = 0;
  for (Record& r : batch) {
    absl::Status valid = ValidateRemoteRecord(r, options_.max_value_bytes);
    // Reserved keyspaces hold signed records: checked before the skew test
    // so a forged one is never quarantined either.
    if (valid.ok() && IsReservedKeyspace(r.keyspace)) {
      valid = options_.reserved_check
                  ? options_.reserved_check(r.keyspace, r.key, r.value, r.deleted)
                  : absl::PermissionDeniedError(absl::StrFormat(
                        "keyspace '%s' is reserved and this store checks no reserved records",
                        r.keyspace));
    }
    if (valid.ok() && options_.merge_filter) valid = options_.merge_filter(r);
    if (valid.ok() && options_.record_gate) {
      valid = options_.record_gate(r, from);
      if (!valid.ok()) ++gate_refused_;
    }
    if (valid.ok() && !within_skew(r.version.hlc)) {
      // Too far ahead: kept aside by the writer (QuarantineRecords).
      bytes += RecordBytes(r);
      out.too_far_ahead.push_back(std::move(r));
      continue;
    }
    if (!valid.ok()) {
      // Name the origin: one device with a wrong clock or a bad encoder is
      // what the operator needs to find.
      out.result.refused.push_back(RefusedRecord{
          r.keyspace, r.key, r.version,
          absl::Status(valid.code(),
                       absl::StrCat("record from origin ",
                                    ReplicaIdToString(r.version.origin), ": ",
                                    valid.message()))});
      continue;
    }
    bytes += RecordBytes(r);
    if (&r != &batch[admitted]) batch[admitted] = std::move(r);
    ++admitted;
  }
  batch.resize(admitted);
  out.records = std::move(batch);
  return bytes;
}

absl::StatusOr<uint64_t> Store::CompactLog() {
  absl::Notification finished;
  absl::StatusOr<uint64_t> result;
  auto request = std::make_unique<WriteRequest>(
      WriteRequest{Compaction{0, [&](absl::StatusOr<uint64_t> r) {
                     result = std::move(r);
                     finished.Notify();
                   }}});
  Submit(std::move(request), /*wait_for_room=*/true);
  finished.WaitForNotification();
  return result;
}

void Store::Submit(std::unique_ptr<WriteRequest> request, bool wait_for_room) {
  absl::Status refused;
  {
    absl::MutexLock lock(&queue_mu_);
    // Bound the memory held by waiting writes. A request larger than the
    // whole bound still goes through when the queue is empty.
    auto has_room = [this, bytes = request->bytes]() {
      queue_mu_.AssertHeld();
      return stopping_ || queue_.empty() ||
             queued_bytes_ + bytes <= options_.max_queued_bytes;
    };
    if (wait_for_room) queue_mu_.Await(absl::Condition(&has_room));
    if (stopping_) {
      refused = absl::FailedPreconditionError("store is closing");
    } else if (!has_room()) {
      refused = absl::UnavailableError(absl::StrFormat(
          "write queue is full (%d bytes waiting, limit %d); retry",
          queued_bytes_, options_.max_queued_bytes));
    } else {
      queued_bytes_ += request->bytes;
      queue_.push_back(std::move(request));
      return;
    }
  }
  request->Finish(refused);
}

void Store::WriterLoop() {
  writer_id_ = std::this_thread::get_id();
  for (;;) {
    Group group = NextGroup();
    if (group.empty()) return;  // stopping, and every write is done
    ApplyGroup(group);
    if (CompactionDue()) {
      bool reached_end = false;
      const absl::StatusOr<uint64_t> step =
          CompactStep(kCompactionStepEntries, &reached_end);
      if (!step.ok()) {
        Log(absl::StrCat("peerkv: log compaction step failed: ", step.status().ToString()));
      }
    }
  }
}

Store::Group Store::NextGroup() {
  Group group;
  absl::MutexLock lock(&queue_mu_);
  auto ready = [this]() {
    queue_mu_.AssertHeld();
    return stopping_ || !queue_.empty();
  };
  queue_mu_.Await(absl::Condition(&ready));
  size_t records = 0, bytes = 0;
  while (!queue_.empty()) {
    WriteRequest& next = *queue_.front();
    if (!group.empty() &&
        (next.RunsAlone() || group.front()->RunsAlone() ||
         records + next.records > options_.max_group_records ||
         bytes + next.bytes > options_.max_group_bytes)) {
      break;
    }
    records += next.records;
    bytes += next.bytes;
    PEERKV_CHECK(queued_bytes_ >= next.bytes);
    queued_bytes_ -= next.bytes;
    group.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  return group;
}

void Store::ApplyGroup(Group& group) {
  PEERKV_CHECK(OnWriterThread());
  PEERKV_CHECK(!group.empty());
  // A compaction runs alone (NextGroup never groups it).
  PEERKV_CHECK(!group.front()->RunsAlone() || group.size() == 1);
  Compaction* compaction = std::get_if<Compaction>(&group.front()->kind);
  writer::RangeRepair* repair = std::get_if<writer::RangeRepair>(&group.front()->kind);
  MetaSwitch* meta = std::get_if<MetaSwitch>(&group.front()->kind);
  const absl::Status status = compaction != nullptr ? CompactAll(*compaction)
                              : repair != nullptr   ? RepairRanges(*repair)
                              : meta != nullptr     ? meta->apply()
                                                    : CommitWrites(group);
  if (status.ok()) {
    for (auto& request : group) {
      if (auto* batch = std::get_if<RemoteBatch>(&request->kind)) {
        for (const RefusedRecord& r : batch->result.refused) {
          if (IsStaleRefusal(r.reason)) ++stale_refused_;
          if (r.reason.code() == absl::StatusCode::kResourceExhausted) ++quarantine_dropped_;
        }
      }
    }
  }
  for (auto& request : group) request->Finish(status);
}

absl::Status Store::CommitWrites(Group& group) {
  size_t bytes = 0;
  for (const auto& r : group) bytes += r->bytes;
  const GroupTxn::Counters committed{max_seq_.load(), live_records_.load(), tombstones_.load(),
                                     log_entries_.load(), fingerprint_.load()};
  // MDB_MAP_FULL can come from any call that allocates a page, commit
  // included (it writes the free list and the database roots); whichever
  // it was, the transaction is gone, and the group is retried in a
  // bigger map. Bounded: each attempt at least doubles the map, up to
  // max_map_bytes, where GrowMap refuses.
  std::optional<GroupTxn> txn;
  absl::Status status;
  for (int attempt = 0;; ++attempt) {
    txn.emplace(dbis(), committed);
    txn->set_detect_conflicts(options_.journal_conflicts);
    txn->set_signer(&options_.signer);
    status = TryApplyGroup(group, *txn, bytes);
    if (!lmdb::IsMapFull(status)) break;
    if (attempt == kMaxMapGrowthAttempts) break;
    // LMDB grows the map only while no transaction of this process is open.
    txn.reset();
    const absl::Status grown = GrowMap(bytes);
    if (!grown.ok()) {
      status = grown;
      break;
    }
  }
  if (!status.ok() || !txn->changed()) return status;
  metrics::Global().commit_group_requests.Observe(static_cast<double>(group.size()));
  Publish(*txn);
  // Listeners first: once a write is acknowledged, watchers already know.
  NotifyListeners(*txn);
  return absl::OkStatus();
}

absl::Status Store::TryApplyGroup(Group& group, GroupTxn& txn, size_t group_bytes) {
  PEERKV_CHECK(OnWriterThread());
  // A group waits for its fsync unless every request in it is a merge
  // that asked not to (MergeOptions::wait_for_sync). MDB_NOMETASYNC: the
  // pages are flushed, the meta page that makes them the current state is
  // written but not flushed (the next synced commit flushes it). A machine
  // crash may then lose this commit and the unsynced ones after it, never
  // corrupt the store: the meta page cannot reach the disk before the
  // pages it points to. MDB_NOSYNC would skip the other fsync too, but then
  // the meta page (the file's first pages, which writeback may write
  // first) can reach the disk before the pages, and a machine crash can
  // leave a store that points at pages it lost.
  bool wait_for_sync = false;
  for (const auto& request : group) {
    const auto* batch = std::get_if<RemoteBatch>(&request->kind);
    if (batch == nullptr || batch->wait_for_sync) wait_for_sync = true;
  }
  PEERKV_RETURN_IF_ERROR(txn.Begin(env_, /*sync_meta=*/wait_for_sync || !options_.sync));
  for (auto& request : group) {
    PEERKV_RETURN_IF_ERROR(std::visit(
        Overloaded{
            [&](LocalWrite& write) { return ApplyLocalWrite(txn, write); },
            [&](RemoteBatch& batch) { return ApplyRemoteBatch(txn, batch); },
            [&](writer::RestampBatch& batch) { return ApplyRestamp(txn, batch); },
            [&](Compaction&) -> absl::Status {
              PEERKV_CHECK(false);  // runs alone: see ApplyGroup
              return absl::InternalError("compaction inside a write group");
            },
            [&](writer::RangeRepair&) -> absl::Status {
              PEERKV_CHECK(false);  // runs alone: see ApplyGroup
              return absl::InternalError("range repair inside a write group");
            },
            [&](writer::MetaSwitch&) -> absl::Status {
              PEERKV_CHECK(false);  // runs alone: see ApplyGroup
              return absl::InternalError("meta switch inside a write group");
            },
        },
        request->kind));
  }
  if (!txn.changed() && !txn.quarantine_changed() && txn.conflicts().empty() &&
      !txn.meta_changed()) {
    // Nothing won: write nothing. Hold the checkpoints and watermarks for
    // the next commit (claiming them now is safe: the data is durable).
    txn.Abort();
    HoldClaims(txn);
    return absl::OkStatus();
  }
  return CommitGroup(txn, group_bytes);
}

absl::StatusOr<std::optional<Version>> Store::StampLocal(GroupTxn& txn, const Mutation& m) {
  Version version{clock_->Now(), replica_id_};
  if (version.hlc <= collected_horizon_.load()) {
    // The clock is behind a collected tombstone (a fresh-clock fork): a key
    // this replica holds nothing of may have been deleted above it, so the
    // write is stamped above every collected tombstone (tombstones.cc).
    PEERKV_ASSIGN_OR_RETURN(const std::optional<Version> current,
                            txn.CurrentVersion(m.keyspace, m.key));
    if (!current.has_value()) version.hlc = collected_horizon_.load() + 1;
  }
  PEERKV_ASSIGN_OR_RETURN(bool won, txn.ApplyLocal(m, version));
  if (!won) {
    // The clock is below this key's stored version: it was started afresh
    // below versions it had stamped (a fork for a clock mark far ahead, in
    // this run or before a restart). The new write is stamped just above
    // the stored version, for this key alone (the clock stays where it
    // is), so it still wins here and wherever that version is.
    PEERKV_ASSIGN_OR_RETURN(const std::optional<Version> current,
                            txn.CurrentVersion(m.keyspace, m.key));
    if (current.has_value() && current->hlc < UINT64_MAX) {
      version = Version{current->hlc + 1, replica_id_};
      PEERKV_ASSIGN_OR_RETURN(won, txn.ApplyLocal(m, version));
    }
  }
  if (!won) {
    Log(absl::StrFormat("peerkv: local write to %s lost to a stored version; clock at %s",
                        m.keyspace, version.ToString()));
    return std::nullopt;
  }
  return version;
}

absl::StatusOr<std::optional<Version>> Store::StampAboveCollected(GroupTxn& txn,
                                                                  const Mutation& m,
                                                                  uint64_t above) {
  // Just above the newest collected tombstone (so above the key's own
  // collected one) and the stale record; not from the clock: stamped now,
  // it would also beat a write of the key newer than the collected
  // tombstone that has not reached this replica yet, and delete it
  // everywhere (simulation seed 5971). The clock is past that point (it
  // observed every version merged) unless a fresh-clock fork reset it, and
  // this id stamps nothing in a clock gap of its lineage: in either case,
  // or if it would lose here, stamped by the clock as before.
  const uint64_t hlc = above + 1;
  bool by_clock = above == UINT64_MAX || above > clock_->Last();
  for (const ClockGap& gap : GetLineage().gaps) by_clock = by_clock || gap.Contains(hlc);
  if (by_clock) return StampLocal(txn, m);
  // At most one step ahead: this id's writes stay within its clock.
  clock_->Observe(hlc);
  const Version version{hlc, replica_id_};
  PEERKV_ASSIGN_OR_RETURN(const bool won, txn.ApplyLocal(m, version));
  if (!won) return StampLocal(txn, m);
  return version;
}

absl::Status Store::ApplyLocalWrite(GroupTxn& txn, LocalWrite& write) {
  write.versions.clear();
  for (const Mutation& m : write.mutations) {
    PEERKV_ASSIGN_OR_RETURN(const std::optional<Version> version, StampLocal(txn, m));
    // The clock starts above every stored version and observes every
    // merged one (or, after a fresh-clock fork, StampLocal steps above the
    // stored one), so a local write always wins; anything else is a bug in
    // the clock or the merge, and the process stops before it commits.
    PEERKV_CHECK(version.has_value());
    write.versions.push_back(*version);
  }
  return absl::OkStatus();
}

absl::Status Store::ApplyRemoteBatch(GroupTxn& txn, RemoteBatch& batch) {
  batch.result.won = 0;
  for (const std::string& key : batch.release) {
    PEERKV_RETURN_IF_ERROR(txn.ReleaseQuarantine(key));
  }
  const uint64_t source = batch.checkpoint.has_value() ? batch.checkpoint->peer_id : 0;
  // Recomputed on every attempt of the group, like `won`.
  batch.result.refused.erase(
      std::remove_if(batch.result.refused.begin(), batch.result.refused.end(),
                     [](const RefusedRecord& r) { return IsStaleRefusal(r.reason); }),
      batch.result.refused.end());
  const std::optional<StaleRule> stale_rule = StaleRuleFor(source);
  // The clock observes the greatest version merged, once for the batch,
  // and before a stale record's answer is stamped (StampAboveCollected
  // relies on the clock having observed every version merged before it).
  uint64_t greatest_hlc = 0;
  for (const Record& remote : batch.records) {
    if (stale_rule.has_value()) {
      if (greatest_hlc != 0) clock_->Observe(greatest_hlc);
      PEERKV_ASSIGN_OR_RETURN(const bool stale,
                              RefuseIfStale(txn, remote, *stale_rule, batch.result));
      if (stale) continue;
    }
    greatest_hlc = std::max(greatest_hlc, remote.version.hlc);
    PEERKV_ASSIGN_OR_RETURN(const bool won, batch.append ? txn.ApplyRemoteAppend(remote, source)
                                                         : txn.ApplyRemote(remote, source));
    if (won) ++batch.result.won;
  }
  if (greatest_hlc != 0) clock_->Observe(greatest_hlc);
  if (batch.ext_meta.has_value()) {
    PEERKV_RETURN_IF_ERROR(txn.PutMeta(batch.ext_meta->first, batch.ext_meta->second));
  }
  if (batch.sets_bootstrap) {
    PEERKV_RETURN_IF_ERROR(batch.bootstrap.has_value()
                               ? txn.PutMeta(codec::kMetaBootstrap,
                                             codec::EncodeBootstrapMarker(*batch.bootstrap))
                               : txn.DeleteMeta(codec::kMetaBootstrap));
  }
  // Admitted as too far ahead when submitted; local time may allow one by
  // now (the group waited in the queue): that one merges after all.
  std::vector<Record> held;
  for (const Record& remote : batch.too_far_ahead) {
    if (!CheckSkew(remote.version.hlc).ok()) {
      held.push_back(remote);
      continue;
    }
    // The stale rule holds for these too (collection may have run since).
    if (stale_rule.has_value()) {
      PEERKV_ASSIGN_OR_RETURN(const bool stale,
                              RefuseIfStale(txn, remote, *stale_rule, batch.result));
      if (stale) continue;
    }
    clock_->Observe(remote.version.hlc);
    PEERKV_ASSIGN_OR_RETURN(const bool won, txn.ApplyRemote(remote, source));
    if (won) ++batch.result.won;
  }
  PEERKV_RETURN_IF_ERROR(QuarantineRecords(txn, held, batch.result));
  if (batch.checkpoint.has_value()) txn.Claim(*batch.checkpoint);
  return absl::OkStatus();
}

absl::Status Store::QuarantineRecords(GroupTxn& txn, const std::vector<Record>& records,
                                      MergeResult& result) {
  // Recomputed on every attempt of the group: drop what an earlier one
  // noted (refusals for a full quarantine are the only refused entries
  // with ResourceExhausted).
  result.quarantined.clear();
  result.already_quarantined = 0;
  result.refused.erase(std::remove_if(result.refused.begin(), result.refused.end(),
                                      [](const RefusedRecord& r) {
                                        return r.reason.code() ==
                                               absl::StatusCode::kResourceExhausted;
                                      }),
                       result.refused.end());
  if (records.empty()) return absl::OkStatus();
  absl::MutexLock lock(&quarantine_mu_);
  // What the table holds with this transaction's changes so far.
  size_t count = quarantine_.records(), bytes = quarantine_.bytes();
  for (const auto& [key, entry] : txn.quarantine_changes()) {
    const auto stored = quarantine_.entries().find(key);
    if (stored != quarantine_.entries().end()) {
      --count;
      bytes -= stored->second.bytes;
    }
    if (entry.has_value()) {
      ++count;
      bytes += entry->bytes;
    }
  }
  for (const Record& r : records) {
    const std::string key = quarantine::EncodeKey(r);
    const auto pending = txn.quarantine_changes().find(key);
    const bool held = pending != txn.quarantine_changes().end() ? pending->second.has_value()
                                                                : quarantine_.Contains(key);
    if (held) {
      ++result.already_quarantined;
      continue;
    }
    const absl::Status ahead = CheckSkew(r.version.hlc);
    const std::string value = quarantine::EncodeValue(r);
    const size_t entry_bytes = quarantine::EntryBytes(key, value);
    if (count + 1 > options_.max_quarantine_records ||
        bytes + entry_bytes > options_.max_quarantine_bytes) {
      result.refused.push_back(RefusedRecord{
          r.keyspace, r.key, r.version,
          absl::ResourceExhaustedError(absl::StrFormat(
              "record from origin %s: %s; the quarantine is full (%d records, %d bytes; "
              "limits %d and %d): dropped",
              ReplicaIdToString(r.version.origin), ahead.message(), count, bytes,
              options_.max_quarantine_records, options_.max_quarantine_bytes))});
      continue;
    }
    PEERKV_RETURN_IF_ERROR(txn.PutQuarantine(
        key, value, quarantine::Index::Entry{r.version.origin, r.version.hlc, entry_bytes}));
    ++count;
    bytes += entry_bytes;
    result.quarantined.push_back(RefusedRecord{
        r.keyspace, r.key, r.version,
        absl::Status(ahead.code(), absl::StrCat("record from origin ",
                                                ReplicaIdToString(r.version.origin), ": ",
                                                ahead.message()))});
  }
  return absl::OkStatus();
}

Watermarks Store::CapClaims(const Watermarks& claims, const GroupTxn* txn) const {
  Watermarks capped = claims;
  {
    absl::MutexLock lock(&quarantine_mu_);
    quarantine_.Cap(capped);
  }
  if (txn != nullptr) {
    for (auto& [origin, hlc] : capped) {
      for (const auto& [key, entry] : txn->quarantine_changes()) {
        if (entry.has_value() && entry->origin == origin && hlc >= entry->hlc) {
          hlc = entry->hlc - 1;
        }
      }
    }
  }
  return capped;
}

absl::Status Store::CommitGroup(GroupTxn& txn, size_t group_bytes) {
  Watermarks watermarks;
  bool write_watermarks;
  // Never a claim that covers a record in quarantine (one this
  // transaction puts there included).
  const Watermarks claims = CapClaims(txn.claimed_watermarks(), &txn);
  {
    absl::MutexLock lock(&watermarks_mu_);
    watermarks = watermarks_;
    write_watermarks = watermarks_dirty_ || !claims.empty();
  }
  if (write_watermarks) {
    watermarks.Merge(claims);
    PEERKV_RETURN_IF_ERROR(txn.PutWatermarks(watermarks));
  }
  absl::flat_hash_map<uint64_t, PeerCheckpoint> checkpoints;
  {
    absl::MutexLock lock(&checkpoints_mu_);
    checkpoints = held_checkpoints_;
  }
  for (const auto& [peer, cp] : txn.claimed_checkpoints()) checkpoints[peer] = cp;
  for (const auto& [peer, cp] : checkpoints) {
    PEERKV_RETURN_IF_ERROR(txn.PutCheckpoint(peer, cp));
  }
  conflicts::Index journaled;
  PEERKV_RETURN_IF_ERROR(JournalConflicts(txn, &journaled));
  PEERKV_RETURN_IF_ERROR(txn.PutMetaState(clock_->Last()));
  const absl::Time commit_start = absl::Now();
  const absl::Status committed = txn.Commit();
  if (committed.ok() && !txn.syncs_meta()) unsynced_commits_.fetch_add(1);
  metrics::Global().commit_seconds.Observe(absl::ToDoubleSeconds(absl::Now() - commit_start));
  // A full map is not a full disk: CommitWrites grows it and retries.
  if (lmdb::IsMapFull(committed)) return committed;
  if (!committed.ok()) return dir_->ExplainWriteFailure(committed, group_bytes);
  if (write_watermarks) {
    absl::MutexLock lock(&watermarks_mu_);
    watermarks_.Merge(watermarks);
    watermarks_dirty_ = false;
  }
  InstallConflicts(journaled);
  if (txn.quarantine_changed()) {
    absl::MutexLock lock(&quarantine_mu_);
    for (const auto& [key, entry] : txn.quarantine_changes()) {
      quarantine_.Remove(key);
      if (entry.has_value()) quarantine_.Add(key, *entry);
    }
  }
  absl::MutexLock lock(&checkpoints_mu_);
  // Only the writer thread adds held checkpoints, so every one held now was
  // in the transaction that just committed.
  held_checkpoints_.clear();
  return absl::OkStatus();
}

void Store::HoldClaims(const GroupTxn& txn) {
  {
    absl::MutexLock lock(&checkpoints_mu_);
    for (const auto& [peer, cp] : txn.claimed_checkpoints()) held_checkpoints_[peer] = cp;
  }
  if (!txn.claimed_watermarks().empty()) {
    const Watermarks claims = CapClaims(txn.claimed_watermarks(), nullptr);
    absl::MutexLock lock(&watermarks_mu_);
    watermarks_.Merge(claims);
    watermarks_dirty_ = true;
  }
}

void Store::Publish(const GroupTxn& txn) {
  const GroupTxn::Counters& counters = txn.counters();
  PEERKV_CHECK(counters.max_seq > max_seq_.load());
  max_seq_ = counters.max_seq;
  live_records_ = counters.live_records;
  tombstones_ = counters.tombstones;
  log_entries_ = counters.log_entries;
  fingerprint_ = counters.fingerprint;
  PublishRanges(txn.range_deltas());
  // Only this thread stamps local writes, so every local write with a
  // version at or below the clock now is committed. Read and stored under
  // the reset lock: a reading from before a fresh-clock fork's Reset must
  // not land after it (the new id would claim the old far-ahead mark).
  // The claim is capped at the clock mark a restart remembers: a commit
  // that does not flush its meta page (an unsynced merge) may be lost with
  // its mark in a machine crash, and the clock then restarts from the last
  // synced mark, so claiming more would let peers skip writes this id
  // stamps again above it. It moves only with a synced commit, to at most
  // the mark that commit wrote (every own write at or below it is in it or
  // an earlier one).
  if (txn.syncs_meta()) {
    absl::MutexLock lock(&clock_reset_mu_);
    const uint64_t now = clock_->Last();
    committed_clock_ = txn.clock_mark().has_value() ? std::min(now, *txn.clock_mark()) : now;
  }
  ++commits_;
}

void Store::NotifyListeners(const GroupTxn& txn) {
  const CommitInfo info{max_seq_.load(), txn.local(), &txn.changes()};
  absl::MutexLock lock(&listeners_mu_);
  for (auto& [id, listener] : listeners_) listener(info);
}

absl::Status Store::GrowMap(size_t needed_bytes) {
  const size_t current = map_bytes_.load();
  if (current >= options_.max_map_bytes) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "store map is full at %d bytes, the max_map_bytes limit; nothing "
        "from the failed commit was acknowledged",
        current));
  }
  size_t grown = std::max(current * 2, current + 2 * needed_bytes);
  grown = std::min(grown, options_.max_map_bytes);
  absl::MutexLock lock(&resize_mu_);
  PEERKV_RETURN_IF_ERROR(
      lmdb::Error(mdb_env_set_mapsize(env_, grown), "mdb_env_set_mapsize"));
  MDB_envinfo info;
  PEERKV_RETURN_IF_ERROR(lmdb::Error(mdb_env_info(env_, &info), "mdb_env_info"));
  map_bytes_ = info.me_mapsize;
  return absl::OkStatus();
}

absl::Status Store::FlushHeldCheckpoints() {
  // Copied, not taken: a failed attempt (a full map) is retried.
  absl::flat_hash_map<uint64_t, PeerCheckpoint> checkpoints;
  {
    absl::MutexLock lock(&checkpoints_mu_);
    checkpoints = held_checkpoints_;
  }
  std::optional<Watermarks> watermarks;
  {
    absl::MutexLock lock(&watermarks_mu_);
    if (watermarks_dirty_ && !watermarks_.empty()) watermarks = watermarks_;
  }
  if (checkpoints.empty() && !watermarks.has_value()) return absl::OkStatus();
  // Counters are not written: only checkpoints and watermarks.
  GroupTxn txn(dbis(), GroupTxn::Counters{});
  PEERKV_RETURN_IF_ERROR(txn.Begin(env_));
  if (watermarks.has_value()) PEERKV_RETURN_IF_ERROR(txn.PutWatermarks(*watermarks));
  for (const auto& [peer, cp] : checkpoints) {
    PEERKV_RETURN_IF_ERROR(txn.PutCheckpoint(peer, cp));
  }
  return txn.Commit();
}

bool Store::CompactionDue() const {
  const uint64_t entries = log_entries_.load();
  const uint64_t records = live_records_.load() + tombstones_.load();
  const uint64_t garbage = entries > records ? entries - records : 0;
  return garbage > options_.compaction_min_garbage && garbage > records;
}

absl::Status Store::CompactAll(Compaction& compaction) {
  compact_from_seq_ = 0;
  bool reached_end = false;
  absl::Status status;
  // Bounded: each step advances through the log or ends the pass.
  for (int steps = 0; steps < (1 << 30) && !reached_end && status.ok(); ++steps) {
    absl::StatusOr<uint64_t> step = CompactStep(kCompactionStepEntries, &reached_end);
    if (step.ok()) {
      compaction.removed += *step;
    } else {
      status = step.status();
    }
  }
  return status;
}

absl::StatusOr<uint64_t> Store::CompactStep(size_t max_entries,
                                            bool* reached_end) {
  PEERKV_CHECK(OnWriterThread());
  *reached_end = false;
  uint64_t last_seq = compact_from_seq_;
  Txn txn;
  PEERKV_RETURN_IF_ERROR(txn.Begin(env_, 0));
  PEERKV_ASSIGN_OR_RETURN(const std::vector<Superseded> superseded,
                          FindSuperseded(txn.get(), max_entries, &last_seq, reached_end));
  for (const Superseded& entry : superseded) {
    const std::string key = codec::BigEndian64(entry.seq);
    MDB_val k = Val(key);
    absl::Status deleted =
        lmdb::Error(mdb_del(txn.get(), log_dbi_, &k, nullptr), "delete superseded log entry");
    // Its index entry is normally gone already (the overwrite or the
    // collection that superseded it deleted it); in the same transaction.
    if (deleted.ok()) {
      deleted = change_index::Delete(txn.get(), change_index_dbi_, entry.keyspace, entry.seq);
    }
    if (lmdb::IsMapFull(deleted)) {
      // Deleting needs fresh pages too; grow and let a later step retry.
      txn.Abort();
      PEERKV_RETURN_IF_ERROR(GrowMap(0));
      return 0;
    }
    PEERKV_RETURN_IF_ERROR(deleted);
  }
  if (!superseded.empty()) {
    const absl::Status committed = txn.Commit();
    if (lmdb::IsMapFull(committed)) {
      // The commit needed pages too (free list): grow; a later step retries.
      PEERKV_RETURN_IF_ERROR(GrowMap(0));
      return 0;
    }
    PEERKV_RETURN_IF_ERROR(committed);
    log_entries_ -= superseded.size();
  }
  compact_from_seq_ = *reached_end ? 0 : last_seq;
  return superseded.size();
}

absl::StatusOr<std::vector<Store::Superseded>> Store::FindSuperseded(MDB_txn* txn,
                                                                     size_t max_entries,
                                                                     uint64_t* last_seq,
                                                                     bool* reached_end) const {
  std::vector<Superseded> superseded;
  Cursor log;
  PEERKV_RETURN_IF_ERROR(log.Open(txn, log_dbi_));
  const std::string start = codec::BigEndian64(compact_from_seq_ + 1);
  MDB_val k = Val(start), v;
  int rc = mdb_cursor_get(log.get(), &k, &v, MDB_SET_RANGE);
  for (size_t examined = 0; rc == MDB_SUCCESS && examined < max_entries; ++examined) {
    PEERKV_ASSIGN_OR_RETURN(const uint64_t seq, codec::DecodeLogKey(View(k)));
    PEERKV_ASSIGN_OR_RETURN(const codec::LogEntry entry, codec::DecodeLogEntry(View(v)));
    PEERKV_ASSIGN_OR_RETURN(
        const std::optional<std::string_view> stored,
        lmdb::Get(txn, records_dbi_, entry.record_key, "read record for compaction"));
    bool gone = !stored.has_value();
    if (!gone) {
      PEERKV_ASSIGN_OR_RETURN(const codec::RecordHeader header,
                              codec::DecodeRecordHeader(*stored));
      gone = header.seq != seq;
    }
    if (gone) {
      std::string_view keyspace, key;
      PEERKV_RETURN_IF_ERROR(codec::SplitRecordKey(entry.record_key, &keyspace, &key));
      superseded.push_back(Superseded{seq, std::string(keyspace)});
    }
    *last_seq = seq;
    rc = mdb_cursor_get(log.get(), &k, &v, MDB_NEXT);
  }
  if (rc == MDB_NOTFOUND) {
    *reached_end = true;
  } else if (rc != MDB_SUCCESS) {
    return lmdb::Error(rc, "read log for compaction");
  }
  return superseded;
}

// ---------------------------------------------------------------------------
// Reads

absl::Status Store::GetView(std::string_view keyspace, std::string_view key,
                            absl::FunctionRef<void(const RecordView*)> fn) const {
  PEERKV_RETURN_IF_ERROR(ValidateKeyspace(keyspace));
  PEERKV_RETURN_IF_ERROR(ValidateKey(key));
  // The records key on the stack: reads are the hot path of a server.
  const codec::StackRecordKey stack_key(keyspace, key);
  const std::string_view record_key = stack_key.view();

  ReadTxn txn(*this);
  PEERKV_RETURN_IF_ERROR(txn.Begin());
  PEERKV_ASSIGN_OR_RETURN(const std::optional<std::string_view> stored,
                          lmdb::Get(txn.get(), records_dbi_, record_key, "read record"));
  if (!stored.has_value()) {
    fn(nullptr);
    return absl::OkStatus();
  }
  PEERKV_ASSIGN_OR_RETURN(const codec::RecordHeader header, codec::DecodeRecordHeader(*stored));
  PEERKV_ASSIGN_OR_RETURN(const codec::LogEntry entry,
                          tables::ReadEntry(txn.get(), log_dbi_, record_key, header.seq));
  const std::string_view value = entry.value;
  if (header.deleted && !value.empty()) {
    return absl::DataLossError("stored tombstone carries value bytes");
  }
  const RecordView view{keyspace, key,        header.version, header.deleted,
                        value,    header.seq, entry.signature};
  fn(&view);
  return absl::OkStatus();
}

absl::StatusOr<std::optional<Record>> Store::Get(std::string_view keyspace,
                                                 std::string_view key) const {
  std::optional<Record> record;
  PEERKV_RETURN_IF_ERROR(GetView(keyspace, key, [&record](const RecordView* view) {
    if (view == nullptr) return;
    record = Record{std::string(view->keyspace), std::string(view->key), view->version,
                    view->deleted, std::string(view->value), view->seq, std::nullopt,
                    std::string(view->signature)};
  }));
  return record;
}

absl::StatusOr<ScanResult> Store::Scan(std::string_view keyspace,
                                       const ScanOptions& options) const {
  PEERKV_RETURN_IF_ERROR(ValidateKeyspace(keyspace));
  if (options.limit == 0 || options.limit > kMaxScanLimit) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "scan limit is %d; it must be 1..%d", options.limit, kMaxScanLimit));
  }
  if (options.prefix.size() > kMaxKeyBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "prefix is %d bytes; the limit is %d", options.prefix.size(), kMaxKeyBytes));
  }
  if (options.start_after.size() > kMaxKeyBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "start_after is %d bytes; the limit is %d", options.start_after.size(),
        kMaxKeyBytes));
  }
  const std::string match = codec::RecordKey(keyspace, options.prefix);
  const std::string after =
      options.start_after.empty() ? std::string()
                                  : codec::RecordKey(keyspace, options.start_after);
  const std::string start = std::max(match, after);

  ScanResult result;
  ReadTxn txn(*this);
  PEERKV_RETURN_IF_ERROR(txn.Begin());
  Cursor cursor;
  PEERKV_RETURN_IF_ERROR(cursor.Open(txn.get(), records_dbi_));
  MDB_val k = Val(start), v;
  int rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_SET_RANGE);
  size_t bytes = 0;
  while (rc == MDB_SUCCESS) {
    const std::string_view key = View(k);
    if (key.substr(0, match.size()) != match) break;
    if (key != after) {
      PEERKV_ASSIGN_OR_RETURN(const codec::RecordHeader header,
                              codec::DecodeRecordHeader(View(v)));
      if (!header.deleted || options.include_tombstones) {
        if (result.records.size() == options.limit ||
            (bytes >= options.max_bytes && !result.records.empty())) {
          result.more = true;
          break;
        }
        PEERKV_ASSIGN_OR_RETURN(Record record,
                                ReadRecord(txn.get(), log_dbi_, key, header));
        bytes += RecordBytes(record);
        result.records.push_back(std::move(record));
      }
    }
    rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_NEXT);
  }
  if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) return lmdb::Error(rc, "scan records");
  return result;
}

absl::StatusOr<Changes> Store::ChangesSince(uint64_t after_seq, size_t limit,
                                            size_t max_bytes,
                                            const ChangesFilter& filter) const {
  if (limit == 0 || limit > kMaxScanLimit) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "changes limit is %d; it must be 1..%d", limit, kMaxScanLimit));
  }
  Changes changes;
  changes.last_seq = after_seq;
  // Nothing beyond what max_seq() already says is read: a commit is
  // visible to readers a moment before the writer publishes it, and a peer
  // that pulled such a seq and asked from it at once would look as if it
  // held more of our log than we do (restore evidence, restore_guard.h).
  const uint64_t published = max_seq_.load();
  // `keyspace_allowed` may read this store itself (auth::StoreAccess
  // re-reads its policy and group records when they changed), and a read
  // inside our read transaction would take the store's mutex twice (a
  // reader lock held while another is taken deadlocks behind a writer):
  // ask it outside, of the keyspaces a transaction opened after `published`
  // was loaded lists (so every keyspace with a change at or below it).
  std::vector<std::string> allowed;
  ChangesFilter narrowed;
  const ChangesFilter* use = &filter;
  if (filter.keyspace_allowed) {
    {
      ReadTxn list(*this);
      PEERKV_RETURN_IF_ERROR(list.Begin());
      if (filter.keyspaces != nullptr) {
        allowed = *filter.keyspaces;
      } else {
        PEERKV_ASSIGN_OR_RETURN(allowed, change_index::Keyspaces(list.get(), change_index_dbi_));
      }
    }
    std::erase_if(allowed, [&](const std::string& ks) { return !filter.keyspace_allowed(ks); });
    narrowed = filter;
    narrowed.keyspace_allowed = nullptr;
    narrowed.keyspaces = &allowed;
    use = &narrowed;
  }
  ReadTxn txn(*this);
  PEERKV_RETURN_IF_ERROR(txn.Begin());
  PEERKV_ASSIGN_OR_RETURN(const std::optional<codec::MetaState> state,
                          tables::ReadMetaState(txn.get(), meta_dbi_));
  if (state.has_value()) changes.max_seq = std::min(state->max_seq, published);
  if (after_seq >= changes.max_seq) return changes;
  if (!use->keyspace.empty() || use->keyspaces != nullptr) {
    return IndexedChangesSince(txn.get(), std::move(changes), limit, max_bytes, *use);
  }

  Cursor cursor;
  PEERKV_RETURN_IF_ERROR(cursor.Open(txn.get(), log_dbi_));
  const std::string start = codec::BigEndian64(after_seq + 1);
  MDB_val k = Val(start), v;
  int rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_SET_RANGE);
  size_t bytes = 0;
  // Superseded entries cost a look-up each; bound the work of one page even
  // when compaction has fallen behind.
  const size_t max_examined = 4 * limit + 1024;
  for (size_t examined = 0; rc == MDB_SUCCESS; ++examined) {
    if (examined == max_examined || changes.records.size() == limit ||
        (bytes >= max_bytes && !changes.records.empty())) {
      return changes;
    }
    PEERKV_ASSIGN_OR_RETURN(const uint64_t seq, codec::DecodeLogKey(View(k)));
    if (seq > changes.max_seq) break;  // committed, not yet published
    PEERKV_ASSIGN_OR_RETURN(const codec::LogEntry entry, codec::DecodeLogEntry(View(v)));
    PEERKV_ASSIGN_OR_RETURN(std::optional<Record> record,
                            CurrentChange(txn.get(), records_dbi_, seq, entry, filter));
    if (record.has_value()) {
      bytes += RecordBytes(*record);
      changes.records.push_back(std::move(*record));
    }
    changes.last_seq = seq;
    rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_NEXT);
  }
  if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) return lmdb::Error(rc, "read log");
  changes.last_seq = changes.max_seq;
  return changes;
}

// The change index of each keyspace asked for is one stream of seqs; the
// streams are merged by seq (a heap of cursors), so the page is in log
// order like an unfiltered one. Every index entry at or below the last seq
// examined has been examined (the heap always takes the least), so that
// seq is a sound resume point.
absl::StatusOr<Changes> Store::IndexedChangesSince(MDB_txn* txn, Changes changes, size_t limit,
                                                   size_t max_bytes,
                                                   const ChangesFilter& filter) const {
  const uint64_t after_seq = changes.last_seq;
  std::vector<std::string> keyspaces;
  if (!filter.keyspace.empty()) {
    keyspaces.emplace_back(filter.keyspace);
  } else if (filter.keyspaces != nullptr) {
    keyspaces = *filter.keyspaces;
    std::sort(keyspaces.begin(), keyspaces.end());
    keyspaces.erase(std::unique(keyspaces.begin(), keyspaces.end()), keyspaces.end());
  } else {
    PEERKV_ASSIGN_OR_RETURN(keyspaces, change_index::Keyspaces(txn, change_index_dbi_));
  }
  if (filter.keyspaces != nullptr && !filter.keyspace.empty() &&
      std::find(filter.keyspaces->begin(), filter.keyspaces->end(), filter.keyspace) ==
          filter.keyspaces->end()) {
    keyspaces.clear();
  }
  if (filter.keyspace_allowed) {
    std::erase_if(keyspaces,
                  [&](const std::string& ks) { return !filter.keyspace_allowed(ks); });
  }
  struct Stream {
    std::string keyspace;
    Cursor cursor;
    uint64_t seq = 0;
    // The head entry's value (the register's header); valid while the
    // transaction lasts.
    std::string_view header;
  };
  std::vector<std::unique_ptr<Stream>> streams;
  // Positions `s` at its first entry at or after `key` (a seek) or after
  // its current one; false once past its keyspace.
  auto head = [](Stream& s, MDB_val* k, MDB_cursor_op op) -> absl::StatusOr<bool> {
    MDB_val v;
    const int rc = mdb_cursor_get(s.cursor.get(), k, &v, op);
    if (rc == MDB_NOTFOUND) return false;
    PEERKV_RETURN_IF_ERROR(lmdb::Error(rc, "read change index"));
    std::string_view keyspace;
    PEERKV_RETURN_IF_ERROR(change_index::DecodeKey(View(*k), &keyspace, &s.seq));
    s.header = View(v);
    return keyspace == s.keyspace;
  };
  auto later = [](const Stream* a, const Stream* b) { return a->seq > b->seq; };
  std::vector<Stream*> heap;
  std::string seek;
  for (std::string& ks : keyspaces) {
    auto s = std::make_unique<Stream>();
    s->keyspace = std::move(ks);
    PEERKV_RETURN_IF_ERROR(s->cursor.Open(txn, change_index_dbi_));
    change_index::EncodeKey(s->keyspace, after_seq + 1, &seek);
    MDB_val k = Val(seek);
    PEERKV_ASSIGN_OR_RETURN(const bool any, head(*s, &k, MDB_SET_RANGE));
    if (!any) continue;
    heap.push_back(s.get());
    streams.push_back(std::move(s));
  }
  std::make_heap(heap.begin(), heap.end(), later);
  size_t bytes = 0;
  // As in ChangesSince: superseded entries cost a look-up each.
  const size_t max_examined = 4 * limit + 1024;
  for (size_t examined = 0; !heap.empty(); ++examined) {
    if (examined == max_examined || changes.records.size() == limit ||
        (bytes >= max_bytes && !changes.records.empty())) {
      return changes;
    }
    std::pop_heap(heap.begin(), heap.end(), later);
    Stream* s = heap.back();
    const uint64_t seq = s->seq;
    if (seq > changes.max_seq) break;  // committed, not yet published (the least)
    // The index holds current changes only, with their headers: no look-up
    // of the register, one of the log entry for the value.
    PEERKV_ASSIGN_OR_RETURN(const codec::RecordHeader header,
                            codec::DecodeRecordHeader(s->header));
    PEERKV_ASSIGN_OR_RETURN(const std::optional<std::string_view> stored,
                            lmdb::Get(txn, log_dbi_, codec::BigEndian64(seq), "read log entry"));
    if (stored.has_value()) {
      PEERKV_ASSIGN_OR_RETURN(const codec::LogEntry entry, codec::DecodeLogEntry(*stored));
      std::string_view keyspace, key;
      PEERKV_RETURN_IF_ERROR(codec::SplitRecordKey(entry.record_key, &keyspace, &key));
      std::optional<Record> record;
      if (key.starts_with(filter.key_prefix)) {
        PEERKV_ASSIGN_OR_RETURN(record, KeptChange(header, seq, entry, filter));
      }
      if (record.has_value()) {
        bytes += RecordBytes(*record);
        changes.records.push_back(std::move(*record));
      }
    }
    changes.last_seq = seq;
    MDB_val k;
    PEERKV_ASSIGN_OR_RETURN(const bool more, head(*s, &k, MDB_NEXT));
    if (more) {
      std::push_heap(heap.begin(), heap.end(), later);
    } else {
      heap.pop_back();
    }
  }
  changes.last_seq = changes.max_seq;
  return changes;
}

absl::StatusOr<std::optional<PeerCheckpoint>> Store::GetCheckpoint(
    uint64_t peer_id) const {
  {
    absl::MutexLock lock(&checkpoints_mu_);
    auto it = held_checkpoints_.find(peer_id);
    if (it != held_checkpoints_.end()) return it->second;
  }
  ReadTxn txn(*this);
  PEERKV_RETURN_IF_ERROR(txn.Begin());
  return tables::ReadCheckpoint(txn.get(), peers_dbi_, peer_id);
}

void Store::SetClockEstimate(const ClockEstimate& estimate, bool apply) {
  {
    absl::MutexLock lock(&estimate_mu_);
    estimate_ = estimate;
  }
  if (apply) clock_->SetEstimate(estimate, options_.max_clock_skew_ms);
}

absl::Status Store::CheckSkew(uint64_t hlc) const {
  return clock_->CheckSkew(hlc, options_.max_clock_skew_ms);
}

absl::Status Store::LoadQuarantine(MDB_txn* txn) {
  Cursor cursor;
  PEERKV_RETURN_IF_ERROR(cursor.Open(txn, quarantine_dbi_));
  std::vector<std::string> malformed;
  absl::Status first_reason;
  absl::MutexLock lock(&quarantine_mu_);
  MDB_val k, v;
  int rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_FIRST);
  while (rc == MDB_SUCCESS) {
    const std::string_view key = lmdb::View(k), value = lmdb::View(v);
    absl::StatusOr<Record> record = quarantine::Decode(key, value, options_.max_value_bytes);
    if (record.ok()) {
      quarantine_.Add(std::string(key), quarantine::Index::Entry{record->version.origin,
                                                                 record->version.hlc,
                                                                 quarantine::EntryBytes(key, value)});
    } else {
      if (malformed.empty()) first_reason = record.status();
      malformed.emplace_back(key);
    }
    rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_NEXT);
  }
  if (rc != MDB_NOTFOUND) return lmdb::Error(rc, "read quarantine");
  cursor.Close();
  if (malformed.empty()) return absl::OkStatus();
  for (const std::string& key : malformed) {
    MDB_val dk = lmdb::Val(key);
    PEERKV_RETURN_IF_ERROR(lmdb::Error(mdb_del(txn, quarantine_dbi_, &dk, nullptr),
                                       "delete malformed quarantine entry"));
  }
  quarantine_dropped_ += malformed.size();
  Log(absl::StrFormat("peerkv: dropped %d quarantined record%s that did not decode (first: %s); "
                      "they are not retried",
                      malformed.size(), malformed.size() == 1 ? "" : "s",
                      first_reason.ToString()));
  return absl::OkStatus();
}

std::optional<absl::Duration> Store::NextQuarantineRetry() const {
  uint64_t hlc = 0;
  {
    absl::MutexLock lock(&quarantine_mu_);
    if (quarantine_.records() == 0) return std::nullopt;
    hlc = quarantine_.entries().begin()->second.hlc;
  }
  if (CheckSkew(hlc).ok()) return absl::ZeroDuration();
  const int64_t due_ms = static_cast<int64_t>(HlcMillis(hlc)) - options_.max_clock_skew_ms;
  return std::max(absl::Milliseconds(due_ms - clock_->RealNowMillis()),
                  absl::Milliseconds(1));
}

bool Store::InQuarantine(std::string_view keyspace, std::string_view key,
                         const Version& version) const {
  Record record;
  record.keyspace = std::string(keyspace);
  record.key = std::string(key);
  record.version = version;
  const std::string entry = quarantine::EncodeKey(record);
  absl::MutexLock lock(&quarantine_mu_);
  return quarantine_.Contains(entry);
}

absl::StatusOr<MergeResult> Store::RetryQuarantined() {
  // The earliest entries CheckSkew admits now (keys are in hlc order, so
  // the first one it refuses ends the batch), read back from the table.
  std::vector<std::string> keys;
  {
    absl::MutexLock lock(&quarantine_mu_);
    size_t bytes = 0;
    for (const auto& [key, entry] : quarantine_.entries()) {
      if (keys.size() >= kMaxBatchRecords || bytes + entry.bytes > kMaxBatchBytes / 2) break;
      if (!CheckSkew(entry.hlc).ok()) break;
      keys.push_back(key);
      bytes += entry.bytes;
    }
  }
  if (keys.empty()) return MergeResult{};
  std::vector<Record> batch;
  std::vector<std::string> release;
  {
    ReadTxn txn(*this);
    PEERKV_RETURN_IF_ERROR(txn.Begin());
    for (const std::string& key : keys) {
      PEERKV_ASSIGN_OR_RETURN(const std::optional<std::string_view> value,
                              lmdb::Get(txn.get(), quarantine_dbi_, key, "read quarantine"));
      if (!value.has_value()) continue;  // released by a retry since
      absl::StatusOr<Record> record = quarantine::Decode(key, *value, options_.max_value_bytes);
      // Decoded once at open; a failure now (a lowered value limit) drops it.
      if (record.ok()) batch.push_back(std::move(*record));
      release.push_back(key);
    }
  }
  absl::Notification finished;
  absl::StatusOr<MergeResult> result;
  auto request = std::make_unique<WriteRequest>(WriteRequest{RemoteBatch{}});
  RemoteBatch& remote = std::get<RemoteBatch>(request->kind);
  // Gated when they were quarantined; their keyspaces' rules are asked
  // again (a record from a friend is signed, so it passes as it did).
  request->bytes = AdmitRemote(batch, remote, MergeSource::kOwnDevice);
  SortByRecordKey(remote.records);
  request->records = remote.records.size() + remote.too_far_ahead.size();
  remote.release = std::move(release);
  remote.done = [&](absl::StatusOr<MergeResult> r) {
    result = std::move(r);
    finished.Notify();
  };
  Submit(std::move(request), /*wait_for_room=*/true);
  finished.WaitForNotification();
  return result;
}

absl::StatusOr<StoreStats> Store::Stats() const {
  StoreStats stats;
  stats.replica_id = replica_id_;
  stats.incarnation = incarnation_;
  stats.live_records = live_records_.load();
  stats.tombstones = tombstones_.load();
  stats.max_seq = max_seq_.load();
  stats.log_entries = log_entries_.load();
  stats.map_bytes = map_bytes_.load();
  stats.commits = commits_.load();
  stats.fingerprint = fingerprint_.load();
  stats.retired_ids = GetLineage().retired_ids;
  {
    absl::MutexLock lock(&quarantine_mu_);
    stats.quarantined = quarantine_.Summary(options_.max_clock_skew_ms, kMaxQuarantineOriginsListed);
    stats.quarantine_records = quarantine_.records();
    stats.quarantine_origins = quarantine_.origins();
  }
  stats.quarantine_dropped = quarantine_dropped_.load();
  {
    absl::MutexLock lock(&estimate_mu_);
    stats.clock_peers = estimate_.peers;
    stats.clock_offset_ms = estimate_.peers == 0 ? 0 : -estimate_.real_offset_ms;
  }
  stats.clock_correction_ms = clock_->stamp_correction_ms();
  stats.tombstones_collected = tombstones_collected_.load();
  stats.tombstones_held = tombstones_held_.load();
  stats.tombstones_held_by = tombstones_held_by_.load();
  stats.tombstones_held_by_count = tombstones_held_by_count_.load();
  stats.stale_refused = stale_refused_.load();
  stats.gate_refused = gate_refused_.load();
  {
    absl::MutexLock lock(&acks_mu_);
    stats.acknowledged_peers = acks_.size() + friend_acks_.size();
    stats.forgotten_peers = forgotten_peers_.size();
  }
  {
    absl::MutexLock lock(&conflicts_mu_);
    for (const auto& [keyspace, journal] : conflicts_->keyspaces()) {
      stats.conflict_entries += journal.entries.size();
      stats.conflict_bytes += journal.bytes;
      stats.conflicts_dropped += journal.dropped;
      if (journal.entries.empty() && journal.dropped == 0) continue;
      stats.conflict_keyspaces.push_back(ConflictKeyspaceStats{
          keyspace, journal.entries.size(), journal.bytes, journal.dropped});
    }
  }
  std::stable_sort(stats.conflict_keyspaces.begin(), stats.conflict_keyspaces.end(),
                   [](const ConflictKeyspaceStats& a, const ConflictKeyspaceStats& b) {
                     return a.entries > b.entries;
                   });
  if (stats.conflict_keyspaces.size() > kMaxConflictKeyspacesListed) {
    stats.conflict_keyspaces.resize(kMaxConflictKeyspacesListed);
  }
  PEERKV_ASSIGN_OR_RETURN(stats.disk_bytes, dir_->DataFileBytes());
  return stats;
}

absl::StatusOr<uint64_t> Store::Digest() const {
  codec::Fnv64 hash;
  ReadTxn txn(*this);
  PEERKV_RETURN_IF_ERROR(txn.Begin());
  Cursor cursor;
  PEERKV_RETURN_IF_ERROR(cursor.Open(txn.get(), records_dbi_));
  MDB_val k, v;
  int rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_FIRST);
  while (rc == MDB_SUCCESS) {
    PEERKV_ASSIGN_OR_RETURN(const codec::RecordHeader header,
                            codec::DecodeRecordHeader(View(v)));
    hash.AddU64(k.mv_size);
    hash.Add(View(k));
    hash.AddU64(header.version.hlc);
    hash.AddU64(header.version.origin);
    hash.AddU64(header.deleted ? 1 : 0);
    PEERKV_ASSIGN_OR_RETURN(const std::string_view value,
                            tables::ReadValue(txn.get(), log_dbi_, View(k), header.seq));
    hash.AddU64(value.size());
    hash.Add(value);
    rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_NEXT);
  }
  if (rc != MDB_NOTFOUND) return lmdb::Error(rc, "digest records");
  return hash.value();
}

Watermarks Store::GetWatermarks() const {
  Watermarks out;
  absl::MutexLock lock(&watermarks_mu_);
  out = watermarks_;
  // Only committed writes: a write that has its version but is not yet
  // committed must not be claimed, or a peer that adopts the claim would
  // never be sent it. The id is read under the lock the fork's switch
  // holds, so the claim is never for an id already left behind.
  out.Raise(replica_id_.load(), committed_clock_.load());
  return out;
}

int Store::AddCommitListener(CommitListener listener) {
  absl::MutexLock lock(&listeners_mu_);
  const int id = next_listener_id_++;
  listeners_.emplace_back(id, std::move(listener));
  return id;
}

void Store::RemoveCommitListener(int id) {
  absl::MutexLock lock(&listeners_mu_);
  listeners_.erase(std::remove_if(listeners_.begin(), listeners_.end(),
                                  [id](const auto& entry) { return entry.first == id; }),
                   listeners_.end());
}

}  // namespace peerkv
