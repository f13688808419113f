// auth/record_signature.h: signed records (README "Signed records"). A
// record of a keyspace readable beyond its owner's devices carries its
// origin device's signature (Record::signature), so that a replica that
// relays it (a reader's phone) can neither forge nor alter it: the blob is
// the device's certificate (issued by its user, auth/certificate.h) and an
// Ed25519 signature by the device key over a domain-separated message of
// keyspace, key, version, tombstone flag and a BLAKE2b hash of the value.
// Every replica checks it when it merges the record (MakeRecordGate): the
// signature must verify and the certificate's user must be allowed to
// write the keyspace (auth::Access::MayWrite).
//
// Blob layout: version byte 1, certificate length (2, big-endian), the
// certificate (DeviceCertificate::Encode), signature (64).
#ifndef PEERKV_AUTH_RECORD_SIGNATURE_H_
#define PEERKV_AUTH_RECORD_SIGNATURE_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "auth/access.h"
#include "auth/keys.h"
#include "auth/recent_cache.h"
#include "store/types.h"
#include "store/version.h"

namespace peerkv::auth {

inline constexpr uint8_t kRecordSignatureVersion = 1;
// Bytes of the BLAKE2b hash of the value the signature covers.
inline constexpr size_t kRecordValueHashBytes = 32;

// What the device signs: "peerkv record v1\0", then keyspace and key (each
// with a 4-byte big-endian length), hlc and origin (8 each, big-endian),
// the tombstone flag (1), and the value's hash.
std::string RecordSigningMessage(std::string_view keyspace, std::string_view key,
                                 const Version& version, bool deleted, std::string_view value);

// The Record::signature blob for a record written by the device of
// `device_key`, whose certificate (DeviceCertificate::Encode, issued by its
// user) is `device_certificate`. REQUIRES: a certificate of at most
// kMaxSignatureBytes - 67 bytes.
std::string SignRecord(const SigningKey& device_key, std::string_view device_certificate,
                       std::string_view keyspace, std::string_view key, const Version& version,
                       bool deleted, std::string_view value);

// Who signed a record.
struct SignedBy {
  PublicKey device;
  PublicKey user;
};

// Checks record signatures. Thread-safe. A device certificate verified
// once is kept (the `max_certificates` most recently used), so each record
// costs one Ed25519 check and one hash of its value; a record whose
// signature verified is kept too (the `max_records` most recently used;
// auth/recent_cache.h), so the same record offered again (gossip brings it
// from every peer) costs two BLAKE2b hashes and a lookup: the cache is
// keyed by the 64-byte signature and holds a BLAKE2b-256 digest of the
// exact signed message and blob, which a hit must match. REQUIRES: both
// bounds at least 2.
class RecordVerifier {
 public:
  explicit RecordVerifier(size_t max_certificates = 4096, size_t max_records = 16384)
      : certificates_(max_certificates), records_(max_records) {}

  // The signing device and its user. InvalidArgument naming the field if
  // the blob is malformed (empty: unsigned); PermissionDenied if the
  // certificate is not its user's, or the signature does not cover this
  // record (forged, or the record was altered: another value, version,
  // key, keyspace or tombstone flag).
  absl::StatusOr<SignedBy> Verify(const Record& record) const;

  // Certificates checked (cache misses) since construction.
  uint64_t certificates_checked() const;
  // Record signatures checked with Ed25519 (not answered from the cache)
  // since construction.
  uint64_t signatures_checked() const;

 private:
  // A record that verified: the digest of its message and blob, and who
  // signed it.
  struct VerifiedRecord {
    std::array<uint8_t, 32> digest;
    SignedBy by;
  };

  // Decodes and checks a device certificate (no cache).
  static absl::StatusOr<SignedBy> CheckCertificate(std::string_view bytes);

  mutable absl::Mutex mu_;
  // By the certificate's bytes.
  mutable RecentCache<std::string, SignedBy> certificates_ ABSL_GUARDED_BY(mu_);
  // By the record's signature.
  mutable RecentCache<std::array<uint8_t, kSignatureBytes>, VerifiedRecord> records_
      ABSL_GUARDED_BY(mu_);
  mutable uint64_t certificates_checked_ ABSL_GUARDED_BY(mu_) = 0;
  mutable std::atomic<uint64_t> signatures_checked_ = 0;
};

// An Access set once the store it reads is open (the signer and the gate
// are StoreOptions, made before it). Until Set: no keyspace has a policy
// (the local user may do everything, anyone else nothing; no signatures
// required). Thread-safe.
class AccessSlot final : public Access {
 public:
  void Set(std::shared_ptr<const Access> access) {
    absl::MutexLock lock(&mu_);
    access_ = std::move(access);
  }
  bool MayRead(const Principal& who, std::string_view ks) const override {
    std::shared_ptr<const Access> a = Get();
    return a != nullptr ? a->MayRead(who, ks) : who.local_user;
  }
  bool MayWrite(const Principal& who, std::string_view ks) const override {
    std::shared_ptr<const Access> a = Get();
    return a != nullptr ? a->MayWrite(who, ks) : who.local_user;
  }
  bool RequiresSignature(std::string_view ks) const override {
    std::shared_ptr<const Access> a = Get();
    return a != nullptr && a->RequiresSignature(ks);
  }

 private:
  std::shared_ptr<const Access> Get() const {
    absl::MutexLock lock(&mu_);
    return access_;
  }
  mutable absl::Mutex mu_;
  std::shared_ptr<const Access> access_ ABSL_GUARDED_BY(mu_);
};

// StoreOptions::signer: signs local writes of keyspaces whose
// access->RequiresSignature with `device_key` and `device_certificate`;
// others stay unsigned. All borrowed or shared; they must outlive the store.
peerkv::RecordSigner MakeRecordSigner(std::shared_ptr<const Access> access,
                                      std::shared_ptr<const SigningKey> device_key,
                                      std::string device_certificate);

// StoreOptions::record_gate, the merge gate. Reserved keyspaces are left
// to StoreOptions::reserved_check. A record of a keyspace that
// access->RequiresSignature, and every record from a friend's device
// (MergeSource::kFriend), must carry a signature that verifies and whose
// user access->MayWrite the keyspace (`local_user`: this store's user, for
// Principal::local_user); otherwise PermissionDenied (InvalidArgument for a
// malformed blob) naming the keyspace and what is wrong. Unsigned records
// of other keyspaces from the user's own devices pass unchecked.
// MergeSource::kOwnWriteFromFriend (a write of this replica's own id that a
// friend's device sent, asked before it counts as restore evidence): a
// reserved keyspace's record is refused, and any other must carry a
// signature that verifies, by a device of `local_user` (who may write the
// keyspace); otherwise PermissionDenied naming the keyspace and the signer.
std::function<absl::Status(const Record&, MergeSource)> MakeRecordGate(
    std::shared_ptr<const Access> access, std::shared_ptr<const RecordVerifier> verifier,
    const PublicKey& local_user);

}  // namespace peerkv::auth

#endif  // PEERKV_AUTH_RECORD_SIGNATURE_H_
