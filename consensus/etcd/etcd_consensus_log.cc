// consensus/etcd/etcd_consensus_log.cc: the etcd v3 JSON-gateway backend.
#include "consensus/etcd/etcd_consensus_log.h"

#include <algorithm>
#include <random>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/macros.h"
#include "store/validation.h"

namespace peerkv::consensus {
namespace {

using json::JsonValue;

// Abseil 20220623 as Debian builds it has its own string_view, not
// std::string_view.
absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// The etcd value of a committed record: a format byte, hlc and origin (8
// each, big-endian), the tombstone flag (1), then
//   format 1 (from before tokens, still read): the value;
//   format 2 (an unsigned record): the txn's token (8), the value;
//   format 3 (a signed record): the token (8), the signature's length (2,
//   big-endian), the signature, the value.
constexpr char kRecordFormatWithoutToken = 1;
constexpr char kUnsignedRecordFormat = 2;
constexpr char kSignedRecordFormat = 3;
constexpr size_t kRecordHeaderBytes = 1 + 8 + 8 + 1;
constexpr size_t kTokenBytes = 8;
// Pause between resends of a txn whose answer was lost, while etcd cannot
// be reached.
constexpr absl::Duration kOutcomeRetryPause = absl::Milliseconds(50);
constexpr size_t kMaxPrefixBytes = 64;

std::string B64(absl::string_view bytes) { return json::JsonQuote(absl::Base64Escape(bytes)); }

void PutBigEndian(std::string& out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>(v >> shift));
}

uint64_t GetBigEndian(absl::string_view in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(in[i]);
  return v;
}

std::string EncodeKey(absl::string_view prefix, absl::string_view keyspace, absl::string_view key) {
  return absl::StrCat(prefix, keyspace.size(), "/", keyspace, "/", key);
}

std::string EncodeValue(const Record& record, uint64_t token) {
  std::string out;
  out.reserve(kRecordHeaderBytes + kTokenBytes + 2 + record.signature.size() +
              record.value.size());
  out.push_back(record.signature.empty() ? kUnsignedRecordFormat : kSignedRecordFormat);
  PutBigEndian(out, record.version.hlc);
  PutBigEndian(out, record.version.origin);
  out.push_back(record.deleted ? 1 : 0);
  PutBigEndian(out, token);
  if (!record.signature.empty()) {
    out.push_back(static_cast<char>(record.signature.size() >> 8));
    out.push_back(static_cast<char>(record.signature.size() & 0xff));
    out.append(record.signature);
  }
  if (!record.deleted) out.append(record.value);
  return out;
}

// etcd's answers that a request it took timed out inside the server: it
// may still commit ("etcdserver: request timed out...", "leader changed").
bool EtcdMayStillApply(absl::string_view message) {
  return absl::StrContains(message, "timed out") || absl::StrContains(message, "leader changed");
}

// The key after every key that starts with `prefix`.
std::string PrefixEnd(std::string prefix) {
  while (!prefix.empty() && static_cast<unsigned char>(prefix.back()) == 0xff) prefix.pop_back();
  PEERKV_CHECK(!prefix.empty());
  prefix.back() = static_cast<char>(static_cast<unsigned char>(prefix.back()) + 1);
  return prefix;
}

// A malformed answer from the service (not what etcd sends).
absl::Status Malformed(absl::string_view name, absl::string_view what, const absl::Status& why) {
  return absl::InternalError(
      absl::StrCat(name, " answered a malformed ", what, ": ", why.message()));
}

}  // namespace

absl::StatusOr<std::unique_ptr<EtcdConsensusLog>> EtcdConsensusLog::Create(
    const EtcdOptions& options) {
  PEERKV_ASSIGN_OR_RETURN(etcd::HttpUrl url, etcd::ParseHttpUrl(options.url));
  if (options.prefix.empty() || options.prefix.size() > kMaxPrefixBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "etcd key prefix must be 1 to ", kMaxPrefixBytes, " bytes, got ", options.prefix.size()));
  }
  if (static_cast<unsigned char>(options.prefix[0]) == 0xff &&
      options.prefix.find_first_not_of('\xff') == std::string::npos) {
    return absl::InvalidArgumentError("etcd key prefix must not be all 0xff bytes");
  }
  if (options.outcome_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("etcd outcome_timeout must not be negative");
  }
  return std::unique_ptr<EtcdConsensusLog>(
      new EtcdConsensusLog(std::move(url), options.prefix, options));
}

namespace {
uint64_t RandomTokenBase() {
  std::random_device entropy;
  return (uint64_t{entropy()} << 32) ^ entropy();
}
}  // namespace

EtcdConsensusLog::EtcdConsensusLog(etcd::HttpUrl url, std::string prefix,
                                   const EtcdOptions& options)
    : prefix_(std::move(prefix)),
      identity_recheck_(options.identity_recheck),
      outcome_timeout_(options.outcome_timeout),
      lose_txn_answer_(options.lose_txn_answer),
      name_(absl::StrCat("etcd at ", url.text)),
      http_(url),
      token_base_(RandomTokenBase()) {}

bool EtcdConsensusLog::Reachable() const { return reached_.load(); }

std::string EtcdConsensusLog::Describe() const { return name_; }

absl::StatusOr<JsonValue> EtcdConsensusLog::Call(absl::string_view path, const std::string& body,
                                                 absl::Time deadline, bool idempotent,
                                                 bool* maybe_applied) {
  bool sent = false;
  absl::StatusOr<etcd::HttpResponse> response = http_.Post(path, body, deadline, idempotent, &sent);
  if (maybe_applied != nullptr) *maybe_applied = false;
  if (!response.ok()) {
    if (maybe_applied != nullptr) *maybe_applied = sent;
    if (absl::IsUnavailable(response.status()) || absl::IsDeadlineExceeded(response.status())) {
      reached_ = false;
      return absl::UnavailableError(
          absl::StrCat(name_, " is unreachable: ", path, ": ", response.status().message()));
    }
    reached_ = true;
    return absl::InternalError(
        absl::StrCat(name_, " answered garbage to ", path, ": ", response.status().message()));
  }
  reached_ = true;
  absl::StatusOr<JsonValue> json = json::ParseJson(response->body);
  if (!json.ok() || json->type != JsonValue::Type::kObject) {
    return absl::InternalError(absl::StrCat(
        name_, " answered ", path, " with HTTP ", response->status, " and a body that is not a JSON object (",
        json.ok() ? "not an object" : json.status().message(), "): ",
        absl::CHexEscape(response->body.substr(0, 120))));
  }
  if (response->status != 200) {
    // grpc-gateway errors: {"error": "...", "code": <grpc code>}.
    std::string message = "(no message)";
    if (const JsonValue* m = json->Find("error");
        m != nullptr && m->type == JsonValue::Type::kString) {
      message = m->text.substr(0, 300);
    }
    int code = 0;
    if (const JsonValue* c = json->Find("code"); c != nullptr) {
      (void)absl::SimpleAtoi(c->text, &code);
    }
    // gRPC UNAVAILABLE (14), DEADLINE_EXCEEDED (4): no leader, stopping,
    // overloaded; retry later like an unreachable service.
    if (code == 14 || code == 4 || response->status == 503) {
      reached_ = false;
      if (maybe_applied != nullptr) *maybe_applied = EtcdMayStillApply(message);
      return absl::UnavailableError(absl::StrCat(name_, " is unavailable: ", path, ": ", message));
    }
    if (code == 11) {
      return absl::OutOfRangeError(absl::StrCat(name_, ": ", path, ": ", message));
    }
    return absl::InternalError(absl::StrCat(name_, " refused ", path, " with HTTP ",
                                            response->status, ": ", message));
  }
  return *std::move(json);
}

absl::StatusOr<Committed> EtcdConsensusLog::DecodeKv(const JsonValue& kv, absl::string_view what,
                                                     uint64_t* token) const {
  if (kv.type != JsonValue::Type::kObject) {
    return Malformed(name_, what, absl::InvalidArgumentError("a kv is not an object"));
  }
  absl::StatusOr<std::string> key = json::JsonBytes(kv, "key", "kv");
  if (!key.ok()) return Malformed(name_, what, key.status());
  absl::StatusOr<std::string> value = json::JsonBytes(kv, "value", "kv");
  if (!value.ok()) return Malformed(name_, what, value.status());
  absl::StatusOr<uint64_t> mod = json::JsonUint(kv, "mod_revision", "kv");
  if (!mod.ok()) return Malformed(name_, what, mod.status());
  const std::string shown = absl::CHexEscape(key->substr(0, 200));
  auto corrupt = [&](absl::string_view why) {
    return absl::DataLossError(
        absl::StrCat(name_, ": etcd key '", shown, "' does not hold a peerkv record: ", why));
  };
  if (*mod == 0) return corrupt("mod_revision missing or 0");
  // "<prefix><len>/<keyspace>/<key>"
  if (key->compare(0, prefix_.size(), prefix_) != 0) return corrupt("not under the prefix");
  absl::string_view rest = absl::string_view(*key).substr(prefix_.size());
  const size_t slash = rest.find('/');
  size_t keyspace_len = 0;
  if (slash == absl::string_view::npos || slash == 0 || slash > 3 ||
      !absl::SimpleAtoi(rest.substr(0, slash), &keyspace_len) ||
      rest.size() < slash + 1 + keyspace_len + 1 || rest[slash + 1 + keyspace_len] != '/') {
    return corrupt("the key is not <len>/<keyspace>/<key>");
  }
  Committed out;
  out.position = *mod;
  out.record.keyspace = std::string(rest.substr(slash + 1, keyspace_len));
  out.record.key = std::string(rest.substr(slash + 1 + keyspace_len + 1));
  if (value->size() < kRecordHeaderBytes) {
    return corrupt(absl::StrCat("the value has ", value->size(), " bytes, fewer than the ",
                                kRecordHeaderBytes, " of a record header"));
  }
  const char format = (*value)[0];
  if (format != kRecordFormatWithoutToken && format != kUnsignedRecordFormat &&
      format != kSignedRecordFormat) {
    return corrupt(absl::StrCat("unknown record format byte ",
                                static_cast<int>(static_cast<unsigned char>(format))));
  }
  const size_t header =
      kRecordHeaderBytes + (format == kRecordFormatWithoutToken ? 0 : kTokenBytes);
  if (value->size() < header) {
    return corrupt(absl::StrCat("the value has ", value->size(), " bytes, fewer than the ",
                                header, " of a format ", static_cast<int>(format),
                                " record header"));
  }
  if (token != nullptr) {
    *token = format == kRecordFormatWithoutToken
                 ? 0
                 : GetBigEndian(absl::string_view(*value).substr(kRecordHeaderBytes));
  }
  out.record.version.hlc = GetBigEndian(absl::string_view(*value).substr(1));
  out.record.version.origin = GetBigEndian(absl::string_view(*value).substr(9));
  const unsigned char flags = static_cast<unsigned char>((*value)[17]);
  if (flags > 1) return corrupt(absl::StrCat("unknown record flags ", static_cast<int>(flags)));
  out.record.deleted = flags == 1;
  size_t value_at = header;
  if (format == kSignedRecordFormat) {
    if (value->size() < header + 2) {
      return corrupt("a signed record ends before its signature's length");
    }
    const size_t signature_size =
        (static_cast<size_t>(static_cast<unsigned char>((*value)[header])) << 8) |
        static_cast<unsigned char>((*value)[header + 1]);
    if (signature_size == 0 || value->size() < header + 2 + signature_size) {
      return corrupt(absl::StrCat("a signed record's signature of ", signature_size,
                                  " bytes is empty or longer than the ",
                                  value->size() - header - 2, " bytes left"));
    }
    out.record.signature = value->substr(header + 2, signature_size);
    value_at = header + 2 + signature_size;
  }
  out.record.value = value->substr(value_at);
  absl::Status valid = ValidateRemoteRecord(out.record, kMaxValueBytes);
  if (!valid.ok()) return corrupt(valid.message());
  return out;
}

absl::StatusOr<std::optional<Committed>> EtcdConsensusLog::ReadKey(const std::string& etcd_key,
                                                                   absl::Time deadline,
                                                                   bool serializable) {
  PEERKV_ASSIGN_OR_RETURN(
      JsonValue answer,
      Call("/v3/kv/range",
           absl::StrCat("{\"key\":", B64(etcd_key), serializable ? ",\"serializable\":true" : "",
                        "}"),
           deadline, true));
  const JsonValue* kvs = answer.Find("kvs");
  std::optional<Committed> out;
  if (kvs != nullptr) {
    if (kvs->type != JsonValue::Type::kArray || kvs->array.size() > 1) {
      return Malformed(name_, "range answer",
                       absl::InvalidArgumentError("kvs is not an array of at most one kv"));
    }
    if (!kvs->array.empty()) {
      PEERKV_ASSIGN_OR_RETURN(Committed committed, DecodeKv(kvs->array[0], "range answer"));
      out = std::move(committed);
    }
  }
  Remember(etcd_key, out);
  return out;
}

void EtcdConsensusLog::Remember(const std::string& etcd_key, const std::optional<Committed>& state) {
  absl::MutexLock lock(&cache_mu_);
  auto it = cache_.find(etcd_key);
  if (it != cache_.end()) {
    // Keys are never removed from etcd, so a later state has a greater
    // mod_revision; an "absent" answer is never newer than a present one.
    if (!state.has_value()) return;
    if (it->second.has_value() && it->second->position >= state->position) return;
    it->second = state;
    return;
  }
  if (cache_.size() >= kMaxCachedKeys) cache_.clear();
  cache_.emplace(etcd_key, state);
}

std::optional<std::optional<Committed>> EtcdConsensusLog::Recall(const std::string& etcd_key) {
  absl::MutexLock lock(&cache_mu_);
  auto it = cache_.find(etcd_key);
  if (it == cache_.end()) return std::nullopt;
  return it->second;
}

absl::StatusOr<ProposeResult> EtcdConsensusLog::Propose(const Proposal& proposal,
                                                        absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  PEERKV_RETURN_IF_ERROR(ValidateKeyspace(proposal.keyspace));
  PEERKV_RETURN_IF_ERROR(ValidateKey(proposal.key));
  if (proposal.origin == 0) {
    return absl::InvalidArgumentError(
        "consensus proposal: origin (the proposing replica id) must not be 0");
  }
  if (proposal.value.has_value() && proposal.value->size() > kMaxEtcdValueBytes) {
    return absl::InvalidArgumentError(absl::StrCat("consensus proposal: value of ",
                                                   proposal.value->size(),
                                                   " bytes exceeds the etcd backend's limit of ",
                                                   kMaxEtcdValueBytes));
  }
  const std::string etcd_key = EncodeKey(prefix_, proposal.keyspace, proposal.key);
  // The state the txn compares against: what this object last saw of the
  // key, or for a compare-and-set a serializable (local) read, or "absent". Either may be stale; the
  // txn's compare on mod_revision makes a stale guess fail rather than
  // commit, and its failure branch returns the current state, which is
  // authoritative (the txn is linearizable). A precondition that fails on a
  // guess is confirmed by a linearizable read before it is reported.
  std::optional<Committed> current;
  bool authoritative = false;
  if (std::optional<std::optional<Committed>> cached = Recall(etcd_key); cached.has_value()) {
    current = *std::move(cached);
  } else if (proposal.precondition.kind == Precondition::Kind::kIfVersion) {
    PEERKV_ASSIGN_OR_RETURN(current, ReadKey(etcd_key, deadline, /*serializable=*/true));
  }
  // else: guess "absent": a key never seen is most often new, and if it is
  // not, the failed txn returns it at the cost a read would have had.
  for (int attempt = 0; attempt <= kMaxRaceRetries + 1; ++attempt) {
    const bool holds = PreconditionHolds(proposal.precondition, current);
    if (!holds && !authoritative) {
      PEERKV_ASSIGN_OR_RETURN(current, ReadKey(etcd_key, deadline, /*serializable=*/false));
      authoritative = true;
      continue;
    }
    if (!holds) {
      ProposeResult result;
      result.applied = false;
      result.current = std::move(current);
      return result;
    }
    uint64_t hlc = proposal.min_hlc;
    if (current.has_value()) hlc = std::max(hlc, current->record.version.hlc);
    if (hlc == UINT64_MAX) {
      return absl::OutOfRangeError(
          absl::StrCat(name_, ": the key's clock is at its maximum; no later version exists"));
    }
    const Version version{hlc + 1, proposal.origin};
    // Signed before it is sent: the version is decided here, and the txn
    // commits exactly this record or nothing.
    PEERKV_ASSIGN_OR_RETURN(Record record, CommitRecord(proposal, version));
    PendingPut op;
    op.etcd_key = etcd_key;
    op.deadline = deadline;
    if (current.has_value()) op.expect = current->position;
    op.compare =
        current.has_value()
            ? absl::StrCat("{\"target\":\"MOD\",\"key\":", B64(etcd_key), ",\"mod_revision\":\"",
                           current->position, "\"}")
            : absl::StrCat("{\"target\":\"CREATE\",\"key\":", B64(etcd_key),
                           ",\"create_revision\":\"0\"}");
    op.record = record;
    CommitPut(&op);
    PEERKV_RETURN_IF_ERROR(op.status);
    if (op.committed) {
      ProposeResult result;
      result.applied = true;
      result.committed.position = op.revision;
      result.committed.record = std::move(record);
      Remember(etcd_key, result.committed);
      return result;
    }
    // Lost the race: the failure branch's range says what won.
    current = std::move(op.current);
    authoritative = true;
    Remember(etcd_key, current);
  }
  return absl::AbortedError(absl::StrCat(name_, ": lost the race for key '",
                                         absl::CHexEscape(proposal.key.substr(0, 100)), "' ",
                                         kMaxRaceRetries + 1, " times; retry"));
}

void EtcdConsensusLog::CommitPut(PendingPut* op) {
  batch_mu_.Lock();
  queue_.push_back(op);
  auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(batch_mu_) {
    return op->done || (inflight_ < kMaxInflightTxns && !queue_.empty());
  };
  bool past_deadline = false;
  while (!op->done) {
    if (past_deadline) {
      // In a txn: done by that txn's deadline, the latest of its ops'.
      batch_mu_.Await(absl::Condition(&ready));
    } else if (!batch_mu_.AwaitWithDeadline(absl::Condition(&ready), op->deadline)) {
      past_deadline = true;
      // Still queued: it never reached etcd.
      auto it = std::find(queue_.begin(), queue_.end(), op);
      if (it != queue_.end()) {
        queue_.erase(it);
        op->status = absl::UnavailableError(absl::StrCat(
            name_, " is unreachable: no proposal txn came back before the deadline"));
        op->done = true;
        break;
      }
      continue;
    }
    if (op->done) break;
    // A slot is free: send what waits, oldest first.
    std::vector<PendingPut*> batch;
    std::set<absl::string_view> keys;
    size_t bytes = 0;
    for (auto it = queue_.begin(); it != queue_.end() && batch.size() < kMaxTxnOps;) {
      PendingPut* next = *it;
      // The put (key and value in base64, with the record's header) and the
      // failure branch's range of the key.
      const size_t size = next->compare.size() + 64 + next->etcd_key.size() * 3 +
                          (next->record.value.size() + next->record.signature.size()) * 4 / 3;
      if (!batch.empty() && bytes + size > kMaxTxnBytes) break;
      // etcd refuses a txn that puts one key twice: the later one waits.
      if (!keys.insert(next->etcd_key).second) {
        ++it;
        continue;
      }
      bytes += size;
      batch.push_back(next);
      it = queue_.erase(it);
    }
    ++inflight_;
    batch_mu_.Unlock();
    RunTxn(batch);
    batch_mu_.Lock();
    --inflight_;
  }
  batch_mu_.Unlock();
}

void EtcdConsensusLog::RunTxn(std::vector<PendingPut*>& batch) {
  absl::Time deadline = absl::InfinitePast();
  const uint64_t token = token_base_ ^ tokens_.fetch_add(1);
  std::string compares, puts, ranges;
  for (PendingPut* op : batch) {
    deadline = std::max(deadline, op->deadline);
    if (!compares.empty()) {
      compares.push_back(',');
      puts.push_back(',');
      ranges.push_back(',');
    }
    compares.append(op->compare);
    absl::StrAppend(&puts, "{\"request_put\":{\"key\":", B64(op->etcd_key),
                    ",\"value\":", B64(EncodeValue(op->record, token)), "}}");
    absl::StrAppend(&ranges, "{\"request_range\":{\"key\":", B64(op->etcd_key), "}}");
  }
  const std::string body = absl::StrCat("{\"compare\":[", compares, "],\"success\":[", puts,
                                        "],\"failure\":[", ranges, "]}");
  // What each op gets, decided outside the lock; `again`: its compare held
  // in a txn that failed on another's.
  struct Outcome {
    absl::Status status;
    bool committed = false, again = false;
    uint64_t revision = 0;
    std::optional<Committed> current;
  };
  std::vector<Outcome> outcomes(batch.size());
  auto fail_all = [&](const absl::Status& status) {
    for (Outcome& o : outcomes) o.status = status;
  };
  bool maybe_applied = false;
  absl::StatusOr<JsonValue> answer = Call("/v3/kv/txn", body, deadline, false, &maybe_applied);
  if (answer.ok() && lose_txn_answer_ && lose_txn_answer_()) {
    answer = absl::UnavailableError(
        absl::StrCat(name_, " is unreachable: /v3/kv/txn: the answer was lost (test)"));
    maybe_applied = true;
  }
  if (!answer.ok() && maybe_applied) {
    // It may have committed: never say it failed without knowing.
    absl::StatusOr<std::optional<uint64_t>> outcome =
        LearnOutcome(body, *batch.front(), token, deadline, deadline + outcome_timeout_,
                     answer.status());
    if (!outcome.ok()) {
      fail_all(outcome.status());
    } else if (outcome->has_value()) {
      for (Outcome& o : outcomes) {
        o.committed = true;
        o.revision = **outcome;
      }
    } else {
      fail_all(absl::UnavailableError(absl::StrCat(
          name_, " did not commit the write (its answer was lost: ", answer.status().message(),
          "; etcd shows the txn did not commit, and it cannot commit later)")));
    }
  } else if (!answer.ok()) {
    fail_all(answer.status());
  } else if (const JsonValue* succeeded = answer->Find("succeeded");
             succeeded != nullptr && succeeded->type != JsonValue::Type::kBool) {
    fail_all(Malformed(name_, "txn answer", absl::InvalidArgumentError("succeeded is not a bool")));
  } else if (succeeded != nullptr && succeeded->boolean) {
    const JsonValue* header = answer->Find("header");
    absl::StatusOr<uint64_t> revision = header == nullptr
                                            ? absl::StatusOr<uint64_t>(0)
                                            : json::JsonUint(*header, "revision", "header");
    if (!revision.ok()) {
      fail_all(Malformed(name_, "txn answer", revision.status()));
    } else if (*revision == 0) {
      fail_all(Malformed(name_, "txn answer",
                         absl::InvalidArgumentError("header.revision missing or 0")));
    } else {
      for (Outcome& o : outcomes) {
        o.committed = true;
        o.revision = *revision;
      }
    }
  } else {
    // The failure branch: one range per op, in order.
    const JsonValue* responses = answer->Find("responses");
    if (responses == nullptr || responses->type != JsonValue::Type::kArray ||
        responses->array.size() != batch.size()) {
      fail_all(Malformed(name_, "txn answer",
                         absl::InvalidArgumentError(absl::StrCat(
                             "a failed txn of ", batch.size(),
                             " compares without as many entries in responses"))));
    } else {
      for (size_t i = 0; i < batch.size(); ++i) {
        Outcome& o = outcomes[i];
        const JsonValue* range = responses->array[i].Find("response_range");
        const JsonValue* kvs = range == nullptr ? nullptr : range->Find("kvs");
        if (range == nullptr) {
          o.status = Malformed(name_, "txn answer",
                               absl::InvalidArgumentError("a response without response_range"));
        } else if (kvs == nullptr ||
                   (kvs->type == JsonValue::Type::kArray && kvs->array.empty())) {
          o.current.reset();
        } else if (kvs->type != JsonValue::Type::kArray || kvs->array.size() != 1) {
          o.status = Malformed(name_, "txn answer",
                               absl::InvalidArgumentError("kvs is not an array of at most one kv"));
        } else {
          absl::StatusOr<Committed> won = DecodeKv(kvs->array[0], "txn answer");
          if (won.ok()) {
            o.current = *std::move(won);
          } else {
            o.status = won.status();
          }
        }
        if (!o.status.ok()) continue;
        const std::optional<uint64_t> now =
            o.current.has_value() ? std::optional<uint64_t>(o.current->position) : std::nullopt;
        // Its compare held: another op's failed the txn; it goes again.
        o.again = now == batch[i]->expect;
      }
    }
  }
  absl::MutexLock lock(&batch_mu_);
  for (size_t i = batch.size(); i-- > 0;) {
    PendingPut* op = batch[i];
    Outcome& o = outcomes[i];
    if (o.again) {
      queue_.push_front(op);
      continue;
    }
    op->status = std::move(o.status);
    op->committed = o.committed;
    op->revision = o.revision;
    op->current = std::move(o.current);
    op->done = true;
  }
}

absl::StatusOr<std::optional<uint64_t>> EtcdConsensusLog::LearnOutcome(
    const std::string& body, const PendingPut& first, uint64_t token, absl::Time deadline,
    absl::Time until, const absl::Status& lost) {
  auto unknown = [&](absl::string_view why) {
    return absl::DeadlineExceededError(absl::StrCat(
        name_, ": the outcome of the write is unknown: it was sent, its answer was lost (",
        lost.message(), "), and ", why, " within ", absl::FormatDuration(outcome_timeout_),
        " after the timeout; it may have committed (a linearizable read of the key shows "
        "the state that stands)"));
  };
  absl::Status last = lost;
  // Bounded by `until`: each pass either gets an answer or waits for it.
  while (absl::Now() < until) {
    // The identical txn: same compares, same token (see the file comment).
    bool sent = false;
    absl::StatusOr<JsonValue> answer = Call("/v3/kv/txn", body, until, false, &sent);
    if (!answer.ok()) {
      last = answer.status();
      if (!absl::IsUnavailable(last)) {
        return unknown(absl::StrCat("etcd's answer to its resend was not usable: ",
                                    last.message()));
      }
      // Refused before it was sent (nothing listening): etcd is down, not
      // slow, and nothing learns the outcome before it is back; say so at
      // the write's own deadline rather than wait the outcome timeout.
      if (!sent && absl::Now() >= deadline) {
        return unknown(absl::StrCat("etcd could not be reached again (", last.message(), ")"));
      }
      absl::SleepFor(std::min(kOutcomeRetryPause, until - absl::Now()));
      continue;
    }
    const JsonValue* succeeded = answer->Find("succeeded");
    if (succeeded != nullptr && succeeded->type == JsonValue::Type::kBool && succeeded->boolean) {
      const JsonValue* header = answer->Find("header");
      if (header == nullptr) return unknown("etcd's answer to its resend had no header");
      absl::StatusOr<uint64_t> revision = json::JsonUint(*header, "revision", "header");
      if (!revision.ok() || *revision == 0) {
        return unknown("etcd's answer to its resend had no revision");
      }
      return std::optional<uint64_t>(*revision);  // the resend committed it
    }
    // The resend failed, so the original cannot commit from now on: it did
    // iff it is the first write of the first key after the compared state.
    const JsonValue* responses = answer->Find("responses");
    const JsonValue* range = responses != nullptr && responses->type == JsonValue::Type::kArray &&
                                     !responses->array.empty()
                                 ? responses->array[0].Find("response_range")
                                 : nullptr;
    const JsonValue* kvs = range == nullptr ? nullptr : range->Find("kvs");
    if (kvs == nullptr || kvs->type != JsonValue::Type::kArray || kvs->array.size() != 1) {
      // The first key was never written: nothing committed.
      if (kvs == nullptr || (kvs->type == JsonValue::Type::kArray && kvs->array.empty())) {
        return std::optional<uint64_t>();
      }
      return unknown("etcd's answer to its resend did not show the key");
    }
    uint64_t now_token = 0;
    absl::StatusOr<Committed> now = DecodeKv(kvs->array[0], "txn answer", &now_token);
    if (!now.ok()) return now.status();
    if (now_token == token) return std::optional<uint64_t>(now->position);
    if (first.expect.has_value() && now->position == *first.expect) {
      return std::optional<uint64_t>();  // the first key is as compared: not committed
    }
    // Which write came first after the compared state: from the key's
    // creation when the txn expected it absent.
    uint64_t from = 0;
    if (first.expect.has_value()) {
      from = *first.expect + 1;
    } else {
      absl::StatusOr<uint64_t> created =
          json::JsonUint(kvs->array[0], "create_revision", "kv");
      if (!created.ok() || *created == 0) return unknown("the key's creation was not shown");
      from = *created;
    }
    absl::StatusOr<Watched> watched = WatchFrom(from, until, &first.etcd_key);
    if (!watched.ok()) {
      last = watched.status();
      if (!absl::IsUnavailable(last)) {
        return unknown(absl::StrCat("the key's history could not be read: ", last.message()));
      }
      continue;
    }
    if (watched->compacted) return unknown("the key's history was compacted");
    if (watched->events.empty()) continue;  // the deadline came first
    const JsonValue* kv = watched->events[0].Find("kv");
    if (kv == nullptr) return unknown("the key's history had an event without kv");
    uint64_t first_token = 0;
    absl::StatusOr<Committed> next = DecodeKv(*kv, "watch answer", &first_token);
    if (!next.ok()) return next.status();
    if (first_token == token) return std::optional<uint64_t>(next->position);
    return std::optional<uint64_t>();
  }
  return unknown(absl::StrCat("etcd did not answer its resend (", last.message(), ")"));
}

absl::StatusOr<std::optional<Committed>> EtcdConsensusLog::Read(std::string_view keyspace_in,
                                                                std::string_view key_in,
                                                                absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  const std::string_view keyspace = keyspace_in;
  const std::string_view key = key_in;
  PEERKV_RETURN_IF_ERROR(ValidateKeyspace(keyspace));
  PEERKV_RETURN_IF_ERROR(ValidateKey(key));
  return ReadKey(EncodeKey(prefix_, AV(keyspace), AV(key)), deadline, /*serializable=*/false);
}

absl::StatusOr<EtcdConsensusLog::Watched> EtcdConsensusLog::WatchFrom(uint64_t from,
                                                                    absl::Time deadline,
                                                                    const std::string* key) {
  const std::string body =
      key != nullptr
          ? absl::StrCat("{\"create_request\":{\"key\":", B64(*key), ",\"start_revision\":\"",
                         from, "\"}}")
          : absl::StrCat("{\"create_request\":{\"key\":", B64(prefix_),
                         ",\"range_end\":", B64(PrefixEnd(prefix_)), ",\"start_revision\":\"",
                         from, "\"}}");
  std::string pending;
  absl::Status malformed;
  Watched watched;
  absl::Status status = http_.Stream("/v3/watch", body, deadline, [&](absl::string_view data) {
    pending.append(data.data(), data.size());
    if (pending.size() > json::JsonLimits{}.max_bytes) {
      malformed = absl::InvalidArgumentError(
          absl::StrCat("a watch message longer than ", json::JsonLimits{}.max_bytes, " bytes"));
      return false;
    }
    // The gateway sends one JSON object per message, each ending in '\n'.
    for (size_t nl = pending.find('\n'); nl != std::string::npos; nl = pending.find('\n')) {
      const std::string line = pending.substr(0, nl);
      pending.erase(0, nl + 1);
      if (line.find_first_not_of(" \r\t") == std::string::npos) continue;
      absl::StatusOr<JsonValue> message = json::ParseJson(line);
      if (!message.ok()) {
        malformed = message.status();
        return false;
      }
      const JsonValue* result = message->Find("result");
      if (result == nullptr || result->type != JsonValue::Type::kObject) {
        malformed = absl::InvalidArgumentError(absl::StrCat(
            "a watch message without a result: ", absl::CHexEscape(line.substr(0, 200))));
        return false;
      }
      absl::StatusOr<uint64_t> compacted = json::JsonUint(*result, "compact_revision", "result");
      if (!compacted.ok()) {
        malformed = compacted.status();
        return false;
      }
      if (*compacted > 0) {
        watched.compacted = true;
        return false;
      }
      if (const JsonValue* canceled = result->Find("canceled");
          canceled != nullptr && canceled->boolean) {
        std::string reason = "(no reason)";
        if (const JsonValue* r = result->Find("cancel_reason"); r != nullptr) reason = r->text;
        malformed = absl::InvalidArgumentError(
            absl::StrCat("the watch was canceled: ", reason.substr(0, 200)));
        return false;
      }
      const JsonValue* events = result->Find("events");
      if (events == nullptr) continue;  // "created", or a progress notice
      if (events->type != JsonValue::Type::kArray) {
        malformed = absl::InvalidArgumentError("events is not an array");
        return false;
      }
      if (events->array.empty()) continue;
      watched.events = events->array;
      return false;
    }
    return true;
  });
  if (!malformed.ok()) return Malformed(name_, "watch answer", malformed);
  if (!status.ok()) {
    if (absl::IsUnavailable(status)) {
      reached_ = false;
      return absl::UnavailableError(absl::StrCat(name_, " is unreachable: /v3/watch: ",
                                                 status.message()));
    }
    return absl::InternalError(absl::StrCat(name_, " answered garbage to /v3/watch: ",
                                            status.message()));
  }
  reached_ = true;
  return watched;
}

absl::StatusOr<std::vector<Committed>> EtcdConsensusLog::RangeAfter(uint64_t after,
                                                                    size_t max_writes,
                                                                    absl::Time deadline) {
  // Room for the whole last revision (a txn writes at most kMaxTxnOps
  // keys); a page that fills the limit drops its last revision, which may
  // be cut, and the next call starts there.
  const size_t limit = std::min<size_t>(max_writes, 1 << 20) + kMaxTxnOps;
  const std::string body = absl::StrCat(
      "{\"key\":", B64(prefix_), ",\"range_end\":", B64(PrefixEnd(prefix_)),
      ",\"min_mod_revision\":\"", after + 1, "\",\"sort_target\":\"MOD\",",
      "\"sort_order\":\"ASCEND\",\"limit\":\"", limit, "\"}");
  PEERKV_ASSIGN_OR_RETURN(JsonValue answer, Call("/v3/kv/range", body, deadline, true));
  std::vector<Committed> out;
  const JsonValue* kvs = answer.Find("kvs");
  if (kvs == nullptr) return out;
  if (kvs->type != JsonValue::Type::kArray) {
    return Malformed(name_, "range answer", absl::InvalidArgumentError("kvs is not an array"));
  }
  for (const JsonValue& kv : kvs->array) {
    PEERKV_ASSIGN_OR_RETURN(Committed c, DecodeKv(kv, "range answer"));
    PEERKV_RETURN_IF_ERROR(CheckOrder(out, after, c.position, "range answer"));
    Remember(EncodeKey(prefix_, c.record.keyspace, c.record.key), c);
    out.push_back(std::move(c));
  }
  if (kvs->array.size() >= limit) {
    const uint64_t last = out.back().position;
    while (!out.empty() && out.back().position == last) out.pop_back();
    if (out.empty()) {
      return absl::InternalError(absl::StrCat(name_, ": revision ", last, " wrote more than ",
                                              limit, " keys under the prefix; peerkv's txns write at most ",
                                              kMaxTxnOps));
    }
  }
  if (out.size() > max_writes) {
    // Cut at the last revision boundary within max_writes, or after the
    // first revision when it alone is larger.
    size_t cut = max_writes;
    while (cut > 0 && out[cut].position == out[cut - 1].position) --cut;
    if (cut == 0) {
      cut = 1;
      while (cut < out.size() && out[cut].position == out[0].position) ++cut;
    }
    out.resize(cut);
  }
  return out;
}

absl::Status EtcdConsensusLog::CheckOrder(const std::vector<Committed>& out, uint64_t after,
                                          uint64_t position, absl::string_view what) const {
  // Writes committed by one txn share its revision.
  if (position <= after || (!out.empty() && position < out.back().position)) {
    return Malformed(name_, what,
                     absl::InvalidArgumentError(absl::StrCat(
                         "mod_revision ", position, " out of order after ",
                         out.empty() ? after : out.back().position)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Committed>> EtcdConsensusLog::ReadAfter(uint64_t after,
                                                                   size_t max_writes,
                                                                   absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  std::vector<Committed> out;
  if (max_writes == 0) return out;
  PEERKV_RETURN_IF_ERROR(LearnLogIdentity(deadline));
  // A watch from the next revision: etcd reads its history from there (the
  // cost grows with what is new, not with the number of keys), sends what
  // is there (up to 1,000 revisions a message), or waits for the next write.
  PEERKV_ASSIGN_OR_RETURN(Watched watched, WatchFrom(after + 1, deadline));
  // Compacted past `after`: the history is gone, but every register's last
  // write is still there, and a range by mod_revision finds those.
  if (watched.compacted) return RangeAfter(after, max_writes, deadline);
  for (const JsonValue& event : watched.events) {
    if (const JsonValue* type = event.Find("type"); type != nullptr && type->text != "PUT") {
      const JsonValue* kv = event.Find("kv");
      absl::StatusOr<std::string> key =
          kv == nullptr ? absl::StatusOr<std::string>("?") : json::JsonBytes(*kv, "key", "kv");
      return absl::DataLossError(absl::StrCat(
          name_, ": etcd key '", absl::CHexEscape(key.ok() ? key->substr(0, 200) : "?"),
          "' was deleted (", type->text.substr(0, 20),
          "); peerkv never deletes its etcd keys, so something else writes under its prefix"));
    }
    const JsonValue* kv = event.Find("kv");
    if (kv == nullptr) {
      return Malformed(name_, "watch answer", absl::InvalidArgumentError("an event without kv"));
    }
    PEERKV_ASSIGN_OR_RETURN(Committed c, DecodeKv(*kv, "watch answer"));
    PEERKV_RETURN_IF_ERROR(CheckOrder(out, after, c.position, "watch answer"));
    // Never part of a revision: the caller goes on after the last one.
    if (out.size() >= max_writes && c.position != out.back().position) break;
    Remember(EncodeKey(prefix_, c.record.keyspace, c.record.key), c);
    out.push_back(std::move(c));
  }
  // Registers need only the latest: drop a write whose key is written again
  // later in the batch (the last position stays, so the caller goes on
  // from the same place).
  std::set<std::pair<std::string, std::string>> later;
  std::vector<Committed> latest;
  for (auto it = out.rbegin(); it != out.rend(); ++it) {
    if (later.insert({it->record.keyspace, it->record.key}).second) latest.push_back(*it);
  }
  std::reverse(latest.begin(), latest.end());
  return latest;
}

absl::Status EtcdConsensusLog::LearnLogIdentity(absl::Time deadline) {
  {
    absl::MutexLock lock(&identity_mu_);
    if (reached_ && absl::Now() - identity_read_at_ < identity_recheck_) return absl::OkStatus();
  }
  const std::string marker = absl::StrCat(absl::string_view("\0", 1), "peerkv-log-id:", prefix_);
  std::random_device entropy;
  const std::string mine =
      absl::StrFormat("%08x%08x%08x%08x", entropy(), entropy(), entropy(), entropy());
  // Create it if absent; either way the answer holds the value that stands.
  const std::string body = absl::StrCat(
      "{\"compare\":[{\"target\":\"CREATE\",\"key\":", B64(marker),
      ",\"create_revision\":\"0\"}],\"success\":[{\"request_put\":{\"key\":", B64(marker),
      ",\"value\":", B64(mine), "}}],\"failure\":[{\"request_range\":{\"key\":", B64(marker),
      "}}]}");
  PEERKV_ASSIGN_OR_RETURN(JsonValue answer, Call("/v3/kv/txn", body, deadline, true));
  std::string identity = mine;
  const JsonValue* succeeded = answer.Find("succeeded");
  if (succeeded == nullptr || !succeeded->boolean) {
    const JsonValue* responses = answer.Find("responses");
    const JsonValue* kvs = nullptr;
    if (responses != nullptr && responses->type == JsonValue::Type::kArray &&
        responses->array.size() == 1) {
      if (const JsonValue* range = responses->array[0].Find("response_range")) {
        kvs = range->Find("kvs");
      }
    }
    if (kvs == nullptr || kvs->type != JsonValue::Type::kArray || kvs->array.size() != 1) {
      return Malformed(name_, "log identity answer",
                       absl::InvalidArgumentError("no marker key in a failed create"));
    }
    absl::StatusOr<std::string> value = json::JsonBytes(kvs->array[0], "value", "kv");
    if (!value.ok()) return Malformed(name_, "log identity answer", value.status());
    if (value->empty() || value->size() > 64) {
      return Malformed(name_, "log identity answer",
                       absl::InvalidArgumentError("the marker key's value is not 1..64 bytes"));
    }
    identity = *value;
  }
  absl::MutexLock lock(&identity_mu_);
  log_identity_ = identity;
  identity_read_at_ = absl::Now();
  return absl::OkStatus();
}

std::string EtcdConsensusLog::LogIdentity() const {
  absl::MutexLock lock(&identity_mu_);
  return log_identity_.empty() ? "" : "etcd log " + log_identity_;
}

}  // namespace peerkv::consensus
