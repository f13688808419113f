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
#include "replication/snapshot.h"

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

// A clock mark further than max_clock_skew and this ahead of estimated real
// time forks to a fresh clock (see UpdateClock).
constexpr int64_t kClockForkMarginMs = 1000;

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
  // Our wall clock when the dial began (see Transport::Connected).
  int64_t dial_started_ms = 0;
  // Whether "unreachable" was logged and "reachable again" is due: one
  // line when the peer goes, one when it returns, however many dials fail
  // between.
  bool down_logged = false;
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
  // For a peer we do not dial (no slot): its last link went, and that was
  // logged; its return is logged once too.
  bool down_logged = false;
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
  // Its clock at its last hello (see PeerStatus).
  bool clock_known = false;
  int64_t clock_offset_ms = 0;
  int64_t clock_rtt_ms = -1;
  // Reconciliation (the end of replicator.cc): why a session is wanted once
  // the pull catches up (empty: not wanted), caught-up pulls in a row whose
  // whole-store fingerprints differed, and the sessions with it.
  std::string reconcile_why;
  int fingerprint_mismatches = 0;
  // A friend's device: the fingerprints (ours, its) of the last mismatch
  // seen, and of one a session then found in sync. The two sides sum over
  // what each lets the other read, which differ while their policies do
  // (one has not merged a revocation it may no longer read): once a
  // session found what they share equal, the same pair starts no more.
  std::optional<std::pair<rbsr::Fingerprint, rbsr::Fingerprint>> mismatch_seen;
  std::optional<std::pair<rbsr::Fingerprint, rbsr::Fingerprint>> mismatch_explained;
  std::optional<std::pair<rbsr::Fingerprint, rbsr::Fingerprint>> mismatch_reconciling;
  // Its records this replica refused in reconciliation, remembered while
  // it has a link (replication/reconcile.h RefusedMemory).
  std::shared_ptr<RefusedMemory> refused_memory = std::make_shared<RefusedMemory>();
  uint64_t reconciles = 0;
  absl::Time last_reconcile = absl::InfinitePast();
  absl::Time last_reconcile_start = absl::InfinitePast();
  std::string last_reconcile_result;
  // Snapshot bootstrap: the snapshot being copied from it (as asked so
  // far), the page request in flight, when it began; it answered
  // Unimplemented; the next one starts afresh (a page was refused).
  BootstrapMarker snapshot;
  SnapshotRequest snapshot_asked;
  absl::Time snapshot_started;
  bool snapshot_unsupported = false;
  bool snapshot_fresh = false;
};

// One answered page on its way into the store.
struct Replicator::Page {
  PullResponse response;
  // Where the checkpoint goes: the page's last seq. (A record too far
  // ahead does not stop it: the store quarantines it.)
  uint64_t checkpoint_seq = 0;
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
    // Records quarantined before a restart.
    ScheduleQuarantineRetry();
    PublishStatus();
    // The first round after a random fraction of the interval, so replicas
    // started together do not gossip in lockstep.
    const double phase = std::uniform_real_distribution<double>(0.1, 1.0)(rng_);
    Post([this] { Round(); }, options_.gossip_interval * phase);
    if (options_.reconcile_interval > absl::ZeroDuration()) {
      Post([this] { ReconcileRound(); }, options_.reconcile_interval);
    }
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
  slot.dial_started_ms = store_->wall_clock().NowMillis();
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
    std::optional<Restored> restored = RestoreEvidenceOf(info);
    if (restored.has_value()) {
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
  if (slot.down_logged) {
    slot.down_logged = false;
    Log(absl::StrFormat("peerkv: peer at %s is reachable again (replica %s%s)", address,
                        ReplicaIdToString(info.replica_id),
                        info.name.empty() ? "" : ", " + info.name));
  }
  slot.replica_id = info.replica_id;
  const int64_t sent_ms = result->hello_sent_ms != 0 ? result->hello_sent_ms : slot.dial_started_ms;
  const int64_t received_ms = store_->wall_clock().NowMillis();
  AddLink(result->link, info, /*inbound=*/false, address);
  if (info.physical_ms != 0 && peers_.count(info.replica_id) > 0) {
    NoteClock(info.replica_id, DiallerSample(sent_ms, received_ms, info.physical_ms));
  }
}

void Replicator::ScheduleRedial(Slot& slot, const absl::Status& why) {
  PEERKV_CHECK(executor_->IsCurrent());
  slot.last_error = ErrorText(why.message());
  // A redial after our own fork is not the peer's absence.
  if (!slot.down_logged && !absl::IsAborted(why)) {
    slot.down_logged = true;
    Log(absl::StrFormat("peerkv: peer at %s is unreachable: %s; dialling again with backoff "
                        "(logged again when it is back)",
                        slot.address, slot.last_error));
  }
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
  // A peer met: tombstone collection waits for what it acknowledges. A
  // friend's device holds only the keyspaces it may read, so it would
  // never acknowledge the others' tombstones by watermarks: it is waited
  // for by how far it merged our log (README "Tombstone collection"), and
  // only for the keyspaces it may read.
  if (info.readable == nullptr) {
    store_->NotePeer(info.replica_id);
  } else {
    store_->NoteFriend(info.replica_id, info.readable);
  }
  auto [it, created] = peers_.try_emplace(info.replica_id);
  if (created) {
    it->second = std::make_unique<Peer>();
    it->second->attempt = forgotten_attempts_;
  }
  Peer& peer = *it->second;
  peer.last_seen = executor_->Now();
  peer.info = info;
  if (peer.down_logged && inbound) {
    peer.down_logged = false;
    Log(absl::StrFormat("peerkv: peer %s%s, which dials us, is connected again",
                        ReplicaIdToString(info.replica_id),
                        info.name.empty() ? "" : " (" + info.name + ")"));
  }
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
    // Refused under the policy of now; the next link tries them again.
    if (peer.links.empty()) peer.refused_memory->Clear();
    peer.last_seen = executor_->Now();
    // The transport found it dead (a keepalive or call deadline).
    if (why.code() == absl::StatusCode::kDeadlineExceeded) ++peer.dead_links;
    if (peer.links.empty() || why.code() == absl::StatusCode::kDeadlineExceeded) {
      peer.last_error = ErrorText(why.message());
    }
    // A peer we dial is logged by its slot (ScheduleRedial).
    const bool dialled = std::any_of(slots_.begin(), slots_.end(), [&](const auto& s) {
      return s.second->replica_id == it->second;
    });
    if (peer.links.empty() && !dialled && !peer.down_logged) {
      peer.down_logged = true;
      Log(absl::StrFormat("peerkv: peer %s%s, which dials us, is unreachable: its last link "
                          "closed (%s)",
                          ReplicaIdToString(it->second),
                          peer.info.name.empty() ? "" : " (" + peer.info.name + ")",
                          peer.last_error));
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
  const int64_t received_ms = store_->wall_clock().NowMillis();
  Post([this, link, peer, received_ms] {
    // The server checked the hello already; other transports may not have.
    if (std::optional<std::string> clone = CloneEvidence(*store_, peer)) RefuseClone(*clone);
    if (!CheckPeer(peer, store_->replica_id()).ok()) {
      transport_->Close(link);
      return;
    }
    // The dialler's hello may say what it holds of us (Transport::
    // ConnectExpecting): a restore shows before anything is exchanged.
    std::optional<Restored> restored = RestoreEvidenceOf(peer);
    if (restored.has_value()) {
      transport_->Close(link);
      restored->why = absl::StrFormat("peer %s, which dialled us: %s",
                                      ReplicaIdToString(peer.replica_id), restored->why);
      Fork(*restored);
      return;
    }
    AddLink(link, peer, /*inbound=*/true, "");
    if (peer.physical_ms != 0 && peers_.count(peer.replica_id) > 0 && link_peer_.count(link) > 0) {
      Peer& known = *peers_.at(peer.replica_id);
      // A measured round trip (we dialled it too) is the better estimate.
      if (!known.clock_known || known.clock_rtt_ms < 0) {
        NoteClock(peer.replica_id, AnswererSample(received_ms, peer.physical_ms));
      }
    }
  });
}

void Replicator::NoteClock(uint64_t peer_id, const ClockSample& sample) {
  PEERKV_CHECK(executor_->IsCurrent());
  Peer& peer = *peers_.at(peer_id);
  peer.clock_known = true;
  peer.clock_offset_ms = sample.offset_ms;
  peer.clock_rtt_ms = sample.rtt_ms;
  clock_offsets_.Note(peer_id, sample.offset_ms, store_->wall_clock().NowMillis());
  UpdateClock();
  PublishStatus();
}

void Replicator::UpdateClock() {
  PEERKV_CHECK(executor_->IsCurrent());
  const ClockEstimate estimate = clock_offsets_.Estimate(store_->wall_clock().NowMillis());
  // No peer met lately: the last estimate stands (a clock set wrong stays
  // about as wrong; dropping the correction would make a fast replica
  // that went offline stamp far ahead again).
  if (estimate.peers == 0) return;
  store_->SetClockEstimate(estimate, options_.correct_clock);
  const int64_t bound = store_->options().max_clock_skew_ms;
  const int64_t lead = -estimate.real_offset_ms;
  if (lead > bound / 2) {
    if (!clock_lead_logged_) {
      clock_lead_logged_ = true;
      Log(absl::StrFormat(
          "peerkv: WARNING: this replica's clock is %+d ms ahead of real time as the clocks of "
          "%d peer(s) tell (more than half of max_clock_skew %d ms); %s",
          lead, estimate.peers, bound,
          options_.correct_clock ? "new writes are stamped from the corrected clock"
                                 : "not corrected (--clock-correction=false)"));
    }
  } else {
    clock_lead_logged_ = false;
  }
  if (!options_.correct_clock) return;
  // The clock mark beyond the bound ahead of real time: a clock that is
  // ahead (the mark starts at the wall clock when the store opens), or was
  // ahead and was fixed, then restarted (the mark persists). Every write
  // would be stamped that far ahead until real time catches up (the clock
  // never goes back), so a fresh clock under a new id. An honest mark is
  // at most the bound ahead (HybridClock::Observe); the second of margin
  // is for the estimate's error.
  const int64_t mark_ms = static_cast<int64_t>(HlcMillis(store_->clock_mark()));
  const int64_t ahead_ms = mark_ms - store_->RealNowMillis();
  if (ahead_ms > bound + kClockForkMarginMs) {
    Restored why{store_->replica_id(), UINT64_MAX,
                 absl::StrFormat("this replica's clock mark is %d ms ahead of real time as the "
                                 "clocks of %d peer(s) tell (max_clock_skew %d ms)",
                                 ahead_ms, estimate.peers, bound)};
    Fork(why, /*fresh_clock=*/true);
  }
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

void Replicator::OnPushMerged(LinkId link, const MergeResult& merged) {
  if (merged.refused.empty() && merged.quarantined.empty()) return;
  Post([this, link, merged] {
    auto it = link_peer_.find(link);
    if (it == link_peer_.end() || peers_.count(it->second) == 0) return;
    NoteRefusals(*peers_.at(it->second), merged);
    PublishStatus();
  });
}

std::optional<Restored> Replicator::RestoreEvidenceOf(const PeerInfo& peer) const {
  // Only an own device's word: a friend's device could otherwise make this
  // replica fork (retire its id, re-stamp its recent writes, be pulled from
  // zero by every peer) at will, with a made-up checkpoint, watermark or
  // retired id.
  if (peer.readable != nullptr) return std::nullopt;
  std::optional<Restored> restored = RestoreEvidence(*store_, peer.held);
  if (!restored.has_value()) restored = RetiredIdEvidence(*store_, peer);
  return restored;
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

void Replicator::Fork(const Restored& restored, bool fresh_clock) {
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
  absl::StatusOr<Store::ForkResult> fork =
      store_->Fork(restored.since_seq, fresh_clock, restored.clock_floor);
  if (!fork.ok()) {
    // Nothing changed: still the old id.
    Log(absl::StrFormat("peerkv: %s (%s), but forking to a new replica id failed: %s",
                        fresh_clock ? "this replica's clock mark is far ahead"
                                    : "this replica's data directory looks restored from an "
                                      "older copy",
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
  // What peers hold of the old id is no longer ours to vouch for by log:
  // compare everything once each has been pulled again.
  for (auto& [id, peer] : peers_) peer->reconcile_why = "this replica forked";
  if (fresh_clock) {
    ++counters_.clock_forks;
    Log(absl::StrFormat(
        "peerkv: WARNING: %s: its writes would be stamped that far ahead until real time "
        "catches up. Forked from replica id %s to %s (incarnation %s) with a fresh clock; "
        "records keep their versions (a new write of a key stored with a version ahead is "
        "stamped just above it); %d writes made during the fork re-stamped",
        evidence, ReplicaIdToString(old_id), ReplicaIdToString(fork->new_id),
        ReplicaIdToString(fork->new_incarnation), fork->restamped));
  } else {
    Log(absl::StrFormat(
        "peerkv: this replica's data directory was restored from an older copy: %s. Forked from "
        "replica id %s to %s (incarnation %s); its records keep their versions, except %d "
        "written since the restored copy was opened (after seq %d), re-stamped as new writes; "
        "peers pull it from zero, and it pulls back the writes of %s it lost",
        evidence, ReplicaIdToString(old_id), ReplicaIdToString(fork->new_id),
        ReplicaIdToString(fork->new_incarnation), fork->restamped, restored.since_seq,
        ReplicaIdToString(old_id)));
  }
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
  // A friend's device cannot make us forget watermarks and checkpoints.
  if (info.retired.empty() || info.readable != nullptr) return;
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
  // A slow fallback for the scheduled retry (the skew check's notion of
  // now may move other than the wall clock does).
  if (store_->NextQuarantineRetry() == absl::ZeroDuration()) RetryQuarantine();
  // A peer still linked still vouches for the offset of its hello (clocks
  // drift by parts per million), so a long-lived link does not age out of
  // the estimate.
  const int64_t now_ms = store_->wall_clock().NowMillis();
  bool sampled = false;
  for (const auto& [id, peer] : peers_) {
    if (peer->links.empty() || !peer->clock_known) continue;
    clock_offsets_.Note(id, peer->clock_offset_ms, now_ms);
    sampled = true;
  }
  if (sampled) UpdateClock();
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
  if (WantsSnapshot(peer)) {
    peer.pulling = true;
    ++pulls_in_flight_;
    StartSnapshot(peer);
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

void Replicator::SendPull(Peer& peer, PeerCheckpoint from) { SendPull(peer, from, from); }

void Replicator::SendPull(Peer& peer, PeerCheckpoint from, PeerCheckpoint merged) {
  PEERKV_CHECK(executor_->IsCurrent());
  PEERKV_CHECK(peer.pulling);
  PullRequest request;
  request.requester = store_->replica_id();
  request.incarnation = from.incarnation;
  request.after_seq = from.seq;
  request.after_nonce = from.nonce;
  request.merged_seq =
      merged.incarnation == from.incarnation ? std::min(merged.seq, from.seq) : 0;
  request.max_records = options_.batch_records;
  request.max_bytes = options_.batch_bytes;
  request.max_value_bytes = store_->options().max_value_bytes;
  // Not to a friend's device: our watermarks name versions of keyspaces it
  // may not read (it then sends what it has; the merge keeps the greater).
  if (peer.info.readable == nullptr) request.watermarks = store_->GetWatermarks();
  request.physical_ms = store_->RealNowMillis();
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
  Page page{std::move(*result), 0, peer.pulled_from, peer.pull_started};
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
  const bool from_friend = peer.info.readable != nullptr;
  absl::Status unvouched;
  if (std::optional<Restored> restored =
          OwnWritesWeLack(page.response, from_friend, &unvouched)) {
    if (!unvouched.ok()) {
      // A friend's word is not evidence that we were restored (it could
      // make us fork at will, see RestoreEvidenceOf): refused unmerged,
      // as a write of our own id we never made, unless every such write
      // carries the signature of a device of our own user, which the
      // friend cannot forge (a restored replica's lost writes that only a
      // friend's device held: seed 1341 of the simulation).
      const absl::Status refused = absl::FailedPreconditionError(absl::StrFormat(
          "a friend's device sent writes of this replica's own id that it lacks (%s), not "
          "all signed by a device of this replica's user (%s); a friend's word does not fork "
          "this replica: page refused",
          restored->why, unvouched.message()));
      Log(absl::StrFormat("peerkv: peer %s: %s", ReplicaIdToString(peer_id), refused.message()));
      FinishPull(peer, refused);
      return;
    }
    if (from_friend) {
      restored->why = absl::StrCat(restored->why,
                                   "; each signed by a device of this replica's user, sent by a "
                                   "friend's device");
    }
    // Before merging anything: the records are ours from a lost life, and
    // the fork's peers pull them back from zero under the new id.
    restored->why = absl::StrFormat("peer %s: %s", ReplicaIdToString(peer_id), restored->why);
    FinishPull(peer, absl::AbortedError("this replica forked to a new replica id"));
    Fork(*restored);
    return;
  }
  ++counters_.pulls;
  counters_.records_received += page.response.records.size();
  peer.info.incarnation = page.response.incarnation;
  page.checkpoint_seq = page.response.last_seq;
  const bool more = page.response.last_seq < page.response.max_seq &&
                    page.response.last_seq > page.response.from_seq;
  // Pages in a row, ahead of peers waiting for a slot, but not forever
  // (kMaxPagesInARow); with nobody waiting there is nobody to let in.
  const bool go_on = more && !peer.links.empty() &&
                     (waiting_pulls_.empty() || peer.pages_in_a_row + 1 < kMaxPagesInARow);
  if (go_on) {
    // Pipelining: the peer reads, encodes and sends the next page while
    // this one merges and syncs. At most one page is in flight besides the
    // one merging: the next is asked for only once this one is taken. The
    // one before it merged: where this one was asked from.
    SendPull(peer, PeerCheckpoint{page.response.incarnation, page.checkpoint_seq, page.response.nonce},
             page.pulled_from);
    ++counters_.pages_prefetched;
  }
  absl::StatusOr<MergeResult> merged = MergePage(peer_id, page);
  if (!merged.ok()) {
    if (go_on) ++counters_.prefetches_discarded;
    NoteMergeFailure(peer, merged.status());
    FinishPull(peer, merged.status());
    return;
  }
  NoteRefusals(peer, *merged);
  NotePageMerged(peer, page, merged->won);
  ContinueOrFinish(peer, more, go_on);
}

std::optional<Restored> Replicator::OwnWritesWeLack(const PullResponse& response,
                                                    bool from_friend,
                                                    absl::Status* unvouched) const {
  const uint64_t self = store_->replica_id();
  HeldOf claim{.replica_id = self};
  *unvouched = absl::OkStatus();
  for (const Record& record : response.records) {
    if (record.version.origin != self) continue;
    // One we hold is no lost write: after a fresh-clock fork, a key stored
    // ahead of the clock is written again just above its version, beyond
    // our own clock (Store::StampLocal), and a peer that pulled it sends
    // it back. Held means this very record (or a later version): the same
    // version with another value is a write of a lost life that this
    // restored copy stamped again (seed 2537 of the simulation).
    absl::StatusOr<std::optional<Record>> held = store_->Get(record.keyspace, record.key);
    if (held.ok() && held->has_value()) {
      const Record& mine = **held;
      if (record.version < mine.version) continue;
      if (mine.version == record.version && mine.deleted == record.deleted &&
          mine.value == record.value) {
        continue;
      }
    }
    claim.watermark = std::max(claim.watermark, record.version.hlc);
    if (from_friend && unvouched->ok()) {
      absl::Status vouched = store_->CheckRecordGate(record, MergeSource::kOwnWriteFromFriend);
      if (!vouched.ok()) {
        *unvouched = absl::Status(vouched.code(), absl::StrFormat("%s/%s: %s", record.keyspace,
                                                                  record.key, vouched.message()));
      }
    }
  }
  if (claim.watermark == 0) return std::nullopt;
  std::optional<Restored> restored = RestoreEvidence(*store_, claim);
  if (restored.has_value()) {
    restored->why = absl::StrCat("a pulled page holds a write of this replica's own that it lacks (",
                                 restored->why, ")");
  }
  return restored;
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

// Level with the peer's log: we hold everything it held when it answered,
// so its watermarks become ours too (which spares us its copies of what
// others send us). Not if our value limit is below the protocol's (the
// peer left out values we cannot hold, and our claim would hide them from
// replicas that can); and never a claim further ahead than the clock bound
// (CheckSkew). A record of the page that went to quarantine is not ours
// yet: the store lowers the claim for its origin below it. (Pages merge in
// order, so a page that reaches the peer's max seq is merged after all
// before it.)
Watermarks Replicator::WatermarksToAdopt(uint64_t peer_id, const Page& page) const {
  PEERKV_CHECK(executor_->IsCurrent());
  const bool caught_up = page.response.last_seq >= page.response.max_seq;
  Watermarks adopted;
  if (!caught_up || store_->options().max_value_bytes != kMaxValueBytes) return adopted;
  // Never from a friend's device (its server sends none, but a friend's
  // word is not ours to trust either): it serves only the keyspaces we may
  // read there, so being level with its log says nothing of the others.
  // Adopting its coverage would claim versions we never received, and
  // tombstone collection's stale rule would then refuse as stale (and
  // answer with a fresh tombstone) a live record of such a version when it
  // arrives from one of our own devices: our own records lost. Only the
  // checkpoint advances on a friend's link.
  if (auto it = peers_.find(peer_id); it != peers_.end() && it->second->info.readable != nullptr) {
    return adopted;
  }
  for (const auto& [origin, hlc] : page.response.watermarks) {
    // A retired id's claim (Store::ServedWatermarks) is kept by the store
    // as stale evidence, not as a watermark: its final mark may lie far
    // ahead (a fresh-clock fork), and no write of it will come above it.
    if (store_->Distrusts(origin) || store_->CheckSkew(hlc).ok()) adopted[origin] = hlc;
  }
  if (store_->ServedWatermarks().Dominates(adopted)) adopted.clear();
  return adopted;
}

// The merge gate's view of a peer (README "Signed records"): a friend's
// device, as its link's transport authenticated it, or one of ours. A
// peer not (or no longer) known counts as a friend's: strictest.
MergeSource Replicator::SourceOf(uint64_t peer_id) const {
  auto it = peers_.find(peer_id);
  if (it == peers_.end()) return MergeSource::kFriend;
  return it->second->info.readable != nullptr ? MergeSource::kFriend : MergeSource::kOwnDevice;
}

absl::StatusOr<MergeResult> Replicator::MergePage(uint64_t peer_id, Page& page) {
  PEERKV_CHECK(executor_->IsCurrent());
  Watermarks adopted = WatermarksToAdopt(peer_id, page);
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
  auto failed = [batch_records](const absl::Status& status) {
    return absl::Status(status.code(), absl::StrFormat("merging %d records from this peer failed: %s",
                                                       batch_records, status.message()));
  };
  // Reserved records (policies, groups, devices) first, in a merge of their
  // own: the merge gate judges the keyspace's other records by the policy
  // as committed, so a policy pulled in the same page as the posts it
  // governs must be in the store before they are judged.
  std::vector<Record> reserved;
  std::erase_if(page.response.records, [&reserved](Record& record) {
    if (!IsReservedKeyspace(record.keyspace)) return false;
    reserved.push_back(std::move(record));
    return true;
  });
  MergeResult reserved_merged;
  if (!reserved.empty()) {
    absl::StatusOr<MergeResult> first =
        store_->Merge(std::move(reserved), std::nullopt, SourceOf(peer_id));
    if (!first.ok()) return failed(first.status());
    reserved_merged = std::move(*first);
  }
  absl::StatusOr<MergeResult> merged = store_->Merge(
      std::move(page.response.records),
      CheckpointUpdate{peer_id, PeerCheckpoint{page.response.incarnation, page.checkpoint_seq, page.response.nonce},
                       std::move(adopted)},
      SourceOf(peer_id));
  if (merged.ok()) {
    merged->won += reserved_merged.won;
    merged->already_quarantined += reserved_merged.already_quarantined;
    for (RefusedRecord& r : reserved_merged.refused) merged->refused.push_back(std::move(r));
    for (RefusedRecord& r : reserved_merged.quarantined) merged->quarantined.push_back(std::move(r));
    return merged;
  }
  return failed(merged.status());
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
// record too far ahead is quarantined by the store and counts once: pulled
// again while it is there, it is not new (MergeResult::already_quarantined).
void Replicator::NoteRefusals(Peer& peer, const MergeResult& merged) {
  PEERKV_CHECK(executor_->IsCurrent());
  const size_t refused = merged.refused.size() + merged.quarantined.size();
  if (refused == 0) return;
  counters_.quarantined += merged.quarantined.size();
  peer.refused += refused;
  if (!merged.quarantined.empty()) ScheduleQuarantineRetry();
  const absl::Time now = executor_->Now();
  if (now - peer.last_refusal_log < options_.refusal_log_interval) return;
  peer.last_refusal_log = now;
  const absl::Status& refusal =
      merged.quarantined.empty() ? merged.refused.front().reason : merged.quarantined.front().reason;
  std::string held;
  if (!merged.quarantined.empty()) {
    // When the last of them may merge: the hlc's time less the bound.
    uint64_t latest = 0;
    for (const RefusedRecord& r : merged.quarantined) latest = std::max(latest, r.version.hlc);
    const int64_t due_ms =
        static_cast<int64_t>(HlcMillis(latest)) - store_->options().max_clock_skew_ms;
    held = absl::StrFormat(" (%d quarantined until local time reaches %s, then merged)",
                           merged.quarantined.size(),
                           absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixMillis(due_ms),
                                            absl::UTCTimeZone()));
  }
  Log(absl::StrFormat("peerkv: refused %d record%s from peer %s (%s)%s, %d in all: %s", refused,
                      refused == 1 ? "" : "s",
                      peer.info.name.empty() ? "(unnamed)" : peer.info.name,
                      ReplicaIdToString(peer.info.replica_id), held, peer.refused,
                      std::string(refusal.message())));
}

void Replicator::ScheduleQuarantineRetry() {
  PEERKV_CHECK(executor_->IsCurrent());
  const std::optional<absl::Duration> delay = store_->NextQuarantineRetry();
  if (!delay.has_value()) return;
  const absl::Time at = executor_->Now() + *delay;
  // One retry pending at a time, the earliest wanted.
  if (quarantine_retry_at_ <= at) return;
  quarantine_retry_at_ = at;
  Post(
      [this, at] {
        if (quarantine_retry_at_ != at) return;  // superseded by an earlier one
        quarantine_retry_at_ = absl::InfiniteFuture();
        RetryQuarantine();
      },
      *delay);
}

// The quarantined records local time now admits go through the normal
// merge (they may lose); merged ones are news for peers.
void Replicator::RetryQuarantine() {
  PEERKV_CHECK(executor_->IsCurrent());
  absl::StatusOr<MergeResult> merged = store_->RetryQuarantined();
  if (!merged.ok()) {
    Log(absl::StrCat("peerkv: merging quarantined records failed (retried later): ",
                     merged.status().ToString()));
    Post([this] { ScheduleQuarantineRetry(); }, options_.gossip_interval);
    return;
  }
  counters_.quarantine_won += merged->won;
  if (merged->won > 0 && options_.eager) NudgeSome(0);
  ScheduleQuarantineRetry();
  PublishStatus();
}

void Replicator::NotePageMerged(Peer& peer, const Page& page, size_t won) {
  PEERKV_CHECK(executor_->IsCurrent());
  counters_.records_won += won;
  peer.last_exchange = executor_->Now();
  counters_.pull_time += peer.last_exchange - page.started;
  peer.checkpoint_seq = page.checkpoint_seq;
  peer.behind =
      page.response.max_seq > page.checkpoint_seq ? page.response.max_seq - page.checkpoint_seq : 0;
  peer.last_error.clear();
  // Pass news on (epidemic push): a few random peers, not the one it came
  // from, so that chains of peers carry it in milliseconds without every
  // replica asking every other.
  if (won > 0 && options_.eager) NudgeSome(peer.info.replica_id);
  NoteForReconcile(peer, page.response, page.pulled_from);
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
  // A friend's device gets no watermarks (see SendPull).
  transport_->Nudge(ChooseLink(peer),
                    peer.info.readable == nullptr ? store_->GetWatermarks() : Watermarks{});
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
  clock_offsets_.Forget(id);
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
    s.clock_known = peer->clock_known;
    s.clock_offset_ms = peer->clock_offset_ms;
    s.clock_rtt_ms = peer->clock_rtt_ms;
    s.reconciles = peer->reconciles;
    s.last_reconcile = peer->last_reconcile;
    s.last_reconcile_result = peer->last_reconcile_result;
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

// ------------------------------------------------------------ reconcile
// The engine's reconcile sessions (replication/reconcile.h): what starts
// them (an operator, a peer log that started over, whole-store
// fingerprints that differ after caught-up pulls, the periodic timer), one
// session at a time on the executor, each round over the transport, the
// records it brings merged with Store::Merge.
namespace {

bool Names(const PeerStatus& s, const std::string& peer) {
  return (!s.name.empty() && s.name == peer) || (!s.address.empty() && s.address == peer) ||
         (s.replica_id != 0 && ReplicaIdToString(s.replica_id) == peer);
}

}  // namespace

void Replicator::Reconcile(const std::string& peer, ReconcileDone done) {
  // The caller's callback runs once, whatever happens: a stopped engine
  // drops the task (and with it `done`), so wrap it to answer then too.
  struct Once {
    ReconcileDone done;
    ~Once() {
      if (done) done(absl::UnavailableError("the replication engine stopped"));
    }
  };
  auto once = std::make_shared<Once>();
  once->done = std::move(done);
  Post([this, peer, once] {
    uint64_t id = 0;
    for (const auto& [peer_id, p] : peers_) {
      PeerStatus s;
      s.name = p->info.name;
      s.address = p->address;
      s.replica_id = peer_id;
      if (Names(s, peer)) id = peer_id;
    }
    if (id == 0) {
      for (const auto& [address, slot] : slots_) {
        if (address == peer && slot->replica_id != 0) id = slot->replica_id;
      }
    }
    ReconcileDone done = std::move(once->done);
    if (id == 0) {
      done(absl::NotFoundError(absl::StrFormat(
          "no peer named '%s' (give a name, address or replica id as status shows it)", peer)));
      return;
    }
    StartReconcile(id, "asked by an operator", std::move(done));
  });
}

void Replicator::StartReconcile(uint64_t peer_id, std::string why, ReconcileDone done) {
  PEERKV_CHECK(executor_->IsCurrent());
  auto it = peers_.find(peer_id);
  if (it == peers_.end() || it->second->links.empty()) {
    if (done) {
      done(absl::UnavailableError(
          absl::StrFormat("peer %s has no link now", ReplicaIdToString(peer_id))));
    }
    return;
  }
  // Already running or queued with it: one session serves both.
  if (reconcile_ != nullptr && reconcile_->peer_id == peer_id) {
    if (done) reconcile_->done.push_back(std::move(done));
    return;
  }
  for (std::unique_ptr<ReconcileJob>& job : reconcile_queue_) {
    if (job->peer_id == peer_id) {
      if (done) job->done.push_back(std::move(done));
      return;
    }
  }
  auto job = std::make_unique<ReconcileJob>();
  job->id = ++reconcile_jobs_;
  job->peer_id = peer_id;
  job->why = std::move(why);
  if (done) job->done.push_back(std::move(done));
  it->second->reconcile_why.clear();
  it->second->last_reconcile_start = executor_->Now();
  it->second->mismatch_reconciling = it->second->mismatch_seen;
  reconcile_queue_.push_back(std::move(job));
  if (reconcile_ == nullptr) RunNextReconcile();
}

void Replicator::RunNextReconcile() {
  PEERKV_CHECK(executor_->IsCurrent());
  while (reconcile_ == nullptr && !reconcile_queue_.empty()) {
    reconcile_ = std::move(reconcile_queue_.front());
    reconcile_queue_.pop_front();
    auto it = peers_.find(reconcile_->peer_id);
    if (it == peers_.end() || it->second->links.empty()) {
      FinishReconcile(absl::UnavailableError("the peer has no link now"));
      continue;
    }
    if (reconcile_source_ == nullptr) reconcile_source_ = StoreReconcileSource(*store_);
    reconcile_->link = ChooseLink(*it->second);
    ReconcileSource* source = reconcile_source_.get();
    if (it->second->info.readable != nullptr) {
      // A friend's device: our requests name only what it may read.
      reconcile_->filtered =
          FilteredReconcileSource(*reconcile_source_, it->second->info.readable);
      source = reconcile_->filtered.get();
    }
    reconcile_->refused = it->second->refused_memory;
    reconcile_->overlay = RefusedOverlay(*source, *reconcile_->refused);
    source = reconcile_->overlay.get();
    reconcile_->session = std::make_unique<ReconcileSession>(
        *source, options_.reconcile_limits, executor_->Now());
    ReconcileStep();
  }
}

void Replicator::ReconcileStep() {
  PEERKV_CHECK(executor_->IsCurrent());
  ReconcileJob& job = *reconcile_;
  absl::StatusOr<std::optional<ReconcileRequest>> request = job.session->Next(executor_->Now());
  if (!request.ok()) {
    FinishReconcile(request.status());
    return;
  }
  if (!request->has_value()) {
    FinishReconcile(job.session->report());
    return;
  }
  std::string bytes = EncodeReconcileRequest(**request);
  job.session->NoteSent(bytes.size());
  const uint64_t id = job.id;
  const uint64_t round = ++job.round;
  transport_->Reconcile(job.link, std::move(bytes),
                        OnExecutor<absl::StatusOr<std::string>>(
                            [this, id, round](absl::StatusOr<std::string> answer) {
                              if (reconcile_ == nullptr || reconcile_->id != id ||
                                  reconcile_->round != round) {
                                return;
                              }
                              OnReconcileAnswer(id, std::move(answer));
                            }));
  // A round the transport lost ends the session, like a lost pull.
  Post(
      [this, id, round] {
        if (reconcile_ == nullptr || reconcile_->id != id || reconcile_->round != round) return;
        FinishReconcile(absl::DeadlineExceededError(
            absl::StrFormat("no reconcile answer within %s",
                            absl::FormatDuration(options_.pull_timeout))));
      },
      options_.pull_timeout);
}

void Replicator::OnReconcileAnswer(uint64_t job_id, absl::StatusOr<std::string> answer) {
  PEERKV_CHECK(executor_->IsCurrent());
  ReconcileJob& job = *reconcile_;
  ++job.round;  // the timeout of this round is moot
  if (!answer.ok()) {
    FinishReconcile(answer.status());
    return;
  }
  absl::StatusOr<ReconcileResponse> response =
      DecodeReconcileResponse(*answer, kMaxValueBytes);
  absl::StatusOr<std::vector<Record>> merge =
      response.ok() ? job.session->OnResponse(*response, answer->size(), executor_->Now())
                    : absl::StatusOr<std::vector<Record>>(response.status());
  if (!merge.ok()) {
    // The peer sent what it must not: this link (only) is closed.
    if (merge.status().code() == absl::StatusCode::kInvalidArgument ||
        merge.status().code() == absl::StatusCode::kResourceExhausted) {
      const LinkId link = job.link;
      transport_->Close(link);
      DropLink(link, merge.status());
    }
    FinishReconcile(merge.status());
    return;
  }
  // Values this store cannot hold: skipped, as a pull would not send them.
  DropValuesOverLimit(*merge, store_->options().max_value_bytes);
  if (!merge->empty()) {
    // Kept to remember what the merge refuses (RefusedMemory needs values).
    std::vector<Record> offered = *merge;
    absl::StatusOr<MergeResult> merged =
        store_->Merge(std::move(*merge), std::nullopt, SourceOf(job.peer_id));
    if (!merged.ok()) {
      FinishReconcile(merged.status());
      return;
    }
    if (job.filtered != nullptr) {
      job.refused->NoteWithStaleTombstones(offered, *merged);  // a friend's device
    } else {
      job.refused->Note(offered, *merged);
    }
    job.session->NoteMerged(merged->won, merged->refused.size() + merged->quarantined.size() +
                                             merged->already_quarantined);
    counters_.records_won += merged->won;
    // Refused or quarantined here as from a pull: counted once per record
    // against the peer, logged, and the quarantine retry scheduled.
    auto peer = peers_.find(job.peer_id);
    if (peer != peers_.end()) NoteRefusals(*peer->second, *merged);
    if (merged->won > 0 && options_.eager) NudgeSome(job.peer_id);
  }
  ReconcileStep();
}

void Replicator::FinishReconcile(absl::StatusOr<ReconcileReport> result) {
  PEERKV_CHECK(executor_->IsCurrent());
  std::unique_ptr<ReconcileJob> job = std::move(reconcile_);
  // The source's cached view may hold a keyspace's registers: not kept
  // between sessions.
  reconcile_source_.reset();
  ++counters_.reconciles;
  auto it = peers_.find(job->peer_id);
  Peer* peer = it == peers_.end() ? nullptr : it->second.get();
  const std::string peer_name =
      peer == nullptr || peer->info.name.empty() ? ReplicaIdToString(job->peer_id)
                                                 : peer->info.name;
  std::string summary;
  if (result.ok()) {
    result->peer = peer_name;
    if (result->was_in_sync) ++counters_.reconciles_in_sync;
    for (const KeyspaceDiff& d : result->keyspaces) {
      counters_.reconcile_records_fetched += d.fetched;
      counters_.reconcile_records_pushed += d.peer_lacked;
    }
    summary = ReconcileSummary(*result);
    if (!result->was_in_sync) {
      Log(absl::StrFormat("peerkv: reconciled with peer %s (%s): %s; %d rounds, %d bytes sent, "
                          "%d received, %s",
                          peer_name, job->why, summary, result->rounds, result->bytes_sent,
                          result->bytes_received, absl::FormatDuration(result->time)));
    }
  } else {
    ++counters_.reconciles_failed;
    summary = "failed: " + std::string(result.status().message());
    Log(absl::StrFormat("peerkv: reconcile with peer %s (%s) failed: %s", peer_name, job->why,
                        result.status().ToString()));
  }
  if (peer != nullptr && peer->info.readable != nullptr && result.ok() && result->in_sync) {
    peer->mismatch_explained = peer->mismatch_reconciling;
  }
  if (peer != nullptr) {
    ++peer->reconciles;
    peer->last_reconcile = executor_->Now();
    peer->last_reconcile_result = summary;
  }
  PublishStatus();
  for (ReconcileDone& done : job->done) {
    if (done) done(result);
  }
  // The next one on a later turn: the callbacks above may have queued more.
  Post([this] { RunNextReconcile(); });
}

void Replicator::ReconcileRound() {
  PEERKV_CHECK(executor_->IsCurrent());
  const absl::Time now = executor_->Now();
  for (const auto& [id, peer] : peers_) {
    if (peer->links.empty()) continue;
    if (now - peer->last_reconcile_start < options_.reconcile_interval) continue;
    StartReconcile(id, "periodic", nullptr);
  }
  Post([this] { ReconcileRound(); }, options_.reconcile_interval);
}

// "Nothing behind" on the peer's side too: the watermarks it last said it
// holds (its pull requests carry them; Store::AcknowledgedPeers) cover
// ours. A peer still pulling our log claims ours only once it reaches the
// end; until then its store differs from ours for that plain reason, and
// a session would push it what its pull is bringing anyway (a source
// whose new replica pulled 1,000,000 records pushed it 640,000 more
// through 64 rounds of reconcile). A friend's device sends no watermarks:
// not checked.
bool Replicator::PeerHoldsAllWeHold(const Peer& peer) const {
  if (peer.info.readable != nullptr) return true;
  const Watermarks ours = store_->GetWatermarks();
  for (const auto& [id, held] : store_->AcknowledgedPeers()) {
    if (id != peer.info.replica_id) continue;
    return held.Dominates(ours);
  }
  return false;
}

void Replicator::NoteForReconcile(Peer& peer, const PullResponse& response,
                                  const PeerCheckpoint& from) {
  PEERKV_CHECK(executor_->IsCurrent());
  // Its log started over although we had a checkpoint in it: the log no
  // longer vouches for what we merged from it before.
  if (from.seq > 0 && response.from_seq == 0) {
    peer.reconcile_why = from.incarnation != response.incarnation
                             ? "the peer's incarnation changed"
                             : "our checkpoint is beyond the peer's log";
  }
  const bool caught_up = response.last_seq == response.max_seq;
  if (!caught_up) return;
  if (response.store_fingerprint.has_value() &&
      options_.reconcile_interval > absl::ZeroDuration() && !store_->Bootstrap().has_value()) {
    // A friend's server tells the fingerprint of what we may read there;
    // ours of what it may read here is the one to compare (equal when the
    // policies agree, e.g. its blog that we read and it owns).
    absl::StatusOr<rbsr::Fingerprint> mine =
        peer.info.readable == nullptr ? StoreFingerprint(*store_)
                                      : StoreFingerprint(*store_, *peer.info.readable);
    const bool explained =
        mine.ok() && peer.info.readable != nullptr && peer.mismatch_explained.has_value() &&
        peer.mismatch_explained->first == *mine &&
        peer.mismatch_explained->second == *response.store_fingerprint;
    if (mine.ok() && *mine != *response.store_fingerprint && !explained &&
        PeerHoldsAllWeHold(peer)) {
      if (peer.info.readable != nullptr) peer.mismatch_seen.emplace(*mine, *response.store_fingerprint);
      // Twice in a row: a write on either side in flight explains one.
      if (++peer.fingerprint_mismatches >= 2 && peer.reconcile_why.empty() &&
          executor_->Now() - peer.last_reconcile_start >= options_.reconcile_min_gap) {
        peer.reconcile_why = "the store fingerprints differ with nothing behind";
      }
    } else if (mine.ok()) {
      peer.fingerprint_mismatches = 0;
    }
  }
  if (!peer.reconcile_why.empty()) {
    peer.fingerprint_mismatches = 0;
    const uint64_t id = peer.info.replica_id;
    std::string why = peer.reconcile_why;
    Post([this, id, why] { StartReconcile(id, why, nullptr); });
  }
}


// Snapshot bootstrap (README "Snapshot bootstrap"). A snapshot takes the
// peer's pull slot (Peer::pulling, attempt, pull_link): it is the pull of a
// replica that holds nothing yet, and ends by pulling the log from the
// snapshot's point.

bool Replicator::WantsSnapshot(const Peer& peer) const {
  PEERKV_CHECK(executor_->IsCurrent());
  if (!options_.snapshot_bootstrap || peer.snapshot_unsupported) return false;
  if (const std::optional<BootstrapMarker> marker = store_->Bootstrap(); marker.has_value()) {
    // One snapshot at a time, from the peer it began with; other peers are
    // pulled as usual meanwhile.
    return marker->peer_id == peer.info.replica_id;
  }
  if (store_->max_seq() != 0) return false;
  absl::StatusOr<std::optional<PeerCheckpoint>> checkpoint =
      store_->GetCheckpoint(peer.info.replica_id);
  return checkpoint.ok() && !checkpoint->has_value();
}

void Replicator::StartSnapshot(Peer& peer) {
  PEERKV_CHECK(executor_->IsCurrent());
  const uint64_t peer_id = peer.info.replica_id;
  std::optional<BootstrapMarker> marker;
  if (!peer.snapshot_fresh) marker = store_->Bootstrap();
  peer.snapshot_fresh = false;
  const std::string name = peer.info.name.empty() ? "(unnamed)" : peer.info.name;
  if (marker.has_value() && marker->peer_id == peer_id) {
    peer.snapshot = *marker;
    Log(absl::StrFormat(
        "peerkv: resuming the snapshot of peer %s (%s) after %d records (point seq %d)", name,
        ReplicaIdToString(peer_id), marker->records, marker->point_seq));
  } else {
    peer.snapshot = BootstrapMarker{.peer_id = peer_id};
  }
  peer.snapshot_started = executor_->Now();
  SendSnapshot(peer);
}

void Replicator::SendSnapshot(Peer& peer) {
  PEERKV_CHECK(executor_->IsCurrent());
  PEERKV_CHECK(peer.pulling);
  SnapshotRequest request;
  request.requester = store_->replica_id();
  request.incarnation = peer.snapshot.incarnation;
  request.point_seq = peer.snapshot.point_seq;
  request.after_keyspace = peer.snapshot.after_keyspace;
  request.after_key = peer.snapshot.after_key;
  request.max_records = options_.snapshot_records;
  request.max_bytes = options_.snapshot_bytes;
  request.max_value_bytes = store_->options().max_value_bytes;
  peer.snapshot_asked = request;
  peer.pull_started = executor_->Now();
  const uint64_t attempt = ++peer.attempt;
  const uint64_t peer_id = peer.info.replica_id;
  peer.pull_link = ChooseLink(peer);
  transport_->Snapshot(peer.pull_link, request,
                       OnExecutor<absl::StatusOr<SnapshotResponse>>(
                           [this, peer_id, attempt](absl::StatusOr<SnapshotResponse> result) {
                             OnSnapshotPage(peer_id, attempt, std::move(result));
                           }));
  Post(
      [this, peer_id, attempt] {
        OnSnapshotPage(peer_id, attempt,
                       absl::DeadlineExceededError(absl::StrFormat(
                           "no answer to a snapshot page within %s",
                           absl::FormatDuration(options_.pull_timeout))));
      },
      options_.pull_timeout);
}

// A page: checked against what was asked (a page that does not continue
// the snapshot is refused and the snapshot starts again), the next one
// asked for (pipelined, as a pull's), then loaded with the durable marker;
// the last one clears the marker and claims the checkpoint at the
// snapshot's point and the peer's watermarks, and the log is pulled from
// there.
void Replicator::OnSnapshotPage(uint64_t peer_id, uint64_t attempt,
                                absl::StatusOr<SnapshotResponse> result) {
  PEERKV_CHECK(executor_->IsCurrent());
  auto it = peers_.find(peer_id);
  if (it == peers_.end()) return;
  Peer& peer = *it->second;
  if (!peer.pulling || peer.attempt != attempt) return;
  const std::string name = peer.info.name.empty() ? "(unnamed)" : peer.info.name;
  if (!result.ok()) {
    if (result.status().code() == absl::StatusCode::kUnimplemented) {
      // An older peer, a transport without snapshots, or a peer that does
      // not serve them (--snapshot-bootstrap=false): its log is pulled, in
      // the same slot.
      peer.snapshot_unsupported = true;
      absl::StatusOr<std::optional<PeerCheckpoint>> checkpoint = store_->GetCheckpoint(peer_id);
      if (!checkpoint.ok()) {
        FinishPull(peer, checkpoint.status());
        return;
      }
      SendPull(peer, checkpoint->value_or(PeerCheckpoint{}));
      return;
    }
    if (result.status().code() == absl::StatusCode::kFailedPrecondition) {
      // The peer cannot continue this snapshot (another incarnation, a
      // shorter log): start again.
      RestartSnapshot(peer, result.status());
      return;
    }
    OnPullFailed(peer, result.status());
    return;
  }
  peer.suspect.erase(peer.pull_link);
  SnapshotResponse page = std::move(*result);
  if (absl::Status invalid = ValidateSnapshotPage(peer_id, peer.snapshot_asked, page);
      !invalid.ok()) {
    if (page.replica_id != peer_id && page.replica_id != 0) {
      const LinkId link = peer.pull_link;
      FinishPull(peer, invalid);
      transport_->Close(link);
      DropLink(link, absl::AbortedError("the peer changed its replica id"));
      return;
    }
    RestartSnapshot(peer, invalid);
    return;
  }
  BootstrapMarker& snapshot = peer.snapshot;
  if (snapshot.incarnation == 0) {
    // The first page of a new snapshot (logged once the peer serves one).
    ++counters_.snapshots_started;
    Log(absl::StrFormat(
        "peerkv: this replica holds nothing: copying a snapshot of peer %s (%s) at its seq %d",
        name, ReplicaIdToString(peer_id), page.point_seq));
    snapshot.incarnation = page.incarnation;
    snapshot.nonce = page.nonce;
    snapshot.point_seq = page.point_seq;
    snapshot.watermarks = std::move(page.watermarks);
  }
  const size_t n = page.records.size();
  if (n > 0) {
    snapshot.after_keyspace = page.records.back().keyspace;
    snapshot.after_key = page.records.back().key;
  }
  snapshot.records += n;
  ++counters_.snapshot_pages;
  counters_.snapshot_records += n;
  counters_.records_received += n;
  const bool go_on = !page.done && !peer.links.empty();
  if (go_on) SendSnapshot(peer);
  std::optional<BootstrapMarker> progress;
  std::optional<CheckpointUpdate> complete;
  if (page.done) {
    // As WatermarksToAdopt for a caught-up pull: every register the peer
    // held at the point is here, at least as new.
    Watermarks adopted;
    if (store_->options().max_value_bytes == kMaxValueBytes) {
      for (const auto& [origin, hlc] : snapshot.watermarks) {
        if (store_->Distrusts(origin) || store_->CheckSkew(hlc).ok()) adopted[origin] = hlc;
      }
    }
    complete = CheckpointUpdate{
        peer_id, PeerCheckpoint{snapshot.incarnation, snapshot.point_seq, snapshot.nonce},
        std::move(adopted)};
  } else {
    progress = snapshot;
  }
  absl::StatusOr<MergeResult> merged =
      store_->LoadSnapshotPage(std::move(page.records), std::move(progress), std::move(complete),
                               SourceOf(peer_id));
  if (!merged.ok()) {
    NoteMergeFailure(peer, merged.status());
    FinishPull(peer, merged.status());
    return;
  }
  NoteRefusals(peer, *merged);
  counters_.records_won += merged->won;
  peer.last_exchange = executor_->Now();
  peer.last_error.clear();
  if (merged->won > 0 && options_.eager) NudgeSome(peer_id);
  if (page.done) {
    ++counters_.snapshots_completed;
    peer.checkpoint_seq = snapshot.point_seq;
    Log(absl::StrFormat(
        "peerkv: copied the snapshot of peer %s (%s): %d records in %s; pulling its log from "
        "seq %d",
        name, ReplicaIdToString(peer_id), snapshot.records,
        absl::FormatDuration(executor_->Now() - peer.snapshot_started), snapshot.point_seq));
    peer.pull_again = true;
    FinishPull(peer, absl::OkStatus());
    return;
  }
  if (!go_on) {
    // The link went away: resumed from the marker when it is back.
    FinishPull(peer, absl::OkStatus());
    return;
  }
  PublishStatus();
}

void Replicator::RestartSnapshot(Peer& peer, const absl::Status& why) {
  PEERKV_CHECK(executor_->IsCurrent());
  ++counters_.snapshot_restarts;
  Log(absl::StrFormat(
      "peerkv: refused a snapshot page from peer %s (%s): %s; the snapshot starts again from "
      "the first register",
      peer.info.name.empty() ? "(unnamed)" : peer.info.name,
      ReplicaIdToString(peer.info.replica_id), why.ToString()));
  peer.snapshot_fresh = true;
  FinishPull(peer, why);
  // Not at once: a peer that keeps sending bad pages costs a page per
  // gossip interval.
  const uint64_t id = peer.info.replica_id;
  Post([this, id] { StartPull(id); }, options_.gossip_interval);
}

}  // namespace peerkv::replication
