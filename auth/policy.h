// auth/policy.h: keyspace policies and groups (README "Groups and
// policies"). A policy says who may read and write one keyspace; a group is
// a named set of users (and other groups) of one owner. Both are records of
// reserved keyspaces, signed by the owner's user key, merged by LWW:
//   peerkv.policies  key = the governed keyspace's name
//   peerkv.groups    key = "<owner user id>/<group name>"
// A record's value is an envelope: owner user key (32), body length (4, BE),
// body, Ed25519 signature (64) by the owner over a domain string, the key
// (length-prefixed) and the body. StoreAccess answers auth::Access from the
// records of a store, cached, re-read when either keyspace changes.
#ifndef PEERKV_AUTH_POLICY_H_
#define PEERKV_AUTH_POLICY_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <map>
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "auth/access.h"
#include "auth/identity.h"
#include "auth/keys.h"
#include "store/store.h"
#include "store/version.h"

namespace peerkv::auth {

inline constexpr char kPoliciesKeyspace[] = "peerkv.policies";
inline constexpr char kGroupsKeyspace[] = "peerkv.groups";

// Limits of one record (checked at set time and when a record is decoded).
inline constexpr size_t kMaxPolicyEntries = 64;   // --read entries, and --write entries
inline constexpr size_t kMaxGroupMembers = 1024;  // users and groups of one group
inline constexpr size_t kMaxGroupNameBytes = 64;
// Groups nest at most this deep; deeper (or a cycle) resolves as "not a
// member".
inline constexpr int kMaxGroupDepth = 16;

// One entry of a policy's readers or writers (WHO on the command line).
struct Who {
  enum class Kind : uint8_t { kOwner = 1, kPublic = 2, kUser = 3, kGroup = 4 };
  Kind kind = Kind::kOwner;
  PublicKey user;     // kUser
  std::string group;  // kGroup: a group of the policy's owner
  friend bool operator==(const Who& a, const Who& b) {
    return a.kind == b.kind && (a.kind != Kind::kUser || a.user == b.user) &&
           (a.kind != Kind::kGroup || a.group == b.group);
  }
};

// "owner", "public", a user id (auth/ids.h text form) or a group name.
// InvalidArgument naming `what` for anything else.
absl::StatusOr<Who> ParseWho(std::string_view text, std::string_view what);
// The text ParseWho reads back.
std::string FormatWho(const Who& who);

// Group names: [a-z0-9][a-z0-9._-]{0,63} ("owner" and "public" excepted).
absl::Status ValidateGroupName(std::string_view name, std::string_view what);

// A user removed (from a group, or from a policy's writers) and the
// store's clock (HLC) just before the removal was written: the removing
// record's version is above it. A write by that user with a version below
// it was made while the user could write (MayWriteAt).
struct Removal {
  PublicKey user;
  uint64_t before_hlc = 0;
  friend bool operator==(const Removal& a, const Removal& b) {
    return a.user == b.user && a.before_hlc == b.before_hlc;
  }
};
// Removals a record remembers (the latest per user, newest kept).
inline constexpr size_t kMaxRemovals = 64;

// One switch of the governed keyspace's mode (README "Strong keyspaces"):
// to strong or back to lww, by the consensus commit at `since`.
struct PolicyModeSwitch {
  bool strong = false;
  Version since;
  friend bool operator==(const PolicyModeSwitch&, const PolicyModeSwitch&) = default;
};
// A policy carries at most this many switches (consensus/ allows as many).
inline constexpr size_t kMaxPolicyModeSwitches = 64;

// The mode history's text form: "strong@V1;lww@V2;..." (V as
// Version::ToString prints it), oldest first; "" is no history.
std::string FormatPolicyModes(const std::vector<PolicyModeSwitch>& modes);
// InvalidArgument naming `what` and the rule for anything FormatPolicyModes
// would not print, or a history ValidatePolicyModes refuses.
absl::StatusOr<std::vector<PolicyModeSwitch>> ParsePolicyModes(std::string_view text,
                                                               std::string_view what);
// The rules of a mode history: at most kMaxPolicyModeSwitches, the first
// switch to strong, then alternating, in strictly ascending versions, none
// of them 0. InvalidArgument naming `what` and the rule.
absl::Status ValidatePolicyModes(const std::vector<PolicyModeSwitch>& modes,
                                 std::string_view what);

struct Policy {
  PublicKey owner;  // the signer
  std::vector<Who> readers;
  std::vector<Who> writers;
  int64_t time_ms = 0;  // when it was set (shown by policy get)
  // Users named directly as writers by an earlier policy and not now.
  std::vector<Removal> removed_writers;
  // The governed keyspace's mode switches (README "Strong keyspaces"),
  // oldest first. Empty: the policy says nothing of the mode (a policy
  // from before modes moved here, or a keyspace never switched), and the
  // mode record in peerkv.modes decides. Encoded only when not empty, so
  // such policies keep their old bytes.
  std::vector<PolicyModeSwitch> modes;
};

// A member of a group: a user, or (`group` non-empty) another group of the
// same owner.
struct Member {
  PublicKey user;
  std::string group;
  friend bool operator==(const Member& a, const Member& b) {
    return a.group == b.group && (!a.group.empty() || a.user == b.user);
  }
};
// "group:NAME" or a user id.
absl::StatusOr<Member> ParseMember(std::string_view text, std::string_view what);
std::string FormatMember(const Member& m);

struct Group {
  PublicKey owner;
  std::string name;
  std::vector<Member> members;
  int64_t time_ms = 0;
  // Users removed from this group (directly).
  std::vector<Removal> removed;
};

// The key of group `name` of `owner` in peerkv.groups.
std::string GroupKey(const PublicKey& owner, std::string_view name);

// Record values. Encode REQUIRES a record within the limits above (the
// callers validate first: ValidatePolicy / ValidateGroup).
std::string EncodePolicyRecord(const SigningKey& owner, std::string_view keyspace,
                               const Policy& policy);
std::string EncodeGroupRecord(const SigningKey& owner, const Group& group);
absl::Status ValidatePolicy(std::string_view keyspace, const Policy& policy);
absl::Status ValidateGroup(const Group& group);
// Decode and verify: InvalidArgument if malformed (truncated, trailing
// bytes, unknown version or kind, a limit exceeded, a bad name);
// PermissionDenied if the signature does not verify, or (groups) the signer
// is not the user the key names. Errors name the record and the rule.
absl::StatusOr<Policy> DecodePolicyRecord(std::string_view keyspace, std::string_view value);
absl::StatusOr<Group> DecodeGroupRecord(std::string_view key, std::string_view value);

// StoreAccess: auth::Access over a store's policy and group records.
// Construct before the store opens (ReservedCheck below asks it), Attach
// once the store is open, Detach before the store closes.
class StoreAccess final : public Access {
 public:
  explicit StoreAccess(const PublicKey& local_user);
  ~StoreAccess() override;
  StoreAccess(const StoreAccess&) = delete;
  StoreAccess& operator=(const StoreAccess&) = delete;

  // Reads the records now and re-reads them after every commit that
  // changes peerkv.policies or peerkv.groups (a commit listener). `store`
  // is borrowed until Detach.
  void Attach(Store* store);
  void Detach();

  bool MayRead(const Principal& who, std::string_view ks) const override;
  bool MayWrite(const Principal& who, std::string_view ks) const override;
  // The concurrent-write rule (README "Revocation"): MayWrite, or `who`
  // was removed (from a group the policy's writers name, or from the
  // writers themselves) after a write of clock `hlc`: the write was made
  // while `who` could write. For the merge gate of signed records.
  bool MayWriteAt(const Principal& who, std::string_view ks, uint64_t hlc) const override;
  bool RequiresSignature(std::string_view ks) const override;
  // Per record of a reserved keyspace (a friend's view): a policy record
  // is readable by whoever may read its keyspace; a group record by the
  // owner and the group's members. Other keyspaces: MayRead.
  bool MayReadRecord(const Principal& who, std::string_view ks,
                     std::string_view key) const override;

  // The policy of `ks`, if it has a valid one.
  std::optional<Policy> PolicyOf(std::string_view ks) const;
  std::optional<PublicKey> OwnerOf(std::string_view ks) const override;
  // The mode switches `ks`'s policy carries (empty: none, or no policy).
  // Cheaper than PolicyOf: asked for every merged record (the barrier).
  std::vector<PolicyModeSwitch> ModesOf(std::string_view ks) const;
  // Every keyspace whose policy carries mode switches, with them, in name
  // order.
  std::vector<std::pair<std::string, std::vector<PolicyModeSwitch>>> PolicyModes() const;
  // Whether `user` is in group `name` of `owner` (through nested groups, at
  // most kMaxGroupDepth deep; a cycle is "not a member").
  bool IsMember(const PublicKey& owner, std::string_view name, const PublicKey& user) const;
  // Records that failed their check when last read, one message each.
  std::vector<std::string> Invalid() const;

  // The owner rule for a policy record signed by `signer` arriving for
  // `ks` (ReservedCheck): the local user's own is accepted unless another
  // user's policy owns `ks`; another user's is accepted only if `ks` has no
  // policy of a third user and holds no records (no policy and records
  // means the local user owns it). PermissionDenied naming the rule.
  absl::Status CheckPolicyOwner(std::string_view ks, const PublicKey& signer) const;

 private:
  struct Snapshot;
  std::shared_ptr<const Snapshot> Current() const;
  bool Allowed(const Snapshot& s, const Principal& who, std::string_view ks, bool write) const;

  const PublicKey local_user_;
  mutable absl::Mutex mu_;
  Store* store_ ABSL_GUARDED_BY(mu_) = nullptr;
  int listener_ ABSL_GUARDED_BY(mu_) = 0;
  mutable std::shared_ptr<const Snapshot> snapshot_ ABSL_GUARDED_BY(mu_);
  mutable uint64_t loaded_generation_ ABSL_GUARDED_BY(mu_) = 0;
  // Bumped by the commit listener; a call that sees it moved re-reads.
  std::atomic<uint64_t> generation_{1};
  std::atomic<bool> attached_{false};
};

// StoreOptions::reserved_check for a store of user `user` that also holds
// policies and groups: the device and friend lists as ReservedCheck(user)
// checks them; a policy record must be well formed, its signature good and
// its signer the keyspace's owner (access->CheckPolicyOwner; with a null
// or unattached `access`, only the local user's own policies); a group
// record well formed and signed by the user its key names. Tombstones are
// refused. `access` is shared with the caller.
std::function<absl::Status(std::string_view, std::string_view, std::string_view, bool)>
ReservedCheckWithPolicies(const PublicKey& user, std::shared_ptr<const StoreAccess> access);

// The checks of one policy or group record (ReservedCheck's part for
// them), with the errors described above.
absl::Status CheckPolicyOrGroupRecord(const PublicKey& local_user, const StoreAccess* access,
                                      std::string_view keyspace, std::string_view key,
                                      std::string_view value, bool deleted);

// The commands (`peerkv policy`, `peerkv group`), on a store of
// `identity`'s user. Every one needs the user key (FailedPrecondition
// naming the rule otherwise: only the owner's devices set policies and
// groups).
//
// SetPolicy: InvalidArgument for a bad keyspace (reserved, '_', invalid),
// a limit, a duplicate entry; NotFound for a group the user has not
// created; PermissionDenied if another user's policy owns `ks`.
absl::Status SetPolicy(const Identity& identity, Store& store, std::string_view ks,
                       std::vector<Who> readers, std::vector<Who> writers, int64_t now_ms);
// NotFound if `ks` has no policy (it is private to its owner's devices).
absl::StatusOr<Policy> GetPolicy(Store& store, std::string_view ks);
// Rewrites `ks`'s policy with mode history `modes` (readers and writers as
// they are), signed by `identity`'s user key: how `keyspace mode` publishes
// a committed switch. NotFound if `ks` has no policy; PermissionDenied
// naming the owner if another user's policy owns it; FailedPrecondition
// without the user key; InvalidArgument for a history ValidatePolicyModes
// refuses. OK without writing if the policy carries `modes` already.
absl::Status SetPolicyModes(const Identity& identity, Store& store, std::string_view ks,
                            const std::vector<PolicyModeSwitch>& modes, int64_t now_ms);
// AlreadyExists if the group exists.
absl::Status CreateGroup(const Identity& identity, Store& store, std::string_view name,
                         int64_t now_ms);
// NotFound for an unknown group (or a member group not created);
// AlreadyExists if every member is in already; InvalidArgument for a
// cycle (a group that contains `name`), limits.
absl::Status AddToGroup(const Identity& identity, Store& store, std::string_view name,
                        const std::vector<Member>& members, int64_t now_ms);
// NotFound for an unknown group or a member not in it.
absl::Status RemoveFromGroup(const Identity& identity, Store& store, std::string_view name,
                             const Member& member, int64_t now_ms);
// The user's groups (only `name` if given: NotFound if unknown), in name
// order.
absl::StatusOr<std::vector<Group>> ListGroups(const Identity& identity, Store& store,
                                              std::optional<std::string_view> name);

}  // namespace peerkv::auth

#endif  // PEERKV_AUTH_POLICY_H_
