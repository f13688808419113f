// auth/policy_test.cc: policy and group records (round trip, every bad
// input), the owner rules of ReservedCheckWithPolicies, the commands, and
// StoreAccess's answers and their refresh when a record changes.
#include "auth/policy.h"

#include "auth/certificate.h"
#include "auth/ids.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/temp_dir.h"

namespace peerkv::auth {
namespace {

using absl::StatusCode;
using ::testing::ElementsAre;
using ::testing::SizeIs;

constexpr int64_t kT = 1'764'061'200'000;

Who UserWho(const PublicKey& u) {
  Who w;
  w.kind = Who::Kind::kUser;
  w.user = u;
  return w;
}
Who GroupWho(std::string name) {
  Who w;
  w.kind = Who::Kind::kGroup;
  w.group = std::move(name);
  return w;
}
Who PublicWho() {
  Who w;
  w.kind = Who::Kind::kPublic;
  return w;
}
Member UserMember(const PublicKey& u) { return Member{u, ""}; }
Member GroupMember(std::string g) { return Member{PublicKey{}, std::move(g)}; }

// One user's device: identity, store, access.
struct Device {
  std::unique_ptr<Identity> identity;
  std::shared_ptr<StoreAccess> access;
  std::unique_ptr<Store> store;
  Principal me() const { return Principal{identity->user(), true}; }
  ~Device() {
    if (access) access->Detach();
  }
};

class PolicyTest : public ::testing::Test {
 protected:
  std::unique_ptr<Device> MakeUser(const std::string& name) {
    auto d = std::make_unique<Device>();
    absl::StatusOr<std::unique_ptr<Identity>> id = Identity::CreateUser(dir_.Sub(name), name);
    EXPECT_THAT(id, IsOk());
    d->identity = std::move(*id);
    d->access = std::make_shared<StoreAccess>(d->identity->user());
    StoreOptions options;
    options.dir = dir_.Sub(name + "/store");
    options.sync = false;
    options.scrub_at_open = false;
    options.reserved_check = ReservedCheckWithPolicies(d->identity->user(), d->access);
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(std::move(options));
    EXPECT_THAT(store, IsOk());
    d->store = std::move(*store);
    d->access->Attach(d->store.get());
    return d;
  }
  // Merges every policy and group record of `from` into `to`.
  MergeResult Sync(Store& from, Store& to) {
    std::vector<Record> batch;
    for (const char* ks : {kPoliciesKeyspace, kGroupsKeyspace}) {
      ScanOptions all;
      all.include_tombstones = true;
      absl::StatusOr<ScanResult> scan = from.Scan(ks, all);
      EXPECT_THAT(scan, IsOk());
      for (Record& r : scan->records) batch.push_back(std::move(r));
    }
    absl::StatusOr<MergeResult> merged = to.Merge(std::move(batch));
    EXPECT_THAT(merged, IsOk());
    return merged.ok() ? *merged : MergeResult{};
  }
  Record PolicyRecord(Store& store, const std::string& ks) {
    absl::StatusOr<std::optional<Record>> r = store.Get(kPoliciesKeyspace, ks);
    EXPECT_THAT(r, IsOk());
    EXPECT_TRUE(r->has_value());
    return **r;
  }
  testing::TempDir dir_;
};

TEST_F(PolicyTest, ParseWho) {
  std::unique_ptr<SigningKey> k = SigningKey::Generate();
  EXPECT_EQ(ParseWho("owner", "WHO")->kind, Who::Kind::kOwner);
  EXPECT_EQ(ParseWho("public", "WHO")->kind, Who::Kind::kPublic);
  absl::StatusOr<Who> user = ParseWho(UserId(k->public_key()), "WHO");
  ASSERT_THAT(user, IsOk());
  EXPECT_EQ(user->kind, Who::Kind::kUser);
  EXPECT_EQ(user->user, k->public_key());
  EXPECT_EQ(FormatWho(*user), UserId(k->public_key()));
  absl::StatusOr<Who> group = ParseWho("blog", "WHO");
  ASSERT_THAT(group, IsOk());
  EXPECT_EQ(group->group, "blog");
  EXPECT_THAT(ParseWho("", "--read"), StatusIs(StatusCode::kInvalidArgument, "--read"));
  EXPECT_THAT(ParseWho("Bad Name", "--read"),
              StatusIs(StatusCode::kInvalidArgument, "not 'owner', 'public', a user id"));
  EXPECT_THAT(ParseWho(std::string(65, 'a'), "--read"), StatusIs(StatusCode::kInvalidArgument));
  // A device id where a user id belongs fails its check.
  EXPECT_THAT(ParseWho(DeviceId(k->public_key()), "--read"),
              StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseMember("group:owner", "USER_ID"), StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseMember("someone", "USER_ID"), StatusIs(StatusCode::kInvalidArgument));
  EXPECT_EQ(ParseMember("group:friends", "USER_ID")->group, "friends");
}

TEST_F(PolicyTest, PolicyRecordRoundTripAndBadInput) {
  std::unique_ptr<SigningKey> jane = SigningKey::Generate();
  std::unique_ptr<SigningKey> other = SigningKey::Generate();
  Policy p;
  p.owner = jane->public_key();
  p.readers = {GroupWho("blog"), UserWho(other->public_key())};
  p.writers = {PublicWho()};
  p.time_ms = kT;
  const std::string value = EncodePolicyRecord(*jane, "jane.blog", p);
  absl::StatusOr<Policy> back = DecodePolicyRecord("jane.blog", value);
  ASSERT_THAT(back, IsOk());
  EXPECT_EQ(back->owner, jane->public_key());
  EXPECT_EQ(back->readers, p.readers);
  EXPECT_EQ(back->writers, p.writers);
  EXPECT_EQ(back->time_ms, kT);

  // Moved to another keyspace: the signature covers the key.
  EXPECT_THAT(DecodePolicyRecord("jane.other", value),
              StatusIs(StatusCode::kPermissionDenied, "signature does not verify"));
  // Altered body byte.
  std::string altered = value;
  altered[32 + 4 + 3] ^= 1;
  EXPECT_THAT(DecodePolicyRecord("jane.blog", altered),
              StatusIs(StatusCode::kPermissionDenied, "signature does not verify"));
  // Owner key swapped for another: the signature is not that user's.
  std::string swapped = value;
  swapped.replace(0, 32, other->public_key().view());
  EXPECT_THAT(DecodePolicyRecord("jane.blog", swapped),
              StatusIs(StatusCode::kPermissionDenied, "signature does not verify"));
  // Truncated, trailing bytes, empty.
  EXPECT_THAT(DecodePolicyRecord("jane.blog", value.substr(0, value.size() - 1)),
              StatusIs(StatusCode::kInvalidArgument, "truncated"));
  EXPECT_THAT(DecodePolicyRecord("jane.blog", value + "x"),
              StatusIs(StatusCode::kInvalidArgument, "trailing"));
  EXPECT_THAT(DecodePolicyRecord("jane.blog", ""),
              StatusIs(StatusCode::kInvalidArgument, "truncated"));

  // Limits and duplicates.
  Policy big = p;
  big.readers.clear();
  for (size_t i = 0; i <= kMaxPolicyEntries; ++i) big.readers.push_back(GroupWho("g" + std::to_string(i)));
  EXPECT_THAT(ValidatePolicy("jane.blog", big),
              StatusIs(StatusCode::kInvalidArgument, "the limit is 64"));
  Policy dup = p;
  dup.readers = {GroupWho("blog"), GroupWho("blog")};
  EXPECT_THAT(ValidatePolicy("jane.blog", dup), StatusIs(StatusCode::kInvalidArgument, "twice"));
}

TEST_F(PolicyTest, GroupRecordRoundTripAndBadInput) {
  std::unique_ptr<SigningKey> jane = SigningKey::Generate();
  std::unique_ptr<SigningKey> mallory = SigningKey::Generate();
  Group g;
  g.owner = jane->public_key();
  g.name = "blog";
  g.members = {UserMember(mallory->public_key()), GroupMember("family")};
  g.time_ms = kT;
  const std::string key = GroupKey(jane->public_key(), "blog");
  const std::string value = EncodeGroupRecord(*jane, g);
  absl::StatusOr<Group> back = DecodeGroupRecord(key, value);
  ASSERT_THAT(back, IsOk());
  EXPECT_EQ(back->name, "blog");
  EXPECT_EQ(back->members, g.members);

  // Mallory signs a group under Jane's id: the signer must be the owner.
  Group forged = g;
  forged.members = {UserMember(mallory->public_key())};
  std::string by_mallory = EncodeGroupRecord(*mallory, forged);
  // (EncodeGroupRecord signs for its signer's key; re-sign for Jane's key.)
  EXPECT_THAT(DecodeGroupRecord(key, by_mallory),
              StatusIs(StatusCode::kPermissionDenied, "signature does not verify"));
  // A record Mallory signed for her own key, stored under Jane's key.
  EXPECT_THAT(DecodeGroupRecord(GroupKey(mallory->public_key(), "blog"), value),
              StatusIs(StatusCode::kPermissionDenied));
  EXPECT_THAT(DecodeGroupRecord("no-slash", value),
              StatusIs(StatusCode::kInvalidArgument, "OWNER_USER_ID/GROUP_NAME"));
  EXPECT_THAT(DecodeGroupRecord(UserId(jane->public_key()) + "/Bad", value),
              StatusIs(StatusCode::kInvalidArgument, "not a group name"));
  EXPECT_THAT(DecodeGroupRecord(key, value.substr(0, 50)),
              StatusIs(StatusCode::kInvalidArgument, "truncated"));

  Group self = g;
  self.members = {GroupMember("blog")};
  EXPECT_THAT(ValidateGroup(self), StatusIs(StatusCode::kInvalidArgument, "contains itself"));
  Group dup = g;
  dup.members = {UserMember(mallory->public_key()), UserMember(mallory->public_key())};
  EXPECT_THAT(ValidateGroup(dup), StatusIs(StatusCode::kInvalidArgument, "twice"));
  Group big = g;
  big.members.clear();
  for (size_t i = 0; i <= kMaxGroupMembers; ++i) {
    big.members.push_back(UserMember(SigningKey::Generate()->public_key()));
  }
  EXPECT_THAT(ValidateGroup(big), StatusIs(StatusCode::kInvalidArgument, "the limit is 1024"));
}

TEST_F(PolicyTest, CommandsAndAccess) {
  std::unique_ptr<Device> jane = MakeUser("jane");
  std::unique_ptr<Device> josephine = MakeUser("josephine");
  std::unique_ptr<Device> mallory = MakeUser("mallory");
  Store& s = *jane->store;
  const Identity& id = *jane->identity;
  const Principal jo{josephine->identity->user(), false};
  const Principal mal{mallory->identity->user(), false};

  // No policy: private to the local user.
  EXPECT_TRUE(jane->access->MayRead(jane->me(), "jane.blog"));
  EXPECT_TRUE(jane->access->MayWrite(jane->me(), "jane.blog"));
  EXPECT_FALSE(jane->access->MayRead(jo, "jane.blog"));
  EXPECT_FALSE(jane->access->RequiresSignature("jane.blog"));
  EXPECT_THAT(GetPolicy(s, "jane.blog"), StatusIs(StatusCode::kNotFound, "no policy"));

  // Unknown group.
  EXPECT_THAT(SetPolicy(id, s, "jane.blog", {GroupWho("blog")}, {}, kT),
              StatusIs(StatusCode::kNotFound, "group 'blog' does not exist"));
  ASSERT_THAT(CreateGroup(id, s, "blog", kT), IsOk());
  EXPECT_THAT(CreateGroup(id, s, "blog", kT), StatusIs(StatusCode::kAlreadyExists));
  ASSERT_THAT(AddToGroup(id, s, "blog", {UserMember(josephine->identity->user())}, kT), IsOk());
  EXPECT_THAT(AddToGroup(id, s, "blog", {UserMember(josephine->identity->user())}, kT),
              StatusIs(StatusCode::kAlreadyExists));
  EXPECT_THAT(AddToGroup(id, s, "nogroup", {UserMember(josephine->identity->user())}, kT),
              StatusIs(StatusCode::kNotFound));
  ASSERT_THAT(SetPolicy(id, s, "jane.blog", {GroupWho("blog")}, {}, kT), IsOk());
  absl::StatusOr<Policy> got = GetPolicy(s, "jane.blog");
  ASSERT_THAT(got, IsOk());
  EXPECT_THAT(got->readers, ElementsAre(GroupWho("blog")));

  // The cache re-reads after the commit.
  EXPECT_TRUE(jane->access->MayRead(jo, "jane.blog"));
  EXPECT_FALSE(jane->access->MayWrite(jo, "jane.blog"));
  EXPECT_FALSE(jane->access->MayRead(mal, "jane.blog"));
  EXPECT_FALSE(jane->access->MayRead(jo, "drafts"));
  EXPECT_TRUE(jane->access->RequiresSignature("jane.blog"));
  EXPECT_TRUE(jane->access->MayReadRecord(jo, kPoliciesKeyspace, "jane.blog"));
  EXPECT_FALSE(jane->access->MayReadRecord(jo, kPoliciesKeyspace, "drafts"));
  EXPECT_TRUE(jane->access->MayReadRecord(jo, kGroupsKeyspace, GroupKey(id.user(), "blog")));
  EXPECT_FALSE(jane->access->MayReadRecord(mal, kGroupsKeyspace, GroupKey(id.user(), "blog")));
  // Reserved keyspaces: the local user reads, nobody writes through the API.
  EXPECT_TRUE(jane->access->MayRead(jane->me(), kDevicesKeyspace));
  EXPECT_FALSE(jane->access->MayWrite(jane->me(), kDevicesKeyspace));
  EXPECT_FALSE(jane->access->MayRead(jo, kFriendsKeyspace));
  EXPECT_FALSE(jane->access->MayRead(jo, kPoliciesKeyspace));

  // Nested groups, and the cycle refused at add.
  ASSERT_THAT(CreateGroup(id, s, "family", kT), IsOk());
  ASSERT_THAT(AddToGroup(id, s, "family", {UserMember(mallory->identity->user())}, kT), IsOk());
  ASSERT_THAT(AddToGroup(id, s, "blog", {GroupMember("family")}, kT), IsOk());
  EXPECT_TRUE(jane->access->MayRead(mal, "jane.blog"));
  EXPECT_THAT(AddToGroup(id, s, "family", {GroupMember("blog")}, kT),
              StatusIs(StatusCode::kInvalidArgument, "would make a cycle"));
  EXPECT_THAT(AddToGroup(id, s, "family", {GroupMember("missing")}, kT),
              StatusIs(StatusCode::kNotFound, "member group 'missing'"));

  // Removal revokes.
  ASSERT_THAT(RemoveFromGroup(id, s, "blog", GroupMember("family"), kT), IsOk());
  EXPECT_FALSE(jane->access->MayRead(mal, "jane.blog"));
  EXPECT_THAT(RemoveFromGroup(id, s, "blog", GroupMember("family"), kT),
              StatusIs(StatusCode::kNotFound, "not a member"));
  absl::StatusOr<std::vector<Group>> groups = ListGroups(id, s, std::nullopt);
  ASSERT_THAT(groups, IsOk());
  ASSERT_THAT(*groups, SizeIs(2));
  EXPECT_EQ((*groups)[0].name, "blog");
  EXPECT_EQ((*groups)[1].name, "family");
  EXPECT_THAT(ListGroups(id, s, "nope"), StatusIs(StatusCode::kNotFound));

  // Writers imply readers; public.
  ASSERT_THAT(SetPolicy(id, s, "jane.wiki", {}, {UserWho(mallory->identity->user())}, kT), IsOk());
  EXPECT_TRUE(jane->access->MayRead(mal, "jane.wiki"));
  EXPECT_TRUE(jane->access->MayWrite(mal, "jane.wiki"));
  EXPECT_FALSE(jane->access->MayRead(jo, "jane.wiki"));
  ASSERT_THAT(SetPolicy(id, s, "jane.pub", {PublicWho()}, {}, kT), IsOk());
  EXPECT_TRUE(jane->access->MayRead(jo, "jane.pub"));
  EXPECT_FALSE(jane->access->MayWrite(jo, "jane.pub"));
  // Only the owner: no signature needed.
  ASSERT_THAT(SetPolicy(id, s, "jane.own", {}, {}, kT), IsOk());
  EXPECT_FALSE(jane->access->RequiresSignature("jane.own"));
  EXPECT_FALSE(jane->access->MayRead(jo, "jane.own"));

  // Bad keyspaces.
  EXPECT_THAT(SetPolicy(id, s, "peerkv.devices", {}, {}, kT),
              StatusIs(StatusCode::kInvalidArgument, "reserved"));
  EXPECT_THAT(SetPolicy(id, s, "_x", {}, {}, kT),
              StatusIs(StatusCode::kInvalidArgument, "starting with '_' are reserved"));
}

TEST_F(PolicyTest, FriendsStoreKeepsOwnersPolicyAndChecksOwnership) {
  std::unique_ptr<Device> jane = MakeUser("jane");
  std::unique_ptr<Device> josephine = MakeUser("josephine");
  std::unique_ptr<Device> mallory = MakeUser("mallory");
  const Identity& id = *jane->identity;
  ASSERT_THAT(CreateGroup(id, *jane->store, "blog", kT), IsOk());
  ASSERT_THAT(AddToGroup(id, *jane->store, "blog", {UserMember(josephine->identity->user())}, kT),
              IsOk());
  ASSERT_THAT(SetPolicy(id, *jane->store, "jane.blog", {GroupWho("blog")}, {}, kT), IsOk());

  // Josephine's store keeps Jane's policy and group: her local user may
  // read Jane's blog, not write it.
  MergeResult merged = Sync(*jane->store, *josephine->store);
  EXPECT_THAT(merged.refused, SizeIs(0));
  EXPECT_TRUE(josephine->access->MayRead(josephine->me(), "jane.blog"));
  EXPECT_FALSE(josephine->access->MayWrite(josephine->me(), "jane.blog"));
  EXPECT_TRUE(josephine->access->MayRead(Principal{id.user(), false}, "jane.blog"));
  EXPECT_FALSE(josephine->access->MayRead(Principal{mallory->identity->user(), false}, "jane.blog"));

  // Josephine may not set the policy of Jane's keyspace.
  EXPECT_THAT(SetPolicy(*josephine->identity, *josephine->store, "jane.blog", {PublicWho()}, {}, kT),
              StatusIs(StatusCode::kPermissionDenied, "only a keyspace's owner"));

  // Mallory signs a policy for jane.blog (owned by Jane at Josephine's):
  // refused when it arrives.
  ASSERT_THAT(SetPolicy(*mallory->identity, *mallory->store, "jane.blog", {PublicWho()}, {}, kT),
              IsOk());
  merged = Sync(*mallory->store, *josephine->store);
  ASSERT_THAT(merged.refused, SizeIs(1));
  EXPECT_THAT(merged.refused[0].reason,
              StatusIs(StatusCode::kPermissionDenied, "only a keyspace's owner"));
  EXPECT_FALSE(josephine->access->MayRead(Principal{mallory->identity->user(), false}, "jane.blog"));

  // Mallory's policy for a keyspace Jane holds records of (her private
  // drafts, no policy) is refused: the name is Jane's.
  ASSERT_THAT(jane->store->Put("drafts", "d1", "secret"), IsOk());
  ASSERT_THAT(SetPolicy(*mallory->identity, *mallory->store, "drafts", {PublicWho()}, {}, kT),
              IsOk());
  merged = Sync(*mallory->store, *jane->store);
  // jane.blog (signed by Mallory, owned by Jane) and drafts: both refused.
  ASSERT_THAT(merged.refused, SizeIs(2));
  for (const RefusedRecord& r : merged.refused) {
    EXPECT_THAT(r.reason, StatusIs(StatusCode::kPermissionDenied)) << r.reason;
  }
  EXPECT_FALSE(jane->access->MayRead(Principal{mallory->identity->user(), false}, "drafts"));
  EXPECT_TRUE(jane->access->MayRead(jane->me(), "drafts"));

  // A store without a StoreAccess keeps only its own user's policies.
  auto plain = ReservedCheck(josephine->identity->user());
  const Record jane_policy = PolicyRecord(*jane->store, "jane.blog");
  EXPECT_THAT(plain(kPoliciesKeyspace, "jane.blog", jane_policy.value, false),
              StatusIs(StatusCode::kPermissionDenied, "accepts only its own user's"));
  auto janes = ReservedCheck(id.user());
  EXPECT_THAT(janes(kPoliciesKeyspace, "jane.blog", jane_policy.value, false), IsOk());
  EXPECT_THAT(janes(kPoliciesKeyspace, "jane.blog", "", true),
              StatusIs(StatusCode::kPermissionDenied, "tombstone"));
  EXPECT_THAT(janes(kPoliciesKeyspace, "jane.other", jane_policy.value, false),
              StatusIs(StatusCode::kPermissionDenied, "signature does not verify"));
  EXPECT_THAT(janes(kPoliciesKeyspace, "peerkv.friends", jane_policy.value, false),
              StatusIs(StatusCode::kPermissionDenied, "reserved keyspaces"));
}

TEST_F(PolicyTest, CycleArrivingByMergeIsNotMembership) {
  std::unique_ptr<Device> jane = MakeUser("jane");
  std::unique_ptr<Device> josephine = MakeUser("josephine");
  std::unique_ptr<SigningKey> stranger = SigningKey::Generate();
  const PublicKey owner = jane->identity->user();
  // Two groups that contain each other, written behind the commands' back
  // (as a store with an older peerkv, or a race between two devices each
  // adding one edge, could leave them).
  std::vector<Record> batch;
  uint64_t clock = 1;
  for (auto [name, other] : {std::pair{"a", "b"}, std::pair{"b", "a"}}) {
    Group g;
    g.owner = owner;
    g.name = name;
    g.members = {GroupMember(other)};
    Record r;
    r.keyspace = kGroupsKeyspace;
    r.key = GroupKey(owner, name);
    r.value = EncodeGroupRecord(*jane->identity->user_key(), g);
    r.version = Version{MakeHlc(static_cast<uint64_t>(kT), clock++), 77};
    batch.push_back(std::move(r));
  }
  absl::StatusOr<MergeResult> merged = josephine->store->Merge(std::move(batch));
  ASSERT_THAT(merged, IsOk());
  EXPECT_THAT(merged->refused, SizeIs(0));
  EXPECT_FALSE(josephine->access->IsMember(owner, "a", stranger->public_key()));
  EXPECT_FALSE(josephine->access->IsMember(owner, "b", josephine->identity->user()));
}

// The concurrent-write rule: a removed writer's write is accepted iff it
// was made (by HLC order) before the record that removed them.
TEST_F(PolicyTest, WriteConcurrentWithRevocationIsDecidedByClock) {
  std::unique_ptr<Device> jane = MakeUser("jane");
  std::unique_ptr<Device> jo = MakeUser("josephine");
  std::unique_ptr<Device> mallory = MakeUser("mallory");
  Store& s = *jane->store;
  const Identity& id = *jane->identity;
  const Principal josephine{jo->identity->user(), false};
  const Principal mal{mallory->identity->user(), false};
  ASSERT_THAT(CreateGroup(id, s, "writers", kT), IsOk());
  ASSERT_THAT(AddToGroup(id, s, "writers", {UserMember(jo->identity->user())}, kT), IsOk());
  ASSERT_THAT(SetPolicy(id, s, "jane.blog", {}, {GroupWho("writers"), UserWho(mallory->identity->user())}, kT),
              IsOk());
  const uint64_t while_member = s.clock_mark();
  EXPECT_TRUE(jane->access->MayWriteAt(josephine, "jane.blog", while_member));
  ASSERT_THAT(RemoveFromGroup(id, s, "writers", UserMember(jo->identity->user()), kT), IsOk());
  absl::StatusOr<std::optional<Record>> removal =
      s.Get(kGroupsKeyspace, GroupKey(id.user(), "writers"));
  ASSERT_THAT(removal, IsOk());
  const uint64_t removed_at = (*removal)->version.hlc;
  EXPECT_FALSE(jane->access->MayWrite(josephine, "jane.blog"));
  EXPECT_TRUE(jane->access->MayWriteAt(josephine, "jane.blog", while_member));
  EXPECT_FALSE(jane->access->MayWriteAt(josephine, "jane.blog", removed_at));
  EXPECT_FALSE(jane->access->MayWriteAt(josephine, "jane.blog", removed_at + 1000));
  // A direct writer dropped by a new policy: the same rule.
  const uint64_t before_drop = s.clock_mark();
  ASSERT_THAT(SetPolicy(id, s, "jane.blog", {}, {GroupWho("writers")}, kT), IsOk());
  const uint64_t dropped_at = PolicyRecord(s, "jane.blog").version.hlc;
  EXPECT_FALSE(jane->access->MayWrite(mal, "jane.blog"));
  EXPECT_TRUE(jane->access->MayWriteAt(mal, "jane.blog", before_drop));
  EXPECT_FALSE(jane->access->MayWriteAt(mal, "jane.blog", dropped_at));
  // Someone never a writer: never, whatever the clock.
  std::unique_ptr<SigningKey> stranger = SigningKey::Generate();
  EXPECT_FALSE(jane->access->MayWriteAt(Principal{stranger->public_key(), false}, "jane.blog", 1));
  // Re-added: may write again; the removal is forgotten.
  ASSERT_THAT(AddToGroup(id, s, "writers", {UserMember(jo->identity->user())}, kT), IsOk());
  EXPECT_TRUE(jane->access->MayWrite(josephine, "jane.blog"));
  absl::StatusOr<std::vector<Group>> groups = ListGroups(id, s, "writers");
  ASSERT_THAT(groups, IsOk());
  EXPECT_THAT((*groups)[0].removed, SizeIs(0));
}

// Issue 10: MayWriteAt looked only at the removals of the groups a policy
// names. A writer removed from a nested group, or through the removal of a
// nested group, is judged by the clock of that removal as a direct member.
TEST_F(PolicyTest, WriteConcurrentWithARemovalFromANestedGroupIsDecidedByClock) {
  std::unique_ptr<Device> jane = MakeUser("jane");
  std::unique_ptr<Device> jo = MakeUser("josephine");
  std::unique_ptr<Device> mallory = MakeUser("mallory");
  Store& s = *jane->store;
  const Identity& id = *jane->identity;
  const Principal josephine{jo->identity->user(), false};
  const Principal mal{mallory->identity->user(), false};
  // writers contains group:editors, editors contains group:guests;
  // Josephine is an editor, Mallory a guest.
  ASSERT_THAT(CreateGroup(id, s, "writers", kT), IsOk());
  ASSERT_THAT(CreateGroup(id, s, "editors", kT), IsOk());
  ASSERT_THAT(CreateGroup(id, s, "guests", kT), IsOk());
  ASSERT_THAT(AddToGroup(id, s, "guests", {UserMember(mallory->identity->user())}, kT), IsOk());
  ASSERT_THAT(AddToGroup(id, s, "editors", {UserMember(jo->identity->user()), GroupMember("guests")},
                         kT),
              IsOk());
  ASSERT_THAT(AddToGroup(id, s, "writers", {GroupMember("editors")}, kT), IsOk());
  ASSERT_THAT(SetPolicy(id, s, "jane.blog", {}, {GroupWho("writers")}, kT), IsOk());
  EXPECT_TRUE(jane->access->MayWrite(josephine, "jane.blog"));
  EXPECT_TRUE(jane->access->MayWrite(mal, "jane.blog"));

  // Josephine removed from the nested group.
  const uint64_t while_editor = s.clock_mark();
  ASSERT_THAT(RemoveFromGroup(id, s, "editors", UserMember(jo->identity->user()), kT), IsOk());
  const uint64_t removed_at = (*s.Get(kGroupsKeyspace, GroupKey(id.user(), "editors")))->version.hlc;
  EXPECT_FALSE(jane->access->MayWrite(josephine, "jane.blog"));
  EXPECT_TRUE(jane->access->MayWriteAt(josephine, "jane.blog", while_editor));
  EXPECT_FALSE(jane->access->MayWriteAt(josephine, "jane.blog", removed_at));

  // The group Mallory is in removed from the nested group: she lost the
  // right at that removal's clock.
  const uint64_t while_guest = s.clock_mark();
  ASSERT_THAT(RemoveFromGroup(id, s, "editors", GroupMember("guests"), kT), IsOk());
  const uint64_t dropped_at = (*s.Get(kGroupsKeyspace, GroupKey(id.user(), "editors")))->version.hlc;
  EXPECT_FALSE(jane->access->MayWrite(mal, "jane.blog"));
  EXPECT_TRUE(jane->access->MayWriteAt(mal, "jane.blog", while_guest));
  EXPECT_FALSE(jane->access->MayWriteAt(mal, "jane.blog", dropped_at));
  // Josephine's earlier removal still holds as it did.
  EXPECT_TRUE(jane->access->MayWriteAt(josephine, "jane.blog", while_editor));
  EXPECT_FALSE(jane->access->MayWriteAt(josephine, "jane.blog", dropped_at));
}

// A member added to a group may now read the policies naming it (or a
// group containing it) and those groups' records, which its devices may
// have been served past: AddToGroup writes them again, so the next pull
// carries them (issue 10, a reader granted later). Others stay as they are.
TEST_F(PolicyTest, AddingAMemberWritesAgainThePoliciesAndGroupsItMayNowRead) {
  std::unique_ptr<Device> jane = MakeUser("jane");
  std::unique_ptr<Device> jo = MakeUser("josephine");
  Store& s = *jane->store;
  const Identity& id = *jane->identity;
  ASSERT_THAT(CreateGroup(id, s, "readers", kT), IsOk());
  ASSERT_THAT(CreateGroup(id, s, "friends", kT), IsOk());
  ASSERT_THAT(CreateGroup(id, s, "other", kT), IsOk());
  ASSERT_THAT(AddToGroup(id, s, "readers", {GroupMember("friends")}, kT), IsOk());
  ASSERT_THAT(SetPolicy(id, s, "jane.blog", {GroupWho("readers")}, {}, kT), IsOk());
  ASSERT_THAT(SetPolicy(id, s, "jane.other", {GroupWho("other")}, {}, kT), IsOk());
  const Version blog = PolicyRecord(s, "jane.blog").version;
  const Version other = PolicyRecord(s, "jane.other").version;
  const Version readers = (*s.Get(kGroupsKeyspace, GroupKey(id.user(), "readers")))->version;
  const Version other_group = (*s.Get(kGroupsKeyspace, GroupKey(id.user(), "other")))->version;
  ASSERT_THAT(AddToGroup(id, s, "friends", {UserMember(jo->identity->user())}, kT), IsOk());
  EXPECT_LT(blog, PolicyRecord(s, "jane.blog").version);
  EXPECT_LT(readers, (*s.Get(kGroupsKeyspace, GroupKey(id.user(), "readers")))->version);
  EXPECT_EQ(other, PolicyRecord(s, "jane.other").version);
  EXPECT_EQ(other_group, (*s.Get(kGroupsKeyspace, GroupKey(id.user(), "other")))->version);
  // Unchanged but for the version: the same readers.
  EXPECT_TRUE(jane->access->MayRead(Principal{jo->identity->user(), false}, "jane.blog"));
  EXPECT_FALSE(jane->access->MayRead(Principal{jo->identity->user(), false}, "jane.other"));
}

// The mode history a policy carries (README "Strong keyspaces"): its text
// form, its rules, its bytes, and that `policy set` keeps it.
Version V(uint64_t hlc) { return Version{hlc, 0x5354524f4e47ffffULL}; }

TEST_F(PolicyTest, ModeHistoryTextAndRules) {
  const std::vector<PolicyModeSwitch> two = {{true, V(10)}, {false, V(20)}};
  const std::string text = FormatPolicyModes(two);
  EXPECT_EQ(text, "strong@" + V(10).ToString() + ";lww@" + V(20).ToString());
  absl::StatusOr<std::vector<PolicyModeSwitch>> back = ParsePolicyModes(text, "modes");
  ASSERT_THAT(back, IsOk());
  EXPECT_EQ(*back, two);
  absl::StatusOr<std::vector<PolicyModeSwitch>> none = ParsePolicyModes("", "modes");
  ASSERT_THAT(none, IsOk());
  EXPECT_TRUE(none->empty());

  // Malformed text: each refused naming what is wrong.
  EXPECT_THAT(ParsePolicyModes("strong", "modes"),
              StatusIs(StatusCode::kInvalidArgument, "is not MODE@VERSION"));
  EXPECT_THAT(ParsePolicyModes("fast@" + V(1).ToString(), "modes"),
              StatusIs(StatusCode::kInvalidArgument, "has mode 'fast'; give strong or lww"));
  EXPECT_THAT(ParsePolicyModes("strong@yesterday", "modes"),
              StatusIs(StatusCode::kInvalidArgument, "mode switch 1's version"));
  EXPECT_THAT(ParsePolicyModes("strong@" + V(1).ToString() + ";", "modes"),
              StatusIs(StatusCode::kInvalidArgument, "mode switch 2 '' is not MODE@VERSION"));
  // The rules: first to strong, alternating, ascending, not 0, at most 64.
  EXPECT_THAT(ParsePolicyModes("lww@" + V(1).ToString(), "modes"),
              StatusIs(StatusCode::kInvalidArgument, "the first mode switch must be to strong"));
  EXPECT_THAT(ParsePolicyModes(FormatPolicyModes({{true, V(1)}, {true, V(2)}}), "modes"),
              StatusIs(StatusCode::kInvalidArgument, "switches alternate"));
  EXPECT_THAT(ParsePolicyModes(FormatPolicyModes({{true, V(2)}, {false, V(2)}}), "modes"),
              StatusIs(StatusCode::kInvalidArgument, "versions must ascend"));
  EXPECT_THAT(ValidatePolicyModes({{true, Version{}}}, "modes"),
              StatusIs(StatusCode::kInvalidArgument, "version 0"));
  std::vector<PolicyModeSwitch> many;
  for (size_t i = 0; i <= kMaxPolicyModeSwitches; ++i) many.push_back({i % 2 == 0, V(i + 1)});
  EXPECT_THAT(ValidatePolicyModes(many, "modes"),
              StatusIs(StatusCode::kInvalidArgument, "65 mode switches; the limit is 64"));
  EXPECT_THAT(ParsePolicyModes(FormatPolicyModes(many), "modes"),
              StatusIs(StatusCode::kInvalidArgument, "the limit is 64"));
  many.pop_back();
  absl::StatusOr<std::vector<PolicyModeSwitch>> limit = ParsePolicyModes(FormatPolicyModes(many), "modes");
  ASSERT_THAT(limit, IsOk());
  EXPECT_THAT(*limit, SizeIs(64));
}

TEST_F(PolicyTest, ModeHistoryInThePolicyRecord) {
  std::unique_ptr<SigningKey> jane = SigningKey::Generate();
  Policy p;
  p.owner = jane->public_key();
  p.readers = {PublicWho()};
  p.time_ms = kT;
  const std::string without = EncodePolicyRecord(*jane, "jane.blog", p);
  p.modes = {{true, V(10)}, {false, V(20)}, {true, V(30)}};
  const std::string with = EncodePolicyRecord(*jane, "jane.blog", p);
  // A policy without switches keeps the bytes older peerkv writes and reads.
  EXPECT_EQ(with.size(), without.size() + 1 + 3 * 17);
  absl::StatusOr<Policy> back = DecodePolicyRecord("jane.blog", with);
  ASSERT_THAT(back, IsOk());
  EXPECT_EQ(back->modes, p.modes);
  EXPECT_EQ(back->readers, p.readers);
  absl::StatusOr<Policy> old = DecodePolicyRecord("jane.blog", without);
  ASSERT_THAT(old, IsOk());
  EXPECT_TRUE(old->modes.empty());

  // A signed body whose history breaks the rules is refused as malformed.
  // (Encode REQUIRES a valid policy, so the bad bytes are made by hand:
  // the same body, a switch's kind changed, signed again.)
  auto resigned = [&](std::string_view value, size_t body_offset, char byte) {
    const uint32_t len = (static_cast<uint8_t>(value[32]) << 24) |
                         (static_cast<uint8_t>(value[33]) << 16) |
                         (static_cast<uint8_t>(value[34]) << 8) | static_cast<uint8_t>(value[35]);
    std::string body(value.substr(36, len));
    body[body_offset] = byte;
    std::string message("peerkv policy v1\0", 17);
    PutU32(message, 9);
    message.append("jane.blog");
    message.append(body);
    std::string out(value.substr(0, 36));
    out.append(body);
    out.append(jane->Sign(message));
    return std::make_pair(out, body.size());  // .second: for the reader
  };
  const size_t body_size = with.size() - 36 - kSignatureBytes;
  const size_t last_kind = body_size - 17;
  EXPECT_THAT(DecodePolicyRecord("jane.blog", resigned(with, last_kind, 1).first),
              StatusIs(StatusCode::kInvalidArgument, "switches alternate"));
  EXPECT_THAT(DecodePolicyRecord("jane.blog", resigned(with, last_kind, 7).first),
              StatusIs(StatusCode::kInvalidArgument, "kinds are 1 lww, 2 strong"));
  const size_t count = body_size - 3 * 17 - 1;
  EXPECT_THAT(DecodePolicyRecord("jane.blog", resigned(with, count, 0).first),
              StatusIs(StatusCode::kInvalidArgument, "1 to 64"));
  // Truncated inside the history.
  EXPECT_THAT(DecodePolicyRecord("jane.blog", with.substr(0, with.size() - 1)),
              StatusIs(StatusCode::kInvalidArgument));
}

TEST_F(PolicyTest, SetPolicyModesAndPolicySetKeepsThem) {
  std::unique_ptr<Device> jane = MakeUser("jane");
  std::unique_ptr<Device> jo = MakeUser("josephine");
  const Identity& id = *jane->identity;
  const std::vector<PolicyModeSwitch> on = {{true, V(10)}};
  // No policy: nothing to carry the mode.
  EXPECT_THAT(SetPolicyModes(id, *jane->store, "jane.blog", on, kT),
              StatusIs(StatusCode::kNotFound, "has no policy"));
  ASSERT_THAT(SetPolicy(id, *jane->store, "jane.blog", {PublicWho()}, {}, kT), IsOk());
  ASSERT_THAT(SetPolicyModes(id, *jane->store, "jane.blog", on, kT + 1), IsOk());
  EXPECT_EQ(GetPolicy(*jane->store, "jane.blog")->modes, on);
  EXPECT_EQ(jane->access->PolicyOf("jane.blog")->modes, on);
  EXPECT_EQ(jane->access->ModesOf("jane.blog"), on);
  EXPECT_TRUE(jane->access->ModesOf("jane.other").empty());
  EXPECT_THAT(jane->access->PolicyModes(), SizeIs(1));
  // A bad history is refused and nothing written.
  EXPECT_THAT(SetPolicyModes(id, *jane->store, "jane.blog", {{false, V(5)}}, kT),
              StatusIs(StatusCode::kInvalidArgument, "the first mode switch must be to strong"));
  EXPECT_EQ(GetPolicy(*jane->store, "jane.blog")->modes, on);
  // `policy set` replaces readers and writers, not the mode.
  ASSERT_THAT(SetPolicy(id, *jane->store, "jane.blog", {}, {PublicWho()}, kT + 2), IsOk());
  EXPECT_EQ(GetPolicy(*jane->store, "jane.blog")->modes, on);
  // Josephine holds Jane's policy: she may not rewrite its mode.
  Sync(*jane->store, *jo->store);
  const Record before = PolicyRecord(*jo->store, "jane.blog");
  EXPECT_THAT(SetPolicyModes(*jo->identity, *jo->store, "jane.blog", {{true, V(10)}, {false, V(11)}}, kT),
              StatusIs(StatusCode::kPermissionDenied,
                       "is owned by user " + UserId(id.user())));
  EXPECT_EQ(PolicyRecord(*jo->store, "jane.blog"), before);
  EXPECT_EQ(jo->access->PolicyOf("jane.blog")->modes, on);
}

TEST_F(PolicyTest, NeedsUserKey) {
  std::unique_ptr<Device> jane = MakeUser("jane");
  absl::StatusOr<std::unique_ptr<Identity>> joining =
      Identity::CreateJoining(dir_.Sub("phone"), jane->identity->user());
  ASSERT_THAT(joining, IsOk());
  EXPECT_THAT(SetPolicy(**joining, *jane->store, "jane.blog", {}, {}, kT),
              StatusIs(StatusCode::kFailedPrecondition, "only the owner's devices"));
  EXPECT_THAT(CreateGroup(**joining, *jane->store, "blog", kT),
              StatusIs(StatusCode::kFailedPrecondition, "only the owner's devices"));
}

}  // namespace
}  // namespace peerkv::auth
