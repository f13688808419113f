// consensus/strong_keyspaces_test.cc: strong keyspaces against the in-memory
// log: compare-and-set, the barrier, unreachable -> Unavailable at once, the
// follower, and lww -> strong -> lww.
#include "consensus/strong_keyspaces.h"

#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/macros.h"
#include "common/status_matchers.h"
#include "consensus/fake_consensus_log.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/temp_dir.h"

namespace peerkv::consensus {
namespace {

using ::testing::HasSubstr;

Mutation Put(std::string ks, std::string key, std::string value) {
  return Mutation{std::move(ks), std::move(key), std::move(value)};
}
Mutation Del(std::string ks, std::string key) {
  return Mutation{std::move(ks), std::move(key), std::nullopt};
}
Precondition IfVersion(Version v) {
  return Precondition{Precondition::Kind::kIfVersion, v};
}
Precondition IfAbsent() { return Precondition{Precondition::Kind::kIfAbsent, {}}; }
Precondition None() { return Precondition{}; }

// One replica: a store whose merge filter is its mode table, and its strong
// layer over a shared log (nullptr: none).
struct Replica {
  // `db`: the store's directory (empty: one of its own); `sync`: the
  // store's fsync at commit (StoreOptions::sync).
  // `configure`: anything more of the store's options (a signer, a gate).
  explicit Replica(ConsensusLog* log, bool start = true, bool keep_position = false,
                   const std::string& db = "", bool sync = false,
                   const std::function<void(StoreOptions&)>& configure = {}) {
    StoreOptions options;
    if (configure) configure(options);
    options.dir = db.empty() ? dir.Sub("db") : db;
    options.sync = sync;
    options.scrub_at_open = false;
    modes.AttachTo(&options);
    modes.SetLog([](const std::string&) {});
    auto opened = Store::Open(options);
    PEERKV_CHECK(opened.ok());
    store = std::move(*opened);
    PEERKV_CHECK(modes.Load(*store).ok());
    StrongOptions strong_options;
    strong_options.workers = 2;
    strong_options.follow_wait = absl::Milliseconds(50);
    strong_options.log = [this](const std::string& line) {
      absl::MutexLock lock(&log_mu);
      log_lines.push_back(line);
    };
    if (keep_position) strong_options.position_file = options.dir + "-consensus-position";
    strong = std::make_unique<StrongKeyspaces>(store.get(), &modes, log,
                                               strong_options);
    if (start) strong->Start();
  }
  ~Replica() {
    strong.reset();
    store.reset();
  }

  // Waits (bounded) until the register holds `version`, as a commit
  // listener tells.
  bool AwaitVersion(const std::string& ks, const std::string& key,
                    const Version& version) {
    absl::Mutex mu;
    int changes = 0;
    const int id = store->AddCommitListener(
        [&](const Store::CommitInfo&) {
          absl::MutexLock lock(&mu);
          ++changes;
        });
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    bool found = false;
    while (absl::Now() < deadline) {
      int seen;
      {
        absl::MutexLock lock(&mu);
        seen = changes;
      }
      auto r = store->Get(ks, key);
      if (r.ok() && r->has_value() && (*r)->version == version) {
        found = true;
        break;
      }
      absl::MutexLock lock(&mu);
      auto changed = [&]() { return changes > seen; };
      mu.AwaitWithDeadline(absl::Condition(&changed), deadline);
    }
    store->RemoveCommitListener(id);
    return found;
  }

  std::vector<std::string> Logged() {
    absl::MutexLock lock(&log_mu);
    return log_lines;
  }

  peerkv::testing::TempDir dir{"strong"};
  absl::Mutex log_mu;
  std::vector<std::string> log_lines ABSL_GUARDED_BY(log_mu);
  ModeTable modes;
  std::unique_ptr<Store> store;
  std::unique_ptr<StrongKeyspaces> strong;
};

Record LwwRecord(std::string ks, std::string key, uint64_t hlc,
                 uint64_t origin = 0x1111) {
  Record r;
  r.keyspace = std::move(ks);
  r.key = std::move(key);
  r.version = Version{hlc, origin};
  r.value = "lww";
  return r;
}

TEST(ParseVersionTest, RoundTripsWhatToStringPrints) {
  const Version v{MakeHlc(1732550000123, 7), 0xdeadbeef};
  absl::StatusOr<Version> parsed = ParseVersion(v.ToString(), "--if-version");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, v);
}

TEST(ParseVersionTest, RefusesMalformedNamingTheField) {
  for (const char* bad :
       {"", "12", "12.3", "12.3@", "12.3@xyz", "12.99999@00000000deadbeef",
        "a.1@00000000deadbeef", "1.1@00000000DEADBEEF", "0.0@0000000000000000",
        "1.1@00000000deadbeef0"}) {
    EXPECT_THAT(ParseVersion(bad, "--if-version"),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         std::string("--if-version")))
        << bad;
  }
}

TEST(ModeRecordTest, EncodesAndDecodesTheHistory) {
  Record r;
  r.keyspace = std::string(kModesKeyspace);
  r.key = "users";
  r.version = Version{MakeHlc(300, 0), kStrongOrigin};
  const std::vector<ModeSwitch> earlier = {
      {Mode::kStrong, Version{MakeHlc(100, 0), kStrongOrigin}},
      {Mode::kLww, Version{MakeHlc(200, 0), kStrongOrigin}}};
  r.value = EncodeModeValue(earlier, Mode::kStrong);
  absl::StatusOr<std::vector<ModeSwitch>> history = DecodeModeRecord(r);
  ASSERT_TRUE(history.ok()) << history.status();
  ASSERT_EQ(history->size(), 3u);
  EXPECT_EQ((*history)[0], earlier[0]);
  EXPECT_EQ((*history)[1], earlier[1]);
  EXPECT_EQ((*history)[2].mode, Mode::kStrong);
  EXPECT_EQ((*history)[2].since, r.version);
  for (const char* bad : {"", "lww", "strong;strong", "bogus",
                          "strong@1.0@5354524f4e47ffff;strong"}) {
    r.value = bad;
    EXPECT_THAT(DecodeModeRecord(r),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << bad;
  }
}

TEST(StrongKeyspacesTest, CompareAndSet) {
  FakeConsensusLog log;
  Replica a(&log);
  ASSERT_TRUE(a.strong->SetMode("users", Mode::kStrong).ok());
  EXPECT_TRUE(a.strong->IsStrong("users"));

  absl::StatusOr<Version> v1 = a.strong->Write(Put("users", "ann", "dev1"), IfAbsent());
  ASSERT_TRUE(v1.ok()) << v1.status();
  EXPECT_EQ(v1->origin, kStrongOrigin);
  // Read-your-writes: applied here before Write returned.
  auto local = a.store->Get("users", "ann");
  ASSERT_TRUE(local.ok() && local->has_value());
  EXPECT_EQ((*local)->value, "dev1");

  EXPECT_THAT(a.strong->Write(Put("users", "ann", "dev2"), IfAbsent()),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       std::string(v1->ToString())));
  absl::StatusOr<Version> v2 =
      a.strong->Write(Put("users", "ann", "dev2"), IfVersion(*v1));
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_GT(*v2, *v1);
  EXPECT_THAT(a.strong->Write(Put("users", "ann", "dev3"), IfVersion(*v1)),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       std::string(v2->ToString())));
  EXPECT_THAT(a.strong->Write(Del("users", "ann"), IfVersion(*v1)),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  absl::StatusOr<Version> v3 = a.strong->Write(Del("users", "ann"), IfVersion(*v2));
  ASSERT_TRUE(v3.ok()) << v3.status();
  // A deleted key counts as absent.
  EXPECT_TRUE(a.strong->Write(Put("users", "ann", "dev4"), IfAbsent()).ok());

  // CAS on an lww keyspace is refused, naming the cure.
  EXPECT_THAT(a.strong->Write(Put("notes", "k", "v"), IfAbsent()),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       std::string("keyspace mode notes strong")));
  // Reserved keyspaces are refused.
  EXPECT_THAT(a.strong->Write(Put("peerkv.modes", "users", "lww"), None()),
              StatusIs(absl::StatusCode::kInvalidArgument, std::string("reserved")));
  EXPECT_THAT(a.strong->SetMode("peerkv.modes", Mode::kStrong),
              StatusIs(absl::StatusCode::kInvalidArgument, std::string("reserved")));
}

// A log whose next Propose first lets a racer commit (between the strong
// layer's read of the key and its proposal): the race made deterministic.
class RacingLog : public ConsensusLog {
 public:
  explicit RacingLog(FakeConsensusLog* inner) : inner_(inner) {}
  void RaceNextPropose(Proposal racer) { racer_ = std::move(racer); }
  absl::StatusOr<ProposeResult> Propose(const Proposal& p, absl::Duration t) override {
    if (racer_.has_value()) {
      Proposal racer = std::move(*racer_);
      racer_.reset();
      PEERKV_CHECK(inner_->Propose(racer, t).ok());
    }
    return inner_->Propose(p, t);
  }
  absl::StatusOr<std::optional<Committed>> Read(std::string_view ks, std::string_view key,
                                                absl::Duration t) override {
    return inner_->Read(ks, key, t);
  }
  absl::StatusOr<std::vector<Committed>> ReadAfter(uint64_t after, size_t max,
                                                   absl::Duration t) override {
    return inner_->ReadAfter(after, max, t);
  }
  bool Reachable() const override { return inner_->Reachable(); }
  std::string Describe() const override { return inner_->Describe(); }
  std::string LogIdentity() const override { return inner_->LogIdentity(); }

 private:
  FakeConsensusLog* inner_;
  std::optional<Proposal> racer_;
};

TEST(StrongKeyspacesTest, CasLosesToAWriteCommittedAfterItsRead) {
  FakeConsensusLog fake;
  RacingLog log(&fake);
  Replica a(&log);
  ASSERT_TRUE(a.strong->SetMode("users", Mode::kStrong).ok());
  absl::StatusOr<Version> v1 = a.strong->Write(Put("users", "ann", "one"), IfAbsent());
  ASSERT_TRUE(v1.ok());
  Proposal racer;
  racer.keyspace = "users";
  racer.key = "ann";
  racer.value = "racer";
  racer.origin = kStrongOrigin;
  racer.min_hlc = v1->hlc;
  log.RaceNextPropose(racer);
  // The read saw v1, so the precondition held then; the racer committed
  // before the proposal: it must fail, not overwrite the racer.
  EXPECT_THAT(a.strong->Write(Put("users", "ann", "two"), IfVersion(*v1)),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  log.RaceNextPropose(racer);
  EXPECT_THAT(a.strong->Write(Put("users", "bob", "two"), IfAbsent()), IsOk());
  auto history = fake.History();
  EXPECT_EQ(history.back().record.key, "bob");
  EXPECT_EQ(history[history.size() - 2].record.value, "racer");
}

TEST(StrongKeyspacesTest, CasLearnsASwitchThisReplicaHasNotSeenFromTheLog) {
  FakeConsensusLog log;
  Replica a(&log);
  Replica b(&log, /*start=*/false);  // no follower: b learns nothing by itself
  ASSERT_TRUE(a.strong->SetMode("users", Mode::kStrong).ok());
  EXPECT_FALSE(b.strong->IsStrong("users"));
  EXPECT_TRUE(b.strong->Write(Put("users", "ann", "b"), IfAbsent()).ok());
  EXPECT_TRUE(b.strong->IsStrong("users"));
  EXPECT_THAT(a.strong->Write(Put("users", "ann", "a"), IfAbsent()),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(StrongKeyspacesTest, ConcurrentCasIncrementsLoseNothing) {
  FakeConsensusLog log;
  Replica a(&log), b(&log);
  ASSERT_TRUE(a.strong->SetMode("c", Mode::kStrong).ok());
  absl::StatusOr<Version> v0 = a.strong->Write(Put("c", "n", "0"), IfAbsent());
  ASSERT_TRUE(v0.ok());
  // B's follower applies in log order: once it holds n, it knows the mode
  // (until then B treats the keyspace as lww).
  ASSERT_TRUE(b.AwaitVersion("c", "n", *v0));
  auto increment = [](Replica& r, int times) {
    for (int i = 0; i < times;) {
      absl::StatusOr<StrongRead> read = r.strong->Read("c", "n", false);
      PEERKV_CHECK(read.ok() && read->record.has_value());
      const int n = std::stoi(read->record->value);
      absl::StatusOr<Version> w = r.strong->Write(
          Put("c", "n", std::to_string(n + 1)), IfVersion(read->record->version));
      if (w.ok()) {
        ++i;
      } else {
        PEERKV_CHECK(w.status().code() == absl::StatusCode::kFailedPrecondition);
      }
    }
  };
  std::thread ta([&] { increment(a, 50); });
  std::thread tb([&] { increment(b, 50); });
  ta.join();
  tb.join();
  absl::StatusOr<StrongRead> final_a = a.strong->Read("c", "n", false);
  ASSERT_TRUE(final_a.ok());
  EXPECT_EQ(final_a->record->value, "100");
}

TEST(StrongKeyspacesTest, UnreachableIsUnavailableAtOnceNamingTheService) {
  FakeConsensusLog log("etcd at http://127.0.0.1:1");
  Replica a(&log);
  ASSERT_TRUE(a.strong->SetMode("users", Mode::kStrong).ok());
  ASSERT_TRUE(a.store->Put("notes", "k", "before").ok());
  log.SetAvailable(false);
  const absl::Time start = absl::Now();
  EXPECT_THAT(a.strong->Write(Put("users", "ann", "x"), IfAbsent()),
              StatusIs(absl::StatusCode::kUnavailable,
                       std::string("etcd at http://127.0.0.1:1")));
  EXPECT_THAT(a.strong->Write(Put("users", "ann", "x"), None()),
              StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(a.strong->Read("users", "ann", false),
              StatusIs(absl::StatusCode::kUnavailable,
                       std::string("etcd at http://127.0.0.1:1")));
  EXPECT_THAT(a.strong->SetMode("users", Mode::kLww),
              StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  // Stale reads and lww writes still work.
  absl::StatusOr<StrongRead> stale = a.strong->Read("users", "ann", true);
  ASSERT_TRUE(stale.ok());
  EXPECT_TRUE(stale->stale);
  EXPECT_TRUE(a.strong->Write(Put("notes", "k", "during"), None()).ok());
  // Back: strong writes resume without a restart.
  log.SetAvailable(true);
  EXPECT_TRUE(a.strong->Write(Put("users", "ann", "x"), IfAbsent()).ok());

  // No service at all.
  Replica none(nullptr);
  EXPECT_THAT(none.strong->SetMode("users", Mode::kStrong),
              StatusIs(absl::StatusCode::kUnavailable, std::string("--etcd")));
}

TEST(StrongKeyspacesTest, FollowerAppliesCommittedWritesAndPersistsPosition) {
  FakeConsensusLog log;
  Replica a(&log), b(&log);
  ASSERT_TRUE(a.strong->SetMode("users", Mode::kStrong).ok());
  absl::StatusOr<Version> v = a.strong->Write(Put("users", "ann", "dev1"), IfAbsent());
  ASSERT_TRUE(v.ok());
  ASSERT_TRUE(b.AwaitVersion("users", "ann", *v));
  EXPECT_TRUE(b.strong->IsStrong("users"));
  // B's stale read says how old its copy may be (it caught up: finite).
  absl::StatusOr<StrongRead> stale = b.strong->Read("users", "ann", true);
  ASSERT_TRUE(stale.ok());
  EXPECT_TRUE(stale->stale);
  EXPECT_EQ(stale->record->value, "dev1");
}

// A keyspace shared beyond its owner's devices (README "Signed records"):
// "shared" must carry its writer's signature, here a stand-in the test can
// recompute (the real one is auth::SignRecord, checked by auth::MakeRecordGate).
std::string StandInSignature(const Record& r) {
  return absl::StrCat("signed ", r.keyspace, "/", r.key, "@", r.version.ToString(), " ",
                      r.deleted ? "(deleted)" : r.value);
}
void SignsAndGatesShared(StoreOptions& options, bool with_signer) {
  if (with_signer) {
    options.signer = [](std::string_view ks, std::string_view key, const Version& version,
                        bool deleted, std::string_view value) -> std::string {
      if (ks != "shared") return "";
      return StandInSignature(Record{std::string(ks), std::string(key), version, deleted,
                                     std::string(value)});
    };
  }
  options.record_gate = [](const Record& r, MergeSource) -> absl::Status {
    if (r.keyspace != "shared" || r.signature == StandInSignature(r)) return absl::OkStatus();
    return absl::PermissionDeniedError(absl::StrCat(
        "record of keyspace shared is ", r.signature.empty() ? "unsigned" : "altered"));
  };
}

// Strong records of a shared keyspace are signed for the version the
// commit assigned, carried so in the log, applied so by every follower (and
// so gossiped on); a write the proposer's own gate would refuse (a device
// with no certificate, so no signer) is never committed; an altered copy
// is refused.
TEST(StrongKeyspacesTest, StrongRecordsOfASharedKeyspaceAreSignedInTheLog) {
  FakeConsensusLog log;
  Replica writer(&log, true, false, "", false,
                 [](StoreOptions& o) { SignsAndGatesShared(o, /*with_signer=*/true); });
  Replica follower(&log, true, false, "", false,
                   [](StoreOptions& o) { SignsAndGatesShared(o, /*with_signer=*/true); });
  ASSERT_THAT(writer.strong->SetMode("shared", Mode::kStrong), IsOk());
  absl::StatusOr<Version> v = writer.strong->Write(Put("shared", "jane", "laptop"), IfAbsent());
  ASSERT_THAT(v, IsOk());
  const Record expected{"shared", "jane", *v, false, "laptop"};
  const std::vector<Committed> history = log.History();
  ASSERT_FALSE(history.empty());
  EXPECT_EQ(history.back().record.signature, StandInSignature(expected));
  ASSERT_TRUE(follower.AwaitVersion("shared", "jane", *v));
  for (Replica* r : {&writer, &follower}) {
    auto held = r->store->Get("shared", "jane");
    ASSERT_THAT(held, IsOk());
    ASSERT_TRUE(held->has_value());
    EXPECT_EQ((*held)->signature, StandInSignature(expected));
  }
  // A delete is signed too.
  v = writer.strong->Write(Del("shared", "jane"), IfVersion(*v));
  ASSERT_THAT(v, IsOk());
  EXPECT_EQ(log.History().back().record.signature,
            StandInSignature(Record{"shared", "jane", *v, true, ""}));

  // A replica without a signer: refused before anything is committed.
  Replica uncertified(&log, true, false, "", false,
                      [](StoreOptions& o) { SignsAndGatesShared(o, /*with_signer=*/false); });
  ASSERT_TRUE(uncertified.AwaitVersion(std::string(kModesKeyspace), "shared",
                                       writer.modes.History("shared").back().since));
  const size_t commits = log.History().size();
  EXPECT_THAT(uncertified.strong->Write(Put("shared", "bob", "x"), None()),
              StatusIs(absl::StatusCode::kPermissionDenied, "unsigned"));
  EXPECT_EQ(log.History().size(), commits);

  // An altered copy of a committed record is refused by the next replica.
  Record altered = history.back().record;
  altered.value = "mallory";
  altered.version.hlc += 1;
  absl::StatusOr<MergeResult> merged = follower.store->Merge({altered});
  ASSERT_THAT(merged, IsOk());
  ASSERT_EQ(merged->refused.size(), 1u);
  EXPECT_THAT(merged->refused[0].reason.message(), HasSubstr("altered"));
}

// A committed record the follower's gate refuses (here an unsigned one of
// a shared keyspace, committed by a replica that signs and checks nothing,
// as an older peerkv did) is skipped and logged: the follower goes on to
// the later commits instead of reading the refused one again forever.
TEST(StrongKeyspacesTest, TheFollowerSkipsACommittedRecordItsGateRefuses) {
  FakeConsensusLog log;
  Replica legacy(&log);
  Replica writer(&log, true, false, "", false,
                 [](StoreOptions& o) { SignsAndGatesShared(o, /*with_signer=*/true); });
  ASSERT_THAT(writer.strong->SetMode("shared", Mode::kStrong), IsOk());
  ASSERT_TRUE(legacy.AwaitVersion(std::string(kModesKeyspace), "shared",
                                  writer.modes.History("shared").back().since));
  ASSERT_THAT(legacy.strong->Write(Put("shared", "old", "unsigned"), IfAbsent()), IsOk());
  absl::StatusOr<Version> signed_version =
      writer.strong->Write(Put("shared", "new", "signed"), IfAbsent());
  ASSERT_THAT(signed_version, IsOk());

  Replica follower(&log, true, false, "", false,
                   [](StoreOptions& o) { SignsAndGatesShared(o, /*with_signer=*/true); });
  ASSERT_TRUE(follower.AwaitVersion("shared", "new", *signed_version));
  auto old = follower.store->Get("shared", "old");
  ASSERT_THAT(old, IsOk());
  EXPECT_FALSE(old->has_value());
  ASSERT_TRUE(follower.strong->AwaitPosition(log.History().size(), absl::Seconds(10)));
  bool logged = false;
  for (const std::string& line : follower.Logged()) {
    logged = logged || (absl::StrContains(line, "refused here and skipped") &&
                        absl::StrContains(line, "unsigned"));
  }
  EXPECT_TRUE(logged);
}

TEST(StrongKeyspacesTest, ARecreatedLogIsFollowedFromItsStart) {
  FakeConsensusLog log;
  Replica a(&log);
  Replica b(&log, /*start=*/true, /*keep_position=*/true);
  ASSERT_TRUE(a.strong->SetMode("users", Mode::kStrong).ok());
  Version last;
  for (const char* name : {"ann", "bob", "cy", "dee"}) {
    absl::StatusOr<Version> v = a.strong->Write(Put("users", name, "x"), IfAbsent());
    ASSERT_TRUE(v.ok()) << v.status();
    last = *v;
  }
  ASSERT_TRUE(b.AwaitVersion("users", "dee", last));
  // The service is recreated from nothing (a new etcd at the same URL):
  // its positions start again at 1, below B's saved position.
  log.Recreate();
  absl::StatusOr<Version> eve = a.strong->Write(Put("users", "eve", "y"), IfAbsent());
  ASSERT_TRUE(eve.ok()) << eve.status();
  EXPECT_TRUE(b.AwaitVersion("users", "eve", *eve));
  const std::vector<std::string> logged = b.Logged();
  EXPECT_THAT(logged, ::testing::Contains(::testing::HasSubstr(
                          "is not the log this replica followed (fake log 2, was fake log 1)")));
  // The saved position is one in the new log, with its identity.
  absl::StatusOr<std::optional<std::string>> saved = b.store->GetExtMeta("consensus_position");
  ASSERT_TRUE(saved.ok()) << saved.status();
  ASSERT_TRUE(saved->has_value());
  const std::vector<std::string> parts = absl::StrSplit(**saved, '\n');
  ASSERT_EQ(parts.size(), 2u) << **saved;
  uint64_t position = 0;
  ASSERT_TRUE(absl::SimpleAtoi(parts[0], &position)) << **saved;
  EXPECT_EQ(parts[1], "fake log 2");
  EXPECT_LE(position, log.History().size());
}

bool AwaitPosition(StrongKeyspaces& strong, uint64_t position) {
  return strong.AwaitPosition(position, absl::Seconds(10));
}

// A strong write is acknowledged once merged here, before the fsync. A
// crash of the machine that loses that commit (simulated: the store's
// files put back as they were before it, the position with them) must not
// lose the write: the follower's position is in the same store, so it is
// behind the write again and reads it from the log. With the position kept
// in a file beside the store (as before), the file survives the loss, is
// past the write, and the write never comes back.
TEST(StrongKeyspacesTest, AStrongWriteLostLocallyComesBackFromTheLog) {
  FakeConsensusLog log;
  peerkv::testing::TempDir top("strong-lost");
  const std::string db = top.Sub("db");
  const std::string before = top.Sub("before");
  Version ann;
  {
    Replica a(&log, /*start=*/true, /*keep_position=*/true, db, /*sync=*/true);
    ASSERT_TRUE(a.strong->SetMode("users", Mode::kStrong).ok());
    absl::StatusOr<Version> v = a.strong->Write(Put("users", "ann", "x"), IfAbsent());
    ASSERT_TRUE(v.ok()) << v.status();
    ann = *v;
    ASSERT_TRUE(AwaitPosition(*a.strong, log.History().size()));
  }
  std::filesystem::copy(db, before, std::filesystem::copy_options::recursive);
  Version bob;
  {
    // The follower starts after the write, so the write's own merge is
    // the one that commits it.
    Replica a(&log, /*start=*/false, /*keep_position=*/true, db, /*sync=*/true);
    absl::StatusOr<Version> v = a.strong->Write(Put("users", "bob", "y"), IfAbsent());
    ASSERT_TRUE(v.ok()) << v.status();
    bob = *v;
    // Acknowledged without waiting for the fsync.
    EXPECT_EQ(a.store->unsynced_commits(), 1u);
    // The follower moves past it (the register holds it already).
    a.strong->Start();
    ASSERT_TRUE(AwaitPosition(*a.strong, log.History().size()));
  }
  // The machine crashed before the commits after `before` reached the disk.
  std::filesystem::remove_all(db);
  std::filesystem::rename(before, db);
  Replica a(&log, /*start=*/false, /*keep_position=*/true, db, /*sync=*/true);
  absl::StatusOr<std::optional<Record>> lost = a.store->Get("users", "bob");
  ASSERT_TRUE(lost.ok());
  ASSERT_FALSE(lost->has_value()) << "the simulated crash did not lose the write";
  a.strong->Start();
  EXPECT_TRUE(a.AwaitVersion("users", "bob", bob));
  absl::StatusOr<std::optional<Record>> kept = a.store->Get("users", "ann");
  ASSERT_TRUE(kept.ok() && kept->has_value());
  EXPECT_EQ((*kept)->version, ann);
}

TEST(StrongKeyspacesTest, BarrierRefusesLwwWritesAfterTheSwitchOnly) {
  FakeConsensusLog log;
  Replica a(&log);
  // A replica with no log access: it learns the mode by merging.
  Replica c(nullptr);
  absl::StatusOr<Version> on = a.strong->SetMode("users", Mode::kStrong);
  ASSERT_TRUE(on.ok());
  absl::StatusOr<Version> w = a.strong->Write(Put("users", "ann", "s"), IfAbsent());
  ASSERT_TRUE(w.ok());
  auto mode_record = a.store->Get(kModesKeyspace, "users");
  auto strong_record = a.store->Get("users", "ann");
  ASSERT_TRUE(mode_record.ok() && mode_record->has_value());
  ASSERT_TRUE(strong_record.ok() && strong_record->has_value());

  const uint64_t before = on->hlc - 10;
  const uint64_t after = on->hlc + 10;
  absl::StatusOr<MergeResult> merged = c.store->Merge(
      {**mode_record, **strong_record, LwwRecord("users", "old", before),
       LwwRecord("users", "new", after), LwwRecord("notes", "new", after)});
  ASSERT_TRUE(merged.ok());
  EXPECT_TRUE(c.strong->IsStrong("users"));
  ASSERT_EQ(merged->refused.size(), 1u);
  EXPECT_EQ(merged->refused[0].key, "new");
  EXPECT_EQ(merged->refused[0].keyspace, "users");
  EXPECT_EQ(merged->refused[0].reason.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(merged->refused[0].reason.message()), HasSubstr("barrier"));
  EXPECT_EQ(c.modes.refused(), 1u);
  EXPECT_TRUE((*c.store->Get("users", "old")).has_value());
  EXPECT_FALSE((*c.store->Get("users", "new")).has_value());
  EXPECT_EQ((*c.store->Get("users", "ann"))->value, "s");
  // The replica without the log refuses strong writes and linearizable reads.
  EXPECT_THAT(c.strong->Write(Put("users", "bob", "x"), IfAbsent()),
              StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(c.strong->Read("users", "ann", false),
              StatusIs(absl::StatusCode::kUnavailable));
  // A forged mode record (not from the log) is refused.
  Record forged = **mode_record;
  forged.version = Version{after + 100, 0x2222};
  forged.value = "strong@1.0@5354524f4e47ffff;lww";
  merged = c.store->Merge({forged});
  ASSERT_TRUE(merged.ok());
  ASSERT_EQ(merged->refused.size(), 1u);
  EXPECT_EQ(merged->refused[0].reason.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(c.strong->IsStrong("users"));
}

TEST(StrongKeyspacesTest, LwwStrongLwwIsReversible) {
  FakeConsensusLog log;
  Replica a(&log);
  absl::StatusOr<Version> pre = a.store->Put("users", "ann", "lww-before");
  ASSERT_TRUE(pre.ok());
  absl::StatusOr<Version> on = a.strong->SetMode("users", Mode::kStrong);
  ASSERT_TRUE(on.ok());
  EXPECT_GT(*on, *pre);
  // The pre-switch register is what a precondition sees; the strong write
  // beats it.
  EXPECT_THAT(a.strong->Write(Put("users", "ann", "x"), IfAbsent()),
              StatusIs(absl::StatusCode::kFailedPrecondition, std::string(pre->ToString())));
  absl::StatusOr<Version> s = a.strong->Write(Put("users", "ann", "strong"), IfVersion(*pre));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_GT(*s, *on);
  absl::StatusOr<Version> off = a.strong->SetMode("users", Mode::kLww);
  ASSERT_TRUE(off.ok());
  EXPECT_GT(*off, *on);
  EXPECT_FALSE(a.strong->IsStrong("users"));
  // Same mode again: a no-op that answers the switch's version.
  EXPECT_EQ(*a.strong->SetMode("users", Mode::kLww), *off);
  // Strong versions stay ordinary registers; lww writes go on.
  EXPECT_EQ((*a.store->Get("users", "ann"))->value, "strong");
  EXPECT_TRUE(a.strong->Write(Put("users", "ann", "lww-after"), None()).ok());

  // The barrier of a replica that learns the whole history: lww records in
  // the strong interval refused, after the switch back merged.
  Replica c(nullptr);
  auto mode_record = a.store->Get(kModesKeyspace, "users");
  absl::StatusOr<MergeResult> merged = c.store->Merge(
      {**mode_record, LwwRecord("users", "in", on->hlc + 1),
       LwwRecord("users", "later", off->hlc + 1),
       LwwRecord("users", "earlier", on->hlc - 1)});
  ASSERT_TRUE(merged.ok());
  ASSERT_EQ(merged->refused.size(), 1u);
  EXPECT_EQ(merged->refused[0].key, "in");
  std::vector<KeyspaceMode> modes = *a.strong->List();
  ASSERT_EQ(modes.size(), 1u);
  EXPECT_EQ(modes[0].keyspace, "users");
  EXPECT_EQ(modes[0].mode, Mode::kLww);
  EXPECT_EQ(modes[0].switches, 2u);
  // Switching again: strong at a third version.
  EXPECT_TRUE(a.strong->SetMode("users", Mode::kStrong).ok());
  EXPECT_TRUE(a.strong->IsStrong("users"));
}

}  // namespace
}  // namespace peerkv::consensus
