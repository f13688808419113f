// consensus/etcd/etcd_consensus_log.h: the ConsensusLog backed by a real
// etcd (v3 API, tested with etcd 3.4 from Debian's etcd-server).
//
// Client path: etcd's v3 JSON gateway (POST /v3/kv/range, /v3/kv/txn,
// /v3/watch; bytes as base64, int64 as strings) over HTTP/1.1, through a
// small blocking client on POSIX sockets (http_client.h) and a strict JSON
// reader (json.h). Why not gRPC: Debian's libgrpc++-dev would need protoc
// and grpc_cpp_plugin code generation wired into the offline Bazel 4 build
// plus etcd's .proto files vendored, for four RPCs. Why not kj-http: the
// interface is blocking (callers sit on worker threads) and STYLE.md keeps
// kj/capnp inside rpc/, which would drag the backend there. The gateway is
// part of every etcd 3.4+ server, so the path needs nothing but sockets.
//
// Layout: one etcd key per register, "<prefix><len(keyspace)>/<keyspace>/<key>"
// (binary-safe: the keyspace length frames the keyspace). The etcd value is
// the committed record: a format byte (2 unsigned, 3 signed), hlc and
// origin (8 bytes each, big-endian), a flags byte (bit 0: tombstone), the
// token of the txn that put it (8 bytes, see below), for format 3 the
// record's signature (2-byte length first), the value. Format 1 (no token,
// unsigned, from before) still reads. Deletes are
// stored as tombstone records, so the key's mod_revision is the position of
// its last commit and etcd keys are never removed.
//
// Propose takes the key's last state this object saw (if none: "absent",
// or for kIfVersion a serializable range: local, no ReadIndex wait), checks the precondition, assigns hlc =
// max(min_hlc, current hlc) + 1 with the proposal's origin, and commits with
// a txn that compares the key's mod_revision (create_revision == 0 when
// absent): a stale guess cannot commit. Concurrent proposals share txns
// (group commit, see CommitPut): while kMaxInflightTxns txns are at etcd,
// new compare-and-puts queue, and the next txn carries all of them (up to
// kMaxTxnOps, distinct keys): one HTTP request, one raft entry, one fsync
// for the lot. They then share one revision, so positions are
// non-decreasing rather than strictly increasing. A txn whose compares do
// not all hold commits nothing; its failure branch (a range per key) says
// which did not, those proposals see the winner's state as below, and the
// others go again in the next txn. A lost race re-checks against the
// txn's failure answer (linearizable), at most kMaxRaceRetries times (then
// Aborted); a precondition that fails on a guess is confirmed with a
// linearizable range first. position = the txn's header revision. So a
// write costs one txn when the guess is right, as a direct put does.
// Read is a linearizable range. ReadAfter watches the prefix from the next
// revision: etcd answers with the history since (its cost grows with what
// is new, not with the number of keys) or waits for the next write; if the
// revision is compacted away, it ranges over the prefix by mod_revision
// instead (only the latest write of each key, as the interface allows, so
// compaction never hides a register). etcd delivers history to a watch
// that starts in the past from a loop that runs every 100 ms: a follower
// that is behind learns new commits up to ~100 ms late, in batches.
// LogIdentity is the value of one more key outside the prefix, a marker
// created with a random value when absent (see LearnLogIdentity).
//
// A txn whose answer is lost (sent, then the connection failed, the
// deadline passed, or etcd said its request timed out) may have committed.
// Propose never reports such a write as failed: every proposal txn carries
// a random 64-bit token in each value it puts, and the log learns the
// outcome by sending the identical txn again (same compares, same token)
// until etcd answers, for up to EtcdOptions::outcome_timeout (while etcd
// refuses connections, down rather than slow, only until the write's own
// timeout). The resend
// is idempotent: both compare the same mod_revisions, so at most one of
// the two commits, and once either is answered the other can no longer
// commit later. Resend committed: committed. Resend failed: the original
// committed iff the first write of its first key after the compared
// revision (a watch on that key from there) carries the token. Learned:
// answered as if the answer had come (committed, or Unavailable: not
// committed, will not). Not learned in time: DeadlineExceeded, the outcome
// unknown. A txn that never reached etcd is Unavailable at once.
#ifndef PEERKV_CONSENSUS_ETCD_ETCD_CONSENSUS_LOG_H_
#define PEERKV_CONSENSUS_ETCD_ETCD_CONSENSUS_LOG_H_

#include <atomic>
#include <deque>
#include <functional>
#include <optional>
#include <memory>
#include <string>
#include <unordered_map>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "consensus/consensus_log.h"
#include "consensus/etcd/http_client.h"
#include "common/json.h"

namespace peerkv::consensus {

struct EtcdOptions {
  // "http://HOST:PORT" of one etcd member's client URL.
  std::string url;
  // Prefix of every etcd key this log uses: 1..64 bytes.
  std::string prefix = "peerkv/";
  // How long ReadAfter trusts the log identity it read (LogIdentity) before
  // reading the marker again; also re-read after the service was
  // unreachable. Zero: every ReadAfter (tests).
  absl::Duration identity_recheck = absl::Seconds(1);
  // How long Propose goes on, after its own timeout, learning the outcome
  // of a txn that was sent but whose answer did not come (see the file
  // comment: "A txn whose answer is lost"). Past it: DeadlineExceeded.
  absl::Duration outcome_timeout = absl::Seconds(10);
  // Fault injection for tests; empty in production. Called when a proposal
  // txn's answer arrived; true makes the log act as if the connection had
  // been lost just before it (the txn did commit or fail at etcd).
  std::function<bool()> lose_txn_answer;
};

// Values above this are refused (InvalidArgument): etcd refuses requests
// over its --max-request-bytes (1.5 MiB by default) and base64 adds a third.
inline constexpr size_t kMaxEtcdValueBytes = 1 << 20;
// Lost compare-and-put races Propose retries before Aborted.
inline constexpr int kMaxRaceRetries = 64;
// Keys whose last seen state the log remembers (cleared when full).
inline constexpr size_t kMaxCachedKeys = 100000;
// Compare-and-puts one txn carries at most (etcd's --max-txn-ops is 128 by
// default), and the request bytes they may add up to (etcd refuses
// requests over its --max-request-bytes, 1.5 MiB by default; a single
// larger proposal goes alone).
inline constexpr size_t kMaxTxnOps = 64;
inline constexpr size_t kMaxTxnBytes = 512 << 10;
// Proposal txns one log object keeps at etcd at once; further proposals
// wait for one to return and then go together in the next.
inline constexpr int kMaxInflightTxns = 2;

class EtcdConsensusLog : public ConsensusLog {
 public:
  // Validates the options (InvalidArgument naming the URL or the prefix);
  // does not contact etcd.
  static absl::StatusOr<std::unique_ptr<EtcdConsensusLog>> Create(
      const EtcdOptions& options);

  absl::StatusOr<ProposeResult> Propose(const Proposal& proposal,
                                        absl::Duration timeout) override;
  absl::StatusOr<std::optional<Committed>> Read(
      std::string_view keyspace, std::string_view key,
      absl::Duration timeout) override;
  absl::StatusOr<std::vector<Committed>> ReadAfter(
      uint64_t after, size_t max_writes, absl::Duration timeout) override;
  bool Reachable() const override;
  std::string Describe() const override;
  // The random value of this log's marker key, created by the first
  // replica that follows it (see LearnLogIdentity).
  std::string LogIdentity() const override;

 private:
  EtcdConsensusLog(etcd::HttpUrl url, std::string prefix, const EtcdOptions& options);

  // POSTs a v3 request and parses the JSON answer. Transport failures and
  // etcd's own "unavailable" answers: Unavailable naming the service.
  // `maybe_applied` (optional): set when the failure may have come after
  // etcd applied the request (it was sent and no answer came, or etcd said
  // its request timed out); false when etcd cannot have applied it.
  absl::StatusOr<json::JsonValue> Call(absl::string_view path, const std::string& body,
                                       absl::Time deadline, bool idempotent,
                                       bool* maybe_applied = nullptr);
  // A read of one etcd key (linearizable unless `serializable`): its
  // committed record, nullopt if absent. Remembered.
  absl::StatusOr<std::optional<Committed>> ReadKey(const std::string& etcd_key,
                                                   absl::Time deadline, bool serializable);
  // The cache of each key's last state seen (a guess for the next txn's
  // compare, never an answer by itself): Remember keeps the newer state,
  // Recall gives nullopt for a key not seen.
  void Remember(const std::string& etcd_key, const std::optional<Committed>& state);
  std::optional<std::optional<Committed>> Recall(const std::string& etcd_key);
  // What a watch from a revision gave: the events of its first message that
  // had any (none when the deadline came first), or that the revision was
  // compacted.
  struct Watched {
    bool compacted = false;
    std::vector<json::JsonValue> events;
  };
  // The whole prefix, or with `key` that etcd key alone.
  absl::StatusOr<Watched> WatchFrom(uint64_t from, absl::Time deadline,
                                    const std::string* key = nullptr);
  // The last write of every key written after `after`, by mod_revision: a
  // range over the prefix (reads every key; for after a compaction).
  absl::StatusOr<std::vector<Committed>> RangeAfter(uint64_t after, size_t max_writes,
                                                    absl::Time deadline);
  // Internal unless `position` follows `after` and the last of `out`.
  absl::Status CheckOrder(const std::vector<Committed>& out, uint64_t after, uint64_t position,
                          absl::string_view what) const;
  // Reads this log's marker key, "\0peerkv-log-id:<prefix>" (outside the
  // watched prefix), creating it with a random value if absent: an etcd
  // recreated from nothing lacks it, so its identity differs. (etcd's
  // cluster id would not do: a cluster recreated with the same names and
  // URLs gets the same one.) Re-read at most once a second by ReadAfter,
  // and after the service was unreachable.
  absl::Status LearnLogIdentity(absl::Time deadline);
  // One compare-and-put waiting for (or in) a proposal txn.
  struct PendingPut {
    std::string etcd_key;
    // The mod_revision the txn compares (nullopt: create_revision == 0).
    std::optional<uint64_t> expect;
    std::string compare;  // JSON of the compare
    Record record;        // the record it puts (signed or not)
    absl::Time deadline;
    // Set when done: the txn's status; committed at `revision`, or not,
    // and then `current` is the key's state in the failed txn.
    bool done = false;
    absl::Status status;
    bool committed = false;
    uint64_t revision = 0;
    std::optional<Committed> current;
  };
  // Commits `op` in a txn shared with the other proposals waiting (see the
  // file comment); returns when `op` is done (op->status and the rest).
  void CommitPut(PendingPut* op);
  // Sends one txn of `batch` and marks done each op it decided; ops whose
  // compare held in a txn that failed go back to the queue's front.
  void RunTxn(std::vector<PendingPut*>& batch);
  // The outcome of the txn `body` (token `token`, first op `first`) whose
  // answer was lost (`lost` says how), learned by `until` (see the file
  // comment): the revision it committed at, or nullopt if it did not
  // commit (and never will). DeadlineExceeded if not learned in time.
  // While etcd refuses connections (down, not slow) it tries only until
  // the write's own `deadline`.
  absl::StatusOr<std::optional<uint64_t>> LearnOutcome(const std::string& body,
                                                       const PendingPut& first, uint64_t token,
                                                       absl::Time deadline, absl::Time until,
                                                       const absl::Status& lost);
  // A kv from an answer (`what` names where it came from) as a commit;
  // `token` (optional) gets the proposal txn's token (0: a value without).
  absl::StatusOr<Committed> DecodeKv(const json::JsonValue& kv, absl::string_view what,
                                     uint64_t* token = nullptr) const;

  const std::string prefix_;
  const absl::Duration identity_recheck_;
  const absl::Duration outcome_timeout_;
  const std::function<bool()> lose_txn_answer_;
  const std::string name_;
  etcd::HttpClient http_;
  std::atomic<bool> reached_{true};
  mutable absl::Mutex identity_mu_;
  std::string log_identity_ ABSL_GUARDED_BY(identity_mu_);
  absl::Time identity_read_at_ ABSL_GUARDED_BY(identity_mu_) = absl::InfinitePast();
  absl::Mutex batch_mu_;
  std::deque<PendingPut*> queue_ ABSL_GUARDED_BY(batch_mu_);
  int inflight_ ABSL_GUARDED_BY(batch_mu_) = 0;
  // Proposal txn tokens: a random base and a count, so tokens differ
  // between log objects (with odds 2^-64) and within one.
  const uint64_t token_base_;
  std::atomic<uint64_t> tokens_{0};
  absl::Mutex cache_mu_;
  std::unordered_map<std::string, std::optional<Committed>> cache_ ABSL_GUARDED_BY(cache_mu_);
};

}  // namespace peerkv::consensus

#endif  // PEERKV_CONSENSUS_ETCD_ETCD_CONSENSUS_LOG_H_
