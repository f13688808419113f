// store/store.cc: the LMDB-backed last-writer-wins store: opening the
// environment (in a DataDir), the group-commit writer thread, merge, reads,
// log compaction and map growth.
#include "store/store.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "common/macros.h"
#include "store/codec.h"
#include "store/data_dir.h"
#include "store/lmdb_util.h"

namespace peerkv {
namespace {

using lmdb::Cursor;
using lmdb::Txn;
using lmdb::Val;
using lmdb::View;

// Format 2: the fingerprint covers values (format 1 stores are upgraded
// when opened, by recomputing it; see RecomputeFingerprint).
constexpr uint64_t kFormatVersion = 2;
constexpr char kMetaFormat[] = "format";
constexpr char kMetaReplicaId[] = "replica_id";
constexpr char kMetaIncarnation[] = "incarnation";
// codec::MetaState.
constexpr char kMetaState[] = "state";
// codec::EncodeWatermarks.
constexpr char kMetaWatermarks[] = "watermarks";
constexpr size_t kCompactionStepEntries = 8192;
constexpr int kMaxMapGrowthAttempts = 64;

absl::StatusOr<std::optional<uint64_t>> GetMetaU64(MDB_txn* txn, MDB_dbi dbi,
                                                   std::string_view name) {
  MDB_val key = Val(name), data;
  const int rc = mdb_get(txn, dbi, &key, &data);
  if (rc == MDB_NOTFOUND) return std::nullopt;
  if (rc != MDB_SUCCESS) return lmdb::Error(rc, absl::StrFormat("read meta %s", name));
  PEERKV_ASSIGN_OR_RETURN(const uint64_t value, codec::DecodeMetaU64(View(data), name));
  return value;
}

absl::Status PutMeta(MDB_txn* txn, MDB_dbi dbi, std::string_view name,
                     std::string_view value) {
  MDB_val key = Val(name), data = Val(value);
  return lmdb::Error(mdb_put(txn, dbi, &key, &data, 0),
                     absl::StrFormat("write meta %s", name));
}

// FNV-1a, 64-bit: stable across processes and machines, unlike absl::Hash.
class Fnv64 {
 public:
  void Add(std::string_view bytes) {
    for (unsigned char c : bytes) {
      hash_ ^= c;
      hash_ *= 0x100000001b3ULL;
    }
  }
  void AddU64(uint64_t v) {
    char bytes[8];
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(v >> (8 * i));
    Add(std::string_view(bytes, 8));
  }
  uint64_t value() const { return hash_; }

 private:
  uint64_t hash_ = 0xcbf29ce484222325ULL;
};

// The value of the register whose header names log entry `seq`, checked to
// belong to `record_key`. The view lives as long as `txn`.
absl::StatusOr<std::string_view> ReadValue(MDB_txn* txn, MDB_dbi log_dbi,
                                           std::string_view record_key, uint64_t seq) {
  const std::string key = codec::BigEndian64(seq);
  MDB_val k = Val(key), v;
  const int rc = mdb_get(txn, log_dbi, &k, &v);
  if (rc == MDB_NOTFOUND) {
    return absl::DataLossError(
        absl::StrFormat("log entry %d, which holds a current value, is missing", seq));
  }
  PEERKV_RETURN_IF_ERROR(lmdb::Error(rc, "read log entry"));
  PEERKV_ASSIGN_OR_RETURN(const codec::LogEntry entry, codec::DecodeLogEntry(View(v)));
  if (entry.record_key != record_key) {
    return absl::DataLossError(
        absl::StrFormat("log entry %d belongs to another key", seq));
  }
  return entry.value;
}

// The full record for a records-table entry.
absl::StatusOr<Record> ReadRecord(MDB_txn* txn, MDB_dbi log_dbi,
                                  std::string_view record_key,
                                  const codec::RecordHeader& header) {
  PEERKV_ASSIGN_OR_RETURN(const std::string_view value,
                          ReadValue(txn, log_dbi, record_key, header.seq));
  return codec::MakeRecord(header, codec::LogEntry{record_key, 0, value});
}

// Format 1 -> 2: the fingerprint of every register, now with its value,
// written into the meta state. O(records), once.
absl::Status UpgradeFingerprint(MDB_txn* txn, MDB_dbi records_dbi, MDB_dbi log_dbi,
                                MDB_dbi meta_dbi) {
  uint64_t fingerprint = 0;
  Cursor cursor;
  PEERKV_RETURN_IF_ERROR(cursor.Open(txn, records_dbi));
  MDB_val k, v;
  int rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_FIRST);
  while (rc == MDB_SUCCESS) {
    PEERKV_ASSIGN_OR_RETURN(const codec::RecordHeader header,
                            codec::DecodeRecordHeader(View(v)));
    PEERKV_ASSIGN_OR_RETURN(const std::string_view value,
                            ReadValue(txn, log_dbi, View(k), header.seq));
    fingerprint ^= codec::RegisterHash(View(k), header.version, header.deleted, value);
    rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_NEXT);
  }
  if (rc != MDB_NOTFOUND) return lmdb::Error(rc, "recompute fingerprint");
  MDB_val key = Val(kMetaState), data;
  rc = mdb_get(txn, meta_dbi, &key, &data);
  if (rc == MDB_NOTFOUND) return absl::OkStatus();  // no records yet
  PEERKV_RETURN_IF_ERROR(lmdb::Error(rc, "read meta state"));
  PEERKV_ASSIGN_OR_RETURN(codec::MetaState state, codec::DecodeMetaState(View(data)));
  state.fingerprint = fingerprint;
  return PutMeta(txn, meta_dbi, kMetaState, codec::EncodeMetaState(state));
}

absl::StatusOr<uint64_t> ReadMetaFingerprint(MDB_txn* txn, MDB_dbi meta_dbi) {
  MDB_val key = Val(kMetaState), data;
  const int rc = mdb_get(txn, meta_dbi, &key, &data);
  if (rc == MDB_NOTFOUND) return 0;
  PEERKV_RETURN_IF_ERROR(lmdb::Error(rc, "read meta state"));
  PEERKV_ASSIGN_OR_RETURN(const codec::MetaState state, codec::DecodeMetaState(View(data)));
  return state.fingerprint;
}

size_t RecordBytes(const Record& r) {
  return r.keyspace.size() + r.key.size() + r.value.size() + 32;
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

// A read-only transaction for one store call: holds the resize lock shared,
// and takes a reset transaction from the store's pool (renewing it) instead
// of beginning a new one; gives it back reset.
class Store::ReadTxn {
 public:
  explicit ReadTxn(const Store& store)
      : store_(store), lock_(&store.resize_mu_) {}
  ~ReadTxn() {
    if (txn_ == nullptr) return;
    mdb_txn_reset(txn_);
    store_.read_pool_.Give(txn_);
  }
  ReadTxn(const ReadTxn&) = delete;
  ReadTxn& operator=(const ReadTxn&) = delete;

  absl::Status Begin() {
    txn_ = store_.read_pool_.Take();
    if (txn_ != nullptr) {
      const int rc = mdb_txn_renew(txn_);
      if (rc == MDB_SUCCESS) return absl::OkStatus();
      mdb_txn_abort(txn_);
      txn_ = nullptr;
      return lmdb::Error(rc, "mdb_txn_renew");
    }
    const int rc = mdb_txn_begin(store_.env_, nullptr, MDB_RDONLY, &txn_);
    if (rc != MDB_SUCCESS) txn_ = nullptr;
    return lmdb::Error(rc, "mdb_txn_begin (read)");
  }

  MDB_txn* get() const { return txn_; }

 private:
  const Store& store_;
  absl::ReaderMutexLock lock_;
  MDB_txn* txn_ = nullptr;
};

// One caller's write waiting for (or inside) a group commit.
struct Store::WriteRequest {
  // Local writes: versions are stamped by the writer in commit order.
  std::vector<Mutation> mutations;
  // Remote records, validated and sorted by records key.
  std::vector<Record> remote;
  std::optional<CheckpointUpdate> checkpoint;
  // CompactLog(): a full compaction instead of a write.
  bool compact_all = false;
  size_t records = 0;
  size_t bytes = 0;
  // Results, recomputed on every attempt of the group.
  std::vector<Version> versions;
  MergeResult merge;
  uint64_t compacted = 0;
  // Runs on the writer thread with the outcome of the group.
  absl::AnyInvocable<void(absl::Status, WriteRequest&)> done;
};

// The state of the store as the group's transaction leaves it.
struct Store::GroupState {
  uint64_t next_seq = 0;
  uint64_t live_records = 0;
  uint64_t tombstones = 0;
  uint64_t log_entries = 0;
  uint64_t fingerprint = 0;
  bool changed = false;
  // The group holds local writes.
  bool local = false;
  // What it changed, for the commit listeners (views into the group).
  std::vector<Store::CommitChange> changes;
  absl::flat_hash_map<uint64_t, PeerCheckpoint> checkpoints;
  Watermarks watermarks;
};

Store::Store(StoreOptions options) : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<Store>> Store::Open(StoreOptions options) {
  if (options.dir.empty()) {
    return absl::InvalidArgumentError("store directory is empty");
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

  PEERKV_ASSIGN_OR_RETURN(std::unique_ptr<DataDir> dir, DataDir::Open(options.dir));
  auto store = std::unique_ptr<Store>(new Store(std::move(options)));
  store->dir_ = std::move(dir);
  PEERKV_RETURN_IF_ERROR(store->OpenEnvironment());
  PEERKV_RETURN_IF_ERROR(store->LoadOrInitMeta());
  store->writer_ = std::thread([s = store.get()] { s->WriterLoop(); });
  return store;
}

absl::Status Store::OpenEnvironment() {
  PEERKV_RETURN_IF_ERROR(lmdb::Error(mdb_env_create(&env_), "mdb_env_create"));
  PEERKV_RETURN_IF_ERROR(lmdb::Error(mdb_env_set_maxdbs(env_, 4), "mdb_env_set_maxdbs"));
  PEERKV_RETURN_IF_ERROR(
      lmdb::Error(mdb_env_set_maxreaders(env_, 1024), "mdb_env_set_maxreaders"));
  PEERKV_RETURN_IF_ERROR(lmdb::Error(
      mdb_env_set_mapsize(env_, options_.initial_map_bytes), "mdb_env_set_mapsize"));
  // MDB_NOTLS: read transactions belong to the call that made them, not to
  // a thread, so servers with thread pools do not exhaust reader slots.
  unsigned flags = MDB_NOTLS | MDB_NORDAHEAD;
  if (!options_.sync) flags |= MDB_NOSYNC;
  PEERKV_RETURN_IF_ERROR(lmdb::Error(
      mdb_env_open(env_, dir_->path().c_str(), flags, 0600),
      absl::StrCat("open LMDB environment in ", dir_->path())));
  MDB_envinfo info;
  PEERKV_RETURN_IF_ERROR(lmdb::Error(mdb_env_info(env_, &info), "mdb_env_info"));
  map_bytes_ = info.me_mapsize;
  return absl::OkStatus();
}

absl::Status Store::LoadOrInitMeta() {
  Txn txn;
  PEERKV_RETURN_IF_ERROR(txn.Begin(env_, 0));
  const struct {
    const char* name;
    MDB_dbi* dbi;
  } dbs[] = {{"records", &records_dbi_},
             {"log", &log_dbi_},
             {"peers", &peers_dbi_},
             {"meta", &meta_dbi_}};
  for (const auto& db : dbs) {
    PEERKV_RETURN_IF_ERROR(lmdb::Error(
        mdb_dbi_open(txn.get(), db.name, MDB_CREATE, db.dbi),
        absl::StrCat("open database ", db.name)));
  }

  PEERKV_ASSIGN_OR_RETURN(std::optional<uint64_t> format,
                          GetMetaU64(txn.get(), meta_dbi_, kMetaFormat));
  uint64_t clock_floor = 0;
  if (!format.has_value()) {
    // A new store, unless records exist without meta: then these are not
    // files this code wrote, and guessing would risk the data.
    MDB_stat stat;
    PEERKV_RETURN_IF_ERROR(
        lmdb::Error(mdb_stat(txn.get(), records_dbi_, &stat), "mdb_stat"));
    if (stat.ms_entries != 0) {
      return absl::DataLossError(absl::StrCat(
          "store in ", dir_->path(), " has records but no format marker"));
    }
    std::seed_seq seeds{options_.id_seed.value_or(0)};
    absl::BitGen os_random;
    std::mt19937_64 seeded(seeds);
    auto draw = [&]() -> uint64_t {
      uint64_t v = 0;
      while (v == 0) {
        v = options_.id_seed.has_value() ? seeded()
                                         : absl::Uniform<uint64_t>(os_random);
      }
      return v;
    };
    replica_id_ = draw();
    incarnation_ = draw();
    PEERKV_RETURN_IF_ERROR(
        PutMeta(txn.get(), meta_dbi_, kMetaFormat, codec::EncodeMetaU64(kFormatVersion)));
    PEERKV_RETURN_IF_ERROR(
        PutMeta(txn.get(), meta_dbi_, kMetaReplicaId, codec::EncodeMetaU64(replica_id_)));
    PEERKV_RETURN_IF_ERROR(
        PutMeta(txn.get(), meta_dbi_, kMetaIncarnation, codec::EncodeMetaU64(incarnation_)));
  } else {
    if (*format > kFormatVersion) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "store in %s has format %d; this peerkv reads format %d or older",
          dir_->path(), *format, kFormatVersion));
    }
    PEERKV_ASSIGN_OR_RETURN(std::optional<uint64_t> id,
                            GetMetaU64(txn.get(), meta_dbi_, kMetaReplicaId));
    PEERKV_ASSIGN_OR_RETURN(std::optional<uint64_t> inc,
                            GetMetaU64(txn.get(), meta_dbi_, kMetaIncarnation));
    if (!id.has_value() || !inc.has_value() || *id == 0 || *inc == 0) {
      return absl::DataLossError(absl::StrCat(
          "store in ", dir_->path(), " lacks its replica id or incarnation"));
    }
    replica_id_ = *id;
    incarnation_ = *inc;
    MDB_val key = Val(kMetaState), data;
    const int rc = mdb_get(txn.get(), meta_dbi_, &key, &data);
    if (rc == MDB_SUCCESS) {
      PEERKV_ASSIGN_OR_RETURN(const codec::MetaState state,
                              codec::DecodeMetaState(View(data)));
      clock_floor = state.clock_mark;
      max_seq_ = state.max_seq;
      live_records_ = state.live_records;
      tombstones_ = state.tombstones;
      fingerprint_ = state.fingerprint;
    } else if (rc != MDB_NOTFOUND) {
      return lmdb::Error(rc, "read meta state");
    }
    MDB_val wk = Val(kMetaWatermarks), wv;
    const int wrc = mdb_get(txn.get(), meta_dbi_, &wk, &wv);
    if (wrc == MDB_SUCCESS) {
      PEERKV_ASSIGN_OR_RETURN(Watermarks stored, codec::DecodeWatermarks(View(wv)));
      absl::MutexLock lock(&watermarks_mu_);
      watermarks_ = std::move(stored);
    } else if (wrc != MDB_NOTFOUND) {
      return lmdb::Error(wrc, "read meta watermarks");
    }
  }
  if (format.has_value() && *format < 2) {
    PEERKV_RETURN_IF_ERROR(UpgradeFingerprint(txn.get(), records_dbi_, log_dbi_, meta_dbi_));
    PEERKV_ASSIGN_OR_RETURN(fingerprint_, ReadMetaFingerprint(txn.get(), meta_dbi_));
    PEERKV_RETURN_IF_ERROR(
        PutMeta(txn.get(), meta_dbi_, kMetaFormat, codec::EncodeMetaU64(kFormatVersion)));
  }
  PEERKV_RETURN_IF_ERROR(RecordOpen(txn.get(), &clock_floor));
  MDB_stat log_stat;
  PEERKV_RETURN_IF_ERROR(
      lmdb::Error(mdb_stat(txn.get(), log_dbi_, &log_stat), "mdb_stat log"));
  log_entries_ = log_stat.ms_entries;
  PEERKV_RETURN_IF_ERROR(txn.Commit());

  const WallClock& wall =
      options_.wall_clock != nullptr ? *options_.wall_clock : SystemWallClock();
  clock_ = std::make_unique<HybridClock>(wall, clock_floor);
  committed_clock_ = clock_floor;
  return absl::OkStatus();
}

Store::~Store() {
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
      std::fprintf(stderr, "peerkv: checkpoints not saved at close: %s\n",
                   flushed.ToString().c_str());
    }
    mdb_env_close(env_);
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
  absl::Notification finished;
  absl::StatusOr<std::vector<Version>> result;
  SubmitWrite(std::move(mutations),
              [&](absl::StatusOr<std::vector<Version>> r) {
                result = std::move(r);
                finished.Notify();
              },
              /*wait_for_room=*/true);
  finished.WaitForNotification();
  return result;
}

void Store::WriteAsync(std::vector<Mutation> mutations, WriteCallback done) {
  SubmitWrite(std::move(mutations), std::move(done), /*wait_for_room=*/false);
}

void Store::SubmitWrite(std::vector<Mutation> mutations, WriteCallback done,
                        bool wait_for_room) {
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
  auto request = std::make_unique<WriteRequest>();
  for (size_t i = 0; i < mutations.size(); ++i) {
    const Mutation& m = mutations[i];
    absl::Status valid = ValidateMutation(m, options_.max_value_bytes);
    if (!valid.ok()) {
      if (mutations.size() > 1) {
        valid = absl::Status(valid.code(), absl::StrFormat("mutation %d: %s", i,
                                                           valid.message()));
      }
      done(valid);
      return;
    }
    request->bytes += m.keyspace.size() + m.key.size() +
                      (m.value.has_value() ? m.value->size() : 0) + 32;
  }
  if (request->bytes > kMaxBatchBytes) {
    done(absl::InvalidArgumentError(absl::StrFormat(
        "batch is %d bytes; the limit is %d", request->bytes, kMaxBatchBytes)));
    return;
  }
  request->records = mutations.size();
  request->mutations = std::move(mutations);
  request->done = [done = std::move(done)](absl::Status status,
                                           WriteRequest& r) mutable {
    if (!status.ok()) {
      done(std::move(status));
    } else {
      done(std::move(r.versions));
    }
  };
  Submit(std::move(request), wait_for_room);
}

absl::StatusOr<MergeResult> Store::Merge(std::vector<Record> batch,
                                         std::optional<CheckpointUpdate> checkpoint) {
  absl::Notification finished;
  absl::StatusOr<MergeResult> result;
  SubmitMerge(std::move(batch), std::move(checkpoint),
              [&](absl::StatusOr<MergeResult> r) {
                result = std::move(r);
                finished.Notify();
              },
              /*wait_for_room=*/true);
  finished.WaitForNotification();
  return result;
}

void Store::MergeAsync(std::vector<Record> batch,
                       std::optional<CheckpointUpdate> checkpoint,
                       MergeCallback done) {
  SubmitMerge(std::move(batch), std::move(checkpoint), std::move(done),
              /*wait_for_room=*/false);
}

void Store::SubmitMerge(std::vector<Record> batch,
                        std::optional<CheckpointUpdate> checkpoint,
                        MergeCallback done, bool wait_for_room) {
  if (batch.size() > kMaxBatchRecords) {
    done(absl::InvalidArgumentError(absl::StrFormat(
        "merge batch has %d records; the limit is %d", batch.size(),
        kMaxBatchRecords)));
    return;
  }
  auto request = std::make_unique<WriteRequest>();
  request->remote.reserve(batch.size());
  for (Record& r : batch) {
    absl::Status valid = ValidateRemoteRecord(r, options_.max_value_bytes);
    if (valid.ok()) {
      // The last line of defence: the engine checks first (CheckSkew).
      valid = CheckSkew(r.version.hlc);
    }
    if (!valid.ok()) {
      // Name the origin: one device with a wrong clock or a bad encoder is
      // what the operator needs to find.
      request->merge.refused.push_back(RefusedRecord{
          r.keyspace, r.key, r.version,
          absl::Status(valid.code(),
                       absl::StrCat("record from origin ",
                                    ReplicaIdToString(r.version.origin), ": ",
                                    valid.message()))});
      continue;
    }
    request->bytes += RecordBytes(r);
    request->remote.push_back(std::move(r));
  }
  if (request->bytes > kMaxBatchBytes) {
    done(absl::InvalidArgumentError(absl::StrFormat(
        "merge batch is %d bytes; the limit is %d", request->bytes,
        kMaxBatchBytes)));
    return;
  }
  // Key order makes neighbouring records share B-tree pages: one descent
  // per record over warm pages, and fewer dirty pages per commit.
  std::sort(request->remote.begin(), request->remote.end(),
            [](const Record& a, const Record& b) {
              if (a.keyspace != b.keyspace) return a.keyspace < b.keyspace;
              if (a.key != b.key) return a.key < b.key;
              return a.version < b.version;
            });
  request->records = request->remote.size();
  request->checkpoint = std::move(checkpoint);
  if (request->remote.empty() && !request->checkpoint.has_value()) {
    done(std::move(request->merge));
    return;
  }
  request->done = [done = std::move(done)](absl::Status status,
                                           WriteRequest& r) mutable {
    if (!status.ok()) {
      done(std::move(status));
    } else {
      done(std::move(r.merge));
    }
  };
  Submit(std::move(request), wait_for_room);
}

absl::StatusOr<uint64_t> Store::CompactLog() {
  absl::Notification finished;
  absl::StatusOr<uint64_t> result;
  auto request = std::make_unique<WriteRequest>();
  request->compact_all = true;
  request->done = [&](absl::Status status, WriteRequest& r) {
    result = status.ok() ? absl::StatusOr<uint64_t>(r.compacted)
                         : absl::StatusOr<uint64_t>(status);
    finished.Notify();
  };
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
  request->done(refused, *request);
}

void Store::WriterLoop() {
  writer_id_ = std::this_thread::get_id();
  for (;;) {
    std::vector<std::unique_ptr<WriteRequest>> group;
    {
      absl::MutexLock lock(&queue_mu_);
      auto ready = [this]() {
        queue_mu_.AssertHeld();
        return stopping_ || !queue_.empty();
      };
      queue_mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping, and every write is done
      size_t records = 0, bytes = 0;
      while (!queue_.empty()) {
        WriteRequest& next = *queue_.front();
        if (!group.empty() &&
            (next.compact_all || group.front()->compact_all ||
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
    }
    ApplyGroup(group);
    if (CompactionDue()) {
      bool reached_end = false;
      const absl::StatusOr<uint64_t> step =
          CompactStep(kCompactionStepEntries, &reached_end);
      if (!step.ok()) {
        std::fprintf(stderr, "peerkv: log compaction step failed: %s\n",
                     step.status().ToString().c_str());
      }
    }
  }
}

void Store::ApplyGroup(std::vector<std::unique_ptr<WriteRequest>>& group) {
  PEERKV_CHECK(OnWriterThread());
  PEERKV_CHECK(!group.empty());
  // A compaction runs alone (WriterLoop never groups it).
  PEERKV_CHECK(!group.front()->compact_all || group.size() == 1);
  absl::Status status;
  GroupState state;
  if (group.front()->compact_all) {
    compact_from_seq_ = 0;
    bool reached_end = false;
    uint64_t removed = 0;
    // Bounded: each step advances through the log or ends the pass.
    for (int steps = 0; steps < (1 << 30) && !reached_end && status.ok(); ++steps) {
      absl::StatusOr<uint64_t> step = CompactStep(kCompactionStepEntries, &reached_end);
      if (step.ok()) {
        removed += *step;
      } else {
        status = step.status();
      }
    }
    group.front()->compacted = removed;
  } else {
    size_t bytes = 0;
    for (const auto& r : group) bytes += r->bytes;
    // MDB_MAP_FULL can come from any call that allocates a page, commit
    // included (it writes the free list and the database roots); whichever
    // it was, the transaction is gone, and the group is retried in a
    // bigger map. Bounded: each attempt at least doubles the map, up to
    // max_map_bytes, where GrowMap refuses.
    for (int attempt = 0;; ++attempt) {
      state = GroupState{};
      status = TryApplyGroup(group, state);
      if (!lmdb::IsMapFull(status)) break;
      if (attempt == kMaxMapGrowthAttempts) break;
      const absl::Status grown = GrowMap(bytes);
      if (!grown.ok()) {
        status = grown;
        break;
      }
    }
    if (status.ok() && state.changed) {
      PEERKV_CHECK(state.next_seq - 1 > max_seq_.load());
      max_seq_ = state.next_seq - 1;
      live_records_ = state.live_records;
      tombstones_ = state.tombstones;
      log_entries_ = state.log_entries;
      fingerprint_ = state.fingerprint;
      // Only this thread stamps local writes, so every local write with a
      // version at or below the clock now is committed.
      committed_clock_ = clock_->Last();
      ++commits_;
    }
  }
  // Listeners first: once a write is acknowledged, watchers already know.
  if (status.ok() && state.changed) {
    const CommitInfo info{max_seq_.load(), state.local, &state.changes};
    absl::MutexLock lock(&listeners_mu_);
    for (auto& [id, listener] : listeners_) listener(info);
  }
  for (auto& request : group) request->done(status, *request);
}

absl::Status Store::TryApplyGroup(std::vector<std::unique_ptr<WriteRequest>>& group,
                                  GroupState& state) {
  PEERKV_CHECK(OnWriterThread());
  size_t group_bytes = 0;
  for (const auto& r : group) group_bytes += r->bytes;
  state.next_seq = max_seq_.load() + 1;
  state.live_records = live_records_.load();
  state.tombstones = tombstones_.load();
  state.log_entries = log_entries_.load();
  state.fingerprint = fingerprint_.load();

  Txn txn;
  PEERKV_RETURN_IF_ERROR(txn.Begin(env_, 0));
  Cursor records, log;
  PEERKV_RETURN_IF_ERROR(records.Open(txn, records_dbi_));
  PEERKV_RETURN_IF_ERROR(log.Open(txn, log_dbi_));
  std::string record_key, stored, seq_key;

  // Writes `version` for the key if it beats the stored one, and appends
  // the change (with the value) to the log. One B-tree descent: a put that
  // refuses to overwrite leaves the cursor on the existing header and hands
  // back its bytes; headers are fixed-size, so the overwrite is in place.
  std::string log_value;
  auto apply = [&](std::string_view keyspace, std::string_view key,
                   const Version& version, bool deleted, std::string_view value,
                   uint64_t source) -> absl::StatusOr<bool> {
    codec::AppendRecordKey(keyspace, key, &record_key);
    codec::EncodeRecordHeader(codec::RecordHeader{version, deleted, state.next_seq},
                              &stored);
    MDB_val k = Val(record_key), d = Val(stored);
    int rc = mdb_cursor_put(records.get(), &k, &d, MDB_NOOVERWRITE);
    if (rc == MDB_KEYEXIST) {
      PEERKV_ASSIGN_OR_RETURN(const codec::RecordHeader old,
                              codec::DecodeRecordHeader(View(d)));
      if (!(version > old.version)) return false;
      (old.deleted ? state.tombstones : state.live_records) -= 1;
      // The value takes part in the fingerprint: the old one is read back
      // (one lookup, and only when a register is overwritten).
      PEERKV_ASSIGN_OR_RETURN(const std::string_view old_value,
                              ReadValue(txn.get(), log_dbi_, record_key, old.seq));
      state.fingerprint ^= codec::RegisterHash(record_key, old.version, old.deleted, old_value);
      d = Val(stored);
      rc = mdb_cursor_put(records.get(), &k, &d, MDB_CURRENT);
    }
    PEERKV_RETURN_IF_ERROR(lmdb::Error(rc, "write record"));
    (deleted ? state.tombstones : state.live_records) += 1;
    state.fingerprint ^= codec::RegisterHash(record_key, version, deleted, value);
    seq_key.clear();
    codec::PutBigEndian64(&seq_key, state.next_seq);
    codec::EncodeLogEntry(record_key, source, value, &log_value);
    MDB_val lk = Val(seq_key), lv = Val(log_value);
    PEERKV_RETURN_IF_ERROR(
        lmdb::Error(mdb_cursor_put(log.get(), &lk, &lv, MDB_APPEND), "append to log"));
    state.changes.push_back(CommitChange{state.next_seq, keyspace, key});
    ++state.next_seq;
    ++state.log_entries;
    state.changed = true;
    return true;
  };

  for (auto& request : group) {
    WriteRequest& r = *request;
    r.versions.clear();
    r.merge.won = 0;
    if (!r.mutations.empty()) state.local = true;
    for (const Mutation& m : r.mutations) {
      const Version version{clock_->Now(), replica_id_};
      const bool deleted = !m.value.has_value();
      PEERKV_ASSIGN_OR_RETURN(
          const bool won,
          apply(m.keyspace, m.key, version, deleted,
                deleted ? std::string_view() : std::string_view(*m.value), /*source=*/0));
      if (!won) {
        // The clock starts above every stored version and observes every
        // merged one, so a local write always wins; anything else is a bug
        // in the clock or the merge, and the process stops before it commits.
        std::fprintf(stderr, "peerkv: local write to %s lost to a stored version; clock at %s\n",
                     m.keyspace.c_str(), version.ToString().c_str());
      }
      PEERKV_CHECK(won);
      r.versions.push_back(version);
    }
    const uint64_t source = r.checkpoint.has_value() ? r.checkpoint->peer_id : 0;
    for (const Record& remote : r.remote) {
      clock_->Observe(remote.version.hlc);
      PEERKV_ASSIGN_OR_RETURN(
          const bool won, apply(remote.keyspace, remote.key, remote.version,
                                remote.deleted, remote.value, source));
      if (won) ++r.merge.won;
    }
    if (r.checkpoint.has_value()) {
      state.checkpoints[r.checkpoint->peer_id] = r.checkpoint->checkpoint;
      state.watermarks.Merge(r.checkpoint->watermarks);
    }
  }

  records.Close();
  log.Close();
  if (!state.changed) {
    // Nothing won: write nothing. Hold the checkpoints and watermarks for
    // the next commit (claiming them now is safe: the data is durable).
    txn.Abort();
    {
      absl::MutexLock lock(&checkpoints_mu_);
      for (const auto& [peer, cp] : state.checkpoints) held_checkpoints_[peer] = cp;
    }
    if (!state.watermarks.empty()) {
      absl::MutexLock lock(&watermarks_mu_);
      watermarks_.Merge(state.watermarks);
      watermarks_dirty_ = true;
    }
    return absl::OkStatus();
  }
  Watermarks watermarks;
  bool write_watermarks;
  {
    absl::MutexLock lock(&watermarks_mu_);
    watermarks = watermarks_;
    write_watermarks = watermarks_dirty_ || !state.watermarks.empty();
  }
  if (write_watermarks) {
    watermarks.Merge(state.watermarks);
    const std::string encoded = codec::EncodeWatermarks(watermarks);
    MDB_val k = Val(kMetaWatermarks), d = Val(encoded);
    PEERKV_RETURN_IF_ERROR(lmdb::Error(mdb_put(txn.get(), meta_dbi_, &k, &d, 0), "write watermarks"));
  }

  absl::flat_hash_map<uint64_t, PeerCheckpoint> checkpoints;
  {
    absl::MutexLock lock(&checkpoints_mu_);
    checkpoints = held_checkpoints_;
  }
  for (const auto& [peer, cp] : state.checkpoints) checkpoints[peer] = cp;
  for (const auto& [peer, cp] : checkpoints) {
    const std::string key = codec::BigEndian64(peer);
    const std::string value = codec::EncodeCheckpoint(cp);
    MDB_val k = Val(key), d = Val(value);
    PEERKV_RETURN_IF_ERROR(
        lmdb::Error(mdb_put(txn.get(), peers_dbi_, &k, &d, 0), "write checkpoint"));
  }

  const std::string meta_state = codec::EncodeMetaState(codec::MetaState{
      clock_->Last(), state.next_seq - 1, state.live_records, state.tombstones,
      state.fingerprint});
  {
    MDB_val k = Val(kMetaState), d = Val(meta_state);
    PEERKV_RETURN_IF_ERROR(
        lmdb::Error(mdb_put(txn.get(), meta_dbi_, &k, &d, 0), "write meta state"));
  }
  absl::Status committed = txn.Commit();
  // A full map is not a full disk: ApplyGroup grows it and retries.
  if (lmdb::IsMapFull(committed)) return committed;
  if (!committed.ok()) return ExplainCommitFailure(committed, group_bytes);
  if (write_watermarks) {
    absl::MutexLock lock(&watermarks_mu_);
    watermarks_.Merge(watermarks);
    watermarks_dirty_ = false;
  }
  absl::MutexLock lock(&checkpoints_mu_);
  // Only the writer thread adds held checkpoints, so every one held now was
  // in the transaction that just committed.
  held_checkpoints_.clear();
  return absl::OkStatus();
}

absl::Status Store::ExplainCommitFailure(const absl::Status& failure,
                                         size_t group_bytes) const {
  return dir_->ExplainWriteFailure(failure, group_bytes);
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
  std::string watermarks;
  {
    absl::MutexLock lock(&watermarks_mu_);
    if (watermarks_dirty_) watermarks = codec::EncodeWatermarks(watermarks_);
  }
  if (checkpoints.empty() && watermarks.empty()) return absl::OkStatus();
  Txn txn;
  PEERKV_RETURN_IF_ERROR(txn.Begin(env_, 0));
  if (!watermarks.empty()) {
    MDB_val k = Val(kMetaWatermarks), d = Val(watermarks);
    PEERKV_RETURN_IF_ERROR(
        lmdb::Error(mdb_put(txn.get(), meta_dbi_, &k, &d, 0), "write watermarks"));
  }
  for (const auto& [peer, cp] : checkpoints) {
    const std::string key = codec::BigEndian64(peer);
    const std::string value = codec::EncodeCheckpoint(cp);
    MDB_val k = Val(key), d = Val(value);
    PEERKV_RETURN_IF_ERROR(lmdb::Error(mdb_put(txn.get(), peers_dbi_, &k, &d, 0),
                                       "write checkpoint"));
  }
  return txn.Commit();
}

bool Store::CompactionDue() const {
  const uint64_t entries = log_entries_.load();
  const uint64_t records = live_records_.load() + tombstones_.load();
  const uint64_t garbage = entries > records ? entries - records : 0;
  return garbage > options_.compaction_min_garbage && garbage > records;
}

absl::StatusOr<uint64_t> Store::CompactStep(size_t max_entries,
                                            bool* reached_end) {
  PEERKV_CHECK(OnWriterThread());
  *reached_end = false;
  std::vector<uint64_t> superseded;
  uint64_t last_seq = compact_from_seq_;
  Txn txn;
  PEERKV_RETURN_IF_ERROR(txn.Begin(env_, 0));
  {
    Cursor log;
    PEERKV_RETURN_IF_ERROR(log.Open(txn, log_dbi_));
    const std::string start = codec::BigEndian64(compact_from_seq_ + 1);
    MDB_val k = Val(start), v;
    int rc = mdb_cursor_get(log.get(), &k, &v, MDB_SET_RANGE);
    size_t examined = 0;
    for (; rc == MDB_SUCCESS && examined < max_entries; ++examined) {
      if (k.mv_size != 8) return absl::DataLossError("log key is not 8 bytes");
      const uint64_t seq = codec::GetBigEndian64(static_cast<const char*>(k.mv_data));
      PEERKV_ASSIGN_OR_RETURN(const codec::LogEntry entry, codec::DecodeLogEntry(View(v)));
      MDB_val rk = Val(entry.record_key), rv;
      const int get = mdb_get(txn.get(), records_dbi_, &rk, &rv);
      if (get == MDB_NOTFOUND) {
        superseded.push_back(seq);
      } else if (get != MDB_SUCCESS) {
        return lmdb::Error(get, "read record for compaction");
      } else {
        PEERKV_ASSIGN_OR_RETURN(const codec::RecordHeader header,
                                codec::DecodeRecordHeader(View(rv)));
        if (header.seq != seq) superseded.push_back(seq);
      }
      last_seq = seq;
      rc = mdb_cursor_get(log.get(), &k, &v, MDB_NEXT);
    }
    if (rc == MDB_NOTFOUND) {
      *reached_end = true;
    } else if (rc != MDB_SUCCESS) {
      return lmdb::Error(rc, "read log for compaction");
    }
  }
  for (uint64_t seq : superseded) {
    const std::string key = codec::BigEndian64(seq);
    MDB_val k = Val(key);
    const int rc = mdb_del(txn.get(), log_dbi_, &k, nullptr);
    if (rc == MDB_MAP_FULL) {
      // Deleting needs fresh pages too; grow and let a later step retry.
      txn.Abort();
      PEERKV_RETURN_IF_ERROR(GrowMap(0));
      return 0;
    }
    PEERKV_RETURN_IF_ERROR(lmdb::Error(rc, "delete superseded log entry"));
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

// ---------------------------------------------------------------------------
// Reads

absl::Status Store::GetView(std::string_view keyspace, std::string_view key,
                            absl::FunctionRef<void(const RecordView*)> fn) const {
  PEERKV_RETURN_IF_ERROR(ValidateKeyspace(keyspace));
  PEERKV_RETURN_IF_ERROR(ValidateKey(key));
  // The records key on the stack: reads are the hot path of a server.
  char buffer[kMaxKeyspaceBytes + 1 + kMaxKeyBytes];
  std::memcpy(buffer, keyspace.data(), keyspace.size());
  buffer[keyspace.size()] = '\0';
  std::memcpy(buffer + keyspace.size() + 1, key.data(), key.size());
  const std::string_view record_key(buffer, keyspace.size() + 1 + key.size());

  ReadTxn txn(*this);
  PEERKV_RETURN_IF_ERROR(txn.Begin());
  MDB_val k = Val(record_key), v;
  const int rc = mdb_get(txn.get(), records_dbi_, &k, &v);
  if (rc == MDB_NOTFOUND) {
    fn(nullptr);
    return absl::OkStatus();
  }
  PEERKV_RETURN_IF_ERROR(lmdb::Error(rc, "read record"));
  PEERKV_ASSIGN_OR_RETURN(const codec::RecordHeader header,
                          codec::DecodeRecordHeader(View(v)));
  PEERKV_ASSIGN_OR_RETURN(const std::string_view value,
                          ReadValue(txn.get(), log_dbi_, record_key, header.seq));
  if (header.deleted && !value.empty()) {
    return absl::DataLossError("stored tombstone carries value bytes");
  }
  const RecordView view{keyspace, key, header.version, header.deleted, value, header.seq};
  fn(&view);
  return absl::OkStatus();
}

absl::StatusOr<std::optional<Record>> Store::Get(std::string_view keyspace,
                                                 std::string_view key) const {
  std::optional<Record> record;
  PEERKV_RETURN_IF_ERROR(GetView(keyspace, key, [&record](const RecordView* view) {
    if (view == nullptr) return;
    record = Record{std::string(view->keyspace), std::string(view->key), view->version,
                    view->deleted, std::string(view->value), view->seq};
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
  ReadTxn txn(*this);
  PEERKV_RETURN_IF_ERROR(txn.Begin());
  {
    MDB_val k = Val(kMetaState), v;
    const int rc = mdb_get(txn.get(), meta_dbi_, &k, &v);
    if (rc == MDB_SUCCESS) {
      PEERKV_ASSIGN_OR_RETURN(const codec::MetaState state,
                              codec::DecodeMetaState(View(v)));
      changes.max_seq = state.max_seq;
    } else if (rc != MDB_NOTFOUND) {
      return lmdb::Error(rc, "read meta state");
    }
  }
  if (after_seq >= changes.max_seq) return changes;

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
    if (k.mv_size != 8) return absl::DataLossError("log key is not 8 bytes");
    const uint64_t seq = codec::GetBigEndian64(static_cast<const char*>(k.mv_data));
    PEERKV_ASSIGN_OR_RETURN(const codec::LogEntry entry, codec::DecodeLogEntry(View(v)));
    if (!filter.keyspace.empty()) {
      std::string_view keyspace, key;
      PEERKV_RETURN_IF_ERROR(codec::SplitRecordKey(entry.record_key, &keyspace, &key));
      if (keyspace != filter.keyspace || !key.starts_with(filter.key_prefix)) {
        changes.last_seq = seq;
        rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_NEXT);
        continue;
      }
    }
    MDB_val rk = Val(entry.record_key), rv;
    const int get = mdb_get(txn.get(), records_dbi_, &rk, &rv);
    if (get == MDB_SUCCESS) {
      PEERKV_ASSIGN_OR_RETURN(const codec::RecordHeader header,
                              codec::DecodeRecordHeader(View(rv)));
      const bool skip = (filter.skip_source != 0 && entry.source == filter.skip_source) ||
                        (filter.skip_origin != 0 && header.version.origin == filter.skip_origin) ||
                        (filter.max_value_bytes != 0 && entry.value.size() > filter.max_value_bytes) ||
                        (filter.covered != nullptr && filter.covered->Covers(header.version));
      if (header.seq == seq && !skip) {
        PEERKV_ASSIGN_OR_RETURN(Record record, codec::MakeRecord(header, entry));
        bytes += RecordBytes(record);
        changes.records.push_back(std::move(record));
      }
    } else if (get != MDB_NOTFOUND) {
      return lmdb::Error(get, "read record for log entry");
    }
    changes.last_seq = seq;
    rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_NEXT);
  }
  if (rc != MDB_NOTFOUND) return lmdb::Error(rc, "read log");
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
  const std::string key = codec::BigEndian64(peer_id);
  ReadTxn txn(*this);
  PEERKV_RETURN_IF_ERROR(txn.Begin());
  MDB_val k = Val(key), v;
  const int rc = mdb_get(txn.get(), peers_dbi_, &k, &v);
  if (rc == MDB_NOTFOUND) return std::nullopt;
  PEERKV_RETURN_IF_ERROR(lmdb::Error(rc, "read checkpoint"));
  PEERKV_ASSIGN_OR_RETURN(const PeerCheckpoint checkpoint,
                          codec::DecodeCheckpoint(View(v), peer_id));
  return checkpoint;
}

absl::Status Store::CheckSkew(uint64_t hlc) const {
  return clock_->CheckSkew(hlc, options_.max_clock_skew_ms);
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
  PEERKV_ASSIGN_OR_RETURN(stats.disk_bytes, dir_->DataFileBytes());
  return stats;
}

absl::StatusOr<uint64_t> Store::Digest() const {
  Fnv64 hash;
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
                            ReadValue(txn.get(), log_dbi_, View(k), header.seq));
    hash.AddU64(value.size());
    hash.Add(value);
    rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_NEXT);
  }
  if (rc != MDB_NOTFOUND) return lmdb::Error(rc, "digest records");
  return hash.value();
}

Watermarks Store::GetWatermarks() const {
  Watermarks out;
  {
    absl::MutexLock lock(&watermarks_mu_);
    out = watermarks_;
  }
  // Only committed writes: a write that has its version but is not yet
  // committed must not be claimed, or a peer that adopts the claim would
  // never be sent it.
  out.Raise(replica_id_, committed_clock_.load());
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
