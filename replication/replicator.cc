// replication/replicator.cc: the anti-entropy engine: links, dialling with
// backoff, gossip rounds, pulls with checkpoints, nudges, refused-record
// accounting and the status snapshot.
#include "replication/replicator.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
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

// One answered page on its way into the store.
struct Replicator::Page {
  // Its records trimmed to what is merged (see HoldBackTooFarAhead).
  PullResponse response;
  // Where the checkpoint goes: the page's last seq, or the seq before a
  // record held back.
  uint64_t checkpoint_seq = 0;
  // Why records were held back; OK if none were.
  absl::Status held_back;
  // The checkpoint it was asked from, and when.
  PeerCheckpoint pulled_from;
  absl::Time started;
};

Replicator::Replicator(Store* store, Executor* executor, Transport* transport,
                       ReplicatorOptions options)
    : store_(store),
      executor_(executor),
      transport_(transport),
      options_(std::move(options)),
      rng_(options_.seed) {}

Replicator::~Replicator() { Stop(); }

void Replicator::Post(absl::AnyInvocable<void()> task, absl::Duration delay) {
  executor_->Post(tasks_.Wrap(std::move(task)), delay);
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
    for (const std::string& address : options_.peers) AddSlot(address);
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
  // Waits for a task running on the executor's thread; later ones do
  // nothing.
  tasks_.Close();
}

void Replicator::AddPeer(const std::string& address) {
  Post([this, address] {
    AddSlot(address);
    PublishStatus();
  });
}

void Replicator::AddSlot(const std::string& address) {
  PEERKV_CHECK(executor_->IsCurrent());
  if (slots_.count(address) > 0) return;
  auto slot = std::make_unique<Slot>();
  slot->address = address;
  slots_.emplace(address, std::move(slot));
  Dial(address);
}

void Replicator::Dial(const std::string& address) {
  PEERKV_CHECK(executor_->IsCurrent());
  Slot& slot = *slots_.at(address);
  if (slot.dialing || slot.link != 0) return;
  slot.dialing = true;
  transport_->ConnectExpecting(
      address, slot.replica_id,
      OnExecutor<absl::StatusOr<Transport::Connected>>(
          [this, address](absl::StatusOr<Transport::Connected> result) {
            OnDialed(address, std::move(result));
          }));
}

void Replicator::OnDialed(const std::string& address,
                          absl::StatusOr<Transport::Connected> result) {
  PEERKV_CHECK(executor_->IsCurrent());
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
  } else if (refused = CheckPeer(info, store_->replica_id()); refused.ok()) {
    if (std::optional<Restored> restored = RestoreEvidence(*store_, info.held)) {
      // Before anything else is exchanged: the peer must meet the new id.
      transport_->Close(result->link);
      slot.backoff = absl::ZeroDuration();
      restored->why = absl::StrFormat("peer at %s (%s): %s", address,
                                      ReplicaIdToString(info.replica_id), restored->why);
      Fork(*restored);
      ScheduleRedial(slot, absl::AbortedError("this replica forked to a new id; dialling again"));
      return;
    }
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
  PEERKV_CHECK(executor_->IsCurrent());
  slot.last_error = ErrorText(why.message());
  slot.backoff = std::clamp(slot.backoff * 2, options_.backoff_min, options_.backoff_max);
  const double jitter = std::uniform_real_distribution<double>(0.5, 1.5)(rng_);
  const std::string address = slot.address;
  Post([this, address] { Dial(address); }, slot.backoff * jitter);
  PublishStatus();
}

void Replicator::AddLink(LinkId link, const PeerInfo& info, bool inbound,
                         const std::string& address) {
  PEERKV_CHECK(executor_->IsCurrent());
  ForgetRetired(info);
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
  PEERKV_CHECK(executor_->IsCurrent());
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
    if (!CheckPeer(peer, store_->replica_id()).ok()) {
      transport_->Close(link);
      return;
    }
    // The dialler's hello may say what it holds of us (Transport::
    // ConnectExpecting): a restore shows before anything is exchanged.
    if (std::optional<Restored> restored = RestoreEvidence(*store_, peer.held)) {
      transport_->Close(link);
      restored->why = absl::StrFormat("peer %s, which dialled us: %s",
                                      ReplicaIdToString(peer.replica_id), restored->why);
      Fork(*restored);
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
    // Nothing changed: still the old id.
    Log(absl::StrFormat("peerkv: this replica's data directory looks restored from an older "
                        "copy (%s), but forking to a new replica id failed: %s",
                        evidence, fork.status().ToString()));
    return;
  }
  // The new id is durable even if the re-stamp failed: every step below
  // must still run, or links and pulls stay on the old id.
  if (!fork->restamp_status.ok()) {
    Log(absl::StrFormat(
        "peerkv: forked from replica id %s to %s, but re-stamping the writes made since the "
        "restored copy was opened (after seq %d) failed after %d: %s. Those not re-stamped "
        "keep versions of the old id, which peers may never pull; write them again",
        ReplicaIdToString(old_id), ReplicaIdToString(fork->new_id), restored.since_seq,
        fork->restamped, fork->restamp_status.ToString()));
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

void Replicator::ForgetRetired(const PeerInfo& info) {
  PEERKV_CHECK(executor_->IsCurrent());
  if (info.retired.empty()) return;
  std::vector<uint64_t> untrusted;
  for (uint64_t id : info.retired) {
    if (!store_->Distrusts(id) && id != store_->replica_id()) untrusted.push_back(id);
  }
  if (untrusted.empty()) return;
  // Pulls in flight claim the old watermarks and end in checkpoints past
  // what those left out: abandon them (the store drops the checkpoints).
  for (auto& [id, peer] : peers_) {
    if (!peer->pulling) continue;
    peer->pulling = false;
    --pulls_in_flight_;
  }
  waiting_pulls_.clear();
  absl::StatusOr<bool> forgot = store_->ForgetRetiredIds(untrusted);
  if (!forgot.ok()) {
    Log(absl::StrFormat("peerkv: peer %s says replica ids were retired by forks, but "
                        "forgetting their watermarks failed: %s",
                        ReplicaIdToString(info.replica_id), forgot.status().ToString()));
  } else if (*forgot) {
    ++counters_.retired_ids_forgotten;
    std::vector<std::string> names;
    for (uint64_t id : untrusted) names.push_back(ReplicaIdToString(id));
    Log(absl::StrFormat("peerkv: peer %s says replica ids %s were retired by forks (restored "
                        "data directories): forgot their watermarks, and pulling every peer "
                        "from zero once, to get back what those claims left out",
                        ReplicaIdToString(info.replica_id), absl::StrJoin(names, ", ")));
  }
  // Every other link hellos again, so that its peer learns the ids from
  // our hello (they spread one hop per hello), and every peer is pulled
  // again from the dropped checkpoints.
  std::vector<LinkId> links;
  for (const auto& [link, id] : link_peer_) links.push_back(link);
  for (LinkId link : links) {
    transport_->Close(link);
    DropLink(link, absl::AbortedError("a peer named replica ids retired by forks; hello again"));
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
  PEERKV_CHECK(executor_->IsCurrent());
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
  PEERKV_CHECK(executor_->IsCurrent());
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
  PEERKV_CHECK(executor_->IsCurrent());
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
  PEERKV_CHECK(executor_->IsCurrent());
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
  peer.pulling = true;
  ++pulls_in_flight_;
  // A pull (re)starts from the last committed checkpoint, whatever pages
  // of an earlier pull were in flight.
  SendPull(peer, checkpoint->value_or(PeerCheckpoint{}));
}

void Replicator::SendPull(Peer& peer, PeerCheckpoint from) {
  PEERKV_CHECK(executor_->IsCurrent());
  PEERKV_CHECK(peer.pulling);
  PullRequest request;
  request.requester = store_->replica_id();
  request.incarnation = from.incarnation;
  request.after_seq = from.seq;
  request.after_nonce = from.nonce;
  request.max_records = options_.batch_records;
  request.max_bytes = options_.batch_bytes;
  request.max_value_bytes = store_->options().max_value_bytes;
  request.watermarks = store_->GetWatermarks();
  peer.pulled_from = from;
  peer.pull_started = executor_->Now();
  // A new attempt: answers and timeouts of earlier ones no longer match.
  const uint64_t attempt = ++peer.attempt;
  const uint64_t peer_id = peer.info.replica_id;
  peer.pull_link = ChooseLink(peer);
  transport_->Pull(peer.pull_link, request,
                   OnExecutor<absl::StatusOr<PullResponse>>(
                       [this, peer_id, attempt](absl::StatusOr<PullResponse> result) {
                         OnPulled(peer_id, attempt, std::move(result));
                       }));
  Post(
      [this, peer_id, attempt] {
        OnPulled(peer_id, attempt,
                 absl::DeadlineExceededError(absl::StrFormat(
                     "no answer to a pull within %s", absl::FormatDuration(options_.pull_timeout))));
      },
      options_.pull_timeout);
}

// One page of a pull: checked, trimmed, merged with the checkpoint
// advance, then either the next page (already asked for while this one
// merged) or the end of the pull. Pages merge strictly in order: the next
// one is asked for from where this one ends, and its answer is taken only
// after this one's merge committed; if the merge fails, the pull ends and
// that answer is dropped (its attempt no longer matches), and the next
// pull starts from the committed checkpoint.
void Replicator::OnPulled(uint64_t peer_id, uint64_t attempt,
                          absl::StatusOr<PullResponse> result) {
  PEERKV_CHECK(executor_->IsCurrent());
  auto it = peers_.find(peer_id);
  if (it == peers_.end()) return;
  Peer& peer = *it->second;
  // A late answer to an abandoned or discarded pull, or the timeout of a
  // finished one.
  if (!peer.pulling || peer.attempt != attempt) return;
  if (!result.ok()) {
    OnPullFailed(peer, result.status());
    return;
  }
  // The link answered: whatever made it suspect is over.
  peer.suspect.erase(peer.pull_link);
  Page page{std::move(*result), 0, absl::OkStatus(), peer.pulled_from, peer.pull_started};
  if (absl::Status invalid = ValidatePage(peer_id, page.response); !invalid.ok()) {
    const LinkId link = peer.pull_link;
    const uint64_t answered_by = page.response.replica_id;
    FinishPull(peer, invalid);
    // The peer forked (restore_guard.h): hello again, to meet the new id.
    if (answered_by != peer_id && answered_by != 0) {
      transport_->Close(link);
      DropLink(link, absl::AbortedError("the peer changed its replica id"));
    }
    return;
  }
  ++counters_.pulls;
  counters_.records_received += page.response.records.size();
  peer.info.incarnation = page.response.incarnation;
  HoldBackTooFarAhead(page);
  const bool more = page.held_back.ok() && page.response.last_seq < page.response.max_seq &&
                    page.response.last_seq > page.response.from_seq;
  // Pages in a row, ahead of peers waiting for a slot, but not forever
  // (kMaxPagesInARow); with nobody waiting there is nobody to let in.
  const bool go_on = more && !peer.links.empty() &&
                     (waiting_pulls_.empty() || peer.pages_in_a_row + 1 < kMaxPagesInARow);
  if (go_on) {
    // Pipelining: the peer reads, encodes and sends the next page while
    // this one merges and syncs. At most one page is in flight besides the
    // one merging: the next is asked for only once this one is taken.
    SendPull(peer, PeerCheckpoint{page.response.incarnation, page.checkpoint_seq, page.response.nonce});
    ++counters_.pages_prefetched;
  }
  absl::StatusOr<MergeResult> merged = MergePage(peer_id, page);
  if (!merged.ok()) {
    if (go_on) ++counters_.prefetches_discarded;
    NoteMergeFailure(peer, merged.status());
    FinishPull(peer, merged.status());
    return;
  }
  NoteRefusals(peer, page, *merged);
  NotePageMerged(peer, page, merged->won);
  ContinueOrFinish(peer, more, go_on);
}

void Replicator::OnPullFailed(Peer& peer, const absl::Status& status) {
  PEERKV_CHECK(executor_->IsCurrent());
  if (status.code() == absl::StatusCode::kDeadlineExceeded) {
    // Try again at once, on another link if there is one.
    peer.pull_again = true;
    FinishPull(peer, status);
    MarkSuspect(peer.pull_link, status);
    return;
  }
  FinishPull(peer, status);
}

absl::Status Replicator::ValidatePage(uint64_t peer_id, const PullResponse& response) const {
  PEERKV_CHECK(executor_->IsCurrent());
  if (response.replica_id != peer_id) {
    return absl::FailedPreconditionError(absl::StrFormat("expected replica %s, answered by %s",
                                                         ReplicaIdToString(peer_id),
                                                         ReplicaIdToString(response.replica_id)));
  }
  for (const Record& r : response.records) {
    if (r.seq <= response.from_seq || r.seq > response.last_seq) {
      return absl::InvalidArgumentError(
          absl::StrFormat("peer sent a record with seq %d outside its page (%d, %d]", r.seq,
                          response.from_seq, response.last_seq));
    }
  }
  return absl::OkStatus();
}

// A record whose clock is too far ahead of ours would be refused. Rather
// than step past it for good, stop the batch before it: the checkpoint
// stays there and later pulls retry it, so it is taken once our clock has
// caught up (or the writer's clock is fixed and it writes anew).
void Replicator::HoldBackTooFarAhead(Page& page) const {
  PEERKV_CHECK(executor_->IsCurrent());
  std::vector<Record>& records = page.response.records;
  page.checkpoint_seq = page.response.last_seq;
  for (size_t i = 0; i < records.size(); ++i) {
    absl::Status too_far_ahead = store_->CheckSkew(records[i].version.hlc);
    if (too_far_ahead.ok()) continue;
    page.checkpoint_seq = records[i].seq - 1;
    page.held_back = absl::Status(
        too_far_ahead.code(),
        absl::StrFormat("record from origin %s: %s", ReplicaIdToString(records[i].version.origin),
                        too_far_ahead.message()));
    records.resize(i);
    return;
  }
}

// Level with the peer's log: we hold everything it held when it answered,
// so its watermarks become ours too (which spares us its copies of what
// others send us). Not if records were held back; not if our value limit
// is below the protocol's (the peer left out values we cannot hold, and
// our claim would hide them from replicas that can); and never a claim
// further ahead than the clock bound. (Pages merge in order, so a page
// that reaches the peer's max seq is merged after all before it.)
Watermarks Replicator::WatermarksToAdopt(const Page& page) const {
  PEERKV_CHECK(executor_->IsCurrent());
  const bool caught_up = page.held_back.ok() && page.response.last_seq >= page.response.max_seq;
  Watermarks adopted;
  if (!caught_up || store_->options().max_value_bytes != kMaxValueBytes) return adopted;
  for (const auto& [origin, hlc] : page.response.watermarks) {
    if (store_->CheckSkew(hlc).ok() && !store_->Distrusts(origin)) adopted[origin] = hlc;
  }
  if (store_->GetWatermarks().Dominates(adopted)) adopted.clear();
  return adopted;
}

absl::StatusOr<MergeResult> Replicator::MergePage(uint64_t peer_id, Page& page) {
  PEERKV_CHECK(executor_->IsCurrent());
  Watermarks adopted = WatermarksToAdopt(page);
  // An up-to-date peer answers with nothing new: then there is nothing to
  // merge or write, and the round costs no store work at all.
  // A new open nonce of the peer moves it too: the checkpoint then names
  // the life of the peer's log it points into (restore_guard.h).
  const bool checkpoint_moves =
      page.response.incarnation != page.pulled_from.incarnation ||
      page.checkpoint_seq != page.pulled_from.seq ||
      (page.response.nonce != 0 && page.response.nonce != page.pulled_from.nonce);
  if (page.response.records.empty() && !checkpoint_moves && adopted.empty()) return MergeResult{};
  const size_t batch_records = page.response.records.size();
  absl::StatusOr<MergeResult> merged = store_->Merge(
      std::move(page.response.records),
      CheckpointUpdate{peer_id, PeerCheckpoint{page.response.incarnation, page.checkpoint_seq, page.response.nonce},
                       std::move(adopted)});
  if (merged.ok()) return merged;
  return absl::Status(merged.status().code(),
                      absl::StrFormat("merging %d records from this peer failed: %s",
                                      batch_records, merged.status().message()));
}

// The pull is retried later and fails the same way until the cause is
// gone: say so (not on every retry), and in status.
void Replicator::NoteMergeFailure(Peer& peer, const absl::Status& failure) {
  PEERKV_CHECK(executor_->IsCurrent());
  ++peer.merge_failures;
  const absl::Time now = executor_->Now();
  if (now - peer.last_merge_failure_log < kMergeFailureLogInterval) return;
  peer.last_merge_failure_log = now;
  Log(absl::StrFormat("peerkv: merges from peer %s (%s) fail (%d since the last such line): %s",
                      peer.info.name.empty() ? "(unnamed)" : peer.info.name,
                      ReplicaIdToString(peer.info.replica_id), peer.merge_failures,
                      failure.ToString()));
  peer.merge_failures = 0;
}

// Invalid records are refused for good (the page moved past them); a
// record held back counts once per page it stops.
void Replicator::NoteRefusals(Peer& peer, const Page& page, const MergeResult& merged) {
  PEERKV_CHECK(executor_->IsCurrent());
  const size_t refused = (page.held_back.ok() ? 0 : 1) + merged.refused.size();
  if (refused == 0) return;
  const absl::Status& refusal =
      page.held_back.ok() ? merged.refused.front().reason : page.held_back;
  peer.refused += refused;
  const absl::Time now = executor_->Now();
  if (now - peer.last_refusal_log < options_.refusal_log_interval) return;
  peer.last_refusal_log = now;
  Log(absl::StrFormat("peerkv: refused %d record%s from peer %s (%s), %d in all: %s", refused,
                      refused == 1 ? "" : "s",
                      peer.info.name.empty() ? "(unnamed)" : peer.info.name,
                      ReplicaIdToString(peer.info.replica_id), peer.refused,
                      std::string(refusal.message())));
}

void Replicator::NotePageMerged(Peer& peer, const Page& page, size_t won) {
  PEERKV_CHECK(executor_->IsCurrent());
  counters_.records_won += won;
  peer.last_exchange = executor_->Now();
  counters_.pull_time += peer.last_exchange - page.started;
  peer.checkpoint_seq = page.checkpoint_seq;
  peer.behind =
      page.response.max_seq > page.checkpoint_seq ? page.response.max_seq - page.checkpoint_seq : 0;
  peer.last_error = page.held_back.ok() ? "" : ErrorText(page.held_back.message());
  // Pass news on (epidemic push): a few random peers, not the one it came
  // from, so that chains of peers carry it in milliseconds without every
  // replica asking every other.
  if (won > 0 && options_.eager) NudgeSome(peer.info.replica_id);
}

void Replicator::ContinueOrFinish(Peer& peer, bool more, bool go_on) {
  PEERKV_CHECK(executor_->IsCurrent());
  if (go_on) {
    // The next page is on its way: the pull keeps its slot.
    ++peer.pages_in_a_row;
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
  PEERKV_CHECK(executor_->IsCurrent());
  PEERKV_CHECK(peer.pulling);
  PEERKV_CHECK(pulls_in_flight_ > 0);
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
  PEERKV_CHECK(executor_->IsCurrent());
  // Bounded: each turn removes a waiting peer.
  while (!waiting_pulls_.empty() && pulls_in_flight_ < std::max(options_.max_concurrent_pulls, 1)) {
    const uint64_t next = waiting_pulls_.front();
    waiting_pulls_.erase(waiting_pulls_.begin());
    StartPull(next);
  }
}

void Replicator::NudgeAll() {
  PEERKV_CHECK(executor_->IsCurrent());
  if (!started_ || !options_.eager) return;
  nudge_all_pending_ = true;
  ScheduleNudges();
}

void Replicator::ScheduleNudges() {
  PEERKV_CHECK(executor_->IsCurrent());
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
  PEERKV_CHECK(executor_->IsCurrent());
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
  PEERKV_CHECK(executor_->IsCurrent());
  forward_pending_ = true;
  forward_sources_.insert(except);
  ScheduleNudges();
}

void Replicator::Nudge(Peer& peer) {
  PEERKV_CHECK(executor_->IsCurrent());
  if (peer.links.empty()) return;
  ++counters_.nudges_sent;
  transport_->Nudge(ChooseLink(peer), store_->GetWatermarks());
}

bool Replicator::EvictGonePeer() {
  PEERKV_CHECK(executor_->IsCurrent());
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
  PEERKV_CHECK(executor_->IsCurrent());
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
  PEERKV_CHECK(executor_->IsCurrent());
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
