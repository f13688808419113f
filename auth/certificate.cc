// auth/certificate.cc: device certificates and signed records.
#include "auth/certificate.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "auth/ids.h"
#include "common/macros.h"

namespace peerkv::auth {
namespace {

constexpr std::string_view kCertificateDomain{"peerkv device certificate v1\0", 29};
constexpr std::string_view kRecordDomain{"peerkv signed record v1\0", 24};
constexpr uint8_t kLegacyCertificateVersion = 1;  // no not-after
constexpr uint8_t kCertificateVersion = 2;
// A record value is at most this large (the lists' payloads are far
// smaller): a bound for the decoder.
constexpr uint32_t kMaxPayloadBytes = 64 * 1024;

}  // namespace

absl::Status ValidateName(std::string_view name, std::string_view what) {
  if (name.empty() || name.size() > kMaxNameBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s is %d bytes; it must be 1..%d", what, name.size(), kMaxNameBytes));
  }
  for (size_t i = 0; i < name.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(name[i]);
    if (c <= 0x20 || c >= 0x7f) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s has byte 0x%02x at position %d; names are printable ASCII without spaces", what,
          c, i + 1));
    }
  }
  return absl::OkStatus();
}

std::string Cat(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (std::string_view p : parts) out.append(p);
  return out;
}

void PutU64(std::string& out, uint64_t v) {
  for (int i = 7; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutU32(std::string& out, uint32_t v) {
  for (int i = 3; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

absl::StatusOr<std::string_view> Reader::Take(size_t n, std::string_view field) {
  if (bytes_.size() - offset_ < n) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s is truncated: %s needs %d bytes at offset %d, %d left", what_, field, n, offset_,
        bytes_.size() - offset_));
  }
  std::string_view out = bytes_.substr(offset_, n);
  offset_ += n;
  return out;
}
absl::StatusOr<uint8_t> Reader::Byte(std::string_view field) {
  PEERKV_ASSIGN_OR_RETURN(std::string_view b, Take(1, field));
  return static_cast<uint8_t>(b[0]);
}
absl::StatusOr<uint64_t> Reader::U64(std::string_view field) {
  PEERKV_ASSIGN_OR_RETURN(std::string_view b, Take(8, field));
  uint64_t v = 0;
  for (char c : b) v = (v << 8) | static_cast<uint8_t>(c);
  return v;
}
absl::StatusOr<uint32_t> Reader::U32(std::string_view field) {
  PEERKV_ASSIGN_OR_RETURN(std::string_view b, Take(4, field));
  uint32_t v = 0;
  for (char c : b) v = (v << 8) | static_cast<uint8_t>(c);
  return v;
}
absl::StatusOr<PublicKey> Reader::Key(std::string_view field) {
  PEERKV_ASSIGN_OR_RETURN(std::string_view b, Take(kPublicKeyBytes, field));
  return PublicKey::FromBytes(b, field);
}
absl::Status Reader::Done() const {
  if (offset_ == bytes_.size()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrFormat(
      "%s has %d trailing bytes after offset %d", what_, bytes_.size() - offset_, offset_));
}

std::string FormatUtcMs(int64_t ms) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixMillis(ms), absl::UTCTimeZone());
}

std::string DeviceCertificate::SignedBytes() const {
  std::string out(kCertificateDomain);
  out.push_back(static_cast<char>(legacy() ? kLegacyCertificateVersion : kCertificateVersion));
  out.append(user.view());
  out.append(device.view());
  out.push_back(static_cast<char>(name.size()));
  out.append(name);
  PutU64(out, static_cast<uint64_t>(issued_ms));
  if (!legacy()) PutU64(out, static_cast<uint64_t>(*not_after_ms));
  return out;
}

std::string DeviceCertificate::Encode() const {
  std::string out = SignedBytes().substr(kCertificateDomain.size());
  out.append(signature);
  return out;
}

DeviceCertificate IssueDeviceCertificate(const SigningKey& user, const PublicKey& device,
                                         std::string_view name, int64_t issued_ms,
                                         int64_t valid_for_ms) {
  PEERKV_CHECK(ValidateName(name, "device name").ok());
  PEERKV_CHECK(valid_for_ms >= kMinValidityMs && valid_for_ms <= kMaxValidityMs);
  DeviceCertificate cert;
  cert.user = user.public_key();
  cert.device = device;
  cert.name = std::string(name);
  cert.issued_ms = issued_ms;
  cert.not_after_ms = issued_ms + valid_for_ms;
  cert.signature = user.Sign(cert.SignedBytes());
  return cert;
}

DeviceCertificate IssueLegacyDeviceCertificate(const SigningKey& user, const PublicKey& device,
                                               std::string_view name, int64_t issued_ms) {
  PEERKV_CHECK(ValidateName(name, "device name").ok());
  DeviceCertificate cert;
  cert.user = user.public_key();
  cert.device = device;
  cert.name = std::string(name);
  cert.issued_ms = issued_ms;
  cert.signature = user.Sign(cert.SignedBytes());
  return cert;
}

absl::Status CheckNotExpired(const DeviceCertificate& cert, int64_t now_ms,
                             int64_t tolerance_ms) {
  const int64_t expires = cert.ExpiresMs();
  if (now_ms <= expires || now_ms - expires <= tolerance_ms) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrFormat(
      "the device certificate of device %s (%s) expired at %s%s (now %s, %ds of clock skew "
      "allowed)",
      DeviceId(cert.device), cert.name, FormatUtcMs(expires),
      cert.legacy() ? ", a year after its issue: it was made before certificates carried an "
                      "expiry"
                    : "",
      FormatUtcMs(now_ms), tolerance_ms / 1000));
}

absl::StatusOr<int64_t> ParseValidity(std::string_view text, std::string_view flag) {
  const std::string limits = absl::StrFormat(
      "%s must be a duration such as 365d, 30d, 12h or 1y, from 1m to %dd", flag,
      kMaxValidityMs / kDayMs);
  if (text.empty()) return absl::InvalidArgumentError(limits + ", got ''");
  int64_t ms = 0;
  const char unit = text.back();
  const std::string_view number = text.substr(0, text.size() - 1);
  int64_t n = 0;
  const absl::string_view digits(number.data(), number.size());
  if ((unit == 'd' || unit == 'y') && !number.empty() && number[0] != '+' &&
      number[0] != '-' && absl::SimpleAtoi(digits, &n) && n >= 0 && n <= 100'000) {
    ms = n * (unit == 'd' ? kDayMs : 365 * kDayMs);
  } else {
    absl::Duration d;
    if (!absl::ParseDuration(std::string(text), &d) || d == absl::InfiniteDuration()) {
      return absl::InvalidArgumentError(absl::StrFormat("%s, got '%s'", limits, text));
    }
    ms = absl::ToInt64Milliseconds(d);
  }
  if (ms < kMinValidityMs || ms > kMaxValidityMs) {
    return absl::InvalidArgumentError(absl::StrFormat("%s, got '%s'", limits, text));
  }
  return ms;
}

absl::StatusOr<DeviceCertificate> VerifyDeviceCertificate(std::string_view bytes,
                                                          const PublicKey& expected_user) {
  Reader r(bytes, "device certificate");
  PEERKV_ASSIGN_OR_RETURN(const uint8_t version, r.Byte("version"));
  if (version != kCertificateVersion && version != kLegacyCertificateVersion) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "device certificate has version %d; this peerkv reads versions %d and %d", version,
        kLegacyCertificateVersion, kCertificateVersion));
  }
  DeviceCertificate cert;
  PEERKV_ASSIGN_OR_RETURN(cert.user, r.Key("user key"));
  PEERKV_ASSIGN_OR_RETURN(cert.device, r.Key("device key"));
  PEERKV_ASSIGN_OR_RETURN(const uint8_t name_len, r.Byte("name length"));
  PEERKV_ASSIGN_OR_RETURN(std::string_view name, r.Take(name_len, "name"));
  cert.name = std::string(name);
  PEERKV_RETURN_IF_ERROR(ValidateName(cert.name, "device certificate's name"));
  PEERKV_ASSIGN_OR_RETURN(const uint64_t issued, r.U64("issue time"));
  cert.issued_ms = static_cast<int64_t>(issued);
  if (cert.issued_ms < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "device certificate of device %s has issue time %d; it must be Unix ms, not negative",
        DeviceId(cert.device), cert.issued_ms));
  }
  if (version == kCertificateVersion) {
    PEERKV_ASSIGN_OR_RETURN(const uint64_t not_after, r.U64("expiry (not-after)"));
    // Compared unsigned: a not-after past INT64_MAX is out of range too.
    if (not_after <= issued || not_after - issued > static_cast<uint64_t>(kMaxValidityMs)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "device certificate of device %s has a malformed expiry: not-after %d is %s its "
          "issue time %d; it must be after it by at most %d days",
          DeviceId(cert.device), static_cast<int64_t>(not_after),
          not_after <= issued ? "not after" : "too long after", cert.issued_ms,
          kMaxValidityMs / kDayMs));
    }
    cert.not_after_ms = static_cast<int64_t>(not_after);
  }
  PEERKV_ASSIGN_OR_RETURN(std::string_view signature, r.Take(kSignatureBytes, "signature"));
  cert.signature = std::string(signature);
  PEERKV_RETURN_IF_ERROR(r.Done());
  if (cert.user != expected_user) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "device certificate of device %s is signed by user %s, not by user %s",
        DeviceId(cert.device), UserId(cert.user), UserId(expected_user)));
  }
  if (!Verify(cert.user, cert.SignedBytes(), cert.signature)) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "device certificate of device %s: the signature of user %s does not verify "
        "(altered or forged)",
        DeviceId(cert.device), UserId(cert.user)));
  }
  return cert;
}

namespace {
std::string RecordSignedBytes(std::string_view keyspace, std::string_view key,
                              std::string_view payload) {
  std::string out(kRecordDomain);
  PutU32(out, static_cast<uint32_t>(keyspace.size()));
  out.append(keyspace);
  PutU32(out, static_cast<uint32_t>(key.size()));
  out.append(key);
  out.append(payload);
  return out;
}
}  // namespace

std::string EncodeSignedRecord(const SigningKey& signer, std::string_view keyspace,
                               std::string_view key, std::string_view payload) {
  PEERKV_CHECK(payload.size() <= kMaxPayloadBytes);
  std::string out(signer.public_key().view());
  PutU32(out, static_cast<uint32_t>(payload.size()));
  out.append(payload);
  out.append(signer.Sign(RecordSignedBytes(keyspace, key, payload)));
  return out;
}

absl::StatusOr<SignedRecord> VerifySignedRecord(std::string_view value,
                                                std::string_view keyspace, std::string_view key,
                                                const PublicKey& expected_signer) {
  const std::string what = Cat({"record ", keyspace, "/", key});
  Reader r(value, what);
  SignedRecord record;
  PEERKV_ASSIGN_OR_RETURN(record.signer, r.Key("signer"));
  PEERKV_ASSIGN_OR_RETURN(const uint32_t len, r.U32("payload length"));
  if (len > kMaxPayloadBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s has a %d-byte payload; the limit is %d", what, len, kMaxPayloadBytes));
  }
  PEERKV_ASSIGN_OR_RETURN(std::string_view payload, r.Take(len, "payload"));
  record.payload = std::string(payload);
  PEERKV_ASSIGN_OR_RETURN(std::string_view signature, r.Take(kSignatureBytes, "signature"));
  PEERKV_RETURN_IF_ERROR(r.Done());
  if (record.signer != expected_signer) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "%s is signed by %s, not by this store's user %s", what, UserId(record.signer),
        UserId(expected_signer)));
  }
  if (!Verify(record.signer, RecordSignedBytes(keyspace, key, record.payload), signature)) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "%s: the signature does not verify (altered, forged, or moved from another key)",
        what));
  }
  return record;
}

}  // namespace peerkv::auth
