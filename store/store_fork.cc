// store/store_fork.cc: the store's memory of its own history (the clock
// gap of each open, see store/lineage.h) and Fork(), which turns a data
// directory restored from an older copy into a new replica. Apart from
// store.cc so that the restore logic stays out of the write path.
#include <algorithm>
#include <random>
#include <tuple>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_format.h"
#include "common/macros.h"
#include "store/codec.h"
#include "store/lmdb_util.h"
#include "store/store.h"
#include "store/tables.h"

namespace peerkv {

absl::Status Store::RecordOpen(MDB_txn* txn, uint64_t* clock_floor) {
  Lineage lineage;
  PEERKV_ASSIGN_OR_RETURN(const std::optional<std::string_view> stored,
                          lmdb::Get(txn, meta_dbi_, codec::kMetaLineage, "read meta lineage"));
  if (stored.has_value()) {
    PEERKV_ASSIGN_OR_RETURN(lineage, DecodeLineage(*stored));
  }
  if (lineage.replica_id != replica_id_.load()) {
    // Written for another id (or never): its gaps say nothing of this one.
    lineage.gaps.clear();
    lineage.replica_id = replica_id_.load();
  }
  const WallClock& wall =
      options_.wall_clock != nullptr ? *options_.wall_clock : SystemWallClock();
  const int64_t now_ms = wall.NowMillis();
  const uint64_t now = now_ms > 0 ? MakeHlc(static_cast<uint64_t>(now_ms), 0) : 0;
  if (now > *clock_floor) {
    lineage.AddGap(ClockGap{*clock_floor, now, max_seq_.load()});
    *clock_floor = now;
  }
  PEERKV_RETURN_IF_ERROR(lmdb::Put(txn, meta_dbi_, codec::kMetaLineage, EncodeLineage(lineage),
                                   "write meta lineage"));
  if (options_.id_seed.has_value()) {
    // Replayable, yet different for each open of each replica.
    std::seed_seq seeds{*options_.id_seed, replica_id_.load(), lineage.gaps.size(),
                        static_cast<uint64_t>(now_ms)};
    std::mt19937_64 seeded(seeds);
    open_nonce_ = seeded() | 1;
  } else {
    open_nonce_ = absl::Uniform<uint64_t>(absl::BitGen()) | 1;
  }
  absl::MutexLock lock(&lineage_mu_);
  lineage_ = std::move(lineage);
  return absl::OkStatus();
}

Lineage Store::GetLineage() const {
  absl::MutexLock lock(&lineage_mu_);
  return lineage_;
}

absl::StatusOr<Store::ForkResult> Store::Fork(uint64_t restamp_after_seq) {
  // Every write queued so far commits first: merges submitted before the
  // fork were pulled as the old id, and their checkpoints must not land
  // after the checkpoints are dropped.
  PEERKV_RETURN_IF_ERROR(Merge({}).status());

  ForkResult result;
  result.old_id = replica_id_.load();
  Lineage lineage = GetLineage();
  std::tie(result.new_id, result.new_incarnation) = DrawForkIds(lineage);
  lineage.retired_ids.push_back(result.old_id);
  if (lineage.retired_ids.size() > Lineage::kMaxRetiredIds) {
    lineage.retired_ids.erase(lineage.retired_ids.begin());
  }
  lineage.replica_id = result.new_id;
  lineage.gaps.clear();
  // The new id never stamped anything before now.
  lineage.AddGap(ClockGap{0, committed_clock_.load()});
  PEERKV_RETURN_IF_ERROR(CommitFork(result, lineage));
  {
    absl::MutexLock lock(&lineage_mu_);
    lineage_ = std::move(lineage);
  }
  PEERKV_ASSIGN_OR_RETURN(result.restamped, Restamp(result.old_id, restamp_after_seq));
  return result;
}

std::pair<uint64_t, uint64_t> Store::DrawForkIds(const Lineage& lineage) const {
  const uint64_t old_id = replica_id_.load();
  std::mt19937_64 seeded(options_.id_seed.value_or(0) ^ old_id);
  absl::BitGen os_random;
  auto used = [&](uint64_t id) {
    return id == 0 || id == old_id ||
           std::find(lineage.retired_ids.begin(), lineage.retired_ids.end(), id) !=
               lineage.retired_ids.end();
  };
  auto draw = [&] {
    return options_.id_seed.has_value() ? seeded() : absl::Uniform<uint64_t>(os_random);
  };
  uint64_t id, incarnation;
  do id = draw();
  while (used(id));
  do incarnation = draw();
  while (incarnation == 0 || incarnation == incarnation_.load());
  return {id, incarnation};
}

absl::Status Store::CommitFork(const ForkResult& fork, const Lineage& lineage) {
  // The map must not grow under an open transaction (see resize_mu_).
  absl::ReaderMutexLock resize(&resize_mu_);
  lmdb::Txn txn;
  PEERKV_RETURN_IF_ERROR(txn.Begin(env_, 0));
  PEERKV_RETURN_IF_ERROR(
      tables::WriteMetaU64(txn.get(), meta_dbi_, codec::kMetaReplicaId, fork.new_id));
  PEERKV_RETURN_IF_ERROR(
      tables::WriteMetaU64(txn.get(), meta_dbi_, codec::kMetaIncarnation, fork.new_incarnation));
  PEERKV_RETURN_IF_ERROR(lmdb::Put(txn.get(), meta_dbi_, codec::kMetaLineage,
                                   EncodeLineage(lineage), "write meta lineage"));
  Watermarks watermarks;
  {
    absl::MutexLock lock(&watermarks_mu_);
    watermarks = watermarks_;
  }
  watermarks.erase(fork.old_id);
  PEERKV_RETURN_IF_ERROR(tables::WriteWatermarks(txn.get(), meta_dbi_, watermarks));
  // Empties the checkpoints (the table stays).
  PEERKV_RETURN_IF_ERROR(lmdb::Error(mdb_drop(txn.get(), peers_dbi_, 0), "drop checkpoints"));
  // Held across the commit, so no held checkpoint or claim is taken
  // between it and the memory update.
  absl::MutexLock checkpoints(&checkpoints_mu_);
  absl::MutexLock marks(&watermarks_mu_);
  PEERKV_RETURN_IF_ERROR(txn.Commit());
  held_checkpoints_.clear();
  watermarks_.erase(fork.old_id);
  watermarks_dirty_ = false;
  replica_id_.store(fork.new_id);
  incarnation_.store(fork.new_incarnation);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Store::Restamp(uint64_t old_id, uint64_t after_seq) {
  // A page of the log at a time, each page one durable batch.
  uint64_t restamped = 0;
  uint64_t after = after_seq;
  const uint64_t end = max_seq_.load();
  while (after < end) {
    PEERKV_ASSIGN_OR_RETURN(Changes changes, ChangesSince(after, kMaxBatchRecords));
    std::vector<Mutation> again;
    for (Record& r : changes.records) {
      if (r.seq > end) break;
      if (r.version.origin != old_id) continue;
      Mutation m;
      m.keyspace = std::move(r.keyspace);
      m.key = std::move(r.key);
      if (!r.deleted) m.value = std::move(r.value);  // nullopt: a tombstone
      again.push_back(std::move(m));
    }
    if (!again.empty()) {
      restamped += again.size();
      PEERKV_RETURN_IF_ERROR(Write(std::move(again)).status());
    }
    if (changes.last_seq <= after) break;
    after = changes.last_seq;
  }
  return restamped;
}

}  // namespace peerkv
