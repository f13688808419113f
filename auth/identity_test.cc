// auth/identity_test.cc: a data directory's identity, pairing a second
// device through replicated records, removal, friends, and the check that
// keeps forged records out of the reserved keyspaces.
#include "auth/identity.h"

#include <sys/stat.h>

#include "auth/ids.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/temp_dir.h"

namespace peerkv::auth {
namespace {

using absl::StatusCode;
using ::testing::SizeIs;

constexpr int64_t kT = 1'764'061'200'000;

class IdentityTest : public ::testing::Test {
 protected:
  std::unique_ptr<Store> OpenStore(const std::string& dir, const PublicKey& user) {
    StoreOptions options;
    options.dir = dir;
    options.sync = false;
    options.scrub_at_open = false;
    options.reserved_check = ReservedCheck(user);
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(std::move(options));
    EXPECT_THAT(store, IsOk());
    return store.ok() ? std::move(*store) : nullptr;
  }
  // Copies every reserved record of `from` into `to` by the normal merge,
  // as replication would.
  MergeResult Sync(Store& from, Store& to) {
    std::vector<Record> batch;
    for (const char* ks : {kDevicesKeyspace, kFriendsKeyspace}) {
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
  testing::TempDir dir_;
};

TEST_F(IdentityTest, CreateUserThenLoad) {
  const std::string data = dir_.Sub("phone");
  EXPECT_THAT(Identity::Load(data), StatusIs(StatusCode::kNotFound, "is not initialised"));
  absl::StatusOr<std::unique_ptr<Identity>> made = Identity::CreateUser(data, "jane");
  ASSERT_THAT(made, IsOk());
  EXPECT_TRUE((*made)->holds_user_key());
  EXPECT_EQ((*made)->user_name(), "jane");
  struct stat st;
  ASSERT_EQ(::stat(Identity::KeysDir(data).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700);
  for (const char* f : {"device.key", "user.key", "user"}) {
    ASSERT_EQ(::stat((Identity::KeysDir(data) + "/" + f).c_str(), &st), 0) << f;
    EXPECT_EQ(st.st_mode & 0777, 0600) << f;
  }
  absl::StatusOr<std::unique_ptr<Identity>> loaded = Identity::Load(data);
  ASSERT_THAT(loaded, IsOk());
  EXPECT_EQ((*loaded)->device_key().public_key(), (*made)->device_key().public_key());
  EXPECT_EQ((*loaded)->user(), (*made)->user());
  EXPECT_EQ((*loaded)->user_name(), "jane");
  EXPECT_TRUE((*loaded)->holds_user_key());
  EXPECT_THAT(Identity::CreateUser(data, "jane"),
              StatusIs(StatusCode::kAlreadyExists, "initialised already"));
  EXPECT_THAT(Identity::CreateJoining(data, (*made)->user()),
              StatusIs(StatusCode::kAlreadyExists));
  // Parents are made as the store would.
  EXPECT_THAT(Identity::CreateJoining(dir_.Sub("a/b/c"), (*made)->user()), IsOk());
  EXPECT_THAT(Identity::CreateUser(dir_.Sub("x"), "bad name"),
              StatusIs(StatusCode::kInvalidArgument, "user name"));
}

TEST_F(IdentityTest, ABadUserFileOrKeyFileIsRefusedNamingIt) {
  const std::string data = dir_.Sub("phone");
  ASSERT_THAT(Identity::CreateUser(data, "jane"), IsOk());
  const std::string device_key = Identity::KeysDir(data) + "/device.key";
  ASSERT_EQ(::chmod(device_key.c_str(), 0640), 0);
  EXPECT_THAT(Identity::Load(data), StatusIs(StatusCode::kFailedPrecondition, device_key));
  ASSERT_EQ(::chmod(device_key.c_str(), 0600), 0);
  ASSERT_EQ(::truncate(device_key.c_str(), 10), 0);
  EXPECT_THAT(Identity::Load(data), StatusIs(StatusCode::kDataLoss, device_key + " is truncated"));
}

TEST_F(IdentityTest, PairingASecondDeviceThroughReplicatedRecords) {
  const std::string phone_dir = dir_.Sub("phone");
  const std::string tablet_dir = dir_.Sub("tablet");
  std::unique_ptr<Identity> phone = *Identity::CreateUser(phone_dir, "jane");
  std::unique_ptr<Store> phone_store = OpenStore(phone_dir, phone->user());
  ASSERT_THAT(phone->AddDevice(*phone_store, phone->device_key().public_key(), "phone", kT),
              IsOk());

  std::unique_ptr<Identity> tablet = *Identity::CreateJoining(tablet_dir, phone->user());
  EXPECT_FALSE(tablet->holds_user_key());
  EXPECT_EQ(tablet->user_name(), "");
  std::unique_ptr<Store> tablet_store = OpenStore(tablet_dir, tablet->user());
  {
    absl::StatusOr<bool> joined = tablet->CompleteJoin(*tablet_store);
    ASSERT_THAT(joined, IsOk());
    EXPECT_FALSE(*joined);
  }
  EXPECT_THAT(tablet->AddFriend(*tablet_store, SigningKey::Generate()->public_key(), "bob", kT),
              StatusIs(StatusCode::kFailedPrecondition, "not yet added"));

  // The phone adds the tablet; the record reaches the tablet by merge.
  const PublicKey tablet_key = tablet->device_key().public_key();
  ASSERT_THAT(phone->AddDevice(*phone_store, tablet_key, "tablet", kT + 1), IsOk());
  EXPECT_THAT(phone->AddDevice(*phone_store, tablet_key, "tablet", kT + 2),
              StatusIs(StatusCode::kAlreadyExists, "added already"));
  MergeResult merged = Sync(*phone_store, *tablet_store);
  EXPECT_EQ(merged.won, 2u);
  EXPECT_THAT(merged.refused, SizeIs(0));
  absl::StatusOr<bool> joined = tablet->CompleteJoin(*tablet_store);
  ASSERT_THAT(joined, IsOk());
  EXPECT_TRUE(*joined);
  EXPECT_TRUE(tablet->holds_user_key());
  EXPECT_EQ(tablet->user_name(), "jane");

  // After a restart it still holds the user key, and can add devices too.
  tablet.reset();
  tablet = *Identity::Load(tablet_dir);
  EXPECT_TRUE(tablet->holds_user_key());
  EXPECT_EQ(tablet->user_name(), "jane");
  const PublicKey pc = SigningKey::Generate()->public_key();
  ASSERT_THAT(tablet->AddDevice(*tablet_store, pc, "pc", kT + 3), IsOk());

  // The tablet removes the phone... no: it removes the pc; the removal wins.
  ASSERT_THAT(tablet->RemoveDevice(*tablet_store, pc, kT + 4), IsOk());
  EXPECT_THAT(tablet->RemoveDevice(*tablet_store, pc, kT + 5),
              StatusIs(StatusCode::kAlreadyExists));
  EXPECT_THAT(tablet->AddDevice(*tablet_store, pc, "pc", kT + 6),
              StatusIs(StatusCode::kFailedPrecondition, "was removed"));
  EXPECT_THAT(tablet->RemoveDevice(*tablet_store, tablet_key, kT + 6),
              StatusIs(StatusCode::kFailedPrecondition, "this device"));
  Sync(*tablet_store, *phone_store);
  absl::StatusOr<std::vector<DeviceEntry>> devices = phone->Devices(*phone_store);
  ASSERT_THAT(devices, IsOk());
  ASSERT_THAT(*devices, SizeIs(3));
  int removed = 0;
  for (const DeviceEntry& d : *devices) {
    if (d.device == pc) {
      EXPECT_EQ(d.name, "pc");
      EXPECT_EQ(d.removed_ms, kT + 4);
      ++removed;
    } else {
      EXPECT_FALSE(d.removed_ms.has_value());
    }
  }
  EXPECT_EQ(removed, 1);
}

TEST_F(IdentityTest, RenewalExtendsAndTravelsLikeTheAdd) {
  std::unique_ptr<Identity> phone = *Identity::CreateUser(dir_.Sub("phone"), "jane");
  std::unique_ptr<Store> phone_store = OpenStore(dir_.Sub("phone"), phone->user());
  std::unique_ptr<Identity> tablet = *Identity::CreateJoining(dir_.Sub("tablet"), phone->user());
  std::unique_ptr<Store> tablet_store = OpenStore(dir_.Sub("tablet"), tablet->user());
  const PublicKey tablet_key = tablet->device_key().public_key();
  constexpr int64_t kHour = 3'600'000;
  EXPECT_THAT(phone->AddDevice(*phone_store, tablet_key, "tablet", kT, 59'999),
              StatusIs(StatusCode::kInvalidArgument, "must be 60000ms"));
  ASSERT_THAT(phone->AddDevice(*phone_store, tablet_key, "tablet", kT, 3 * kHour), IsOk());
  auto entry = [&](Identity& id, Store& store) {
    absl::StatusOr<std::vector<DeviceEntry>> devices = id.Devices(store);
    EXPECT_THAT(devices, IsOk());
    for (const DeviceEntry& d : *devices) {
      if (d.device == tablet_key) return d;
    }
    return DeviceEntry{};
  };
  EXPECT_EQ(entry(*phone, *phone_store).expires_ms, kT + 3 * kHour);
  EXPECT_EQ(entry(*phone, *phone_store).valid_for_ms, 3 * kHour);

  // Not due in the first two thirds; due in the last; not once expired.
  EXPECT_FALSE(RenewalDue(entry(*phone, *phone_store), kT + 2 * kHour));
  EXPECT_TRUE(RenewalDue(entry(*phone, *phone_store), kT + 2 * kHour + 1));
  absl::StatusOr<std::vector<DeviceCertificate>> renewed =
      phone->RenewDue(*phone_store, kT + kHour);
  ASSERT_THAT(renewed, IsOk());
  EXPECT_THAT(*renewed, SizeIs(0));
  renewed = phone->RenewDue(*phone_store, kT + 3 * kHour + kExpiryToleranceMs + 1);
  ASSERT_THAT(renewed, IsOk());
  EXPECT_THAT(*renewed, SizeIs(0)) << "an expired certificate is left to device renew";
  renewed = phone->RenewDue(*phone_store, kT + 2 * kHour + 10);
  ASSERT_THAT(renewed, IsOk());
  ASSERT_THAT(*renewed, SizeIs(1));
  EXPECT_EQ((*renewed)[0].device, tablet_key);
  EXPECT_EQ((*renewed)[0].not_after_ms, kT + 5 * kHour + 10);  // the same 3 hours, from now
  EXPECT_EQ(entry(*phone, *phone_store).expires_ms, kT + 5 * kHour + 10);
  EXPECT_EQ(entry(*phone, *phone_store).name, "tablet");

  // The renewed record replicates like the add, and still carries the
  // sealed user key: the tablet completes its join from it.
  MergeResult merged = Sync(*phone_store, *tablet_store);
  EXPECT_THAT(merged.refused, SizeIs(0));
  EXPECT_EQ(entry(*tablet, *tablet_store).expires_ms, kT + 5 * kHour + 10);
  absl::StatusOr<bool> joined = tablet->CompleteJoin(*tablet_store);
  ASSERT_THAT(joined, IsOk());
  EXPECT_TRUE(*joined);

  // An explicit renewal brings an expired device back, for as long as asked.
  const int64_t late = kT + 100 * kHour;
  absl::StatusOr<DeviceCertificate> again =
      tablet->RenewDevice(*tablet_store, tablet_key, late, 30 * kDayMs);
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(again->ExpiresMs(), late + 30 * kDayMs);
  EXPECT_THAT(CheckNotExpired(*again, late), IsOk());
  Sync(*tablet_store, *phone_store);
  EXPECT_EQ(entry(*phone, *phone_store).expires_ms, late + 30 * kDayMs);

  // Not listed, removed, or without the user key: refused, naming why.
  const PublicKey stranger = SigningKey::Generate()->public_key();
  EXPECT_THAT(phone->RenewDevice(*phone_store, stranger, late),
              StatusIs(StatusCode::kNotFound, "is not in the device list"));
  ASSERT_THAT(phone->AddDevice(*phone_store, stranger, "pc", kT), IsOk());
  ASSERT_THAT(phone->RemoveDevice(*phone_store, stranger, kT + 1), IsOk());
  EXPECT_THAT(phone->RenewDevice(*phone_store, stranger, late),
              StatusIs(StatusCode::kFailedPrecondition, "never renewed"));
  EXPECT_THAT(phone->RenewDevice(*phone_store, tablet_key, late, kMaxValidityMs + 1),
              StatusIs(StatusCode::kInvalidArgument, "validity"));
  std::unique_ptr<Identity> waiting = *Identity::CreateJoining(dir_.Sub("w"), phone->user());
  EXPECT_THAT(waiting->RenewDevice(*phone_store, tablet_key, late),
              StatusIs(StatusCode::kFailedPrecondition, "not yet added"));
}

TEST_F(IdentityTest, AStoreWithVersionOneCertificatesKeepsThemAndRenewsThem) {
  // A device record as an older peerkv wrote it: a version-1 certificate,
  // without expiry.
  std::unique_ptr<Identity> phone = *Identity::CreateUser(dir_.Sub("phone"), "jane");
  std::unique_ptr<Store> phone_store = OpenStore(dir_.Sub("phone"), phone->user());
  const PublicKey pc = SigningKey::Generate()->public_key();
  const DeviceCertificate old = IssueLegacyDeviceCertificate(*phone->user_key(), pc, "pc", kT);
  std::string payload(1, '\x01');
  PutU32(payload, static_cast<uint32_t>(old.Encode().size()));
  payload += old.Encode();
  payload += Cat({std::string(1, 4), "jane"});
  PutU32(payload, 0);
  const std::string key = "device/" + DeviceId(pc);
  Record record;
  record.keyspace = kDevicesKeyspace;
  record.key = key;
  record.value = EncodeSignedRecord(*phone->user_key(), kDevicesKeyspace, key, payload);
  record.version = Version{1, 1};
  absl::StatusOr<MergeResult> merged = phone_store->Merge({record});
  ASSERT_THAT(merged, IsOk());
  ASSERT_THAT(merged->refused, SizeIs(0));
  absl::StatusOr<std::vector<DeviceEntry>> devices = phone->Devices(*phone_store);
  ASSERT_THAT(devices, IsOk());
  ASSERT_THAT(*devices, SizeIs(1));
  EXPECT_TRUE((*devices)[0].legacy);
  EXPECT_EQ((*devices)[0].expires_ms, kT + kDefaultValidityMs);
  // Due at once: the first renewal gives it an expiry of its own.
  absl::StatusOr<std::vector<DeviceCertificate>> renewed = phone->RenewDue(*phone_store, kT + 10);
  ASSERT_THAT(renewed, IsOk());
  ASSERT_THAT(*renewed, SizeIs(1));
  EXPECT_FALSE((*renewed)[0].legacy());
  EXPECT_EQ((*renewed)[0].ExpiresMs(), kT + 10 + kDefaultValidityMs);
  devices = phone->Devices(*phone_store);
  ASSERT_THAT(devices, IsOk());
  EXPECT_FALSE((*devices)[0].legacy);
}

TEST_F(IdentityTest, ARecordForAnotherDeviceDoesNotCompleteTheJoin) {
  std::unique_ptr<Identity> phone = *Identity::CreateUser(dir_.Sub("phone"), "jane");
  std::unique_ptr<Store> phone_store = OpenStore(dir_.Sub("phone"), phone->user());
  std::unique_ptr<Identity> tablet = *Identity::CreateJoining(dir_.Sub("tablet"), phone->user());
  std::unique_ptr<Store> tablet_store = OpenStore(dir_.Sub("tablet"), tablet->user());
  ASSERT_THAT(phone->AddDevice(*phone_store, SigningKey::Generate()->public_key(), "other", kT),
              IsOk());
  Sync(*phone_store, *tablet_store);
  {
    absl::StatusOr<bool> joined = tablet->CompleteJoin(*tablet_store);
    ASSERT_THAT(joined, IsOk());
    EXPECT_FALSE(*joined);
  }
  EXPECT_FALSE(tablet->holds_user_key());
}

TEST_F(IdentityTest, ForgedRecordsAreRefusedByTheMerge) {
  std::unique_ptr<Identity> jane = *Identity::CreateUser(dir_.Sub("jane"), "jane");
  std::unique_ptr<Identity> mallory = *Identity::CreateUser(dir_.Sub("mallory"), "mallory");
  std::unique_ptr<Store> jane_store = OpenStore(dir_.Sub("jane"), jane->user());
  std::unique_ptr<Store> mallory_store = OpenStore(dir_.Sub("mallory"), mallory->user());
  // Mallory's own lists are valid in her store, and refused by Jane's.
  ASSERT_THAT(mallory->AddDevice(*mallory_store, SigningKey::Generate()->public_key(), "evil", kT),
              IsOk());
  ASSERT_THAT(mallory->AddFriend(*mallory_store, jane->user(), "jane", kT), IsOk());
  MergeResult merged = Sync(*mallory_store, *jane_store);
  EXPECT_EQ(merged.won, 0u);
  ASSERT_THAT(merged.refused, SizeIs(2));
  EXPECT_EQ(merged.refused[0].reason.code(), StatusCode::kPermissionDenied);
  EXPECT_THAT(merged.refused[0].reason.message(), ::testing::HasSubstr("not by this store's user"));
  absl::StatusOr<std::vector<DeviceEntry>> devices = jane->Devices(*jane_store);
  ASSERT_THAT(devices, IsOk());
  EXPECT_THAT(*devices, SizeIs(0));

  // A tombstone, an unknown key or a record moved to another key: refused.
  auto check = ReservedCheck(jane->user());
  EXPECT_THAT(check(kDevicesKeyspace, "device/x", "", true),
              StatusIs(StatusCode::kPermissionDenied, "never deleted"));
  EXPECT_THAT(check("peerkv.other", "k", "v", false),
              StatusIs(StatusCode::kPermissionDenied, "unknown"));
  const PublicKey a = SigningKey::Generate()->public_key();
  ASSERT_THAT(jane->AddDevice(*jane_store, a, "a", kT), IsOk());
  absl::StatusOr<std::optional<Record>> rec =
      jane_store->Get(kDevicesKeyspace, "device/" + DeviceId(a));
  ASSERT_THAT(rec, IsOk());
  ASSERT_TRUE(rec->has_value());
  const std::string other = "device/" + DeviceId(SigningKey::Generate()->public_key());
  EXPECT_THAT(check(kDevicesKeyspace, other, (*rec)->value, false),
              StatusIs(StatusCode::kPermissionDenied, "does not verify"));
  EXPECT_THAT(check(kDevicesKeyspace, "device/" + DeviceId(a), (*rec)->value, false), IsOk());
  std::string tampered = (*rec)->value;
  tampered[40] ^= 1;
  EXPECT_THAT(check(kDevicesKeyspace, "device/" + DeviceId(a), tampered, false),
              StatusIs(StatusCode::kPermissionDenied));
}

TEST_F(IdentityTest, Friends) {
  std::unique_ptr<Identity> jane = *Identity::CreateUser(dir_.Sub("jane"), "jane");
  std::unique_ptr<Store> store = OpenStore(dir_.Sub("jane"), jane->user());
  const PublicKey bob = SigningKey::Generate()->public_key();
  EXPECT_THAT(jane->AddFriend(*store, jane->user(), "me", kT),
              StatusIs(StatusCode::kInvalidArgument, "your own user id"));
  EXPECT_THAT(jane->AddFriend(*store, bob, "", kT),
              StatusIs(StatusCode::kInvalidArgument, "friend's name"));
  EXPECT_THAT(jane->RemoveFriend(*store, bob, kT),
              StatusIs(StatusCode::kNotFound, "is not a friend"));
  ASSERT_THAT(jane->AddFriend(*store, bob, "bob", kT), IsOk());
  absl::StatusOr<std::vector<FriendEntry>> friends = jane->Friends(*store);
  ASSERT_THAT(friends, IsOk());
  ASSERT_THAT(*friends, SizeIs(1));
  EXPECT_EQ((*friends)[0].user, bob);
  EXPECT_EQ((*friends)[0].name, "bob");
  ASSERT_THAT(jane->RemoveFriend(*store, bob, kT + 1), IsOk());
  friends = jane->Friends(*store);
  ASSERT_THAT(friends, IsOk());
  EXPECT_THAT(*friends, SizeIs(0));
  // A friend removed may be added again.
  ASSERT_THAT(jane->AddFriend(*store, bob, "bobby", kT + 2), IsOk());
  friends = jane->Friends(*store);
  ASSERT_THAT(*friends, SizeIs(1));
  EXPECT_EQ((*friends)[0].name, "bobby");
}

}  // namespace
}  // namespace peerkv::auth
