// auth/keys.cc: libsodium's Ed25519 and sealed boxes, and key files.
#include "auth/keys.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_format.h"
#include "common/macros.h"

namespace peerkv::auth {
namespace {

constexpr char kMagic[8] = {'P', 'K', 'V', 'K', 'E', 'Y', '0', '1'};

// sodium_init is idempotent and thread-safe; it must precede every call.
void InitSodium() {
  static const bool ok = [] { return sodium_init() >= 0; }();
  PEERKV_CHECK(ok);
}

std::string Errno(int err) { return strerror(err); }

std::string KindName(KeyKind kind) { return kind == KeyKind::kDevice ? "device" : "user"; }

std::string DirOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

absl::Status CheckStat(const std::string& path, const struct stat& st, bool directory) {
  const char* what = directory ? "directory" : "key file";
  if (directory ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s %s is not a %s", what, path, directory ? "directory" : "regular file"));
  }
  if (st.st_uid != ::geteuid()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s %s is owned by uid %d, not by this user (uid %d)", what, path, st.st_uid,
        ::geteuid()));
  }
  if ((st.st_mode & 077) != 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s %s has mode %04o; it must be %s (owner only): chmod %s it if it is yours", what,
        path, st.st_mode & 07777, directory ? "0700" : "0600", directory ? "700" : "600"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PublicKey> PublicKey::FromBytes(std::string_view raw, std::string_view what) {
  if (raw.size() != kPublicKeyBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s is %d bytes; an Ed25519 public key is %d", what, raw.size(), kPublicKeyBytes));
  }
  PublicKey key;
  std::memcpy(key.bytes.data(), raw.data(), kPublicKeyBytes);
  return key;
}

std::unique_ptr<SigningKey> SigningKey::Generate() {
  InitSodium();
  std::array<uint8_t, kSeedBytes> seed;
  randombytes_buf(seed.data(), seed.size());
  absl::StatusOr<std::unique_ptr<SigningKey>> key = FromSeed(
      std::string_view(reinterpret_cast<const char*>(seed.data()), seed.size()));
  sodium_memzero(seed.data(), seed.size());
  PEERKV_CHECK(key.ok());
  return std::move(*key);
}

absl::StatusOr<std::unique_ptr<SigningKey>> SigningKey::FromSeed(std::string_view seed) {
  InitSodium();
  if (seed.size() != kSeedBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "an Ed25519 seed is %d bytes, got %d", kSeedBytes, seed.size()));
  }
  std::unique_ptr<SigningKey> key(new SigningKey());
  std::memcpy(key->seed_.data(), seed.data(), kSeedBytes);
  PEERKV_CHECK(crypto_sign_seed_keypair(key->public_key_.bytes.data(), key->secret_.data(),
                                        key->seed_.data()) == 0);
  return key;
}

SigningKey::~SigningKey() {
  sodium_memzero(seed_.data(), seed_.size());
  sodium_memzero(secret_.data(), secret_.size());
}

std::string SigningKey::Sign(std::string_view message) const {
  std::string signature(crypto_sign_BYTES, '\0');
  PEERKV_CHECK(crypto_sign_detached(reinterpret_cast<unsigned char*>(signature.data()), nullptr,
                                    reinterpret_cast<const unsigned char*>(message.data()),
                                    message.size(), secret_.data()) == 0);
  return signature;
}

absl::StatusOr<std::string> SigningKey::Unseal(std::string_view sealed) const {
  InitSodium();
  if (sealed.size() < crypto_box_SEALBYTES) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "sealed box is %d bytes; it is at least %d", sealed.size(), crypto_box_SEALBYTES));
  }
  std::array<uint8_t, crypto_box_PUBLICKEYBYTES> x_public;
  std::array<uint8_t, crypto_box_SECRETKEYBYTES> x_secret;
  if (crypto_sign_ed25519_pk_to_curve25519(x_public.data(), public_key_.bytes.data()) != 0) {
    return absl::InternalError("this key has no X25519 form");
  }
  PEERKV_CHECK(crypto_sign_ed25519_sk_to_curve25519(x_secret.data(), secret_.data()) == 0);
  std::string plain(sealed.size() - crypto_box_SEALBYTES, '\0');
  const int rc = crypto_box_seal_open(reinterpret_cast<unsigned char*>(plain.data()),
                                      reinterpret_cast<const unsigned char*>(sealed.data()),
                                      sealed.size(), x_public.data(), x_secret.data());
  sodium_memzero(x_secret.data(), x_secret.size());
  if (rc != 0) {
    sodium_memzero(plain.data(), plain.size());
    return absl::PermissionDeniedError(
        "sealed box does not open with this device's key (sealed to another key, or altered)");
  }
  return plain;
}

bool Verify(const PublicKey& key, std::string_view message, std::string_view signature) {
  InitSodium();
  if (signature.size() != crypto_sign_BYTES) return false;
  return crypto_sign_verify_detached(reinterpret_cast<const unsigned char*>(signature.data()),
                                     reinterpret_cast<const unsigned char*>(message.data()),
                                     message.size(), key.bytes.data()) == 0;
}

absl::StatusOr<std::string> SealTo(const PublicKey& recipient, std::string_view plaintext) {
  InitSodium();
  std::array<uint8_t, crypto_box_PUBLICKEYBYTES> x_public;
  if (crypto_sign_ed25519_pk_to_curve25519(x_public.data(), recipient.bytes.data()) != 0) {
    return absl::InvalidArgumentError("the recipient's public key is not a valid Ed25519 point");
  }
  std::string sealed(plaintext.size() + crypto_box_SEALBYTES, '\0');
  PEERKV_CHECK(crypto_box_seal(reinterpret_cast<unsigned char*>(sealed.data()),
                               reinterpret_cast<const unsigned char*>(plaintext.data()),
                               plaintext.size(), x_public.data()) == 0);
  return sealed;
}

absl::Status CheckPrivate(const std::string& path, bool directory) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT) {
      return absl::NotFoundError(absl::StrFormat("%s does not exist", path));
    }
    return absl::FailedPreconditionError(absl::StrFormat("stat %s: %s", path, Errno(err)));
  }
  return CheckStat(path, st, directory);
}

absl::Status EnsurePrivateDir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    const int err = errno;
    return err == EACCES ? absl::PermissionDeniedError(
                               absl::StrFormat("mkdir %s: %s", dir, Errno(err)))
                         : absl::FailedPreconditionError(
                               absl::StrFormat("mkdir %s: %s", dir, Errno(err)));
  }
  return CheckPrivate(dir, /*directory=*/true);
}

absl::Status WriteKeyFile(const std::string& path, KeyKind kind, const SigningKey& key) {
  PEERKV_RETURN_IF_ERROR(CheckPrivate(DirOf(path), /*directory=*/true));
  std::string bytes(kMagic, sizeof(kMagic));
  bytes.push_back(static_cast<char>(kind));
  bytes.append(key.seed());
  bytes.append(key.public_key().view());
  PEERKV_CHECK(bytes.size() == kKeyFileBytes);
  // Written beside, then linked into place: link() fails if `path` exists,
  // so two processes creating the same key cannot both win, and a crash
  // never leaves a half-written key under the real name.
  const std::string tmp = absl::StrFormat("%s.tmp.%d", path, ::getpid());
  ::unlink(tmp.c_str());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    return absl::FailedPreconditionError(absl::StrFormat("create %s: %s", tmp, Errno(errno)));
  }
  size_t done = 0;
  absl::Status status;
  while (done < bytes.size() && status.ok()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) status = absl::InternalError(absl::StrFormat("write %s: %s", tmp, Errno(errno)));
    else done += static_cast<size_t>(n);
  }
  if (status.ok() && ::fsync(fd) != 0) {
    status = absl::InternalError(absl::StrFormat("fsync %s: %s", tmp, Errno(errno)));
  }
  sodium_memzero(bytes.data(), bytes.size());
  ::close(fd);
  if (status.ok() && ::link(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    status = err == EEXIST
                 ? absl::AlreadyExistsError(absl::StrFormat("key file %s already exists", path))
                 : absl::InternalError(absl::StrFormat("link %s: %s", path, Errno(err)));
  }
  ::unlink(tmp.c_str());
  if (!status.ok()) return status;
  const int dir_fd = ::open(DirOf(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SigningKey>> LoadKeyFile(const std::string& path, KeyKind kind) {
  PEERKV_RETURN_IF_ERROR(CheckPrivate(DirOf(path), /*directory=*/true));
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return absl::NotFoundError(absl::StrFormat("key file %s does not exist", path));
    if (err == ELOOP) {
      return absl::FailedPreconditionError(absl::StrFormat("key file %s is a symlink", path));
    }
    return absl::FailedPreconditionError(absl::StrFormat("open %s: %s", path, Errno(err)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::FailedPreconditionError(absl::StrFormat("stat %s: %s", path, Errno(err)));
  }
  if (absl::Status s = CheckStat(path, st, /*directory=*/false); !s.ok()) {
    ::close(fd);
    return s;
  }
  // One byte more than the layout, to tell a longer file from an exact one.
  std::array<char, kKeyFileBytes + 1> buf;
  size_t got = 0;
  while (got < buf.size()) {
    const ssize_t n = ::read(fd, buf.data() + got, buf.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return absl::DataLossError(absl::StrFormat("read %s: %s", path, Errno(err)));
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  struct Wipe {
    std::array<char, kKeyFileBytes + 1>& b;
    ~Wipe() { sodium_memzero(b.data(), b.size()); }
  } wipe{buf};
  if (got >= sizeof(kMagic) && std::memcmp(buf.data(), kMagic, sizeof(kMagic)) != 0) {
    return absl::DataLossError(absl::StrFormat(
        "key file %s is not a peerkv key file (it does not start with PKVKEY01)", path));
  }
  if (got < kKeyFileBytes) {
    return absl::DataLossError(absl::StrFormat(
        "key file %s is truncated: %d bytes, a key file is %d", path, got, kKeyFileBytes));
  }
  if (got > kKeyFileBytes) {
    return absl::DataLossError(absl::StrFormat(
        "key file %s is the wrong size: more than %d bytes, a key file is exactly %d", path,
        kKeyFileBytes, kKeyFileBytes));
  }
  if (buf[8] != static_cast<char>(kind)) {
    return absl::DataLossError(absl::StrFormat("key file %s does not hold a %s key", path,
                                               KindName(kind)));
  }
  PEERKV_ASSIGN_OR_RETURN(std::unique_ptr<SigningKey> key,
                          SigningKey::FromSeed(std::string_view(buf.data() + 9, kSeedBytes)));
  if (key->public_key().view() !=
      std::string_view(buf.data() + 9 + kSeedBytes, kPublicKeyBytes)) {
    return absl::DataLossError(absl::StrFormat(
        "key file %s is corrupt: its public key does not match its secret key", path));
  }
  return key;
}

}  // namespace peerkv::auth
