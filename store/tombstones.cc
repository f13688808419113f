// store/tombstones.cc: tombstone collection without resurrection (README
// "Tombstone collection"). What each peer acknowledged it holds (its
// watermarks, and its clock reading then, which a tombstone's age is also
// measured by; a friend's device: its checkpoint into this log), the bounded
// collection steps that drop tombstones every peer
// and this replica hold, and the merge-side rule that refuses a record
// whose tombstone was collected (a stale record) and answers it with a
// fresh tombstone; the repack of the tables that gives the pages of a large
// deletion back (Repack), and Compact, which runs both now.
#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/macros.h"
#include "store/change_index.h"
#include "store/codec.h"
#include "store/group_txn.h"
#include "store/lmdb_util.h"
#include "store/range_fingerprint.h"
#include "store/range_table.h"
#include "store/read_txn.h"
#include "store/store.h"
#include "store/tables.h"
#include "store/validation.h"

namespace peerkv {

namespace {

using lmdb::Cursor;
using lmdb::Txn;
using lmdb::Val;
using lmdb::View;

// Meta entries: {peer(8) origins(4) {origin(8) hlc(8)}*}* for the peers
// waited for and the forgotten ones; {peer(8) incarnation(8) seq(8)}* for
// the friends' devices waited for; the newest collected tombstone's hlc.
constexpr char kMetaPeerAcks[] = "peer_acks";
constexpr char kMetaFriendAcks[] = "friend_acks";
constexpr char kMetaForgottenPeers[] = "forgotten_peers";
constexpr char kMetaTombstoneHorizon[] = "tombstone_horizon";
// The watermarks before fresh-clock forks: {0(8) origins(8) {origin hlc}*}.
constexpr char kMetaForkMarks[] = "fork_marks";
// The peers' clock readings with their acknowledgements: {peer(8) ms(8)}*.
constexpr char kMetaPeerAckClocks[] = "peer_ack_clocks";
// How a stale record's refusal begins (Store::IsStaleRefusal).
constexpr char kStale[] = "stale record";

std::string EncodeAcks(const absl::flat_hash_map<uint64_t, Watermarks>& acks) {
  std::vector<uint64_t> ids;
  for (const auto& [id, marks] : acks) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  std::string out;
  for (uint64_t id : ids) {
    const Watermarks& marks = acks.at(id);
    codec::PutFixed64(&out, id);
    codec::PutFixed64(&out, marks.size());
    for (const auto& [origin, hlc] : marks) {
      codec::PutFixed64(&out, origin);
      codec::PutFixed64(&out, hlc);
    }
  }
  return out;
}

absl::StatusOr<absl::flat_hash_map<uint64_t, Watermarks>> DecodeAcks(std::string_view in,
                                                                     std::string_view name) {
  absl::flat_hash_map<uint64_t, Watermarks> acks;
  size_t at = 0;
  auto corrupt = [&] {
    return absl::DataLossError(absl::StrFormat("meta %s is corrupt at byte %d", name, at));
  };
  while (at < in.size()) {
    if (in.size() - at < 16) return corrupt();
    const uint64_t id = codec::GetFixed64(in.data() + at);
    const uint64_t count = codec::GetFixed64(in.data() + at + 8);
    at += 16;
    if (count > (in.size() - at) / 16) return corrupt();
    Watermarks& marks = acks[id];
    for (uint64_t i = 0; i < count; ++i) {
      marks.Raise(codec::GetFixed64(in.data() + at), codec::GetFixed64(in.data() + at + 8));
      at += 16;
    }
  }
  return acks;
}

template <typename FriendAck>
std::string EncodeFriendAcks(const absl::flat_hash_map<uint64_t, FriendAck>& acks) {
  std::vector<uint64_t> ids;
  for (const auto& [id, ack] : acks) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  std::string out;
  for (uint64_t id : ids) {
    codec::PutFixed64(&out, id);
    codec::PutFixed64(&out, acks.at(id).incarnation);
    codec::PutFixed64(&out, acks.at(id).seq);
  }
  return out;
}

std::string EncodeAckClocks(const absl::flat_hash_map<uint64_t, Watermarks>& acks,
                            const absl::flat_hash_map<uint64_t, int64_t>& clocks) {
  std::vector<std::pair<uint64_t, int64_t>> sorted;
  for (const auto& [id, ms] : clocks) {
    if (acks.contains(id)) sorted.emplace_back(id, ms);
  }
  std::sort(sorted.begin(), sorted.end());
  std::string out;
  for (const auto& [id, ms] : sorted) {
    codec::PutFixed64(&out, id);
    codec::PutFixed64(&out, static_cast<uint64_t>(ms));
  }
  return out;
}

template <typename FriendAck>
absl::Status DecodeFriendAcks(std::string_view in, absl::flat_hash_map<uint64_t, FriendAck>* acks) {
  if (in.size() % 24 != 0) {
    return absl::DataLossError(
        absl::StrFormat("meta %s is %d bytes, not a multiple of 24", kMetaFriendAcks, in.size()));
  }
  for (size_t at = 0; at < in.size(); at += 24) {
    (*acks)[codec::GetFixed64(in.data() + at)] =
        FriendAck{.incarnation = codec::GetFixed64(in.data() + at + 8),
                  .seq = codec::GetFixed64(in.data() + at + 16)};
  }
  return absl::OkStatus();
}

absl::StatusOr<absl::flat_hash_map<uint64_t, int64_t>> DecodeAckClocks(std::string_view in) {
  if (in.size() % 16 != 0) {
    return absl::DataLossError(
        absl::StrFormat("meta %s is corrupt: %d bytes", kMetaPeerAckClocks, in.size()));
  }
  absl::flat_hash_map<uint64_t, int64_t> clocks;
  for (size_t at = 0; at < in.size(); at += 16) {
    clocks[codec::GetFixed64(in.data() + at)] =
        static_cast<int64_t>(codec::GetFixed64(in.data() + at + 8));
  }
  return clocks;
}

}  // namespace

void Store::NotePeer(uint64_t peer_id) const {
  if (peer_id == 0 || peer_id == replica_id()) return;
  absl::MutexLock lock(&acks_mu_);
  if (acks_.contains(peer_id)) return;
  if (acks_.size() >= kMaxAcknowledgedPeers) {
    // Not waiting for a peer met would be unsafe: collection stops instead.
    acks_overflow_ = true;
    return;
  }
  acks_.emplace(peer_id, Watermarks{});
}

void Store::NotePeerHolds(uint64_t peer_id, const Watermarks& held, int64_t clock_ms) const {
  if (peer_id == 0 || peer_id == replica_id()) return;
  NotePeer(peer_id);
  absl::MutexLock lock(&acks_mu_);
  auto it = acks_.find(peer_id);
  if (it == acks_.end()) return;
  it->second = held;
  // The reading goes with these watermarks: one not told must not leave an
  // earlier reading standing for them.
  if (clock_ms != 0) {
    ack_clocks_[peer_id] = clock_ms;
  } else {
    ack_clocks_.erase(peer_id);
  }
}

void Store::NoteFriend(uint64_t peer_id, FriendReads reads) const {
  if (peer_id == 0 || peer_id == replica_id()) return;
  absl::MutexLock lock(&acks_mu_);
  if (auto it = friend_acks_.find(peer_id); it != friend_acks_.end()) {
    if (reads != nullptr) it->second.reads = std::move(reads);
    return;
  }
  if (friend_acks_.size() >= kMaxAcknowledgedPeers) {
    acks_overflow_ = true;  // as NotePeer: stop rather than not wait
    return;
  }
  friend_acks_.emplace(peer_id, FriendAck{.reads = std::move(reads)});
}

void Store::NoteFriendHolds(uint64_t peer_id, uint64_t incarnation, uint64_t seq) const {
  if (peer_id == 0 || peer_id == replica_id()) return;
  NoteFriend(peer_id);
  absl::MutexLock lock(&acks_mu_);
  auto it = friend_acks_.find(peer_id);
  if (it != friend_acks_.end()) {
    it->second.incarnation = incarnation;
    it->second.seq = seq;
  }
}

std::vector<std::pair<uint64_t, uint64_t>> Store::FriendCheckpoints() const {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  {
    absl::MutexLock lock(&acks_mu_);
    for (const auto& [id, ack] : friend_acks_) {
      out.emplace_back(id, ack.incarnation == incarnation() ? ack.seq : 0);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

void Store::DropRetiredAcks(const std::vector<uint64_t>& ids, const Watermarks& held) {
  absl::MutexLock lock(&acks_mu_);
  for (uint64_t id : ids) {
    acks_.erase(id);
    ack_clocks_.erase(id);
    // The watermark is dropped (it may claim writes of a lost life), but
    // a live record of that id it covers, for a key this replica holds
    // nothing of, older than a collected tombstone, is still stale: kept
    // as what the retired id was "forgotten with" (persisted with the next
    // collection step).
    if (auto it = held.find(id); it != held.end()) forgotten_peers_[id].Raise(id, it->second);
  }
}

Watermarks Store::ServedWatermarks() const {
  Watermarks out = GetWatermarks();
  std::vector<uint64_t> retired;
  {
    absl::MutexLock lock(&watermarks_mu_);
    retired.assign(distrusted_.begin(), distrusted_.end());
  }
  absl::MutexLock lock(&acks_mu_);
  for (uint64_t id : retired) {
    if (auto it = fork_marks_.find(id); it != fork_marks_.end()) out.Raise(id, it->second);
    if (auto it = forgotten_peers_.find(id); it != forgotten_peers_.end()) {
      if (auto mark = it->second.find(id); mark != it->second.end()) out.Raise(id, mark->second);
    }
  }
  return out;
}

void Store::RaiseRetiredMarks(const Watermarks& marks) {
  if (marks.empty()) return;
  std::vector<std::pair<uint64_t, uint64_t>> retired;
  {
    absl::MutexLock lock(&watermarks_mu_);
    for (const auto& [id, hlc] : marks) {
      // Bounded: distrusted_ holds at most the lineage's retired and
      // forgotten ids.
      if (distrusted_.count(id) > 0 && id != replica_id_.load()) retired.emplace_back(id, hlc);
    }
  }
  absl::MutexLock lock(&acks_mu_);
  for (const auto& [id, hlc] : retired) forgotten_peers_[id].Raise(id, hlc);
}

std::vector<std::pair<uint64_t, Watermarks>> Store::AcknowledgedPeers() const {
  std::vector<std::pair<uint64_t, Watermarks>> out;
  {
    absl::MutexLock lock(&acks_mu_);
    for (const auto& [id, marks] : acks_) out.emplace_back(id, marks);
  }
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  return out;
}

absl::Status Store::ForgetPeer(uint64_t peer_id) {
  {
    const Watermarks own = GetWatermarks();
    absl::MutexLock lock(&acks_mu_);
    if (!acks_.contains(peer_id) && !friend_acks_.contains(peer_id) &&
        (own.count(peer_id) == 0 || forgotten_peers_.contains(peer_id) || peer_id == replica_id())) {
      return absl::NotFoundError(absl::StrFormat(
          "replica %s is not a peer this replica waits for (never met, already forgotten, "
          "or retired by a fork)",
          ReplicaIdToString(peer_id)));
    }
  }
  return RunOnWriter([this, peer_id]() -> absl::Status {
    absl::flat_hash_map<uint64_t, Watermarks> acks, forgotten;
    absl::flat_hash_map<uint64_t, FriendAck> friends;
    {
      absl::MutexLock lock(&acks_mu_);
      acks = acks_;
      forgotten = forgotten_peers_;
      friends = friend_acks_;
    }
    // What it acknowledged as a peer, and what this replica holds of it as
    // an origin: what it sends later that these cover is old.
    const Watermarks own = GetWatermarks();
    if (auto it = acks.find(peer_id); it != acks.end()) forgotten[peer_id].Merge(it->second);
    if (auto it = own.find(peer_id); it != own.end()) forgotten[peer_id].Raise(peer_id, it->second);
    acks.erase(peer_id);
    friends.erase(peer_id);
    if (forgotten.size() > kMaxAcknowledgedPeers) {
      // The oldest cannot be told; drop the one that claims least.
      auto least = std::min_element(forgotten.begin(), forgotten.end(), [](const auto& a,
                                                                           const auto& b) {
        return a.second.size() < b.second.size();
      });
      if (least->first != peer_id) forgotten.erase(least);
    }
    Txn txn;
    PEERKV_RETURN_IF_ERROR(txn.Begin(env_, 0));
    PEERKV_RETURN_IF_ERROR(
        lmdb::Put(txn.get(), meta_dbi_, kMetaPeerAcks, EncodeAcks(acks), "write peer acks"));
    absl::flat_hash_map<uint64_t, int64_t> clocks;
    {
      absl::MutexLock lock(&acks_mu_);
      clocks = ack_clocks_;
    }
    PEERKV_RETURN_IF_ERROR(lmdb::Put(txn.get(), meta_dbi_, kMetaPeerAckClocks,
                                     EncodeAckClocks(acks, clocks), "write peer ack clocks"));
    PEERKV_RETURN_IF_ERROR(lmdb::Put(txn.get(), meta_dbi_, kMetaForgottenPeers,
                                     EncodeAcks(forgotten), "write forgotten peers"));
    PEERKV_RETURN_IF_ERROR(lmdb::Put(txn.get(), meta_dbi_, kMetaFriendAcks,
                                     EncodeFriendAcks(friends), "write friend acks"));
    const absl::Status committed = txn.Commit();
    if (lmdb::IsMapFull(committed)) {
      PEERKV_RETURN_IF_ERROR(GrowMap(0));
      return absl::UnavailableError("the store map grew; forget the peer again");
    }
    PEERKV_RETURN_IF_ERROR(committed);
    absl::MutexLock lock(&acks_mu_);
    acks_.erase(peer_id);
    friend_acks_.erase(peer_id);
    ack_clocks_.erase(peer_id);
    forgotten_peers_ = std::move(forgotten);
    return absl::OkStatus();
  });
}

absl::Status Store::LoadTombstoneState(MDB_txn* txn) {
  PEERKV_ASSIGN_OR_RETURN(std::optional<std::string_view> acks,
                          lmdb::Get(txn, meta_dbi_, kMetaPeerAcks, "read peer acks"));
  PEERKV_ASSIGN_OR_RETURN(std::optional<std::string_view> forgotten,
                          lmdb::Get(txn, meta_dbi_, kMetaForgottenPeers, "read forgotten peers"));
  PEERKV_ASSIGN_OR_RETURN(std::optional<std::string_view> friends,
                          lmdb::Get(txn, meta_dbi_, kMetaFriendAcks, "read friend acks"));
  PEERKV_ASSIGN_OR_RETURN(std::optional<uint64_t> horizon,
                          tables::ReadMetaU64(txn, meta_dbi_, kMetaTombstoneHorizon));
  PEERKV_ASSIGN_OR_RETURN(std::optional<std::string_view> fork_marks,
                          lmdb::Get(txn, meta_dbi_, kMetaForkMarks, "read fork marks"));
  PEERKV_ASSIGN_OR_RETURN(std::optional<std::string_view> ack_clocks,
                          lmdb::Get(txn, meta_dbi_, kMetaPeerAckClocks, "read peer ack clocks"));
  absl::MutexLock lock(&acks_mu_);
  if (ack_clocks.has_value()) {
    PEERKV_ASSIGN_OR_RETURN(ack_clocks_, DecodeAckClocks(*ack_clocks));
  }
  if (fork_marks.has_value()) {
    PEERKV_ASSIGN_OR_RETURN(const auto decoded, DecodeAcks(*fork_marks, kMetaForkMarks));
    fork_marks_ = Watermarks{};
    for (const auto& [zero, marks] : decoded) fork_marks_.Merge(marks);
  }
  if (acks.has_value()) {
    PEERKV_ASSIGN_OR_RETURN(acks_, DecodeAcks(*acks, kMetaPeerAcks));
  }
  if (forgotten.has_value()) {
    PEERKV_ASSIGN_OR_RETURN(forgotten_peers_, DecodeAcks(*forgotten, kMetaForgottenPeers));
  }
  friend_acks_.clear();
  if (friends.has_value()) PEERKV_RETURN_IF_ERROR(DecodeFriendAcks(*friends, &friend_acks_));
  collected_horizon_ = horizon.value_or(0);
  return absl::OkStatus();
}

absl::Status Store::WriteAcks(MDB_txn* txn) const {
  std::string acks, clocks, forgotten, friends;
  {
    absl::MutexLock lock(&acks_mu_);
    acks = EncodeAcks(acks_);
    clocks = EncodeAckClocks(acks_, ack_clocks_);
    forgotten = EncodeAcks(forgotten_peers_);
    friends = EncodeFriendAcks(friend_acks_);
  }
  PEERKV_RETURN_IF_ERROR(lmdb::Put(txn, meta_dbi_, kMetaPeerAcks, acks, "write peer acks"));
  PEERKV_RETURN_IF_ERROR(lmdb::Put(txn, meta_dbi_, kMetaFriendAcks, friends, "write friend acks"));
  PEERKV_RETURN_IF_ERROR(
      lmdb::Put(txn, meta_dbi_, kMetaPeerAckClocks, clocks, "write peer ack clocks"));
  return lmdb::Put(txn, meta_dbi_, kMetaForgottenPeers, forgotten, "write forgotten peers");
}

absl::Status Store::WriteForkMarks(MDB_txn* txn, const Watermarks& marks) const {
  return lmdb::Put(txn, meta_dbi_, kMetaForkMarks, EncodeAcks({{0, marks}}), "write fork marks");
}

bool Store::IsStaleRefusal(const absl::Status& reason) {
  return absl::IsFailedPrecondition(reason) && absl::StartsWith(reason.message(), kStale);
}

std::optional<Store::StaleRule> Store::StaleRuleFor(uint64_t source) const {
  StaleRule rule;
  rule.horizon = collected_horizon_.load();
  {
    absl::MutexLock lock(&acks_mu_);
    auto it = source == 0 ? forgotten_peers_.end() : forgotten_peers_.find(source);
    if (it != forgotten_peers_.end()) rule.forgotten_with = it->second;
  }
  if (rule.horizon == 0 && !rule.forgotten_with.has_value()) return std::nullopt;
  if (rule.horizon != 0) {
    rule.own = GetWatermarks();
    // What was held of a forgotten peer's or a retired id's own writes,
    // and what was held before a fresh-clock fork.
    absl::MutexLock lock(&acks_mu_);
    rule.own.Merge(fork_marks_);
    for (const auto& [id, marks] : forgotten_peers_) {
      if (auto it = marks.find(id); it != marks.end()) rule.own.Raise(id, it->second);
    }
  }
  return rule;
}

absl::StatusOr<bool> Store::RefuseIfStale(writer::GroupTxn& txn, const Record& remote,
                                          const StaleRule& rule, MergeResult& result) {
  const bool forgotten = rule.forgotten_with.has_value() && rule.forgotten_with->Covers(remote.version);
  const bool may_be_collected = rule.horizon != 0 && remote.version.hlc <= rule.horizon &&
                                rule.own.Covers(remote.version);
  if (!forgotten && !may_be_collected) return false;
  PEERKV_ASSIGN_OR_RETURN(const std::optional<Version> current,
                          txn.CurrentVersion(remote.keyspace, remote.key));
  if (remote.deleted) {
    // An old tombstone whose key holds nothing here: this tombstone, or a
    // newer one of the key, was collected. Merged, it would stand where the
    // newer one stood, and a live write between the two versions (covered,
    // so stale, but the stale rule only refuses over nothing) would then
    // win over it by the normal merge and come back (seed 4090). Dropped
    // without an answer: the sender collects its own copy in time (a
    // friend's device never does: MergeResult::stale_tombstones).
    if (current.has_value()) return false;
    result.stale_tombstones.push_back(RefusedRecord{
        remote.keyspace, remote.key, remote.version,
        absl::FailedPreconditionError(absl::StrCat(
            kStale, ": an old tombstone of a key whose newer tombstone was collected"))});
    return true;
  }
  if (current.has_value() && !(remote.version > *current)) return false;  // it loses anyway
  if (current.has_value() && !forgotten) return false;  // the normal merge decides
  std::optional<Version> fresh;
  if (!current.has_value()) {
    // Its key was deleted and the tombstone collected here, and the sender
    // still holds the old value: a fresh tombstone (a new delete of this
    // replica) travels back to it and beats it there.
    const Mutation& fresh_delete = txn.Keep(Mutation{remote.keyspace, remote.key, std::nullopt});
    PEERKV_ASSIGN_OR_RETURN(fresh,
                            StampAboveCollected(txn, fresh_delete,
                                                std::max(rule.horizon, remote.version.hlc)));
    PEERKV_CHECK(fresh.has_value());
  }
  result.refused.push_back(RefusedRecord{
      remote.keyspace, remote.key, remote.version,
      absl::FailedPreconditionError(absl::StrFormat(
          "%s: %s%s", kStale,
          forgotten ? "older than what its sender was forgotten with (peer forget)"
                    : "its key was deleted and the tombstone collected (covered by this "
                      "replica's watermarks)",
          fresh.has_value() ? absl::StrCat("; answered with a fresh tombstone at ",
                                           fresh->ToString())
                            : std::string()))});
  return true;
}

absl::StatusOr<Store::CollectResult> Store::CollectTombstones(size_t max_examined) {
  return CollectTombstonesThen(max_examined, /*repack_when_due=*/true);
}

absl::StatusOr<Store::CollectResult> Store::CollectTombstonesThen(size_t max_examined,
                                                                  bool repack_when_due) {
  if (max_examined == 0) return absl::InvalidArgumentError("max_examined must be positive");
  CollectResult result;
  uint64_t repack_after = 0;
  PEERKV_RETURN_IF_ERROR(RunOnWriter([&] {
    absl::Status status = CollectStep(max_examined, result, nullptr);
    repack_after = std::exchange(repack_due_, 0);
    return status;
  }));
  if (repack_after > 0 && repack_when_due) {
    absl::StatusOr<RepackResult> repacked = Repack();
    if (!repacked.ok()) {
      Log(absl::StrCat("peerkv: repacking the tables after collecting ", repack_after,
                       " tombstones failed: ", repacked.status().ToString()));
    }
  }
  return result;
}

absl::StatusOr<uint64_t> Store::CollectAllTombstones() {
  return CollectWholePass(/*repack_when_due=*/true);
}

absl::StatusOr<uint64_t> Store::CollectWholePass(bool repack_when_due) {
  uint64_t collected = 0;
  // Bounded: each step examines up to a step's records or ends a pass; the
  // pass a background step began mid-way is finished, then a whole one made.
  bool whole = false;
  for (int steps = 0; steps < (1 << 30); ++steps) {
    PEERKV_ASSIGN_OR_RETURN(const CollectResult step,
                            CollectTombstonesThen(kTombstoneStepRecords, repack_when_due));
    if (steps == 0) whole = step.began_pass;
    collected += step.collected;
    if (step.reached_end) {
      if (whole) break;
      whole = true;
    }
  }
  return collected;
}

absl::StatusOr<CompactResult> Store::Compact(std::string_view keyspace) {
  PEERKV_CHECK(!OnWriterThread());
  if (!keyspace.empty()) PEERKV_RETURN_IF_ERROR(ValidateKeyspace(keyspace));
  CompactResult out;
  PEERKV_ASSIGN_OR_RETURN(out.pages_before, PagesInUse());
  if (keyspace.empty()) {
    PEERKV_ASSIGN_OR_RETURN(out.tombstones_collected,
                            CollectWholePass(/*repack_when_due=*/false));
  } else {
    // Bounded: each step examines up to a step's records or reaches the
    // end of the keyspace.
    CollectScope scope{codec::RecordKey(keyspace, ""), codec::RecordKey(keyspace, "")};
    for (int steps = 0; steps < (1 << 30); ++steps) {
      CollectResult step;
      PEERKV_RETURN_IF_ERROR(
          RunOnWriter([&] { return CollectStep(kTombstoneStepRecords, step, &scope); }));
      out.tombstones_collected += step.collected;
      if (step.reached_end) break;
    }
  }
  PEERKV_ASSIGN_OR_RETURN(const RepackResult repacked, Repack());
  out.log_entries_compacted = repacked.log_entries_compacted;
  out.entries_copied = repacked.entries_copied;
  PEERKV_ASSIGN_OR_RETURN(out.pages_after, PagesInUse());
  return out;
}

absl::StatusOr<uint64_t> Store::PagesInUse() const {
  ReadTxn txn(*this);
  PEERKV_RETURN_IF_ERROR(txn.Begin());
  MDB_envinfo info;
  PEERKV_RETURN_IF_ERROR(lmdb::Error(mdb_env_info(env_, &info), "mdb_env_info"));
  Cursor free_list;
  PEERKV_RETURN_IF_ERROR(free_list.Open(txn.get(), 0));  // LMDB's free database
  uint64_t free = 0;
  MDB_val k, v;
  int rc = mdb_cursor_get(free_list.get(), &k, &v, MDB_FIRST);
  for (; rc == MDB_SUCCESS; rc = mdb_cursor_get(free_list.get(), &k, &v, MDB_NEXT)) {
    // Each entry: a count of pages, then their numbers.
    if (v.mv_size < sizeof(size_t)) return absl::DataLossError("a free-list entry is too short");
    size_t n;
    std::memcpy(&n, v.mv_data, sizeof(n));
    free += n;
  }
  if (rc != MDB_NOTFOUND) return lmdb::Error(rc, "read the free list");
  const uint64_t used = info.me_last_pgno + 1;
  return used - std::min<uint64_t>(used, free);
}

absl::Status Store::CollectStep(size_t max_examined, CollectResult& result, CollectScope* scope) {
  PEERKV_CHECK(OnWriterThread());
  result = CollectResult{};
  absl::flat_hash_map<uint64_t, Watermarks> acks;
  absl::flat_hash_map<uint64_t, FriendAck> friends;
  absl::flat_hash_map<uint64_t, int64_t> ack_clocks;
  bool overflow;
  {
    absl::MutexLock lock(&acks_mu_);
    acks = acks_;
    friends = friend_acks_;
    ack_clocks = ack_clocks_;
    overflow = acks_overflow_;
  }
  const uint64_t incarnation_now = incarnation();
  const Watermarks own = GetWatermarks();
  // The origin floor: the least hlc up to which this replica holds every
  // write of every origin it knows (forgotten ones aside). A replica whose
  // clock is behind a tombstone could still write its key with an older
  // version that no watermark covers yet; once every known origin is past
  // the tombstone, any older write of theirs is covered here and refused
  // as stale.
  uint64_t floor = UINT64_MAX, floor_origin = 0;
  absl::flat_hash_set<uint64_t> forgotten_ids;
  {
    absl::MutexLock lock(&acks_mu_);
    for (const auto& [id, marks] : forgotten_peers_) forgotten_ids.insert(id);
  }
  {
    // Origins a peer knows and this replica does not yet count at 0.
    auto lower = [&](uint64_t origin, uint64_t hlc) {
      if (origin == replica_id() || forgotten_ids.contains(origin) || Distrusts(origin)) return;
      if (hlc < floor) {
        floor = hlc;
        floor_origin = origin;
      }
    };
    for (const auto& [origin, hlc] : own) lower(origin, hlc);
    for (const auto& [peer, marks] : acks) {
      for (const auto& [origin, hlc] : marks) {
        if (own.count(origin) == 0) lower(origin, 0);
      }
    }
  }
  // Keys with a record in quarantine (too far ahead when it came): held,
  // not yet merged. A tombstone of such a key is kept until the record has
  // merged (and lost to it, or won): collected first, the record would
  // merge over nothing when released, though older than the tombstone
  // (seed 9445: its origin had been retired by a fork, so no watermark
  // told it stale). Bounded by the quarantine's own limits.
  absl::flat_hash_map<std::string, uint64_t> quarantined;
  {
    absl::MutexLock lock(&quarantine_mu_);
    for (const auto& [key, entry] : quarantine_.entries()) {
      if (key.size() > 16) quarantined.emplace(key.substr(16), entry.origin);
    }
  }
  // Which friends' devices may read each keyspace now, asked here, before
  // the transaction (the filters read the policies through the store): a
  // friend holds back only the tombstones of keyspaces it may read. One
  // it may not read it will never receive (its pulls move past them), so
  // waiting for it would keep them until it is forgotten. Friends without
  // a filter (not met since this open) may read everything, and so may
  // every friend the reserved keyspaces (read record by record: the
  // policy and group records of what it may read).
  absl::flat_hash_map<std::string, absl::flat_hash_set<uint64_t>> friend_readers;
  if (std::any_of(friends.begin(), friends.end(),
                  [](const auto& f) { return f.second.reads != nullptr; })) {
    PEERKV_ASSIGN_OR_RETURN(const auto roots, KeyspaceFingerprints());
    for (const auto& [keyspace, root] : roots) {
      absl::flat_hash_set<uint64_t>& readers = friend_readers[keyspace];
      for (const auto& [peer, held] : friends) {
        if (held.reads == nullptr || IsReservedKeyspace(keyspace) || (*held.reads)(keyspace)) {
          readers.insert(peer);
        }
      }
    }
  }
  auto may_read = [&](uint64_t peer, const FriendAck& held, std::string_view record_key) {
    if (held.reads == nullptr) return true;
    std::string_view keyspace, key;
    if (!codec::SplitRecordKey(record_key, &keyspace, &key).ok()) return true;
    auto readers = friend_readers.find(absl::string_view(keyspace.data(), keyspace.size()));
    // Not listed: a keyspace the step's listing did not see; held.
    return readers == friend_readers.end() || readers->second.contains(peer);
  };
  const int64_t now_ms = clock_->RealNowMillis();
  const int64_t min_age = options_.tombstone_min_age_ms;
  // The background pass's place, or a keyspace's pass (Compact), which
  // leaves the background pass's counts alone.
  std::string& from = scope != nullptr ? scope->from : collect_from_key_;
  const bool at_start = from.empty();
  result.began_pass = at_start;
  if (at_start) {
    pass_held_ = 0;
    pass_held_by_.clear();
  }

  Txn txn;
  PEERKV_RETURN_IF_ERROR(txn.Begin(env_, 0));
  // Decisions below rest on these acknowledgements: they are durable with
  // the collection they allow.
  PEERKV_RETURN_IF_ERROR(WriteAcks(txn.get()));
  Cursor records;
  PEERKV_RETURN_IF_ERROR(records.Open(txn.get(), records_dbi_));
  MDB_val k = Val(from), v;
  int rc = at_start ? mdb_cursor_get(records.get(), &k, &v, MDB_FIRST)
                    : mdb_cursor_get(records.get(), &k, &v, MDB_SET_RANGE);
  if (rc == MDB_SUCCESS && !at_start && View(k) == from) {
    rc = mdb_cursor_get(records.get(), &k, &v, MDB_NEXT);
  }
  ranges::Deltas deltas;
  uint64_t fingerprint_delta = 0, horizon = collected_horizon_.load();
  std::string last_key = from;
  while (rc == MDB_SUCCESS && result.examined < max_examined) {
    if (scope != nullptr && !View(k).starts_with(scope->prefix)) {
      rc = MDB_NOTFOUND;  // past the keyspace
      break;
    }
    ++result.examined;
    last_key.assign(View(k));
    PEERKV_ASSIGN_OR_RETURN(const codec::RecordHeader header, codec::DecodeRecordHeader(View(v)));
    bool collect = false;
    if (header.deleted && !overflow &&
        static_cast<int64_t>(HlcMillis(header.version.hlc)) <= now_ms - min_age) {
      collect = own.Covers(header.version) && header.version.hlc <= floor;
      uint64_t holder = header.version.hlc <= floor ? 0 : floor_origin;
      if (collect && !quarantined.empty()) {
        if (auto q = quarantined.find(last_key); q != quarantined.end()) {
          collect = false;
          if (holder == 0) holder = q->second;
        }
      }
      const int64_t age_by = static_cast<int64_t>(HlcMillis(header.version.hlc)) + min_age;
      for (const auto& [peer, marks] : acks) {
        // Old enough by the peer's clock too (when it told it): this
        // clock alone may be far ahead, unknown to it until its next
        // hello (seed 7845: a day ahead, it collected a tombstone seconds
        // old, and an unknown replica's later, older delete merged over
        // nothing).
        const auto told = ack_clocks.find(peer);
        const bool young = told != ack_clocks.end() && told->second < age_by;
        if (!marks.Covers(header.version) || young) {
          collect = false;
          if (holder == 0) holder = peer;
        }
      }
      // A friend's device never collects this user's tombstones (no
      // watermark of its covers them): collected before it merged this
      // one, an older tombstone (or value) of the key it holds would stay
      // there for good, the stale tombstone it offers dropped unanswered.
      // Only if it may read the keyspace now (README "Tombstone
      // collection" for a read granted later).
      for (const auto& [peer, held] : friends) {
        if ((held.incarnation != incarnation_now || held.seq < header.seq) &&
            may_read(peer, held, last_key)) {
          collect = false;
          if (holder == 0) holder = peer;
        }
      }
      if (!collect && scope == nullptr) {
        ++pass_held_;
        ++pass_held_by_[holder];
      }
    }
    if (collect) {
      std::string_view keyspace, key;
      PEERKV_RETURN_IF_ERROR(codec::SplitRecordKey(last_key, &keyspace, &key));
      const rbsr::Sum256 hash = rbsr::ItemHash(keyspace, key, header.version, true, "");
      deltas.Remove(keyspace, rbsr::KeyPosition(key), hash);
      fingerprint_delta -= hash.limbs[0];
      const std::string seq_key = codec::BigEndian64(header.seq);
      MDB_val lk = Val(seq_key);
      const int del_log = mdb_del(txn.get(), log_dbi_, &lk, nullptr);
      if (del_log != MDB_NOTFOUND) {
        PEERKV_RETURN_IF_ERROR(lmdb::Error(del_log, "delete a collected tombstone's log entry"));
      }
      PEERKV_RETURN_IF_ERROR(
          change_index::Delete(txn.get(), change_index_dbi_, keyspace, header.seq));
      PEERKV_RETURN_IF_ERROR(
          lmdb::Error(mdb_cursor_del(records.get(), 0), "delete a collected tombstone"));
      horizon = std::max(horizon, header.version.hlc);
      ++result.collected;
    }
    rc = mdb_cursor_get(records.get(), &k, &v, MDB_NEXT);
  }
  if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
    return lmdb::Error(rc, "read records for tombstone collection");
  }
  result.reached_end = rc == MDB_NOTFOUND;
  records.Close();
  absl::Status status = absl::OkStatus();
  if (result.collected > 0) {
    status = ranges::ApplyDeltas(txn.get(), ranges_dbi_, deltas);
    if (status.ok()) {
      status = tables::WriteMetaState(
          txn.get(), meta_dbi_,
          codec::MetaState{clock_->Last(), max_seq_.load(), live_records_.load(),
                           tombstones_.load() - result.collected,
                           fingerprint_.load() + fingerprint_delta});
    }
    if (status.ok()) {
      status = tables::WriteMetaU64(txn.get(), meta_dbi_, kMetaTombstoneHorizon, horizon);
    }
  }
  if (status.ok()) status = txn.Commit();
  if (lmdb::IsMapFull(status)) {
    // Deleting needs fresh pages too: grow, and a later step retries.
    txn.Abort();
    result = CollectResult{};
    return GrowMap(0);
  }
  PEERKV_RETURN_IF_ERROR(status);
  if (result.collected > 0) {
    // The log entries of current records are never compacted, so each
    // collected tombstone had one.
    tombstones_ -= result.collected;
    log_entries_ -= std::min<uint64_t>(log_entries_.load(), result.collected);
    fingerprint_ += fingerprint_delta;
    PublishRanges(deltas);
    collected_horizon_ = horizon;
    tombstones_collected_ += result.collected;
  }
  from = result.reached_end ? std::string() : last_key;
  if (scope != nullptr) return absl::OkStatus();
  if (result.began_pass) pass_collected_ = 0;
  pass_collected_ += result.collected;
  if (result.reached_end) {
    const uint64_t held = live_records_.load() + tombstones_.load();
    if (pass_collected_ >= kRepackMinCollected && pass_collected_ >= held) {
      // The pass at least halved the store: its trees are mostly empty
      // leaves now. CollectTombstones repacks them after this step (see
      // Repack), in chunks of their own.
      repack_due_ = pass_collected_;
    }
    pass_collected_ = 0;
    tombstones_held_ = pass_held_;
    uint64_t by = 0, most = 0;
    for (const auto& [peer, count] : pass_held_by_) {
      if (count > most || (count == most && peer < by)) {
        by = peer;
        most = count;
      }
    }
    tombstones_held_by_ = by;
    tombstones_held_by_count_ = most;
  }
  return absl::OkStatus();
}

namespace {
// Log entries examined per compaction step of a repack, and attempts at a
// table's copy that may run out of map (each grows it).
constexpr size_t kRepackCompactionStep = 8192;
constexpr int kRepackMaxMapGrowth = 64;
}  // namespace

absl::StatusOr<Store::RepackResult> Store::Repack() {
  absl::StatusOr<RepackResult> result;
  PEERKV_RETURN_IF_ERROR(RunOnWriter([&] {
    result = RepackOnWriter();
    return result.status();
  }));
  return result;
}

absl::StatusOr<Store::RepackResult> Store::RepackOnWriter() {
  PEERKV_CHECK(OnWriterThread());
  RepackResult result;
  // The log first: superseded entries are not worth copying.
  compact_from_seq_ = 0;
  bool reached_end = false;
  for (int steps = 0; steps < (1 << 30) && !reached_end; ++steps) {
    PEERKV_ASSIGN_OR_RETURN(const uint64_t removed,
                            CompactStep(kRepackCompactionStep, &reached_end));
    result.log_entries_compacted += removed;
  }
  for (const auto& [dbi, name] : {std::pair<MDB_dbi, const char*>{records_dbi_, "records"},
                                  {log_dbi_, "log"},
                                  {change_index_dbi_, "ks_changes"}}) {
    PEERKV_ASSIGN_OR_RETURN(const uint64_t copied, RepackTable(dbi, name));
    result.entries_copied += copied;
  }
  ++repacks_;
  return result;
}

absl::StatusOr<uint64_t> Store::RepackTable(MDB_dbi dbi, const char* name) {
  PEERKV_CHECK(OnWriterThread());
  // Every entry is copied in key order with MDB_APPEND (LMDB then splits a
  // full leaf by starting an empty one: every leaf but the last is full).
  auto copy = [](MDB_txn* txn, MDB_dbi from, MDB_dbi to, const std::string& what,
                 uint64_t* n) -> absl::Status {
    lmdb::Cursor cursor;
    PEERKV_RETURN_IF_ERROR(cursor.Open(txn, from));
    MDB_val k, v;
    int rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_FIRST);
    for (; rc == MDB_SUCCESS; rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_NEXT)) {
      PEERKV_RETURN_IF_ERROR(lmdb::Error(mdb_put(txn, to, &k, &v, MDB_APPEND), what));
      ++*n;
    }
    if (rc != MDB_NOTFOUND) return lmdb::Error(rc, what);
    return absl::OkStatus();
  };
  // Bounded: each attempt that runs out of map grows it (GrowMap refuses
  // beyond max_map_bytes).
  for (int attempt = 0;; ++attempt) {
    uint64_t copied = 0;
    lmdb::Txn txn;
    PEERKV_RETURN_IF_ERROR(txn.Begin(env_, 0));
    MDB_dbi scratch = 0;
    absl::Status status = lmdb::Error(mdb_dbi_open(txn.get(), "repack", MDB_CREATE, &scratch),
                                      "open database repack");
    // A scratch left by a crash mid-repack was never committed: empty.
    if (status.ok()) status = lmdb::Error(mdb_drop(txn.get(), scratch, 0), "empty repack");
    if (status.ok()) status = copy(txn.get(), dbi, scratch, absl::StrCat("repack ", name), &copied);
    if (status.ok()) status = lmdb::Error(mdb_drop(txn.get(), dbi, 0), absl::StrCat("empty ", name));
    uint64_t back = 0;
    if (status.ok()) {
      status = copy(txn.get(), scratch, dbi, absl::StrCat("repack back into ", name), &back);
    }
    if (status.ok() && back != copied) {
      status = absl::InternalError(absl::StrFormat(
          "repack of %s copied %d entries out and %d back", name, copied, back));
    }
    if (status.ok()) status = lmdb::Error(mdb_drop(txn.get(), scratch, 1), "drop repack");
    if (status.ok()) status = txn.Commit();
    if (status.ok()) return copied;
    txn.Abort();
    if (!lmdb::IsMapFull(status) || attempt == kRepackMaxMapGrowth) return status;
    PEERKV_RETURN_IF_ERROR(GrowMap(0));
  }
}

void Store::CollectorLoop() {
  const absl::Duration interval = options_.tombstone_collect_interval;
  for (;;) {
    {
      absl::MutexLock lock(&collector_mu_);
      auto stop = [this] {
        collector_mu_.AssertHeld();
        return stop_collector_;
      };
      if (collector_mu_.AwaitWithTimeout(absl::Condition(&stop), interval)) return;
    }
    // A pass, step by step: writes go on between the steps.
    for (int steps = 0; steps < (1 << 30); ++steps) {
      {
        absl::MutexLock lock(&collector_mu_);
        if (stop_collector_) return;
      }
      const absl::StatusOr<CollectResult> step = CollectTombstones();
      if (!step.ok()) {
        Log(absl::StrCat("peerkv: tombstone collection step failed: ", step.status().ToString()));
        break;
      }
      if (step->reached_end) break;
    }
  }
}

}  // namespace peerkv
