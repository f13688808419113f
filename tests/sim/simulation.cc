// tests/sim/simulation.cc: the simulated world (clock, event queue,
// network, faults, workload) and the checker.
#include "tests/sim/simulation.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <random>
#include <set>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "auth/certificate.h"
#include "auth/identity.h"
#include "auth/ids.h"
#include "auth/keys.h"
#include "auth/policy.h"
#include "auth/record_signature.h"
#include "common/macros.h"
#include "replication/executor.h"
#include "replication/reconcile.h"
#include "replication/replicator.h"
#include "replication/restore_guard.h"
#include "replication/serve.h"
#include "replication/transport.h"
#include "rpc/peer_auth.h"
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
// With identities the low limit must still hold Jane's policy and group
// records (a few hundred bytes): both are raised.
constexpr size_t kSmallValueLimitWithIds = 1024;
constexpr size_t kBigValueBytesWithIds = 1200;
constexpr size_t kReconcileReplyBytes = size_t{1} << 20;  // a reconcile answer's bound
const char* const kKeyspaces[] = {"notes", "mail"};
// Identities (SimOptions::identities): the users, and their keyspaces.
// Jane owns notes, mail (no policy: private) and blog (readable by her
// group kBlogGroup, Josephine in it until a revocation); Josephine owns
// jo.notes, Mallory mal.notes (private). The stranger is known to no one.
enum User { kJane = 0, kJosephine = 1, kMallory = 2, kStranger = 3, kUsers = 4 };
const char* const kUserNames[] = {"jane", "josephine", "mallory", "stranger"};
constexpr char kBlog[] = "blog";
constexpr char kBlogGroup[] = "blog-readers";
constexpr char kJoNotes[] = "jo.notes";
constexpr char kMalNotes[] = "mal.notes";
// Keys of the records a lying device forges: no one else writes them.
constexpr char kForgedPrefix[] = "forged";
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
  // Identities: whose device it is, its device key and certificate (what
  // it proves on a TLS link), and per life the store's Access (its
  // policies and groups) and its commit listener. Its replica ids are
  // minted from its device key (StoreOptions::replica_id_key).
  int user = kJane;
  std::shared_ptr<const auth::SigningKey> device;
  auth::DeviceCertificate certificate;
  std::shared_ptr<auth::StoreAccess> access;
  int listener = -1;
  // A lying device of Josephine's (StartLiar): it claims another replica's
  // id, or serves forged records unfiltered. Not part of the checked world.
  bool liar = false;
  // Not part of the checked world: a clone or the liar.
  bool outside() const { return clone || liar; }
};

struct Link {
  int a = 0;  // the dialler
  int b = 0;
  bool up = true;
  // A friend's link (two users' devices): what b serves a and a serves b
  // is filtered by the server's Access for the other's user, as
  // rpc/replica_service.cc does (null: everything).
  bool friends = false;
  std::shared_ptr<const replication::KeyspaceFilter> serve_a, serve_b;
  std::shared_ptr<const replication::ReservedRecordFilter> reserved_a, reserved_b;
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
    Replica& target = *replicas_[to];
    // The caller says what it holds of the replica it expects there.
    PeerInfo from_info = replication::LocalInfo(*replicas_[from]->store, Name(from), expected);
    // The answer says what the callee holds of the caller (restore_guard.h).
    PeerInfo to_info = replication::LocalInfo(*target.store, Name(to),
                                              replicas_[from]->store->replica_id());
    Link link{from, to, true};
    if (options_.identities) {
      if (from == liar_ && liar_claims_) {
        // The lie: a hello with another replica's id and incarnation, as
        // that replica's own hellos show them.
        from_info.replica_id = liar_claimed_id_;
        from_info.incarnation = liar_claimed_incarnation_;
      }
      const absl::Status refused = Handshake(*replicas_[from], target, from_info, to_info, link);
      if (!refused.ok()) {
        Trace(absl::StrFormat("r%d refuses r%d: %s", to, from, refused.message()));
        Deliver(from, delay * 2, [done = std::move(done), refused]() mutable { done(refused); });
        return;
      }
    }
    const LinkId id = ++next_link_;
    links_[id] = std::move(link);
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
          // A friend's link: only what the requester's user may read, as
          // the replica service serves it; the liar sends what it likes.
          const Link& link = links_.at(id);
          const bool to_a = link.a == from;
          const bool lies = replicas_[to]->liar;
          response = replication::ServePull(
              server, request, lies ? nullptr : (to_a ? link.serve_a : link.serve_b).get(),
              lies ? nullptr : (to_a ? link.reserved_a : link.reserved_b).get());
          if (response.ok()) {
            CheckSent(to, from, response->records, "a pull");
            if (lies) {
              for (const Record& rec : response->records) {
                if (absl::StartsWith(rec.value, kForgedPrefix)) ++forged_offered_;
              }
            }
          }
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
        absl::StatusOr<std::string> answer = ServeReconcileAt(from, to, id, *shared_request);
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

  // --- identities (SimOptions::identities) ---------------------------------

  // A key derived from the seed, so that a seed replays exactly.
  std::unique_ptr<auth::SigningKey> KeyFor(uint64_t tag) const {
    std::mt19937_64 g(options_.seed * 0x9E3779B97F4A7C15ULL + tag * 1000003ULL + 17);
    std::string seed(auth::kSeedBytes, '\0');
    for (size_t i = 0; i < seed.size(); i += 8) {
      const uint64_t x = g();
      std::memcpy(&seed[i], &x, 8);
    }
    absl::StatusOr<std::unique_ptr<auth::SigningKey>> key = auth::SigningKey::FromSeed(seed);
    PEERKV_CHECK(key.ok());
    return std::move(*key);
  }
  const auth::PublicKey& UserKey(int user) const { return users_[user].key->public_key(); }

  // The users' keys; Jane, Josephine and Mallory are each other's friends
  // (their TrustViews list the other two), the stranger is no one's.
  void SetUpUsers() {
    for (int u = 0; u < kUsers; ++u) users_.push_back(UserKeys{KeyFor(u + 1), {}});
    for (int u = 0; u < kUsers; ++u) {
      users_[u].trust.user = UserKey(u);
      // Certificates are checked at simulated time (they are issued at
      // kEpochMs, valid for a year: far longer than a run), not the
      // machine's, so a seed runs the same on any date.
      users_[u].trust.now_ms = kEpochMs;
      if (u == kStranger) continue;
      for (int f = 0; f < kStranger; ++f) {
        if (f != u) users_[u].trust.friends.push_back(auth::FriendEntry{UserKey(f), kUserNames[f], 0});
      }
    }
    group_key_ = auth::GroupKey(UserKey(kJane), kBlogGroup);
  }
  // Replica r becomes a device of `user`, its key derived from `tag`.
  void GiveDevice(Replica& r, int user, uint64_t tag) {
    r.user = user;
    r.device = KeyFor(100 + tag);
    r.certificate = auth::IssueDeviceCertificate(*users_[user].key, r.device->public_key(),
                                                 absl::StrFormat("r%d", r.index), kEpochMs);
  }
  static rpc::PeerCredentials Credentials(const Replica& r) {
    return rpc::PeerCredentials{r.device->public_key(), r.certificate};
  }

  // The handshake of a link (rpc/peer_auth.h, then the hello's checks):
  // each side authorizes the other's device from what its user trusts;
  // the hello's replica id must be minted from the authenticated device's
  // key, on both ends (ServerLoop::BindReplica, rpc::CheckReplicaClaim:
  // no state, so a restored replica checks as a fresh one); a friend's
  // link is filtered by each side's Access for the other's user.
  absl::Status Handshake(Replica& caller, Replica& target, PeerInfo& from_info, PeerInfo& to_info,
                         Link& link) {
    absl::StatusOr<rpc::AuthenticatedPeer> at_target =
        rpc::Authorize(users_[target.user].trust, Credentials(caller));
    if (!at_target.ok()) return at_target.status();
    absl::StatusOr<rpc::AuthenticatedPeer> at_caller =
        rpc::Authorize(users_[caller.user].trust, Credentials(target));
    if (!at_caller.ok()) return at_caller.status();
    absl::Status bound = Bind(from_info, caller.device->public_key());
    if (bound.ok()) bound = Bind(to_info, target.device->public_key());
    if (!bound.ok()) {
      ++claims_refused_;
      return bound;
    }
    // The checker's own view: a link is only ever made under the id the
    // dialling replica really has.
    if (from_info.replica_id != caller.store->replica_id() && failure_.empty()) {
      failure_ = absl::StrFormat(
          "a link from r%d came up under replica id %016x, which is r%d's: a device's claim of "
          "another replica's id was accepted",
          caller.index, from_info.replica_id, liar_victim_);
    }
    if (at_target->role != rpc::PeerRole::kFriend) return absl::OkStatus();
    link.friends = true;
    from_info.readable = ReadableBy(target, caller.user);
    to_info.readable = ReadableBy(caller, target.user);
    if (!options_.break_friend_filter) {
      link.serve_a = from_info.readable;
      link.serve_b = to_info.readable;
      link.reserved_a = ReservedBy(target, caller.user);
      link.reserved_b = ReservedBy(caller, target.user);
    }
    return absl::OkStatus();
  }
  // The hello `info`, shown on a link whose device is `device`.
  absl::Status Bind(const PeerInfo& info, const auth::PublicKey& device) const {
    if (options_.break_bindings) return absl::OkStatus();
    return rpc::CheckReplicaClaim(info.replica_id, info.incarnation, device);
  }
  // As ServerLoop::ReadableBy / ReservedReadableBy.
  static std::shared_ptr<const replication::KeyspaceFilter> ReadableByAccess(
      std::shared_ptr<const auth::Access> access, const auth::PublicKey& user) {
    const auth::Principal who{user, /*local_user=*/false};
    return std::make_shared<const replication::KeyspaceFilter>(
        [access, who](std::string_view keyspace) { return access->MayRead(who, keyspace); });
  }
  std::shared_ptr<const replication::KeyspaceFilter> ReadableBy(const Replica& server,
                                                                int user) const {
    return ReadableByAccess(server.access, UserKey(user));
  }
  std::shared_ptr<const replication::ReservedRecordFilter> ReservedBy(const Replica& server,
                                                                      int user) const {
    std::shared_ptr<const auth::Access> access = server.access;
    const auth::Principal who{UserKey(user), /*local_user=*/false};
    return std::make_shared<const replication::ReservedRecordFilter>(
        [access, who](std::string_view keyspace, std::string_view key) {
          return access->MayReadRecord(who, keyspace, key);
        });
  }

  // The checker's rules of who may have what, independent of the code
  // under test. The keyspace a record speaks of: its own, or for a policy
  // record the keyspace it governs, for Jane's group record the blog.
  std::string Governed(std::string_view ks, std::string_view key) const {
    if (ks == auth::kPoliciesKeyspace) return std::string(key);
    if (ks == auth::kGroupsKeyspace) return key == group_key_ ? kBlog : std::string(ks);
    return std::string(ks);
  }
  static int OwnerOf(std::string_view governed) {
    if (governed == kJoNotes) return kJosephine;
    if (governed == kMalNotes) return kMallory;
    return kJane;
  }
  // Whether a replica of `user` may ever hold a record of (ks, key): its
  // owner's, or the blog's for Josephine.
  bool EverReadable(int user, std::string_view ks, std::string_view key) const {
    const std::string g = Governed(ks, key);
    return OwnerOf(g) == user || (g == kBlog && user == kJosephine);
  }
  // README "Groups and policies", revocation: once Jane removes Josephine
  // from the group, no replica that has learned it (holds the removal's
  // group record, or a newer one) sends Josephine anything of the blog
  // written after the removal (a version at or above the removal's); what
  // she already has stays hers, and a replica that has not learned it yet
  // may still send. Nothing else of Jane's ever reaches another user, nor
  // Josephine's or Mallory's anyone but their own devices.
  bool MayHave(int sender, int user, std::string_view ks, std::string_view key,
               const Version& version) const {
    if (!EverReadable(user, ks, key)) return false;
    if (OwnerOf(Governed(ks, key)) == user) return true;
    if (!revoked_ || version < removal_) return true;
    return !HoldsRemoval(*replicas_[sender]);
  }
  bool HoldsRemoval(const Replica& r) const {
    absl::StatusOr<std::optional<Record>> group = r.store->Get(auth::kGroupsKeyspace, group_key_);
    return group.ok() && group->has_value() && !((*group)->version < removal_);
  }
  // Records (or keys: a reconcile's items) sent from `sender` to
  // `receiver`: each must be one the receiver's user may have.
  void CheckSent(int sender, int receiver, const std::vector<Record>& records, const char* path) {
    if (!options_.identities || replicas_[sender]->liar) return;
    for (const Record& rec : records) {
      CheckOne(sender, receiver, rec.keyspace, rec.key, rec.version, path);
    }
  }
  void CheckOne(int sender, int receiver, std::string_view ks, std::string_view key,
                const Version& version, const char* path) {
    const int user = replicas_[receiver]->user;
    if (user != replicas_[sender]->user) ++sent_to_friends_;
    if (MayHave(sender, user, ks, key, version) || !failure_.empty()) return;
    failure_ = absl::StrFormat(
        "r%d (%s's) sent r%d (%s's) %s/%s %s in %s, which %s may not have%s", sender,
        kUserNames[replicas_[sender]->user], receiver, kUserNames[user], ks, key,
        version.ToString(), path, kUserNames[user],
        revoked_ ? absl::StrFormat(" (removed from the group at %s)", removal_.ToString()) : "");
  }
  // A reconcile answer: the records fetched (named by the request), the
  // keys of the items of each expansion (one per differing root, then per
  // expanded node one per differing child, or one), the names of
  // differing roots the initiator did not name itself.
  void CheckAnswer(int sender, int receiver, const replication::ReconcileRequest& request,
                   const replication::ReconcileResponse& response) {
    if (!options_.identities || replicas_[sender]->liar) return;
    for (size_t i = 0; i < response.fetched.size() && i < request.fetch.size(); ++i) {
      if (!response.fetched[i].has_value()) continue;
      CheckOne(sender, receiver, request.fetch[i].keyspace, request.fetch[i].key,
               response.fetched[i]->version, "a reconcile answer");
    }
    std::set<std::string> named;
    for (const replication::KeyspaceRoot& root : request.roots) named.insert(root.keyspace);
    std::vector<const std::string*> keyspace_of;
    for (const replication::KeyspaceRoot& root : response.differing) {
      if (!named.count(root.keyspace)) {
        CheckOne(sender, receiver, root.keyspace, "", Version{}, "a reconcile answer's roots");
      }
      if (!request.verify_only) keyspace_of.push_back(&root.keyspace);
    }
    for (uint64_t i = 0; i < response.expanded && i < request.expand.size(); ++i) {
      const int count = request.expand[i].children.empty() || i >= response.masks.size()
                            ? 1
                            : __builtin_popcount(response.masks[i]);
      for (int c = 0; c < count; ++c) keyspace_of.push_back(&request.expand[i].keyspace);
    }
    if (keyspace_of.size() != response.expansions.size()) {
      ++unmapped_answers_;
      return;
    }
    for (size_t e = 0; e < response.expansions.size(); ++e) {
      for (const Record& item : response.expansions[e].items) {
        CheckOne(sender, receiver, *keyspace_of[e], item.key, item.version, "a reconcile answer");
      }
    }
  }
  // A leak the commit listeners saw (on writer threads, while the
  // simulation waits for the store call) becomes the run's failure.
  void TakeLeak() {
    absl::MutexLock lock(&leak_mu_);
    if (!leak_.empty() && failure_.empty()) failure_ = leak_;
  }

  // Jane's group and the blog's policy, set on r0 before anything runs
  // (auth/policy.h's commands), and given to her other devices as if they
  // had synced first (otherwise their first blog writes would be unsigned,
  // made before they knew the blog's policy).
  void SetUpPolicies() {
    Replica& r0 = *replicas_[0];
    const int64_t now = absl::ToUnixMillis(world_.Now());
    absl::Status s = auth::CreateGroup(*jane_, *r0.store, kBlogGroup, now);
    if (s.ok()) {
      s = auth::AddToGroup(*jane_, *r0.store, kBlogGroup, {auth::Member{UserKey(kJosephine), ""}},
                           now);
    }
    if (s.ok()) {
      auth::Who readers;
      readers.kind = auth::Who::Kind::kGroup;
      readers.group = kBlogGroup;
      auth::Who writers;
      writers.kind = auth::Who::Kind::kOwner;
      s = auth::SetPolicy(*jane_, *r0.store, kBlog, {readers}, {writers}, now);
    }
    std::vector<Record> records;
    for (auto [ks, key] : {std::pair<std::string, std::string>{auth::kPoliciesKeyspace, kBlog},
                           {auth::kGroupsKeyspace, group_key_}}) {
      if (!s.ok()) break;
      absl::StatusOr<std::optional<Record>> rec = r0.store->Get(ks, key);
      if (!rec.ok() || !rec->has_value()) {
        s = absl::InternalError(absl::StrFormat("r0 lacks %s/%s", ks, key));
        break;
      }
      records.push_back(**rec);
    }
    for (int i = 1; s.ok() && i < n_; ++i) {
      Replica& r = *replicas_[i];
      if (r.user != kJane) continue;
      absl::StatusOr<MergeResult> merged = r.store->Merge(records);
      if (!merged.ok()) s = merged.status();
      if (s.ok() && merged->won != records.size()) {
        s = absl::InternalError(absl::StrFormat("r%d refused Jane's policy", i));
      }
    }
    if (!s.ok()) failure_ = "setting up the blog's policy failed: " + s.ToString();
    Trace("jane's blog policy set");
  }
  // Jane removes Josephine from the group, on one of her devices that is up.
  void Revoke() {
    const int start = static_cast<int>(id_rng_() % n_);
    for (int i = 0; i < n_; ++i) {
      Replica& r = *replicas_[(start + i) % n_];
      if (r.user != kJane || !r.up || revoked_) continue;
      const absl::Status s =
          auth::RemoveFromGroup(*jane_, *r.store, kBlogGroup, auth::Member{UserKey(kJosephine), ""},
                                absl::ToUnixMillis(world_.Now()));
      absl::StatusOr<std::optional<Record>> group = r.store->Get(auth::kGroupsKeyspace, group_key_);
      if (!s.ok() || !group.ok() || !group->has_value()) {
        failure_ = absl::StrFormat("r%d: removing josephine from the group failed: %s", r.index,
                                   s.ToString());
        return;
      }
      revoked_ = true;
      removal_ = (*group)->version;
      Trace(absl::StrFormat("r%d: jane removes josephine from %s at %s", r.index, kBlogGroup,
                            removal_.ToString()));
      return;
    }
  }
  // A stranger's device (certified by a user no one knows) dials a replica:
  // refused by the handshake.
  void StrangerDials() {
    const int k = static_cast<int>(id_rng_() % n_);
    Replica& r = *replicas_[k];
    if (!r.up) return;
    Replica stranger;
    stranger.index = 99;
    GiveDevice(stranger, kStranger, 99);
    absl::StatusOr<rpc::AuthenticatedPeer> peer =
        rpc::Authorize(users_[r.user].trust, Credentials(stranger));
    if (peer.ok() || peer.status().code() != absl::StatusCode::kPermissionDenied) {
      failure_ = absl::StrFormat("r%d admitted a stranger's device: %s", k,
                                 peer.ok() ? "ok" : peer.status().ToString());
      return;
    }
    ++strangers_refused_;
    Trace(absl::StrFormat("r%d refuses a stranger", k));
  }

  // The lying device (a device of Josephine's, so Jane's replicas let it
  // connect as a friend) starts, dialling one of Jane's replicas. Either
  // its hello claims the replica id of another of Jane's replicas, which
  // met the target before (the binding must refuse it), or it serves,
  // unfiltered, records it forged: an unsigned one of notes under the
  // victim's origin, a blog record it signed itself (a valid signature of
  // a non-writer), a real signed blog record with another value and
  // version, an unsigned blog record of its own (the merge gate must
  // refuse them all).
  void StartLiar() {
    if (liar_ < 0) return;
    Replica& l = *replicas_[liar_];
    if (l.up || !l.dir.empty()) return;
    std::vector<int> up;
    for (int i = 0; i < n_; ++i) {
      if (replicas_[i]->user == kJane && replicas_[i]->up) up.push_back(i);
    }
    if (up.size() < 2) return;
    const size_t t = id_rng_() % up.size();
    const int target = up[t];
    const int victim = up[(t + 1 + id_rng_() % (up.size() - 1)) % up.size()];
    liar_victim_ = victim;
    Replica& v = *replicas_[victim];
    if (liar_claims_) {
      // Whether or not the target met the victim before, or was restored
      // since: the claim is checked against the liar's key alone.
      liar_claimed_id_ = v.store->replica_id();
      liar_claimed_incarnation_ = v.store->incarnation();
    }
    l.dir = root_ + "/liar";
    l.peers = {absl::StrFormat("sim:%d", target)};
    std::string error;
    if (!Boot(l, &error)) {
      failure_ = "boot of the liar failed: " + error;
      return;
    }
    Trace(absl::StrFormat("a lying device of josephine's dials r%d, %s r%d", target,
                          liar_claims_ ? "claiming the id of" : "forging records of", victim));
    if (liar_claims_) return;
    const uint64_t hlc = MakeHlc(static_cast<uint64_t>(absl::ToUnixMillis(world_.Now())), 7);
    const Version as_victim{hlc, v.store->replica_id()};
    std::vector<Record> forged;
    auto add = [&](const char* ks, std::string key, Version version, std::string value) {
      Record rec;
      rec.keyspace = ks;
      rec.key = std::move(key);
      rec.version = version;
      rec.value = std::move(value);
      forged.push_back(std::move(rec));
    };
    add("notes", absl::StrCat(kForgedPrefix, "-unsigned"), as_victim, "forged: unsigned");
    add(kBlog, absl::StrCat(kForgedPrefix, "-self-signed"), as_victim, "forged: self-signed");
    forged.back().signature = auth::SignRecord(*l.device, l.certificate.Encode(), kBlog,
                                               forged.back().key, as_victim, false,
                                               forged.back().value);
    add(kBlog, absl::StrCat(kForgedPrefix, "-own"), Version{hlc, l.store->replica_id()},
        "forged: unsigned, own origin");
    absl::StatusOr<ScanResult> blog = v.store->Scan(kBlog, ScanOptions{.limit = 100});
    if (blog.ok()) {
      for (const Record& real : blog->records) {
        if (real.signature.empty()) continue;
        // A replay with another value, and with another version too.
        Record altered = real;
        altered.value = "forged: altered";
        altered.version.hlc = std::max(real.version.hlc, hlc) + 1;
        forged.push_back(altered);
        altered.version = real.version;
        forged.push_back(std::move(altered));
        break;
      }
    }
    planting_ = true;
    absl::StatusOr<MergeResult> merged = l.store->Merge(std::move(forged));
    planting_ = false;
    if (!merged.ok()) failure_ = "the liar could not store its forgeries: " + merged.status().ToString();
  }
  void StopLiar() {
    if (liar_ < 0 || !replicas_[liar_]->up) return;
    Trace("stop the liar");
    Crash(*replicas_[liar_]);
  }

  // Replica `to`'s answer to a reconcile request on link `id`, as the RPC
  // service gives it: a request out of bounds is refused and closes that
  // link; records pushed merge first (and count against the peer, as from
  // a pull); then the responder's side of the round.
  // On a friend's link (identities) as the replica service answers it: a
  // push of a keyspace the pusher may not read is dropped unmerged, the
  // rest merges as a friend's, and the answer is read through
  // FilteredReconcileSource.
  absl::StatusOr<std::string> ServeReconcileAt(int from, int to, LinkId id,
                                               const std::string& bytes) {
    Replica& r = *replicas_[to];
    absl::StatusOr<replication::ReconcileRequest> request =
        replication::DecodeReconcileRequest(bytes, kMaxValueBytes);
    if (!request.ok()) {
      BreakLink(id, "a reconcile request out of bounds");
      return request.status();
    }
    const Link& link = links_.at(id);
    std::shared_ptr<const replication::KeyspaceFilter> readable =
        r.liar ? nullptr : link.a == from ? link.serve_a : link.serve_b;
    const MergeSource merge_source = link.friends ? MergeSource::kFriend : MergeSource::kOwnDevice;
    CheckSent(from, to, request->push, "a reconcile push");
    replication::DropValuesOverLimit(request->push, r.store->options().max_value_bytes);
    if (readable != nullptr) {
      std::erase_if(request->push, [&](const Record& rec) { return !(*readable)(rec.keyspace); });
    }
    MergeResult pushed;
    if (!request->push.empty()) {
      std::vector<Record> push = std::move(request->push);
      request->push.clear();
      absl::StatusOr<MergeResult> merged =
          r.store->Merge(std::move(push), std::nullopt, merge_source);
      if (!merged.ok()) return merged.status();
      r.replicator->OnPushMerged(id, *merged);
      pushed = *merged;
    }
    std::unique_ptr<replication::ReconcileSource> inner =
        replication::StoreReconcileSource(*r.store);
    std::unique_ptr<replication::ReconcileSource> filtered;
    if (readable != nullptr) filtered = replication::FilteredReconcileSource(*inner, readable);
    absl::StatusOr<replication::ReconcileResponse> response = replication::ServeReconcile(
        filtered != nullptr ? *filtered : *inner, *request, kReconcileReplyBytes);
    if (!response.ok()) return response.status();
    CheckAnswer(to, from, *request, *response);
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
    if (options_.identities) {
      // As the server configures its store (cli/serve): policies and
      // groups checked, writes of keyspaces that need it signed with the
      // device key, remote records through the merge gate. The liar keeps
      // whatever it is sent and signs nothing.
      const auth::PublicKey& user = UserKey(r.user);
      // As serve does: replica ids minted from the device key.
      options.replica_id_key = std::string(r.device->public_key().view());
      r.access = std::make_shared<auth::StoreAccess>(user);
      options.reserved_check = auth::ReservedCheckWithPolicies(user, r.access);
      if (r.liar) {
        // It keeps only its forgeries: were it to keep what it pulls, it
        // would be one more holder of Jane's writes, outside the checked
        // world (a write lost with a restored directory could come back
        // from it).
        options.record_gate = [this](const Record&, MergeSource) {
          return planting_ ? absl::OkStatus()
                           : absl::PermissionDeniedError("the liar keeps only its forgeries");
        };
      } else {
        options.signer = auth::MakeRecordSigner(r.access, r.device, r.certificate.Encode());
        // One verifier per process life, as the server has.
        if (!options_.break_gate) {
          options.record_gate = auth::MakeRecordGate(
              r.access, std::make_shared<const auth::RecordVerifier>(), user);
        }
      }
    }
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
    if (!store.ok()) {
      *error = std::string(store.status().message());
      return false;
    }
    r.store = std::move(*store);
    if (options_.identities) {
      r.access->Attach(r.store.get());
      if (!r.liar) {
        // The receiving end of the no-leak check: every change a commit
        // brings, whatever path it came by.
        r.listener = r.store->AddCommitListener(
            [this, index = r.index, user = r.user](const Store::CommitInfo& info) {
              for (const CommitChange& c : *info.changes) {
                const bool forged = c.key.starts_with(kForgedPrefix);
                if (!forged && EverReadable(user, c.keyspace, c.key)) continue;
                absl::MutexLock lock(&leak_mu_);
                if (!leak_.empty()) continue;
                leak_ = forged ? absl::StrFormat("r%d merged the forged record %s/%s", index,
                                                 c.keyspace, c.key)
                               : absl::StrFormat("r%d (%s's) merged %s/%s, which %s may never read",
                                                 index, kUserNames[user], c.keyspace, c.key,
                                                 kUserNames[user]);
              }
            });
      }
    }
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
      if (other.get() != &r && !other->up && !other->outside()) return;
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
        if (other.get() == &r || other->outside()) continue;
        absl::StatusOr<std::optional<Record>> held = other->store->Get(a.keyspace, a.key);
        survives = held.ok() && held->has_value() && !((*held)->version < a.version);
        // A write too far ahead for that replica waits in its quarantine:
        // it merges there later, so it is not lost.
        survives = survives || other->store->InQuarantine(a.keyspace, a.key, a.version);
      }
      // A tombstone collected elsewhere was held by every peer of that
      // replica: it is not lost (and stale copies are refused). One that
      // only the restored replica collected is lost with its other writes
      // since the copy: it waited for no peer that holds it (seed 4073:
      // Josephine's only replica collected a jo.notes tombstone, which no
      // other replica may read, then went back to its backup).
      if (!survives && a.deleted) {
        auto c = collected_.find({a.keyspace, a.key});
        if (c != collected_.end()) {
          for (const auto& [collector, version] : c->second) {
            survives = survives || (collector != r.index && !(version < a.version));
          }
        }
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
    TakeLeak();
    for (auto& r : replicas_) {
      if (!r->up || r->outside()) continue;
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
    // The same keys: the copy holds the same device key.
    c.user = r.user;
    c.device = r.device;
    c.certificate = r.certificate;
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
    if (r.access != nullptr) {
      if (r.listener >= 0) r.store->RemoveCommitListener(r.listener);
      r.listener = -1;
      r.access->Detach();
    }
    r.store.reset();
    r.access.reset();
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
    std::string keyspace = kKeyspaces[rng_() % 2];
    if (options_.identities) {
      const uint64_t pick = id_rng_() % 8;
      if (r.user == kJane) {
        if (pick == 0) keyspace = kBlog;
      } else if (r.user == kJosephine && pick == 0) {
        // Josephine tries to post to Jane's blog: once her replica knows
        // its policy, the access check the gateway makes refuses it.
        if (r.up && r.access->PolicyOf(kBlog).has_value()) {
          if (r.access->MayWrite(auth::Principal{UserKey(kJosephine), true}, kBlog)) {
            failure_ = absl::StrFormat("r%d let josephine write jane's blog", r.index);
          }
          Trace(absl::StrFormat("r%d refuses josephine's post to the blog", r.index));
        }
        return;
      } else {
        keyspace = r.user == kJosephine ? kJoNotes : kMalNotes;
      }
    }
    const std::string key = absl::StrFormat("k%d", static_cast<int>(rng_() % key_space_));
    const bool del = rng_() % 5 == 0;
    std::string value = absl::StrFormat("w%d@r%d", writes_, r.index);
    // Now and then a value too big for a replica with a low limit.
    if (rng_() % 8 == 0) {
      value.resize(options_.identities ? kBigValueBytesWithIds : kBigValueBytes, '+');
    }
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

  // The workload keyspaces a replica may read (and is checked on).
  std::vector<std::string> Visible(const Replica& r) const {
    if (!options_.identities) return {kKeyspaces[0], kKeyspaces[1]};
    switch (r.user) {
      case kJane:
        return {kKeyspaces[0], kKeyspaces[1], kBlog};
      case kJosephine:
        return {kJoNotes, kBlog};
      default:
        return {kMalNotes};
    }
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
      if (!r.up || r.outside() || !failure_.empty()) continue;
      std::map<std::pair<std::string, std::string>, Version> tombstones;
      for (const std::string& keyspace : Visible(r)) {
        absl::StatusOr<ScanResult> scan = r.store->Scan(
            keyspace, ScanOptions{.limit = kMaxScanLimit, .include_tombstones = true});
        if (!scan.ok()) {
          failure_ = absl::StrFormat("r%d: scan failed: %s", r.index, scan.status().ToString());
          return;
        }
        for (const Record& rec : scan->records) {
          if (options_.identities && absl::StartsWith(rec.value, kForgedPrefix)) {
            failure_ = absl::StrFormat("r%d holds %s/%s at %s with a forged value", r.index,
                                       rec.keyspace, rec.key, rec.version.ToString());
            return;
          }
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
            // Served: the watermarks plus what is held of retired ids.
            std::string served;
            for (const auto& [o, h] : r.store->ServedWatermarks()) served += absl::StrFormat("%04x=%d ", o >> 48, HlcMillis(h) % 100000);
            std::printf("r%d collected %s/%s %s; own {%s} served {%s} acks%s\n", r.index,
                        key.first.c_str(), key.second.c_str(), version.ToString().c_str(),
                        own.c_str(), served.c_str(), acks.c_str());
          }
          auto [c, inserted] = collected_[key].try_emplace(r.index, version);
          if (c->second < version) c->second = version;
        }
      }
      Trace(absl::StrFormat("r%d collected %d tombstones", r.index, step->collected));
    }
  }

  bool AllConverged() const {
    std::optional<uint64_t> fingerprint;
    for (const auto& r : replicas_) {
      if (r->outside()) continue;
      if (!r->up) return false;
      // Other users' replicas hold other keyspaces: the full check decides.
      if (r->max_value_bytes != kMaxValueBytes || r->user != kJane) continue;
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
  // Tombstones replicas collected: per register, the greatest version
  // each replica (by index) collected.
  std::map<std::pair<std::string, std::string>, std::map<int, Version>> collected_;
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
  // Identities (SimOptions::identities); see SetUpUsers, Revoke, StartLiar.
  struct UserKeys {
    std::unique_ptr<auth::SigningKey> key;
    rpc::TrustView trust;
  };
  std::vector<UserKeys> users_;
  // Jane's identity, for her policy and group commands.
  std::unique_ptr<auth::Identity> jane_;
  std::mt19937_64 id_rng_{options_.seed * 49979687 + 11};
  std::string group_key_;
  bool revoked_ = false;
  Version removal_;
  int liar_ = -1;
  int liar_victim_ = 0;
  uint64_t liar_claimed_id_ = 0;
  uint64_t liar_claimed_incarnation_ = 0;
  // The liar's gate lets its own forgeries in (StartLiar).
  std::atomic<bool> planting_{false};
  bool liar_claims_ = false;
  uint64_t sent_to_friends_ = 0;
  uint64_t claims_refused_ = 0;
  uint64_t forged_offered_ = 0;
  uint64_t strangers_refused_ = 0;
  // Reconcile answers whose expansions the checker could not map to
  // keyspaces (their items were not checked); expected to stay 0.
  uint64_t unmapped_answers_ = 0;
  // A leak seen by a commit listener (TakeLeak).
  absl::Mutex leak_mu_;
  std::string leak_ ABSL_GUARDED_BY(leak_mu_);
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
    if (r->outside()) continue;
    // A replica with a low value limit cannot hold a register whose latest
    // value is bigger: what it holds for such keys (an older version, or
    // nothing) depends on when it pulled, so only the others are checked.
    std::map<std::pair<std::string, std::string>, const Accepted*> fold;
    std::set<std::pair<std::string, std::string>> unknowable;
    // Identities: each replica converges on the keyspaces its user may
    // read; Josephine's, once removed from the group, no longer on the blog
    // (README: what she has stays hers, later posts do not reach her), but
    // every blog record she holds must be one Jane wrote.
    std::vector<std::string> visible = Visible(*r);
    const bool blog_frozen = revoked_ && r->user == kJosephine;
    if (blog_frozen) std::erase(visible, std::string(kBlog));
    for (const auto& [key, a] : full) {
      if (std::find(visible.begin(), visible.end(), key.first) == visible.end()) continue;
      if (!a->deleted && a->value.size() > r->max_value_bytes) {
        unknowable.insert(key);
      } else {
        fold[key] = a;
      }
    }
    if (blog_frozen) {
      absl::StatusOr<ScanResult> scan =
          r->store->Scan(kBlog, ScanOptions{.limit = kMaxScanLimit, .include_tombstones = true});
      if (!scan.ok()) return absl::StrFormat("r%d: scan failed: %s", r->index, scan.status().ToString());
      for (const Record& rec : scan->records) {
        const bool written = std::any_of(accepted_.begin(), accepted_.end(), [&](const Accepted& a) {
          return a.keyspace == rec.keyspace && a.key == rec.key && a.version == rec.version &&
                 a.deleted == rec.deleted && a.value == rec.value;
        });
        if (!written) {
          return absl::StrFormat("r%d holds %s/%s at %s, which jane never wrote", r->index,
                                 rec.keyspace, rec.key, rec.version.ToString());
        }
      }
    }
    std::map<std::pair<std::string, std::string>, Record> held;
    for (const std::string& keyspace : visible) {
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
  // Identities: the last one or two replicas are Josephine's, with six or
  // more sometimes one before them Mallory's, the rest Jane's; in a third
  // of the runs a lying device of Josephine's (a slot after the clone's).
  int friends = 0, mallory = 0;
  bool liar = false;
  if (options_.identities) {
    SetUpUsers();
    friends = n >= 5 ? 2 : 1;
    mallory = n >= 6 && id_rng_() % 2 == 0 ? 1 : 0;
    liar = id_rng_() % 3 == 0;
    liar_claims_ = id_rng_() % 2 == 0;
  }
  const int slots = n + (cloned ? 1 : 0) + (liar ? 1 : 0);
  for (int i = 0; i < slots; ++i) {
    auto r = std::make_unique<Replica>();
    r->index = i;
    // Skews within +-25 s: any two replicas differ by less than the 60 s
    // bound (until a fault sets one wrong).
    r->normal_skew_ms = std::uniform_int_distribution<int>(-25'000, 25'000)(rng_);
    r->clock = std::make_unique<SkewedClock>(world_, r->normal_skew_ms);
    r->transport = std::make_unique<SimTransport>(*this, i);
    if (i == n && cloned) {
      r->clone = true;
      clone_ = i;
    } else if (i >= n) {
      r->liar = true;
      liar_ = i;
    } else {
      r->dir = absl::StrFormat("%s/r%d", root_, i);
    }
    if (options_.identities) {
      const int user = i >= n ? kJosephine
                       : i >= n - friends ? kJosephine
                       : i >= n - friends - mallory ? kMallory
                                                    : kJane;
      GiveDevice(*r, user, i);
    }
    replicas_.push_back(std::move(r));
  }
  if (options_.identities) {
    absl::StatusOr<std::unique_ptr<auth::Identity>> jane =
        auth::Identity::CreateDeviceOf(root_ + "/jane", *users_[kJane].key, "jane");
    if (!jane.ok()) {
      result.message = "jane's identity: " + jane.status().ToString();
      return result;
    }
    jane_ = std::move(*jane);
  }
  // Sometimes one replica with a low value limit. Big values cannot pass
  // through it, so it is a leaf: the others stay connected without it.
  int low = -1;
  if (rng_() % 3 == 0) {
    low = static_cast<int>(rng_() % n);
    // (Identities: one of Jane's, so that her devices stay connected.)
    if (replicas_[low]->user != kJane) low = 0;
    replicas_[low]->max_value_bytes =
        options_.identities ? kSmallValueLimitWithIds : kSmallValueLimit;
  }
  // A connected topology: a random spanning tree plus a few random edges;
  // each edge is configured on one side only (the other learns it inbound).
  // Identities: a tree per user (each user's devices reach each other
  // through their own), and every other user's device dials one of Jane's
  // (a friend's link), Mallory's also one of Josephine's.
  std::vector<int> in_tree;
  std::vector<std::vector<int>> trees(kUsers);
  for (int i = 0; i < n; ++i) {
    if (i == low) continue;
    std::vector<int>& tree = options_.identities ? trees[replicas_[i]->user] : in_tree;
    if (!tree.empty()) {
      const int parent = tree[rng_() % tree.size()];
      replicas_[i]->peers.push_back(absl::StrFormat("sim:%d", parent));
    }
    tree.push_back(i);
  }
  if (options_.identities) {
    in_tree = trees[kJane];
    for (int i = 0; i < n; ++i) {
      if (replicas_[i]->user == kJane) continue;
      replicas_[i]->peers.push_back(
          absl::StrFormat("sim:%d", trees[kJane][id_rng_() % trees[kJane].size()]));
      if (replicas_[i]->user == kMallory) {
        replicas_[i]->peers.push_back(
            absl::StrFormat("sim:%d", trees[kJosephine][id_rng_() % trees[kJosephine].size()]));
      }
    }
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
    if (r->outside()) continue;
    std::string error;
    if (!Boot(*r, &error)) {
      result.message = "boot failed: " + error;
      return result;
    }
  }
  if (options_.identities) SetUpPolicies();

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
  // Identities: 14 the liar starts, 15 it stops; 16 a stranger's device
  // dials; 17 (in half the runs) Jane removes Josephine from the group.
  if (options_.identities) {
    const int64_t ms = options_.fault_seconds * 1000;
    if (liar_ >= 0) {
      const int64_t at = static_cast<int64_t>(id_rng_() % (ms / 2));
      plan.emplace_back(start_ + absl::Milliseconds(at), 14);
      plan.emplace_back(start_ + absl::Milliseconds(at + 2000 + id_rng_() % (ms / 2)), 15);
    }
    if (id_rng_() % 4 == 0) {
      plan.emplace_back(start_ + absl::Milliseconds(id_rng_() % ms), 16);
    }
    if (id_rng_() % 2 == 0) {
      plan.emplace_back(start_ + absl::Milliseconds(id_rng_() % ms), 17);
    }
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
          if (!r->up && !r->outside()) {
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
      case 14:
        StartLiar();
        break;
      case 15:
        StopLiar();
        break;
      case 16:
        StrangerDials();
        break;
      case 17:
        Revoke();
        break;
    }
  }
  world_.RunUntil(fault_end);
  NoteForks();
  StopClone();
  StopLiar();

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
    if (!r->up && !r->outside() && failure_.empty()) {
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
  result.revoked = revoked_;
  result.sent_to_friends = sent_to_friends_;
  result.liar = liar_ >= 0 && !replicas_[liar_]->dir.empty();
  result.claims_refused = claims_refused_;
  result.forged_offered = forged_offered_;
  result.strangers_refused = strangers_refused_;
  result.unmapped_answers = unmapped_answers_;
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
