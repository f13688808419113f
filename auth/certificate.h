// auth/certificate.h: what a user key signs. A device certificate says
// "user U vouches for device D, named N, since T"; a signed record is a
// value of a reserved keyspace (the device and friend lists) signed by the
// user, bound to its keyspace and key so it cannot be moved to another.
// Byte layouts are fixed (below) and every decoder checks every length;
// every verify function names what failed.
#ifndef PEERKV_AUTH_CERTIFICATE_H_
#define PEERKV_AUTH_CERTIFICATE_H_

#include <cstdint>
#include <initializer_list>
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

struct DeviceCertificate {
  PublicKey user;
  PublicKey device;
  std::string name;
  int64_t issued_ms = 0;  // Unix ms
  std::string signature;  // 64 bytes, by `user`, over SignedBytes()

  // What the signature covers: a domain string, then every field above.
  std::string SignedBytes() const;
  // Layout: version byte 1, user key (32), device key (32), name length (1)
  // and name, issued_ms (8, big-endian), signature (64).
  std::string Encode() const;
};

// A certificate for `device` signed by `user`. REQUIRES: a valid name.
DeviceCertificate IssueDeviceCertificate(const SigningKey& user, const PublicKey& device,
                                         std::string_view name, int64_t issued_ms);
// Decodes `bytes` and checks its signature and that it is signed by
// `expected_user`. InvalidArgument if malformed (truncated, trailing bytes,
// unknown version, bad name); PermissionDenied if signed by another user,
// or if the signature does not verify (altered, or forged).
absl::StatusOr<DeviceCertificate> VerifyDeviceCertificate(std::string_view bytes,
                                                          const PublicKey& expected_user);

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
