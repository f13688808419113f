// rpc/peer_auth.h: who may be on the other end of a TLS link, without kj
// types (ServerOptions and ClientOptions hold these). An endpoint presents
// its device key (the TLS certificate's key, proven by the handshake) and,
// if its device holds the user key, a device certificate issued by its
// user (carried in the X.509 certificate, rpc/tls.h). Authorize decides
// from what this side trusts: the user's device list, and its friends.
#ifndef PEERKV_RPC_PEER_AUTH_H_
#define PEERKV_RPC_PEER_AUTH_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "auth/certificate.h"
#include "auth/identity.h"
#include "auth/keys.h"
#include "store/clock.h"

namespace peerkv::rpc {

// What this endpoint presents on TLS links.
struct TlsIdentity {
  std::shared_ptr<const auth::SigningKey> key;
  // auth::DeviceCertificate::Encode() for `key`, or empty (a device waiting
  // to be added holds no user key to issue one).
  std::string device_certificate;
};

// What a peer proved in the handshake: its device key, and the device
// certificate it showed, already checked to be signed by its `user` for
// that key (absent if it showed none).
struct PeerCredentials {
  auth::PublicKey device;
  std::optional<auth::DeviceCertificate> certificate;
};

enum class PeerRole {
  kOwnDevice,  // a device of this side's user: everything
  kFriend,     // a device certified by a friend: nothing yet (issue 10)
};

struct AuthenticatedPeer {
  auth::PublicKey device;
  auth::PublicKey user;
  PeerRole role = PeerRole::kOwnDevice;
  // The device certificate it showed (PeerCredentials::certificate), kept
  // so that the link can be authorized again when the lists change
  // (Reauthorize).
  std::optional<auth::DeviceCertificate> certificate;
};

// What one side trusts at the moment of a handshake.
struct TrustView {
  auth::PublicKey user;
  // The user's device list (removed ones included, with removed_ms set).
  std::vector<auth::DeviceEntry> devices;
  std::vector<auth::FriendEntry> friends;
  // The time certificates are checked at (Unix ms); 0: the system clock.
  int64_t now_ms = 0;
};
using TrustSource = std::function<absl::StatusOr<TrustView>()>;

// A device listed and not removed, or one certified by `view.user` and not
// removed, is an own device; one certified by a friend is that friend.
// Otherwise PermissionDenied naming the device id: "not a device of user
// ... nor of a friend; add it with `peerkv device add <id>`", or that it
// was removed, or that its certificate expired (with the expiry time, and
// auth::kExpiryToleranceMs of clock skew allowed): the certificate it
// showed, or, if it showed none from `view.user`, the one in the device
// list (a device showing a valid one of `view.user` holds the user key,
// and would renew its listed one itself).
absl::StatusOr<AuthenticatedPeer> Authorize(const TrustView& view, const PeerCredentials& peer);

// Authorize again, for a link that `peer` was authorized on before `view`
// (the device or friend lists changed since: a removal reached this
// replica): OK if it would still be let in as the same user in the same
// role, else why not (Authorize's PermissionDenied: it was removed, or is
// no longer a friend's).
absl::Status Reauthorize(const TrustView& view, const AuthenticatedPeer& peer);

// The first moment (Unix ms, `view`'s clock) at which Reauthorize refuses
// `peer` as expired: its shown certificate's expiry if a trusted user
// signed it, and, if it shows none of `view.user`, its listed
// certificate's, whichever comes first, plus auth::kExpiryToleranceMs.
// nullopt when no expiry applies (a link that is refused already, or one
// that is let in on a certificate Authorize does not check the expiry of).
// A server closes a link at this moment (ServerLoop), not only when the
// lists next change.
std::optional<int64_t> RefusedAsExpiredAtMs(const TrustView& view, const AuthenticatedPeer& peer);

// Whether `device`, the authenticated key of a link, may say hello with
// `replica_id` and `incarnation`: only if the id is minted from that key
// with that incarnation (store/replica_id.h), so no device can claim
// another's id, whatever this replica remembers. PermissionDenied naming
// the device and the id otherwise (another device's id, or a peer whose
// data directory's id predates minted ids: it takes a minted one at its
// next start with this peerkv).
absl::Status CheckReplicaClaim(uint64_t replica_id, uint64_t incarnation,
                               const auth::PublicKey& device);

// The TrustSource of a server: `identity`'s lists read from `store` at
// each call, certificates checked at `clock`'s time (null: the system
// clock). All borrowed.
TrustSource StoreTrust(const auth::Identity* identity, Store* store,
                       const WallClock* clock = nullptr);

// Whether HOST of HOST:PORT (or of a bare host) is a loopback address
// (127.0.0.0/8, ::1, localhost): where plaintext may still be used.
bool IsLoopbackAddress(const std::string& address);

}  // namespace peerkv::rpc

#endif  // PEERKV_RPC_PEER_AUTH_H_
