// replication/replicator.cc: the anti-entropy engine: links, dialling with
// backoff, gossip rounds, pulls with checkpoints, nudges, refused-record
// accounting and the status snapshot.
#include "replication/replicator.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/macros.h"
#include "replication/restore_guard.h"
#include "replication/serve.h"

namespace peerkv::replication {
namespace {

// Longest error text kept per peer (and shown in status): errors may carry
// text a peer chose.
constexpr size_t kMaxErrorBytes = 256;

std::string ErrorText(absl::string_view message) {
  if (message.size() <= kMaxErrorBytes) return std::string(message);
  return absl::StrCat(message.substr(0, kMaxErrorBytes), "...");
}

// Pages in a row from one peer before the others waiting get a turn.
constexpr int kMaxPagesInARow = 16;

// A link whose merges keep failing (the store refuses them: a full disk,
// max_map_bytes) is logged at most once per peer per this interval.
constexpr absl::Duration kMergeFailureLogInterval = absl::Minutes(1);

}  // namespace

// A configured peer address and the state of our link to it.
struct Replicator::Slot {
  std::string address;
  LinkId link = 0;
  bool dialing = false;
  absl::Duration backoff = absl::ZeroDuration();
  std::string last_error;
  // What answered there last time.
  uint64_t replica_id = 0;
};

// A peer replica, however many links lead to it.
struct Replicator::Peer {
  PeerInfo info;
  std::set<LinkId> links;
  // Links on which a request went unanswered (see MarkSuspect); a subset
  // of `links`.
  std::set<LinkId> suspect;
  uint64_t dead_links = 0;
  bool inbound = false;
  std::string address;
  bool pulling = false;
  bool pull_again = false;
  uint64_t attempt = 0;
  // The link the pull in flight went on.
  LinkId pull_link = 0;
  // Pages pulled from it one after the other without letting others in.
  int pages_in_a_row = 0;
  // The checkpoint the pull in flight started from, and when it was sent.
  PeerCheckpoint pulled_from;
  absl::Time pull_started;
  absl::Time last_exchange = absl::InfinitePast();
  uint64_t checkpoint_seq = 0;
  uint64_t behind = 0;
  uint64_t refused = 0;
  absl::Time last_refusal_log = absl::InfinitePast();
  // Merges of its batches that failed since the last one that was logged.
  uint64_t merge_failures = 0;
  absl::Time last_merge_failure_log = absl::InfinitePast();
  std::string last_error;
  // When it last had a link (now, while it has one); InfinitePast if never.
  absl::Time last_seen = absl::InfinitePast();
};

Replicator::Replicator(Store* store, Executor* executor, Transport* transport,
                       ReplicatorOptions options)
    : store_(store),
      executor_(executor),
      transport_(transport),
      options_(std::move(options)),
      alive_(std::make_shared<int>(0)),
      weak_alive_(alive_),
      rng_(options_.seed) {}

Replicator::~Replicator() { Stop(); }

void Replicator::Post(absl::AnyInvocable<void()> task, absl::Duration delay) {
  executor_->Post(
      [weak = weak_alive_, task = std::move(task)]() mutable {
        if (weak.lock()) task();
      },
      delay);
}

void Replicator::Start() {
  // Every commit, local write or won merge, may be news for the peers.
  // A local write is news for every peer. (Merged changes are passed on by
  // the engine itself, to a few peers: see OnPulled.)
  listener_id_ = store_->AddCommitListener([this](const Store::CommitInfo& info) {
    if (info.local) Post([this] { NudgeAll(); });
  });
  Post([this] {
    started_ = true;
    for (const std::string& address : options_.peers) {
      if (slots_.count(address) > 0) continue;
      auto slot = std::make_unique<Slot>();
      slot->address = address;
      slots_.emplace(address, std::move(slot));
      Dial(address);
    }
    PublishStatus();
    // The first round after a random fraction of the interval, so replicas
    // started together do not gossip in lockstep.
    const double phase = std::uniform_real_distribution<double>(0.1, 1.0)(rng_);
    Post([this] { Round(); }, options_.gossip_interval * phase);
  });
}

void Replicator::Stop() {
  if (listener_id_ != 0) {
    store_->RemoveCommitListener(listener_id_);
    listener_id_ = 0;
  }
  alive_.reset();
}

void Replicator::AddPeer(const std::string& address) {
  Post([this, address] {
    if (slots_.count(address) > 0) return;
    auto slot = std::make_unique<Slot>();
    slot->address = address;
    slots_.emplace(address, std::move(slot));
    Dial(address);
    PublishStatus();
  });
}

void Replicator::Dial(const std::string& address) {
  Slot& slot = *slots_.at(address);
  if (slot.dialing || slot.link != 0) return;
  slot.dialing = true;
  transport_->Connect(
      address, [executor = executor_, weak = weak_alive_, this,
                address](absl::StatusOr<Transport::Connected> result) mutable {
        executor->Post([weak, this, address, result = std::move(result)]() mutable {
          if (weak.lock()) OnDialed(address, std::move(result));
        });
      });
}

void Replicator::OnDialed(const std::string& address,
                          absl::StatusOr<Transport::Connected> result) {
  Slot& slot = *slots_.at(address);
  slot.dialing = false;
  if (!result.ok()) {
    ScheduleRedial(slot, result.status());
    return;
  }
  const PeerInfo& info = result->peer;
  absl::Status refused;
  if (std::optional<std::string> clone = CloneEvidence(*store_, info)) {
    RefuseClone(*clone);
    refused = absl::FailedPreconditionError(*clone);
  } else if (info.replica_id == store_->replica_id()) {
    refused = absl::FailedPreconditionError("that address is this replica");
  } else if (std::optional<Restored> restored = RestoreEvidence(*store_, info.held)) {
    // Before anything else is exchanged: the peer must meet the new id.
    transport_->Close(result->link);
    slot.backoff = absl::ZeroDuration();
    restored->why = absl::StrFormat("peer at %s (%s): %s", address,
                                    ReplicaIdToString(info.replica_id), restored->why);
    Fork(*restored);
    ScheduleRedial(slot, absl::AbortedError("this replica forked to a new id; dialling again"));
    return;
  } else {
    refused = ValidatePeerInfo(info);
  }
  if (!refused.ok()) {
    transport_->Close(result->link);
    ScheduleRedial(slot, refused);
    return;
  }
  slot.link = result->link;
  slot.backoff = absl::ZeroDuration();
  slot.last_error.clear();
  slot.replica_id = info.replica_id;
  AddLink(result->link, info, /*inbound=*/false, address);
}

void Replicator::ScheduleRedial(Slot& slot, const absl::Status& why) {
  slot.last_error = ErrorText(why.message());
  slot.backoff = std::clamp(slot.backoff * 2, options_.backoff_min, options_.backoff_max);
  const double jitter = std::uniform_real_distribution<double>(0.5, 1.5)(rng_);
  const std::string address = slot.address;
  Post([this, address] { Dial(address); }, slot.backoff * jitter);
  PublishStatus();
}

void Replicator::AddLink(LinkId link, const PeerInfo& info, bool inbound,
                         const std::string& address) {
  if (peers_.count(info.replica_id) == 0 && peers_.size() >= options_.max_peers) {
    // Bound what replicas that dial in (or lie about who they are) can
    // make us keep; but entries of peers long gone must not keep a new
    // replica out for good.
    const bool evicted = EvictGonePeer();
    LogTableFull(/*refused=*/!evicted);
    if (!evicted) {
      transport_->Close(link);
      PublishStatus();
      return;
    }
  }
  if (auto known = peers_.find(info.replica_id);
      known != peers_.end() && !known->second->links.empty() &&
      known->second->info.boot_nonce != 0 && info.boot_nonce != 0 &&
      known->second->info.boot_nonce != info.boot_nonce) {
    // Two live processes with one replica id: a copied data directory.
    // Their checkpoints and versions would mix; keep the first link only.
    RefuseClone(absl::StrFormat(
        "replica %s is live in two processes (open nonces %016x, on its first link, and "
        "%016x%s): one runs a copy of the other's data directory; refusing the second link",
        ReplicaIdToString(info.replica_id), known->second->info.boot_nonce, info.boot_nonce,
        address.empty() ? ", which dialled us" : absl::StrCat(", at ", address)));
    known->second->last_error = "a second process claims this replica id (a copied data directory)";
    transport_->Close(link);
    PublishStatus();
    return;
  }
  auto [it, created] = peers_.try_emplace(info.replica_id);
  if (created) {
    it->second = std::make_unique<Peer>();
    it->second->attempt = forgotten_attempts_;
  }
  Peer& peer = *it->second;
  peer.last_seen = executor_->Now();
  peer.info = info;
  peer.links.insert(link);
  peer.inbound = peer.inbound || inbound;
  if (!address.empty()) peer.address = address;
  peer.last_error.clear();
  link_peer_[link] = info.replica_id;
  // A new link: catch up with the peer, and let it catch up with us.
  if (options_.eager) {
    StartPull(info.replica_id);
    Nudge(peer);
  }
  PublishStatus();
}

void Replicator::DropLink(LinkId link, const absl::Status& why) {
  auto it = link_peer_.find(link);
  if (it != link_peer_.end()) {
    Peer& peer = *peers_.at(it->second);
    peer.links.erase(link);
    peer.suspect.erase(link);
    peer.last_seen = executor_->Now();
    // The transport found it dead (a keepalive or call deadline).
    if (why.code() == absl::StatusCode::kDeadlineExceeded) ++peer.dead_links;
    if (peer.links.empty() || why.code() == absl::StatusCode::kDeadlineExceeded) {
      peer.last_error = ErrorText(why.message());
    }
    link_peer_.erase(it);
  }
  for (auto& [address, slot] : slots_) {
    if (slot->link == link) {
      slot->link = 0;
      ScheduleRedial(*slot, why);
    }
  }
  PublishStatus();
}

void Replicator::OnInboundLink(LinkId link, const PeerInfo& peer) {
  Post([this, link, peer] {
    // The server checked the hello already; other transports may not have.
    if (std::optional<std::string> clone = CloneEvidence(*store_, peer)) RefuseClone(*clone);
    if (peer.replica_id == store_->replica_id() || !ValidatePeerInfo(peer).ok()) {
      transport_->Close(link);
      return;
    }
    AddLink(link, peer, /*inbound=*/true, "");
  });
}

void Replicator::OnLinkDown(LinkId link, const absl::Status& why) {
  Post([this, link, why] { DropLink(link, why); });
}

void Replicator::OnNudged(LinkId link, const Watermarks& sender) {
  Post([this, link, sender] {
    auto it = link_peer_.find(link);
    if (it == link_peer_.end()) return;
    // The sender's watermarks are a lower bound of what it holds: if ours
    // cover them, pulling would most likely bring nothing (and a round
    // catches anything it held beyond them).
    if (!sender.empty() && store_->GetWatermarks().Dominates(sender)) {
      ++counters_.nudges_ignored;
      PublishStatus();
      return;
    }
    StartPull(it->second);
  });
}

void Replicator::OnRestoreEvidence(LinkId link, const Restored& evidence) {
  Post([this, link, evidence] {
    auto it = link_peer_.find(link);
    Restored named = evidence;
    named.why = absl::StrCat(
        it == link_peer_.end() ? "a peer" : absl::StrCat("peer ", ReplicaIdToString(it->second)),
        ": ", evidence.why);
    Fork(named);
  });
}

void Replicator::ForkAfterRestore(const Restored& evidence) {
  Post([this, evidence] { Fork(evidence); });
}

void Replicator::Fork(const Restored& restored) {
  // Evidence about an id already left behind (pulls served before the
  // fork, answered after it) is old news.
  if (store_->replica_id() != restored.replica_id) return;
  const std::string& evidence = restored.why;
  // The pulls in flight asked as the old id (their answers left out its
  // writes): abandon them, so their checkpoints are never written.
  for (auto& [id, peer] : peers_) {
    if (!peer->pulling) continue;
    peer->pulling = false;
    peer->pull_again = true;
    --pulls_in_flight_;
  }
  waiting_pulls_.clear();
  const uint64_t old_id = store_->replica_id();
  absl::StatusOr<Store::ForkResult> fork = store_->Fork(restored.since_seq);
  if (!fork.ok()) {
    Log(absl::StrFormat("peerkv: this replica's data directory looks restored from an older "
                        "copy (%s), but forking to a new replica id failed: %s",
                        evidence, fork.status().ToString()));
    return;
  }
  ++counters_.forks;
  Log(absl::StrFormat(
      "peerkv: this replica's data directory was restored from an older copy: %s. Forked from "
      "replica id %s to %s (incarnation %s); its records keep their versions, except %d "
      "written since the restored copy was opened (after seq %d), re-stamped as new writes; "
      "peers pull it from zero, and it pulls back the writes of %s it lost",
      evidence, ReplicaIdToString(old_id), ReplicaIdToString(fork->new_id),
      ReplicaIdToString(fork->new_incarnation), fork->restamped, restored.since_seq,
      ReplicaIdToString(old_id)));
  {
    absl::MutexLock lock(&status_mu_);
    last_fork_ = ForkInfo{old_id, fork->new_id, evidence};
  }
  // Peers know us by the old id on every link: they must hello again.
  std::vector<LinkId> links;
  for (const auto& [link, id] : link_peer_) links.push_back(link);
  for (LinkId link : links) {
    transport_->Close(link);
    DropLink(link, absl::AbortedError("this replica forked to a new replica id"));
  }
  for (auto& [address, slot] : slots_) slot->backoff = absl::ZeroDuration();
  PublishStatus();
}

void Replicator::RefuseClone(const std::string& evidence) {
  ++counters_.clones_refused;
  Log(absl::StrCat("peerkv: refused a link: ", evidence));
  PublishStatus();
}

Replicator::ForkInfo Replicator::LastFork() const {
  absl::MutexLock lock(&status_mu_);
  return last_fork_;
}

void Replicator::OnLinkSuspect(LinkId link, const absl::Status& why) {
  Post([this, link, why] { MarkSuspect(link, why); });
}

LinkId Replicator::ChooseLink(const Peer& peer) const {
  for (LinkId link : peer.links) {
    if (peer.suspect.count(link) == 0) return link;
  }
  return peer.links.empty() ? 0 : *peer.links.begin();
}

// A half-open connection (one direction silently stalled) answers nothing
// and closes nothing; without this every pull and nudge went on the
// peer's first link forever. Requests go on another link from now on; a
// peer whose every link is suspect is redialled on the one we dialled.
void Replicator::MarkSuspect(LinkId link, const absl::Status& why) {
  auto it = link_peer_.find(link);
  if (it == link_peer_.end()) return;
  Peer& peer = *peers_.at(it->second);
  peer.suspect.insert(link);
  peer.last_error = absl::StrFormat("link suspect: %s", why.message());
  if (peer.suspect.size() == peer.links.size()) {
    for (auto& [address, slot] : slots_) {
      if (slot->link != link) continue;
      Log(absl::StrFormat("peerkv: closing the link to peer %s at %s: %s",
                          peer.info.name.empty() ? "(unnamed)" : peer.info.name, address,
                          why.message()));
      transport_->Close(link);
      DropLink(link, why);
      return;
    }
  }
  PublishStatus();
}

void Replicator::Round() {
  ++counters_.rounds;
  std::vector<uint64_t> candidates;
  for (const auto& [id, peer] : peers_) {
    if (!peer->links.empty()) candidates.push_back(id);
  }
  std::shuffle(candidates.begin(), candidates.end(), rng_);
  const size_t n = std::min<size_t>(candidates.size(), std::max(options_.fanout, 0));
  for (size_t i = 0; i < n; ++i) {
    StartPull(candidates[i]);
    Nudge(*peers_.at(candidates[i]));
  }
  PublishStatus();
  Post([this] { Round(); }, options_.gossip_interval);
}

void Replicator::StartPull(uint64_t peer_id) {
  auto it = peers_.find(peer_id);
  if (it == peers_.end()) return;
  Peer& peer = *it->second;
  if (peer.links.empty()) return;
  if (peer.pulling) {
    peer.pull_again = true;
    return;
  }
  if (pulls_in_flight_ >= std::max(options_.max_concurrent_pulls, 1)) {
    if (std::find(waiting_pulls_.begin(), waiting_pulls_.end(), peer_id) == waiting_pulls_.end()) {
      waiting_pulls_.push_back(peer_id);
    }
    return;
  }
  absl::StatusOr<std::optional<PeerCheckpoint>> checkpoint = store_->GetCheckpoint(peer_id);
  if (!checkpoint.ok()) {
    peer.last_error = ErrorText(checkpoint.status().message());
    return;
  }
  PullRequest request;
  request.requester = store_->replica_id();
  if (checkpoint->has_value()) {
    request.incarnation = (*checkpoint)->incarnation;
    request.after_seq = (*checkpoint)->seq;
  }
  request.max_records = options_.batch_records;
  request.max_bytes = options_.batch_bytes;
  request.max_value_bytes = store_->options().max_value_bytes;
  request.watermarks = store_->GetWatermarks();
  peer.pulling = true;
  ++pulls_in_flight_;
  peer.pulled_from = PeerCheckpoint{request.incarnation, request.after_seq};
  peer.pull_started = executor_->Now();
  const uint64_t attempt = ++peer.attempt;
  peer.pull_link = ChooseLink(peer);
  transport_->Pull(
      peer.pull_link, request,
      [executor = executor_, weak = weak_alive_, this, peer_id,
       attempt](absl::StatusOr<PullResponse> result) mutable {
        executor->Post([weak, this, peer_id, attempt, result = std::move(result)]() mutable {
          if (weak.lock()) OnPulled(peer_id, attempt, std::move(result));
        });
      });
  Post(
      [this, peer_id, attempt] {
        OnPulled(peer_id, attempt,
                 absl::DeadlineExceededError(absl::StrFormat(
                     "no answer to a pull within %s", absl::FormatDuration(options_.pull_timeout))));
      },
      options_.pull_timeout);
}

void Replicator::OnPulled(uint64_t peer_id, uint64_t attempt,
                          absl::StatusOr<PullResponse> result) {
  auto it = peers_.find(peer_id);
  if (it == peers_.end()) return;
  Peer& peer = *it->second;
  // A late answer to an abandoned pull, or the timeout of a finished one.
  if (!peer.pulling || peer.attempt != attempt) return;
  if (!result.ok()) {
    if (result.status().code() == absl::StatusCode::kDeadlineExceeded) {
      // Try again at once, on another link if there is one.
      peer.pull_again = true;
      FinishPull(peer, result.status());
      MarkSuspect(peer.pull_link, result.status());
      return;
    }
    FinishPull(peer, result.status());
    return;
  }
  // The link answered: whatever made it suspect is over.
  peer.suspect.erase(peer.pull_link);
  PullResponse& response = *result;
  if (response.replica_id != peer_id) {
    const LinkId link = peer.pull_link;
    FinishPull(peer, absl::FailedPreconditionError(absl::StrFormat(
                         "expected replica %s, answered by %s", ReplicaIdToString(peer_id),
                         ReplicaIdToString(response.replica_id))));
    // The peer forked (restore_guard.h): hello again, to meet the new id.
    if (response.replica_id != 0) {
      transport_->Close(link);
      DropLink(link, absl::AbortedError("the peer changed its replica id"));
    }
    return;
  }
  ++counters_.pulls;
  counters_.records_received += response.records.size();
  peer.info.incarnation = response.incarnation;
  std::vector<Record>& records = response.records;
  for (const Record& r : records) {
    if (r.seq <= response.from_seq || r.seq > response.last_seq) {
      FinishPull(peer, absl::InvalidArgumentError(absl::StrFormat(
                           "peer sent a record with seq %d outside its page (%d, %d]", r.seq,
                           response.from_seq, response.last_seq)));
      return;
    }
  }
  // A record whose clock is too far ahead of ours would be refused. Rather
  // than step past it for good, stop the batch before it: the checkpoint
  // stays there and later pulls retry it, so it is taken once our clock has
  // caught up (or the writer's clock is fixed and it writes anew).
  uint64_t checkpoint_seq = response.last_seq;
  absl::Status too_far_ahead;
  for (size_t i = 0; i < records.size(); ++i) {
    too_far_ahead = store_->CheckSkew(records[i].version.hlc);
    if (!too_far_ahead.ok()) {
      checkpoint_seq = records[i].seq - 1;
      too_far_ahead = absl::Status(
          too_far_ahead.code(), absl::StrFormat("record from origin %s: %s",
                                                ReplicaIdToString(records[i].version.origin),
                                                too_far_ahead.message()));
      records.resize(i);
      break;
    }
  }
  const bool held_back = !too_far_ahead.ok();
  // An up-to-date peer answers with nothing new: then there is nothing to
  // merge or write, and the round costs no store work at all.
  const bool checkpoint_moves = response.incarnation != peer.pulled_from.incarnation ||
                                checkpoint_seq != peer.pulled_from.seq;
  // Level with the peer's log: we hold everything it held when it answered,
  // so its watermarks become ours too (which spares us its copies of what
  // others send us). Not if records were held back; not if our value limit
  // is below the protocol's (the peer left out values we cannot hold, and
  // our claim would hide them from replicas that can); and never a claim
  // further ahead than the clock bound.
  const bool caught_up = !held_back && response.last_seq >= response.max_seq;
  Watermarks adopted;
  if (caught_up && store_->options().max_value_bytes == kMaxValueBytes) {
    for (const auto& [origin, hlc] : response.watermarks) {
      if (store_->CheckSkew(hlc).ok()) adopted[origin] = hlc;
    }
    if (store_->GetWatermarks().Dominates(adopted)) adopted.clear();
  }
  uint64_t won = 0;
  size_t refused = held_back ? 1 : 0;
  absl::Status refusal = too_far_ahead;
  if (!records.empty() || checkpoint_moves || !adopted.empty()) {
    const size_t batch_records = records.size();
    absl::StatusOr<MergeResult> merged = store_->Merge(
        std::move(records),
        CheckpointUpdate{peer_id, PeerCheckpoint{response.incarnation, checkpoint_seq},
                         std::move(adopted)});
    if (!merged.ok()) {
      // The pull is retried later and fails the same way until the cause
      // is gone: say so (not on every retry), and in status.
      const absl::Status failure = absl::Status(
          merged.status().code(),
          absl::StrFormat("merging %d records from this peer failed: %s", batch_records,
                          merged.status().message()));
      ++peer.merge_failures;
      const absl::Time now = executor_->Now();
      if (now - peer.last_merge_failure_log >= kMergeFailureLogInterval) {
        peer.last_merge_failure_log = now;
        Log(absl::StrFormat("peerkv: merges from peer %s (%s) fail (%d since the last such line): %s",
                            peer.info.name.empty() ? "(unnamed)" : peer.info.name,
                            ReplicaIdToString(peer_id), peer.merge_failures,
                            failure.ToString()));
        peer.merge_failures = 0;
      }
      FinishPull(peer, failure);
      return;
    }
    counters_.records_won += merged->won;
    won = merged->won;
    // Invalid records are refused for good; the batch moved past them.
    refused += merged->refused.size();
    if (refusal.ok() && !merged->refused.empty()) refusal = merged->refused.front().reason;
  }
  if (refused > 0) {
    peer.refused += refused;
    const absl::Time now = executor_->Now();
    if (now - peer.last_refusal_log >= options_.refusal_log_interval) {
      peer.last_refusal_log = now;
      Log(absl::StrFormat("peerkv: refused %d record%s from peer %s (%s), %d in all: %s", refused,
                          refused == 1 ? "" : "s",
                          peer.info.name.empty() ? "(unnamed)" : peer.info.name,
                          ReplicaIdToString(peer_id), peer.refused,
                          std::string(refusal.message())));
    }
  }
  peer.last_exchange = executor_->Now();
  counters_.pull_time += peer.last_exchange - peer.pull_started;
  peer.checkpoint_seq = checkpoint_seq;
  peer.behind = response.max_seq > checkpoint_seq ? response.max_seq - checkpoint_seq : 0;
  peer.last_error = held_back ? ErrorText(too_far_ahead.message()) : "";
  // Pass news on (epidemic push): a few random peers, not the one it came
  // from, so that chains of peers carry it in milliseconds without every
  // replica asking every other.
  if (won > 0 && options_.eager) NudgeSome(peer_id);
  const bool more = !held_back && response.last_seq < response.max_seq &&
                    response.last_seq > response.from_seq;
  if (more && ++peer.pages_in_a_row < kMaxPagesInARow) {
    // More pages: keep pulling (ahead of peers waiting for a slot, but not
    // forever: see kMaxPagesInARow).
    peer.pulling = false;
    --pulls_in_flight_;
    StartPull(peer_id);
    StartWaitingPulls();
    PublishStatus();
    return;
  }
  peer.pages_in_a_row = 0;
  // Still more to pull after a long run of pages: go to the back of the
  // queue, so that a peer that writes faster than we pull cannot starve
  // the others.
  if (more) peer.pull_again = true;
  FinishPull(peer, absl::OkStatus());
}

void Replicator::FinishPull(Peer& peer, const absl::Status& status) {
  peer.pulling = false;
  --pulls_in_flight_;
  StartWaitingPulls();
  if (!status.ok()) peer.last_error = ErrorText(status.message());
  if (peer.pull_again) {
    peer.pull_again = false;
    const uint64_t id = peer.info.replica_id;
    Post([this, id] { StartPull(id); });
  }
  PublishStatus();
}

void Replicator::StartWaitingPulls() {
  // Bounded: each turn removes a waiting peer.
  while (!waiting_pulls_.empty() && pulls_in_flight_ < std::max(options_.max_concurrent_pulls, 1)) {
    const uint64_t next = waiting_pulls_.front();
    waiting_pulls_.erase(waiting_pulls_.begin());
    StartPull(next);
  }
}

void Replicator::NudgeAll() {
  if (!started_ || !options_.eager) return;
  nudge_all_pending_ = true;
  ScheduleNudges();
}

void Replicator::ScheduleNudges() {
  if (nudge_scheduled_) return;
  nudge_scheduled_ = true;
  const absl::Time now = executor_->Now();
  // Busy (news again within twice the interval): wait longer next time.
  // Quiet: back to the minimum.
  if (now - last_nudge_ < 2 * current_nudge_interval_) {
    current_nudge_interval_ = std::min(current_nudge_interval_ * 2, options_.max_nudge_interval);
  } else {
    current_nudge_interval_ = options_.nudge_interval;
  }
  current_nudge_interval_ = std::max(current_nudge_interval_, options_.nudge_interval);
  const absl::Duration wait =
      std::max(absl::ZeroDuration(), last_nudge_ + current_nudge_interval_ - now);
  Post([this] { SendNudges(); }, wait);
}

// Local writes go to every peer; merged news to `fanout` random peers other
// than those it came from. Either way at most once per nudge_interval, so a
// burst of writes travels in a few large pulls rather than many small ones.
void Replicator::SendNudges() {
  nudge_scheduled_ = false;
  last_nudge_ = executor_->Now();
  std::vector<uint64_t> candidates;
  for (const auto& [id, peer] : peers_) {
    if (!peer->links.empty() && (nudge_all_pending_ || forward_sources_.count(id) == 0)) {
      candidates.push_back(id);
    }
  }
  // A local write goes to every peer of a small group (a user's devices,
  // a few friends): each hears of it at once. In a bigger mesh, nudging
  // every peer after every write costs a message exchange per peer per
  // write; there it goes to `fanout` random peers, who pass it on, like
  // merged news always does (epidemic push), and rounds do the rest.
  size_t n = 0;
  if (nudge_all_pending_ && candidates.size() <= options_.nudge_all_up_to) {
    n = candidates.size();
  } else if (nudge_all_pending_ || forward_pending_) {
    std::shuffle(candidates.begin(), candidates.end(), rng_);
    n = std::min<size_t>(candidates.size(), std::max(options_.fanout, 0));
  }
  for (size_t i = 0; i < n; ++i) Nudge(*peers_.at(candidates[i]));
  nudge_all_pending_ = false;
  forward_pending_ = false;
  forward_sources_.clear();
}

void Replicator::NudgeSome(uint64_t except) {
  forward_pending_ = true;
  forward_sources_.insert(except);
  ScheduleNudges();
}

void Replicator::Nudge(Peer& peer) {
  if (peer.links.empty()) return;
  ++counters_.nudges_sent;
  transport_->Nudge(ChooseLink(peer), store_->GetWatermarks());
}

bool Replicator::EvictGonePeer() {
  const absl::Time now = executor_->Now();
  std::set<uint64_t> configured;
  for (const auto& [address, slot] : slots_) {
    if (slot->replica_id != 0) configured.insert(slot->replica_id);
  }
  // The least recently seen of those that may go. Not one with a pull in
  // flight: its answer or timeout is still to come and frees the pull slot.
  auto victim = peers_.end();
  for (auto it = peers_.begin(); it != peers_.end(); ++it) {
    const Peer& p = *it->second;
    if (!p.links.empty() || p.pulling || !p.address.empty() || configured.count(it->first) > 0 ||
        now - p.last_seen < options_.evict_gone_peers_after) {
      continue;
    }
    if (victim == peers_.end() || p.last_seen < victim->second->last_seen) victim = it;
  }
  if (victim == peers_.end()) return false;
  const uint64_t id = victim->first;
  forgotten_attempts_ = std::max(forgotten_attempts_, victim->second->attempt);
  // Everything else that names it: it has no links (so no link_peer_
  // entries) and no pull in flight; pending tasks look it up and find it
  // gone. The checkpoint is in the store.
  waiting_pulls_.erase(std::remove(waiting_pulls_.begin(), waiting_pulls_.end(), id),
                       waiting_pulls_.end());
  forward_sources_.erase(id);
  peers_.erase(victim);
  ++counters_.peers_evicted;
  return true;
}

void Replicator::LogTableFull(bool refused) {
  ++(refused ? table_refused_ : table_evicted_);
  const absl::Time now = executor_->Now();
  if (now - last_table_log_ < options_.refusal_log_interval) return;
  last_table_log_ = now;
  Log(absl::StrFormat(
      "peerkv: peer table full (%d peers): %d new peer%s refused, %d peer%s gone over %s "
      "forgotten, since the last such line",
      options_.max_peers, table_refused_, table_refused_ == 1 ? "" : "s", table_evicted_,
      table_evicted_ == 1 ? "" : "s", absl::FormatDuration(options_.evict_gone_peers_after)));
  table_refused_ = 0;
  table_evicted_ = 0;
}

void Replicator::PublishStatus() {
  std::vector<PeerStatus> statuses;
  std::set<uint64_t> listed;
  for (const auto& [id, peer] : peers_) {
    PeerStatus s;
    s.name = peer->info.name;
    s.address = peer->address;
    s.replica_id = id;
    s.inbound = peer->inbound && peer->address.empty();
    s.reachable = !peer->links.empty();
    s.last_exchange = peer->last_exchange;
    s.checkpoint_seq = peer->checkpoint_seq;
    s.behind = peer->behind;
    s.refused = peer->refused;
    s.last_error = peer->last_error;
    s.links = static_cast<uint32_t>(peer->links.size());
    s.suspect_links = static_cast<uint32_t>(peer->suspect.size());
    s.dead_links = peer->dead_links;
    statuses.push_back(std::move(s));
    listed.insert(id);
  }
  // Configured addresses not (yet) connected to a known replica.
  for (const auto& [address, slot] : slots_) {
    if (slot->link != 0 && listed.count(slot->replica_id) > 0) continue;
    if (slot->replica_id != 0 && listed.count(slot->replica_id) > 0) {
      // The replica is known (it may be reachable another way); note why
      // this address is not connected.
      for (PeerStatus& s : statuses) {
        if (s.replica_id == slot->replica_id && s.address.empty()) s.address = address;
        if (s.replica_id == slot->replica_id && s.last_error.empty()) s.last_error = slot->last_error;
      }
      continue;
    }
    PeerStatus s;
    s.address = address;
    s.last_error = slot->last_error;
    statuses.push_back(std::move(s));
  }
  absl::MutexLock lock(&status_mu_);
  statuses_ = std::move(statuses);
  published_counters_ = counters_;
}

std::vector<PeerStatus> Replicator::Statuses() const {
  absl::MutexLock lock(&status_mu_);
  return statuses_;
}

ReplicatorCounters Replicator::Counters() const {
  absl::MutexLock lock(&status_mu_);
  return published_counters_;
}

void Replicator::Log(const std::string& line) {
  if (options_.log) options_.log(line);
}

}  // namespace peerkv::replication
