// consensus/policy_modes.h: consensus::PolicyModes over auth/'s signed
// policies (README "Strong keyspaces", "Groups and policies"). A keyspace's
// mode switches live in its policy record, signed by its owner: replicas
// read them from there (auth::StoreAccess's cached policies), only the
// owner's devices holding the user key may switch, and `keyspace mode`
// publishes each committed switch by re-signing the policy
// (auth::SetPolicyModes). The one module that knows both auth/ and the
// strong layer; strong_keyspaces itself stays auth-free.
#ifndef PEERKV_CONSENSUS_POLICY_MODES_H_
#define PEERKV_CONSENSUS_POLICY_MODES_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "auth/identity.h"
#include "auth/policy.h"
#include "consensus/strong_keyspaces.h"
#include "store/store.h"

namespace peerkv::consensus {

// The conversions between the policy's switches and the strong layer's.
std::vector<ModeSwitch> FromPolicy(const std::vector<auth::PolicyModeSwitch>& modes);
std::vector<auth::PolicyModeSwitch> ToPolicy(const std::vector<ModeSwitch>& history);

class AuthPolicyModes final : public PolicyModes {
 public:
  // All borrowed and must outlive this. `access` attached to `store`.
  // `now_ms`: the time a re-signed policy records (empty: the wall clock).
  AuthPolicyModes(const auth::StoreAccess* access, const auth::Identity* identity, Store* store,
                  std::function<int64_t()> now_ms = {});

  std::optional<std::vector<ModeSwitch>> ModesOf(std::string_view keyspace) const override;
  std::vector<std::pair<std::string, std::vector<ModeSwitch>>> All() const override;
  absl::Status MaySwitch(std::string_view keyspace) const override;
  absl::Status Publish(std::string_view keyspace,
                       const std::vector<ModeSwitch>& history) override;

 private:
  const auth::StoreAccess* const access_;
  const auth::Identity* const identity_;
  Store* const store_;
  const std::function<int64_t()> now_ms_;
};

}  // namespace peerkv::consensus

#endif  // PEERKV_CONSENSUS_POLICY_MODES_H_
