// auth/identity.cc: a data directory's keys and the user's signed device
// and friend lists.
#include "auth/identity.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "auth/ids.h"
#include "auth/policy.h"
#include "common/files.h"
#include "common/macros.h"

namespace peerkv::auth {
namespace {

constexpr char kDeviceKeyFile[] = "device.key";
constexpr char kUserKeyFile[] = "user.key";
constexpr char kUserFile[] = "user";
constexpr size_t kMaxUserFileBytes = 256;
constexpr size_t kMaxSealedBytes = 256;

constexpr uint8_t kDevicePayload = 1;
constexpr uint8_t kRemovedPayload = 2;
constexpr uint8_t kFriendPayload = 3;

constexpr std::string_view kDevicePrefix = "device/";
constexpr std::string_view kRemovedPrefix = "removed/";
constexpr std::string_view kFriendPrefix = "friend/";

std::string FormatMs(int64_t ms) { return FormatUtcMs(ms); }

struct DevicePayload {
  DeviceCertificate cert;
  std::string user_name;
  std::string sealed_user_seed;  // empty on the device that made the user
};
struct RemovedPayload {
  PublicKey device;
  int64_t removed_ms = 0;
};
struct FriendPayload {
  PublicKey user;
  std::string name;
  bool added = false;
  int64_t time_ms = 0;
};

std::string EncodeDevice(const DevicePayload& p) {
  std::string out(1, static_cast<char>(kDevicePayload));
  const std::string cert = p.cert.Encode();
  PutU32(out, static_cast<uint32_t>(cert.size()));
  out.append(cert);
  out.push_back(static_cast<char>(p.user_name.size()));
  out.append(p.user_name);
  PutU32(out, static_cast<uint32_t>(p.sealed_user_seed.size()));
  out.append(p.sealed_user_seed);
  return out;
}

std::string EncodeRemoved(const RemovedPayload& p) {
  std::string out(1, static_cast<char>(kRemovedPayload));
  out.append(p.device.view());
  PutU64(out, static_cast<uint64_t>(p.removed_ms));
  return out;
}

std::string EncodeFriend(const FriendPayload& p) {
  std::string out(1, static_cast<char>(kFriendPayload));
  out.append(p.user.view());
  out.push_back(static_cast<char>(p.name.size()));
  out.append(p.name);
  out.push_back(p.added ? 1 : 0);
  PutU64(out, static_cast<uint64_t>(p.time_ms));
  return out;
}

absl::Status ExpectType(Reader& r, uint8_t want, const std::string& what) {
  PEERKV_ASSIGN_OR_RETURN(const uint8_t type, r.Byte("payload type"));
  if (type != want) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s has payload type %d; its key calls for type %d", what, type, want));
  }
  return absl::OkStatus();
}

// The id in `key` after `prefix`, which must be the key of `payload_key`.
absl::Status CheckKeyNames(std::string_view key, std::string_view prefix, IdKind kind,
                           const PublicKey& payload_key, const std::string& what) {
  PEERKV_ASSIGN_OR_RETURN(const PublicKey named,
                          ParseId(kind, key.substr(prefix.size()), Cat({what, "'s key"})));
  if (named != payload_key) {
    return absl::PermissionDeniedError(
        absl::StrFormat("%s is about another %s than its key names", what,
                        kind == IdKind::kDevice ? "device" : "user"));
  }
  // One text per key: the canonical form, so a record cannot sit under a
  // second spelling of the same id.
  if (key.substr(prefix.size()) != FormatId(kind, named)) {
    return absl::InvalidArgumentError(absl::StrFormat("%s's key is not in canonical form", what));
  }
  return absl::OkStatus();
}

absl::StatusOr<DevicePayload> DecodeDevice(std::string_view key, std::string_view payload,
                                           const PublicKey& user, const std::string& what) {
  Reader r(payload, what);
  PEERKV_RETURN_IF_ERROR(ExpectType(r, kDevicePayload, what));
  DevicePayload p;
  PEERKV_ASSIGN_OR_RETURN(const uint32_t cert_len, r.U32("certificate length"));
  PEERKV_ASSIGN_OR_RETURN(std::string_view cert, r.Take(cert_len, "certificate"));
  PEERKV_ASSIGN_OR_RETURN(p.cert, VerifyDeviceCertificate(cert, user));
  PEERKV_ASSIGN_OR_RETURN(const uint8_t name_len, r.Byte("user name length"));
  PEERKV_ASSIGN_OR_RETURN(std::string_view name, r.Take(name_len, "user name"));
  p.user_name = std::string(name);
  PEERKV_RETURN_IF_ERROR(ValidateName(p.user_name, Cat({what, "'s user name"})));
  PEERKV_ASSIGN_OR_RETURN(const uint32_t sealed_len, r.U32("sealed key length"));
  if (sealed_len > kMaxSealedBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s has a %d-byte sealed key; the limit is %d", what, sealed_len, kMaxSealedBytes));
  }
  PEERKV_ASSIGN_OR_RETURN(std::string_view sealed, r.Take(sealed_len, "sealed key"));
  p.sealed_user_seed = std::string(sealed);
  PEERKV_RETURN_IF_ERROR(r.Done());
  PEERKV_RETURN_IF_ERROR(CheckKeyNames(key, kDevicePrefix, IdKind::kDevice, p.cert.device, what));
  return p;
}

absl::StatusOr<RemovedPayload> DecodeRemoved(std::string_view key, std::string_view payload,
                                             const std::string& what) {
  Reader r(payload, what);
  PEERKV_RETURN_IF_ERROR(ExpectType(r, kRemovedPayload, what));
  RemovedPayload p;
  PEERKV_ASSIGN_OR_RETURN(p.device, r.Key("device key"));
  PEERKV_ASSIGN_OR_RETURN(const uint64_t t, r.U64("removal time"));
  p.removed_ms = static_cast<int64_t>(t);
  PEERKV_RETURN_IF_ERROR(r.Done());
  PEERKV_RETURN_IF_ERROR(CheckKeyNames(key, kRemovedPrefix, IdKind::kDevice, p.device, what));
  return p;
}

absl::StatusOr<FriendPayload> DecodeFriend(std::string_view key, std::string_view payload,
                                           const std::string& what) {
  Reader r(payload, what);
  PEERKV_RETURN_IF_ERROR(ExpectType(r, kFriendPayload, what));
  FriendPayload p;
  PEERKV_ASSIGN_OR_RETURN(p.user, r.Key("friend's user key"));
  PEERKV_ASSIGN_OR_RETURN(const uint8_t name_len, r.Byte("name length"));
  PEERKV_ASSIGN_OR_RETURN(std::string_view name, r.Take(name_len, "name"));
  p.name = std::string(name);
  PEERKV_RETURN_IF_ERROR(ValidateName(p.name, Cat({what, "'s name"})));
  PEERKV_ASSIGN_OR_RETURN(const uint8_t state, r.Byte("state"));
  if (state > 1) {
    return absl::InvalidArgumentError(absl::StrFormat("%s has state %d; it is 0 or 1", what, state));
  }
  p.added = state == 1;
  PEERKV_ASSIGN_OR_RETURN(const uint64_t t, r.U64("time"));
  p.time_ms = static_cast<int64_t>(t);
  PEERKV_RETURN_IF_ERROR(r.Done());
  PEERKV_RETURN_IF_ERROR(CheckKeyNames(key, kFriendPrefix, IdKind::kUser, p.user, what));
  return p;
}

// Checks one reserved record and returns its payload.
absl::StatusOr<std::string> CheckRecord(const PublicKey& user, std::string_view keyspace,
                                        std::string_view key, std::string_view value,
                                        bool deleted) {
  const std::string what = Cat({"record ", keyspace, "/", key});
  if (keyspace != kDevicesKeyspace && keyspace != kFriendsKeyspace) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "keyspace '%s' is reserved and unknown to this peerkv (known: %s, %s, %s, %s)",
        keyspace, kDevicesKeyspace, kFriendsKeyspace, kPoliciesKeyspace, kGroupsKeyspace));
  }
  if (deleted) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "%s is a tombstone; records of %s are never deleted (a removal is a signed record)",
        what, keyspace));
  }
  PEERKV_ASSIGN_OR_RETURN(SignedRecord record, VerifySignedRecord(value, keyspace, key, user));
  if (keyspace == kDevicesKeyspace) {
    if (key.substr(0, kDevicePrefix.size()) == kDevicePrefix) {
      PEERKV_RETURN_IF_ERROR(DecodeDevice(key, record.payload, user, what).status());
    } else if (key.substr(0, kRemovedPrefix.size()) == kRemovedPrefix) {
      PEERKV_RETURN_IF_ERROR(DecodeRemoved(key, record.payload, what).status());
    } else {
      return absl::PermissionDeniedError(
          absl::StrFormat("%s: keys of %s start with device/ or removed/", what, keyspace));
    }
  } else {
    if (key.substr(0, kFriendPrefix.size()) != kFriendPrefix) {
      return absl::PermissionDeniedError(
          absl::StrFormat("%s: keys of %s start with friend/", what, keyspace));
    }
    PEERKV_RETURN_IF_ERROR(DecodeFriend(key, record.payload, what).status());
  }
  return std::move(record.payload);
}

// Every record of `keyspace`, in key order, within a bound.
absl::StatusOr<std::vector<Record>> ScanAll(const ScanPage& scan, std::string_view keyspace) {
  constexpr int kMaxPages = 1000;  // 1,000,000 records: far beyond any list
  std::vector<Record> all;
  ScanOptions page;
  page.limit = 1000;
  for (int i = 0; i < kMaxPages; ++i) {
    PEERKV_ASSIGN_OR_RETURN(ScanResult result, scan(keyspace, page));
    for (Record& r : result.records) all.push_back(std::move(r));
    if (!result.more || all.empty()) return all;
    page.start_after = all.back().key;
  }
  return absl::ResourceExhaustedError(
      absl::StrFormat("%s holds more than %d records", keyspace, kMaxPages * page.limit));
}

absl::Status WriteOne(Store& store, std::string_view keyspace, const std::string& key,
                      std::string value) {
  std::vector<Mutation> batch;
  batch.push_back(Mutation{std::string(keyspace), key, std::move(value)});
  return store.WriteReserved(std::move(batch)).status();
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path, size_t limit) {
  PEERKV_RETURN_IF_ERROR(CheckPrivate(path, /*directory=*/false));
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    return absl::FailedPreconditionError(absl::StrFormat("open %s: %s", path, strerror(errno)));
  }
  std::string out;
  char buf[512];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return absl::DataLossError(absl::StrFormat("read %s: %s", path, strerror(err)));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > limit) {
      ::close(fd);
      return absl::DataLossError(
          absl::StrFormat("%s is more than %d bytes; it is not a peerkv user file", path, limit));
    }
  }
  ::close(fd);
  return out;
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

}  // namespace

std::function<absl::Status(std::string_view, std::string_view, std::string_view, bool)>
ReservedCheck(const PublicKey& user) {
  return [user](std::string_view keyspace, std::string_view key, std::string_view value,
                bool deleted) {
    // Policies and groups (auth/policy.h); without a StoreAccess to tell a
    // keyspace's owner, only this user's own policies are kept.
    if (keyspace == kPoliciesKeyspace || keyspace == kGroupsKeyspace) {
      return CheckPolicyOrGroupRecord(user, nullptr, keyspace, key, value, deleted);
    }
    return CheckRecord(user, keyspace, key, value, deleted).status();
  };
}

std::string Identity::KeysDir(const std::string& data_dir) { return data_dir + "/keys"; }

absl::StatusOr<std::unique_ptr<Identity>> Identity::Load(const std::string& data_dir) {
  const std::string keys = KeysDir(data_dir);
  const std::string user_path = keys + "/" + kUserFile;
  if (!Exists(keys) || !Exists(user_path)) {
    return absl::NotFoundError(absl::StrFormat(
        "%s is not initialised (no %s): run peerkv --data %s init --user NAME (or --join USER_ID)",
        data_dir, user_path, data_dir));
  }
  PEERKV_RETURN_IF_ERROR(CheckPrivate(keys, /*directory=*/true));
  std::unique_ptr<Identity> id(new Identity());
  id->keys_dir_ = keys;
  PEERKV_ASSIGN_OR_RETURN(const std::string text, ReadSmallFile(user_path, kMaxUserFileBytes));
  // "USER_ID\nNAME\n", NAME empty while waiting to be added.
  std::vector<std::string> lines = absl::StrSplit(text, '\n');
  if (lines.size() != 3 || !lines[2].empty()) {
    return absl::DataLossError(absl::StrFormat(
        "%s is not a peerkv user file: it must be two lines, the user id and the name", user_path));
  }
  absl::StatusOr<PublicKey> user = ParseUserId(lines[0], Cat({user_path, ": user id"}));
  if (!user.ok()) return absl::DataLossError(user.status().message());
  id->user_ = *user;
  id->user_name_ = lines[1];
  if (!id->user_name_.empty()) {
    absl::Status name = ValidateName(id->user_name_, Cat({user_path, ": user name"}));
    if (!name.ok()) return absl::DataLossError(name.message());
  }
  PEERKV_ASSIGN_OR_RETURN(id->device_, LoadKeyFile(keys + "/" + kDeviceKeyFile, KeyKind::kDevice));
  absl::StatusOr<std::unique_ptr<SigningKey>> user_key =
      LoadKeyFile(keys + "/" + kUserKeyFile, KeyKind::kUser);
  if (user_key.ok()) {
    if ((*user_key)->public_key() != id->user_) {
      return absl::DataLossError(absl::StrFormat(
          "%s/%s holds the key of user %s, but %s names user %s", keys, kUserKeyFile,
          UserId((*user_key)->public_key()), user_path, UserId(id->user_)));
    }
    id->user_key_ = std::move(*user_key);
  } else if (!absl::IsNotFound(user_key.status())) {
    return user_key.status();
  }
  return id;
}

absl::Status Identity::SaveUserFile() const {
  const std::string path = keys_dir_ + "/" + kUserFile;
  return ReplaceFile(path, Cat({UserId(user_), "\n", user_name_, "\n"}), 0600);
}

namespace {

// The device key of a new identity: a fresh one, or the one a half-finished
// init left (it was never shown to anyone but this directory).
absl::StatusOr<std::unique_ptr<SigningKey>> NewDeviceKey(const std::string& keys) {
  const std::string path = keys + "/" + kDeviceKeyFile;
  absl::StatusOr<std::unique_ptr<SigningKey>> existing = LoadKeyFile(path, KeyKind::kDevice);
  if (existing.ok() || !absl::IsNotFound(existing.status())) return existing;
  std::unique_ptr<SigningKey> key = SigningKey::Generate();
  PEERKV_RETURN_IF_ERROR(WriteKeyFile(path, KeyKind::kDevice, *key));
  return key;
}

absl::Status CheckNotInitialised(const std::string& data_dir) {
  const std::string keys = Identity::KeysDir(data_dir);
  if (Exists(keys + "/" + kUserFile)) {
    return absl::AlreadyExistsError(absl::StrFormat(
        "%s is initialised already (%s/%s exists); see peerkv --data %s id", data_dir, keys,
        kUserFile, data_dir));
  }
  // The data directory with its parents, as the store would make it (the
  // identity may be made before the store opens: serve).
  for (size_t slash = data_dir.find('/', 1);; slash = data_dir.find('/', slash + 1)) {
    const std::string prefix = data_dir.substr(0, slash);
    if (::mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) {
      return absl::FailedPreconditionError(
          absl::StrFormat("mkdir %s: %s", prefix, strerror(errno)));
    }
    if (slash == std::string::npos) break;
  }
  return EnsurePrivateDir(keys);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Identity>> Identity::CreateUser(const std::string& data_dir,
                                                               std::string_view user_name) {
  PEERKV_RETURN_IF_ERROR(ValidateName(user_name, "user name"));
  PEERKV_RETURN_IF_ERROR(CheckNotInitialised(data_dir));
  std::unique_ptr<Identity> id(new Identity());
  id->keys_dir_ = KeysDir(data_dir);
  PEERKV_ASSIGN_OR_RETURN(id->device_, NewDeviceKey(id->keys_dir_));
  const std::string user_path = id->keys_dir_ + "/" + kUserKeyFile;
  // A user key left by a half-finished init is kept likewise.
  absl::StatusOr<std::unique_ptr<SigningKey>> user = LoadKeyFile(user_path, KeyKind::kUser);
  if (!user.ok()) {
    if (!absl::IsNotFound(user.status())) return user.status();
    user = SigningKey::Generate();
    PEERKV_RETURN_IF_ERROR(WriteKeyFile(user_path, KeyKind::kUser, **user));
  }
  id->user_key_ = std::move(*user);
  id->user_ = id->user_key_->public_key();
  id->user_name_ = std::string(user_name);
  // Last: the user file marks the identity complete.
  PEERKV_RETURN_IF_ERROR(id->SaveUserFile());
  return id;
}

absl::StatusOr<std::unique_ptr<Identity>> Identity::CreateJoining(const std::string& data_dir,
                                                                  const PublicKey& user) {
  PEERKV_RETURN_IF_ERROR(CheckNotInitialised(data_dir));
  std::unique_ptr<Identity> id(new Identity());
  id->keys_dir_ = KeysDir(data_dir);
  PEERKV_ASSIGN_OR_RETURN(id->device_, NewDeviceKey(id->keys_dir_));
  id->user_ = user;
  PEERKV_RETURN_IF_ERROR(id->SaveUserFile());
  return id;
}

absl::StatusOr<std::unique_ptr<Identity>> Identity::CreateDeviceOf(const std::string& data_dir,
                                                                   const SigningKey& user_key,
                                                                   std::string_view user_name) {
  PEERKV_RETURN_IF_ERROR(ValidateName(user_name, "user name"));
  PEERKV_RETURN_IF_ERROR(CheckNotInitialised(data_dir));
  std::unique_ptr<Identity> id(new Identity());
  id->keys_dir_ = KeysDir(data_dir);
  PEERKV_ASSIGN_OR_RETURN(id->device_, NewDeviceKey(id->keys_dir_));
  PEERKV_ASSIGN_OR_RETURN(id->user_key_, SigningKey::FromSeed(user_key.seed()));
  absl::Status written =
      WriteKeyFile(id->keys_dir_ + "/" + kUserKeyFile, KeyKind::kUser, *id->user_key_);
  if (!written.ok() && !absl::IsAlreadyExists(written)) return written;
  id->user_ = user_key.public_key();
  id->user_name_ = std::string(user_name);
  PEERKV_RETURN_IF_ERROR(id->SaveUserFile());
  return id;
}

absl::Status Identity::RequireUserKey(std::string_view action) const {
  if (user_key_ != nullptr) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrFormat(
      "cannot %s: this device (%s) is not yet added to user %s; run 'peerkv device add %s' on "
      "a device of that user and let the two sync",
      action, DeviceId(device_->public_key()), UserId(user_), DeviceId(device_->public_key())));
}

absl::StatusOr<std::string> Identity::IssueOwnCertificate(std::string_view name,
                                                         int64_t now_ms) const {
  PEERKV_RETURN_IF_ERROR(RequireUserKey("certify this device"));
  PEERKV_RETURN_IF_ERROR(ValidateName(name, "device name"));
  return IssueDeviceCertificate(*user_key_, device_->public_key(), name, now_ms).Encode();
}

absl::StatusOr<bool> Identity::CompleteJoin(Store& store) {
  if (user_key_ != nullptr) return true;
  const std::string key = Cat({kDevicePrefix, DeviceId(device_->public_key())});
  PEERKV_ASSIGN_OR_RETURN(std::optional<Record> record, store.Get(kDevicesKeyspace, key));
  if (!record.has_value()) return false;
  const std::string what = Cat({"record ", kDevicesKeyspace, "/", key});
  PEERKV_ASSIGN_OR_RETURN(std::string payload,
                          CheckRecord(user_, kDevicesKeyspace, key, record->value, record->deleted));
  PEERKV_ASSIGN_OR_RETURN(DevicePayload p, DecodeDevice(key, payload, user_, what));
  if (p.sealed_user_seed.empty()) {
    return absl::FailedPreconditionError(
        absl::StrFormat("%s carries no user key for this device", what));
  }
  PEERKV_ASSIGN_OR_RETURN(std::string seed, device_->Unseal(p.sealed_user_seed));
  absl::StatusOr<std::unique_ptr<SigningKey>> user_key = SigningKey::FromSeed(seed);
  std::fill(seed.begin(), seed.end(), '\0');
  if (!user_key.ok()) return user_key.status();
  if ((*user_key)->public_key() != user_) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "%s holds the key of user %s, not of user %s", what,
        UserId((*user_key)->public_key()), UserId(user_)));
  }
  absl::Status written = WriteKeyFile(keys_dir_ + "/" + kUserKeyFile, KeyKind::kUser, **user_key);
  if (!written.ok() && !absl::IsAlreadyExists(written)) return written;
  user_key_ = std::move(*user_key);
  user_name_ = p.user_name;
  PEERKV_RETURN_IF_ERROR(SaveUserFile());
  return true;
}

namespace {
absl::Status CheckValidity(int64_t valid_for_ms) {
  if (valid_for_ms >= kMinValidityMs && valid_for_ms <= kMaxValidityMs) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrFormat(
      "a device certificate's validity is %dms; it must be %dms..%dms (1 minute..%d days)",
      valid_for_ms, kMinValidityMs, kMaxValidityMs, kMaxValidityMs / kDayMs));
}
}  // namespace

bool RenewalDue(const DeviceEntry& d, int64_t now_ms) {
  if (d.legacy) return true;
  return d.expires_ms - now_ms < d.valid_for_ms / 3;
}

absl::Status Identity::AddDevice(Store& store, const PublicKey& device, std::string_view name,
                                 int64_t now_ms, int64_t valid_for_ms) {
  PEERKV_RETURN_IF_ERROR(ValidateName(name, "device name"));
  PEERKV_RETURN_IF_ERROR(CheckValidity(valid_for_ms));
  PEERKV_RETURN_IF_ERROR(RequireUserKey("add a device"));
  PEERKV_ASSIGN_OR_RETURN(const std::vector<DeviceEntry> devices, Devices(store));
  for (const DeviceEntry& d : devices) {
    if (d.device != device) continue;
    if (d.removed_ms.has_value()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "device %s was removed at %s; a removed device is never added again (on that "
          "device, start over with a new data directory and init --join)",
          DeviceId(device), FormatMs(*d.removed_ms)));
    }
    if (!d.name.empty()) {
      return absl::AlreadyExistsError(absl::StrFormat("device %s is added already, as %s",
                                                      DeviceId(device), d.name));
    }
  }
  DevicePayload p;
  p.cert = IssueDeviceCertificate(*user_key_, device, name, now_ms, valid_for_ms);
  p.user_name = user_name_;
  if (device != device_->public_key()) {
    PEERKV_ASSIGN_OR_RETURN(p.sealed_user_seed, SealTo(device, user_key_->seed()));
  }
  const std::string key = Cat({kDevicePrefix, DeviceId(device)});
  return WriteOne(store, kDevicesKeyspace, key,
                  EncodeSignedRecord(*user_key_, kDevicesKeyspace, key, EncodeDevice(p)));
}

absl::StatusOr<DeviceCertificate> Identity::RenewDevice(Store& store, const PublicKey& device,
                                                        int64_t now_ms,
                                                        std::optional<int64_t> valid_for_ms) {
  PEERKV_RETURN_IF_ERROR(RequireUserKey("renew a device's certificate"));
  if (valid_for_ms.has_value()) PEERKV_RETURN_IF_ERROR(CheckValidity(*valid_for_ms));
  PEERKV_ASSIGN_OR_RETURN(std::optional<Record> removed,
                          store.Get(kDevicesKeyspace, Cat({kRemovedPrefix, DeviceId(device)})));
  if (removed.has_value() && !removed->deleted) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "device %s was removed; a removed device is never renewed", DeviceId(device)));
  }
  const std::string key = Cat({kDevicePrefix, DeviceId(device)});
  const std::string what = Cat({"record ", kDevicesKeyspace, "/", key});
  PEERKV_ASSIGN_OR_RETURN(std::optional<Record> record, store.Get(kDevicesKeyspace, key));
  if (!record.has_value() || record->deleted) {
    return absl::NotFoundError(absl::StrFormat(
        "device %s is not in the device list; add it with peerkv device add %s",
        DeviceId(device), DeviceId(device)));
  }
  PEERKV_ASSIGN_OR_RETURN(std::string payload,
                          CheckRecord(user_, kDevicesKeyspace, key, record->value, false));
  PEERKV_ASSIGN_OR_RETURN(DevicePayload p, DecodeDevice(key, payload, user_, what));
  const int64_t validity =
      valid_for_ms.value_or(p.cert.legacy() ? kDefaultValidityMs
                                            : p.cert.ExpiresMs() - p.cert.issued_ms);
  // A validity outside today's limits (none is accepted by the decoder)
  // falls back to the default rather than failing the renewal.
  p.cert = IssueDeviceCertificate(*user_key_, device, p.cert.name, now_ms,
                                  CheckValidity(validity).ok() ? validity : kDefaultValidityMs);
  p.user_name = user_name_;
  PEERKV_RETURN_IF_ERROR(
      WriteOne(store, kDevicesKeyspace, key,
               EncodeSignedRecord(*user_key_, kDevicesKeyspace, key, EncodeDevice(p))));
  return p.cert;
}

absl::StatusOr<std::optional<DeviceCertificate>> Identity::ListedCertificate(
    Store& store, const PublicKey& device) const {
  PEERKV_ASSIGN_OR_RETURN(std::optional<Record> removed,
                          store.Get(kDevicesKeyspace, Cat({kRemovedPrefix, DeviceId(device)})));
  if (removed.has_value() && !removed->deleted) return std::nullopt;
  const std::string key = Cat({kDevicePrefix, DeviceId(device)});
  PEERKV_ASSIGN_OR_RETURN(std::optional<Record> record, store.Get(kDevicesKeyspace, key));
  if (!record.has_value() || record->deleted) return std::nullopt;
  PEERKV_ASSIGN_OR_RETURN(std::string payload,
                          CheckRecord(user_, kDevicesKeyspace, key, record->value, false));
  PEERKV_ASSIGN_OR_RETURN(
      DevicePayload p,
      DecodeDevice(key, payload, user_, Cat({"record ", kDevicesKeyspace, "/", key})));
  return p.cert;
}

absl::StatusOr<std::vector<DeviceCertificate>> Identity::RenewDue(Store& store, int64_t now_ms) {
  std::vector<DeviceCertificate> out;
  if (user_key_ == nullptr) return out;
  PEERKV_ASSIGN_OR_RETURN(const std::vector<DeviceEntry> devices, Devices(store));
  for (const DeviceEntry& d : devices) {
    if (d.removed_ms.has_value() || d.name.empty()) continue;
    if (now_ms - d.expires_ms > kExpiryToleranceMs) continue;  // expired: left to the user
    if (!RenewalDue(d, now_ms)) continue;
    PEERKV_ASSIGN_OR_RETURN(DeviceCertificate cert, RenewDevice(store, d.device, now_ms));
    out.push_back(std::move(cert));
  }
  return out;
}

absl::Status Identity::RemoveDevice(Store& store, const PublicKey& device, int64_t now_ms) {
  PEERKV_RETURN_IF_ERROR(RequireUserKey("remove a device"));
  if (device == device_->public_key()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "device %s is this device; remove it from another device of the user",
        DeviceId(device)));
  }
  const std::string key = Cat({kRemovedPrefix, DeviceId(device)});
  PEERKV_ASSIGN_OR_RETURN(std::optional<Record> existing, store.Get(kDevicesKeyspace, key));
  if (existing.has_value() && !existing->deleted) {
    return absl::AlreadyExistsError(absl::StrFormat("device %s is removed already",
                                                    DeviceId(device)));
  }
  RemovedPayload p{device, now_ms};
  return WriteOne(store, kDevicesKeyspace, key,
                  EncodeSignedRecord(*user_key_, kDevicesKeyspace, key, EncodeRemoved(p)));
}

namespace {
ScanPage ScanOf(Store& store) {
  return [&store](std::string_view keyspace, const ScanOptions& options) {
    return store.Scan(keyspace, options);
  };
}
}  // namespace

absl::StatusOr<std::vector<DeviceEntry>> Identity::Devices(Store& store,
                                                           std::vector<std::string>* invalid) const {
  return Devices(ScanOf(store), invalid);
}

absl::StatusOr<std::vector<DeviceEntry>> Identity::Devices(const ScanPage& scan,
                                                           std::vector<std::string>* invalid) const {
  PEERKV_ASSIGN_OR_RETURN(std::vector<Record> records, ScanAll(scan, kDevicesKeyspace));
  std::map<PublicKey, DeviceEntry> devices;
  for (const Record& r : records) {
    const std::string what = Cat({"record ", kDevicesKeyspace, "/", r.key});
    absl::StatusOr<std::string> payload =
        CheckRecord(user_, kDevicesKeyspace, r.key, r.value, r.deleted);
    absl::Status status = payload.status();
    if (payload.ok() && r.key.rfind(kDevicePrefix, 0) == 0) {
      absl::StatusOr<DevicePayload> p = DecodeDevice(r.key, *payload, user_, what);
      status = p.status();
      if (p.ok()) {
        DeviceEntry& e = devices[p->cert.device];
        e.device = p->cert.device;
        e.name = p->cert.name;
        e.added_ms = p->cert.issued_ms;
        e.expires_ms = p->cert.ExpiresMs();
        e.valid_for_ms = e.expires_ms - p->cert.issued_ms;
        e.legacy = p->cert.legacy();
      }
    } else if (payload.ok()) {
      absl::StatusOr<RemovedPayload> p = DecodeRemoved(r.key, *payload, what);
      status = p.status();
      if (p.ok()) {
        DeviceEntry& e = devices[p->device];
        e.device = p->device;
        e.removed_ms = p->removed_ms;
      }
    }
    if (!status.ok() && invalid != nullptr) invalid->push_back(std::string(status.message()));
  }
  std::vector<DeviceEntry> out;
  for (auto& [key, entry] : devices) out.push_back(std::move(entry));
  return out;
}

absl::Status Identity::AddFriend(Store& store, const PublicKey& user, std::string_view name,
                                 int64_t now_ms) {
  PEERKV_RETURN_IF_ERROR(ValidateName(name, "friend's name"));
  if (user == user_) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "USER_ID %s is your own user id; your devices are added with peerkv device add",
        UserId(user)));
  }
  PEERKV_RETURN_IF_ERROR(RequireUserKey("add a friend"));
  FriendPayload p{user, std::string(name), true, now_ms};
  const std::string key = Cat({kFriendPrefix, UserId(user)});
  return WriteOne(store, kFriendsKeyspace, key,
                  EncodeSignedRecord(*user_key_, kFriendsKeyspace, key, EncodeFriend(p)));
}

absl::Status Identity::RemoveFriend(Store& store, const PublicKey& user, int64_t now_ms) {
  PEERKV_RETURN_IF_ERROR(RequireUserKey("remove a friend"));
  PEERKV_ASSIGN_OR_RETURN(const std::vector<FriendEntry> friends, Friends(store));
  const FriendEntry* found = nullptr;
  for (const FriendEntry& f : friends) {
    if (f.user == user) found = &f;
  }
  if (found == nullptr) {
    return absl::NotFoundError(absl::StrFormat("user %s is not a friend", UserId(user)));
  }
  FriendPayload p{user, found->name, false, now_ms};
  const std::string key = Cat({kFriendPrefix, UserId(user)});
  return WriteOne(store, kFriendsKeyspace, key,
                  EncodeSignedRecord(*user_key_, kFriendsKeyspace, key, EncodeFriend(p)));
}

absl::StatusOr<std::vector<FriendEntry>> Identity::Friends(Store& store,
                                                           std::vector<std::string>* invalid) const {
  return Friends(ScanOf(store), invalid);
}

absl::StatusOr<std::vector<FriendEntry>> Identity::Friends(const ScanPage& scan,
                                                           std::vector<std::string>* invalid) const {
  PEERKV_ASSIGN_OR_RETURN(std::vector<Record> records, ScanAll(scan, kFriendsKeyspace));
  std::vector<FriendEntry> out;
  for (const Record& r : records) {
    const std::string what = Cat({"record ", kFriendsKeyspace, "/", r.key});
    absl::StatusOr<std::string> payload =
        CheckRecord(user_, kFriendsKeyspace, r.key, r.value, r.deleted);
    absl::StatusOr<FriendPayload> p =
        payload.ok() ? DecodeFriend(r.key, *payload, what) : payload.status();
    if (!p.ok()) {
      if (invalid != nullptr) invalid->push_back(std::string(p.status().message()));
      continue;
    }
    if (p->added) out.push_back(FriendEntry{p->user, p->name, p->time_ms});
  }
  return out;
}

}  // namespace peerkv::auth
