// auth/record_signature.cc: signing and verifying records, and the merge
// gate over them.
#include "auth/record_signature.h"

#include <sodium.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "auth/certificate.h"
#include "auth/ids.h"
#include "common/macros.h"
#include "store/validation.h"

namespace peerkv::auth {
namespace {

constexpr std::string_view kDomain("peerkv record v1\0", 17);
// Version byte, certificate length, signature.
constexpr size_t kBlobOverhead = 1 + 2 + kSignatureBytes;

// The signing message of a record within the store's limits
// (store/validation.h), followed by its blob: the verifier builds both on
// the stack. Same appends as std::string's.
constexpr size_t kMaxMessageBytes =
    kDomain.size() + 4 + kMaxKeyspaceBytes + 4 + kMaxKeyBytes + 8 + 8 + 1 + kRecordValueHashBytes;
class MessageBuffer {
 public:
  void append(std::string_view bytes) {
    PEERKV_CHECK(bytes.size() <= bytes_.size() - size_);
    std::memcpy(bytes_.data() + size_, bytes.data(), bytes.size());
    size_ += bytes.size();
  }
  void push_back(char c) { append(std::string_view(&c, 1)); }
  std::string_view view() const { return {bytes_.data(), size_}; }

 private:
  std::array<char, kMaxMessageBytes + kMaxSignatureBytes> bytes_;
  size_t size_ = 0;
};

void InitSodium() {
  static const bool ok = sodium_init() >= 0;
  PEERKV_CHECK(ok);
}

template <typename Out>
void AppendBigEndian(Out& out, uint64_t v, size_t bytes) {
  char buffer[8];
  for (size_t i = 0; i < bytes; ++i) buffer[i] = static_cast<char>(v >> (8 * (bytes - 1 - i)));
  out.append(std::string_view(buffer, bytes));
}

template <typename Out>
void AppendSigningMessage(Out& out, std::string_view keyspace, std::string_view key,
                          const Version& version, bool deleted, std::string_view value) {
  out.append(kDomain);
  AppendBigEndian(out, keyspace.size(), 4);
  out.append(keyspace);
  AppendBigEndian(out, key.size(), 4);
  out.append(key);
  AppendBigEndian(out, version.hlc, 8);
  AppendBigEndian(out, version.origin, 8);
  out.push_back(deleted ? 1 : 0);
  std::array<unsigned char, kRecordValueHashBytes> hash;
  InitSodium();
  crypto_generichash(hash.data(), hash.size(), reinterpret_cast<const unsigned char*>(value.data()),
                     value.size(), nullptr, 0);
  out.append(std::string_view(reinterpret_cast<const char*>(hash.data()), hash.size()));
}

}  // namespace

std::string RecordSigningMessage(std::string_view keyspace, std::string_view key,
                                 const Version& version, bool deleted, std::string_view value) {
  std::string out;
  out.reserve(kDomain.size() + 8 + keyspace.size() + key.size() + 17 + kRecordValueHashBytes);
  AppendSigningMessage(out, keyspace, key, version, deleted, value);
  return out;
}

std::string SignRecord(const SigningKey& device_key, std::string_view device_certificate,
                       std::string_view keyspace, std::string_view key, const Version& version,
                       bool deleted, std::string_view value) {
  PEERKV_CHECK(device_certificate.size() + kBlobOverhead <= kMaxSignatureBytes);
  std::string blob;
  blob.reserve(device_certificate.size() + kBlobOverhead);
  blob.push_back(static_cast<char>(kRecordSignatureVersion));
  blob.push_back(static_cast<char>(device_certificate.size() >> 8));
  blob.push_back(static_cast<char>(device_certificate.size() & 0xff));
  blob.append(device_certificate);
  blob.append(device_key.Sign(RecordSigningMessage(keyspace, key, version, deleted, value)));
  return blob;
}

absl::StatusOr<SignedBy> RecordVerifier::CheckCertificate(std::string_view bytes) {
  // The certificate names its user (after the version byte); it must be
  // signed by that user. Whether that user may write is the gate's call.
  if (bytes.size() < 1 + kPublicKeyBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "record signature: device certificate is %d bytes; too short", bytes.size()));
  }
  PEERKV_ASSIGN_OR_RETURN(const PublicKey user,
                          PublicKey::FromBytes(bytes.substr(1, kPublicKeyBytes), "user key"));
  absl::StatusOr<DeviceCertificate> certificate = VerifyDeviceCertificate(bytes, user);
  if (!certificate.ok()) {
    return absl::Status(certificate.status().code(),
                        absl::StrCat("record signature: device certificate: ",
                                     certificate.status().message()));
  }
  return SignedBy{certificate->device, certificate->user};
}

absl::StatusOr<SignedBy> RecordVerifier::Verify(const Record& record) const {
  const std::string_view blob = record.signature;
  if (blob.empty()) return absl::InvalidArgumentError("record is unsigned");
  if (blob.size() < kBlobOverhead) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "record signature is %d bytes; at least %d expected", blob.size(), kBlobOverhead));
  }
  if (static_cast<uint8_t>(blob[0]) != kRecordSignatureVersion) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "record signature has version %d; this peerkv reads version %d",
        static_cast<uint8_t>(blob[0]), kRecordSignatureVersion));
  }
  const size_t certificate_size = (static_cast<size_t>(static_cast<uint8_t>(blob[1])) << 8) |
                                  static_cast<uint8_t>(blob[2]);
  if (blob.size() != kBlobOverhead + certificate_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "record signature is %d bytes; its %d-byte certificate and signature make %d",
        blob.size(), certificate_size, kBlobOverhead + certificate_size));
  }
  // (A record that the store's validation would refuse is refused here
  // too: its message would not fit the buffer below.)
  if (record.keyspace.size() > kMaxKeyspaceBytes || record.key.size() > kMaxKeyBytes ||
      blob.size() > kMaxSignatureBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "record of a %d-byte keyspace and a %d-byte key with a %d-byte signature: the limits "
        "are %d, %d and %d bytes",
        record.keyspace.size(), record.key.size(), blob.size(), kMaxKeyspaceBytes, kMaxKeyBytes,
        kMaxSignatureBytes));
  }
  const std::string_view certificate = blob.substr(3, certificate_size);
  const std::string_view signature = blob.substr(3 + certificate_size);
  // A record offered again (by another peer, another page, a reconcile
  // round) costs two hashes and a lookup, not a second Ed25519 check: the
  // cache entry of its signature must hold the digest of this exact
  // message and blob.
  MessageBuffer buffer;
  AppendSigningMessage(buffer, record.keyspace, record.key, record.version, record.deleted,
                       record.value);
  const size_t message_size = buffer.view().size();
  buffer.append(blob);
  const std::string_view message = buffer.view().substr(0, message_size);
  VerifiedRecord entry;
  InitSodium();
  crypto_generichash(entry.digest.data(), entry.digest.size(),
                     reinterpret_cast<const unsigned char*>(buffer.view().data()),
                     buffer.view().size(), nullptr, 0);
  std::array<uint8_t, kSignatureBytes> key;
  std::copy(signature.begin(), signature.end(), key.begin());
  std::optional<SignedBy> certified;
  {
    absl::MutexLock lock(&mu_);
    const VerifiedRecord* seen = records_.Find(key);
    if (seen != nullptr && seen->digest == entry.digest) return seen->by;
    if (const SignedBy* by = certificates_.Find(
            absl::string_view(certificate.data(), certificate.size()))) {
      certified = *by;
    }
  }
  if (!certified.has_value()) {
    // Kept even if the record's own signature fails below: forged records
    // under a real certificate cost one Ed25519 check each, not two.
    PEERKV_ASSIGN_OR_RETURN(certified, CheckCertificate(certificate));
    absl::MutexLock lock(&mu_);
    ++certificates_checked_;
    certificates_.Insert(std::string(certificate), *certified);
  }
  entry.by = *certified;
  signatures_checked_.fetch_add(1, std::memory_order_relaxed);
  if (!auth::Verify(entry.by.device, message, signature)) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "record signature of device %s does not match the record (forged, or altered after "
        "signing: keyspace, key, version, tombstone flag or value)",
        DeviceId(entry.by.device)));
  }
  absl::MutexLock lock(&mu_);
  records_.Insert(key, entry);
  return entry.by;
}

uint64_t RecordVerifier::certificates_checked() const {
  absl::MutexLock lock(&mu_);
  return certificates_checked_;
}

uint64_t RecordVerifier::signatures_checked() const {
  return signatures_checked_.load(std::memory_order_relaxed);
}

peerkv::RecordSigner MakeRecordSigner(std::shared_ptr<const Access> access,
                                      std::shared_ptr<const SigningKey> device_key,
                                      std::string device_certificate) {
  PEERKV_CHECK(access != nullptr && device_key != nullptr && !device_certificate.empty());
  return [access = std::move(access), device_key = std::move(device_key),
          certificate = std::move(device_certificate)](
             std::string_view keyspace, std::string_view key, const Version& version,
             bool deleted, std::string_view value) -> std::string {
    if (IsReservedKeyspace(keyspace) || !access->RequiresSignature(keyspace)) return "";
    return SignRecord(*device_key, certificate, keyspace, key, version, deleted, value);
  };
}

std::function<absl::Status(const Record&, MergeSource)> MakeRecordGate(
    std::shared_ptr<const Access> access, std::shared_ptr<const RecordVerifier> verifier,
    const PublicKey& local_user) {
  PEERKV_CHECK(access != nullptr && verifier != nullptr);
  return [access = std::move(access), verifier = std::move(verifier), local_user](
             const Record& record, MergeSource from) -> absl::Status {
    const bool own_write = from == MergeSource::kOwnWriteFromFriend;
    // Policy, group, device and friend records: signed by user keys and
    // checked by StoreOptions::reserved_check. Not evidence of a restore:
    // the device signature below is what vouches for one.
    if (IsReservedKeyspace(record.keyspace)) {
      if (!own_write) return absl::OkStatus();
      return absl::PermissionDeniedError(absl::StrFormat(
          "record of reserved keyspace %s carries no device signature: a friend's device "
          "sending it is no evidence that this replica lost its own writes",
          record.keyspace));
    }
    const bool required = access->RequiresSignature(record.keyspace);
    if (!required && from == MergeSource::kOwnDevice) return absl::OkStatus();
    if (record.signature.empty()) {
      return absl::PermissionDeniedError(absl::StrFormat(
          "record of keyspace %s is unsigned; %s", record.keyspace,
          own_write ? "a write of this replica's own id that a friend's device sent must carry "
                      "the signature of a device of this replica's user"
          : required ? "the keyspace is shared beyond its owner's devices, so its records must "
                       "carry their writer's signature"
                     : "records from a friend's device must carry their writer's signature"));
    }
    absl::StatusOr<SignedBy> by = verifier->Verify(record);
    if (!by.ok()) {
      return absl::Status(by.status().code(), absl::StrCat("record of keyspace ", record.keyspace,
                                                           ": ", by.status().message()));
    }
    if (own_write && by->user != local_user) {
      return absl::PermissionDeniedError(absl::StrFormat(
          "record of keyspace %s is signed by device %s of user %s, not by a device of this "
          "replica's user %s: a friend's device sending it is no evidence that this replica "
          "lost its own writes",
          record.keyspace, DeviceId(by->device), UserId(by->user), UserId(local_user)));
    }
    const Principal who{by->user, by->user == local_user};
    if (!access->MayWrite(who, record.keyspace)) {
      return absl::PermissionDeniedError(absl::StrFormat(
          "record of keyspace %s is signed by device %s of user %s, who may not write it",
          record.keyspace, DeviceId(by->device), UserId(by->user)));
    }
    return absl::OkStatus();
  };
}

}  // namespace peerkv::auth
