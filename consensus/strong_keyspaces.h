// consensus/strong_keyspaces.h: strong keyspaces on top of the LWW store.
// A keyspace's mode (lww or strong) is a register in the reserved keyspace
// `peerkv.modes`, written only through the ConsensusLog and replicated like
// any record. Writes to a strong keyspace are proposed to the log (with an
// optional compare-and-set precondition); every replica applies committed
// writes, with the version the commit assigned, through the normal
// Store::Merge, so replicas that cannot reach the log still get them by
// gossip. No kj or capnp: rpc/ wires this, the simulation can drive it.
//
// The rules (README "Strong keyspaces"):
// - A committed write carries origin kStrongOrigin, which no replica has as
//   its id. That is how every replica recognises it without the log: the
//   barrier below never refuses it, and no replica ever claims a watermark
//   for kStrongOrigin (none writes as it), so committed writes, which reach
//   replicas out of any seq order, travel only by change-log pulls and
//   reconciliation and never hide behind a watermark.
// - The barrier: the mode record's value lists the keyspace's switches, each
//   with the version its commit got. An lww record (origin other than
//   kStrongOrigin) whose version lies in a strong interval (at or after a
//   switch to strong, before the next switch back to lww) is refused at
//   merge on every replica (counted, logged once per keyspace); lww records
//   before the switch, or after a switch back, merge as always. Back in lww
//   mode, the strong writes are ordinary registers.
// - A strong write's version is above the switch's and above every version
//   the proposer holds for the key, so it beats every lww write that merged.
#ifndef PEERKV_CONSENSUS_STRONG_KEYSPACES_H_
#define PEERKV_CONSENSUS_STRONG_KEYSPACES_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "consensus/consensus_log.h"
#include "store/store.h"
#include "store/validation.h"
#include "store/version.h"

namespace peerkv::consensus {

enum class Mode { kLww, kStrong };

// "lww" / "strong".
std::string_view ModeName(Mode mode);
// InvalidArgument naming `field` unless `text` is "lww" or "strong".
absl::StatusOr<Mode> ParseMode(std::string_view text, std::string_view field);

// Keyspaces whose names start with "peerkv." are the system's own
// (store/validation.h): clients cannot write them or switch their mode.
using ::peerkv::IsReservedKeyspace;
inline constexpr std::string_view kReservedPrefix = kReservedKeyspacePrefix;
inline constexpr std::string_view kModesKeyspace = "peerkv.modes";

// The origin of every committed strong write ("STRONG" and 0xffff). A replica
// id is 64 random bits, so a replica drawing it is a 2^-64 event.
inline constexpr uint64_t kStrongOrigin = 0x5354524f4e47ffffULL;

// A keyspace may switch mode at most this many times (its mode record lists
// them all, so that the barrier is decidable from the record alone).
inline constexpr size_t kMaxModeSwitches = 64;

// One switch of a keyspace's mode: to `mode`, by the commit at `since`.
struct ModeSwitch {
  Mode mode = Mode::kLww;
  Version since;
  friend bool operator==(const ModeSwitch&, const ModeSwitch&) = default;
};

// The mode record's value: the earlier switches as "mode@version" and the
// latest mode alone, ';'-separated ("strong@1.0@...;lww"); the latest
// switch's version is the record's own. Decode checks every part
// (InvalidArgument), versions ascending.
std::string EncodeModeValue(const std::vector<ModeSwitch>& earlier, Mode next);
absl::StatusOr<std::vector<ModeSwitch>> DecodeModeRecord(const Record& record);

// A keyspace with its mode, for `keyspace list`.
struct KeyspaceMode {
  std::string keyspace;
  Mode mode = Mode::kLww;
  // The switch's version; invalid (0) for a keyspace never switched.
  Version since;
  uint32_t switches = 0;
  // Registers (deleted keys included) this replica holds of it.
  uint64_t registers = 0;
};

// Where a keyspace's mode lives when it has a policy (README "Strong
// keyspaces", "Groups and policies"): its signed, owner-only policy record
// carries the switches, so a non-owner cannot switch it (a mode record in
// peerkv.modes from anyone is not the mode of such a keyspace) and the
// switches reach every replica that holds the policy, friends' included, by
// gossip. consensus/policy_modes.h implements it over auth/'s policies;
// this layer stays auth-free. Thread-safe.
class PolicyModes {
 public:
  virtual ~PolicyModes() = default;
  // The switches `keyspace`'s policy carries, oldest first; nullopt if it
  // has no policy or its policy carries none (then the mode record in
  // peerkv.modes decides: the compatibility rule).
  virtual std::optional<std::vector<ModeSwitch>> ModesOf(std::string_view keyspace) const = 0;
  // Every keyspace whose policy carries switches, in name order.
  virtual std::vector<std::pair<std::string, std::vector<ModeSwitch>>> All() const = 0;
  // OK if this replica may switch `keyspace`'s mode: it has no policy, or
  // its policy is signed by this replica's user and this device holds the
  // user key to re-sign it. PermissionDenied naming the owner otherwise
  // (FailedPrecondition without the user key).
  virtual absl::Status MaySwitch(std::string_view keyspace) const = 0;
  // After a switch committed: writes `history` into `keyspace`'s policy
  // (nothing if it has no policy, or carries `history` already).
  virtual absl::Status Publish(std::string_view keyspace,
                               const std::vector<ModeSwitch>& history) = 0;
};

// What this replica knows of every keyspace's mode: the switches its
// policy carries (PolicyModes, when attached and the policy has them),
// else the greatest mode record of it, as merged. Thread-safe; the store's
// merge filter.
class ModeTable {
 public:
  ModeTable() = default;

  // Where the one line per keyspace about refused lww records goes. Empty:
  // stderr. Set before use.
  void SetLog(std::function<void(const std::string&)> log);
  // Where policies' modes come from (borrowed; nullptr: none, every mode
  // from peerkv.modes). May be set once the store is open, before strong
  // writes; must outlive the table's use.
  void SetPolicyModes(PolicyModes* policy_modes) { policy_modes_.store(policy_modes); }
  PolicyModes* policy_modes() const { return policy_modes_.load(); }

  // The barrier (see the file comment). Also takes note of mode records
  // (their greater version wins, as in the store). OK: merge the record.
  absl::Status CheckMerge(const Record& record);
  // A function for StoreOptions::merge_filter that calls CheckMerge.
  // The table must outlive the store.
  std::function<absl::Status(const Record&)> MergeFilter();

  // StoreOptions::reserved_check decides which records of the reserved
  // keyspaces a store takes from peers. This wraps `next` (auth/'s check of
  // signed lists; may be empty, then other reserved records are refused as
  // the store would) so that records of kModesKeyspace pass to the merge
  // filter, which admits only the ones committed through the log.
  using ReservedCheckFn = std::function<absl::Status(
      std::string_view keyspace, std::string_view key, std::string_view value,
      bool deleted)>;
  static ReservedCheckFn WithModesKeyspace(ReservedCheckFn next);

  // Makes this table the barrier of the store `options` will open: sets its
  // merge_filter and wraps its reserved_check (WithModesKeyspace). Call after
  // anything else that sets reserved_check. The table must outlive the store.
  void AttachTo(StoreOptions* options);

  // Reads every mode record from `store` (after it opened).
  absl::Status Load(const Store& store);

  Mode ModeOf(std::string_view keyspace) const;
  // The switches of `keyspace`, oldest first (empty: never switched).
  std::vector<ModeSwitch> History(std::string_view keyspace) const;
  // Keyspaces with a mode record, in name order.
  std::vector<KeyspaceMode> List() const;
  // lww records refused by the barrier since start.
  uint64_t refused() const { return refused_.load(); }

 private:
  struct Entry {
    Version version;  // of the mode record
    std::vector<ModeSwitch> history;
  };
  absl::Status Observe(const Record& record);
  // The switches that decide `keyspace`'s mode (see the class comment).
  std::vector<ModeSwitch> Effective(std::string_view keyspace) const;

  mutable absl::Mutex mu_;
  std::map<std::string, Entry, std::less<>> modes_ ABSL_GUARDED_BY(mu_);
  std::set<std::string, std::less<>> logged_ ABSL_GUARDED_BY(mu_);
  std::function<void(const std::string&)> log_;
  std::atomic<uint64_t> refused_{0};
  std::atomic<PolicyModes*> policy_modes_{nullptr};
};

struct StrongOptions {
  // Bound of every strong write, linearizable read and mode switch: past
  // it the caller gets Unavailable naming the service.
  absl::Duration timeout = absl::Seconds(2);
  // The follower keeps its log position and the log's identity in the
  // store's meta, written in the same transaction as the committed writes
  // it applies (so a store that lost its unsynced tail in a crash reads
  // that tail from the log again). This names the file older versions kept
  // them in: read once, when the store holds no position yet. A log whose
  // identity differs from the saved one (a recreated etcd) is followed
  // from 0 again.
  std::string position_file;
  // Threads that run blocking strong calls for callers on an event loop
  // (Submit), and how many calls may wait for one.
  size_t workers = 16;
  size_t max_queued = 4096;
  // How long one follower read waits for new commits, and the pause after
  // it failed.
  absl::Duration follow_wait = absl::Milliseconds(500);
  absl::Duration follow_retry = absl::Milliseconds(200);
  // Log lines (follower failures). Empty: stderr.
  std::function<void(const std::string&)> log;
  // true: a strong write's local merge waits for its fsync, as before the
  // follower's position moved into the store (an A/B for the benchmark;
  // atomic, so it can change while writes run).
  std::shared_ptr<std::atomic<bool>> write_waits_for_sync;
};

// What a read served.
struct StrongRead {
  std::optional<Record> record;  // nullopt: never written
  // True when served from the local copy without asking the log
  // (--stale-ok on a strong keyspace).
  bool stale = false;
  // How old the local copy may be: time since the follower last had every
  // committed write applied; absl::InfiniteDuration() if it never had.
  absl::Duration staleness = absl::ZeroDuration();
};

class StrongKeyspaces {
 public:
  // `store` and `modes` are borrowed and must outlive this; `modes` must be
  // the store's merge filter. `log` is borrowed too; nullptr: this replica
  // has no consensus service (strong writes and linearizable reads are
  // refused with Unavailable; committed writes still arrive by gossip).
  StrongKeyspaces(Store* store, ModeTable* modes, ConsensusLog* log,
                  StrongOptions options);
  // Stops the follower and the workers (queued calls are dropped).
  ~StrongKeyspaces();
  StrongKeyspaces(const StrongKeyspaces&) = delete;
  StrongKeyspaces& operator=(const StrongKeyspaces&) = delete;

  // Starts the follower (if there is a log) and the workers.
  void Start();

  bool IsStrong(std::string_view keyspace) const;
  ModeTable& modes() { return *modes_; }
  // "etcd at http://..." or "no consensus service".
  std::string Describe() const;

  // Writes `mutation` (value nullopt: delete) if `precondition` holds. Strong
  // keyspace: proposed to the log; the committed write is merged here before
  // this returns. lww keyspace: a precondition is FailedPrecondition (CAS
  // needs a strong keyspace; the log's mode record is read first, in case
  // of a switch this replica has not learned yet), otherwise a local write. Errors: InvalidArgument
  // (bad or reserved keyspace, key, value), FailedPrecondition (naming the
  // current version), Unavailable (naming the service). Blocks up to the
  // timeout: call it on a worker (Submit), never on an event loop.
  //
  // The precondition is checked against the key's register as this layer
  // sees it: the log's last committed write, or the local register if that
  // is greater (an lww write from before the switch that no strong write
  // has replaced yet). The proposal is then conditioned on the log's state
  // as read, so a concurrent strong write makes it fail, never both commit.
  absl::StatusOr<Version> Write(const Mutation& mutation,
                                const Precondition& precondition);

  // A read. Strong keyspace, !stale_ok: the log's last committed write is
  // read (linearizable), merged here, and the register served; Unavailable
  // naming the service if the log cannot be reached. Otherwise the local
  // register (marked stale on a strong keyspace).
  absl::StatusOr<StrongRead> Read(std::string_view keyspace,
                                  std::string_view key, bool stale_ok);

  // Switches `keyspace` to `mode` through the log (compare-and-set on its
  // mode record); returns the switch's version (the current one if the
  // mode already is `mode`). Reserved keyspaces are refused. With policies
  // (ModeTable::SetPolicyModes): first PolicyModes::MaySwitch (a non-owner
  // is refused before anything is written), then, once committed, the
  // log's history is published into the policy (also when the mode already
  // is `mode` and the policy lags: a switch interrupted between the commit
  // and the policy is finished by running it again).
  absl::StatusOr<Version> SetMode(std::string_view keyspace, Mode mode);

  // Every keyspace of the store and every keyspace with a mode record.
  absl::StatusOr<std::vector<KeyspaceMode>> List() const;

  // Runs `task` on a worker thread. False (task dropped) if max_queued
  // tasks wait already or this is stopping.
  bool Submit(absl::AnyInvocable<void()> task);

  struct Status {
    uint64_t position = 0;  // of the last committed write applied
    uint64_t applied = 0;   // committed writes merged by the follower
    bool reachable = false;
    absl::Duration staleness = absl::InfiniteDuration();
  };
  Status GetStatus() const;
  // Waits up to `timeout` until the follower has applied (and saved) every
  // committed write up to `position`; false if it has not by then.
  bool AwaitPosition(uint64_t position, absl::Duration timeout) const;

 private:
  void Follow();
  void Work();
  // Merges committed records here; Internal if one was refused, unless
  // `refused` is given: then the refused ones are listed there and the rest
  // (and the position) are applied. Quarantined records are Internal always.
  // `wait_for_sync` false: acknowledged before the fsync (Store::MergeOptions).
  // `position`: the follower's position, written (with the log's identity)
  // into the store in the same transaction as the records.
  absl::Status Apply(std::vector<Record> records, bool wait_for_sync = true,
                     std::optional<uint64_t> position = std::nullopt,
                     std::vector<RefusedRecord>* refused = nullptr);
  absl::Duration Staleness() const;
  // True if the log is not the one our position is in (recreated): the
  // position goes back to 0, logged.
  bool LogWasRecreated();
  absl::Status Unreachable(const absl::Status& status) const;

  Store* const store_;
  ModeTable* const modes_;
  ConsensusLog* const log_;
  const StrongOptions options_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<absl::AnyInvocable<void()>> queue_ ABSL_GUARDED_BY(mu_);
  uint64_t position_ ABSL_GUARDED_BY(mu_) = 0;
  // The log `position_` is a position in (ConsensusLog::LogIdentity); empty
  // until learned. Saved with it.
  std::string log_identity_ ABSL_GUARDED_BY(mu_);
  uint64_t applied_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<absl::Time> caught_up_ ABSL_GUARDED_BY(mu_);

  std::thread follower_;
  std::vector<std::thread> workers_;
};

}  // namespace peerkv::consensus

#endif  // PEERKV_CONSENSUS_STRONG_KEYSPACES_H_
