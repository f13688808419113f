// auth/policy.cc: policy and group records, their checks, StoreAccess and
// the policy/group commands.
#include "auth/policy.h"

#include <algorithm>
#include <map>
#include <set>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "auth/certificate.h"
#include "auth/ids.h"
#include "common/macros.h"
#include "store/validation.h"

namespace peerkv::auth {
namespace {

constexpr std::string_view kPolicyDomain{"peerkv policy v1\0", 17};
constexpr std::string_view kGroupDomain{"peerkv group v1\0", 16};
constexpr uint8_t kBodyVersion = 1;
constexpr uint32_t kMaxBodyBytes = 64 * 1024;
constexpr std::string_view kGroupMemberPrefix = "group:";

std::string SignedMessage(std::string_view domain, std::string_view key, std::string_view body) {
  std::string out(domain);
  PutU32(out, static_cast<uint32_t>(key.size()));
  out.append(key);
  out.append(body);
  return out;
}

std::string Envelope(const SigningKey& owner, std::string_view domain, std::string_view key,
                     const std::string& body) {
  PEERKV_CHECK(body.size() <= kMaxBodyBytes);
  std::string out(owner.public_key().view());
  PutU32(out, static_cast<uint32_t>(body.size()));
  out.append(body);
  out.append(owner.Sign(SignedMessage(domain, key, body)));
  return out;
}

struct Opened {
  PublicKey signer;
  std::string_view body;
};

// Splits an envelope and checks its signature.
absl::StatusOr<Opened> OpenEnvelope(std::string_view value, std::string_view domain,
                                    std::string_view key, const std::string& what) {
  Reader r(value, what);
  Opened out;
  PEERKV_ASSIGN_OR_RETURN(out.signer, r.Key("owner key"));
  PEERKV_ASSIGN_OR_RETURN(const uint32_t len, r.U32("body length"));
  if (len > kMaxBodyBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s has a %d-byte body; the limit is %d", what, len, kMaxBodyBytes));
  }
  PEERKV_ASSIGN_OR_RETURN(out.body, r.Take(len, "body"));
  PEERKV_ASSIGN_OR_RETURN(std::string_view signature, r.Take(kSignatureBytes, "signature"));
  PEERKV_RETURN_IF_ERROR(r.Done());
  if (!Verify(out.signer, SignedMessage(domain, key, out.body), signature)) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "%s: the signature does not verify (altered, forged, or moved from another key)", what));
  }
  return out;
}

void PutName(std::string& out, std::string_view name) {
  out.push_back(static_cast<char>(name.size()));
  out.append(name);
}

absl::StatusOr<std::string> TakeName(Reader& r, std::string_view field) {
  PEERKV_ASSIGN_OR_RETURN(const uint8_t len, r.Byte(field));
  PEERKV_ASSIGN_OR_RETURN(std::string_view name, r.Take(len, field));
  return std::string(name);
}

void PutWho(std::string& out, const Who& who) {
  out.push_back(static_cast<char>(who.kind));
  if (who.kind == Who::Kind::kUser) out.append(who.user.view());
  if (who.kind == Who::Kind::kGroup) PutName(out, who.group);
}

absl::StatusOr<Who> TakeWho(Reader& r, const std::string& what) {
  PEERKV_ASSIGN_OR_RETURN(const uint8_t kind, r.Byte("entry kind"));
  Who who;
  switch (kind) {
    case static_cast<uint8_t>(Who::Kind::kOwner):
    case static_cast<uint8_t>(Who::Kind::kPublic):
      who.kind = static_cast<Who::Kind>(kind);
      return who;
    case static_cast<uint8_t>(Who::Kind::kUser): {
      who.kind = Who::Kind::kUser;
      PEERKV_ASSIGN_OR_RETURN(who.user, r.Key("entry user"));
      return who;
    }
    case static_cast<uint8_t>(Who::Kind::kGroup): {
      who.kind = Who::Kind::kGroup;
      PEERKV_ASSIGN_OR_RETURN(who.group, TakeName(r, "entry group"));
      PEERKV_RETURN_IF_ERROR(ValidateGroupName(who.group, Cat({what, "'s group entry"})));
      return who;
    }
    default:
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s has an entry of kind %d; kinds are 1 owner, 2 public, 3 user, 4 group", what, kind));
  }
  return who;  // not reached
}

absl::Status CheckEntries(const std::vector<Who>& entries, std::string_view which,
                          const std::string& what) {
  if (entries.size() > kMaxPolicyEntries) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s has %d %s entries; the limit is %d", what, entries.size(), which, kMaxPolicyEntries));
  }
  for (size_t i = 0; i < entries.size(); ++i) {
    if (entries[i].kind == Who::Kind::kGroup) {
      PEERKV_RETURN_IF_ERROR(ValidateGroupName(entries[i].group, Cat({what, "'s group entry"})));
    }
    for (size_t j = 0; j < i; ++j) {
      if (entries[i] == entries[j]) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s names %s twice as %s", what, FormatWho(entries[i]), which));
      }
    }
  }
  return absl::OkStatus();
}

std::string PolicyWhat(std::string_view ks) { return Cat({"policy of keyspace '", ks, "'"}); }
std::string GroupWhat(std::string_view key) { return Cat({"group record '", key, "'"}); }

void PutRemovals(std::string& body, const std::vector<Removal>& removed) {
  body.push_back(static_cast<char>(removed.size()));
  for (const Removal& r : removed) {
    body.append(r.user.view());
    PutU64(body, r.before_hlc);
  }
}

absl::StatusOr<std::vector<Removal>> TakeRemovals(Reader& r, const std::string& what) {
  PEERKV_ASSIGN_OR_RETURN(const uint8_t n, r.Byte("removal count"));
  if (n > kMaxRemovals) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s lists %d removals; the limit is %d", what, n, kMaxRemovals));
  }
  std::vector<Removal> out;
  for (int i = 0; i < n; ++i) {
    Removal removal;
    PEERKV_ASSIGN_OR_RETURN(removal.user, r.Key("removed user"));
    PEERKV_ASSIGN_OR_RETURN(removal.before_hlc, r.U64("removal clock"));
    out.push_back(removal);
  }
  return out;
}

// `removed` with `user`'s removal at `hlc` (replacing an older one), the
// oldest dropped beyond the limit.
void NoteRemoval(std::vector<Removal>& removed, const PublicKey& user, uint64_t hlc) {
  removed.erase(std::remove_if(removed.begin(), removed.end(),
                               [&](const Removal& r) { return r.user == user; }),
                removed.end());
  removed.push_back(Removal{user, hlc});
  if (removed.size() > kMaxRemovals) removed.erase(removed.begin());
}

std::string PolicyBody(const Policy& p) {
  std::string body(1, static_cast<char>(kBodyVersion));
  PutU64(body, static_cast<uint64_t>(p.time_ms));
  body.push_back(static_cast<char>(p.readers.size()));
  for (const Who& w : p.readers) PutWho(body, w);
  body.push_back(static_cast<char>(p.writers.size()));
  for (const Who& w : p.writers) PutWho(body, w);
  PutRemovals(body, p.removed_writers);
  // The mode history, only when there is one (so a policy without it keeps
  // the bytes older peerkv wrote and reads): count, then per switch the
  // mode (1 lww, 2 strong), the version's hlc and origin.
  if (!p.modes.empty()) {
    body.push_back(static_cast<char>(p.modes.size()));
    for (const PolicyModeSwitch& m : p.modes) {
      body.push_back(static_cast<char>(m.strong ? 2 : 1));
      PutU64(body, m.since.hlc);
      PutU64(body, m.since.origin);
    }
  }
  return body;
}

std::string GroupBody(const Group& g) {
  std::string body(1, static_cast<char>(kBodyVersion));
  PutU64(body, static_cast<uint64_t>(g.time_ms));
  PutU32(body, static_cast<uint32_t>(g.members.size()));
  for (const Member& m : g.members) {
    if (m.group.empty()) {
      body.push_back(static_cast<char>(Who::Kind::kUser));
      body.append(m.user.view());
    } else {
      body.push_back(static_cast<char>(Who::Kind::kGroup));
      PutName(body, m.group);
    }
  }
  PutRemovals(body, g.removed);
  return body;
}

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// Every record of `keyspace`, in key order, within a bound.
absl::StatusOr<std::vector<Record>> ScanAll(Store& store, std::string_view keyspace,
                                            std::string prefix = "") {
  constexpr int kMaxPages = 1000;
  std::vector<Record> all;
  ScanOptions page;
  page.limit = 1000;
  page.prefix = std::move(prefix);
  for (int i = 0; i < kMaxPages; ++i) {
    PEERKV_ASSIGN_OR_RETURN(ScanResult result, store.Scan(keyspace, page));
    for (Record& r : result.records) all.push_back(std::move(r));
    if (!result.more || all.empty()) return all;
    page.start_after = all.back().key;
  }
  return absl::ResourceExhaustedError(
      absl::StrFormat("%s holds more than %d records", keyspace, kMaxPages * page.limit));
}

}  // namespace

absl::Status ValidateGroupName(std::string_view name, std::string_view what) {
  absl::Status valid = ValidateKeyspace(name);
  if (!valid.ok()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s '%s' is not a group name: group names match [a-z0-9][a-z0-9._-]{0,63}",
        what, name.substr(0, 80)));
  }
  if (name == "owner" || name == "public") {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s '%s' is not a group name: 'owner' and 'public' are WHO words", what, name));
  }
  return absl::OkStatus();
}

absl::StatusOr<Who> ParseWho(std::string_view text, std::string_view what) {
  Who who;
  if (text == "owner") return who;
  if (text == "public") {
    who.kind = Who::Kind::kPublic;
    return who;
  }
  // A user id if it parses as one; otherwise a group name (lower case),
  // and anything else is named as a bad user id if it looks like one.
  absl::StatusOr<PublicKey> user = ParseUserId(text, what);
  if (user.ok()) {
    who.kind = Who::Kind::kUser;
    who.user = *user;
    return who;
  }
  absl::Status name = ValidateGroupName(text, what);
  if (!name.ok() && text.size() >= 52) return user.status();
  if (!name.ok()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s '%s' is not 'owner', 'public', a user id or a group name", what,
        text.substr(0, 80)));
  }
  who.kind = Who::Kind::kGroup;
  who.group = std::string(text);
  return who;
}

std::string FormatWho(const Who& who) {
  switch (who.kind) {
    case Who::Kind::kOwner:
      return "owner";
    case Who::Kind::kPublic:
      return "public";
    case Who::Kind::kUser:
      return UserId(who.user);
    case Who::Kind::kGroup:
      return who.group;
  }
  return "?";
}

absl::StatusOr<Member> ParseMember(std::string_view text, std::string_view what) {
  Member m;
  if (StartsWith(text, kGroupMemberPrefix)) {
    m.group = std::string(text.substr(kGroupMemberPrefix.size()));
    PEERKV_RETURN_IF_ERROR(ValidateGroupName(m.group, what));
    return m;
  }
  PEERKV_ASSIGN_OR_RETURN(m.user, ParseUserId(text, what));
  return m;
}

std::string FormatMember(const Member& m) {
  return m.group.empty() ? UserId(m.user) : Cat({kGroupMemberPrefix, m.group});
}

std::string GroupKey(const PublicKey& owner, std::string_view name) {
  return Cat({UserId(owner), "/", name});
}

std::string FormatPolicyModes(const std::vector<PolicyModeSwitch>& modes) {
  std::vector<std::string> parts;
  for (const PolicyModeSwitch& m : modes) {
    parts.push_back(Cat({m.strong ? "strong@" : "lww@", m.since.ToString()}));
  }
  return absl::StrJoin(parts, ";");
}

absl::Status ValidatePolicyModes(const std::vector<PolicyModeSwitch>& modes,
                                 std::string_view what) {
  if (modes.size() > kMaxPolicyModeSwitches) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s lists %d mode switches; the limit is %d", what, modes.size(),
        kMaxPolicyModeSwitches));
  }
  for (size_t i = 0; i < modes.size(); ++i) {
    if (modes[i].since == Version{}) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: mode switch %d has version 0; a switch has its commit's version", what, i + 1));
    }
    if (i == 0 && !modes[i].strong) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: the first mode switch must be to strong (every keyspace starts lww)", what));
    }
    if (i > 0 && modes[i].strong == modes[i - 1].strong) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: mode switch %d is to %s again; switches alternate strong and lww", what, i + 1,
          modes[i].strong ? "strong" : "lww"));
    }
    if (i > 0 && !(modes[i - 1].since < modes[i].since)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: mode switch %d at %s is not after switch %d at %s; versions must ascend", what,
          i + 1, modes[i].since.ToString(), i, modes[i - 1].since.ToString()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<PolicyModeSwitch>> ParsePolicyModes(std::string_view text,
                                                               std::string_view what) {
  std::vector<PolicyModeSwitch> modes;
  if (text.empty()) return modes;
  const std::vector<std::string> parts =
      absl::StrSplit(absl::string_view(text.data(), text.size()), ';');
  if (parts.size() > kMaxPolicyModeSwitches) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s lists %d mode switches; the limit is %d", what, parts.size(),
        kMaxPolicyModeSwitches));
  }
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string_view part = parts[i];  // std's (absl's is a different type here)
    const size_t at = part.find('@');
    if (at == std::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: mode switch %d '%s' is not MODE@VERSION (strong@V or lww@V)", what, i + 1,
          part.substr(0, 80)));
    }
    const std::string_view mode = part.substr(0, at);
    if (mode != "strong" && mode != "lww") {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: mode switch %d has mode '%s'; give strong or lww", what, i + 1,
          mode.substr(0, 80)));
    }
    const std::string field = absl::StrFormat("%s: mode switch %d's version", what, i + 1);
    PEERKV_ASSIGN_OR_RETURN(const Version since, ParseVersion(part.substr(at + 1), field));
    modes.push_back(PolicyModeSwitch{mode == "strong", since});
  }
  PEERKV_RETURN_IF_ERROR(ValidatePolicyModes(modes, what));
  return modes;
}

absl::Status ValidatePolicy(std::string_view keyspace, const Policy& policy) {
  const std::string what = PolicyWhat(keyspace);
  PEERKV_RETURN_IF_ERROR(ValidatePolicyModes(policy.modes, what));
  PEERKV_RETURN_IF_ERROR(CheckEntries(policy.readers, "reader", what));
  PEERKV_RETURN_IF_ERROR(CheckEntries(policy.writers, "writer", what));
  if (policy.removed_writers.size() > kMaxRemovals) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s lists %d removals; the limit is %d", what, policy.removed_writers.size(),
        kMaxRemovals));
  }
  return absl::OkStatus();
}

absl::Status ValidateGroup(const Group& group) {
  const std::string what = GroupWhat(GroupKey(group.owner, group.name));
  PEERKV_RETURN_IF_ERROR(ValidateGroupName(group.name, "group name"));
  if (group.members.size() > kMaxGroupMembers) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s has %d members; the limit is %d", what, group.members.size(), kMaxGroupMembers));
  }
  if (group.removed.size() > kMaxRemovals) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s lists %d removals; the limit is %d", what, group.removed.size(), kMaxRemovals));
  }
  absl::flat_hash_set<std::string> seen;
  for (const Member& m : group.members) {
    if (!m.group.empty()) {
      PEERKV_RETURN_IF_ERROR(ValidateGroupName(m.group, Cat({what, "'s member group"})));
      if (m.group == group.name) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s contains itself; groups may not form cycles", what));
      }
    }
    if (!seen.insert(m.group.empty() ? std::string(m.user.view()) : Cat({"g", m.group})).second) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s lists member %s twice", what, FormatMember(m)));
    }
  }
  return absl::OkStatus();
}

std::string EncodePolicyRecord(const SigningKey& owner, std::string_view keyspace,
                               const Policy& policy) {
  PEERKV_CHECK(ValidatePolicy(keyspace, policy).ok());
  return Envelope(owner, kPolicyDomain, keyspace, PolicyBody(policy));
}

std::string EncodeGroupRecord(const SigningKey& owner, const Group& group) {
  PEERKV_CHECK(ValidateGroup(group).ok());
  return Envelope(owner, kGroupDomain, GroupKey(owner.public_key(), group.name), GroupBody(group));
}

absl::StatusOr<Policy> DecodePolicyRecord(std::string_view keyspace, std::string_view value) {
  const std::string what = PolicyWhat(keyspace);
  PEERKV_ASSIGN_OR_RETURN(Opened opened, OpenEnvelope(value, kPolicyDomain, keyspace, what));
  Reader r(opened.body, what);
  PEERKV_ASSIGN_OR_RETURN(const uint8_t version, r.Byte("body version"));
  if (version != kBodyVersion) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s has body version %d; this peerkv reads %d", what, version, kBodyVersion));
  }
  Policy p;
  p.owner = opened.signer;
  PEERKV_ASSIGN_OR_RETURN(const uint64_t t, r.U64("time"));
  p.time_ms = static_cast<int64_t>(t);
  for (std::vector<Who>* list : {&p.readers, &p.writers}) {
    PEERKV_ASSIGN_OR_RETURN(const uint8_t n, r.Byte("entry count"));
    if (n > kMaxPolicyEntries) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s has %d entries in one list; the limit is %d", what, n, kMaxPolicyEntries));
    }
    for (int i = 0; i < n; ++i) {
      PEERKV_ASSIGN_OR_RETURN(Who who, TakeWho(r, what));
      list->push_back(std::move(who));
    }
  }
  PEERKV_ASSIGN_OR_RETURN(p.removed_writers, TakeRemovals(r, what));
  if (r.offset() < opened.body.size()) {
    PEERKV_ASSIGN_OR_RETURN(const uint8_t n, r.Byte("mode switch count"));
    if (n == 0 || n > kMaxPolicyModeSwitches) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s lists %d mode switches; a history present holds 1 to %d", what, n,
          kMaxPolicyModeSwitches));
    }
    for (int i = 0; i < n; ++i) {
      PEERKV_ASSIGN_OR_RETURN(const uint8_t mode, r.Byte("mode"));
      if (mode != 1 && mode != 2) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s has a mode switch of kind %d; kinds are 1 lww, 2 strong", what, mode));
      }
      PolicyModeSwitch m;
      m.strong = mode == 2;
      PEERKV_ASSIGN_OR_RETURN(m.since.hlc, r.U64("mode switch clock"));
      PEERKV_ASSIGN_OR_RETURN(m.since.origin, r.U64("mode switch origin"));
      p.modes.push_back(m);
    }
  }
  PEERKV_RETURN_IF_ERROR(r.Done());
  PEERKV_RETURN_IF_ERROR(ValidatePolicy(keyspace, p));
  return p;
}

absl::StatusOr<Group> DecodeGroupRecord(std::string_view key, std::string_view value) {
  const std::string what = GroupWhat(key);
  const size_t slash = key.find('/');
  if (slash == key.npos) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: keys of %s are OWNER_USER_ID/GROUP_NAME", what, kGroupsKeyspace));
  }
  PEERKV_ASSIGN_OR_RETURN(const PublicKey owner,
                          ParseUserId(key.substr(0, slash), Cat({what, "'s owner"})));
  Group g;
  g.owner = owner;
  g.name = std::string(key.substr(slash + 1));
  PEERKV_RETURN_IF_ERROR(ValidateGroupName(g.name, Cat({what, "'s name"})));
  if (GroupKey(owner, g.name) != key) {
    return absl::InvalidArgumentError(absl::StrFormat("%s's key is not in canonical form", what));
  }
  PEERKV_ASSIGN_OR_RETURN(Opened opened, OpenEnvelope(value, kGroupDomain, key, what));
  if (opened.signer != owner) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "%s is signed by user %s, not by its owner %s: only a group's owner may change it",
        what, UserId(opened.signer), UserId(owner)));
  }
  Reader r(opened.body, what);
  PEERKV_ASSIGN_OR_RETURN(const uint8_t version, r.Byte("body version"));
  if (version != kBodyVersion) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s has body version %d; this peerkv reads %d", what, version, kBodyVersion));
  }
  PEERKV_ASSIGN_OR_RETURN(const uint64_t t, r.U64("time"));
  g.time_ms = static_cast<int64_t>(t);
  PEERKV_ASSIGN_OR_RETURN(const uint32_t n, r.U32("member count"));
  if (n > kMaxGroupMembers) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s has %d members; the limit is %d", what, n, kMaxGroupMembers));
  }
  for (uint32_t i = 0; i < n; ++i) {
    PEERKV_ASSIGN_OR_RETURN(const uint8_t kind, r.Byte("member kind"));
    Member m;
    if (kind == static_cast<uint8_t>(Who::Kind::kUser)) {
      PEERKV_ASSIGN_OR_RETURN(m.user, r.Key("member user"));
    } else if (kind == static_cast<uint8_t>(Who::Kind::kGroup)) {
      PEERKV_ASSIGN_OR_RETURN(m.group, TakeName(r, "member group"));
    } else {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s has a member of kind %d; kinds are 3 user, 4 group", what, kind));
    }
    g.members.push_back(std::move(m));
  }
  PEERKV_ASSIGN_OR_RETURN(g.removed, TakeRemovals(r, what));
  PEERKV_RETURN_IF_ERROR(r.Done());
  PEERKV_RETURN_IF_ERROR(ValidateGroup(g));
  return g;
}

// ---- StoreAccess ----

struct StoreAccess::Snapshot {
  std::map<std::string, Policy, std::less<>> policies;
  // GroupKey -> group.
  std::map<std::string, Group, std::less<>> groups;
  std::vector<std::string> invalid;
};

StoreAccess::StoreAccess(const PublicKey& local_user)
    : local_user_(local_user), snapshot_(std::make_shared<Snapshot>()) {}

StoreAccess::~StoreAccess() { Detach(); }

void StoreAccess::Attach(Store* store) {
  absl::MutexLock lock(&mu_);
  PEERKV_CHECK(store_ == nullptr);
  store_ = store;
  listener_ = store->AddCommitListener([this](const Store::CommitInfo& info) {
    for (const CommitChange& c : *info.changes) {
      if (c.keyspace == kPoliciesKeyspace || c.keyspace == kGroupsKeyspace) {
        generation_.fetch_add(1, std::memory_order_acq_rel);
        return;
      }
    }
  });
  loaded_generation_ = 0;  // read at the first call
  attached_.store(true, std::memory_order_release);
}

void StoreAccess::Detach() {
  Store* store = nullptr;
  int listener = 0;
  {
    absl::MutexLock lock(&mu_);
    store = store_;
    listener = listener_;
    store_ = nullptr;
    attached_.store(false, std::memory_order_release);
  }
  if (store != nullptr) store->RemoveCommitListener(listener);
}

std::shared_ptr<const StoreAccess::Snapshot> StoreAccess::Current() const {
  const uint64_t generation = generation_.load(std::memory_order_acquire);
  {
    absl::ReaderMutexLock lock(&mu_);
    if (store_ == nullptr || loaded_generation_ == generation) return snapshot_;
  }
  absl::MutexLock lock(&mu_);
  if (store_ == nullptr || loaded_generation_ == generation) return snapshot_;
  auto fresh = std::make_shared<Snapshot>();
  absl::StatusOr<std::vector<Record>> policies = ScanAll(*store_, kPoliciesKeyspace);
  absl::StatusOr<std::vector<Record>> groups = ScanAll(*store_, kGroupsKeyspace);
  if (!policies.ok() || !groups.ok()) {
    // Keep answering from what was read last; try again at the next call.
    return snapshot_;
  }
  for (const Record& r : *policies) {
    absl::StatusOr<Policy> p = DecodePolicyRecord(r.key, r.value);
    if (p.ok()) {
      fresh->policies.emplace(r.key, std::move(*p));
    } else {
      fresh->invalid.push_back(std::string(p.status().message()));
    }
  }
  for (const Record& r : *groups) {
    absl::StatusOr<Group> g = DecodeGroupRecord(r.key, r.value);
    if (g.ok()) {
      fresh->groups.emplace(r.key, std::move(*g));
    } else {
      fresh->invalid.push_back(std::string(g.status().message()));
    }
  }
  snapshot_ = std::move(fresh);
  loaded_generation_ = generation;
  return snapshot_;
}

namespace {

bool MemberOf(const std::map<std::string, Group, std::less<>>& groups, const PublicKey& owner,
              std::string_view name, const PublicKey& user, int depth,
              std::vector<std::string_view>& path) {
  if (depth >= kMaxGroupDepth) return false;
  for (std::string_view seen : path) {
    if (seen == name) return false;  // a cycle: not a member through it
  }
  auto it = groups.find(GroupKey(owner, name));
  if (it == groups.end()) return false;  // unknown: nobody is in it
  for (const Member& m : it->second.members) {
    if (m.group.empty() && m.user == user) return true;
  }
  path.push_back(name);
  for (const Member& m : it->second.members) {
    if (!m.group.empty() && MemberOf(groups, owner, m.group, user, depth + 1, path)) return true;
  }
  path.pop_back();
  return false;
}

bool Names(const std::map<std::string, Group, std::less<>>& groups, const Policy& p,
           const std::vector<Who>& list, const PublicKey& user) {
  for (const Who& w : list) {
    switch (w.kind) {
      case Who::Kind::kOwner:
        if (user == p.owner) return true;
        break;
      case Who::Kind::kPublic:
        return true;
      case Who::Kind::kUser:
        if (user == w.user) return true;
        break;
      case Who::Kind::kGroup: {
        std::vector<std::string_view> path;
        if (MemberOf(groups, p.owner, w.group, user, 0, path)) return true;
        break;
      }
    }
  }
  return false;
}

}  // namespace

bool StoreAccess::Allowed(const Snapshot& s, const Principal& who, std::string_view ks,
                          bool write) const {
  if (IsReservedKeyspace(ks)) {
    // Read by the local user; written only through the commands (which
    // use WriteReserved, not the client API).
    return who.local_user && !write;
  }
  const PublicKey& user = who.local_user ? local_user_ : who.user;
  auto it = s.policies.find(ks);
  if (it == s.policies.end()) return who.local_user;  // no policy: the local owner's alone
  const Policy& p = it->second;
  if (user == p.owner) return true;
  if (Names(s.groups, p, p.writers, user)) return true;
  return !write && Names(s.groups, p, p.readers, user);
}

bool StoreAccess::MayRead(const Principal& who, std::string_view ks) const {
  std::shared_ptr<const Snapshot> s = Current();
  return Allowed(*s, who, ks, /*write=*/false);
}

bool StoreAccess::MayWrite(const Principal& who, std::string_view ks) const {
  std::shared_ptr<const Snapshot> s = Current();
  return Allowed(*s, who, ks, /*write=*/true);
}

bool StoreAccess::MayWriteAt(const Principal& who, std::string_view ks, uint64_t hlc) const {
  std::shared_ptr<const Snapshot> s = Current();
  if (Allowed(*s, who, ks, /*write=*/true)) return true;
  if (who.local_user || IsReservedKeyspace(ks)) return false;
  auto it = s->policies.find(ks);
  if (it == s->policies.end()) return false;
  const Policy& p = it->second;
  auto removed_after = [&](const std::vector<Removal>& removed) {
    for (const Removal& r : removed) {
      if (r.user == who.user && hlc < r.before_hlc) return true;
    }
    return false;
  };
  if (removed_after(p.removed_writers)) return true;
  // The writers' groups and every group nested in them (bounded as
  // MemberOf, each visited once): a removal from a nested group, or of a
  // nested group (RemoveFromGroup notes its users then), is judged by its
  // clock as one from a group the policy names.
  std::vector<std::string_view> pending;
  absl::flat_hash_set<std::string_view> seen;
  for (const Who& w : p.writers) {
    if (w.kind == Who::Kind::kGroup && seen.insert(w.group).second) pending.push_back(w.group);
  }
  for (int depth = 0; depth < kMaxGroupDepth && !pending.empty(); ++depth) {
    std::vector<std::string_view> next;
    for (std::string_view name : pending) {
      auto g = s->groups.find(GroupKey(p.owner, name));
      if (g == s->groups.end()) continue;
      if (removed_after(g->second.removed)) return true;
      for (const Member& m : g->second.members) {
        if (!m.group.empty() && seen.insert(m.group).second) next.push_back(m.group);
      }
    }
    pending = std::move(next);
  }
  return false;
}

bool StoreAccess::RequiresSignature(std::string_view ks) const {
  std::shared_ptr<const Snapshot> s = Current();
  auto it = s->policies.find(ks);
  if (it == s->policies.end()) return false;
  for (const std::vector<Who>* list : {&it->second.readers, &it->second.writers}) {
    for (const Who& w : *list) {
      if (w.kind != Who::Kind::kOwner && !(w.kind == Who::Kind::kUser && w.user == it->second.owner)) {
        return true;
      }
    }
  }
  return false;
}

bool StoreAccess::MayReadRecord(const Principal& who, std::string_view ks,
                                std::string_view key) const {
  if (who.local_user) return MayRead(who, ks);
  if (ks == kPoliciesKeyspace) return MayRead(who, key);
  if (ks == kGroupsKeyspace) {
    std::shared_ptr<const Snapshot> s = Current();
    auto it = s->groups.find(key);
    if (it == s->groups.end()) return false;
    if (who.user == it->second.owner) return true;
    std::vector<std::string_view> path;
    return MemberOf(s->groups, it->second.owner, it->second.name, who.user, 0, path);
  }
  return MayRead(who, ks);
}

std::optional<Policy> StoreAccess::PolicyOf(std::string_view ks) const {
  std::shared_ptr<const Snapshot> s = Current();
  auto it = s->policies.find(ks);
  if (it == s->policies.end()) return std::nullopt;
  return it->second;
}

std::optional<PublicKey> StoreAccess::OwnerOf(std::string_view ks) const {
  std::optional<Policy> policy = PolicyOf(ks);
  if (!policy.has_value()) return std::nullopt;
  return policy->owner;
}

std::vector<PolicyModeSwitch> StoreAccess::ModesOf(std::string_view ks) const {
  std::shared_ptr<const Snapshot> s = Current();
  auto it = s->policies.find(ks);
  if (it == s->policies.end()) return {};
  return it->second.modes;
}

std::vector<std::pair<std::string, std::vector<PolicyModeSwitch>>> StoreAccess::PolicyModes()
    const {
  std::shared_ptr<const Snapshot> s = Current();
  std::vector<std::pair<std::string, std::vector<PolicyModeSwitch>>> out;
  for (const auto& [ks, policy] : s->policies) {
    if (!policy.modes.empty()) out.emplace_back(ks, policy.modes);
  }
  return out;
}

bool StoreAccess::IsMember(const PublicKey& owner, std::string_view name,
                           const PublicKey& user) const {
  std::shared_ptr<const Snapshot> s = Current();
  std::vector<std::string_view> path;
  return MemberOf(s->groups, owner, name, user, 0, path);
}

std::vector<std::string> StoreAccess::Invalid() const { return Current()->invalid; }

absl::Status StoreAccess::CheckPolicyOwner(std::string_view ks, const PublicKey& signer) const {
  std::shared_ptr<const Snapshot> s = Current();
  auto it = s->policies.find(ks);
  if (it != s->policies.end() && it->second.owner != signer) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "policy of keyspace '%s' is signed by user %s, but the keyspace is owned by user %s: "
        "only a keyspace's owner may set its policy",
        ks, UserId(signer), UserId(it->second.owner)));
  }
  if (signer == local_user_ || it != s->policies.end()) return absl::OkStatus();
  // Another user's first policy for this name: only if the name is not in
  // use here (a keyspace with records and no policy is the local user's).
  Store* store = nullptr;
  {
    absl::ReaderMutexLock lock(&mu_);
    store = store_;
  }
  if (store == nullptr) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "policy of keyspace '%s' is signed by user %s, not by this store's user: this store "
        "accepts only its own user's policies",
        ks, UserId(signer)));
  }
  ScanOptions one;
  one.limit = 1;
  one.include_tombstones = true;
  absl::StatusOr<ScanResult> held = store->Scan(ks, one);
  if (!held.ok()) return held.status();
  if (!held->records.empty()) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "policy of keyspace '%s' is signed by user %s, but this store's user owns a keyspace "
        "of that name: keyspace names shared with friends must be unique",
        ks, UserId(signer)));
  }
  return absl::OkStatus();
}

absl::Status CheckPolicyOrGroupRecord(const PublicKey& local_user, const StoreAccess* access,
                                      std::string_view keyspace, std::string_view key,
                                      std::string_view value, bool deleted) {
  if (deleted) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "record %s/%s is a tombstone; records of %s are never deleted (they are replaced)",
        keyspace, key, keyspace));
  }
  if (keyspace == kGroupsKeyspace) return DecodeGroupRecord(key, value).status();
  PEERKV_RETURN_IF_ERROR(ValidateKeyspace(key));
  if (IsReservedKeyspace(key)) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "policy of keyspace '%s': reserved keyspaces have fixed rules, not policies", key));
  }
  PEERKV_ASSIGN_OR_RETURN(const Policy p, DecodePolicyRecord(key, value));
  if (access != nullptr) return access->CheckPolicyOwner(key, p.owner);
  if (p.owner != local_user) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "policy of keyspace '%s' is signed by user %s, not by this store's user: this store "
        "accepts only its own user's policies",
        key, UserId(p.owner)));
  }
  return absl::OkStatus();
}

std::function<absl::Status(std::string_view, std::string_view, std::string_view, bool)>
ReservedCheckWithPolicies(const PublicKey& user, std::shared_ptr<const StoreAccess> access) {
  auto lists = ReservedCheck(user);
  return [user, access = std::move(access), lists = std::move(lists)](
             std::string_view keyspace, std::string_view key, std::string_view value,
             bool deleted) {
    if (keyspace == kPoliciesKeyspace || keyspace == kGroupsKeyspace) {
      return CheckPolicyOrGroupRecord(user, access.get(), keyspace, key, value, deleted);
    }
    return lists(keyspace, key, value, deleted);
  };
}

// ---- the commands ----

namespace {

absl::Status RequireOwnerKey(const Identity& identity, std::string_view action) {
  if (identity.user_key() != nullptr) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrFormat(
      "cannot %s: this device does not hold the key of user %s; only the owner's devices "
      "(those holding the user key) set policies and groups",
      action, UserId(identity.user())));
}

absl::StatusOr<std::optional<Group>> ReadGroup(Store& store, const PublicKey& owner,
                                               std::string_view name) {
  const std::string key = GroupKey(owner, name);
  PEERKV_ASSIGN_OR_RETURN(std::optional<Record> r, store.Get(kGroupsKeyspace, key));
  if (!r.has_value() || r->deleted) return std::optional<Group>();
  PEERKV_ASSIGN_OR_RETURN(Group g, DecodeGroupRecord(key, r->value));
  return std::optional<Group>(std::move(g));
}

absl::Status WriteGroup(const Identity& identity, Store& store, const Group& g) {
  PEERKV_RETURN_IF_ERROR(ValidateGroup(g));
  std::vector<Mutation> batch;
  batch.push_back(Mutation{kGroupsKeyspace, GroupKey(identity.user(), g.name),
                           EncodeGroupRecord(*identity.user_key(), g)});
  return store.WriteReserved(std::move(batch)).status();
}

// A new member of group `name` may now read the policy records that name
// it (or a group containing it) and the records of those groups: records a
// friend's device of that member may have been served past already, when
// they were not its to read (a pull never goes back). So AddToGroup writes
// them again, unchanged but for a new version, in the same batch: the next
// pull carries them, the device learns the keyspaces it may now read, and
// its reconciliation fetches their older records (README "Groups and
// policies", a reader granted later).
absl::Status AppendGrantResends(const Identity& identity, Store& store, std::string_view name,
                                std::vector<Mutation>& batch) {
  const PublicKey& owner = identity.user();
  PEERKV_ASSIGN_OR_RETURN(std::vector<Record> group_records,
                          ScanAll(store, kGroupsKeyspace, Cat({UserId(owner), "/"})));
  std::map<std::string, Group, std::less<>> groups;
  for (const Record& r : group_records) {
    absl::StatusOr<Group> g = DecodeGroupRecord(r.key, r.value);
    if (g.ok() && g->owner == owner) groups.emplace(g->name, std::move(*g));
  }
  // `name` and the groups that contain it, through at most kMaxGroupDepth
  // levels.
  std::set<std::string, std::less<>> containing = {std::string(name)};
  for (int depth = 0; depth < kMaxGroupDepth; ++depth) {
    bool grew = false;
    for (const auto& [group_name, g] : groups) {
      if (containing.count(group_name) > 0) continue;
      for (const Member& m : g.members) {
        if (!m.group.empty() && containing.count(m.group) > 0) {
          containing.insert(group_name);
          grew = true;
          break;
        }
      }
    }
    if (!grew) break;
  }
  for (const auto& [group_name, g] : groups) {
    if (group_name == name || containing.count(group_name) == 0) continue;
    batch.push_back(Mutation{kGroupsKeyspace, GroupKey(owner, group_name),
                             EncodeGroupRecord(*identity.user_key(), g)});
  }
  PEERKV_ASSIGN_OR_RETURN(std::vector<Record> policies, ScanAll(store, kPoliciesKeyspace));
  for (const Record& r : policies) {
    absl::StatusOr<Policy> p = DecodePolicyRecord(r.key, r.value);
    if (!p.ok() || p->owner != owner) continue;
    bool names = false;
    for (const std::vector<Who>* list : {&p->readers, &p->writers}) {
      for (const Who& w : *list) {
        names = names || (w.kind == Who::Kind::kGroup && containing.count(w.group) > 0);
      }
    }
    if (names) {
      batch.push_back(Mutation{kPoliciesKeyspace, r.key,
                               EncodePolicyRecord(*identity.user_key(), r.key, *p)});
    }
  }
  return absl::OkStatus();
}

// Whether group `from` of `owner` reaches group `target` (so adding
// `from` to `target` would close a cycle).
absl::StatusOr<bool> Reaches(Store& store, const PublicKey& owner, std::string_view from,
                             std::string_view target, int depth) {
  if (from == target) return true;
  if (depth >= kMaxGroupDepth) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "groups nest deeper than %d below group '%s'; the limit is %d", kMaxGroupDepth, from,
        kMaxGroupDepth));
  }
  PEERKV_ASSIGN_OR_RETURN(std::optional<Group> g, ReadGroup(store, owner, from));
  if (!g.has_value()) return false;
  for (const Member& m : g->members) {
    if (m.group.empty()) continue;
    PEERKV_ASSIGN_OR_RETURN(const bool reaches, Reaches(store, owner, m.group, target, depth + 1));
    if (reaches) return true;
  }
  return false;
}

// The users of group `name` of `owner` and of the groups nested in it
// (at most kMaxGroupDepth deep; a group met again is not read twice).
absl::Status UsersOf(Store& store, const PublicKey& owner, std::string_view name, int depth,
                     std::vector<PublicKey>& users) {
  if (depth >= kMaxGroupDepth) return absl::OkStatus();
  PEERKV_ASSIGN_OR_RETURN(std::optional<Group> g, ReadGroup(store, owner, name));
  if (!g.has_value()) return absl::OkStatus();
  for (const Member& m : g->members) {
    if (m.group.empty()) {
      if (std::find(users.begin(), users.end(), m.user) == users.end()) users.push_back(m.user);
    } else {
      PEERKV_RETURN_IF_ERROR(UsersOf(store, owner, m.group, depth + 1, users));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SetPolicy(const Identity& identity, Store& store, std::string_view ks,
                       std::vector<Who> readers, std::vector<Who> writers, int64_t now_ms) {
  PEERKV_RETURN_IF_ERROR(ValidateKeyspace(ks));
  if (IsReservedKeyspace(ks)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "keyspace '%s' is reserved: reserved keyspaces have fixed rules, not policies", ks));
  }
  PEERKV_RETURN_IF_ERROR(RequireOwnerKey(identity, "set a policy"));
  Policy p;
  p.owner = identity.user();
  p.readers = std::move(readers);
  p.writers = std::move(writers);
  p.time_ms = now_ms;
  PEERKV_RETURN_IF_ERROR(ValidatePolicy(ks, p));
  for (const std::vector<Who>* list : {&p.readers, &p.writers}) {
    for (const Who& w : *list) {
      if (w.kind != Who::Kind::kGroup) continue;
      PEERKV_ASSIGN_OR_RETURN(std::optional<Group> g, ReadGroup(store, p.owner, w.group));
      if (!g.has_value()) {
        return absl::NotFoundError(absl::StrFormat(
            "group '%s' does not exist; create it first with 'peerkv group create %s' (a "
            "policy names only its owner's groups)",
            w.group, w.group));
      }
    }
  }
  PEERKV_ASSIGN_OR_RETURN(std::optional<Record> existing, store.Get(kPoliciesKeyspace, ks));
  if (existing.has_value() && !existing->deleted) {
    absl::StatusOr<Policy> old = DecodePolicyRecord(ks, existing->value);
    if (old.ok() && old->owner != p.owner) {
      return absl::PermissionDeniedError(absl::StrFormat(
          "keyspace '%s' is owned by user %s (its policy is signed by that user): only a "
          "keyspace's owner may set its policy",
          ks, UserId(old->owner)));
    }
    if (old.ok()) {
      // The mode is not `policy set`'s to change (`keyspace mode` is).
      p.modes = old->modes;
      // Writers named directly before and not now: removed at this clock.
      p.removed_writers = old->removed_writers;
      for (const Who& w : old->writers) {
        if (w.kind != Who::Kind::kUser) continue;
        if (std::find(p.writers.begin(), p.writers.end(), w) != p.writers.end()) continue;
        NoteRemoval(p.removed_writers, w.user, store.clock_mark() + 1);
      }
      for (const Who& w : p.writers) {
        if (w.kind != Who::Kind::kUser) continue;
        p.removed_writers.erase(
            std::remove_if(p.removed_writers.begin(), p.removed_writers.end(),
                           [&](const Removal& r) { return r.user == w.user; }),
            p.removed_writers.end());
      }
    }
  }
  std::vector<Mutation> batch;
  batch.push_back(Mutation{kPoliciesKeyspace, std::string(ks),
                           EncodePolicyRecord(*identity.user_key(), ks, p)});
  return store.WriteReserved(std::move(batch)).status();
}

absl::Status SetPolicyModes(const Identity& identity, Store& store, std::string_view ks,
                            const std::vector<PolicyModeSwitch>& modes, int64_t now_ms) {
  PEERKV_RETURN_IF_ERROR(ValidateKeyspace(ks));
  PEERKV_RETURN_IF_ERROR(ValidatePolicyModes(modes, PolicyWhat(ks)));
  PEERKV_ASSIGN_OR_RETURN(std::optional<Record> existing, store.Get(kPoliciesKeyspace, ks));
  if (!existing.has_value() || existing->deleted) {
    return absl::NotFoundError(
        absl::StrFormat("keyspace '%s' has no policy to carry its mode", ks));
  }
  PEERKV_ASSIGN_OR_RETURN(Policy p, DecodePolicyRecord(ks, existing->value));
  if (p.owner != identity.user()) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "keyspace '%s' is owned by user %s (its policy is signed by that user): only its "
        "owner may switch its mode",
        ks, UserId(p.owner)));
  }
  if (p.modes == modes) return absl::OkStatus();
  PEERKV_RETURN_IF_ERROR(RequireOwnerKey(identity, "switch the mode of a keyspace with a policy"));
  p.modes = modes;
  p.time_ms = now_ms;
  std::vector<Mutation> batch;
  batch.push_back(Mutation{kPoliciesKeyspace, std::string(ks),
                           EncodePolicyRecord(*identity.user_key(), ks, p)});
  return store.WriteReserved(std::move(batch)).status();
}

absl::StatusOr<Policy> GetPolicy(Store& store, std::string_view ks) {
  PEERKV_RETURN_IF_ERROR(ValidateKeyspace(ks));
  PEERKV_ASSIGN_OR_RETURN(std::optional<Record> r, store.Get(kPoliciesKeyspace, ks));
  if (!r.has_value() || r->deleted) {
    return absl::NotFoundError(absl::StrFormat(
        "keyspace '%s' has no policy: it is private to its owner's devices", ks));
  }
  return DecodePolicyRecord(ks, r->value);
}

absl::Status CreateGroup(const Identity& identity, Store& store, std::string_view name,
                         int64_t now_ms) {
  PEERKV_RETURN_IF_ERROR(ValidateGroupName(name, "NAME"));
  PEERKV_RETURN_IF_ERROR(RequireOwnerKey(identity, "create a group"));
  PEERKV_ASSIGN_OR_RETURN(std::optional<Group> existing, ReadGroup(store, identity.user(), name));
  if (existing.has_value()) {
    return absl::AlreadyExistsError(absl::StrFormat("group '%s' exists already", name));
  }
  Group g;
  g.owner = identity.user();
  g.name = std::string(name);
  g.time_ms = now_ms;
  return WriteGroup(identity, store, g);
}

absl::Status AddToGroup(const Identity& identity, Store& store, std::string_view name,
                        const std::vector<Member>& members, int64_t now_ms) {
  PEERKV_RETURN_IF_ERROR(ValidateGroupName(name, "NAME"));
  PEERKV_RETURN_IF_ERROR(RequireOwnerKey(identity, "change a group"));
  PEERKV_ASSIGN_OR_RETURN(std::optional<Group> g, ReadGroup(store, identity.user(), name));
  if (!g.has_value()) {
    return absl::NotFoundError(absl::StrFormat(
        "group '%s' does not exist; create it with 'peerkv group create %s'", name, name));
  }
  size_t added = 0;
  for (const Member& m : members) {
    if (std::find(g->members.begin(), g->members.end(), m) != g->members.end()) continue;
    if (!m.group.empty()) {
      PEERKV_ASSIGN_OR_RETURN(std::optional<Group> sub, ReadGroup(store, identity.user(), m.group));
      if (!sub.has_value()) {
        return absl::NotFoundError(absl::StrFormat(
            "member group '%s' does not exist; create it with 'peerkv group create %s'", m.group,
            m.group));
      }
      PEERKV_ASSIGN_OR_RETURN(const bool cycle, Reaches(store, identity.user(), m.group, name, 0));
      if (cycle) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "adding group '%s' to group '%s' would make a cycle ('%s' contains '%s'); groups "
            "may not form cycles",
            m.group, name, m.group, name));
      }
    }
    g->members.push_back(m);
    if (m.group.empty()) {
      g->removed.erase(std::remove_if(g->removed.begin(), g->removed.end(),
                                      [&](const Removal& r) { return r.user == m.user; }),
                       g->removed.end());
    }
    ++added;
  }
  if (added == 0) {
    return absl::AlreadyExistsError(
        absl::StrFormat("every member given is in group '%s' already", name));
  }
  g->time_ms = now_ms;
  PEERKV_RETURN_IF_ERROR(ValidateGroup(*g));
  std::vector<Mutation> batch;
  batch.push_back(Mutation{kGroupsKeyspace, GroupKey(identity.user(), g->name),
                           EncodeGroupRecord(*identity.user_key(), *g)});
  PEERKV_RETURN_IF_ERROR(AppendGrantResends(identity, store, name, batch));
  return store.WriteReserved(std::move(batch)).status();
}

absl::Status RemoveFromGroup(const Identity& identity, Store& store, std::string_view name,
                             const Member& member, int64_t now_ms) {
  PEERKV_RETURN_IF_ERROR(ValidateGroupName(name, "NAME"));
  PEERKV_RETURN_IF_ERROR(RequireOwnerKey(identity, "change a group"));
  PEERKV_ASSIGN_OR_RETURN(std::optional<Group> g, ReadGroup(store, identity.user(), name));
  if (!g.has_value()) {
    return absl::NotFoundError(absl::StrFormat("group '%s' does not exist", name));
  }
  auto it = std::find(g->members.begin(), g->members.end(), member);
  if (it == g->members.end()) {
    return absl::NotFoundError(
        absl::StrFormat("%s is not a member of group '%s'", FormatMember(member), name));
  }
  g->members.erase(it);
  const uint64_t before_hlc = store.clock_mark() + 1;
  if (member.group.empty()) {
    NoteRemoval(g->removed, member.user, before_hlc);
  } else {
    // A group removed: its users (through its own nested groups too) lost
    // what this group gave them at this clock, as if each were removed
    // directly (MayWriteAt). Those still in through another member are
    // unaffected: MayWrite answers first.
    std::vector<PublicKey> users;
    PEERKV_RETURN_IF_ERROR(UsersOf(store, identity.user(), member.group, 0, users));
    for (const PublicKey& user : users) NoteRemoval(g->removed, user, before_hlc);
  }
  g->time_ms = now_ms;
  return WriteGroup(identity, store, *g);
}

absl::StatusOr<std::vector<Group>> ListGroups(const Identity& identity, Store& store,
                                              std::optional<std::string_view> name) {
  std::vector<Group> out;
  if (name.has_value()) {
    PEERKV_RETURN_IF_ERROR(ValidateGroupName(*name, "NAME"));
    PEERKV_ASSIGN_OR_RETURN(std::optional<Group> g, ReadGroup(store, identity.user(), *name));
    if (!g.has_value()) {
      return absl::NotFoundError(absl::StrFormat("group '%s' does not exist", *name));
    }
    out.push_back(std::move(*g));
    return out;
  }
  PEERKV_ASSIGN_OR_RETURN(std::vector<Record> records,
                          ScanAll(store, kGroupsKeyspace, Cat({UserId(identity.user()), "/"})));
  for (const Record& r : records) {
    absl::StatusOr<Group> g = DecodeGroupRecord(r.key, r.value);
    if (g.ok()) out.push_back(std::move(*g));
  }
  return out;
}

}  // namespace peerkv::auth
