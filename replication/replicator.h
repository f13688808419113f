// replication/replicator.h: the anti-entropy engine. It keeps links to
// peers (dialled from configured addresses, or accepted from peers that
// dialled us), and brings this replica up to date with each of them by
// pulling the peer's change log after a per-peer checkpoint and merging it,
// each batch in one transaction with the checkpoint advance. Gossip rounds
// at an interval pick `fanout` random peers for a push-pull exchange (we
// pull, and nudge them to pull from us); a local commit nudges every peer at
// once (a few random ones in a big mesh, who pass it on), so changes travel
// in milliseconds and, because what a replica merged is in its own log,
// along any chain of peers. A nudge carries the sender's watermarks, and is
// not followed by a pull if ours cover them. Unreachable peers are retried
// with exponential backoff. A pull of many pages asks for the next page
// while one merges (see OnPulled). Records too far ahead are quarantined by
// the store (the pull moves past them); the engine retries them when local
// time allows (ScheduleQuarantineRetry).
//
// Threading: all state lives on the executor. The public methods may be
// called from any thread; they post to the executor.
#ifndef PEERKV_REPLICATION_REPLICATOR_H_
#define PEERKV_REPLICATION_REPLICATOR_H_

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "replication/executor.h"
#include "replication/reconcile.h"
#include "replication/status.h"
#include "replication/task_scope.h"
#include "replication/transport.h"
#include "store/store.h"

namespace peerkv::replication {

struct ReplicatorOptions {
  // This replica's human name, for logs.
  std::string name;
  // Addresses (HOST:PORT) of peers to dial and keep connected.
  std::vector<std::string> peers;
  absl::Duration gossip_interval = absl::Seconds(1);
  // Peers exchanged with per round.
  int fanout = 2;
  // Bounds of one pulled batch, which merges in one transaction. As large
  // as a peer serves (kMaxPullRecords, kMaxPullBytes): a replica catching
  // up pays one fsync per page, and with random keys about one dirty page
  // of the records tree per record in a page of 1000 but fewer in bigger
  // ones (bench/README.md: a fresh pull of random ids at 1000 per page ran
  // at about raw LMDB's speed with 1000 per transaction; at 10,000 it is
  // 2-3x that). Small pulls (a peer in sync) are small either way. The
  // server lowers batch_bytes to what its messages may hold. Pages of one
  // pull are pipelined: the next is asked for while one merges, so at most
  // two pages of a peer are held at once (the one merging and the next).
  uint32_t batch_records = 10'000;
  uint32_t batch_bytes = 4 << 20;
  // A pull not answered within this is abandoned (and retried later).
  absl::Duration pull_timeout = absl::Seconds(10);
  // Reconnection backoff doubles from min to max, with jitter.
  absl::Duration backoff_min = absl::Milliseconds(100);
  absl::Duration backoff_max = absl::Seconds(30);
  // Nudge peers after each commit, and pull from a peer as soon as a link
  // to it comes up. Off, only gossip rounds move data (the convergence
  // benchmark measures the rounds alone that way).
  bool eager = true;
  // Nudges to peers are sent at most once per nudge interval: writes in
  // between share one nudge, and the pulls it causes carry them in one
  // batch. The interval starts at the minimum (a lone write travels at
  // once) and doubles while writes keep coming, up to the maximum, so that
  // a burst travels in fewer, larger pulls (like Nagle's algorithm).
  absl::Duration nudge_interval = absl::Milliseconds(5);
  absl::Duration max_nudge_interval = absl::Milliseconds(100);
  // Pulls in flight at once. When many links come up together (a replica
  // rejoins, a partition heals), pulling from one peer first lets the
  // others' answers leave out what it brought (see Store::GetWatermarks).
  int max_concurrent_pulls = 1;
  // A local write nudges every peer when there are at most this many;
  // beyond, `fanout` random ones (who pass it on).
  size_t nudge_all_up_to = 8;
  // Refused records (a peer's clock too far ahead) are logged at most once
  // per peer per this interval.
  absl::Duration refusal_log_interval = absl::Minutes(1);
  // Peers (distinct replica ids) this replica keeps state for. Tests lower
  // it.
  size_t max_peers = 1024;
  // The table of peers is full when a new replica connects: the least
  // recently seen peer that is not a
  // configured one, has no link and has been gone at least this long is
  // forgotten to make room (its checkpoint stays in the store, so if it
  // returns it resumes from there). If none qualifies, the newcomer is
  // refused.
  absl::Duration evict_gone_peers_after = absl::Minutes(1);
  // Estimate this replica's clock from the times peers tell in hello and
  // act on it (README "Clock skew"): measure the skew check from estimated
  // real time, stamp from a corrected clock when ahead by more than half
  // the bound, and fork to a fresh clock when the persisted clock mark is
  // far ahead (ForkForClock). false (--clock-correction=false): the
  // estimate is only shown (status) and logged, for tests that need a
  // wrong clock to stay wrong.
  bool correct_clock = true;
  // Every peer with a link is reconciled with (replication/reconcile.h)
  // at this interval, and whenever the whole-store fingerprints differ
  // after two caught-up pulls in a row (at most once per reconcile_min_gap
  // per peer); zero turns both off. Sessions also start, whatever the
  // interval, when a peer's log cannot be trusted to be complete (it
  // started over from seq 0 although we had a checkpoint in it: a new
  // incarnation, a restore) and after this replica forks. One session runs
  // at a time.
  absl::Duration reconcile_interval = absl::Minutes(10);
  absl::Duration reconcile_min_gap = absl::Seconds(30);
  ReconcileLimits reconcile_limits;
  // Snapshot bootstrap (README "Snapshot bootstrap"): a replica that holds
  // nothing (no seq, no checkpoint of the peer), or whose bootstrap marker
  // names the peer, copies the peer's registers in key order, in pages of
  // at most these bounds (the server lowers them to what it serves and its
  // messages hold), then pulls its log from the snapshot's point. false
  // (--snapshot-bootstrap=false): a new replica pulls the whole log.
  bool snapshot_bootstrap = true;
  uint32_t snapshot_records = 50'000;
  uint32_t snapshot_bytes = 16 << 20;
  // Seeds peer choice and jitter; the simulation replays runs with it.
  uint64_t seed = 1;
  // Where log lines go (the server passes LogLine; tests may collect them).
  std::function<void(const std::string&)> log;
};

// Counters for tests and benchmarks.
struct ReplicatorCounters {
  uint64_t rounds = 0;
  uint64_t pulls = 0;
  uint64_t records_received = 0;
  uint64_t records_won = 0;
  uint64_t nudges_sent = 0;
  // Nudges not followed by a pull: the sender had nothing we lacked.
  uint64_t nudges_ignored = 0;
  // Peers forgotten to make room in a full peer table.
  uint64_t peers_evicted = 0;
  // Forks to a new replica id after a peer showed this replica's data
  // directory was restored from an older copy (restore_guard.h).
  uint64_t forks = 0;
  // Of those, forks because the clock mark was far ahead of real time.
  uint64_t clock_forks = 0;
  // Links refused because the peer claims an id another live process
  // (or this one) holds: a copied data directory.
  uint64_t clones_refused = 0;
  // Hellos that named replica ids retired by forks this replica did not
  // know of (Store::ForgetRetiredIds): each made it pull every peer from
  // zero once.
  uint64_t retired_ids_forgotten = 0;
  // Sum of the time from sending a pull to having merged its answer.
  absl::Duration pull_time = absl::ZeroDuration();
  // Pages asked for while the page before them merged (pipelining), and
  // of those, pages dropped unread because that merge failed.
  uint64_t pages_prefetched = 0;
  uint64_t prefetches_discarded = 0;
  // Records put in quarantine (clock too far ahead; each once), and
  // quarantined records that won when local time allowed their merge.
  uint64_t quarantined = 0;
  uint64_t quarantine_won = 0;
  // Reconcile sessions ended (failed ones included), of those the ones
  // that found the replicas in sync at once, and the records they moved.
  uint64_t reconciles = 0;
  uint64_t reconciles_in_sync = 0;
  uint64_t reconciles_failed = 0;
  uint64_t reconcile_records_fetched = 0;
  uint64_t reconcile_records_pushed = 0;
  // Snapshot bootstrap: snapshots begun (not resumed), completed, and
  // started again after a page was refused (truncated, reordered, another
  // incarnation); pages and records loaded.
  uint64_t snapshots_started = 0;
  uint64_t snapshots_completed = 0;
  uint64_t snapshot_restarts = 0;
  uint64_t snapshot_pages = 0;
  uint64_t snapshot_records = 0;
};

class Replicator final : public LinkEvents {
 public:
  // Borrows everything; Start() begins. `store`, `executor` and `transport`
  // must outlive the replicator (and Stop() must be called first).
  Replicator(Store* store, Executor* executor, Transport* transport,
             ReplicatorOptions options);
  ~Replicator() override;
  Replicator(const Replicator&) = delete;
  Replicator& operator=(const Replicator&) = delete;

  // Dials the configured peers, starts the rounds and watches local commits.
  void Start();
  // Stops everything; pending callbacks become no-ops. On another thread
  // it waits for the engine task running on the executor, if one is, to
  // finish; so once it returns the replicator may be destroyed. It may also
  // be called from a task of the executor (the simulation). Idempotent.
  void Stop();

  // Adds a peer to dial (and keep) at run time.
  void AddPeer(const std::string& address);

  std::vector<PeerStatus> Statuses() const;
  ReplicatorCounters Counters() const;

  // The last fork (see ForkAfterRestore), for status: empty if none since
  // this replica started.
  struct ForkInfo {
    uint64_t old_id = 0;
    uint64_t new_id = 0;
    std::string evidence;
  };
  ForkInfo LastFork() const;

  // This replica's data directory was restored from an older copy (a peer
  // holds writes of its own that it lacks, `evidence` says which): becomes
  // a new replica (Store::Fork), abandons the pulls in flight, and closes
  // every link so that peers meet the new id (and pull it from zero) and it
  // pulls back the old id's writes. Logged and counted. Any thread.
  // Does nothing if this replica is no longer evidence.replica_id (the
  // evidence was about an id it already left).
  void ForkAfterRestore(const Restored& evidence);

  // Runs a reconcile session with `peer` (its name, address or replica id
  // as status shows them) now, after the session running if one is; `done`
  // (on the executor) gets what it found. NotFound for an unknown peer,
  // Unavailable for one without a link.
  using ReconcileDone = absl::AnyInvocable<void(absl::StatusOr<ReconcileReport>)>;
  void Reconcile(const std::string& peer, ReconcileDone done) override;

  // LinkEvents (any thread).
  void OnInboundLink(LinkId link, const PeerInfo& peer) override;
  void OnLinkDown(LinkId link, const absl::Status& why) override;
  void OnNudged(LinkId link, const Watermarks& sender) override;
  void OnLinkSuspect(LinkId link, const absl::Status& why) override;
  void OnRestoreEvidence(LinkId link, const Restored& evidence) override;
  void OnPushMerged(LinkId link, const MergeResult& merged) override;

 private:
  struct Slot;
  struct Peer;
  struct Page;

  // Runs `task` on the executor unless the replicator is stopped by then.
  void Post(absl::AnyInvocable<void()> task, absl::Duration delay = absl::ZeroDuration());
  // A callback for the transport (which may call it on any thread): it
  // runs `callback` on the executor, unless the replicator is stopped.
  // The transport calls it at most once, so the callback moves into the
  // task. Only values are captured: the transport may call it after the
  // replicator is gone (the executor outlives it; the task does nothing).
  template <typename Arg>
  absl::AnyInvocable<void(Arg)> OnExecutor(absl::AnyInvocable<void(Arg)> callback) const {
    return [executor = executor_, scope = tasks_.ref(),
            callback = std::move(callback)](Arg arg) mutable {
      executor->Post(scope.Wrap([callback = std::move(callback), arg = std::move(arg)]() mutable {
        callback(std::move(arg));
      }));
    };
  }

  // Every private method below runs on the executor (and checks it).
  void AddSlot(const std::string& address);
  void Dial(const std::string& address);
  void OnDialed(const std::string& address, absl::StatusOr<Transport::Connected> result);
  void ScheduleRedial(Slot& slot, const absl::Status& why);
  void AddLink(LinkId link, const PeerInfo& info, bool inbound, const std::string& address);
  void DropLink(LinkId link, const absl::Status& why);
  // The link requests to `peer` go on: one not suspect if there is one.
  LinkId ChooseLink(const Peer& peer) const;
  void MarkSuspect(LinkId link, const absl::Status& why);
  void Round();
  // Starts a pull from the committed checkpoint (or queues it for a slot).
  void StartPull(uint64_t peer_id);
  // Asks `peer` (pulling) for the page after `from`, as a new attempt;
  // `merged` (default: `from`) is the checkpoint whose pages are merged
  // (PullRequest::merged_seq).
  void SendPull(Peer& peer, PeerCheckpoint from);
  void SendPull(Peer& peer, PeerCheckpoint from, PeerCheckpoint merged);
  // The steps of taking one page (see OnPulled).
  void OnPulled(uint64_t peer_id, uint64_t attempt, absl::StatusOr<PullResponse> result);
  void OnPullFailed(Peer& peer, const absl::Status& status);
  absl::Status ValidatePage(uint64_t peer_id, const PullResponse& response) const;
  Watermarks WatermarksToAdopt(uint64_t peer_id, const Page& page) const;
  absl::StatusOr<MergeResult> MergePage(uint64_t peer_id, Page& page);
  // Who `peer_id` is to the merge gate (a friend's link: PeerInfo::readable is set).
  MergeSource SourceOf(uint64_t peer_id) const;
  void NoteMergeFailure(Peer& peer, const absl::Status& failure);
  void NoteRefusals(Peer& peer, const MergeResult& merged);
  // Schedules RetryQuarantine for when the earliest quarantined record
  // becomes mergeable (Store::NextQuarantineRetry), unless one is due
  // sooner already.
  void ScheduleQuarantineRetry();
  void RetryQuarantine();
  void NotePageMerged(Peer& peer, const Page& page, size_t won);
  void ContinueOrFinish(Peer& peer, bool more, bool go_on);
  void FinishPull(Peer& peer, const absl::Status& status);
  void StartWaitingPulls();
  void NudgeAll();
  void NudgeSome(uint64_t except);
  void ScheduleNudges();
  void SendNudges();
  void Nudge(Peer& peer);
  // Makes room in a full peer table (see evict_gone_peers_after); false if
  // no peer may be forgotten.
  bool EvictGonePeer();
  // Logs that the peer table was full, at most once per
  // refusal_log_interval, with what happened since the last line.
  void LogTableFull(bool refused);
  void PublishStatus();
  void Log(const std::string& line);
  // On the executor: see ForkAfterRestore. `fresh_clock`: the reason is
  // the clock mark (see UpdateClock), not a restore.
  void Fork(const Restored& evidence, bool fresh_clock = false);
  // A peer's clock offset from its hello (store/clock.h), then UpdateClock.
  void NoteClock(uint64_t peer_id, const ClockSample& sample);
  // Hands the estimate to the store; warns once when this clock is ahead
  // by more than half the bound; forks to a fresh clock when the clock
  // mark is more than the bound (and a second) ahead of estimated real
  // time.
  void UpdateClock();
  // A link refused because `evidence` shows a clone: logged, counted.
  void RefuseClone(const std::string& evidence);
  // Reconciliation (the end of replicator.cc).
  struct ReconcileJob {
    uint64_t id = 0;
    uint64_t peer_id = 0;
    std::string why;
    std::vector<ReconcileDone> done;
    // A friend's link: the source as it may see it (outlives `session`).
    std::unique_ptr<ReconcileSource> filtered;
    // What this replica refused of the peer's records (Peer::refused_memory,
    // shared: the peer may be forgotten mid-session) and the source as if
    // it held them (RefusedOverlay; outlives `session`).
    std::shared_ptr<RefusedMemory> refused;
    std::unique_ptr<ReconcileSource> overlay;
    std::unique_ptr<ReconcileSession> session;
    LinkId link = 0;
    // The round in flight (answers to older ones are late and ignored).
    uint64_t round = 0;
  };
  void StartReconcile(uint64_t peer_id, std::string why, ReconcileDone done);
  void RunNextReconcile();
  void ReconcileStep();
  void OnReconcileAnswer(uint64_t job, absl::StatusOr<std::string> answer);
  // Whether `peer` last acknowledged holding all our watermarks cover.
  bool PeerHoldsAllWeHold(const Peer& peer) const;
  void FinishReconcile(absl::StatusOr<ReconcileReport> result);
  void ReconcileRound();
  // After a page from `peer` merged: the triggers (see reconcile_interval).
  void NoteForReconcile(Peer& peer, const PullResponse& response, const PeerCheckpoint& from);
  // The peer named ids retired by forks: forget their watermarks (see
  // Store::ForgetRetiredIds) and pull every peer again.
  void ForgetRetired(const PeerInfo& info);
  // Snapshot bootstrap (the end of replicator.cc): whether StartPull
  // copies a snapshot from `peer` instead of pulling its log; the first
  // page (resuming from the store's marker unless starting afresh); a page
  // asked for; its answer; a refused page (start again).
  bool WantsSnapshot(const Peer& peer) const;
  void StartSnapshot(Peer& peer);
  void SendSnapshot(Peer& peer);
  void OnSnapshotPage(uint64_t peer_id, uint64_t attempt,
                      absl::StatusOr<SnapshotResponse> result);
  void RestartSnapshot(Peer& peer, const absl::Status& why);
  // Restore evidence in a pulled page: a record of this replica's own id
  // beyond its own clock (ServePull sends those: ChangesFilter::
  // send_uncovered_of) that it does not hold; nullopt if none. A friend's
  // page (`from_friend`) is evidence only if every such record passes the
  // merge gate as MergeSource::kOwnWriteFromFriend (signed by a device of
  // this replica's user): `*unvouched` is OK if so, else why the first
  // that did not (always OK for an own device's page).
  std::optional<Restored> OwnWritesWeLack(const PullResponse& response, bool from_friend,
                                          absl::Status* unvouched) const;
  // Restore evidence in a peer's hello (what it holds of us, the ids it
  // says were retired): only an own device's; nullopt for a friend's.
  std::optional<Restored> RestoreEvidenceOf(const PeerInfo& peer) const;

  Store* const store_;
  Executor* const executor_;
  Transport* const transport_;
  const ReplicatorOptions options_;
  // Every task and transport callback is wrapped in it: once Stop()
  // closed it they do nothing, and Stop() waits for one running.
  TaskScope tasks_;

  // Executor state.
  bool started_ = false;
  bool stopped_ = false;
  std::mt19937_64 rng_;
  std::map<std::string, std::unique_ptr<Slot>> slots_;  // by address
  std::map<uint64_t, std::unique_ptr<Peer>> peers_;     // by replica id
  std::map<LinkId, uint64_t> link_peer_;                // link -> replica id
  bool nudge_scheduled_ = false;
  bool nudge_all_pending_ = false;
  absl::Duration current_nudge_interval_ = absl::ZeroDuration();
  bool forward_pending_ = false;
  std::set<uint64_t> forward_sources_;
  // Pulls in flight, and peers waiting for a free slot (in request order).
  int pulls_in_flight_ = 0;
  std::vector<uint64_t> waiting_pulls_;
  absl::Time last_nudge_ = absl::InfinitePast();
  // When the pending quarantine retry runs; InfiniteFuture if none.
  absl::Time quarantine_retry_at_ = absl::InfiniteFuture();
  int listener_id_ = 0;
  ReplicatorCounters counters_;
  // The peers' clock offsets (store/clock.h), and whether this clock's
  // lead was logged (once per lead; again after it ended).
  PeerClockOffsets clock_offsets_;
  bool clock_lead_logged_ = false;
  // Pull attempts are numbered per peer; a peer forgotten and met again
  // continues after the highest number any forgotten peer used, so a stale
  // pull timeout never matches a new attempt.
  uint64_t forgotten_attempts_ = 0;
  // Peer-table-full events since the last log line about them.
  uint64_t table_evicted_ = 0;
  uint64_t table_refused_ = 0;
  absl::Time last_table_log_ = absl::InfinitePast();

  // The reconcile session running, and those waiting (in order).
  std::unique_ptr<ReconcileSource> reconcile_source_;
  std::unique_ptr<ReconcileJob> reconcile_;
  std::deque<std::unique_ptr<ReconcileJob>> reconcile_queue_;
  uint64_t reconcile_jobs_ = 0;

  // Snapshot for Statuses() and Counters() from other threads.
  mutable absl::Mutex status_mu_;
  std::vector<PeerStatus> statuses_ ABSL_GUARDED_BY(status_mu_);
  ReplicatorCounters published_counters_ ABSL_GUARDED_BY(status_mu_);
  ForkInfo last_fork_ ABSL_GUARDED_BY(status_mu_);
};

}  // namespace peerkv::replication

#endif  // PEERKV_REPLICATION_REPLICATOR_H_
