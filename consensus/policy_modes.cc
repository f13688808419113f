// consensus/policy_modes.cc: the mode switches of keyspaces with policies,
// read from and written into their signed policy records.
#include "consensus/policy_modes.h"

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "auth/ids.h"

namespace peerkv::consensus {

std::vector<ModeSwitch> FromPolicy(const std::vector<auth::PolicyModeSwitch>& modes) {
  std::vector<ModeSwitch> out;
  out.reserve(modes.size());
  for (const auth::PolicyModeSwitch& m : modes) {
    out.push_back(ModeSwitch{m.strong ? Mode::kStrong : Mode::kLww, m.since});
  }
  return out;
}

std::vector<auth::PolicyModeSwitch> ToPolicy(const std::vector<ModeSwitch>& history) {
  std::vector<auth::PolicyModeSwitch> out;
  out.reserve(history.size());
  for (const ModeSwitch& s : history) {
    out.push_back(auth::PolicyModeSwitch{s.mode == Mode::kStrong, s.since});
  }
  return out;
}

AuthPolicyModes::AuthPolicyModes(const auth::StoreAccess* access,
                                 const auth::Identity* identity, Store* store,
                                 std::function<int64_t()> now_ms)
    : access_(access), identity_(identity), store_(store), now_ms_(std::move(now_ms)) {}

std::optional<std::vector<ModeSwitch>> AuthPolicyModes::ModesOf(
    std::string_view keyspace) const {
  const std::vector<auth::PolicyModeSwitch> modes = access_->ModesOf(keyspace);
  if (modes.empty()) return std::nullopt;
  return FromPolicy(modes);
}

std::vector<std::pair<std::string, std::vector<ModeSwitch>>> AuthPolicyModes::All() const {
  std::vector<std::pair<std::string, std::vector<ModeSwitch>>> out;
  for (auto& [keyspace, modes] : access_->PolicyModes()) {
    out.emplace_back(keyspace, FromPolicy(modes));
  }
  return out;
}

absl::Status AuthPolicyModes::MaySwitch(std::string_view keyspace) const {
  std::optional<auth::PublicKey> owner = access_->OwnerOf(keyspace);
  if (!owner.has_value()) return absl::OkStatus();  // the local user's
  if (*owner != identity_->user()) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "keyspace '%s' is owned by user %s (its policy is signed by that user); only its "
        "owner may switch its mode, and user %s is not its owner",
        keyspace, auth::UserId(*owner), auth::UserId(identity_->user())));
  }
  if (!identity_->holds_user_key()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "keyspace '%s' has a policy, which carries its mode: only the owner's devices holding "
        "the user key may switch it (this device holds none)",
        keyspace));
  }
  return absl::OkStatus();
}

absl::Status AuthPolicyModes::Publish(std::string_view keyspace,
                                      const std::vector<ModeSwitch>& history) {
  if (!access_->OwnerOf(keyspace).has_value()) return absl::OkStatus();  // no policy
  const int64_t now = now_ms_ ? now_ms_() : absl::ToUnixMillis(absl::Now());
  return auth::SetPolicyModes(*identity_, *store_, keyspace, ToPolicy(history), now);
}

}  // namespace peerkv::consensus
