// auth/keys.h: Ed25519 keys (libsodium) and the files they live in. A
// SigningKey holds a secret seed (wiped when it goes away) and signs; a
// PublicKey verifies. A key file is owner-only (0600, in a 0700 directory,
// owned by this user) and of one exact layout; anything else is refused
// with an error naming the file and what is wrong. Secret keys never leave
// this module except sealed to a device's public key (SealTo).
#ifndef PEERKV_AUTH_KEYS_H_
#define PEERKV_AUTH_KEYS_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace peerkv::auth {

inline constexpr size_t kPublicKeyBytes = 32;
inline constexpr size_t kSeedBytes = 32;
inline constexpr size_t kSignatureBytes = 64;

// An Ed25519 public key. Values; comparable.
struct PublicKey {
  std::array<uint8_t, kPublicKeyBytes> bytes{};

  std::string_view view() const {
    return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
  }
  // InvalidArgument naming `what` if `raw` is not 32 bytes.
  static absl::StatusOr<PublicKey> FromBytes(std::string_view raw, std::string_view what);
  friend bool operator==(const PublicKey& a, const PublicKey& b) { return a.bytes == b.bytes; }
  friend bool operator!=(const PublicKey& a, const PublicKey& b) { return !(a == b); }
  friend bool operator<(const PublicKey& a, const PublicKey& b) { return a.bytes < b.bytes; }
};

// An Ed25519 key pair. Neither copyable nor movable: held by unique_ptr, so
// the secret lives in one place and is wiped in the destructor.
class SigningKey {
 public:
  // A fresh key from the operating system's entropy.
  static std::unique_ptr<SigningKey> Generate();
  // The key of a 32-byte seed.
  static absl::StatusOr<std::unique_ptr<SigningKey>> FromSeed(std::string_view seed);
  ~SigningKey();
  SigningKey(const SigningKey&) = delete;
  SigningKey& operator=(const SigningKey&) = delete;

  const PublicKey& public_key() const { return public_key_; }
  // The 64-byte detached signature of `message`.
  std::string Sign(std::string_view message) const;
  // Opens a box SealTo made for this key's public key. PermissionDenied if
  // it was not sealed to this key or was altered.
  absl::StatusOr<std::string> Unseal(std::string_view sealed) const;
  // The seed, for SealTo and key files only.
  std::string_view seed() const {
    return {reinterpret_cast<const char*>(seed_.data()), seed_.size()};
  }

 private:
  SigningKey() = default;
  std::array<uint8_t, kSeedBytes> seed_{};
  std::array<uint8_t, 64> secret_{};  // libsodium's seed || public key
  PublicKey public_key_;
};

// Whether `signature` is `key`'s signature of `message`.
bool Verify(const PublicKey& key, std::string_view message, std::string_view signature);

// `plaintext` encrypted so that only the holder of `recipient`'s secret
// key can read it (libsodium's sealed box over the X25519 form of the key).
absl::StatusOr<std::string> SealTo(const PublicKey& recipient, std::string_view plaintext);

// What a key file holds: a device's key or a user's.
enum class KeyKind : char { kDevice = 'D', kUser = 'U' };

// The layout of a key file: 8-byte magic "PKVKEY01", one kind byte, the
// 32-byte seed and the 32-byte public key (checked against the seed).
inline constexpr size_t kKeyFileBytes = 8 + 1 + kSeedBytes + kPublicKeyBytes;

// Creates the directory `dir` with mode 0700 if missing (its parent must
// exist); FailedPrecondition if it exists with group or other access, is
// not a directory, or is not owned by this user.
absl::Status EnsurePrivateDir(const std::string& dir);

// Writes `key` to `path` (mode 0600) durably and atomically; AlreadyExists
// if `path` exists. The directory must be private (EnsurePrivateDir).
absl::Status WriteKeyFile(const std::string& path, KeyKind kind, const SigningKey& key);

// Reads a key file. NotFound if `path` does not exist; FailedPrecondition
// if it, or its directory, has group or other permissions, is not a regular
// file or is owned by someone else; DataLoss if it is truncated, of the
// wrong size, not a peerkv key file, of the other kind, or its public key
// does not match its seed. Every message names the file.
absl::StatusOr<std::unique_ptr<SigningKey>> LoadKeyFile(const std::string& path, KeyKind kind);

// Checks that `path` (a file or directory) has no group or other access
// and is owned by this user: FailedPrecondition naming it otherwise.
absl::Status CheckPrivate(const std::string& path, bool directory);

}  // namespace peerkv::auth

#endif  // PEERKV_AUTH_KEYS_H_
