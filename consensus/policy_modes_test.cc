// consensus/policy_modes_test.cc: a keyspace's mode in its signed policy
// (README "Strong keyspaces"): the owner's switch is published into the
// policy; a non-owner's is refused before anything is written (log, policy,
// mode); a replica with neither the log nor peerkv.modes learns the mode
// and the barrier from the policy alone; a mode record from the log that
// the owner did not put in the policy does not change the mode; keyspaces
// without a policy keep their mode in peerkv.modes.
#include "consensus/policy_modes.h"

#include <memory>
#include <string>
#include <vector>

#include "auth/ids.h"
#include "common/macros.h"
#include "common/status_matchers.h"
#include "consensus/fake_consensus_log.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/temp_dir.h"

namespace peerkv::consensus {
namespace {

using absl::StatusCode;
using ::testing::SizeIs;

constexpr int64_t kT = 1'764'061'200'000;

// One user's replica: identity, store (policies checked as `peerkv serve`
// checks them, the mode table its merge filter), policy modes, and a strong
// layer over `log` (nullptr: no consensus service).
struct Replica {
  Replica(testing::TempDir& dir, const std::string& name, ConsensusLog* log) {
    auto id = auth::Identity::CreateUser(dir.Sub(name), name);
    PEERKV_CHECK(id.ok());
    identity = std::move(*id);
    access = std::make_shared<auth::StoreAccess>(identity->user());
    StoreOptions options;
    options.dir = dir.Sub(name + "/store");
    options.sync = false;
    options.scrub_at_open = false;
    options.reserved_check = auth::ReservedCheckWithPolicies(identity->user(), access);
    modes.SetLog([](const std::string&) {});
    modes.AttachTo(&options);
    auto opened = Store::Open(options);
    PEERKV_CHECK(opened.ok());
    store = std::move(*opened);
    access->Attach(store.get());
    PEERKV_CHECK(modes.Load(*store).ok());
    policy_modes = std::make_unique<AuthPolicyModes>(access.get(), identity.get(), store.get(),
                                                     [] { return kT; });
    modes.SetPolicyModes(policy_modes.get());
    StrongOptions strong_options;
    strong_options.workers = 1;
    strong_options.follow_wait = absl::Milliseconds(50);
    strong_options.log = [](const std::string&) {};
    strong = std::make_unique<StrongKeyspaces>(store.get(), &modes, log, strong_options);
    strong->Start();
  }
  ~Replica() {
    strong.reset();
    modes.SetPolicyModes(nullptr);
    access->Detach();
  }
  // Every record of `keyspace` here.
  std::vector<Record> All(std::string_view keyspace) const {
    ScanOptions all;
    all.include_tombstones = true;
    auto scan = store->Scan(keyspace, all);
    PEERKV_CHECK(scan.ok());
    return scan->records;
  }

  std::unique_ptr<auth::Identity> identity;
  std::shared_ptr<auth::StoreAccess> access;
  ModeTable modes;
  std::unique_ptr<Store> store;
  std::unique_ptr<AuthPolicyModes> policy_modes;
  std::unique_ptr<StrongKeyspaces> strong;
};

// Merges `from`'s records of `keyspace` into `to` (gossip, in one step).
void Gossip(const Replica& from, Replica& to, std::string_view keyspace) {
  auto merged = to.store->Merge(from.All(keyspace));
  ASSERT_THAT(merged, IsOk());
  EXPECT_THAT(merged->refused, SizeIs(0));
}

Record Lww(std::string ks, std::string key, uint64_t hlc) {
  Record r;
  r.keyspace = std::move(ks);
  r.key = std::move(key);
  r.value = "lww";
  r.version = Version{hlc, 0x1234};
  return r;
}

class PolicyModesTest : public ::testing::Test {
 protected:
  testing::TempDir dir_;
  FakeConsensusLog log_;
};

TEST_F(PolicyModesTest, TheOwnersSwitchIsInThePolicyANonOwnersIsRefused) {
  Replica jane(dir_, "jane", &log_);
  Replica jo(dir_, "josephine", &log_);
  ASSERT_THAT(auth::SetPolicy(*jane.identity, *jane.store, "jane.blog", {},
                              {auth::Who{auth::Who::Kind::kPublic, {}, ""}}, kT),
              IsOk());
  Gossip(jane, jo, auth::kPoliciesKeyspace);
  const std::vector<Record> policy_before = jo.All(auth::kPoliciesKeyspace);

  // Josephine may write jane.blog but does not own it: refused, naming the
  // owner, and nothing is written: not the log, not the policy, not a mode.
  absl::StatusOr<Version> refused = jo.strong->SetMode("jane.blog", Mode::kStrong);
  EXPECT_THAT(refused.status(),
              StatusIs(StatusCode::kPermissionDenied,
                       "keyspace 'jane.blog' is owned by user " + auth::UserId(jane.identity->user())));
  EXPECT_THAT(refused.status(), StatusIs(StatusCode::kPermissionDenied, "only its owner may switch"));
  EXPECT_TRUE(log_.History().empty());
  EXPECT_EQ(jo.All(auth::kPoliciesKeyspace), policy_before);
  EXPECT_TRUE(jo.All(kModesKeyspace).empty());
  EXPECT_FALSE(jo.strong->IsStrong("jane.blog"));
  EXPECT_FALSE(jane.strong->IsStrong("jane.blog"));

  // Jane's switch commits in the log and is published in her policy.
  absl::StatusOr<Version> on = jane.strong->SetMode("jane.blog", Mode::kStrong);
  ASSERT_THAT(on, IsOk());
  EXPECT_EQ(on->origin, kStrongOrigin);
  absl::StatusOr<auth::Policy> policy = auth::GetPolicy(*jane.store, "jane.blog");
  ASSERT_THAT(policy, IsOk());
  ASSERT_THAT(policy->modes, SizeIs(1));
  EXPECT_TRUE(policy->modes[0].strong);
  EXPECT_EQ(policy->modes[0].since, *on);
  EXPECT_TRUE(jane.strong->IsStrong("jane.blog"));
  // ...and Josephine, switching it back, is refused the same way.
  EXPECT_THAT(jo.strong->SetMode("jane.blog", Mode::kLww).status(),
              StatusIs(StatusCode::kPermissionDenied, "only its owner may switch"));
  EXPECT_THAT(log_.History(), SizeIs(1));

  // Back to lww by the owner: the policy carries both switches.
  absl::StatusOr<Version> off = jane.strong->SetMode("jane.blog", Mode::kLww);
  ASSERT_THAT(off, IsOk());
  policy = auth::GetPolicy(*jane.store, "jane.blog");
  ASSERT_THAT(policy, IsOk());
  ASSERT_THAT(policy->modes, SizeIs(2));
  EXPECT_EQ(policy->modes[1].since, *off);
  EXPECT_FALSE(jane.strong->IsStrong("jane.blog"));
}

TEST_F(PolicyModesTest, AReplicaWithoutTheLogTakesModeAndBarrierFromThePolicy) {
  Replica jane(dir_, "jane", &log_);
  Replica jo(dir_, "josephine", /*log=*/nullptr);
  ASSERT_THAT(auth::SetPolicy(*jane.identity, *jane.store, "jane.blog",
                              {auth::Who{auth::Who::Kind::kPublic, {}, ""}}, {}, kT),
              IsOk());
  absl::StatusOr<Version> on = jane.strong->SetMode("jane.blog", Mode::kStrong);
  ASSERT_THAT(on, IsOk());
  // Only the policy travels (a friend is not sent peerkv.modes).
  EXPECT_FALSE(jo.strong->IsStrong("jane.blog"));
  Gossip(jane, jo, auth::kPoliciesKeyspace);
  EXPECT_TRUE(jo.All(kModesKeyspace).empty());
  EXPECT_TRUE(jo.strong->IsStrong("jane.blog"));
  ASSERT_THAT(jo.modes.History("jane.blog"), SizeIs(1));
  EXPECT_EQ(jo.modes.History("jane.blog")[0].since, *on);
  absl::StatusOr<std::vector<KeyspaceMode>> list = jo.strong->List();
  ASSERT_THAT(list, IsOk());
  bool listed = false;
  for (const KeyspaceMode& m : *list) {
    if (m.keyspace != "jane.blog") continue;
    listed = true;
    EXPECT_EQ(m.mode, Mode::kStrong);
    EXPECT_EQ(m.since, *on);
  }
  EXPECT_TRUE(listed);
  // The barrier from the policy: an lww write from before the switch
  // merges, one after it is refused.
  auto merged = jo.store->Merge({Lww("jane.blog", "old", on->hlc - 1),
                                 Lww("jane.blog", "late", on->hlc + 1)});
  ASSERT_THAT(merged, IsOk());
  ASSERT_THAT(merged->refused, SizeIs(1));
  EXPECT_EQ(merged->refused[0].key, "late");
  EXPECT_THAT(merged->refused[0].reason,
              StatusIs(StatusCode::kFailedPrecondition, "refused by the barrier"));
  // Strong writes there: Unavailable (no service), as for any strong keyspace.
  EXPECT_THAT(jo.strong->Write(Mutation{"jane.blog", "k", std::string("v")}, Precondition{}),
              StatusIs(StatusCode::kUnavailable, "no consensus service"));
}

TEST_F(PolicyModesTest, AModeRecordTheOwnerDidNotPublishDoesNotSwitchIt) {
  Replica jane(dir_, "jane", &log_);
  ASSERT_THAT(auth::SetPolicy(*jane.identity, *jane.store, "jane.blog", {}, {}, kT), IsOk());
  ASSERT_THAT(jane.strong->SetMode("jane.blog", Mode::kStrong), IsOk());
  // Someone with access to the service commits "lww" for jane.blog in
  // peerkv.modes directly (as a replica skipping the owner check would).
  absl::StatusOr<std::optional<Committed>> current =
      log_.Read(kModesKeyspace, "jane.blog", absl::Seconds(1));
  ASSERT_THAT(current, IsOk());
  ASSERT_TRUE(current->has_value());
  Proposal p;
  p.keyspace = std::string(kModesKeyspace);
  p.key = "jane.blog";
  p.value = EncodeModeValue(DecodeModeRecord((*current)->record).value(), Mode::kLww);
  p.origin = kStrongOrigin;
  p.precondition = Precondition{Precondition::Kind::kIfVersion, (*current)->record.version};
  absl::StatusOr<ProposeResult> forged = log_.Propose(p, absl::Seconds(1));
  ASSERT_THAT(forged, IsOk());
  ASSERT_TRUE(forged->applied);
  ASSERT_THAT(jane.store->Merge({forged->committed.record}), IsOk());
  ASSERT_THAT(DecodeModeRecord(*jane.store->Get(kModesKeyspace, "jane.blog").value()).value(),
              SizeIs(2));
  // The policy, signed by the owner, still says strong.
  EXPECT_TRUE(jane.strong->IsStrong("jane.blog"));
}

TEST_F(PolicyModesTest, AKeyspaceWithoutAPolicyKeepsItsModeInTheModesKeyspace) {
  Replica jane(dir_, "jane", &log_);
  absl::StatusOr<Version> on = jane.strong->SetMode("notes", Mode::kStrong);
  ASSERT_THAT(on, IsOk());
  EXPECT_TRUE(jane.strong->IsStrong("notes"));
  EXPECT_THAT(auth::GetPolicy(*jane.store, "notes"), StatusIs(StatusCode::kNotFound));
  EXPECT_THAT(jane.All(kModesKeyspace), SizeIs(1));
  // Reserved keyspaces are refused, policies or not.
  EXPECT_THAT(jane.strong->SetMode("peerkv.policies", Mode::kStrong),
              StatusIs(StatusCode::kInvalidArgument, "is reserved"));
  // A policy set later, without a mode, leaves the mode to peerkv.modes; a
  // switch run again (already strong) carries it into the policy.
  ASSERT_THAT(auth::SetPolicy(*jane.identity, *jane.store, "notes", {}, {}, kT), IsOk());
  EXPECT_TRUE(jane.strong->IsStrong("notes"));
  EXPECT_TRUE(auth::GetPolicy(*jane.store, "notes")->modes.empty());
  absl::StatusOr<Version> again = jane.strong->SetMode("notes", Mode::kStrong);
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(*again, *on);
  ASSERT_THAT(auth::GetPolicy(*jane.store, "notes")->modes, SizeIs(1));
  EXPECT_EQ(auth::GetPolicy(*jane.store, "notes")->modes[0].since, *on);
}

}  // namespace
}  // namespace peerkv::consensus
