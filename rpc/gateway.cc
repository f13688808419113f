// rpc/gateway.cc: the Gateway, the bootstrap capability every connection
// gets first; it hands out the Kv and Replica capabilities by the
// connection's identity: a local or plaintext connection and an own device
// get both, acting as the local user; a friend's device gets a Kv that acts
// as the friend (every call checked against the keyspace's policy,
// ServerOptions::access) and a Replica restricted to what the friend may
// read (README "Filtered replication"). Without ServerOptions::access a
// friend gets neither.
#include <string>
#include <utility>

#include "kj/async.h"
#include "rpc/peerkv.capnp.h"
#include "absl/strings/str_format.h"
#include "auth/access.h"
#include "auth/identity.h"
#include "auth/ids.h"
#include "rpc/server_loop.h"
#include "rpc/tls.h"

namespace peerkv::rpc {
namespace {

class GatewayImpl final : public wire::Gateway::Server {
 public:
  GatewayImpl(ServerLoop& loop, std::string peer, uint64_t connection_id,
              std::optional<AuthenticatedPeer> identity)
      : loop_(loop),
        peer_(std::move(peer)),
        connection_id_(connection_id),
        identity_(std::move(identity)) {}

  kj::Promise<void> kv(KvContext context) override {
    const bool friend_view = Denied() && loop_.options().access != nullptr;
    if (Denied() && !friend_view) return Deny("Kv");
    auth::Principal who;
    if (friend_view) {
      who.user = identity_->user;
    } else {
      who.local_user = true;
      if (loop_.options().identity != nullptr) who.user = loop_.options().identity->user();
    }
    context.getResults().setKv(NewKv(loop_, peer_, kj::addRef(*watch_window_), who));
    return kj::READY_NOW;
  }
  kj::Promise<void> replica(ReplicaContext context) override {
    // A friend's device, when this server has an auth::Access: a Replica
    // restricted to what its user may read (README "Filtered replication").
    const bool filtered = identity_.has_value() && identity_->role == PeerRole::kFriend &&
                          loop_.options().access != nullptr;
    if (Denied() && !filtered) return Deny("Replica");
    std::optional<auth::PublicKey> device;
    if (identity_.has_value()) device = identity_->device;
    context.getResults().setReplica(NewReplica(loop_, peer_, connection_id_, 0, device,
                                               filtered ? loop_.ReadableBy(*identity_) : nullptr,
                                               filtered ? loop_.ReservedReadableBy(*identity_)
                                                        : nullptr));
    return kj::READY_NOW;
  }

 private:
  bool Denied() const {
    return identity_.has_value() && identity_->role != PeerRole::kOwnDevice;
  }
  kj::Promise<void> Deny(const char* what) {
    // Only without an auth::Access (a server that checks no policies).
    const absl::Status denied = absl::PermissionDeniedError(absl::StrFormat(
        "device %s of friend %s may not use %s: this server checks no policies, so nothing "
        "is shared with friends",
        auth::DeviceId(identity_->device), auth::UserId(identity_->user), what));
    loop_.LogRejected(peer_, what, denied);
    return Refusal(denied);
  }

  ServerLoop& loop_;
  const std::string peer_;
  const uint64_t connection_id_;
  const std::optional<AuthenticatedPeer> identity_;
  // Shared by every watch of this connection.
  kj::Own<WatchWindow> watch_window_ = kj::refcounted<WatchWindow>();
};

}  // namespace

kj::Own<wire::Gateway::Server> NewGateway(ServerLoop& loop, std::string peer,
                                          uint64_t connection_id,
                                          std::optional<AuthenticatedPeer> identity) {
  return kj::heap<GatewayImpl>(loop, std::move(peer), connection_id, std::move(identity));
}

}  // namespace peerkv::rpc
