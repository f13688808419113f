// auth/certificate_test.cc: device certificates and signed records: valid,
// signed by the wrong user, tampered with, and malformed.
#include "auth/certificate.h"

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
  std::string v2 = good;
  v2[0] = 2;
  EXPECT_THAT(VerifyDeviceCertificate(v2, user->public_key()),
              StatusIs(StatusCode::kInvalidArgument, "version 2"));
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
