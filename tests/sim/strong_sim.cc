// tests/sim/strong_sim.cc: the strong-keyspace driver (see strong_sim.h).
#include "tests/sim/strong_sim.h"

#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "consensus/fake_consensus_log.h"
#include "consensus/strong_keyspaces.h"
#include "store/clock.h"
#include "store/store.h"
#include "tests/linearizability_checker.h"

namespace peerkv::sim {
namespace {

using consensus::Committed;
using consensus::FakeConsensusLog;
using consensus::Mode;
using consensus::ModeTable;
using consensus::Precondition;
using consensus::StrongKeyspaces;
using testing::RegisterOp;

constexpr char kLedger[] = "ledger";
constexpr char kFlip[] = "flip";
constexpr int kKeys = 4;
constexpr int kMaxSwitches = 6;

struct Replica {
  std::unique_ptr<OffsetWallClock> clock;
  std::unique_ptr<ModeTable> modes;
  std::unique_ptr<Store> store;
  std::unique_ptr<StrongKeyspaces> strong;
  bool has_log = true;
  uint64_t position = 0;  // the follower's, driven by the simulation
};

// An lww write of "flip" a replica accepted.
struct LwwWrite {
  Record record;
  int replica = 0;
};

class StrongSim {
 public:
  explicit StrongSim(const StrongSimOptions& options)
      : options_(options), rng_(options.seed), wall_(1'700'000'000'000) {}

  ~StrongSim() {
    replicas_.clear();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  StrongSimResult Run() {
    if (absl::Status s = Setup(); !s.ok()) return Fail(s.ToString());
    for (int step = 0; step < options_.steps && result_.message.empty(); ++step) Step(step);
    if (result_.message.empty()) Heal();
    if (result_.message.empty()) CheckLedger();
    if (result_.message.empty()) CheckBarrier();
    if (result_.message.empty()) Converge();
    result_.passed = result_.message.empty();
    if (result_.passed) {
      result_.message = absl::StrFormat(
          "%d replicas, %d ledger ops (%d unknown outcomes), %d commits, %d flip switches, %d "
          "lww records refused by the barrier, %d kept in the switch window",
          result_.replicas, result_.ledger_ops, result_.unknown_outcomes, result_.committed,
          result_.switches, result_.refused_by_barrier, result_.kept_in_window);
    }
    return result_;
  }

 private:
  StrongSimResult Fail(std::string why) {
    if (result_.message.empty()) {
      result_.message = absl::StrFormat("seed %d: %s", options_.seed, why);
    }
    return result_;
  }
  void Trace(const std::string& line) {
    if (options_.verbose) std::printf("%s\n", line.c_str());
  }
  int Pick(int n) { return static_cast<int>(rng_() % static_cast<uint64_t>(n)); }
  bool Chance(int percent) { return Pick(100) < percent; }

  absl::Status Setup() {
    const char* tmp = std::getenv("TEST_TMPDIR");
    std::string pattern = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/strong-sim-XXXXXX");
    if (mkdtemp(pattern.data()) == nullptr) return absl::InternalError("mkdtemp failed");
    dir_ = pattern;
    const int n = 3 + Pick(3);
    result_.replicas = n;
    const int without_log = Chance(50) ? Pick(n) : -1;
    for (int i = 0; i < n; ++i) {
      auto r = std::make_unique<Replica>();
      // Clocks skewed by up to 50 ms either way.
      r->clock = std::make_unique<OffsetWallClock>(wall_, Pick(101) - 50);
      r->modes = std::make_unique<ModeTable>();
      r->modes->SetLog([](const std::string&) {});
      StoreOptions options;
      options.dir = absl::StrCat(dir_, "/r", i);
      options.sync = false;
      options.wall_clock = r->clock.get();
      r->modes->AttachTo(&options);
      absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
      if (!store.ok()) return store.status();
      r->store = *std::move(store);
      r->has_log = i != without_log;
      consensus::StrongOptions strong_options;
      strong_options.log = [](const std::string&) {};
      r->strong = std::make_unique<StrongKeyspaces>(r->store.get(), r->modes.get(),
                                                    r->has_log ? &log_ : nullptr, strong_options);
      // No Start(): the simulation drives the follower itself, on one thread.
      replicas_.push_back(std::move(r));
    }
    // Faults of the fake, on the step clock: unreachable windows, and
    // periods of slow commits.
    for (int w = Pick(3); w > 0; --w) {
      const uint64_t from = 1 + Pick(options_.steps);  // after the setup's switch at 0
      log_.AddUnavailableWindow(from, from + 5 + Pick(40));
    }
    for (int d = Pick(3); d > 0; --d) {
      const int from = Pick(options_.steps);
      delays_[from] = 1 + Pick(20);
      delays_[from + 10 + Pick(40)] = 0;
    }
    // "ledger" is strong from the start.
    const int r = FirstWithLog();
    absl::StatusOr<Version> on = replicas_[r]->strong->SetMode(kLedger, Mode::kStrong);
    if (!on.ok()) return on.status();
    // Every replica learns it before the workload (a replica that has not
    // yet is the README's documented window, exercised by "flip").
    for (int to = 0; to < n; ++to) Gossip(r, to, 0);
    return absl::OkStatus();
  }

  int FirstWithLog() const {
    for (size_t i = 0; i < replicas_.size(); ++i) {
      if (replicas_[i]->has_log) return static_cast<int>(i);
    }
    return 0;
  }

  void Step(int step) {
    now_ = step;
    wall_.Advance(1 + Pick(3));
    if (auto d = delays_.find(step); d != delays_.end()) log_.SetCommitDelay(d->second);
    log_.AdvanceTo(step);
    const int r = Pick(static_cast<int>(replicas_.size()));
    const int action = Pick(100);
    if (action < 30) {
      LedgerCas(r);
    } else if (action < 40) {
      LedgerPut(r);
    } else if (action < 48) {
      LedgerGet(r);
    } else if (action < 68) {
      FlipWrite(r);
    } else if (action < 85) {
      Gossip(r, Pick(static_cast<int>(replicas_.size())), /*drop_percent=*/10);
    } else if (action < 96) {
      Follow(r);
    } else {
      SwitchFlip(r);
    }
  }

  std::string Key() { return absl::StrCat("k", Pick(kKeys)); }
  int64_t Instant() { return ++instant_; }

  // An error a strong call may give in this run: Unavailable (the fake is
  // away, or this replica has no log) or DeadlineExceeded (a slow commit:
  // its outcome unknown). Anything else fails the run.
  bool Expected(const absl::Status& s, const char* what, int r) {
    if (s.ok() || absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s)) return true;
    Fail(absl::StrFormat("step %d: %s at r%d: %s", now_, what, r, s.ToString()));
    return false;
  }
  // A replica without a log must refuse every strong write, naming that.
  bool RefusedWithoutLog(const absl::Status& s, int r) {
    if (replicas_[r]->has_log) return false;
    if (!absl::IsUnavailable(s)) {
      Fail(absl::StrFormat("step %d: r%d has no log, yet a strong call gave %s", now_, r,
                           s.ToString()));
    }
    return true;
  }

  void LedgerGet(int r) {
    RegisterOp op;
    op.kind = RegisterOp::Kind::kGet;
    op.key = Key();
    op.client = r;
    op.invoke = Instant();
    absl::StatusOr<consensus::StrongRead> read =
        replicas_[r]->strong->Read(kLedger, op.key, /*stale_ok=*/false);
    op.response = Instant();
    if (RefusedWithoutLog(read.status(), r) || !Expected(read.status(), "ledger get", r)) return;
    if (!read.ok()) return;  // a failed read had no effect
    if (read->record.has_value() && !read->record->deleted) op.value = read->record->value;
    history_.push_back(op);
  }

  void LedgerPut(int r) {
    RegisterOp op;
    op.kind = RegisterOp::Kind::kPut;
    op.key = Key();
    op.client = r;
    if (!Chance(20)) op.value = absl::StrCat("r", r, "-", ++values_);
    Mutation m{kLedger, op.key, op.value};
    op.invoke = Instant();
    absl::StatusOr<Version> v = replicas_[r]->strong->Write(m, Precondition{});
    op.response = Instant();
    Note(op, v.status(), r, "ledger put");
  }

  void LedgerCas(int r) {
    const std::string key = Key();
    RegisterOp get;
    get.kind = RegisterOp::Kind::kGet;
    get.key = key;
    get.client = r;
    get.invoke = Instant();
    const bool stale_ok = !replicas_[r]->has_log || Chance(30);
    absl::StatusOr<consensus::StrongRead> read =
        replicas_[r]->strong->Read(kLedger, key, stale_ok);
    get.response = Instant();
    if (!Expected(read.status(), "ledger cas read", r)) return;
    if (!read.ok()) return;
    const bool live = read->record.has_value() && !read->record->deleted;
    if (live) get.value = read->record->value;
    if (!read->stale) history_.push_back(get);
    RegisterOp op;
    op.kind = RegisterOp::Kind::kCas;
    op.key = key;
    op.client = r;
    op.value = absl::StrCat("r", r, "-", ++values_);
    Precondition pre;
    if (live) {
      pre.kind = Precondition::Kind::kIfVersion;
      pre.version = read->record->version;
      op.expected = read->record->value;
    } else {
      pre.kind = Precondition::Kind::kIfAbsent;
    }
    op.invoke = Instant();
    absl::StatusOr<Version> v = replicas_[r]->strong->Write(Mutation{kLedger, key, op.value}, pre);
    op.response = Instant();
    op.ok = v.ok();
    if (absl::IsFailedPrecondition(v.status())) {
      op.ok = false;
      ++result_.ledger_ops;
      history_.push_back(op);
      return;
    }
    Note(op, v.status(), r, "ledger cas");
  }

  void Note(RegisterOp op, const absl::Status& s, int r, const char* what) {
    if (RefusedWithoutLog(s, r)) return;  // never proposed
    if (!Expected(s, what, r)) return;
    // Unavailable: not committed, and never will be (ConsensusLog::Propose).
    if (absl::IsUnavailable(s)) return;
    if (!s.ok()) {
      // Outcome unknown: may commit later (slow commit) or never.
      op.response = testing::kNoResponse;
      op.ok = true;
      ++result_.unknown_outcomes;
    }
    ++result_.ledger_ops;
    history_.push_back(op);
  }

  void FlipWrite(int r) {
    Mutation m{kFlip, Key(), absl::StrCat("f", r, "-", ++values_)};
    absl::StatusOr<Version> v = replicas_[r]->strong->Write(m, Precondition{});
    if (!v.ok()) {
      // Strong here (this replica knows the switch): as a strong write.
      if (!replicas_[r]->strong->IsStrong(kFlip)) {
        Fail(absl::StrFormat("step %d: lww write at r%d failed: %s", now_, r,
                             v.status().ToString()));
        return;
      }
      Expected(v.status(), "flip write", r);
      return;
    }
    if (v->origin == consensus::kStrongOrigin) return;
    peerkv::Record rec;
    rec.keyspace = kFlip;
    rec.key = m.key;
    rec.version = *v;
    rec.value = *m.value;
    lww_.push_back(LwwWrite{rec, r});
  }

  void SwitchFlip(int r) {
    if (result_.switches >= kMaxSwitches) return;
    const Mode next = replicas_[r]->modes->ModeOf(kFlip) == Mode::kStrong ? Mode::kLww
                                                                         : Mode::kStrong;
    const size_t before = replicas_[r]->modes->History(kFlip).size();
    absl::StatusOr<Version> v = replicas_[r]->strong->SetMode(kFlip, next);
    if (RefusedWithoutLog(v.status(), r)) return;
    if (absl::IsAborted(v.status())) return;  // raced another switch
    if (!Expected(v.status(), "switch flip", r) || !v.ok()) return;
    // Already `next` in the log (a switch this replica had not learned).
    if (replicas_[r]->modes->History(kFlip).size() <= before) return;
    ++result_.switches;
    Trace(absl::StrFormat("step %d: r%d switched flip to %s at %s", now_, r, ModeName(next),
                          v->ToString()));
  }

  // The follower's loop, once: the log's commits after this replica's
  // position merged here.
  void Follow(int r) {
    Replica& rep = *replicas_[r];
    if (!rep.has_log) return;
    absl::StatusOr<std::vector<Committed>> batch =
        log_.ReadAfter(rep.position, 100, absl::ZeroDuration());
    if (!batch.ok() || batch->empty()) return;
    std::vector<peerkv::Record> records;
    for (const Committed& c : *batch) records.push_back(c.record);
    absl::StatusOr<MergeResult> merged = rep.store->Merge(std::move(records));
    if (!merged.ok() || !merged->refused.empty() || !merged->quarantined.empty()) {
      Fail(absl::StrFormat("step %d: r%d refused committed writes: %s", now_, r,
                           merged.ok() ? (merged->refused.empty()
                                              ? merged->quarantined.front().reason.ToString()
                                              : merged->refused.front().reason.ToString())
                                       : merged.status().ToString()));
      return;
    }
    rep.position = batch->back().position;
  }

  // Every register of `from` (modes first) offered to `to`, some dropped.
  void Gossip(int from, int to, int drop_percent) {
    if (from == to) return;
    for (const char* ks : {consensus::kModesKeyspace.data(), kLedger, kFlip}) {
      ScanOptions scan;
      scan.include_tombstones = true;
      scan.limit = 1000;
      absl::StatusOr<ScanResult> page = replicas_[from]->store->Scan(ks, scan);
      if (!page.ok()) {
        Fail(absl::StrCat("scan: ", page.status().ToString()));
        return;
      }
      std::vector<peerkv::Record> records;
      for (peerkv::Record& rec : page->records) {
        if (drop_percent > 0 && Chance(drop_percent)) continue;
        records.push_back(std::move(rec));
      }
      if (records.empty()) continue;
      // The barrier, as `to` knows the switches now (modes merged first):
      // these lww records must be refused.
      std::vector<std::pair<std::string, Version>> must_refuse;
      if (std::string(ks) == kFlip) {
        const auto history = replicas_[to]->modes->History(kFlip);
        for (const peerkv::Record& rec : records) {
          if (rec.version.origin != consensus::kStrongOrigin &&
              InStrongInterval(history, rec.version)) {
            must_refuse.emplace_back(rec.key, rec.version);
          }
        }
      }
      absl::StatusOr<MergeResult> merged = replicas_[to]->store->Merge(std::move(records));
      if (!merged.ok()) {
        Fail(absl::StrCat("merge: ", merged.status().ToString()));
        return;
      }
      for (const RefusedRecord& refused : merged->refused) {
        // Only the barrier refuses here: lww records of "flip".
        if (refused.keyspace != kFlip ||
            refused.version.origin == consensus::kStrongOrigin ||
            !absl::IsFailedPrecondition(refused.reason)) {
          Fail(absl::StrFormat("step %d: r%d refused %s/%s at %s from r%d: %s", now_, to,
                               refused.keyspace, refused.key,
                               refused.version.ToString(), from,
                               refused.reason.ToString()));
          return;
        }
        ++result_.refused_by_barrier;
      }
      for (const auto& [key, version] : must_refuse) {
        bool refused = false;
        for (const RefusedRecord& r : merged->refused) {
          refused = refused || (r.key == key && r.version == version);
        }
        if (!refused) {
          Fail(absl::StrFormat("step %d: r%d merged the lww write flip/%s at %s from r%d "
                               "inside a strong interval it knew: the barrier let it in",
                               now_, to, key, version.ToString(), from));
          return;
        }
      }
    }
  }

  static bool InStrongInterval(const std::vector<consensus::ModeSwitch>& history,
                               const Version& v) {
    for (size_t i = 0; i < history.size(); ++i) {
      if (history[i].mode == Mode::kStrong && v >= history[i].since &&
          (i + 1 >= history.size() || v < history[i + 1].since)) {
        return true;
      }
    }
    return false;
  }

  void Heal() {
    now_ = options_.steps;
    log_.SetCommitDelay(0);
    log_.AdvanceTo(static_cast<uint64_t>(options_.steps) + 1000);
    while (log_.CommitNextInFlight().has_value()) {
    }
    const int n = static_cast<int>(replicas_.size());
    for (int round = 0; round < 3 && result_.message.empty(); ++round) {
      for (int r = 0; r < n; ++r) {
        for (int i = 0; i < 1000 && replicas_[r]->has_log; ++i) {
          const uint64_t before = replicas_[r]->position;
          Follow(r);
          if (replicas_[r]->position == before) break;
        }
      }
      for (int a = 0; a < n; ++a) {
        for (int b = 0; b < n; ++b) Gossip(a, b, 0);
      }
    }
  }

  // The last commit of every key, from the log's history.
  std::map<std::pair<std::string, std::string>, peerkv::Record> LastCommits() const {
    std::map<std::pair<std::string, std::string>, peerkv::Record> last;
    for (const Committed& c : log_.History()) last[{c.record.keyspace, c.record.key}] = c.record;
    return last;
  }

  void CheckLedger() {
    const auto last = LastCommits();
    result_.committed = static_cast<int>(log_.History().size());
    for (int k = 0; k < kKeys; ++k) {
      const std::string key = absl::StrCat("k", k);
      auto it = last.find({kLedger, key});
      for (size_t r = 0; r < replicas_.size(); ++r) {
        absl::StatusOr<std::optional<peerkv::Record>> held = replicas_[r]->store->Get(kLedger, key);
        if (!held.ok()) {
          Fail(held.status().ToString());
          return;
        }
        if (it == last.end()) {
          if (held->has_value()) {
            Fail(absl::StrFormat("r%d holds ledger/%s, never committed", r, key));
          }
          continue;
        }
        if (!held->has_value() || (*held)->version != it->second.version ||
            (*held)->deleted != it->second.deleted || (*held)->value != it->second.value) {
          Fail(absl::StrFormat(
              "r%d holds ledger/%s at %s, the log's last commit is %s (%s)", r, key,
              held->has_value() ? (*held)->version.ToString() : "nothing",
              it->second.version.ToString(), it->second.deleted ? "deleted" : it->second.value));
          return;
        }
      }
    }
    absl::StatusOr<testing::CheckResult> lin = testing::CheckLinearizable(history_);
    if (!lin.ok()) {
      Fail(absl::StrCat("linearizability check: ", lin.status().ToString()));
    } else if (!lin->linearizable) {
      Fail(absl::StrCat("ledger history is not linearizable at key ", lin->key, ": ",
                        lin->explanation));
    }
  }

  // See the header: nothing admissible lost, nothing else held but the
  // documented window's writes.
  void CheckBarrier() {
    std::vector<consensus::ModeSwitch> history = replicas_[0]->modes->History(kFlip);
    for (const auto& r : replicas_) {
      if (r->modes->History(kFlip) != history) {
        Fail("replicas disagree on the mode history of flip after healing");
        return;
      }
    }
    auto in_strong = [&](const Version& v) {
      for (size_t i = 0; i < history.size(); ++i) {
        if (history[i].mode != Mode::kStrong) continue;
        if (v >= history[i].since && (i + 1 >= history.size() || v < history[i + 1].since)) {
          return true;
        }
      }
      return false;
    };
    const auto last = LastCommits();
    for (int k = 0; k < kKeys; ++k) {
      const std::string key = absl::StrCat("k", k);
      std::optional<peerkv::Record> fold;
      auto consider = [&](const peerkv::Record& rec) {
        if (!fold.has_value() || rec.version > fold->version) fold = rec;
      };
      if (auto it = last.find({kFlip, key}); it != last.end()) consider(it->second);
      for (const LwwWrite& w : lww_) {
        if (w.record.key == key && !in_strong(w.record.version)) consider(w.record);
      }
      for (size_t r = 0; r < replicas_.size(); ++r) {
        absl::StatusOr<std::optional<peerkv::Record>> held = replicas_[r]->store->Get(kFlip, key);
        if (!held.ok()) {
          Fail(held.status().ToString());
          return;
        }
        const Version have = held->has_value() ? (*held)->version : Version{};
        const Version want = fold.has_value() ? fold->version : Version{};
        if (have < want && SupersededInWindow(key, want)) continue;
        if (have < want) {
          Fail(absl::StrFormat("r%d holds flip/%s at %s, below the admissible write %s: the "
                               "barrier lost a write it admits",
                               r, key, have.ToString(), want.ToString()));
          return;
        }
        if (have == want) continue;
        if (have.origin == consensus::kStrongOrigin || !in_strong(have)) {
          Fail(absl::StrFormat("r%d holds flip/%s at %s, above the fold %s, and it is not an "
                               "lww write inside a strong interval",
                               r, key, have.ToString(), want.ToString()));
          return;
        }
        Trace(absl::StrFormat("r%d keeps flip/%s at %s (taken before it learned the switch)", r,
                              key, have.ToString()));
      }
    }
  }

  // One more write of every "flip" key, then gossip: all replicas equal.
  void Converge() {
    const int w = FirstWithLog();
    for (int k = 0; k < kKeys; ++k) {
      Mutation m{kFlip, absl::StrCat("k", k), std::string("final")};
      absl::StatusOr<Version> v = replicas_[w]->strong->Write(m, Precondition{});
      if (!v.ok() && !(absl::IsUnavailable(v.status()) && !replicas_[w]->has_log)) {
        Fail(absl::StrCat("final write: ", v.status().ToString()));
        return;
      }
    }
    Heal();
    for (const char* ks : {kLedger, kFlip}) {
      for (int k = 0; k < kKeys; ++k) {
        const std::string key = absl::StrCat("k", k);
        std::optional<std::optional<peerkv::Record>> first;
        for (size_t r = 0; r < replicas_.size(); ++r) {
          absl::StatusOr<std::optional<peerkv::Record>> held = replicas_[r]->store->Get(ks, key);
          if (!held.ok()) {
            Fail(held.status().ToString());
            return;
          }
          if (!first.has_value()) {
            first = *held;
            continue;
          }
          const bool same = first->has_value() == held->has_value() &&
                            (!held->has_value() || ((*first)->version == (*held)->version &&
                                                    (*first)->value == (*held)->value &&
                                                    (*first)->deleted == (*held)->deleted));
          if (!same && std::string(ks) == kFlip && held->has_value() && first->has_value() &&
              (IsWindowWrite(**held, **first) || IsWindowWrite(**first, **held))) {
            // README "Strong keyspaces", the barrier's limit: an lww write
            // taken inside a strong interval before this replica learned
            // the switch, with a version above the key's final write.
            ++result_.kept_in_window;
            Trace(absl::StrFormat("r%d keeps flip/%s at %s above the final %s", r, key,
                                  (*held)->version.ToString(), (**first).version.ToString()));
            continue;
          }
          if (!same) {
            Fail(absl::StrFormat("after healing r%d holds %s/%s at %s, r0 at %s", r, ks, key,
                                 held->has_value() ? (*held)->version.ToString() : "nothing",
                                 first->has_value() ? (**first).version.ToString() : "nothing"));
            return;
          }
        }
      }
    }
  }

  // `held` is an lww write of "flip" inside a strong interval (one the
  // barrier refuses everywhere it is known), above `other`.
  bool IsWindowWrite(const peerkv::Record& held, const peerkv::Record& other) const {
    if (held.version.origin == consensus::kStrongOrigin || held.version <= other.version) {
      return false;
    }
    const std::vector<consensus::ModeSwitch> history = replicas_[0]->modes->History(kFlip);
    for (size_t i = 0; i < history.size(); ++i) {
      if (history[i].mode == Mode::kStrong && held.version >= history[i].since &&
          (i + 1 >= history.size() || held.version < history[i + 1].since)) {
        return true;
      }
    }
    return false;
  }

  // Some replica holds a window write of flip/`key` above `version`: it
  // may have replaced the admissible write where it was made, before that
  // one reached anyone.
  bool SupersededInWindow(const std::string& key, const Version& version) const {
    peerkv::Record floor;
    floor.version = version;
    for (const auto& r : replicas_) {
      absl::StatusOr<std::optional<peerkv::Record>> held = r->store->Get(kFlip, key);
      if (held.ok() && held->has_value() && IsWindowWrite(**held, floor)) return true;
    }
    return false;
  }

  const StrongSimOptions options_;
  std::mt19937_64 rng_;
  ManualWallClock wall_;
  FakeConsensusLog log_;
  std::string dir_;
  std::vector<std::unique_ptr<Replica>> replicas_;
  std::map<int, uint64_t> delays_;
  std::vector<RegisterOp> history_;
  std::vector<LwwWrite> lww_;
  StrongSimResult result_;
  int now_ = 0;
  int64_t instant_ = 0;
  int values_ = 0;
};

}  // namespace

StrongSimResult RunStrong(const StrongSimOptions& options) { return StrongSim(options).Run(); }

}  // namespace peerkv::sim
