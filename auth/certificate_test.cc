// auth/certificate_test.cc: device certificates and signed records: valid,
// signed by the wrong user, tampered with, malformed, expired, and the
// version-1 certificates made before they expired.
#include "auth/certificate.h"

#include "absl/strings/str_cat.h"
#include "auth/ids.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace peerkv::auth {
namespace {

using absl::StatusCode;

constexpr int64_t kT = 1'764'061'200'000;

TEST(CertificateTest, ValidCertificateVerifies) {
  std::unique_ptr<SigningKey> user = SigningKey::Generate();
  const PublicKey device = SigningKey::Generate()->public_key();
  const DeviceCertificate cert = IssueDeviceCertificate(*user, device, "tablet", kT);
  absl::StatusOr<DeviceCertificate> v = VerifyDeviceCertificate(cert.Encode(), user->public_key());
  ASSERT_THAT(v, IsOk());
  EXPECT_EQ(v->device, device);
  EXPECT_EQ(v->user, user->public_key());
  EXPECT_EQ(v->name, "tablet");
  EXPECT_EQ(v->issued_ms, kT);
}

TEST(CertificateTest, WrongSignerIsRefused) {
  std::unique_ptr<SigningKey> user = SigningKey::Generate();
  std::unique_ptr<SigningKey> mallory = SigningKey::Generate();
  const PublicKey device = SigningKey::Generate()->public_key();
  // Signed by another user: refused when the expected user is ours.
  const DeviceCertificate theirs = IssueDeviceCertificate(*mallory, device, "tablet", kT);
  EXPECT_THAT(VerifyDeviceCertificate(theirs.Encode(), user->public_key()),
              StatusIs(StatusCode::kPermissionDenied, "not by user"));
  // Claims our user, but signed by another key.
  DeviceCertificate forged = theirs;
  forged.user = user->public_key();
  forged.signature = mallory->Sign(forged.SignedBytes());
  EXPECT_THAT(VerifyDeviceCertificate(forged.Encode(), user->public_key()),
              StatusIs(StatusCode::kPermissionDenied, "does not verify"));
}

TEST(CertificateTest, EveryTamperedByteIsRefused) {
  std::unique_ptr<SigningKey> user = SigningKey::Generate();
  const std::string good =
      IssueDeviceCertificate(*user, SigningKey::Generate()->public_key(), "pc", kT).Encode();
  for (size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] ^= 0x04;
    absl::StatusOr<DeviceCertificate> v = VerifyDeviceCertificate(bad, user->public_key());
    EXPECT_FALSE(v.ok()) << "byte " << i;
    if (!v.ok()) {
      EXPECT_TRUE(absl::IsPermissionDenied(v.status()) || absl::IsInvalidArgument(v.status()))
          << v.status();
    }
  }
}

TEST(CertificateTest, MalformedCertificatesNameWhatIsWrong) {
  std::unique_ptr<SigningKey> user = SigningKey::Generate();
  const std::string good =
      IssueDeviceCertificate(*user, SigningKey::Generate()->public_key(), "pc", kT).Encode();
  EXPECT_THAT(VerifyDeviceCertificate("", user->public_key()),
              StatusIs(StatusCode::kInvalidArgument, "device certificate is truncated"));
  EXPECT_THAT(VerifyDeviceCertificate(good.substr(0, good.size() - 1), user->public_key()),
              StatusIs(StatusCode::kInvalidArgument, "signature needs 64 bytes"));
  EXPECT_THAT(VerifyDeviceCertificate(good + "x", user->public_key()),
              StatusIs(StatusCode::kInvalidArgument, "1 trailing bytes"));
  std::string v3 = good;
  v3[0] = 3;
  EXPECT_THAT(VerifyDeviceCertificate(v3, user->public_key()),
              StatusIs(StatusCode::kInvalidArgument, "version 3"));
}

TEST(CertificateTest, CarriesItsExpiry) {
  std::unique_ptr<SigningKey> user = SigningKey::Generate();
  const PublicKey device = SigningKey::Generate()->public_key();
  absl::StatusOr<DeviceCertificate> v = VerifyDeviceCertificate(
      IssueDeviceCertificate(*user, device, "tablet", kT).Encode(), user->public_key());
  ASSERT_THAT(v, IsOk());
  EXPECT_EQ(v->not_after_ms, kT + kDefaultValidityMs);
  EXPECT_FALSE(v->legacy());
  v = VerifyDeviceCertificate(
      IssueDeviceCertificate(*user, device, "tablet", kT, 3'600'000).Encode(), user->public_key());
  ASSERT_THAT(v, IsOk());
  EXPECT_EQ(v->ExpiresMs(), kT + 3'600'000);
}

TEST(CertificateTest, ExpiredIsRefusedValidIsAccepted) {
  std::unique_ptr<SigningKey> user = SigningKey::Generate();
  const PublicKey device = SigningKey::Generate()->public_key();
  const DeviceCertificate cert = IssueDeviceCertificate(*user, device, "tablet", kT, 3'600'000);
  const int64_t end = kT + 3'600'000;
  EXPECT_THAT(CheckNotExpired(cert, kT), IsOk());
  EXPECT_THAT(CheckNotExpired(cert, end), IsOk());
  // The clock-skew tolerance: five minutes past the end still passes.
  EXPECT_THAT(CheckNotExpired(cert, end + kExpiryToleranceMs), IsOk());
  EXPECT_THAT(CheckNotExpired(cert, end + kExpiryToleranceMs + 1),
              StatusIs(StatusCode::kPermissionDenied,
                       absl::StrCat("the device certificate of device ", DeviceId(device),
                                    " (tablet) expired at 2025-11-25T10:00:00Z")));
  EXPECT_THAT(CheckNotExpired(cert, end + kExpiryToleranceMs + 1),
              StatusIs(StatusCode::kPermissionDenied, "300s of clock skew allowed"));
  EXPECT_THAT(CheckNotExpired(cert, end + 1, /*tolerance_ms=*/0),
              StatusIs(StatusCode::kPermissionDenied, "(now 2025-11-25T10:00:00Z, 0s of clock"));
}

TEST(CertificateTest, VersionOneCertificatesExpireAYearAfterIssue) {
  std::unique_ptr<SigningKey> user = SigningKey::Generate();
  const PublicKey device = SigningKey::Generate()->public_key();
  const DeviceCertificate old = IssueLegacyDeviceCertificate(*user, device, "pc", kT);
  EXPECT_EQ(old.Encode()[0], 1);
  EXPECT_EQ(old.Encode().size() + 8,
            IssueDeviceCertificate(*user, device, "pc", kT).Encode().size());
  absl::StatusOr<DeviceCertificate> v = VerifyDeviceCertificate(old.Encode(), user->public_key());
  ASSERT_THAT(v, IsOk());
  EXPECT_TRUE(v->legacy());
  EXPECT_EQ(v->ExpiresMs(), kT + kDefaultValidityMs);
  EXPECT_THAT(CheckNotExpired(*v, kT + kDefaultValidityMs), IsOk());
  EXPECT_THAT(CheckNotExpired(*v, kT + kDefaultValidityMs + kExpiryToleranceMs + 1),
              StatusIs(StatusCode::kPermissionDenied, "made before certificates carried"));
  // A version-2 certificate cannot be passed off as a version-1 one (no
  // expiry) by dropping its not-after: the version byte is signed.
  const std::string v2 = IssueDeviceCertificate(*user, device, "pc", kT, 3'600'000).Encode();
  std::string stripped = v2.substr(0, v2.size() - 64 - 8) + v2.substr(v2.size() - 64);
  stripped[0] = 1;
  EXPECT_THAT(VerifyDeviceCertificate(stripped, user->public_key()),
              StatusIs(StatusCode::kPermissionDenied, "does not verify"));
}

TEST(CertificateTest, MalformedExpiryIsRefused) {
  std::unique_ptr<SigningKey> user = SigningKey::Generate();
  const PublicKey device = SigningKey::Generate()->public_key();
  // Correctly signed, but with a not-after that makes no sense.
  auto signed_with = [&](int64_t not_after) {
    DeviceCertificate c = IssueDeviceCertificate(*user, device, "pc", kT);
    c.not_after_ms = not_after;
    c.signature = user->Sign(c.SignedBytes());
    return c.Encode();
  };
  EXPECT_THAT(VerifyDeviceCertificate(signed_with(kT), user->public_key()),
              StatusIs(StatusCode::kInvalidArgument, "malformed expiry: not-after"));
  EXPECT_THAT(VerifyDeviceCertificate(signed_with(kT - 1), user->public_key()),
              StatusIs(StatusCode::kInvalidArgument, "is not after its issue time"));
  EXPECT_THAT(VerifyDeviceCertificate(signed_with(kT + kMaxValidityMs + 1), user->public_key()),
              StatusIs(StatusCode::kInvalidArgument, "too long after its issue time"));
  EXPECT_THAT(VerifyDeviceCertificate(signed_with(-1), user->public_key()),
              StatusIs(StatusCode::kInvalidArgument, "malformed expiry"));
  EXPECT_THAT(VerifyDeviceCertificate(signed_with(kT + kMaxValidityMs), user->public_key()),
              IsOk());
  // A version-2 certificate cut inside its not-after.
  const std::string good = signed_with(kT + 1);
  const size_t at = good.size() - 64 - 8;
  EXPECT_THAT(VerifyDeviceCertificate(good.substr(0, at + 3), user->public_key()),
              StatusIs(StatusCode::kInvalidArgument, "expiry (not-after) needs 8 bytes"));
}

TEST(ValidityTest, ParsesDurationsWithinLimits) {
  EXPECT_EQ(ParseValidity("365d", "--valid-for").value_or(-1), kDefaultValidityMs);
  EXPECT_EQ(ParseValidity("1y", "--valid-for").value_or(-1), kDefaultValidityMs);
  EXPECT_EQ(ParseValidity("12h", "--valid-for").value_or(-1), 12 * 3'600'000);
  EXPECT_EQ(ParseValidity("1m", "--valid-for").value_or(-1), 60'000);
  EXPECT_EQ(ParseValidity("3650d", "--valid-for").value_or(-1), kMaxValidityMs);
  for (const char* bad : {"", "59s", "3651d", "11y", "-1d", "x", "1.5q", "inf", "+3d"}) {
    EXPECT_THAT(ParseValidity(bad, "--valid-for"),
                StatusIs(StatusCode::kInvalidArgument, "--valid-for must be a duration"))
        << bad;
  }
}

TEST(SignedRecordTest, BoundToSignerKeyspaceAndKey) {
  std::unique_ptr<SigningKey> user = SigningKey::Generate();
  const std::string value = EncodeSignedRecord(*user, "peerkv.devices", "device/X", "payload");
  absl::StatusOr<SignedRecord> r =
      VerifySignedRecord(value, "peerkv.devices", "device/X", user->public_key());
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->payload, "payload");
  EXPECT_THAT(VerifySignedRecord(value, "peerkv.devices", "device/Y", user->public_key()),
              StatusIs(StatusCode::kPermissionDenied, "does not verify"));
  EXPECT_THAT(VerifySignedRecord(value, "peerkv.friends", "device/X", user->public_key()),
              StatusIs(StatusCode::kPermissionDenied, "does not verify"));
  EXPECT_THAT(VerifySignedRecord(value, "peerkv.devices", "device/X",
                                 SigningKey::Generate()->public_key()),
              StatusIs(StatusCode::kPermissionDenied, "not by this store's user"));
  std::string tampered = value;
  tampered[36] ^= 1;  // first payload byte
  EXPECT_THAT(VerifySignedRecord(tampered, "peerkv.devices", "device/X", user->public_key()),
              StatusIs(StatusCode::kPermissionDenied, "does not verify"));
  EXPECT_THAT(VerifySignedRecord(value.substr(0, 10), "peerkv.devices", "device/X",
                                 user->public_key()),
              StatusIs(StatusCode::kInvalidArgument, "truncated"));
}

TEST(NameTest, Limits) {
  EXPECT_THAT(ValidateName("tablet", "device name"), IsOk());
  EXPECT_THAT(ValidateName("", "device name"),
              StatusIs(StatusCode::kInvalidArgument, "device name is 0 bytes; it must be 1..64"));
  EXPECT_THAT(ValidateName(std::string(65, 'a'), "--name"),
              StatusIs(StatusCode::kInvalidArgument, "--name is 65 bytes"));
  EXPECT_THAT(ValidateName("my pc", "--name"),
              StatusIs(StatusCode::kInvalidArgument, "byte 0x20 at position 3"));
}

}  // namespace
}  // namespace peerkv::auth
