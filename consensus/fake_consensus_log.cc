// consensus/fake_consensus_log.cc: the in-memory ConsensusLog.
#include "consensus/fake_consensus_log.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace peerkv::consensus {

FakeConsensusLog::FakeConsensusLog(std::string name) : name_(std::move(name)) {}

absl::StatusOr<ProposeResult> FakeConsensusLog::Propose(
    const Proposal& proposal, absl::Duration /*timeout*/) {
  if (proposal.keyspace.empty() || proposal.key.empty()) {
    return absl::InvalidArgumentError(
        "consensus proposal: keyspace and key must not be empty");
  }
  if (proposal.origin == 0) {
    return absl::InvalidArgumentError(
        "consensus proposal: origin (the proposing replica id) must not be 0");
  }
  absl::MutexLock lock(&mu_);
  reached_ = AvailableLocked();
  if (!reached_) {
    return absl::UnavailableError(absl::StrCat(name_, " is unreachable"));
  }
  if (commit_delay_ > 0) {
    in_flight_.push_back({now_ + commit_delay_, proposal});
    return absl::DeadlineExceededError(absl::StrCat(
        name_, ": commit in flight, not confirmed in time (outcome unknown: it may still commit)"));
  }
  return ApplyLocked(proposal);
}

bool FakeConsensusLog::AvailableLocked() const {
  if (!available_) return false;
  for (const auto& [from, until] : windows_) {
    if (now_ >= from && now_ < until) return false;
  }
  return true;
}

absl::StatusOr<ProposeResult> FakeConsensusLog::ApplyLocked(const Proposal& proposal) {
  ProposeResult result;
  auto it = last_.find({proposal.keyspace, proposal.key});
  std::optional<Committed> current;
  if (it != last_.end()) current = log_[it->second];
  const bool holds = PreconditionHolds(proposal.precondition, current);
  if (!holds) {
    result.applied = false;
    result.current = std::move(current);
    return result;
  }
  uint64_t hlc = proposal.min_hlc;
  if (current.has_value()) hlc = std::max(hlc, current->record.version.hlc);
  absl::StatusOr<Record> record = CommitRecord(proposal, Version{hlc + 1, proposal.origin});
  if (!record.ok()) return record.status();
  Committed committed;
  committed.position = log_.size() + 1;
  committed.record = *std::move(record);
  last_[{proposal.keyspace, proposal.key}] = log_.size();
  log_.push_back(committed);
  result.applied = true;
  result.committed = std::move(committed);
  return result;
}

absl::StatusOr<std::optional<Committed>> FakeConsensusLog::Read(
    std::string_view keyspace, std::string_view key,
    absl::Duration /*timeout*/) {
  absl::MutexLock lock(&mu_);
  reached_ = AvailableLocked();
  if (!reached_) {
    return absl::UnavailableError(absl::StrCat(name_, " is unreachable"));
  }
  auto it = last_.find({std::string(keyspace), std::string(key)});
  if (it == last_.end()) return std::optional<Committed>();
  return std::optional<Committed>(log_[it->second]);
}

absl::StatusOr<std::vector<Committed>> FakeConsensusLog::ReadAfter(
    uint64_t after, size_t max_writes, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto ready = [this, after]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !AvailableLocked() || log_.size() > after;
  };
  mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  reached_ = AvailableLocked();
  if (!reached_) {
    return absl::UnavailableError(absl::StrCat(name_, " is unreachable"));
  }
  std::vector<Committed> out;
  for (size_t i = after; i < log_.size() && out.size() < max_writes; ++i) {
    out.push_back(log_[i]);
  }
  return out;
}

bool FakeConsensusLog::Reachable() const {
  absl::MutexLock lock(&mu_);
  return reached_;
}

std::string FakeConsensusLog::Describe() const { return name_; }

std::string FakeConsensusLog::LogIdentity() const {
  absl::MutexLock lock(&mu_);
  return absl::StrCat("fake log ", generation_);
}

void FakeConsensusLog::Recreate() {
  absl::MutexLock lock(&mu_);
  ++generation_;
  log_.clear();
  last_.clear();
  in_flight_.clear();
}

void FakeConsensusLog::SetAvailable(bool available) {
  absl::MutexLock lock(&mu_);
  available_ = available;
}

std::vector<Committed> FakeConsensusLog::History() const {
  absl::MutexLock lock(&mu_);
  return log_;
}

std::vector<ProposeResult> FakeConsensusLog::AdvanceTo(uint64_t now) {
  absl::MutexLock lock(&mu_);
  now_ = std::max(now_, now);
  std::vector<ProposeResult> applied;
  // Due times grow with the order of proposals only while the delay stays
  // the same: apply every due one, keeping the order they were made in.
  for (auto it = in_flight_.begin(); it != in_flight_.end();) {
    if (it->due <= now_) {
      // A proposal its signer refused never commits.
      absl::StatusOr<ProposeResult> result = ApplyLocked(it->proposal);
      if (result.ok()) applied.push_back(*std::move(result));
      it = in_flight_.erase(it);
    } else {
      ++it;
    }
  }
  return applied;
}

uint64_t FakeConsensusLog::Now() const {
  absl::MutexLock lock(&mu_);
  return now_;
}

void FakeConsensusLog::AddUnavailableWindow(uint64_t from, uint64_t until) {
  absl::MutexLock lock(&mu_);
  if (from < until) windows_.emplace_back(from, until);
}

void FakeConsensusLog::SetCommitDelay(uint64_t delay) {
  absl::MutexLock lock(&mu_);
  commit_delay_ = delay;
}

size_t FakeConsensusLog::InFlight() const {
  absl::MutexLock lock(&mu_);
  return in_flight_.size();
}

std::optional<ProposeResult> FakeConsensusLog::CommitNextInFlight() {
  absl::MutexLock lock(&mu_);
  while (!in_flight_.empty()) {
    absl::StatusOr<ProposeResult> result = ApplyLocked(in_flight_.front().proposal);
    in_flight_.pop_front();
    // A proposal its signer refused never commits: the next one does.
    if (result.ok()) return *std::move(result);
  }
  return std::nullopt;
}

size_t FakeConsensusLog::DropInFlight() {
  absl::MutexLock lock(&mu_);
  const size_t n = in_flight_.size();
  in_flight_.clear();
  return n;
}

}  // namespace peerkv::consensus
