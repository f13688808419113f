// consensus/consensus_log.h: the consensus hook. A keyspace in strong mode
// routes its writes through a ConsensusLog instead of stamping them locally:
// the log orders proposals per key, checks their preconditions against the
// last committed write, and assigns each committed write its Version, so
// every replica that applies the committed record (from the log, or later by
// gossip) holds the same register. Backends: an in-memory fake for tests and
// the simulation (fake_consensus_log.h) and etcd's v3 API (etcd/). No kj or
// capnp here: callers block on a worker thread, never on an event loop.
//
// Signed strong records (README "Strong keyspaces", "Signed records"): the
// commit assigns the version, but the backend decides it on the proposing
// side (above the proposal's min_hlc and the key's last commit, which the
// proposal is conditioned on) before it sends the write, so it asks the
// proposal's `sign` for the signature of exactly the record it is about to
// commit, and that signature travels in the log entry: every replica
// applies (and gossips) the record as signed by the proposing device.
#ifndef PEERKV_CONSENSUS_CONSENSUS_LOG_H_
#define PEERKV_CONSENSUS_CONSENSUS_LOG_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "store/validation.h"
#include "store/version.h"

namespace peerkv::consensus {

// What must hold of the key's last committed write for a proposal to commit.
struct Precondition {
  enum class Kind {
    kNone,       // unconditional (still ordered after every earlier commit)
    kIfAbsent,   // no committed write, or the last one is a tombstone
    kIfVersion,  // the last committed write has exactly `version`
  };
  Kind kind = Kind::kNone;
  Version version;  // for kIfVersion
};

// A write proposed for a strong keyspace.
struct Proposal {
  std::string keyspace;
  std::string key;
  std::optional<std::string> value;  // nullopt: delete (a tombstone)
  Precondition precondition;
  // Becomes the committed version's origin (the proposing replica's id).
  uint64_t origin = 0;
  // The proposer's clock reading. The committed version's hlc is greater than
  // both this and the hlc of the key's previous committed write, so versions
  // grow in commit order and LWW merge keeps the last commit.
  uint64_t min_hlc = 0;
  // Signs the record the backend is about to commit (its version is the one
  // the commit assigns; record.signature empty): called before each attempt
  // is sent, once more after a lost race. Returns the Record::signature the
  // log entry carries (empty: unsigned), or an error that refuses the
  // proposal with nothing written (Propose returns it). Empty function: the
  // committed record is unsigned. Must not call into the log.
  std::function<absl::StatusOr<std::string>(const Record& record)> sign;
};

// A committed write. `record.version` is the version the commit assigned,
// `record.signature` what the proposal's `sign` gave for it (empty: none);
// `record.seq` is unused (0).
struct Committed {
  // The commit's position in the log: non-decreasing across all keys, in
  // commit order. Writes committed together (one etcd txn) share one, and
  // ReadAfter returns all of them or none.
  uint64_t position = 0;
  Record record;
};

// Whether `pre` holds of a key whose last committed write is `current`
// (nullopt: none): every backend decides a proposal by this.
inline bool PreconditionHolds(const Precondition& pre,
                              const std::optional<Committed>& current) {
  switch (pre.kind) {
    case Precondition::Kind::kNone:
      return true;
    case Precondition::Kind::kIfAbsent:
      return !current.has_value() || current->record.deleted;
    case Precondition::Kind::kIfVersion:
      return current.has_value() && current->record.version == pre.version;
  }
  return false;
}

// The record `proposal` commits as if the commit assigns it `version`,
// signed by the proposal's `sign` (every backend builds it so). The
// signature's error if `sign` refused; InvalidArgument naming the limit
// if the signature exceeds kMaxSignatureBytes.
inline absl::StatusOr<Record> CommitRecord(const Proposal& proposal, const Version& version) {
  Record record;
  record.keyspace = proposal.keyspace;
  record.key = proposal.key;
  record.version = version;
  record.deleted = !proposal.value.has_value();
  if (proposal.value.has_value()) record.value = *proposal.value;
  if (!proposal.sign) return record;
  absl::StatusOr<std::string> signature = proposal.sign(record);
  if (!signature.ok()) return signature.status();
  if (absl::Status size = ValidateSignatureSize(*signature); !size.ok()) return size;
  record.signature = *std::move(signature);
  return record;
}

// The outcome of Propose when the service answered.
struct ProposeResult {
  // True: the write committed as `committed`. False: the precondition did not
  // hold; `current` is the key's last committed write (nullopt: none).
  bool applied = false;
  Committed committed;
  std::optional<Committed> current;
};

// Thread-safe. Every call is bounded by its `timeout`.
class ConsensusLog {
 public:
  virtual ~ConsensusLog() = default;

  // Proposes a write and waits until it commits or its precondition fails.
  // Unavailable (naming the service): the write did not commit and will
  // not (the service could not be reached within `timeout`, or refused it
  // before deciding), so it is safe to propose again. A write that reached
  // the service but whose answer did not come may have committed: the
  // backend then learns its outcome (bounded; etcd: the outcome timeout)
  // and answers as if the answer had come, and only if it cannot is the
  // result DeadlineExceeded: the outcome is unknown (Read and ReadAfter
  // show the state that stands). InvalidArgument for a malformed proposal.
  virtual absl::StatusOr<ProposeResult> Propose(const Proposal& proposal,
                                                absl::Duration timeout) = 0;

  // A linearizable read of the key's last committed write (nullopt: none).
  virtual absl::StatusOr<std::optional<Committed>> Read(
      std::string_view keyspace, std::string_view key,
      absl::Duration timeout) = 0;

  // Committed writes with position > `after`, in position order, at most
  // `max_writes` (or more, to end with the whole of the last position). A
  // key written several times since `after` may appear only with its last
  // write (registers need only the latest). Waits up to
  // `timeout` for at least one; an empty result means none came.
  virtual absl::StatusOr<std::vector<Committed>> ReadAfter(
      uint64_t after, size_t max_writes, absl::Duration timeout) = 0;

  // Whether the last call reached the service (true before any call).
  virtual bool Reachable() const = 0;

  // Names the service in errors, logs and status: "etcd at http://...".
  virtual std::string Describe() const = 0;

  // Which log this is, once a call has reached the service: one value for
  // as long as the service keeps its history (etcd: its cluster id), empty
  // while unknown. A different value means the service was recreated and
  // its positions started over, so a saved position means nothing there.
  virtual std::string LogIdentity() const = 0;
};

}  // namespace peerkv::consensus

#endif  // PEERKV_CONSENSUS_CONSENSUS_LOG_H_
