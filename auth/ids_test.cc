// auth/ids_test.cc: device and user ids: round trip, typing slack, and
// every kind of typo refused naming the id.
#include "auth/ids.h"

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace peerkv::auth {
namespace {

using absl::StatusCode;

TEST(IdsTest, RoundTrip) {
  for (int i = 0; i < 100; ++i) {
    const PublicKey key = SigningKey::Generate()->public_key();
    const std::string id = DeviceId(key);
    ASSERT_EQ(id.size(), kIdChars);
    absl::StatusOr<PublicKey> parsed = ParseDeviceId(id);
    ASSERT_THAT(parsed, IsOk()) << id;
    EXPECT_EQ(*parsed, key);
    absl::StatusOr<PublicKey> user = ParseUserId(UserId(key));
    ASSERT_THAT(user, IsOk());
    EXPECT_EQ(*user, key);
  }
}

TEST(IdsTest, LayoutIsEightGroupsOfSeven) {
  PublicKey zero;
  EXPECT_THAT(DeviceId(zero), ::testing::MatchesRegex("([A-Z2-7]{7}-){7}[A-Z2-7]{7}"));
  EXPECT_EQ(DeviceId(zero).substr(0, 13), "AAAAAAA-AAAAA");
}

TEST(IdsTest, CaseDashesAndSpacesDoNotMatter) {
  const PublicKey key = SigningKey::Generate()->public_key();
  std::string typed;
  for (char c : DeviceId(key)) {
    if (c == '-') {
      typed.push_back(' ');
    } else {
      typed.push_back(static_cast<char>(std::tolower(c)));
    }
  }
  absl::StatusOr<PublicKey> parsed = ParseDeviceId(typed);
  ASSERT_THAT(parsed, IsOk());
  EXPECT_EQ(*parsed, key);
}

TEST(IdsTest, EveryOneCharacterTypoFailsTheCheck) {
  const PublicKey key = SigningKey::Generate()->public_key();
  const std::string id = DeviceId(key);
  for (size_t i = 0; i < id.size(); ++i) {
    if (id[i] == '-') continue;
    std::string typo = id;
    typo[i] = id[i] == 'A' ? 'B' : 'A';
    EXPECT_THAT(ParseDeviceId(typo, "DEVICE_ID"),
                StatusIs(StatusCode::kInvalidArgument, "DEVICE_ID '" + typo + "' fails its check"))
        << i;
  }
}

TEST(IdsTest, SwappedNeighboursFailTheCheck) {
  // A fixed key, so the test is the same every run.
  const std::string id = DeviceId((*SigningKey::FromSeed(std::string(32, '\x01')))->public_key());
  int caught = 0, tried = 0;
  for (size_t i = 0; i + 1 < id.size(); ++i) {
    if (id[i] == '-' || id[i + 1] == '-' || id[i] == id[i + 1]) continue;
    std::string typo = id;
    std::swap(typo[i], typo[i + 1]);
    ++tried;
    if (!ParseDeviceId(typo).ok()) ++caught;
  }
  // Luhn mod N catches transpositions of neighbours but for one pair of
  // values (A and 7 here); this id has none.
  EXPECT_EQ(caught, tried);
}

TEST(IdsTest, KindsAreToldApart) {
  const PublicKey key = SigningKey::Generate()->public_key();
  EXPECT_THAT(ParseUserId(DeviceId(key), "USER_ID"),
              StatusIs(StatusCode::kInvalidArgument, "is a device id, not a user id"));
  EXPECT_THAT(ParseDeviceId(UserId(key), "DEVICE_ID"),
              StatusIs(StatusCode::kInvalidArgument, "is a user id, not a device id"));
}

TEST(IdsTest, BadCharactersAndLengthsAreRefused) {
  const std::string id = DeviceId(SigningKey::Generate()->public_key());
  EXPECT_THAT(ParseDeviceId("", "DEVICE_ID"),
              StatusIs(StatusCode::kInvalidArgument, "DEVICE_ID '' has 0 characters"));
  EXPECT_THAT(ParseDeviceId(id.substr(0, 62)),
              StatusIs(StatusCode::kInvalidArgument, "has 55 characters"));
  EXPECT_THAT(ParseDeviceId(id + "A"), StatusIs(StatusCode::kInvalidArgument, "more than 56"));
  std::string one = id;
  one[3] = '1';  // not in base32
  EXPECT_THAT(ParseDeviceId(one), StatusIs(StatusCode::kInvalidArgument, "character '1' at position 4"));
  EXPECT_THAT(ParseDeviceId(std::string(1000, 'A')),
              StatusIs(StatusCode::kInvalidArgument, "..."));
}

}  // namespace
}  // namespace peerkv::auth
