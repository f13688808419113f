// tests/sim/simulation.cc: the simulated world (clock, event queue,
// network, faults, workload) and the checker.
#include "tests/sim/simulation.h"

#include <atomic>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <random>
#include <set>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "replication/executor.h"
#include "replication/reconcile.h"
#include "replication/replicator.h"
#include "replication/restore_guard.h"
#include "replication/serve.h"
#include "replication/transport.h"
#include "store/store.h"

namespace peerkv::sim {
namespace {

using replication::LinkId;
using replication::PeerInfo;
using replication::PullRequest;
using replication::PullResponse;
using replication::Transport;

constexpr int64_t kEpochMs = 1'764'000'000'000;  // simulated time starts here
constexpr size_t kSmallValueLimit = 64;               // a replica with a low limit
constexpr size_t kBigValueBytes = 200;                // values only the others hold
constexpr size_t kReconcileReplyBytes = size_t{1} << 20;  // a reconcile answer's bound
const char* const kKeyspaces[] = {"notes", "mail"};
// Tombstone collection in the simulation: the minimum age (simulated ms),
// how often every replica takes a step and the watch checks every register
// of every replica (every second; every half second cost about 20% more
// run time, bench/README), and how many records a step examines (small, so
// a pass takes several bounded steps).
// The age must exceed twice the widest clock difference between replicas
// (normal skews are within +-25 s here): a replica whose clock is behind
// could otherwise write a key after its tombstone was collected with a
// version older than the tombstone (README "Tombstone collection").
constexpr int64_t kTombstoneMinAgeMs = 55'000;
// After converging, this much more simulated time passes with collection
// running (tombstones written in the fault phase come of age), and the
// replicas must still hold the fold.
constexpr int64_t kCollectAfterMs = 60'000;
constexpr int64_t kCollectEveryMs = 1000;
constexpr size_t kCollectStepRecords = 64;

// The simulated clock and event queue shared by every replica: one
// ManualExecutor. Posting is thread-safe because stores call commit
// listeners on their writer threads, but always while the simulation thread
// waits for that store call, so the order is fixed.
using World = replication::ManualExecutor;

// The wall clock of a replica: simulated time plus a skew, which a fault
// may change (a clock set wrong, then fixed).
class SkewedClock final : public WallClock {
 public:
  SkewedClock(const World& world, int64_t skew_ms) : world_(world), skew_ms_(skew_ms) {}
  int64_t NowMillis() const override { return absl::ToUnixMillis(world_.Now()) + skew_ms_.load(); }
  int64_t skew_ms() const { return skew_ms_.load(); }
  void set_skew_ms(int64_t skew_ms) { skew_ms_ = skew_ms; }

 private:
  const World& world_;
  std::atomic<int64_t> skew_ms_;
};

class Simulation;

// One replica's view of the simulated network.
class SimTransport final : public Transport {
 public:
  SimTransport(Simulation& sim, int self) : sim_(sim), self_(self) {}
  void Connect(const std::string& address,
               absl::AnyInvocable<void(absl::StatusOr<Connected>)> done) override;
  void ConnectExpecting(const std::string& address, uint64_t expected,
                        absl::AnyInvocable<void(absl::StatusOr<Connected>)> done) override;
  void Pull(LinkId link, const PullRequest& request,
            absl::AnyInvocable<void(absl::StatusOr<PullResponse>)> done) override;
  void Nudge(LinkId link, const Watermarks& mine) override;
  void Close(LinkId link) override;
  void Reconcile(LinkId link, std::string request,
                 absl::AnyInvocable<void(absl::StatusOr<std::string>)> done) override;

 private:
  Simulation& sim_;
  const int self_;
};

struct Replica {
  int index = 0;
  std::string dir;
  std::unique_ptr<SkewedClock> clock;
  std::unique_ptr<Store> store;
  std::unique_ptr<SimTransport> transport;
  std::unique_ptr<replication::Replicator> replicator;
  std::vector<std::string> peers;
  bool up = false;
  int generation = 0;
  // A lower value limit than the others: it cannot hold their big values.
  size_t max_value_bytes = kMaxValueBytes;
  int64_t normal_skew_ms = 0;
  // Retired ids of other replicas it forgot the watermarks of.
  size_t known_forgotten = 0;
  // Every replica id it has had (it forks to new ones).
  std::set<uint64_t> ids;
  // The greatest version of each register it was seen holding (tombstone
  // collection: a register never goes back, except by a restore).
  std::map<std::pair<std::string, std::string>, Version> seen;
  // A second process started from a copy of another replica's directory
  // (StartClone): not part of the checked world.
  bool clone = false;
};

struct Link {
  int a = 0;  // the dialler
  int b = 0;
  bool up = true;
};

// A write the store accepted: part of the expected fold.
struct Accepted {
  std::string keyspace, key;
  Version version;
  bool deleted = false;
  std::string value;
};

class Simulation {
 public:
  explicit Simulation(const SimOptions& options)
      : options_(options), rng_(options.seed), net_rng_(options.seed * 7919 + 1) {}

  ~Simulation() {
    for (auto& r : replicas_) Crash(*r, /*quiet=*/true);
    std::error_code ec;
    if (!root_.empty()) std::filesystem::remove_all(root_, ec);
  }

  SimResult Run();

  // --- network, used by SimTransport -------------------------------------

  void Connect(int from, const std::string& address, uint64_t expected,
               absl::AnyInvocable<void(absl::StatusOr<Transport::Connected>)> done) {
    const int to = std::stoi(address.substr(4));  // "sim:N"
    Trace(absl::StrFormat("connect %d->%d", from, to));
    const absl::Duration delay = Delay();
    if (!Reachable(from, to)) {
      Deliver(from, delay * 2, [done = std::move(done), to]() mutable {
        done(absl::UnavailableError(absl::StrFormat("sim:%d unreachable", to)));
      });
      return;
    }
    const LinkId id = ++next_link_;
    links_[id] = Link{from, to, true};
    Replica& target = *replicas_[to];
    // The caller says what it holds of the replica it expects there.
    const PeerInfo from_info =
        replication::LocalInfo(*replicas_[from]->store, Name(from), expected);
    // The answer says what the callee holds of the caller (restore_guard.h).
    const PeerInfo to_info = replication::LocalInfo(*target.store, Name(to),
                                                    replicas_[from]->store->replica_id());
    // The callee learns of the inbound link, then the caller of the hello.
    Deliver(to, delay, [this, id, to, from_info] {
      if (LinkUp(id)) replicas_[to]->replicator->OnInboundLink(id, from_info);
    });
    Deliver(from, delay * 2, [this, id, to_info, done = std::move(done)]() mutable {
      if (!LinkUp(id)) {
        done(absl::UnavailableError("link lost during hello"));
        return;
      }
      done(Transport::Connected{id, to_info});
    });
  }

  void Pull(int from, LinkId id, const PullRequest& request,
            absl::AnyInvocable<void(absl::StatusOr<PullResponse>)> done) {
    const int to = Other(id, from);
    if (to < 0 || Lost()) return;  // the request is lost; the engine times out
    auto shared_done =
        std::make_shared<absl::AnyInvocable<void(absl::StatusOr<PullResponse>)>>(std::move(done));
    const int copies = Duplicated() ? 2 : 1;
    for (int c = 0; c < copies; ++c) {
      Deliver(to, Delay(), [this, id, from, to, request, shared_done] {
        if (!LinkUp(id)) return;
        Store& server = *replicas_[to]->store;
        const replication::HeldOf claim = replication::ClaimOfPull(server, request);
        absl::StatusOr<PullResponse> response;
        if (std::optional<replication::Restored> restored =
                replication::RestoreEvidence(server, claim)) {
          // As the server does: refuse, and let the engine fork.
          Trace(absl::StrFormat("r%d restored: %s", to, restored->why));
          replicas_[to]->replicator->OnRestoreEvidence(id, *restored);
          response = absl::FailedPreconditionError("restored: forking");
        } else {
          response = replication::ServePull(server, request);
        }
        Trace(absl::StrFormat("serve pull %d->%d after %d: %d records", to, from,
                              request.after_seq,
                              response.ok() ? response->records.size() : 0));
        if (options_.verbose && response.ok()) {
          // The requester's own writes it lacks (restore evidence), printed.
          for (const Record& rec : response->records) {
            if (rec.version.origin != request.requester) continue;
            std::printf("           (serves r%d its own %s/%s %s)\n", from, rec.keyspace.c_str(),
                        rec.key.c_str(), rec.version.ToString().c_str());
          }
        }
        if (Lost()) return;
        Deliver(from, Delay(), [this, id, shared_done, response = std::move(response)]() mutable {
          if (!LinkUp(id) || !*shared_done) return;
          auto done = std::move(*shared_done);
          *shared_done = nullptr;
          done(std::move(response));
        });
      });
    }
  }

  void Nudge(int from, LinkId id, const Watermarks& mine) {
    const int to = Other(id, from);
    if (to < 0 || Lost()) return;
    const int copies = Duplicated() ? 2 : 1;
    for (int c = 0; c < copies; ++c) {
      Deliver(to, Delay(), [this, id, to, mine] {
        if (LinkUp(id)) replicas_[to]->replicator->OnNudged(id, mine);
      });
    }
  }

  void Close(int from, LinkId id) { BreakLink(id, "closed"); }

  // One round of a reconcile session, with the network's faults like any
  // call: lost (the engine times the round out), delayed, duplicated (the
  // answer counts once). The peer answers as rpc/replica_service.cc does.
  void Reconcile(int from, LinkId id, std::string request,
                 absl::AnyInvocable<void(absl::StatusOr<std::string>)> done) {
    if (!options_.reconcile) {
      done(absl::UnimplementedError("this transport does not reconcile"));
      return;
    }
    const int to = Other(id, from);
    if (to < 0 || Lost()) return;
    auto shared_done =
        std::make_shared<absl::AnyInvocable<void(absl::StatusOr<std::string>)>>(std::move(done));
    auto shared_request = std::make_shared<const std::string>(std::move(request));
    const int copies = Duplicated() ? 2 : 1;
    for (int c = 0; c < copies; ++c) {
      Deliver(to, Delay(), [this, id, from, to, shared_request, shared_done] {
        if (!LinkUp(id)) return;
        absl::StatusOr<std::string> answer = ServeReconcileAt(to, id, *shared_request);
        ++reconcile_rounds_;
        Trace(absl::StrFormat("serve reconcile %d->%d: %d bytes asked, %s", to, from,
                              shared_request->size(),
                              answer.ok() ? absl::StrFormat("%d answered", answer->size())
                                          : answer.status().ToString()));
        if (Lost()) return;
        Deliver(from, Delay(), [this, id, shared_done, answer = std::move(answer)]() mutable {
          if (!LinkUp(id) || !*shared_done) return;
          auto done = std::move(*shared_done);
          *shared_done = nullptr;
          done(std::move(answer));
        });
      });
    }
  }

 private:
  std::string Name(int i) const { return absl::StrFormat("r%d", i); }

  // Replica `to`'s answer to a reconcile request on link `id`, as the RPC
  // service gives it: a request out of bounds is refused and closes that
  // link; records pushed merge first (and count against the peer, as from
  // a pull); then the responder's side of the round.
  absl::StatusOr<std::string> ServeReconcileAt(int to, LinkId id, const std::string& bytes) {
    Replica& r = *replicas_[to];
    absl::StatusOr<replication::ReconcileRequest> request =
        replication::DecodeReconcileRequest(bytes, kMaxValueBytes);
    if (!request.ok()) {
      BreakLink(id, "a reconcile request out of bounds");
      return request.status();
    }
    replication::DropValuesOverLimit(request->push, r.store->options().max_value_bytes);
    MergeResult pushed;
    if (!request->push.empty()) {
      std::vector<Record> push = std::move(request->push);
      request->push.clear();
      absl::StatusOr<MergeResult> merged = r.store->Merge(std::move(push));
      if (!merged.ok()) return merged.status();
      r.replicator->OnPushMerged(id, *merged);
      pushed = *merged;
    }
    std::unique_ptr<replication::ReconcileSource> source =
        replication::StoreReconcileSource(*r.store);
    absl::StatusOr<replication::ReconcileResponse> response =
        replication::ServeReconcile(*source, *request, kReconcileReplyBytes);
    if (!response.ok()) return response.status();
    response->push_won = pushed.won;
    response->push_refused = pushed.refused.size();
    return replication::EncodeReconcileResponse(*response);
  }

  void Trace(const std::string& event) {
    const uint64_t t = static_cast<uint64_t>(absl::ToUnixMicros(world_.Now()));
    for (unsigned char c : event) trace_ = (trace_ ^ c) * 0x100000001b3ULL;
    trace_ = (trace_ ^ t) * 0x100000001b3ULL;
    if (options_.verbose) {
      std::printf("%10.3f %s\n", absl::ToDoubleSeconds(world_.Now() - start_), event.c_str());
    }
  }

  // Network randomness has its own generator so that the workload drawn
  // from rng_ is the same whatever the network did.
  absl::Duration Delay() {
    // Mostly a millisecond or two; sometimes much longer (reordering, and
    // now and then longer than the engine's pull timeout).
    const double r = std::uniform_real_distribution<double>(0, 1)(net_rng_);
    if (r < 0.9) return absl::Microseconds(std::uniform_int_distribution<int>(100, 3000)(net_rng_));
    if (r < 0.99) return absl::Milliseconds(std::uniform_int_distribution<int>(5, 500)(net_rng_));
    return absl::Seconds(std::uniform_int_distribution<int>(1, 15)(net_rng_));
  }
  bool Lost() {
    return faults_ && std::uniform_real_distribution<double>(0, 1)(net_rng_) < loss_;
  }
  bool Duplicated() {
    return faults_ && std::uniform_real_distribution<double>(0, 1)(net_rng_) < 0.05;
  }

  bool Reachable(int a, int b) const {
    return replicas_[a]->up && replicas_[b]->up && !cut_.count({std::min(a, b), std::max(a, b)});
  }
  bool LinkUp(LinkId id) const {
    auto it = links_.find(id);
    return it != links_.end() && it->second.up;
  }
  int Other(LinkId id, int self) const {
    auto it = links_.find(id);
    if (it == links_.end() || !it->second.up) return -1;
    return it->second.a == self ? it->second.b : it->second.a;
  }

  // Runs `task` at replica `to` after `delay`, if it is still the same life
  // of that replica by then.
  void Deliver(int to, absl::Duration delay, absl::AnyInvocable<void()> task) {
    const int generation = replicas_[to]->generation;
    world_.Post([this, to, generation, task = std::move(task)]() mutable {
      if (!replicas_[to]->up || replicas_[to]->generation != generation) return;
      task();
    });
  }

  void BreakLink(LinkId id, const std::string& why) {
    auto it = links_.find(id);
    if (it == links_.end() || !it->second.up) return;
    it->second.up = false;
    Trace(absl::StrFormat("link %d-%d down: %s", it->second.a, it->second.b, why));
    for (int end : {it->second.a, it->second.b}) {
      Deliver(end, Delay(), [this, id, end, why] {
        replicas_[end]->replicator->OnLinkDown(id, absl::UnavailableError(why));
      });
    }
  }

  // Starts (or restarts) replica i on its directory.
  bool Boot(Replica& r, std::string* error) {
    StoreOptions options;
    options.dir = r.dir;
    options.wall_clock = r.clock.get();
    options.sync = false;  // durability across crashes is the crash tests' job
    options.max_value_bytes = r.max_value_bytes;
    options.id_seed = options_.seed * 1000 + static_cast<uint64_t>(r.index);
    // Tombstone collection runs in every seed, on the simulation's schedule
    // (CollectAndWatch), with a minimum age of a few simulated seconds.
    options.tombstone_min_age_ms = kTombstoneMinAgeMs;
    options.tombstone_collect_interval = absl::ZeroDuration();
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
    if (!store.ok()) {
      *error = std::string(store.status().message());
      return false;
    }
    r.store = std::move(*store);
    r.ids.insert(r.store->replica_id());
    ++r.generation;
    r.up = true;
    replication::ReplicatorOptions ro;
    ro.name = Name(r.index);
    ro.peers = r.peers;
    ro.gossip_interval = absl::Seconds(1);
    ro.fanout = 2;
    // Pages far smaller than the key space (5-40 keys): a replica that
    // fell behind pulls many pages in a row, pipelined (the next asked for
    // while one merges), with drops, timeouts and crashes between them.
    ro.batch_records = std::uniform_int_distribution<uint32_t>(2, 12)(rng_);
    ro.pull_timeout = absl::Seconds(5);
    ro.backoff_min = absl::Milliseconds(100);
    ro.backoff_max = absl::Seconds(5);
    ro.seed = options_.seed * 31 + static_cast<uint64_t>(r.index) * 7 + r.generation;
    if (options_.verbose) {
      // The engine's log lines, printed (not part of the trace hash).
      ro.log = [this, index = r.index](const std::string& line) {
        std::printf("%10.3f r%d log: %s\n", absl::ToDoubleSeconds(world_.Now() - start_), index,
                    line.c_str());
      };
    }
    r.replicator = std::make_unique<replication::Replicator>(r.store.get(), &world_,
                                                             r.transport.get(), ro);
    r.replicator->Start();
    Trace(absl::StrFormat("boot r%d (life %d) as %016x", r.index, r.generation, r.store->replica_id()));
    return true;
  }

  // A backup of replica k's data directory (taken while it is down: it is
  // crashed, copied, and booted again), restored later over the directory
  // (issue 8). The writes k accepted after the copy that no other replica
  // holds when it is restored are gone for good: they leave the fold. The
  // others must come back to k, and k's writes after the restore must
  // reach everyone.
  void TakeBackup() {
    const int k = static_cast<int>(restore_rng_() % n_);
    Replica& r = *replicas_[k];
    if (!r.up || backup_.replica >= 0 || k == clone_source_) return;
    Trace(absl::StrFormat("backup r%d", k));
    Crash(r);
    backup_ = Backup{k, root_ + "/backup", accepted_.size(), 0};
    std::filesystem::copy(r.dir, backup_.dir, std::filesystem::copy_options::recursive);
    std::string error;
    if (!Boot(r, &error)) failure_ = "reboot failed: " + error;
    backup_.id = r.store->replica_id();
  }

  void RestoreBackup() {
    if (backup_.replica < 0 || backup_.restored) return;
    Replica& r = *replicas_[backup_.replica];
    for (const auto& other : replicas_) {
      // Only the live replicas can say what survived.
      if (other.get() != &r && !other->up && !other->clone) return;
    }
    Trace(absl::StrFormat("restore r%d from its %s", r.index,
                          backup_.lost_tail ? "copy of a few commits ago (a lost log tail)"
                                            : "backup"));
    backup_.restored = true;
    // Writes of every id it had since the copy (it may have forked) are
    // lost unless another replica holds them.
    std::set<uint64_t> losable = r.ids;
    losable.insert(backup_.id);
    Crash(r);
    std::vector<Accepted> kept(accepted_.begin(), accepted_.begin() + backup_.accepted_at);
    for (size_t i = backup_.accepted_at; i < accepted_.size(); ++i) {
      const Accepted& a = accepted_[i];
      bool survives = losable.count(a.version.origin) == 0;
      for (const auto& other : replicas_) {
        if (survives) break;
        if (other.get() == &r || other->clone) continue;
        absl::StatusOr<std::optional<Record>> held = other->store->Get(a.keyspace, a.key);
        survives = held.ok() && held->has_value() && !((*held)->version < a.version);
        // A write too far ahead for that replica waits in its quarantine:
        // it merges there later, so it is not lost.
        survives = survives || other->store->InQuarantine(a.keyspace, a.key, a.version);
      }
      // A tombstone collected elsewhere was held by every peer of that
      // replica: it is not lost (and stale copies are refused).
      if (!survives && a.deleted) {
        auto c = collected_.find({a.keyspace, a.key});
        survives = c != collected_.end() && !(c->second < a.version);
      }
      if (survives) kept.push_back(a);
    }
    accepted_ = std::move(kept);
    // Its registers go back to the backup's: not a resurrection.
    r.seen.clear();
    std::filesystem::remove_all(r.dir);
    std::filesystem::copy(backup_.dir, r.dir, std::filesystem::copy_options::recursive);
    std::string error;
    if (!Boot(r, &error)) failure_ = "reboot failed: " + error;
  }

  // A replica that forked re-stamped its writes made since a restored open
  // as new writes of its new id: they join the fold as accepted writes.
  void NoteForks() {
    for (auto& r : replicas_) {
      if (!r->up || r->clone) continue;
      const size_t forgotten = r->store->GetLineage().forgotten_ids.size();
      if (forgotten != r->known_forgotten) {
        r->known_forgotten = forgotten;
        Trace(absl::StrFormat("r%d forgot the watermarks of %d retired ids", r->index, forgotten));
      }
      // Every id it has had that the simulation has not seen yet: two forks
      // between checks (a restore's, then a clock fork) leave one id only
      // in retired_ids, and its re-stamped writes are accepted writes too.
      const Lineage lineage = r->store->GetLineage();
      std::vector<uint64_t> fresh;
      for (uint64_t id : lineage.retired_ids) {
        if (r->ids.insert(id).second) fresh.push_back(id);
      }
      const uint64_t current = r->store->replica_id();
      if (r->ids.insert(current).second) fresh.push_back(current);
      for (uint64_t id : fresh) NoteForkedId(*r, id);
      if (!failure_.empty()) return;
    }
  }

  // Accepts the writes replica r holds under `id`, an id it forked to (it
  // re-stamped its writes made since a restored open with it), that the
  // fold does not know of yet.
  void NoteForkedId(Replica& replica, uint64_t id) {
    Replica* r = &replica;
    Trace(absl::StrFormat("r%d forked to %016x: %s", r->index, id,
                          r->replicator->LastFork().evidence));
    std::set<std::pair<std::string, std::string>> known;
    for (const Accepted& a : accepted_) {
      if (a.version.origin == id) known.insert({a.keyspace, a.key});
    }
    uint64_t after = 0;
    for (int page = 0; page < 1000; ++page) {
      absl::StatusOr<Changes> changes = r->store->ChangesSince(after, 1000);
      if (!changes.ok()) {
        failure_ = "reading a forked log failed: " + changes.status().ToString();
        return;
      }
      for (const Record& rec : changes->records) {
        if (rec.version.origin != id || known.count({rec.keyspace, rec.key}) > 0) continue;
        Trace(absl::StrFormat("r%d re-stamped %s/%s %s", r->index, rec.keyspace, rec.key,
                              rec.version.ToString()));
        accepted_.push_back(Accepted{rec.keyspace, rec.key, rec.version, rec.deleted, rec.value});
      }
      if (changes->last_seq <= after || changes->last_seq >= changes->max_seq) break;
      after = changes->last_seq;
    }
  }

  // A copy of replica k's data directory started as a second process (a
  // cloned directory) that dials k: the two must refuse each other (both
  // count it), and nothing of the clone may reach the others. It is
  // stopped later; it is not part of the fold.
  void StartClone() {
    if (clone_ < 0) return;
    Replica& c = *replicas_[clone_];
    const int k = static_cast<int>(clone_rng_() % n_);
    Replica& r = *replicas_[k];
    // Not the replica a restore is planned for: after its fork the clone
    // would be a peer with another id, serving it the copy's writes.
    if (!r.up || c.up || !c.dir.empty() || k == backup_.replica) return;
    clone_source_ = k;
    Trace(absl::StrFormat("clone r%d's directory as r%d", k, c.index));
    Crash(r);
    c.dir = root_ + "/clone";
    std::filesystem::copy(r.dir, c.dir, std::filesystem::copy_options::recursive);
    c.max_value_bytes = r.max_value_bytes;
    c.peers = {absl::StrFormat("sim:%d", k)};
    std::string error;
    if (!Boot(r, &error) || !Boot(c, &error)) failure_ = "boot of a clone failed: " + error;
  }
  void StopClone() {
    if (clone_ < 0 || !replicas_[clone_]->up) return;
    Trace(absl::StrFormat("stop the clone r%d", clone_));
    Crash(*replicas_[clone_]);
  }

  void Crash(Replica& r, bool quiet = false) {
    if (!r.up) return;
    if (!quiet) Trace(absl::StrFormat("crash r%d", r.index));
    r.up = false;
    r.replicator->Stop();
    pages_prefetched_ += r.replicator->Counters().pages_prefetched;
    reconciles_ += r.replicator->Counters().reconciles;
    reconcile_records_ += r.replicator->Counters().reconcile_records_fetched +
                          r.replicator->Counters().reconcile_records_pushed;
    clones_refused_ += r.replicator->Counters().clones_refused;
    r.replicator.reset();
    r.store.reset();
    for (auto& [id, link] : links_) {
      if (link.up && (link.a == r.index || link.b == r.index)) {
        if (quiet) {
          link.up = false;
        } else {
          BreakLink(id, absl::StrFormat("r%d crashed", r.index));
        }
      }
    }
  }

  void Partition() {
    cut_.clear();
    const int n = static_cast<int>(replicas_.size());
    // Split into two random groups.
    std::vector<int> side(n);
    for (int i = 0; i < n; ++i) side[i] = static_cast<int>(rng_() % 2);
    for (int a = 0; a < n; ++a) {
      for (int b = a + 1; b < n; ++b) {
        if (side[a] != side[b]) cut_.insert({a, b});
      }
    }
    Trace(absl::StrFormat("partition (%d pairs cut)", cut_.size()));
    for (auto& [id, link] : links_) {
      if (link.up && cut_.count({std::min(link.a, link.b), std::max(link.a, link.b)})) {
        BreakLink(id, "partitioned");
      }
    }
  }

  void Heal() {
    cut_.clear();
    Trace("heal");
  }

  void Write() {
    Replica& r = *replicas_[rng_() % n_];
    const std::string keyspace = kKeyspaces[rng_() % 2];
    const std::string key = absl::StrFormat("k%d", static_cast<int>(rng_() % key_space_));
    const bool del = rng_() % 5 == 0;
    std::string value = absl::StrFormat("w%d@r%d", writes_, r.index);
    // Now and then a value too big for a replica with a low limit.
    if (rng_() % 8 == 0) value.resize(kBigValueBytes, '+');
    if (!r.up) return;
    absl::StatusOr<Version> v = del ? r.store->Delete(keyspace, key) : r.store->Put(keyspace, key, value);
    if (!del && value.size() > r.max_value_bytes) {
      // Refused by its own store: not an accepted write.
      if (v.ok() || v.status().code() != absl::StatusCode::kInvalidArgument) {
        failure_ = absl::StrFormat("r%d accepted a value over its limit", r.index);
      }
      return;
    }
    if (!v.ok()) {
      failure_ = absl::StrFormat("write at r%d failed: %s", r.index, v.status().ToString());
      return;
    }
    ++writes_;
    accepted_.push_back(Accepted{keyspace, key, *v, del, del ? "" : value});
    Trace(absl::StrFormat("write r%d %s/%s %s", r.index, keyspace, key, v->ToString()));
  }

  // Every replica up and holding what the checker expects of it. The
  // fingerprints of the replicas with the full value limit must agree
  // first (cheap); then the full check runs.
  // Tombstone collection: one bounded step on every replica that is up (as
  // the store's own thread would take), and the checker's watch: no
  // register ever goes back to an older version at a replica (a deleted
  // key never comes back), except by a restore from a backup. Collected
  // tombstones are noted for the restore's fold.
  void CollectAndWatch(bool collect = true) {
    for (auto& rp : replicas_) {
      Replica& r = *rp;
      if (!r.up || r.clone || !failure_.empty()) continue;
      std::map<std::pair<std::string, std::string>, Version> tombstones;
      for (const char* keyspace : kKeyspaces) {
        absl::StatusOr<ScanResult> scan = r.store->Scan(
            keyspace, ScanOptions{.limit = kMaxScanLimit, .include_tombstones = true});
        if (!scan.ok()) {
          failure_ = absl::StrFormat("r%d: scan failed: %s", r.index, scan.status().ToString());
          return;
        }
        for (const Record& rec : scan->records) {
          const std::pair<std::string, std::string> key{rec.keyspace, rec.key};
          auto [it, inserted] = r.seen.try_emplace(key, rec.version);
          if (!inserted && rec.version < it->second) {
            failure_ = absl::StrFormat(
                "r%d holds %s/%s at %s%s after holding it at %s: %s", r.index, rec.keyspace,
                rec.key, rec.version.ToString(), rec.deleted ? " (deleted)" : "",
                it->second.ToString(),
                rec.deleted ? "a register went back" : "a deleted or overwritten key came back");
            return;
          }
          if (it->second < rec.version) it->second = rec.version;
          if (rec.deleted) tombstones[key] = rec.version;
        }
      }
      if (!collect) continue;
      absl::StatusOr<Store::CollectResult> step = r.store->CollectTombstones(kCollectStepRecords);
      if (!step.ok()) {
        failure_ = absl::StrFormat("r%d: tombstone collection failed: %s", r.index,
                                   step.status().ToString());
        return;
      }
      if (step->collected == 0) continue;
      collections_ += step->collected;
      for (const auto& [key, version] : tombstones) {
        absl::StatusOr<std::optional<Record>> now = r.store->Get(key.first, key.second);
        if (now.ok() && !now->has_value()) {
          if (options_.verbose) {
            std::string acks;
            for (const auto& [peer, marks] : r.store->AcknowledgedPeers()) {
              acks += absl::StrFormat(" %016x:{", peer);
              for (const auto& [o, h] : marks) acks += absl::StrFormat("%04x=%d ", o >> 48, HlcMillis(h) % 100000);
              acks += "}";
            }
            std::string own;
            for (const auto& [o, h] : r.store->GetWatermarks()) own += absl::StrFormat("%04x=%d ", o >> 48, HlcMillis(h) % 100000);
            std::printf("r%d collected %s/%s %s; own {%s} acks%s\n", r.index, key.first.c_str(),
                        key.second.c_str(), version.ToString().c_str(), own.c_str(), acks.c_str());
          }
          auto [c, inserted] = collected_.try_emplace(key, version);
          if (c->second < version) c->second = version;
        }
      }
      Trace(absl::StrFormat("r%d collected %d tombstones", r.index, step->collected));
    }
  }

  bool AllConverged() const {
    std::optional<uint64_t> fingerprint;
    for (const auto& r : replicas_) {
      if (r->clone) continue;
      if (!r->up) return false;
      if (r->max_value_bytes != kMaxValueBytes) continue;
      const uint64_t f = r->store->fingerprint();
      if (!fingerprint.has_value()) fingerprint = f;
      // Replicas that collected different tombstones differ in
      // fingerprint but may hold the same view: the full check decides.
      if (f != *fingerprint && collected_.empty()) return false;
    }
    return Check().empty();
  }

  // A replica's clock set far beyond the skew bound (its writes are held
  // back by the others until their clocks catch up), then fixed.
  void SetClockWrong() {
    Replica& r = *replicas_[rng_() % n_];
    r.clock->set_skew_ms(90'000);
    Trace(absl::StrFormat("r%d clock set 90 s ahead", r.index));
  }
  // After healing, a run with far clocks lets this much time pass at once.
  static constexpr int64_t kADayAndTheBound = 86'400'000 + 2 * 60'000;
  // SimOptions::far_clocks: a clock a day ahead, later corrected.
  void SetClockADayAhead() {
    far_clock_ = static_cast<int>(clock_rng_() % n_);
    Replica& r = *replicas_[far_clock_];
    r.normal_skew_ms += 86'400'000;
    r.clock->set_skew_ms(r.normal_skew_ms);
    Trace(absl::StrFormat("r%d clock set a day ahead", r.index));
  }
  void CorrectClockAndRestart() {
    if (far_clock_ < 0) return;
    Replica& r = *replicas_[far_clock_];
    r.normal_skew_ms -= 86'400'000;
    r.clock->set_skew_ms(r.normal_skew_ms);
    Trace(absl::StrFormat("r%d clock corrected; restarted", r.index));
    far_clock_ = -1;
    if (!r.up) return;
    Crash(r);
    std::string error;
    if (!Boot(r, &error)) failure_ = "reboot failed: " + error;
  }
  void FixClocks() {
    for (auto& r : replicas_) r->clock->set_skew_ms(r->normal_skew_ms);
    Trace("clocks fixed");
  }

  std::string Check() const;

  const SimOptions options_;
  std::mt19937_64 rng_;
  std::mt19937_64 net_rng_;
  World world_{absl::FromUnixMillis(kEpochMs)};
  absl::Time start_ = world_.Now();
  std::string root_;
  std::vector<std::unique_ptr<Replica>> replicas_;
  std::map<LinkId, Link> links_;
  LinkId next_link_ = 0;
  std::set<std::pair<int, int>> cut_;
  bool faults_ = true;
  double loss_ = 0.05;
  int key_space_ = 20;
  int writes_ = 0;
  std::vector<Accepted> accepted_;
  // Tombstones some replica collected: the greatest version per register.
  std::map<std::pair<std::string, std::string>, Version> collected_;
  uint64_t collections_ = 0;
  // Restores draw from their own generator, so the rest of a seed's plan
  // is what it was before they existed.
  std::mt19937_64 restore_rng_{options_.seed * 104729 + 3};
  struct Backup {
    int replica = -1;
    std::string dir;
    size_t accepted_at = 0;
    uint64_t id = 0;
    bool restored = false;
    // A copy taken a few commits before the restore: a lost log tail.
    bool lost_tail = false;
  };
  Backup backup_;
  // The slot of a cloned directory (StartClone), -1 if none; n_: the
  // replicas of the checked world (the clone's slot comes after them).
  std::mt19937_64 clone_rng_{options_.seed * 15485863 + 5};
  int clone_ = -1;
  int clone_source_ = -1;
  std::mt19937_64 clock_rng_{options_.seed * 32452843 + 7};
  int far_clock_ = -1;
  int n_ = 0;
  uint64_t clones_refused_ = 0;
  std::string failure_;
  uint64_t trace_ = 0xcbf29ce484222325ULL;
  // Pages pipelined by replicators that crashed (see SimResult).
  uint64_t pages_prefetched_ = 0;
  // Reconcile rounds answered, and sessions the engines ended (those of
  // replicators that crashed; see SimResult).
  uint64_t reconcile_rounds_ = 0;
  uint64_t reconciles_ = 0;
  uint64_t reconcile_records_ = 0;
};

void SimTransport::Connect(const std::string& address,
                           absl::AnyInvocable<void(absl::StatusOr<Connected>)> done) {
  sim_.Connect(self_, address, 0, std::move(done));
}
void SimTransport::ConnectExpecting(const std::string& address, uint64_t expected,
                                    absl::AnyInvocable<void(absl::StatusOr<Connected>)> done) {
  sim_.Connect(self_, address, expected, std::move(done));
}
void SimTransport::Pull(LinkId link, const PullRequest& request,
                        absl::AnyInvocable<void(absl::StatusOr<PullResponse>)> done) {
  sim_.Pull(self_, link, request, std::move(done));
}
void SimTransport::Nudge(LinkId link, const Watermarks& mine) { sim_.Nudge(self_, link, mine); }
void SimTransport::Close(LinkId link) { sim_.Close(self_, link); }
void SimTransport::Reconcile(LinkId link, std::string request,
                             absl::AnyInvocable<void(absl::StatusOr<std::string>)> done) {
  sim_.Reconcile(self_, link, std::move(request), std::move(done));
}

std::string Simulation::Check() const {
  // The last-writer-wins fold of every accepted write.
  std::map<std::pair<std::string, std::string>, const Accepted*> full;
  for (const Accepted& a : accepted_) {
    auto [it, inserted] = full.try_emplace({a.keyspace, a.key}, &a);
    if (!inserted && a.version > it->second->version) it->second = &a;
  }
  for (const auto& r : replicas_) {
    if (r->clone) continue;
    // A replica with a low value limit cannot hold a register whose latest
    // value is bigger: what it holds for such keys (an older version, or
    // nothing) depends on when it pulled, so only the others are checked.
    std::map<std::pair<std::string, std::string>, const Accepted*> fold;
    std::set<std::pair<std::string, std::string>> unknowable;
    for (const auto& [key, a] : full) {
      if (!a->deleted && a->value.size() > r->max_value_bytes) {
        unknowable.insert(key);
      } else {
        fold[key] = a;
      }
    }
    std::map<std::pair<std::string, std::string>, Record> held;
    for (const char* keyspace : kKeyspaces) {
      absl::StatusOr<ScanResult> scan = r->store->Scan(
          keyspace, ScanOptions{.limit = kMaxScanLimit, .include_tombstones = true});
      if (!scan.ok()) return absl::StrFormat("r%d: scan failed: %s", r->index, scan.status().ToString());
      for (Record& rec : scan->records) {
        if (unknowable.count({rec.keyspace, rec.key}) == 0) {
          held[{rec.keyspace, rec.key}] = std::move(rec);
        }
      }
    }
    // A deleted register may be held as its tombstone, a newer one (a
    // fresh tombstone answering a stale record), or nothing (collected).
    for (const auto& [key, got] : held) {
      if (fold.count(key) == 0) {
        return absl::StrFormat("r%d holds %s/%s at %s, which the fold does not know", r->index,
                               key.first, key.second, got.version.ToString());
      }
    }
    for (const auto& [key, want] : fold) {
      auto it = held.find(key);
      if (it == held.end()) {
        if (want->deleted) continue;
        return absl::StrFormat("r%d (value limit %d) holds %d registers; the fold has %d; "
                               "it lacks %s/%s written at %s",
                               r->index, r->max_value_bytes, held.size(), fold.size(),
                               key.first, key.second, want->version.ToString());
      }
      const Record& got = it->second;
      if (want->deleted && got.deleted && !(got.version < want->version)) continue;
      if (got.version != want->version || got.deleted != want->deleted || got.value != want->value) {
        return absl::StrFormat("r%d (value limit %d) has %s/%s at %s%s; the fold says %s%s",
                               r->index, r->max_value_bytes, key.first,
                               key.second, got.version.ToString(), got.deleted ? " (deleted)" : "",
                               want->version.ToString(), want->deleted ? " (deleted)" : "");
      }
    }
  }
  return "";
}

SimResult Simulation::Run() {
  SimResult result;
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string pattern = std::string(tmp != nullptr ? tmp : "/tmp") + "/peerkv-sim.XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) {
    result.message = "cannot create a temporary directory";
    return result;
  }
  root_ = pattern;

  const int n = std::uniform_int_distribution<int>(options_.min_replicas, options_.max_replicas)(rng_);
  key_space_ = std::uniform_int_distribution<int>(5, 40)(rng_);
  loss_ = std::uniform_real_distribution<double>(0.0, 0.2)(rng_);
  result.replicas = n;
  n_ = n;
  const bool cloned = options_.clones && clone_rng_() % 4 == 0;
  for (int i = 0; i < n + (cloned ? 1 : 0); ++i) {
    auto r = std::make_unique<Replica>();
    r->index = i;
    // Skews within +-25 s: any two replicas differ by less than the 60 s
    // bound (until a fault sets one wrong).
    r->normal_skew_ms = std::uniform_int_distribution<int>(-25'000, 25'000)(rng_);
    r->clock = std::make_unique<SkewedClock>(world_, r->normal_skew_ms);
    r->transport = std::make_unique<SimTransport>(*this, i);
    if (i == n) {
      r->clone = true;
      clone_ = i;
    } else {
      r->dir = absl::StrFormat("%s/r%d", root_, i);
    }
    replicas_.push_back(std::move(r));
  }
  // Sometimes one replica with a low value limit. Big values cannot pass
  // through it, so it is a leaf: the others stay connected without it.
  int low = -1;
  if (rng_() % 3 == 0) {
    low = static_cast<int>(rng_() % n);
    replicas_[low]->max_value_bytes = kSmallValueLimit;
  }
  // A connected topology: a random spanning tree plus a few random edges;
  // each edge is configured on one side only (the other learns it inbound).
  std::vector<int> in_tree;
  for (int i = 0; i < n; ++i) {
    if (i == low) continue;
    if (!in_tree.empty()) {
      const int parent = in_tree[rng_() % in_tree.size()];
      replicas_[i]->peers.push_back(absl::StrFormat("sim:%d", parent));
    }
    in_tree.push_back(i);
  }
  if (low >= 0) {
    replicas_[low]->peers.push_back(absl::StrFormat("sim:%d", in_tree[rng_() % in_tree.size()]));
  }
  const int extra = static_cast<int>(rng_() % (n + 1));
  for (int e = 0; e < extra; ++e) {
    const int a = static_cast<int>(rng_() % n), b = static_cast<int>(rng_() % n);
    if (a != b) replicas_[a]->peers.push_back(absl::StrFormat("sim:%d", b));
  }
  for (auto& r : replicas_) {
    if (r->clone) continue;
    std::string error;
    if (!Boot(*r, &error)) {
      result.message = "boot failed: " + error;
      return result;
    }
  }

  // Fault phase: writes at random times; crashes, restarts, partitions.
  const int writes = std::uniform_int_distribution<int>(options_.min_writes, options_.max_writes)(rng_);
  const absl::Time fault_end = start_ + absl::Seconds(options_.fault_seconds);
  // (when, what): 0 write, 1 crash, 2 restart, 3 partition, 4 heal,
  // 5 a clock set wrong, 6 clocks fixed.
  std::vector<std::pair<absl::Time, int>> plan;
  for (int w = 0; w < writes; ++w) {
    plan.emplace_back(start_ + absl::Milliseconds(rng_() % (options_.fault_seconds * 1000)), 0);
  }
  const int faults = static_cast<int>(rng_() % 8);
  for (int f = 0; f < faults; ++f) {
    plan.emplace_back(start_ + absl::Milliseconds(rng_() % (options_.fault_seconds * 1000)),
                      1 + static_cast<int>(rng_() % 6));
  }
  // 7 a backup of a replica, 8 its restore: in a third of the runs from an
  // old copy, in a sixth from one taken a moment before (a lost log tail).
  const uint64_t restore_kind = options_.restores ? restore_rng_() % 6 : 5;
  if (restore_kind < 3) {
    const int64_t ms = options_.fault_seconds * 1000;
    const int64_t backup_at = static_cast<int64_t>(restore_rng_() % (ms / 2));
    const int64_t restore_at =
        backup_at + 1 +
        static_cast<int64_t>(restore_rng_() % (restore_kind < 2 ? ms / 2 : 1500));
    backup_.lost_tail = restore_kind == 2;
    plan.emplace_back(start_ + absl::Milliseconds(backup_at), 7);
    plan.emplace_back(start_ + absl::Milliseconds(restore_at), 8);
  }
  // 11 a replica's clock set a day ahead, 12 it is stopped, its clock
  // corrected, and started again (its persisted clock mark is a day ahead:
  // it must recover, store/clock.h, and its writes reach everyone).
  if (options_.far_clocks && clock_rng_() % 4 == 0) {
    const int64_t ms = options_.fault_seconds * 1000;
    const int64_t at = static_cast<int64_t>(clock_rng_() % (ms / 2));
    plan.emplace_back(start_ + absl::Milliseconds(at), 11);
    plan.emplace_back(start_ + absl::Milliseconds(at + 500 + clock_rng_() % (ms / 2)), 12);
  }
  // 9 a cloned directory started, 10 stopped.
  if (clone_ >= 0) {
    const int64_t ms = options_.fault_seconds * 1000;
    const int64_t start_at = static_cast<int64_t>(clone_rng_() % (ms / 2));
    plan.emplace_back(start_ + absl::Milliseconds(start_at), 9);
    plan.emplace_back(start_ + absl::Milliseconds(start_at + 2000 + clone_rng_() % (ms / 2)), 10);
  }
  // 13 tombstone collection and the resurrection watch, every kCollectEveryMs.
  for (int64_t at = kCollectEveryMs; at < options_.fault_seconds * 1000; at += kCollectEveryMs) {
    plan.emplace_back(start_ + absl::Milliseconds(at), 13);
  }
  std::sort(plan.begin(), plan.end());
  for (const auto& [when, what] : plan) {
    world_.RunUntil(when);
    NoteForks();
    if (!failure_.empty()) break;
    switch (what) {
      case 0:
        Write();
        break;
      case 1:
        Crash(*replicas_[rng_() % n]);
        break;
      case 2:
        for (auto& r : replicas_) {
          if (!r->up && !r->clone) {
            std::string error;
            if (!Boot(*r, &error)) failure_ = "reboot failed: " + error;
            break;
          }
        }
        break;
      case 3:
        Partition();
        break;
      case 4:
        Heal();
        break;
      case 5:
        SetClockWrong();
        break;
      case 6:
        FixClocks();
        break;
      case 7:
        TakeBackup();
        break;
      case 8:
        RestoreBackup();
        break;
      case 9:
        StartClone();
        break;
      case 10:
        StopClone();
        break;
      case 11:
        SetClockADayAhead();
        break;
      case 12:
        CorrectClockAndRestart();
        break;
      case 13:
        CollectAndWatch();
        break;
    }
  }
  world_.RunUntil(fault_end);
  NoteForks();
  StopClone();

  // Heal everything, restart the crashed, stop losing messages, and wait.
  const absl::Time heal = world_.Now();
  Heal();
  FixClocks();
  if (options_.far_clocks) {
    // Writes stamped a day ahead wait in quarantine until real time
    // reaches them: let a day pass, for every clock at once (events are
    // not replayed for it), so the checker's fold can be met.
    for (auto& r : replicas_) r->clock->set_skew_ms(r->normal_skew_ms + kADayAndTheBound);
    Trace("a day passes");
  }
  faults_ = false;
  for (auto& r : replicas_) {
    if (!r->up && !r->clone && failure_.empty()) {
      std::string error;
      if (!Boot(*r, &error)) failure_ = "reboot failed: " + error;
    }
  }
  const absl::Time deadline = heal + absl::Seconds(options_.converge_seconds);
  bool converged = false;
  for (int tick = 0; failure_.empty() && world_.Now() < deadline; ++tick) {
    world_.RunUntil(world_.Now() + absl::Milliseconds(100));
    NoteForks();
    // Between healing and converging only the watch runs: in runs with far
    // clocks a day passes at once, which makes every tombstone old before
    // the replicas met again; a replica none of the others had heard of
    // (a new id after a restore's fork) could then bring a write it made
    // while apart with a version older than a tombstone collected meanwhile
    // (README "Tombstone collection", limits: the minimum age must exceed
    // the time a replica stays unknown).
    if (tick % (kCollectEveryMs / 100) == 0) CollectAndWatch(/*collect=*/false);
    if (AllConverged()) {
      converged = true;
      break;
    }
  }
  if (converged && failure_.empty()) {
    const absl::Time until = world_.Now() + absl::Milliseconds(kCollectAfterMs);
    for (int tick = 0; failure_.empty() && world_.Now() < until; ++tick) {
      world_.RunUntil(world_.Now() + absl::Milliseconds(100));
      NoteForks();
      if (tick % (kCollectEveryMs / 100) == 0) CollectAndWatch();
    }
    // Let the last fresh tombstones and reconciles settle.
    converged = false;
    const absl::Time settle = world_.Now() + absl::Seconds(options_.converge_seconds);
    while (failure_.empty() && world_.Now() < settle) {
      world_.RunUntil(world_.Now() + absl::Milliseconds(100));
      NoteForks();
      if (AllConverged()) {
        converged = true;
        break;
      }
    }
  }
  if (failure_.empty()) CollectAndWatch();
  result.tombstones_collected = collections_;
  result.writes = writes_;
  result.trace_hash = trace_;
  result.pages_prefetched = pages_prefetched_;
  result.reconcile_rounds = reconcile_rounds_;
  result.reconciles = reconciles_;
  result.reconcile_records = reconcile_records_;
  result.clones_refused = clones_refused_;
  result.cloned = clone_ >= 0 && !replicas_[clone_]->dir.empty();
  for (auto& r : replicas_) {
    if (!r->up) continue;
    result.pages_prefetched += r->replicator->Counters().pages_prefetched;
    result.reconciles += r->replicator->Counters().reconciles;
    result.reconcile_records += r->replicator->Counters().reconcile_records_fetched +
                                r->replicator->Counters().reconcile_records_pushed;
    result.clones_refused += r->replicator->Counters().clones_refused;
  }
  result.converged_after_heal_seconds = absl::ToDoubleSeconds(world_.Now() - heal);
  if (!failure_.empty()) {
    result.message = failure_;
  } else if (!converged) {
    result.message = absl::StrFormat("did not converge within %d simulated seconds of healing: %s",
                                     options_.converge_seconds, Check());
  } else {
    result.message = Check();
  }
  result.passed = result.message.empty();
  const std::string summary = absl::StrFormat(
      "%d replicas, %d writes, loss %.2f, %d faults, %d events, converged %.1f s after heal",
      n, writes_, loss_, faults, world_.tasks_run(), result.converged_after_heal_seconds);
  result.message = result.passed ? summary : result.message + " (" + summary + ")";
  return result;
}

}  // namespace

SimResult Run(const SimOptions& options) {
  Simulation sim(options);
  return sim.Run();
}

}  // namespace peerkv::sim
