// rpc/peer_auth_test.cc: Authorize and certificate expiry: an expired
// certificate shown on a link, or an expired entry of the device list, is
// refused naming the device and the expiry; a valid one is accepted; a
// device showing a valid certificate of the user passes whatever its listed
// one says (it holds the user key and renews that one itself).
#include "rpc/peer_auth.h"

#include <vector>

#include "auth/ids.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace peerkv::rpc {
namespace {

using absl::StatusCode;

constexpr int64_t kT = 1'764'061'200'000;  // 2025-11-25T09:00:00Z
constexpr int64_t kHour = 3'600'000;

struct Fixture {
  std::unique_ptr<auth::SigningKey> user = auth::SigningKey::Generate();
  std::unique_ptr<auth::SigningKey> friend_user = auth::SigningKey::Generate();
  auth::PublicKey device = auth::SigningKey::Generate()->public_key();

  TrustView View(int64_t now, std::optional<int64_t> listed_valid_for) {
    TrustView v;
    v.user = user->public_key();
    v.friends.push_back(auth::FriendEntry{friend_user->public_key(), "fred", kT});
    v.now_ms = now;
    if (listed_valid_for.has_value()) {
      auth::DeviceEntry e;
      e.device = device;
      e.name = "tablet";
      e.added_ms = kT;
      e.expires_ms = kT + *listed_valid_for;
      e.valid_for_ms = *listed_valid_for;
      v.devices.push_back(e);
    }
    return v;
  }
  PeerCredentials Showing(const auth::SigningKey* signer, int64_t valid_for) {
    PeerCredentials c{device, std::nullopt};
    if (signer != nullptr) {
      c.certificate = auth::IssueDeviceCertificate(*signer, device, "tablet", kT, valid_for);
    }
    return c;
  }
};

TEST(AuthorizeTest, AListedDeviceIsAcceptedUntilItsCertificateExpires) {
  Fixture f;
  const int64_t end = kT + kHour;
  EXPECT_THAT(Authorize(f.View(kT, kHour), f.Showing(nullptr, 0)), IsOk());
  EXPECT_THAT(Authorize(f.View(end + auth::kExpiryToleranceMs, kHour), f.Showing(nullptr, 0)),
              IsOk());
  const std::string id = auth::DeviceId(f.device);
  EXPECT_THAT(
      Authorize(f.View(end + auth::kExpiryToleranceMs + 1, kHour), f.Showing(nullptr, 0)),
      StatusIs(StatusCode::kPermissionDenied,
               "refused device " + id +
                   " (tablet): its device certificate expired at 2025-11-25T10:00:00Z"));
  EXPECT_THAT(
      Authorize(f.View(end + auth::kExpiryToleranceMs + 1, kHour), f.Showing(nullptr, 0)),
      StatusIs(StatusCode::kPermissionDenied, "peerkv device renew " + id));
}

TEST(AuthorizeTest, AnExpiredCertificateShownIsRefusedAValidOneAccepted) {
  Fixture f;
  const int64_t late = kT + kHour + auth::kExpiryToleranceMs + 1;
  // Own user's certificate, not listed: accepted while valid.
  absl::StatusOr<AuthenticatedPeer> ok = Authorize(f.View(kT, {}), f.Showing(f.user.get(), kHour));
  ASSERT_THAT(ok, IsOk());
  EXPECT_EQ(ok->role, PeerRole::kOwnDevice);
  EXPECT_THAT(Authorize(f.View(late, {}), f.Showing(f.user.get(), kHour)),
              StatusIs(StatusCode::kPermissionDenied, "expired at 2025-11-25T10:00:00Z"));
  // Listed with a valid entry, showing an expired certificate: refused too.
  EXPECT_THAT(Authorize(f.View(late, auth::kDefaultValidityMs), f.Showing(f.user.get(), kHour)),
              StatusIs(StatusCode::kPermissionDenied, "expired"));
  // A friend's device likewise, its renewal left to the friend's user.
  ok = Authorize(f.View(kT, {}), f.Showing(f.friend_user.get(), kHour));
  ASSERT_THAT(ok, IsOk());
  EXPECT_EQ(ok->role, PeerRole::kFriend);
  EXPECT_THAT(Authorize(f.View(late, {}), f.Showing(f.friend_user.get(), kHour)),
              StatusIs(StatusCode::kPermissionDenied,
                       "on a device of user " + auth::UserId(f.friend_user->public_key())));
  // A stranger's expired certificate: refused as a stranger's, not as expired.
  std::unique_ptr<auth::SigningKey> stranger = auth::SigningKey::Generate();
  EXPECT_THAT(Authorize(f.View(late, {}), f.Showing(stranger.get(), kHour)),
              StatusIs(StatusCode::kPermissionDenied, "not a device of user"));
}

TEST(AuthorizeTest, AValidCertificateOfTheUserOutranksAnExpiredListedOne) {
  Fixture f;
  const int64_t late = kT + 2 * kHour;
  // Its listed certificate expired, but it shows a fresh one of the user:
  // it holds the user key (and renews its listed one when it serves).
  PeerCredentials fresh{f.device, auth::IssueDeviceCertificate(*f.user, f.device, "tablet",
                                                               late - 10, kHour)};
  EXPECT_THAT(Authorize(f.View(late, kHour), fresh), IsOk());
  // A removal still wins over everything.
  TrustView removed = f.View(late, kHour);
  removed.devices[0].removed_ms = kT + 1;
  EXPECT_THAT(Authorize(removed, fresh), StatusIs(StatusCode::kPermissionDenied, "was removed"));
}

// RefusedAsExpiredAtMs is the first moment Reauthorize refuses the link:
// accepted a millisecond before it, refused at it; for a listed device
// showing nothing, a device showing a certificate of the user (whatever its
// listed one says), and a friend's device.
TEST(AuthorizeTest, RefusedAsExpiredAtIsTheFirstMomentReauthorizeRefuses) {
  Fixture f;
  struct Case {
    const char* what;
    PeerCredentials shown;
    std::optional<int64_t> listed_valid_for;
    int64_t expires;
  };
  const std::vector<Case> cases = {
      {"listed, showing none", f.Showing(nullptr, 0), 3 * kHour, kT + 3 * kHour},
      {"showing the user's", f.Showing(f.user.get(), kHour), 3 * kHour, kT + kHour},
      {"showing the user's, its listed one earlier", f.Showing(f.user.get(), 3 * kHour), kHour,
       kT + 3 * kHour},
      {"a friend's", f.Showing(f.friend_user.get(), 2 * kHour), std::nullopt, kT + 2 * kHour},
  };
  for (const Case& c : cases) {
    absl::StatusOr<AuthenticatedPeer> peer = Authorize(f.View(kT, c.listed_valid_for), c.shown);
    ASSERT_THAT(peer, IsOk()) << c.what;
    const std::optional<int64_t> at = RefusedAsExpiredAtMs(f.View(kT, c.listed_valid_for), *peer);
    ASSERT_TRUE(at.has_value()) << c.what;
    EXPECT_EQ(*at, c.expires + auth::kExpiryToleranceMs + 1) << c.what;
    EXPECT_THAT(Reauthorize(f.View(*at - 1, c.listed_valid_for), *peer), IsOk()) << c.what;
    EXPECT_THAT(Reauthorize(f.View(*at, c.listed_valid_for), *peer),
                StatusIs(StatusCode::kPermissionDenied, "expired")) << c.what;
  }
}

}  // namespace
}  // namespace peerkv::rpc
