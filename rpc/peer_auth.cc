// rpc/peer_auth.cc: see peer_auth.h.
#include "rpc/peer_auth.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "auth/ids.h"
#include "common/macros.h"
#include "store/replica_id.h"

namespace peerkv::rpc {

absl::StatusOr<AuthenticatedPeer> Authorize(const TrustView& view, const PeerCredentials& peer) {
  const std::string id = auth::DeviceId(peer.device);
  const int64_t now = view.now_ms != 0 ? view.now_ms : absl::ToUnixMillis(absl::Now());
  for (const auth::DeviceEntry& d : view.devices) {
    if (d.device == peer.device && d.removed_ms.has_value()) {
      return absl::PermissionDeniedError(absl::StrFormat(
          "refused device %s: it was removed from user %s", id, auth::UserId(view.user)));
    }
  }
  // An expired certificate of this user or of a friend is refused as
  // expired; anyone else's falls through to "not a device of user ...".
  bool trusted_signer = false;
  if (peer.certificate.has_value()) {
    trusted_signer = peer.certificate->user == view.user;
    for (const auth::FriendEntry& f : view.friends) {
      trusted_signer = trusted_signer || f.user == peer.certificate->user;
    }
  }
  if (trusted_signer) {
    if (absl::Status fresh = auth::CheckNotExpired(*peer.certificate, now); !fresh.ok()) {
      return absl::PermissionDeniedError(absl::StrFormat(
          "refused device %s: %s; renew it with `peerkv device renew %s` on a device of user %s",
          id, fresh.message(), id, auth::UserId(peer.certificate->user)));
    }
  }
  const bool shows_own = peer.certificate.has_value() && peer.certificate->user == view.user;
  for (const auth::DeviceEntry& d : view.devices) {
    if (d.device != peer.device) continue;
    if (!shows_own && !d.name.empty() && now - d.expires_ms > auth::kExpiryToleranceMs) {
      return absl::PermissionDeniedError(absl::StrFormat(
          "refused device %s (%s): its device certificate expired at %s%s (now %s, %ds of clock "
          "skew allowed); renew it with `peerkv device renew %s` on a device of user %s",
          id, d.name, auth::FormatUtcMs(d.expires_ms),
          d.legacy ? ", a year after its issue: it was made before certificates carried an "
                     "expiry"
                   : "",
          auth::FormatUtcMs(now), auth::kExpiryToleranceMs / 1000, id, auth::UserId(view.user)));
    }
    return AuthenticatedPeer{peer.device, view.user, PeerRole::kOwnDevice, peer.certificate};
  }
  if (peer.certificate.has_value()) {
    // Authorize's caller checked the signature; these are the trust rules.
    PEERKV_CHECK(peer.certificate->device == peer.device);
    const auth::PublicKey& signer = peer.certificate->user;
    if (signer == view.user) {
      return AuthenticatedPeer{peer.device, view.user, PeerRole::kOwnDevice, peer.certificate};
    }
    for (const auth::FriendEntry& f : view.friends) {
      if (f.user == signer) {
        return AuthenticatedPeer{peer.device, signer, PeerRole::kFriend, peer.certificate};
      }
    }
  }
  return absl::PermissionDeniedError(absl::StrFormat(
      "refused device %s: not a device of user %s nor of a friend%s; add it with `peerkv device "
      "add %s`",
      id, auth::UserId(view.user),
      peer.certificate.has_value()
          ? absl::StrFormat(" (it is certified by user %s)", auth::UserId(peer.certificate->user))
          : "",
      id));
}

absl::Status Reauthorize(const TrustView& view, const AuthenticatedPeer& peer) {
  PEERKV_ASSIGN_OR_RETURN(const AuthenticatedPeer now,
                          Authorize(view, PeerCredentials{peer.device, peer.certificate}));
  if (now.role != peer.role || now.user != peer.user) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "refused device %s: it was let in as a device of %s %s, and is now one of %s %s",
        auth::DeviceId(peer.device), peer.role == PeerRole::kFriend ? "friend" : "user",
        auth::UserId(peer.user), now.role == PeerRole::kFriend ? "friend" : "user",
        auth::UserId(now.user)));
  }
  return absl::OkStatus();
}

std::optional<int64_t> RefusedAsExpiredAtMs(const TrustView& view, const AuthenticatedPeer& peer) {
  // Authorize's two expiry checks, as times instead of verdicts.
  std::optional<int64_t> at;
  auto earliest = [&at](int64_t expires_ms) {
    const int64_t refused = expires_ms + auth::kExpiryToleranceMs + 1;
    at = at.has_value() ? std::min(*at, refused) : refused;
  };
  bool trusted_signer = false;
  if (peer.certificate.has_value()) {
    trusted_signer = peer.certificate->user == view.user;
    for (const auth::FriendEntry& f : view.friends) {
      trusted_signer = trusted_signer || f.user == peer.certificate->user;
    }
  }
  if (trusted_signer) earliest(peer.certificate->ExpiresMs());
  const bool shows_own = peer.certificate.has_value() && peer.certificate->user == view.user;
  for (const auth::DeviceEntry& d : view.devices) {
    if (d.device != peer.device) continue;
    if (!shows_own && !d.name.empty() && !d.removed_ms.has_value()) earliest(d.expires_ms);
    break;
  }
  return at;
}

absl::Status CheckReplicaClaim(uint64_t replica_id, uint64_t incarnation,
                               const auth::PublicKey& device) {
  if (IsDerivedReplicaId(replica_id, incarnation, device.view())) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrFormat(
      "device %s claims replica id %016x, which is not minted from its key (incarnation %016x): "
      "the id of another device, or of a data directory made by an older peerkv (it takes a "
      "minted id when it starts with this one)",
      auth::DeviceId(device), replica_id, incarnation));
}

TrustSource StoreTrust(const auth::Identity* identity, Store* store, const WallClock* clock) {
  return [identity, store, clock]() -> absl::StatusOr<TrustView> {
    TrustView view;
    view.user = identity->user();
    if (clock != nullptr) view.now_ms = clock->NowMillis();
    PEERKV_ASSIGN_OR_RETURN(view.devices, identity->Devices(*store));
    PEERKV_ASSIGN_OR_RETURN(view.friends, identity->Friends(*store));
    return view;
  };
}

bool IsLoopbackAddress(const std::string& address) {
  std::string host = address;
  const size_t colon = address.rfind(':');
  if (colon != std::string::npos && address.find(':') == colon) host = address.substr(0, colon);
  if (!host.empty() && host.front() == '[') host = host.substr(1, host.find(']') - 1);
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

}  // namespace peerkv::rpc
