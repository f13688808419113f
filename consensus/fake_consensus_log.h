// consensus/fake_consensus_log.h: an in-memory ConsensusLog for tests and the
// simulation. It commits proposals in call order, checks preconditions like
// a real backend, and can be made unreachable to test the paths that must
// refuse strong writes. Deterministic: positions count from 1.
#ifndef PEERKV_CONSENSUS_FAKE_CONSENSUS_LOG_H_
#define PEERKV_CONSENSUS_FAKE_CONSENSUS_LOG_H_

#include <map>
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

  // While false every call fails with Unavailable at once (no waiting).
  void SetAvailable(bool available);

  // Every write committed so far, in position order (for checks in tests).
  std::vector<Committed> History() const;

 private:
  const std::string name_;
  mutable absl::Mutex mu_;
  bool available_ ABSL_GUARDED_BY(mu_) = true;
  bool reached_ ABSL_GUARDED_BY(mu_) = true;
  std::vector<Committed> log_ ABSL_GUARDED_BY(mu_);
  // (keyspace, key) -> index in log_ of its last committed write.
  std::map<std::pair<std::string, std::string>, size_t> last_ ABSL_GUARDED_BY(
      mu_);
};

}  // namespace peerkv::consensus

#endif  // PEERKV_CONSENSUS_FAKE_CONSENSUS_LOG_H_
