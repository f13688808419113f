// auth/identity.h: who a data directory is, and whom it trusts. Its files
// live in DIR/keys (mode 0700): `device.key` (this device's Ed25519 key,
// made on first open, never sent anywhere), `user.key` (the user's key, on
// every device of the user once added) and `user` (the user id and name).
// The user's device list and friend list are records signed by the user
// key in the reserved keyspaces peerkv.devices and peerkv.friends, so they
// replicate to the user's devices by the normal merge, and every store
// checks them (ReservedCheck) before it keeps one.
//
// Pairing: a new device runs `init --join USER_ID` (a device key, and the
// user id it waits for); a device holding the user key runs `device add
// DEVICE_ID`, which writes the new device's certificate together with the
// user key sealed to the new device's public key (only that device can
// open it). When that record reaches the new device by replication,
// CompleteJoin opens it and saves the user key: the device is then a full
// device of the user. A removal is a record of its own that no later add
// overrides.
#ifndef PEERKV_AUTH_IDENTITY_H_
#define PEERKV_AUTH_IDENTITY_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "auth/certificate.h"
#include "auth/keys.h"
#include "store/store.h"

namespace peerkv::auth {

inline constexpr char kDevicesKeyspace[] = "peerkv.devices";
inline constexpr char kFriendsKeyspace[] = "peerkv.friends";

// The check of StoreOptions::reserved_check for a store of user `user`:
// a record of peerkv.devices or peerkv.friends must be signed by `user`,
// bound to its key, and well formed (a device record's certificate signed
// by `user` for the device its key names). Tombstones and other reserved
// keyspaces are refused (PermissionDenied).
std::function<absl::Status(std::string_view, std::string_view, std::string_view, bool)>
ReservedCheck(const PublicKey& user);

struct DeviceEntry {
  PublicKey device;
  // From its certificate; empty if only its removal is known here.
  std::string name;
  int64_t added_ms = 0;  // its certificate's issue time (a renewal's, once renewed)
  // Its certificate's expiry (DeviceCertificate::ExpiresMs) and validity
  // (expiry minus issue time); 0 if only its removal is known here.
  int64_t expires_ms = 0;
  int64_t valid_for_ms = 0;
  // Its certificate is version 1 (made before certificates expired).
  bool legacy = false;
  std::optional<int64_t> removed_ms;
};

// When a certificate is due for renewal: in the last third of its
// validity (a version-1 one: at once, to give it an expiry of its own).
bool RenewalDue(const DeviceEntry& d, int64_t now_ms);

// One page of a keyspace's scan: Store::Scan, or rpc::Client::Scan.
using ScanPage =
    std::function<absl::StatusOr<ScanResult>(std::string_view keyspace, const ScanOptions&)>;

struct FriendEntry {
  PublicKey user;
  std::string name;
  int64_t added_ms = 0;
};

class Identity {
 public:
  // DIR/keys.
  static std::string KeysDir(const std::string& data_dir);

  // The identity of `data_dir`. NotFound if it has none yet (never
  // initialised); errors of LoadKeyFile for a bad key file;
  // FailedPrecondition or DataLoss naming the file for a bad `user` file.
  static absl::StatusOr<std::unique_ptr<Identity>> Load(const std::string& data_dir);
  // A new identity: a device key (kept if a half-finished init left one)
  // and a new user key for user `user_name`. AlreadyExists if `data_dir` has
  // an identity.
  static absl::StatusOr<std::unique_ptr<Identity>> CreateUser(const std::string& data_dir,
                                                              std::string_view user_name);
  // A device of user `user` waiting to be added (it holds no user key).
  // AlreadyExists if `data_dir` has an identity.
  static absl::StatusOr<std::unique_ptr<Identity>> CreateJoining(const std::string& data_dir,
                                                                 const PublicKey& user);

  // A new device of the user of `user_key`, already holding that key: the
  // state a completed join leaves (init --join, device add, sync), in one
  // step, for tools that provision devices they hold the user key for
  // (the test harness). AlreadyExists if `data_dir` has an identity.
  static absl::StatusOr<std::unique_ptr<Identity>> CreateDeviceOf(const std::string& data_dir,
                                                                  const SigningKey& user_key,
                                                                  std::string_view user_name);
  const SigningKey& device_key() const { return *device_; }
  const PublicKey& user() const { return user_; }
  // Empty while waiting to be added.
  const std::string& user_name() const { return user_name_; }
  bool holds_user_key() const { return user_key_ != nullptr; }
  // The user key, or null while waiting to be added: for auth/policy.cc,
  // which signs policies and groups with it.
  const SigningKey* user_key() const { return user_key_.get(); }
  // This device's certificate issued now by the user key, encoded
  // (DeviceCertificate::Encode), named `name`: what it shows on a TLS link
  // so that a device of the user that does not list it yet can check it
  // (rpc/peer_auth.h). FailedPrecondition while waiting to be added;
  // InvalidArgument for a bad name. Not safe concurrently with CompleteJoin.
  absl::StatusOr<std::string> IssueOwnCertificate(std::string_view name, int64_t now_ms) const;

  // For a device waiting to be added: if `store` holds this device's record
  // (replicated from the device that added it), opens the user key in it,
  // checks it is the expected user's, and saves it and the user's name.
  // Returns whether this device now holds the user key.
  absl::StatusOr<bool> CompleteJoin(Store& store);

  // Certifies `device` as the user's, named `name`. REQUIRES nothing; fails
  // with FailedPrecondition if this device holds no user key or `device` was
  // removed, AlreadyExists if it is listed already, InvalidArgument for a
  // bad name.
  // Its certificate is valid for `valid_for_ms` (kMinValidityMs..kMaxValidityMs,
  // else InvalidArgument).
  absl::Status AddDevice(Store& store, const PublicKey& device, std::string_view name,
                         int64_t now_ms, int64_t valid_for_ms = kDefaultValidityMs);
  // Re-certifies a listed device: a new certificate issued at `now_ms`,
  // valid for `valid_for_ms` if given, else for as long as its current one
  // was (a version-1 one: kDefaultValidityMs); name and sealed user key
  // kept. It replaces the device's record and replicates like the add.
  // Returns the new certificate. FailedPrecondition without the user key or
  // for a removed device; NotFound if `device` is not listed;
  // InvalidArgument for a validity out of limits.
  absl::StatusOr<DeviceCertificate> RenewDevice(Store& store, const PublicKey& device,
                                                int64_t now_ms,
                                                std::optional<int64_t> valid_for_ms = {});
  // `device`'s certificate in the device list: nullopt if it is not
  // listed, or was removed.
  absl::StatusOr<std::optional<DeviceCertificate>> ListedCertificate(Store& store,
                                                                     const PublicKey& device) const;
  // What serve does: renews every listed device that is not removed, not
  // expired (beyond kExpiryToleranceMs) and RenewalDue. An expired device
  // is left expired: only `device renew` (RenewDevice) lets it back in.
  // Returns the certificates issued. Nothing without the user key.
  absl::StatusOr<std::vector<DeviceCertificate>> RenewDue(Store& store, int64_t now_ms);
  // Records the removal of `device` (a record that wins over any add).
  // FailedPrecondition without the user key or for this device itself;
  // AlreadyExists if it is removed already.
  absl::Status RemoveDevice(Store& store, const PublicKey& device, int64_t now_ms);
  // Every device of the list, in id order. Records that fail their check
  // (written behind the store's back) are left out and named in
  // `*invalid` if given.
  absl::StatusOr<std::vector<DeviceEntry>> Devices(Store& store,
                                                   std::vector<std::string>* invalid = nullptr) const;
  // The same read through `scan` (a server's, over its local socket, while
  // it holds the store).
  absl::StatusOr<std::vector<DeviceEntry>> Devices(const ScanPage& scan,
                                                   std::vector<std::string>* invalid = nullptr) const;

  // InvalidArgument for this user's own id or a bad name; FailedPrecondition
  // without the user key.
  absl::Status AddFriend(Store& store, const PublicKey& user, std::string_view name,
                         int64_t now_ms);
  // NotFound if `user` is not a friend.
  absl::Status RemoveFriend(Store& store, const PublicKey& user, int64_t now_ms);
  // Current friends, in id order.
  absl::StatusOr<std::vector<FriendEntry>> Friends(Store& store,
                                                   std::vector<std::string>* invalid = nullptr) const;
  absl::StatusOr<std::vector<FriendEntry>> Friends(const ScanPage& scan,
                                                   std::vector<std::string>* invalid = nullptr) const;

 private:
  Identity() = default;
  absl::Status RequireUserKey(std::string_view action) const;
  absl::Status SaveUserFile() const;

  std::string keys_dir_;
  std::unique_ptr<SigningKey> device_;
  std::unique_ptr<SigningKey> user_key_;  // null while waiting to be added
  PublicKey user_;
  std::string user_name_;
};

}  // namespace peerkv::auth

#endif  // PEERKV_AUTH_IDENTITY_H_
