// consensus/fake_consensus_log.h: an in-memory ConsensusLog for tests and the
// simulation. It commits proposals in call order, checks preconditions like
// a real backend, and can be made unreachable to test the paths that must
// refuse strong writes. Deterministic: positions count from 1.
//
// Faults for the simulation run on the caller's clock, never on wall time:
// AdvanceTo(t) moves the fake's time; unavailability windows [from, until)
// make every call fail at once while t is inside one; with a commit delay,
// a proposal stays "in flight" (invisible, Propose says DeadlineExceeded at
// once, the outcome unknown, as a lost answer would) until AdvanceTo reaches its due time, and is
// then checked and committed, or DropInFlight() loses it.
#ifndef PEERKV_CONSENSUS_FAKE_CONSENSUS_LOG_H_
#define PEERKV_CONSENSUS_FAKE_CONSENSUS_LOG_H_

#include <deque>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "consensus/consensus_log.h"

namespace peerkv::consensus {

class FakeConsensusLog : public ConsensusLog {
 public:
  explicit FakeConsensusLog(std::string name = "fake consensus log");

  absl::StatusOr<ProposeResult> Propose(const Proposal& proposal,
                                        absl::Duration timeout) override;
  absl::StatusOr<std::optional<Committed>> Read(
      std::string_view keyspace, std::string_view key,
      absl::Duration timeout) override;
  absl::StatusOr<std::vector<Committed>> ReadAfter(
      uint64_t after, size_t max_writes, absl::Duration timeout) override;
  bool Reachable() const override;
  std::string Describe() const override;
  std::string LogIdentity() const override;

  // While false every call fails with Unavailable at once (no waiting).
  void SetAvailable(bool available);

  // Every write committed so far, in position order (for checks in tests).
  std::vector<Committed> History() const;

  // --- Faults for the simulation (added; the calls above are unchanged) ---

  // Moves the fake's time to `now` (any unit the caller likes; an earlier
  // time is ignored). Applies every in-flight proposal due by then, oldest
  // first, each checked against the log at that moment; returns their
  // outcomes in that order.
  std::vector<ProposeResult> AdvanceTo(uint64_t now);
  uint64_t Now() const;
  // Every call fails with Unavailable while Now() is in [from, until).
  void AddUnavailableWindow(uint64_t from, uint64_t until);
  // Proposals made from now on are due `delay` after Now() (0, the default:
  // they commit inside Propose). A delayed proposal is in flight: Propose
  // returns DeadlineExceeded at once ("commit in flight", outcome unknown), and the write commits
  // later (or never, see DropInFlight); ReadAfter shows which.
  void SetCommitDelay(uint64_t delay);
  // Proposals in flight.
  size_t InFlight() const;
  // Applies the oldest in-flight proposal now, whatever its due time;
  // nullopt if none is in flight. An in-flight proposal whose signer
  // (Proposal::sign) refuses it when it comes due never commits (AdvanceTo
  // and this skip it).
  std::optional<ProposeResult> CommitNextInFlight();
  // Forgets every in-flight proposal (they never commit); returns how many.
  size_t DropInFlight();
  // The service recreated from nothing (a new etcd cluster at the same
  // address): history and in-flight proposals are gone, positions count
  // from 1 again, and LogIdentity changes.
  void Recreate();

 private:
  struct InFlightProposal {
    uint64_t due = 0;
    Proposal proposal;
  };

  // Whether calls succeed now: SetAvailable and the windows.
  bool AvailableLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Checks the precondition and commits (or not) at once; the signer's
  // error (Proposal::sign) if it refused, with nothing committed.
  absl::StatusOr<ProposeResult> ApplyLocked(const Proposal& proposal) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string name_;
  mutable absl::Mutex mu_;
  bool available_ ABSL_GUARDED_BY(mu_) = true;
  uint64_t now_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::pair<uint64_t, uint64_t>> windows_ ABSL_GUARDED_BY(mu_);
  uint64_t commit_delay_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<InFlightProposal> in_flight_ ABSL_GUARDED_BY(mu_);
  bool reached_ ABSL_GUARDED_BY(mu_) = true;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 1;
  std::vector<Committed> log_ ABSL_GUARDED_BY(mu_);
  // (keyspace, key) -> index in log_ of its last committed write.
  std::map<std::pair<std::string, std::string>, size_t> last_ ABSL_GUARDED_BY(
      mu_);
};

}  // namespace peerkv::consensus

#endif  // PEERKV_CONSENSUS_FAKE_CONSENSUS_LOG_H_
