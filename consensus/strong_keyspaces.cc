// consensus/strong_keyspaces.cc: modes, the barrier, strong writes and
// reads, and the follower that applies committed writes.
#include "consensus/strong_keyspaces.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/log.h"
#include "store/validation.h"

namespace peerkv::consensus {
namespace {

constexpr size_t kFollowBatch = 1000;
// The store's meta entry (Store::GetExtMeta) holding the follower's
// position and the log's identity, "POSITION\nIDENTITY".
constexpr char kPositionMeta[] = "consensus_position";

bool ParsePosition(const std::string& text, uint64_t* position, std::string* identity) {
  const size_t nl = text.find('\n');
  if (!absl::SimpleAtoi(text.substr(0, nl), position)) return false;
  *identity = nl == std::string::npos ? "" : text.substr(nl + 1);
  if (!identity->empty() && identity->back() == '\n') identity->pop_back();
  return true;
}

void Emit(const std::function<void(const std::string&)>& log,
          const std::string& line) {
  if (log) {
    log(line);
  } else {
    LogLine(line);
  }
}

bool Absent(const std::optional<Record>& r) {
  return !r.has_value() || r->deleted;
}

std::string DescribeCurrent(const std::optional<Record>& r) {
  if (!r.has_value()) return "the key is absent (never written)";
  if (r->deleted) {
    return absl::StrCat("the key is deleted (tombstone at version ",
                        r->version.ToString(), ")");
  }
  return absl::StrCat("current version is ", r->version.ToString());
}

// Proposal::sign for a strong write (README "Strong keyspaces", "Signed
// records"): the store's signer signs the record the log is about to
// commit (a keyspace shared beyond its owner's devices: by this device,
// with its certificate), and this replica's own merge gate must take it as
// if one of its devices sent it, so a write every replica would refuse
// (unsigned where a signature is required: a device without a certificate;
// a writer the policy does not name) is never committed. Copies of the
// store's functions, not the store: a delayed proposal of the fake log may
// be signed after this layer is gone.
std::function<absl::StatusOr<std::string>(const Record&)> SignAndCheck(
    const StoreOptions& options) {
  return [signer = options.signer,
          gate = options.record_gate](const Record& record) -> absl::StatusOr<std::string> {
    Record signed_record = record;
    if (signer) {
      signed_record.signature = signer(record.keyspace, record.key, record.version,
                                       record.deleted, record.value);
    }
    if (gate) {
      absl::Status admitted = gate(signed_record, MergeSource::kOwnDevice);
      if (!admitted.ok()) {
        return absl::Status(admitted.code(),
                            absl::StrCat("strong write not proposed (every replica would refuse "
                                         "the committed record): ",
                                         admitted.message()));
      }
    }
    return std::move(signed_record.signature);
  };
}

}  // namespace

std::string_view ModeName(Mode mode) {
  return mode == Mode::kStrong ? "strong" : "lww";
}

absl::StatusOr<Mode> ParseMode(std::string_view text, std::string_view field) {
  if (text == "strong") return Mode::kStrong;
  if (text == "lww") return Mode::kLww;
  return absl::InvalidArgumentError(absl::StrFormat(
      "%s '%s' is not a mode; give strong or lww", field, text));
}

void ModeTable::AttachTo(StoreOptions* options) {
  options->merge_filter = MergeFilter();
  options->reserved_check = WithModesKeyspace(std::move(options->reserved_check));
}

ModeTable::ReservedCheckFn ModeTable::WithModesKeyspace(ReservedCheckFn next) {
  return [next = std::move(next)](std::string_view keyspace, std::string_view key,
                                  std::string_view value, bool deleted) -> absl::Status {
    if (keyspace == kModesKeyspace) return absl::OkStatus();
    if (next) return next(keyspace, key, value, deleted);
    return absl::PermissionDeniedError(absl::StrFormat(
        "keyspace '%s' is reserved and this store checks no reserved records", keyspace));
  };
}


std::string EncodeModeValue(const std::vector<ModeSwitch>& earlier,
                            Mode next) {
  std::vector<std::string> parts;
  for (const ModeSwitch& s : earlier) {
    parts.push_back(absl::StrCat(std::string(ModeName(s.mode)), "@", s.since.ToString()));
  }
  parts.push_back(std::string(ModeName(next)));
  return absl::StrJoin(parts, ";");
}

absl::StatusOr<std::vector<ModeSwitch>> DecodeModeRecord(const Record& record) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "mode record of keyspace '%s' at %s: %s", record.key,
        record.version.ToString(), why));
  };
  if (record.deleted) return bad("a mode record is never deleted");
  std::vector<std::string> parts = absl::StrSplit(record.value, ';');
  if (parts.size() > kMaxModeSwitches) {
    return bad(absl::StrFormat("%d switches; the limit is %d", parts.size(),
                               kMaxModeSwitches));
  }
  std::vector<ModeSwitch> history;
  for (size_t i = 0; i < parts.size(); ++i) {
    ModeSwitch s;
    std::string_view mode_text = parts[i];
    if (i + 1 < parts.size()) {
      const size_t at = parts[i].find('@');
      if (at == std::string_view::npos) return bad("a switch without version");
      mode_text = std::string_view(parts[i]).substr(0, at);
      absl::StatusOr<Version> since =
          ParseVersion(std::string_view(parts[i]).substr(at + 1), "switch version");
      if (!since.ok()) return bad(since.status().message());
      s.since = *since;
    } else {
      s.since = record.version;
    }
    absl::StatusOr<Mode> mode = ParseMode(mode_text, "mode");
    if (!mode.ok()) return bad(mode.status().message());
    s.mode = *mode;
    if (!history.empty() &&
        (history.back().since >= s.since || history.back().mode == s.mode)) {
      return bad("switches must alternate, in ascending versions");
    }
    if (history.empty() && s.mode != Mode::kStrong) {
      return bad("the first switch must be to strong");
    }
    history.push_back(s);
  }
  return history;
}

// ---------------------------------------------------------------- ModeTable

void ModeTable::SetLog(std::function<void(const std::string&)> log) {
  log_ = std::move(log);
}

absl::Status ModeTable::Observe(const Record& record) {
  absl::StatusOr<std::vector<ModeSwitch>> history = DecodeModeRecord(record);
  if (!history.ok()) return history.status();
  absl::MutexLock lock(&mu_);
  Entry& entry = modes_[record.key];
  if (record.version > entry.version) {
    entry.version = record.version;
    entry.history = std::move(*history);
  }
  return absl::OkStatus();
}

absl::Status ModeTable::CheckMerge(const Record& record) {
  if (record.keyspace == kModesKeyspace) {
    if (record.version.origin != kStrongOrigin) {
      return absl::PermissionDeniedError(absl::StrFormat(
          "a mode record (keyspace '%s') is written only through the "
          "consensus log; this one has origin %s",
          record.key, ReplicaIdToString(record.version.origin)));
    }
    return Observe(record);
  }
  if (record.version.origin == kStrongOrigin) return absl::OkStatus();
  const std::vector<ModeSwitch> history = Effective(record.keyspace);
  if (history.empty()) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  for (size_t i = 0; i < history.size(); ++i) {
    if (history[i].mode != Mode::kStrong) continue;
    const bool after = record.version >= history[i].since;
    const bool before_next =
        i + 1 >= history.size() || record.version < history[i + 1].since;
    if (!after || !before_next) continue;
    refused_.fetch_add(1);
    const std::string why = absl::StrFormat(
        "an lww write to keyspace '%s' at %s is at or after its switch to "
        "strong at %s%s: refused by the barrier",
        record.keyspace, record.version.ToString(),
        history[i].since.ToString(),
        i + 1 < history.size()
            ? absl::StrCat(" (and before the switch back at ",
                           history[i + 1].since.ToString(), ")")
            : "");
    if (logged_.insert(record.keyspace).second) {
      Emit(log_, absl::StrCat("peerkv: ", why,
                              " (logged once per keyspace; counted)"));
    }
    return absl::FailedPreconditionError(why);
  }
  return absl::OkStatus();
}

std::function<absl::Status(const Record&)> ModeTable::MergeFilter() {
  return [this](const Record& record) { return CheckMerge(record); };
}

absl::Status ModeTable::Load(const Store& store) {
  ScanOptions options;
  options.limit = 1000;
  while (true) {
    absl::StatusOr<ScanResult> page = store.Scan(kModesKeyspace, options);
    if (!page.ok()) return page.status();
    for (const Record& r : page->records) {
      absl::Status s = Observe(r);
      if (!s.ok()) Emit(log_, absl::StrCat("peerkv: ignored: ", s.message()));
    }
    if (!page->more || page->records.empty()) return absl::OkStatus();
    options.start_after = page->records.back().key;
  }
}

std::vector<ModeSwitch> ModeTable::Effective(std::string_view keyspace) const {
  if (const PolicyModes* policies = policy_modes_.load()) {
    std::optional<std::vector<ModeSwitch>> from_policy = policies->ModesOf(keyspace);
    if (from_policy.has_value()) return std::move(*from_policy);
  }
  absl::MutexLock lock(&mu_);
  auto it = modes_.find(keyspace);
  if (it == modes_.end()) return {};
  return it->second.history;
}

Mode ModeTable::ModeOf(std::string_view keyspace) const {
  const std::vector<ModeSwitch> history = Effective(keyspace);
  return history.empty() ? Mode::kLww : history.back().mode;
}

std::vector<ModeSwitch> ModeTable::History(std::string_view keyspace) const {
  return Effective(keyspace);
}

std::vector<KeyspaceMode> ModeTable::List() const {
  std::map<std::string, std::vector<ModeSwitch>> all;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [keyspace, entry] : modes_) all[keyspace] = entry.history;
  }
  // A policy's switches replace the mode record's (and name keyspaces a
  // replica without peerkv.modes, a friend's, knows only from policies).
  if (const PolicyModes* policies = policy_modes_.load()) {
    for (auto& [keyspace, history] : policies->All()) all[keyspace] = std::move(history);
  }
  std::vector<KeyspaceMode> out;
  for (const auto& [keyspace, history] : all) {
    if (history.empty()) continue;
    out.push_back(KeyspaceMode{keyspace, history.back().mode, history.back().since,
                               static_cast<uint32_t>(history.size())});
  }
  return out;
}

// --------------------------------------------------------- StrongKeyspaces

StrongKeyspaces::StrongKeyspaces(Store* store, ModeTable* modes,
                                 ConsensusLog* log, StrongOptions options)
    : store_(store), modes_(modes), log_(log), options_(std::move(options)) {
  uint64_t position = 0;
  std::string identity;
  absl::StatusOr<std::optional<std::string>> saved = store_->GetExtMeta(kPositionMeta);
  if (saved.ok() && saved->has_value()) {
    if (!ParsePosition(**saved, &position, &identity)) {
      Emit(options_.log, "peerkv: the saved consensus position does not parse; following from 0");
      position = 0;
      identity.clear();
    }
  } else if (!options_.position_file.empty()) {
    // Before the position moved into the store: read the old file once
    // (it never ran ahead of the store: every merge then waited for its
    // fsync). The next batch applied writes it into the store.
    std::ifstream in(options_.position_file);
    if (in >> position) {
      in.ignore(1);  // the newline after the position
      std::getline(in, identity);
    } else {
      position = 0;
    }
  }
  absl::MutexLock lock(&mu_);
  position_ = position;
  log_identity_ = identity;
}

StrongKeyspaces::~StrongKeyspaces() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    queue_.clear();
  }
  if (follower_.joinable()) follower_.join();
  for (std::thread& t : workers_) t.join();
}

void StrongKeyspaces::Start() {
  if (log_ != nullptr) follower_ = std::thread([this] { Follow(); });
  for (size_t i = 0; i < std::max<size_t>(1, options_.workers); ++i) {
    workers_.emplace_back([this] { Work(); });
  }
}

bool StrongKeyspaces::IsStrong(std::string_view keyspace) const {
  return modes_->ModeOf(keyspace) == Mode::kStrong;
}

std::string StrongKeyspaces::Describe() const {
  return log_ == nullptr ? "no consensus service" : log_->Describe();
}

absl::Status StrongKeyspaces::Unreachable(const absl::Status& status) const {
  if (log_ == nullptr) {
    return absl::UnavailableError(
        "this replica has no consensus service (start it with "
        "`peerkv serve --etcd http://HOST:PORT`); strong writes and "
        "linearizable reads need one (reads: --stale-ok serves the local "
        "copy)");
  }
  // DeadlineExceeded: a write's outcome is unknown (ConsensusLog::Propose);
  // it stays that, never Unavailable, which says the write did not commit.
  if (status.code() != absl::StatusCode::kUnavailable &&
      status.code() != absl::StatusCode::kDeadlineExceeded) {
    return status;
  }
  const std::string name = log_->Describe();
  if (absl::StrContains(status.message(), name)) {
    return absl::Status(status.code(), status.message());
  }
  return absl::Status(status.code(), absl::StrCat(name, " cannot be reached: ", status.message()));
}

absl::Status StrongKeyspaces::Apply(std::vector<Record> records, bool wait_for_sync,
                                    std::optional<uint64_t> position,
                                    std::vector<RefusedRecord>* refused) {
  if (records.empty() && !position.has_value()) return absl::OkStatus();
  Store::MergeOptions merge;
  merge.wait_for_sync = wait_for_sync;
  if (position.has_value()) {
    std::string identity;
    {
      absl::MutexLock lock(&mu_);
      identity = log_identity_;
    }
    merge.ext_meta.emplace(kPositionMeta, absl::StrCat(*position, "\n", identity));
  }
  absl::StatusOr<MergeResult> merged = store_->MergeWith(std::move(records), std::move(merge));
  if (!merged.ok()) return merged.status();
  if (refused != nullptr) {
    *refused = std::move(merged->refused);
  } else if (!merged->refused.empty()) {
    return absl::InternalError(
        absl::StrCat("a committed write was refused here: ",
                     merged->refused.front().reason.message()));
  }
  if (!merged->quarantined.empty()) {
    return absl::InternalError(
        absl::StrCat("a committed write is too far ahead of this replica's "
                     "clock and waits in quarantine: ",
                     merged->quarantined.front().reason.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<Version> StrongKeyspaces::Write(
    const Mutation& mutation, const Precondition& precondition) {
  if (IsReservedKeyspace(mutation.keyspace)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "keyspace '%s' is reserved (names starting with '%s' are the "
        "system's own)",
        mutation.keyspace, kReservedPrefix));
  }
  absl::Status valid =
      ValidateMutation(mutation, store_->options().max_value_bytes);
  if (!valid.ok()) return valid;
  std::vector<ModeSwitch> history = modes_->History(mutation.keyspace);
  bool strong = !history.empty() && history.back().mode == Mode::kStrong;
  if (!strong && precondition.kind != Precondition::Kind::kNone && log_ != nullptr) {
    // A compare-and-set needs a strong keyspace: before refusing, ask the log
    // whether a switch this replica has not learned yet made it one.
    absl::StatusOr<std::optional<Committed>> mode =
        log_->Read(kModesKeyspace, mutation.keyspace, options_.timeout);
    if (!mode.ok()) return Unreachable(mode.status());
    if (mode->has_value()) {
      absl::Status applied = Apply({(*mode)->record});
      if (!applied.ok()) return applied;
      history = modes_->History(mutation.keyspace);
      strong = !history.empty() && history.back().mode == Mode::kStrong;
    }
  }
  if (!strong) {
    if (precondition.kind != Precondition::Kind::kNone) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "keyspace '%s' is lww: --if-version and --if-absent need a strong "
          "keyspace (`peerkv keyspace mode %s strong`)",
          mutation.keyspace, mutation.keyspace));
    }
    if (mutation.value.has_value()) {
      return store_->Put(mutation.keyspace, mutation.key, *mutation.value);
    }
    return store_->Delete(mutation.keyspace, mutation.key);
  }
  if (log_ == nullptr) return Unreachable(absl::OkStatus());
  const absl::Time deadline = absl::Now() + options_.timeout;
  absl::StatusOr<std::optional<Record>> local =
      store_->Get(mutation.keyspace, mutation.key);
  if (!local.ok()) return local.status();

  Proposal proposal;
  proposal.keyspace = mutation.keyspace;
  proposal.key = mutation.key;
  proposal.value = mutation.value;
  proposal.origin = kStrongOrigin;
  proposal.sign = SignAndCheck(store_->options());
  // Above the switch and every version held here for the key: the commit
  // beats every lww write that merged (they are all below the switch).
  proposal.min_hlc = std::max(store_->clock_mark(), history.back().since.hlc);
  if (local->has_value()) {
    proposal.min_hlc = std::max(proposal.min_hlc, (*local)->version.hlc);
  }
  if (precondition.kind != Precondition::Kind::kNone) {
    absl::StatusOr<std::optional<Committed>> committed =
        log_->Read(mutation.keyspace, mutation.key, deadline - absl::Now());
    if (!committed.ok()) return Unreachable(committed.status());
    // The register as this layer sees it (see Write's comment).
    std::optional<Record> current = *local;
    if (committed->has_value() &&
        (!current.has_value() ||
         (*committed)->record.version >= current->version)) {
      current = (*committed)->record;
    }
    const bool holds =
        precondition.kind == Precondition::Kind::kIfAbsent
            ? Absent(current)
            : current.has_value() && current->version == precondition.version;
    if (!holds) {
      return absl::FailedPreconditionError(
          absl::StrCat("precondition failed: ", DescribeCurrent(current)));
    }
    if (committed->has_value()) {
      proposal.precondition.kind = Precondition::Kind::kIfVersion;
      proposal.precondition.version = (*committed)->record.version;
      proposal.min_hlc =
          std::max(proposal.min_hlc, (*committed)->record.version.hlc);
    } else {
      proposal.precondition.kind = Precondition::Kind::kIfAbsent;
    }
  }
  absl::StatusOr<ProposeResult> result =
      log_->Propose(proposal, std::max(deadline - absl::Now(),
                                       absl::Milliseconds(1)));
  if (!result.ok()) return Unreachable(result.status());
  if (!result->applied) {
    std::optional<Record> current;
    if (result->current.has_value()) current = result->current->record;
    return absl::FailedPreconditionError(
        absl::StrCat("precondition failed: ", DescribeCurrent(current)));
  }
  // Read-your-writes: merged here before the caller hears of it, without
  // waiting for the fsync: the write is durable in the log, and if a crash
  // of the machine loses it here the follower applies it again, since its
  // position is saved in the store with the records it covers (Follow).
  const Version version = result->committed.record.version;
  const bool wait_for_sync =
      options_.write_waits_for_sync != nullptr && options_.write_waits_for_sync->load();
  absl::Status applied = Apply({result->committed.record}, wait_for_sync);
  if (!applied.ok()) return applied;
  return version;
}

absl::StatusOr<StrongRead> StrongKeyspaces::Read(std::string_view keyspace,
                                                 std::string_view key,
                                                 bool stale_ok) {
  absl::Status valid = ValidateKeyspace(keyspace);
  if (valid.ok()) valid = ValidateKey(key);
  if (!valid.ok()) return valid;
  StrongRead out;
  if (IsStrong(keyspace)) {
    if (stale_ok) {
      out.stale = true;
      out.staleness = Staleness();
    } else {
      if (log_ == nullptr) return Unreachable(absl::OkStatus());
      absl::StatusOr<std::optional<Committed>> committed =
          log_->Read(keyspace, key, options_.timeout);
      if (!committed.ok()) return Unreachable(committed.status());
      if (committed->has_value()) {
        // Committed in the log: no need to wait for the fsync here (Write).
        absl::Status applied = Apply({(*committed)->record}, /*wait_for_sync=*/false);
        if (!applied.ok()) return applied;
      }
    }
  }
  absl::StatusOr<std::optional<Record>> local = store_->Get(keyspace, key);
  if (!local.ok()) return local.status();
  out.record = std::move(*local);
  return out;
}

absl::StatusOr<Version> StrongKeyspaces::SetMode(std::string_view keyspace,
                                                 Mode mode) {
  absl::Status valid = ValidateKeyspace(keyspace);
  if (!valid.ok()) return valid;
  if (IsReservedKeyspace(keyspace)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "keyspace '%s' is reserved (names starting with '%s' are the "
        "system's own); its mode cannot change",
        keyspace, kReservedPrefix));
  }
  PolicyModes* const policies = modes_->policy_modes();
  // The owner rule first: a non-owner's switch writes nothing anywhere.
  if (policies != nullptr) {
    if (absl::Status may = policies->MaySwitch(keyspace); !may.ok()) return may;
  }
  if (log_ == nullptr) return Unreachable(absl::OkStatus());
  const absl::Time deadline = absl::Now() + options_.timeout;
  absl::StatusOr<std::optional<Committed>> committed =
      log_->Read(kModesKeyspace, keyspace, options_.timeout);
  if (!committed.ok()) return Unreachable(committed.status());
  // The committed history into the keyspace's policy, if it has one.
  auto publish = [&](const std::vector<ModeSwitch>& done) -> absl::Status {
    if (policies == nullptr || done.empty()) return absl::OkStatus();
    absl::Status published = policies->Publish(keyspace, done);
    if (published.ok()) return published;
    return absl::Status(
        published.code(),
        absl::StrFormat("the switch of keyspace '%s' to %s committed in %s at %s, but its "
                        "policy was not rewritten to carry it (replicas that take the mode "
                        "from the policy do not see it yet; run the switch again to finish "
                        "it): %s",
                        keyspace, ModeName(done.back().mode), Describe(),
                        done.back().since.ToString(), published.message()));
  };
  std::vector<ModeSwitch> history;
  Proposal proposal;
  proposal.keyspace = std::string(kModesKeyspace);
  proposal.key = std::string(keyspace);
  proposal.origin = kStrongOrigin;
  proposal.min_hlc = store_->clock_mark();
  if (committed->has_value()) {
    absl::StatusOr<std::vector<ModeSwitch>> decoded =
        DecodeModeRecord((*committed)->record);
    if (!decoded.ok()) {
      return absl::DataLossError(absl::StrCat(
          Describe(), " holds a mode record that does not decode: ",
          decoded.status().message()));
    }
    history = std::move(*decoded);
    proposal.precondition.kind = Precondition::Kind::kIfVersion;
    proposal.precondition.version = (*committed)->record.version;
    proposal.min_hlc =
        std::max(proposal.min_hlc, (*committed)->record.version.hlc);
    absl::Status applied = Apply({(*committed)->record});
    if (!applied.ok()) return applied;
  } else {
    proposal.precondition.kind = Precondition::Kind::kIfAbsent;
  }
  const Mode current = history.empty() ? Mode::kLww : history.back().mode;
  if (current == mode) {
    if (absl::Status published = publish(history); !published.ok()) return published;
    return history.empty() ? Version{} : history.back().since;
  }
  if (history.size() >= kMaxModeSwitches) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "keyspace '%s' has switched mode %d times; the limit is %d",
        keyspace, history.size(), kMaxModeSwitches));
  }
  proposal.value = EncodeModeValue(history, mode);
  absl::StatusOr<ProposeResult> result = log_->Propose(
      proposal, std::max(deadline - absl::Now(), absl::Milliseconds(1)));
  if (!result.ok()) return Unreachable(result.status());
  if (!result->applied) {
    return absl::AbortedError(absl::StrFormat(
        "the mode of keyspace '%s' changed while switching it; try again",
        keyspace));
  }
  const Version version = result->committed.record.version;
  absl::Status applied = Apply({result->committed.record});
  if (!applied.ok()) return applied;
  history.push_back(ModeSwitch{mode, version});
  if (absl::Status published = publish(history); !published.ok()) return published;
  return version;
}

absl::StatusOr<std::vector<KeyspaceMode>> StrongKeyspaces::List() const {
  auto keyspaces = store_->KeyspaceFingerprints();
  if (!keyspaces.ok()) return keyspaces.status();
  std::map<std::string, KeyspaceMode> all;
  std::map<std::string, uint64_t> registers;
  for (const auto& [name, fingerprint] : *keyspaces) {
    if (IsReservedKeyspace(name)) continue;
    all[name] = KeyspaceMode{name, Mode::kLww, Version{}, 0};
    registers[name] = fingerprint.count;
  }
  for (KeyspaceMode& m : modes_->List()) all[m.keyspace] = std::move(m);
  for (auto& [name, m] : all) m.registers = registers[name];
  std::vector<KeyspaceMode> out;
  for (auto& [name, m] : all) out.push_back(std::move(m));
  return out;
}

bool StrongKeyspaces::Submit(absl::AnyInvocable<void()> task) {
  absl::MutexLock lock(&mu_);
  if (stopping_ || queue_.size() >= options_.max_queued) return false;
  queue_.push_back(std::move(task));
  return true;
}

void StrongKeyspaces::Work() {
  while (true) {
    absl::AnyInvocable<void()> task;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !queue_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (stopping_) return;
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();
  }
}

absl::Duration StrongKeyspaces::Staleness() const {
  absl::MutexLock lock(&mu_);
  if (!caught_up_.has_value()) return absl::InfiniteDuration();
  return absl::Now() - *caught_up_;
}

StrongKeyspaces::Status StrongKeyspaces::GetStatus() const {
  Status s;
  s.reachable = log_ != nullptr && log_->Reachable();
  s.staleness = Staleness();
  absl::MutexLock lock(&mu_);
  s.position = position_;
  s.applied = applied_;
  return s;
}

bool StrongKeyspaces::AwaitPosition(uint64_t position, absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  auto reached = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return position_ >= position; };
  return mu_.AwaitWithTimeout(absl::Condition(&reached), timeout);
}

void StrongKeyspaces::Follow() {
  bool failing = false;
  while (true) {
    uint64_t after;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      after = position_;
    }
    const absl::Time asked = absl::Now();
    absl::StatusOr<std::vector<Committed>> batch =
        log_->ReadAfter(after, kFollowBatch, options_.follow_wait);
    // Positions in another log mean nothing: read it again from the start.
    if (LogWasRecreated()) continue;
    absl::Status status = batch.status();
    if (batch.ok() && !batch->empty()) {
      // Most were merged already by the Write that proposed them: merging
      // them again would cost the store's single writer a group for
      // nothing (it would keep the register as it is).
      // A record held here may be in a commit that did not wait for its
      // fsync (Write); the position goes into the store in the same
      // transaction as the records it covers, synced, which flushes every
      // earlier commit too. So a saved position never runs ahead of what a
      // crash of the machine leaves in the store: a lost tail is read again.
      std::vector<Record> records;
      records.reserve(batch->size());
      for (const Committed& c : *batch) {
        absl::StatusOr<std::optional<Record>> held =
            store_->Get(c.record.keyspace, c.record.key);
        if (held.ok() && held->has_value() && (*held)->version >= c.record.version) continue;
        records.push_back(c.record);
      }
      // A committed record this replica refuses (unsigned or altered in a
      // keyspace shared beyond its owner's devices, signed by a user who
      // may not write it) is refused by it whenever it is read again: it is
      // skipped, logged, so that it does not stop every later commit here.
      // Gossip may still bring it, and the gate decides again then.
      std::vector<RefusedRecord> refused;
      status = Apply(std::move(records), /*wait_for_sync=*/true, batch->back().position,
                     &refused);
      if (status.ok() && !refused.empty()) {
        const RefusedRecord& first = refused.front();
        Emit(options_.log,
             absl::StrCat("peerkv: ", refused.size(), " committed write(s) from ",
                          log_->Describe(), " refused here and skipped (the first: ",
                          first.keyspace, " at ", first.version.ToString(), ": ",
                          first.reason.message(), ")"));
      }
      if (!status.ok() && !absl::IsUnavailable(status)) {
        // The records were quarantined (or failed) but the position was
        // committed with them: put it back, so the batch is read again.
        absl::Status back = Apply({}, /*wait_for_sync=*/true, after);
        if (!back.ok()) status = back;
      }
    }
    if (!status.ok()) {
      if (!failing) {
        Emit(options_.log,
             absl::StrCat("peerkv: applying committed writes from ",
                          log_->Describe(), " paused: ", status.message()));
      }
      failing = true;
      absl::MutexLock lock(&mu_);
      auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_;
      };
      mu_.AwaitWithTimeout(absl::Condition(&stop), options_.follow_retry);
      continue;
    }
    if (failing) {
      Emit(options_.log, absl::StrCat("peerkv: applying committed writes from ",
                                      log_->Describe(), " resumed"));
      failing = false;
    }
    uint64_t position = after;
    if (!batch->empty()) position = batch->back().position;
    {
      absl::MutexLock lock(&mu_);
      position_ = position;
      applied_ += batch->size();
      if (batch->size() < kFollowBatch) caught_up_ = asked;
    }
  }
}

bool StrongKeyspaces::LogWasRecreated() {
  const std::string now = log_->LogIdentity();
  if (now.empty()) return false;
  std::string before;
  uint64_t position = 0;
  {
    absl::MutexLock lock(&mu_);
    if (log_identity_ == now) return false;
    before = log_identity_;
    log_identity_ = now;
    // Known for the first time (a new replica, or a position file from
    // before identities were kept): the position stands.
    if (before.empty()) return false;
    position_ = 0;
    caught_up_.reset();
  }
  Emit(options_.log,
       absl::StrCat("peerkv: ", log_->Describe(), " is not the log this replica followed (",
                    now, ", was ", before,
                    "): it was recreated; reading its committed writes again from the start"));
  absl::Status saved = Apply({}, /*wait_for_sync=*/true, position);
  if (!saved.ok()) {
    Emit(options_.log, absl::StrCat("peerkv: saving the consensus position failed: ",
                                    saved.message()));
  }
  return true;
}

}  // namespace peerkv::consensus
