// store/store_fork.cc: the store's memory of its own history (the clock
// gap of each open, see store/lineage.h) and Fork(), which turns a data
// directory restored from an older copy into a new replica. Apart from
// store.cc so that the restore logic stays out of the write path.
#include <algorithm>
#include <memory>
#include <random>
#include <tuple>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "common/macros.h"
#include "store/codec.h"
#include "store/group_txn.h"
#include "store/lmdb_util.h"
#include "store/replica_id.h"
#include "store/store.h"
#include "store/tables.h"
#include "store/write_request.h"

namespace peerkv {

absl::Status Store::RecordOpen(MDB_txn* txn, uint64_t* clock_floor, bool id_began) {
  Lineage lineage;
  PEERKV_ASSIGN_OR_RETURN(const std::optional<std::string_view> stored,
                          lmdb::Get(txn, meta_dbi_, codec::kMetaLineage, "read meta lineage"));
  if (stored.has_value()) {
    PEERKV_ASSIGN_OR_RETURN(lineage, DecodeLineage(*stored));
  }
  if (lineage.replica_id != replica_id_.load()) {
    // Written for another id (or never): its gaps say nothing of this one.
    lineage.gaps.clear();
    lineage.opens.clear();
    lineage.opens_dropped = false;
    lineage.replica_id = replica_id_.load();
  }
  // The previous open raised the clock to its time and may have claimed
  // it (Store::GetWatermarks) without committing a write, so the persisted
  // mark can lag behind it: that time lies in no gap.
  if (!lineage.gaps.empty()) *clock_floor = std::max(*clock_floor, lineage.gaps.back().before);
  // Every write of this id in the data found here is at or below it, and
  // every later one is above it.
  const uint64_t found_floor = *clock_floor;
  const WallClock& wall =
      options_.wall_clock != nullptr ? *options_.wall_clock : SystemWallClock();
  const int64_t now_ms = wall.NowMillis();
  const uint64_t now = now_ms > 0 ? MakeHlc(static_cast<uint64_t>(now_ms), 0) : 0;
  if (now > *clock_floor) {
    lineage.AddGap(ClockGap{*clock_floor, now, max_seq_.load()});
    *clock_floor = now;
  }
  if (options_.id_seed.has_value()) {
    // Replayable, yet different for each open of each replica.
    std::seed_seq seeds{*options_.id_seed, replica_id_.load(), lineage.gaps.size(),
                        lineage.opens.size(), static_cast<uint64_t>(now_ms)};
    std::mt19937_64 seeded(seeds);
    open_nonce_ = seeded() | 1;
  } else {
    open_nonce_ = absl::Uniform<uint64_t>(absl::BitGen()) | 1;
  }
  lineage.AddOpen(OpenMark{open_nonce_, max_seq_.load()});
  PEERKV_RETURN_IF_ERROR(lmdb::Put(txn, meta_dbi_, codec::kMetaLineage, EncodeLineage(lineage),
                                   "write meta lineage"));
  // The id's first open, and the floor its second open found (a restore
  // fork keeps its old id up to that, see Store::Fork).
  FirstOpen first;
  PEERKV_ASSIGN_OR_RETURN(const std::optional<std::string_view> stored_first,
                          lmdb::Get(txn, meta_dbi_, codec::kMetaFirstOpen, "read meta first_open"));
  if (stored_first.has_value()) {
    PEERKV_ASSIGN_OR_RETURN(first, DecodeFirstOpen(*stored_first));
  }
  bool write_first = false;
  if (id_began) {
    first = FirstOpen{replica_id_.load(), open_nonce_, 0, false};
    write_first = true;
  } else if (first.replica_id != replica_id_.load()) {
    // The id began before this was kept (or it names another id): which
    // open was its first is not known.
    first = FirstOpen{};
  } else if (!first.next_open_seen) {
    first.next_open_floor = found_floor;
    first.next_open_seen = true;
    write_first = true;
  }
  if (write_first) {
    PEERKV_RETURN_IF_ERROR(lmdb::Put(txn, meta_dbi_, codec::kMetaFirstOpen, EncodeFirstOpen(first),
                                     "write meta first_open"));
  }
  {
    absl::MutexLock lock(&watermarks_mu_);
    distrusted_.insert(lineage.retired_ids.begin(), lineage.retired_ids.end());
    distrusted_.insert(lineage.forgotten_ids.begin(), lineage.forgotten_ids.end());
    for (uint64_t id : distrusted_) watermarks_.erase(id);
  }
  absl::MutexLock lock(&lineage_mu_);
  lineage_ = std::move(lineage);
  first_open_ = first;
  return absl::OkStatus();
}

bool Store::Distrusts(uint64_t origin) const {
  absl::MutexLock lock(&watermarks_mu_);
  return distrusted_.count(origin) > 0;
}

absl::StatusOr<bool> Store::ForgetRetiredIds(const std::vector<uint64_t>& ids) {
  std::vector<uint64_t> fresh;
  {
    absl::MutexLock lock(&watermarks_mu_);
    for (uint64_t id : ids) {
      if (id != 0 && id != replica_id_.load() && distrusted_.count(id) == 0 &&
          std::find(fresh.begin(), fresh.end(), id) == fresh.end()) {
        fresh.push_back(id);
      }
    }
  }
  if (fresh.empty()) return false;
  // On the writer, between groups: merges queued before this (pulled
  // trusting the ids) commit first, their checkpoints before the drop.
  PEERKV_RETURN_IF_ERROR(RunOnWriter([&] { return CommitForgotten(fresh); }));
  return true;
}

absl::Status Store::CommitForgotten(const std::vector<uint64_t>& fresh) {
  PEERKV_CHECK(OnWriterThread());
  Lineage lineage = GetLineage();
  for (uint64_t id : fresh) lineage.forgotten_ids.push_back(id);
  if (lineage.forgotten_ids.size() > Lineage::kMaxForgottenIds) {
    lineage.forgotten_ids.erase(
        lineage.forgotten_ids.begin(),
        lineage.forgotten_ids.end() - Lineage::kMaxForgottenIds);
  }
  absl::ReaderMutexLock resize(&resize_mu_);
  lmdb::Txn txn;
  PEERKV_RETURN_IF_ERROR(txn.Begin(env_, 0));
  PEERKV_RETURN_IF_ERROR(lmdb::Put(txn.get(), meta_dbi_, codec::kMetaLineage,
                                   EncodeLineage(lineage), "write meta lineage"));
  Watermarks watermarks;
  {
    absl::MutexLock lock(&watermarks_mu_);
    watermarks = watermarks_;
  }
  for (uint64_t id : fresh) watermarks.erase(id);
  PEERKV_RETURN_IF_ERROR(tables::WriteWatermarks(txn.get(), meta_dbi_, watermarks));
  absl::flat_hash_map<uint64_t, PeerCheckpoint> remembered;
  PEERKV_RETURN_IF_ERROR(RememberCheckpoints(txn.get(), &remembered));
  PEERKV_RETURN_IF_ERROR(lmdb::Error(mdb_drop(txn.get(), peers_dbi_, 0), "drop checkpoints"));
  absl::MutexLock checkpoints(&checkpoints_mu_);
  absl::MutexLock marks(&watermarks_mu_);
  PEERKV_RETURN_IF_ERROR(txn.Commit());
  held_checkpoints_.clear();
  forgotten_checkpoints_ = std::move(remembered);
  // tombstones.cc: no process of those ids acknowledges again, and what
  // was held of them still tells stale records.
  DropRetiredAcks(fresh, watermarks_);
  for (uint64_t id : fresh) {
    watermarks_.erase(id);
    distrusted_.insert(id);
  }
  {
    absl::MutexLock lock(&lineage_mu_);
    lineage_ = std::move(lineage);
  }
  return absl::OkStatus();
}

std::optional<PeerCheckpoint> Store::ForgottenCheckpoint(uint64_t peer_id) const {
  absl::MutexLock lock(&checkpoints_mu_);
  auto it = forgotten_checkpoints_.find(peer_id);
  if (it == forgotten_checkpoints_.end()) return std::nullopt;
  return it->second;
}

absl::Status Store::RememberCheckpoints(
    MDB_txn* txn, absl::flat_hash_map<uint64_t, PeerCheckpoint>* out) const {
  PEERKV_CHECK(OnWriterThread());
  absl::flat_hash_map<uint64_t, PeerCheckpoint> current;
  lmdb::Cursor cursor;
  PEERKV_RETURN_IF_ERROR(cursor.Open(txn, peers_dbi_));
  MDB_val k, v;
  int rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_FIRST);
  while (rc == MDB_SUCCESS) {
    if (k.mv_size == 8) {
      const uint64_t peer = codec::GetBigEndian64(static_cast<const char*>(k.mv_data));
      absl::StatusOr<PeerCheckpoint> checkpoint = codec::DecodeCheckpoint(
          std::string_view(static_cast<const char*>(v.mv_data), v.mv_size), peer);
      if (checkpoint.ok()) current[peer] = *checkpoint;
    }
    rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_NEXT);
  }
  if (rc != MDB_NOTFOUND) return lmdb::Error(rc, "read checkpoints");
  absl::MutexLock lock(&checkpoints_mu_);
  // Held ones are newer than the table's.
  for (const auto& [peer, checkpoint] : held_checkpoints_) current[peer] = checkpoint;
  *out = forgotten_checkpoints_;
  for (const auto& [peer, checkpoint] : current) {
    auto [it, inserted] = out->try_emplace(peer, checkpoint);
    // A pull from zero since the last drop may be behind what was pulled
    // before it: the furthest point of one incarnation stays.
    if (!inserted && (checkpoint.incarnation != it->second.incarnation ||
                      checkpoint.seq >= it->second.seq)) {
      it->second = checkpoint;
    }
  }
  while (out->size() > kMaxForgottenCheckpoints) out->erase(out->begin());
  std::string encoded;
  for (const auto& [peer, checkpoint] : *out) {
    codec::PutFixed64(&encoded, peer);
    encoded += codec::EncodeCheckpoint(checkpoint);
  }
  return lmdb::Put(txn, meta_dbi_, codec::kMetaForgottenCheckpoints, encoded,
                   "write meta forgotten checkpoints");
}

absl::Status Store::LoadForgottenCheckpoints(MDB_txn* txn) {
  PEERKV_ASSIGN_OR_RETURN(
      const std::optional<std::string_view> stored,
      lmdb::Get(txn, meta_dbi_, codec::kMetaForgottenCheckpoints, "read meta forgotten checkpoints"));
  if (!stored.has_value()) return absl::OkStatus();
  constexpr size_t kEntry = 8 + codec::kCheckpointBytes;
  if (stored->size() % kEntry != 0 || stored->size() / kEntry > kMaxForgottenCheckpoints) {
    return absl::DataLossError(absl::StrFormat(
        "meta forgotten checkpoints is %d bytes; expected a multiple of %d, at most %d entries",
        stored->size(), kEntry, kMaxForgottenCheckpoints));
  }
  absl::flat_hash_map<uint64_t, PeerCheckpoint> loaded;
  for (size_t at = 0; at < stored->size(); at += kEntry) {
    const uint64_t peer = codec::GetFixed64(stored->data() + at);
    PEERKV_ASSIGN_OR_RETURN(
        const PeerCheckpoint checkpoint,
        codec::DecodeCheckpoint(stored->substr(at + 8, codec::kCheckpointBytes), peer));
    loaded[peer] = checkpoint;
  }
  absl::MutexLock lock(&checkpoints_mu_);
  forgotten_checkpoints_ = std::move(loaded);
  return absl::OkStatus();
}

absl::Status Store::RunOnWriter(absl::AnyInvocable<absl::Status()> apply) {
  absl::Notification finished;
  absl::Status result;
  auto request = std::make_unique<WriteRequest>(WriteRequest{writer::MetaSwitch{
      std::move(apply), [&](absl::Status status) {
        result = std::move(status);
        finished.Notify();
      }}});
  Submit(std::move(request), /*wait_for_room=*/true);
  finished.WaitForNotification();
  return result;
}

Lineage Store::GetLineage() const {
  absl::MutexLock lock(&lineage_mu_);
  return lineage_;
}

absl::StatusOr<Store::ForkResult> Store::Fork(uint64_t restamp_after_seq, bool fresh_clock,
                                              uint64_t clock_floor) {
  // The switch runs on the writer, between groups: every write queued
  // before it commits first (merges pulled as the old id, whose
  // checkpoints must not land after the checkpoints are dropped; local
  // writes stamped with the old id), and every write after it is stamped
  // with the new id (and, with `fresh_clock`, from the fresh clock: no
  // local write can be stamped between the reset and the switch).
  ForkResult result;
  PEERKV_RETURN_IF_ERROR(RunOnWriter([&] {
    // Read before the clock reset lowers the claim of our own id.
    std::optional<Watermarks> kept;
    if (fresh_clock) kept = GetWatermarks();
    if (!fresh_clock) {
      // A restore fork drops every watermark, its own id's too (it must
      // not claim the writes it lost), but the history every copy of this
      // directory shares is held: the old id up to the floor its second
      // open found (FirstOpen). That open is the restored copy's or an
      // ancestor of it, whatever opened since (restarts before the fork
      // included); every write of the lost life, or of the restored one,
      // is above it. Kept with the fork marks, it tells a record of the old
      // id at or below it stale once its key's tombstone was collected
      // (sim seed 1557).
      absl::MutexLock lock(&lineage_mu_);
      if (first_open_.replica_id == replica_id_.load() && first_open_.next_open_seen &&
          first_open_.next_open_floor != 0) {
        kept = Watermarks{{first_open_.replica_id, first_open_.next_open_floor}};
      }
    }
    if (fresh_clock) {
      restamp_after_seq = std::min(restamp_after_seq, max_seq_.load());
      const int64_t now_ms = std::max<int64_t>(0, clock_->StampNowMillis());
      absl::MutexLock lock(&clock_reset_mu_);
      clock_->Reset(MakeHlc(std::min<uint64_t>(static_cast<uint64_t>(now_ms), kHlcMaxMillis), 0));
      committed_clock_ = clock_->Last();
    } else if (clock_floor != 0 && CheckSkew(clock_floor).ok()) {
      // A peer holds writes of the lost life up to clock_floor, and may
      // have collected tombstones of them up there: re-stamped below, a
      // write would merge there over nothing as if newer than what was
      // collected (sim seed 311). Within the clock bound only, as merges.
      clock_->Observe(clock_floor);
    }
    return SwitchToForkedId(result, kept.has_value() ? &*kept : nullptr);
  }));
  // The fork is durable: from here on, a failure is the re-stamp's alone,
  // and the caller must still act on the new id (drop links, pull again).
  result.restamp_status = Restamp(result.old_id, restamp_after_seq, &result.restamped);
  return result;
}

absl::Status Store::SwitchToForkedId(ForkResult& result, const Watermarks* kept_marks) {
  PEERKV_CHECK(OnWriterThread());
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
  // Its log is served from this open on.
  lineage.opens = {OpenMark{open_nonce_, 0}};
  lineage.opens_dropped = false;
  PEERKV_RETURN_IF_ERROR(CommitFork(result, lineage, kept_marks));
  absl::MutexLock lock(&lineage_mu_);
  lineage_ = std::move(lineage);
  first_open_ = FirstOpen{result.new_id, open_nonce_, 0, false};
  return absl::OkStatus();
}

std::pair<uint64_t, uint64_t> Store::DrawForkIds(const Lineage& lineage) const {
  const uint64_t old_id = replica_id_.load();
  // Seeded by the open nonce too: a directory restored from a copy opens
  // with another nonce, so it does not fork to the id its lost life forked to.
  std::seed_seq seeds{options_.id_seed.value_or(0), old_id, open_nonce_};
  std::mt19937_64 seeded(seeds);
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
  if (!options_.replica_id_key.empty()) {
    // Minted from the device key: the incarnation is the id's nonce.
    do {
      incarnation = draw();
      id = DeriveReplicaId(options_.replica_id_key, incarnation);
    } while (incarnation == 0 || incarnation == incarnation_.load() || used(id));
    return {id, incarnation};
  }
  do id = draw();
  while (used(id));
  do incarnation = draw();
  while (incarnation == 0 || incarnation == incarnation_.load());
  return {id, incarnation};
}

absl::Status Store::CommitFork(const ForkResult& fork, const Lineage& lineage,
                              const Watermarks* kept_marks) {
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
  // The new id begins in this open.
  PEERKV_RETURN_IF_ERROR(lmdb::Put(txn.get(), meta_dbi_, codec::kMetaFirstOpen,
                                   EncodeFirstOpen(FirstOpen{fork.new_id, open_nonce_, 0, false}),
                                   "write meta first_open"));
  // Every watermark goes, not only the old id's: the restored life adopted
  // peers' watermarks after pulls that left out what came from the old id
  // (ChangesFilter::skip_source), records of the lost life it no longer
  // holds; they would cover those records in the pulls from zero below.
  PEERKV_RETURN_IF_ERROR(tables::WriteWatermarks(txn.get(), meta_dbi_, Watermarks{}));
  // Yet after a fresh-clock fork (nothing lost) what they claimed still
  // tells stale records: without it a record whose tombstone was collected
  // before the fork merged again over nothing (seed 4090). After a restore
  // fork: the old id up to its second open's floor (see Fork).
  std::optional<Watermarks> fork_marks;
  if (kept_marks != nullptr) {
    absl::MutexLock lock(&acks_mu_);
    fork_marks = fork_marks_;
    fork_marks->Merge(*kept_marks);
  }
  if (fork_marks.has_value()) PEERKV_RETURN_IF_ERROR(WriteForkMarks(txn.get(), *fork_marks));
  // Empties the checkpoints (the table stays); what they said is kept as
  // evidence (ForgottenCheckpoint).
  absl::flat_hash_map<uint64_t, PeerCheckpoint> remembered;
  PEERKV_RETURN_IF_ERROR(RememberCheckpoints(txn.get(), &remembered));
  PEERKV_RETURN_IF_ERROR(lmdb::Error(mdb_drop(txn.get(), peers_dbi_, 0), "drop checkpoints"));
  // The clock mark as the clock is now: after a fresh-clock reset it is
  // lower than the stored one, which a restart would otherwise start from
  // (stamping far ahead again). On the writer thread: the counters are
  // those of the last commit.
  PEERKV_ASSIGN_OR_RETURN(std::optional<codec::MetaState> state,
                          tables::ReadMetaState(txn.get(), meta_dbi_));
  if (state.has_value()) {
    state->clock_mark = clock_->Last();
    PEERKV_RETURN_IF_ERROR(tables::WriteMetaState(txn.get(), meta_dbi_, *state));
  }
  // Held across the commit, so no held checkpoint or claim is taken
  // between it and the memory update.
  absl::MutexLock checkpoints(&checkpoints_mu_);
  absl::MutexLock marks(&watermarks_mu_);
  PEERKV_RETURN_IF_ERROR(txn.Commit());
  held_checkpoints_.clear();
  forgotten_checkpoints_ = std::move(remembered);
  if (fork_marks.has_value()) {
    absl::MutexLock lock(&acks_mu_);
    fork_marks_ = std::move(*fork_marks);
  }
  watermarks_ = Watermarks{};
  distrusted_.insert(fork.old_id);
  watermarks_dirty_ = false;
  replica_id_.store(fork.new_id);
  incarnation_.store(fork.new_incarnation);
  return absl::OkStatus();
}

absl::Status Store::Restamp(uint64_t old_id, uint64_t after_seq, uint64_t* restamped) {
  // A page of the log at a time, each page one durable batch. Conditional:
  // a client write that commits between the read and the re-stamp wins.
  uint64_t after = after_seq;
  const uint64_t end = max_seq_.load();
  while (after < end) {
    PEERKV_ASSIGN_OR_RETURN(Changes changes, ChangesSince(after, kMaxBatchRecords));
    std::vector<RestampRecord> again;
    for (Record& r : changes.records) {
      if (r.seq > end) break;
      if (r.version.origin != old_id) continue;
      // A reserved record (policies, groups) keeps its version: it is
      // signed by a user key, which the store does not hold, and
      // re-stamped an old grant would become a new write above the signed
      // removal that replaced it in the lost life (sim seed 2352: a
      // restore gave a removed reader the group back). Any other signed
      // record is re-signed with the new version by the signer (GroupTxn
      // signs every local write), as any other write of the restored life:
      // kept at the old id's version it lies under the lost life's clock,
      // which peers hold as that retired id's stale evidence, and is
      // refused as stale there once a tombstone above it was collected
      // (sim seed 3807). Without a signer it keeps its signed version.
      if (IsReservedKeyspace(r.keyspace)) continue;
      if (!r.signature.empty() && options_.signer == nullptr) continue;
      RestampRecord restamp{Mutation{std::move(r.keyspace), std::move(r.key), std::nullopt},
                            r.version};
      if (!r.deleted) restamp.mutation.value = std::move(r.value);  // nullopt: a tombstone
      again.push_back(std::move(restamp));
    }
    if (!again.empty()) {
      PEERKV_ASSIGN_OR_RETURN(const uint64_t written, RestampIfUnchanged(std::move(again)));
      *restamped += written;
    }
    if (changes.last_seq <= after) break;
    after = changes.last_seq;
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Store::RestampIfUnchanged(std::vector<RestampRecord> records) {
  if (records.empty()) return 0;
  if (records.size() > kMaxBatchRecords) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "re-stamp batch has %d records; the limit is %d", records.size(), kMaxBatchRecords));
  }
  size_t bytes = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    const Mutation& m = records[i].mutation;
    const absl::Status valid = ValidateMutation(m, options_.max_value_bytes);
    if (!valid.ok()) {
      return absl::Status(valid.code(), absl::StrFormat("re-stamp record %d: %s", i,
                                                        valid.message()));
    }
    bytes += m.keyspace.size() + m.key.size() + (m.value.has_value() ? m.value->size() : 0) +
             kRecordOverheadBytes;
  }
  if (bytes > kMaxBatchBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "re-stamp batch is %d bytes; the limit is %d", bytes, kMaxBatchBytes));
  }
  absl::Notification finished;
  absl::StatusOr<uint64_t> result;
  const size_t count = records.size();
  auto request = std::make_unique<WriteRequest>(WriteRequest{
      writer::RestampBatch{std::move(records), 0,
                           [&](absl::StatusOr<uint64_t> r) {
                             result = std::move(r);
                             finished.Notify();
                           }},
      count, bytes});
  Submit(std::move(request), /*wait_for_room=*/true);
  finished.WaitForNotification();
  return result;
}

absl::Status Store::ApplyRestamp(writer::GroupTxn& txn, writer::RestampBatch& batch) {
  batch.restamped = 0;
  for (const RestampRecord& r : batch.records) {
    PEERKV_ASSIGN_OR_RETURN(const std::optional<Version> current,
                            txn.CurrentVersion(r.mutation.keyspace, r.mutation.key));
    // Written (or merged) since the caller read it: the newer write stays.
    if (current != r.expected) continue;
    PEERKV_ASSIGN_OR_RETURN(const std::optional<Version> version, StampLocal(txn, r.mutation));
    // As in ApplyLocalWrite: the clock is above every stored version.
    PEERKV_CHECK(version.has_value());
    ++batch.restamped;
  }
  return absl::OkStatus();
}

}  // namespace peerkv
