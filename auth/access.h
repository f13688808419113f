// auth/access.h: who may read and write which keyspace (README "Groups and
// policies"). The answer comes from the signed policy and group records in
// the reserved keyspaces peerkv.policies and peerkv.groups (auth/policy.h),
// so every replica that holds a keyspace enforces its policy. The gateway
// (client API), the replica service (what a peer may pull, reconcile and
// see) and the merge gate (whose records a replica keeps) all ask here.
#ifndef PEERKV_AUTH_ACCESS_H_
#define PEERKV_AUTH_ACCESS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "auth/keys.h"

namespace peerkv::auth {

// The user a request acts for: the local user (Unix-socket clients, tokens,
// own devices) or a friend's user (a friend's device over TLS).
struct Principal {
  PublicKey user;
  // True for this store's own user (its devices and local clients).
  bool local_user = false;
};

// Thread-safe; cheap per call (it caches the parsed records and re-reads
// them only when they change).
class Access {
 public:
  virtual ~Access() = default;

  // Whether `who` may read (get, scan, watch, pull) / write keyspace `ks`.
  // A keyspace without a policy is its local owner's alone: the local user
  // may do everything, anyone else nothing. Reserved keyspaces ("peerkv.*")
  // are answered by their own rules (a friend reads the policy and group
  // records of keyspaces it may read, nothing else).
  virtual bool MayRead(const Principal& who, std::string_view ks) const = 0;
  virtual bool MayWrite(const Principal& who, std::string_view ks) const = 0;

  // Whether records of `ks` must carry their origin device's signature: the
  // keyspace is readable beyond its owner's devices (its policy names a
  // reader or writer other than the owner).
  virtual bool RequiresSignature(std::string_view ks) const = 0;

  // Per record (a friend's view of the reserved keyspaces): a record of
  // peerkv.policies is readable by whoever may read the keyspace it is the
  // policy of; one of peerkv.groups by the group's owner and members.
  // Other keyspaces: MayRead. (MayRead of peerkv.policies/peerkv.groups as
  // a whole is the local user's only.)
  virtual bool MayReadRecord(const Principal& who, std::string_view ks,
                             std::string_view key) const {
    (void)key;
    return MayRead(who, ks);
  }
  // The concurrent-write rule (README "Groups and policies", revocation):
  // MayWrite, or `who` lost the right to write `ks` by a record written
  // after clock `hlc` (a write made while `who` could write).
  virtual bool MayWriteAt(const Principal& who, std::string_view ks, uint64_t hlc) const {
    (void)hlc;
    return MayWrite(who, ks);
  }
  // The signer of `ks`'s policy, its owner; nullopt when it has none (then
  // it is the local user's). Only the owner may switch a keyspace's mode
  // (README "Strong keyspaces").
  virtual std::optional<PublicKey> OwnerOf(std::string_view ks) const {
    (void)ks;
    return std::nullopt;
  }
};

}  // namespace peerkv::auth

#endif  // PEERKV_AUTH_ACCESS_H_
