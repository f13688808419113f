// auth/certificate.h: what a user key signs. A device certificate says
// "user U vouches for device D, named N, from T until E"; a signed record is a
// value of a reserved keyspace (the device and friend lists) signed by the
// user, bound to its keyspace and key so it cannot be moved to another.
// Byte layouts are fixed (below) and every decoder checks every length;
// every verify function names what failed.
#ifndef PEERKV_AUTH_CERTIFICATE_H_
#define PEERKV_AUTH_CERTIFICATE_H_

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "auth/keys.h"

namespace peerkv::auth {

// Device names and user names: 1..64 bytes of printable ASCII without
// spaces (they are shown one per line, space-separated).
inline constexpr size_t kMaxNameBytes = 64;
// InvalidArgument naming `what` if `name` is outside the limits above.
absl::Status ValidateName(std::string_view name, std::string_view what);

// How long a device certificate is valid (its not-after minus its issue
// time): kDefaultValidityMs unless `device add --valid-for` says otherwise,
// within [kMinValidityMs, kMaxValidityMs].
inline constexpr int64_t kDayMs = 86'400'000;
inline constexpr int64_t kDefaultValidityMs = 365 * kDayMs;
inline constexpr int64_t kMinValidityMs = 60'000;
inline constexpr int64_t kMaxValidityMs = 3650 * kDayMs;
// Clock skew allowed when checking expiry: a certificate is expired only
// once `now` is past its not-after by more than this.
inline constexpr int64_t kExpiryToleranceMs = 5 * 60'000;

struct DeviceCertificate {
  PublicKey user;
  PublicKey device;
  std::string name;
  int64_t issued_ms = 0;  // Unix ms
  // Unix ms after which it is expired. Absent in a version-1 certificate
  // (made before certificates expired): see ExpiresMs.
  std::optional<int64_t> not_after_ms;
  std::string signature;  // 64 bytes, by `user`, over SignedBytes()

  // When it expires: not_after_ms, or for a version-1 certificate its
  // issue time plus kDefaultValidityMs (so no certificate is valid forever,
  // and none made before expiry existed lapses at the upgrade).
  int64_t ExpiresMs() const { return not_after_ms.value_or(issued_ms + kDefaultValidityMs); }
  // Whether it is version 1 (no not-after of its own).
  bool legacy() const { return !not_after_ms.has_value(); }

  // What the signature covers: a domain string, then every field above
  // (the version byte too, so a version-2 certificate cannot be shown as a
  // version-1 one without its expiry).
  std::string SignedBytes() const;
  // Layout: version byte (2; 1 without not-after), user key (32), device
  // key (32), name length (1) and name, issued_ms (8, big-endian),
  // not_after_ms (8, big-endian; version 2 only), signature (64).
  std::string Encode() const;
};

// A certificate for `device` signed by `user`, valid for `valid_for_ms`
// from `issued_ms`. REQUIRES: a valid name, a validity within
// [kMinValidityMs, kMaxValidityMs].
DeviceCertificate IssueDeviceCertificate(const SigningKey& user, const PublicKey& device,
                                         std::string_view name, int64_t issued_ms,
                                         int64_t valid_for_ms = kDefaultValidityMs);
// A version-1 certificate (no not-after), as peerkv made before expiry: for
// tests of stores that hold them.
DeviceCertificate IssueLegacyDeviceCertificate(const SigningKey& user, const PublicKey& device,
                                               std::string_view name, int64_t issued_ms);
// Decodes `bytes` and checks its signature and that it is signed by
// `expected_user`. InvalidArgument if malformed (truncated, trailing bytes,
// unknown version, bad name, a not-after not after the issue time or more
// than kMaxValidityMs after it); PermissionDenied if signed by another
// user, or if the signature does not verify (altered, or forged). Expiry
// is not checked here (CheckNotExpired): a record signature's certificate
// stays good for the records signed while it was valid.
absl::StatusOr<DeviceCertificate> VerifyDeviceCertificate(std::string_view bytes,
                                                          const PublicKey& expected_user);
// PermissionDenied naming the device, its name, when it expired and `now`
// if `cert` expired more than `tolerance_ms` before `now_ms`.
absl::Status CheckNotExpired(const DeviceCertificate& cert, int64_t now_ms,
                             int64_t tolerance_ms = kExpiryToleranceMs);
// Parses a validity such as "365d", "12h", "90m" or "1y" (a year is 365
// days; also absl durations like "1h30m"). InvalidArgument naming `flag`
// and the limits if malformed or outside [kMinValidityMs, kMaxValidityMs].
absl::StatusOr<int64_t> ParseValidity(std::string_view text, std::string_view flag);
// "2026-12-03T12:00:00Z".
std::string FormatUtcMs(int64_t ms);

// A value of a reserved keyspace: signer (32), payload length (4, BE),
// payload, signature (64) over a domain string, keyspace, key and payload.
struct SignedRecord {
  PublicKey signer;
  std::string payload;
};
std::string EncodeSignedRecord(const SigningKey& signer, std::string_view keyspace,
                               std::string_view key, std::string_view payload);
// InvalidArgument if malformed; PermissionDenied if not signed by
// `expected_signer`, or if the signature fails.
absl::StatusOr<SignedRecord> VerifySignedRecord(std::string_view value,
                                                std::string_view keyspace, std::string_view key,
                                                const PublicKey& expected_signer);

// A little-endian-free reader of the layouts above: each Take fails with
// InvalidArgument naming `what` and the field when the bytes run out.
class Reader {
 public:
  Reader(std::string_view bytes, std::string_view what) : bytes_(bytes), what_(what) {}
  absl::StatusOr<std::string_view> Take(size_t n, std::string_view field);
  absl::StatusOr<uint8_t> Byte(std::string_view field);
  absl::StatusOr<uint64_t> U64(std::string_view field);
  absl::StatusOr<uint32_t> U32(std::string_view field);
  absl::StatusOr<PublicKey> Key(std::string_view field);
  // InvalidArgument if bytes are left over.
  absl::Status Done() const;
  size_t offset() const { return offset_; }

 private:
  std::string_view bytes_;
  std::string_view what_;
  size_t offset_ = 0;
};
void PutU64(std::string& out, uint64_t v);
// Concatenates `parts` (absl::StrCat here takes absl's own string_view,
// not std's).
std::string Cat(std::initializer_list<std::string_view> parts);
void PutU32(std::string& out, uint32_t v);

}  // namespace peerkv::auth

#endif  // PEERKV_AUTH_CERTIFICATE_H_
