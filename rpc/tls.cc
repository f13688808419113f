// rpc/tls.cc: see tls.h. The OpenSSL calls kj-tls 0.9.2 has no option for
// live here and only here.
#include "rpc/tls.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <string>

#include "absl/strings/str_format.h"
#include "auth/ids.h"
#include "common/macros.h"

namespace peerkv::rpc {
namespace {

// kj::TlsContext keeps its SSL_CTX, and kj::TlsPeerIdentity the peer's
// X509, in private members, and 0.9.2 offers no custom verification. The
// standard loophole (an explicit template instantiation may name a private
// member) reaches the two, confined to this file:
//   - the context gets SSL_CTX_set_cert_verify_callback (accept any chain:
//     no CA, no hostname; kj's later SSL_get_verify_result check then sees
//     X509_V_OK) and TLS 1.3 as the minimum version;
//   - the peer's certificate is read for its key and extension.
// OpenSSL still checks the handshake's CertificateVerify signature with the
// certificate's key, so the peer holds the key it shows.
template <typename Tag, typename Tag::type Member>
struct Reach {
  friend typename Tag::type Get(Tag) { return Member; }
};
struct ContextTag {
  using type = void* kj::TlsContext::*;
  friend type Get(ContextTag);
};
struct PeerCertTag {
  using type = void* kj::TlsPeerIdentity::*;
  friend type Get(PeerCertTag);
};
template struct Reach<ContextTag, &kj::TlsContext::ctx>;
template struct Reach<PeerCertTag, &kj::TlsPeerIdentity::cert>;

// A private-arc OID for the device certificate extension.
constexpr char kDeviceCertificateOid[] = "1.3.6.1.4.1.59999.9.1";

int AcceptAnyChain(X509_STORE_CTX* store, void*) {
  X509_STORE_CTX_set_error(store, X509_V_OK);
  return 1;
}

ASN1_OBJECT* DeviceCertificateOid() {
  static ASN1_OBJECT* oid = OBJ_txt2obj(kDeviceCertificateOid, 1);
  return oid;
}

std::string OpensslError() {
  char buf[256] = "unknown error";
  if (unsigned long e = ERR_get_error()) ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return buf;
}

template <typename T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const { Free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509, X509_free>>;

std::string Der(X509* x) {
  unsigned char* out = nullptr;
  const int n = i2d_X509(x, &out);
  std::string der = n > 0 ? std::string(reinterpret_cast<char*>(out), n) : std::string();
  OPENSSL_free(out);
  return der;
}

// A self-signed certificate for `key` (subject: its device id), carrying
// `device_certificate` if not empty.
absl::StatusOr<std::pair<std::string, std::string>> MakeCertificate(const TlsIdentity& identity) {
  const std::string_view seed = identity.key->seed();
  PkeyPtr pkey(EVP_PKEY_new_raw_private_key(
      EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(seed.data()), seed.size()));
  if (pkey == nullptr) return absl::InternalError("Ed25519 key for TLS: " + OpensslError());
  X509Ptr x(X509_new());
  X509_set_version(x.get(), 2);
  uint64_t serial = 0;
  RAND_bytes(reinterpret_cast<unsigned char*>(&serial), sizeof(serial));
  ASN1_INTEGER_set_uint64(X509_get_serialNumber(x.get()), serial >> 1);
  // Validity is not what is checked (the key is): a wide window keeps
  // clock skew from mattering.
  X509_gmtime_adj(X509_getm_notBefore(x.get()), -86400L * 365);
  X509_gmtime_adj(X509_getm_notAfter(x.get()), 86400L * 365 * 50);
  const std::string cn = auth::DeviceId(identity.key->public_key());
  X509_NAME* name = X509_get_subject_name(x.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(x.get(), name);
  X509_set_pubkey(x.get(), pkey.get());
  if (!identity.device_certificate.empty()) {
    ASN1_OCTET_STRING* data = ASN1_OCTET_STRING_new();
    ASN1_OCTET_STRING_set(data,
                          reinterpret_cast<const unsigned char*>(identity.device_certificate.data()),
                          static_cast<int>(identity.device_certificate.size()));
    X509_EXTENSION* ext = X509_EXTENSION_create_by_OBJ(nullptr, DeviceCertificateOid(), 0, data);
    ASN1_OCTET_STRING_free(data);
    if (ext == nullptr || !X509_add_ext(x.get(), ext, -1)) {
      X509_EXTENSION_free(ext);
      return absl::InternalError("TLS certificate extension: " + OpensslError());
    }
    X509_EXTENSION_free(ext);
  }
  if (X509_sign(x.get(), pkey.get(), nullptr) <= 0) {
    return absl::InternalError("signing the TLS certificate: " + OpensslError());
  }
  unsigned char* key_der = nullptr;
  const int key_len = i2d_PrivateKey(pkey.get(), &key_der);
  if (key_len <= 0) return absl::InternalError("encoding the TLS key: " + OpensslError());
  std::string key(reinterpret_cast<char*>(key_der), key_len);
  OPENSSL_clear_free(key_der, key_len);
  return std::make_pair(Der(x.get()), std::move(key));
}

kj::ArrayPtr<const kj::byte> Bytes(const std::string& s) {
  return kj::arrayPtr(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}

}  // namespace

TlsEndpoint::~TlsEndpoint() = default;

absl::StatusOr<std::unique_ptr<TlsEndpoint>> TlsEndpoint::Create(const TlsIdentity& identity,
                                                                 kj::Timer& timer,
                                                                 int handshake_timeout_ms) {
  PEERKV_CHECK(identity.key != nullptr);
  // The device certificate is shown as given: the peer checks it.
  PEERKV_ASSIGN_OR_RETURN(auto made, MakeCertificate(identity));
  std::string key_der = std::move(made.second);
  std::unique_ptr<TlsEndpoint> endpoint(new TlsEndpoint());
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
    kj::TlsKeypair keypair{kj::TlsPrivateKey(Bytes(key_der)), kj::TlsCertificate(Bytes(made.first))};
    kj::TlsContext::Options options;
    options.useSystemTrustStore = false;
    options.verifyClients = true;  // a client must show a certificate
    options.defaultKeypair = keypair;
    options.timer = timer;
    options.acceptTimeout = handshake_timeout_ms * kj::MILLISECONDS;
    endpoint->context_ = kj::heap<kj::TlsContext>(kj::mv(options));
  })) {
    OPENSSL_cleanse(key_der.data(), key_der.size());
    return absl::InternalError(absl::StrFormat("TLS context: %s", e->getDescription().cStr()));
  }
  OPENSSL_cleanse(key_der.data(), key_der.size());
  SSL_CTX* ctx = static_cast<SSL_CTX*>((*endpoint->context_).*Get(ContextTag()));
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  SSL_CTX_set_cert_verify_callback(ctx, AcceptAnyChain, nullptr);
  return endpoint;
}

namespace {
// A handshake flight is several small writes: with Nagle's algorithm the
// second waits for the peer's delayed ACK (40 ms on Linux) at every step.
void NoDelay(kj::AsyncIoStream& stream) {
  int one = 1;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions(
                     [&] { stream.setsockopt(IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); })) {
    (void)e;  // not a TCP socket
  }
}
}  // namespace

kj::Promise<kj::AuthenticatedStream> TlsEndpoint::Accept(kj::AuthenticatedStream stream) {
  NoDelay(*stream.stream);
  return context_->wrapServer(kj::mv(stream));
}

kj::Promise<kj::AuthenticatedStream> TlsEndpoint::Connect(kj::AuthenticatedStream stream) {
  NoDelay(*stream.stream);
  // The name is only SNI: the certificate is checked by key, not by name.
  return context_->wrapClient(kj::mv(stream), "peerkv");
}

absl::StatusOr<PeerCredentials> PeerOf(kj::PeerIdentity& identity) {
  auto* tls = dynamic_cast<kj::TlsPeerIdentity*>(&identity);
  if (tls == nullptr || !tls->hasCertificate()) {
    return absl::PermissionDeniedError("the peer showed no TLS certificate");
  }
  X509* x = static_cast<X509*>(tls->*Get(PeerCertTag()));
  EVP_PKEY* pkey = X509_get0_pubkey(x);
  if (pkey == nullptr || EVP_PKEY_id(pkey) != EVP_PKEY_ED25519) {
    const char* type = pkey == nullptr ? "unreadable" : OBJ_nid2sn(EVP_PKEY_id(pkey));
    ERR_clear_error();
    return absl::PermissionDeniedError(absl::StrFormat(
        "the peer's TLS certificate has a %s key; peerkv devices use Ed25519", type));
  }
  PeerCredentials out;
  size_t len = out.device.bytes.size();
  if (EVP_PKEY_get_raw_public_key(pkey, out.device.bytes.data(), &len) != 1 ||
      len != out.device.bytes.size()) {
    return absl::PermissionDeniedError("the peer's TLS certificate key: " + OpensslError());
  }
  const int at = X509_get_ext_by_OBJ(x, DeviceCertificateOid(), -1);
  if (at >= 0) {
    const ASN1_OCTET_STRING* data = X509_EXTENSION_get_data(X509_get_ext(x, at));
    const std::string bytes(reinterpret_cast<const char*>(ASN1_STRING_get0_data(data)),
                            ASN1_STRING_length(data));
    const std::string what = absl::StrFormat("device certificate of peer %s",
                                             auth::DeviceId(out.device));
    auth::Reader r(bytes, what);
    absl::StatusOr<auth::PublicKey> user = r.Byte("version").status().ok()
                                               ? r.Key("user")
                                               : absl::StatusOr<auth::PublicKey>(
                                                     absl::InvalidArgumentError(what + " is empty"));
    absl::StatusOr<auth::DeviceCertificate> cert =
        user.ok() ? auth::VerifyDeviceCertificate(bytes, *user)
                  : absl::StatusOr<auth::DeviceCertificate>(user.status());
    if (!cert.ok()) {
      return absl::PermissionDeniedError(
          absl::StrFormat("%s refused: %s", what, cert.status().message()));
    }
    if (cert->device != out.device) {
      return absl::PermissionDeniedError(absl::StrFormat(
          "%s refused: it certifies device %s, not the key of the TLS link", what,
          auth::DeviceId(cert->device)));
    }
    out.certificate = std::move(*cert);
  }
  return out;
}

kj::Exception Refusal(const absl::Status& status) {
  return kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__,
                       kj::str(kRefusalPrefix, std::string(status.message()).c_str()));
}

absl::StatusOr<AuthenticatedPeer> AuthenticatePeer(kj::PeerIdentity& identity,
                                                   const TrustSource& trust) {
  PEERKV_ASSIGN_OR_RETURN(const PeerCredentials credentials, PeerOf(identity));
  PEERKV_ASSIGN_OR_RETURN(const TrustView view, trust());
  return Authorize(view, credentials);
}

absl::Status ClosedAfterHandshake(const absl::Status& status, const TlsIdentity& identity) {
  const std::string device = auth::DeviceId(identity.key->public_key());
  return absl::Status(
      status.code(),
      absl::StrFormat("%s (the server closed the connection after the TLS handshake: it does not "
                      "accept device %s, which must be a device of the server's user (`peerkv "
                      "device add %s` on one of them), or it is stopping)",
                      status.message(), device, device));
}

kj::Promise<kj::Own<kj::AsyncIoStream>> DialAuthenticated(
    kj::Network& network, const std::string& address, TlsEndpoint* tls, TrustSource trust,
    std::shared_ptr<std::optional<AuthenticatedPeer>> peer, bool accept_friends) {
  const bool local = address.rfind("unix:", 0) == 0;
  if (!local && tls == nullptr && !IsLoopbackAddress(address)) {
    return Refusal(absl::PermissionDeniedError(absl::StrFormat(
        "%s: TCP beyond loopback needs TLS, and this client has no key (an identity)", address)));
  }
  auto connected = network.parseAddress(address).then([](kj::Own<kj::NetworkAddress> addr) {
    return addr->connectAuthenticated().attach(kj::mv(addr));
  });
  if (local || tls == nullptr) {
    return connected.then([](kj::AuthenticatedStream s) { return kj::mv(s.stream); });
  }
  return connected
      .then([tls](kj::AuthenticatedStream s) { return tls->Connect(kj::mv(s)); })
      .then([address, trust = std::move(trust), peer = std::move(peer), accept_friends](
                kj::AuthenticatedStream s) -> kj::Own<kj::AsyncIoStream> {
        absl::StatusOr<AuthenticatedPeer> who = AuthenticatePeer(*s.peerIdentity, trust);
        if (who.ok() && who->role != PeerRole::kOwnDevice &&
            !(accept_friends && who->role == PeerRole::kFriend)) {
          who = absl::PermissionDeniedError(absl::StrFormat(
              "refused server %s at %s: a device of friend %s, not of user %s",
              auth::DeviceId(who->device), address, auth::UserId(who->user),
              trust().ok() ? auth::UserId(trust()->user) : "?"));
        }
        if (!who.ok()) {
          kj::throwFatalException(Refusal(absl::PermissionDeniedError(
              absl::StrFormat("server at %s: %s", address, who.status().message()))));
        }
        if (peer != nullptr) *peer = *who;
        return kj::mv(s.stream);
      });
}

}  // namespace peerkv::rpc
