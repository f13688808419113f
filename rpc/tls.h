// rpc/tls.h: TLS 1.3 for every TCP link (OpenSSL; kj-tls builds the context), pinned by
// key, never by a CA. Each endpoint shows a self-signed X.509 certificate
// made from its Ed25519 device key; if it has a device certificate from
// its user (rpc/peer_auth.h), that rides in a private X.509 extension. The
// handshake itself accepts any certificate (chain and hostname checks are
// replaced, see tls.cc); it proves only that the peer holds the key it
// shows. Who that key is, and what it may do, is decided afterwards by
// PeerOf + Authorize, so a stranger can be refused with its device id.
// Internal to rpc/.
#ifndef PEERKV_RPC_TLS_H_
#define PEERKV_RPC_TLS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kj/async-io.h"
#include "kj/compat/tls.h"
#include "rpc/peer_auth.h"

struct ssl_ctx_st;  // OpenSSL's SSL_CTX

namespace peerkv::rpc {

class TlsEndpoint {
 public:
  // A context presenting `identity` (REQUIRES: identity.key; its device
  // certificate is shown as given, the peer checks it). Accepts time out
  // after `handshake_timeout_ms` on `timer`.
  static absl::StatusOr<std::unique_ptr<TlsEndpoint>> Create(const TlsIdentity& identity,
                                                             kj::Timer& timer,
                                                             int handshake_timeout_ms);
  ~TlsEndpoint();

  // The server and client side of a handshake over `stream` (an accept
  // times out). The result's stream is TLS over `stream`, driven by
  // OpenSSL directly (kj-tls makes only the context); its peerIdentity is
  // read with PeerOf.
  kj::Promise<kj::AuthenticatedStream> Accept(kj::AuthenticatedStream stream);
  kj::Promise<kj::AuthenticatedStream> Connect(kj::AuthenticatedStream stream);

 private:
  TlsEndpoint() = default;
  ::ssl_ctx_st* Context();
  kj::Own<kj::TlsContext> context_;
  kj::Timer* timer_ = nullptr;
  int handshake_timeout_ms_ = 0;
};

// The key a TLS peer proved and the device certificate it showed.
// PermissionDenied (naming what is wrong) for no certificate, a key that
// is not Ed25519, or a device certificate that is malformed, not for that
// key, or badly signed.
absl::StatusOr<PeerCredentials> PeerOf(kj::PeerIdentity& identity);

// A kj exception carrying a refusal: FromKjException (convert.h) turns it
// back into PermissionDenied with `status`'s message.
kj::Exception Refusal(const absl::Status& status);
inline constexpr char kRefusalPrefix[] = "peerkv permission denied: ";

// Authorize for the link's peer: PeerOf, then Authorize against `trust`.
absl::StatusOr<AuthenticatedPeer> AuthenticatePeer(kj::PeerIdentity& identity,
                                                   const TrustSource& trust);

// Dials `address` ("unix:PATH" or HOST:PORT). A TCP address with `tls`:
// the handshake, then the server must be an own device under `trust` (a
// friend's or a stranger's server is refused: Refusal). Without `tls`,
// TCP is refused unless the host is loopback. `*peer`, if given, is set to
// the server's identity (unset for unix: and plaintext).
// `accept_friends`: a friend's server is accepted too (a replication link
// of a server with an auth::Access; *peer then says it is a friend's).
kj::Promise<kj::Own<kj::AsyncIoStream>> DialAuthenticated(
    kj::Network& network, const std::string& address, TlsEndpoint* tls, TrustSource trust,
    std::shared_ptr<std::optional<AuthenticatedPeer>> peer = nullptr,
    bool accept_friends = false);

// A TCP+TLS connection the server closed before answering anything
// (`status`, Unavailable): over TLS 1.3 the client's side of the handshake
// ends before the server has checked the client's certificate, so this is
// how a server refusing the client's device looks from the client. The
// same code, with a message naming `identity`'s device and how to add it.
absl::Status ClosedAfterHandshake(const absl::Status& status, const TlsIdentity& identity);

// TLS for the HTTP and RESP front ends (README "TLS for HTTP and RESP"):
// a server-side context showing a self-signed certificate of the device
// key, as the RPC listener's, that also names `names` (host names and IP
// addresses, subjectAltName) for clients that check them (curl,
// redis-cli: they pin it with --cacert), TLS 1.3, no client certificate
// asked. The same names give the same certificate (its PEM below) at
// every start.
struct FrontEndTls {
  std::shared_ptr<ssl_ctx_st> context;
  std::string certificate_pem;
};
absl::StatusOr<FrontEndTls> MakeFrontEndTls(const TlsIdentity& identity,
                                            const std::vector<std::string>& names);
// The server side of a handshake with a MakeFrontEndTls context over
// `stream` (the HTTP front end; RESP drives OpenSSL on its own loop);
// DISCONNECTED after `timeout_ms`, or a failure for a client that does
// not speak TLS.
kj::Promise<kj::Own<kj::AsyncIoStream>> AcceptFrontEndTls(ssl_ctx_st* context,
                                                         kj::Own<kj::AsyncIoStream> stream,
                                                         kj::Timer& timer, int timeout_ms);

}  // namespace peerkv::rpc

#endif  // PEERKV_RPC_TLS_H_
