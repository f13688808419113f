// rpc/tls.cc: see tls.h. The OpenSSL calls kj-tls 0.9.2 has no option for
// live here and only here.
#include "rpc/tls.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "auth/ids.h"
#include "common/macros.h"
#include "kj/debug.h"
#include "kj/vector.h"

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
// `device_certificate` if not empty. With `names` (the front ends'), it
// also names those hosts (subjectAltName) and is the same bytes at every
// start with the same names (serial and validity derived, not drawn), so
// that a client pins it once.
absl::StatusOr<std::pair<std::string, std::string>> MakeCertificate(
    const TlsIdentity& identity, const std::vector<std::string>& names = {}) {
  const std::string_view seed = identity.key->seed();
  PkeyPtr pkey(EVP_PKEY_new_raw_private_key(
      EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(seed.data()), seed.size()));
  if (pkey == nullptr) return absl::InternalError("Ed25519 key for TLS: " + OpensslError());
  X509Ptr x(X509_new());
  X509_set_version(x.get(), 2);
  uint64_t serial = 0;
  if (names.empty()) {
    RAND_bytes(reinterpret_cast<unsigned char*>(&serial), sizeof(serial));
  } else {
    std::string named(seed);
    for (const std::string& n : names) named += "\n" + n;
    unsigned char digest[32];
    EVP_Digest(named.data(), named.size(), digest, nullptr, EVP_sha256(), nullptr);
    std::memcpy(&serial, digest, sizeof(serial));
    OPENSSL_cleanse(named.data(), named.size());
  }
  ASN1_INTEGER_set_uint64(X509_get_serialNumber(x.get()), serial >> 1);
  // Validity is not what is checked (the key is): a wide window keeps
  // clock skew from mattering.
  if (names.empty()) {
    X509_gmtime_adj(X509_getm_notBefore(x.get()), -86400L * 365);
    X509_gmtime_adj(X509_getm_notAfter(x.get()), 86400L * 365 * 50);
  } else {
    ASN1_TIME_set_string(X509_getm_notBefore(x.get()), "20200101000000Z");
    ASN1_TIME_set_string(X509_getm_notAfter(x.get()), "20700101000000Z");
  }
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
  if (!names.empty()) {
    std::string san;
    for (const std::string& n : names) {
      unsigned char ip[16];
      const bool is_ip =
          inet_pton(AF_INET, n.c_str(), ip) == 1 || inet_pton(AF_INET6, n.c_str(), ip) == 1;
      absl::StrAppend(&san, san.empty() ? "" : ",", is_ip ? "IP:" : "DNS:", n);
    }
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, nullptr, NID_subject_alt_name, san.c_str());
    if (ext == nullptr || !X509_add_ext(x.get(), ext, -1)) {
      X509_EXTENSION_free(ext);
      return absl::InvalidArgumentError(absl::StrFormat(
          "the front ends' TLS host names '%s': %s", san, OpensslError()));
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

// OpenSSL's queued errors as one exception (and the queue emptied).
kj::Exception TlsFailure(const char* what) {
  std::string lines;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!lines.empty()) lines += "; ";
    lines += buf;
  }
  return kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__,
                       kj::str("TLS ", what, ": ", lines.empty() ? "protocol error" : lines.c_str()));
}

// The peer of a TlsStream: the certificate it showed (a reference of our
// own) and the identity of the socket under the TLS link.
class TlsPeer final : public kj::PeerIdentity {
 public:
  TlsPeer(X509* cert, kj::Own<kj::PeerIdentity> inner) : cert_(cert), inner_(kj::mv(inner)) {}
  ~TlsPeer() noexcept(false) { X509_free(cert_); }
  kj::String toString() override { return kj::str("TLS peer at ", inner_->toString()); }
  X509* cert() const { return cert_; }

 private:
  X509* const cert_;
  kj::Own<kj::PeerIdentity> inner_;
};

// TLS over an AsyncIoStream, driven directly: OpenSSL reads ciphertext from
// in_ and appends what it sends to out_ (a BIO of ours over the two), and
// this class moves both to and from the socket in bulk. It replaces
// kj-tls's TlsConnection for the data path and the handshake: that one
// bridges OpenSSL through kj's readiness adapters, several promises, a
// fork and a copy per SSL_read and per SSL_write, and reads each record in
// two BIO calls (header, then body); under `peerkv bench` that plumbing
// cost about as much CPU as the cipher itself on both ends. Here a request
// costs one SSL_read and one SSL_write, each a synchronous call, plus the
// one socket read and write the plaintext path needs anyway.
//
// Writes never overlap (the callers, BufferedStream and the handshake,
// issue one at a time); the only other source of output is the read side
// (TLS 1.3 post-handshake messages, e.g. a KeyUpdate answer), which rides
// with the write in progress or starts one of its own.
class TlsStream final : public kj::AsyncIoStream {
 public:
  TlsStream(kj::Own<kj::AsyncIoStream> inner, SSL_CTX* ctx)
      : inner_(kj::mv(inner)), in_(kj::heapArray<kj::byte>(kInBytes)) {
    ssl_ = SSL_new(ctx);
    if (ssl_ == nullptr) kj::throwFatalException(TlsFailure("SSL_new"));
    BIO* bio = BIO_new(BioMethod());
    if (bio == nullptr) {
      SSL_free(ssl_);
      kj::throwFatalException(TlsFailure("BIO_new"));
    }
    BIO_set_data(bio, this);
    BIO_set_init(bio, 1);
    SSL_set_bio(ssl_, bio, bio);
    // Whole records (and all that has arrived) in one BIO read.
    SSL_set_read_ahead(ssl_, 1);
  }
  ~TlsStream() noexcept(false) { SSL_free(ssl_); }

  kj::Promise<void> Connect(const char* server_name) {
    if (!SSL_set_tlsext_host_name(ssl_, server_name)) {
      return TlsFailure("setting the server name");
    }
    SSL_set_connect_state(ssl_);
    return Handshake().then([this]() -> kj::Promise<void> {
      if (SSL_get0_peer_certificate(ssl_) == nullptr) {
        return KJ_EXCEPTION(FAILED, "TLS peer provided no certificate");
      }
      const long result = SSL_get_verify_result(ssl_);
      if (result != X509_V_OK) {
        return KJ_EXCEPTION(FAILED, "TLS peer's certificate is not trusted",
                            X509_verify_cert_error_string(result));
      }
      return kj::READY_NOW;
    });
  }

  kj::Promise<void> Accept() {
    SSL_set_options(ssl_, SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_set_accept_state(ssl_);
    return Handshake();
  }

  // The peer's certificate with a reference of the caller's, or null.
  X509* PeerCertificate() { return SSL_get1_peer_certificate(ssl_); }

  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override {
    return Read(static_cast<kj::byte*>(buffer), min_bytes, max_bytes, 0);
  }

  kj::Promise<void> write(const void* buffer, size_t size) override {
    kj::ArrayPtr<const kj::byte> piece(static_cast<const kj::byte*>(buffer), size);
    return write(kj::arrayPtr(&piece, 1));
  }

  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override {
    KJ_IF_MAYBE(e, write_error_) { return kj::cp(*e); }
    KJ_REQUIRE(!shutdown_, "TLS stream written after shutdownWrite()");
    for (const auto& piece : pieces) {
      size_t done = 0;
      while (done < piece.size()) {
        const int chunk = static_cast<int>(std::min<size_t>(piece.size() - done, 1 << 30));
        const int n = SSL_write(ssl_, piece.begin() + done, chunk);
        if (n <= 0) return TlsFailure("write");
        done += static_cast<size_t>(n);
      }
    }
    return Send();
  }

  kj::Promise<void> whenWriteDisconnected() override { return inner_->whenWriteDisconnected(); }

  void shutdownWrite() override {
    if (shutdown_) return;
    shutdown_ = true;
    // close_notify, then the socket's write side, after whatever is queued.
    SSL_shutdown(ssl_);
    ERR_clear_error();
    background_.add(Send().then([this] { inner_->shutdownWrite(); }));
  }

  void abortRead() override { inner_->abortRead(); }
  void getsockopt(int level, int option, void* value, kj::uint* length) override {
    inner_->getsockopt(level, option, value, length);
  }
  void setsockopt(int level, int option, const void* value, kj::uint length) override {
    inner_->setsockopt(level, option, value, length);
  }
  void getsockname(struct sockaddr* addr, kj::uint* length) override {
    inner_->getsockname(addr, length);
  }
  void getpeername(struct sockaddr* addr, kj::uint* length) override {
    inner_->getpeername(addr, length);
  }

 private:
  // Room for the largest TLS record and then some: one socket read.
  static constexpr size_t kInBytes = 64 * 1024;

  // Runs the handshake until it is done, sending each flight before waiting
  // for the peer's.
  kj::Promise<void> Handshake() {
    const int r = SSL_do_handshake(ssl_);
    if (r == 1) return Send();
    if (SSL_get_error(ssl_, r) != SSL_ERROR_WANT_READ) {
      if (eof_) {
        ERR_clear_error();
        return KJ_EXCEPTION(DISCONNECTED, "the peer closed the connection during the TLS handshake");
      }
      return TlsFailure("handshake");
    }
    return Send().then([this] { return Fill(); }).then([this] { return Handshake(); });
  }

  // Reads more ciphertext into in_ (empty whenever OpenSSL wants more).
  kj::Promise<void> Fill() {
    return inner_->tryRead(in_.begin(), 1, in_.size()).then([this](size_t n) {
      in_begin_ = 0;
      in_end_ = n;
      if (n == 0) eof_ = true;
    });
  }

  kj::Promise<size_t> Read(kj::byte* out, size_t min_bytes, size_t max_bytes, size_t done) {
    // Everything that can be decrypted now, up to max_bytes; more from the
    // socket only while under min_bytes.
    while (done < max_bytes) {
      if (in_begin_ == in_end_ && !eof_ && !SSL_has_pending(ssl_)) {
        // No ciphertext left, none buffered inside OpenSSL: SSL_read could
        // only say WANT_READ. Skipping it saves two calls per message
        // (one before the socket read, one after the record).
        if (!out_.empty()) SendInBackground();
        if (done >= min_bytes && done > 0) return done;
        return Fill().then([this, out, min_bytes, max_bytes, done] {
          return Read(out, min_bytes, max_bytes, done);
        });
      }
      const int want = static_cast<int>(std::min<size_t>(max_bytes - done, 1 << 30));
      const int n = SSL_read(ssl_, out + done, want);
      if (n > 0) {
        done += static_cast<size_t>(n);
        continue;
      }
      const int error = SSL_get_error(ssl_, n);
      if (!out_.empty()) SendInBackground();
      if (error == SSL_ERROR_ZERO_RETURN || eof_) {
        // close_notify, or the socket closed (no close_notify: capnp's
        // framing tells a cut message from a whole one).
        ERR_clear_error();
        return done;
      }
      if (error != SSL_ERROR_WANT_READ) return TlsFailure("read");
      if (done >= min_bytes && done > 0) return done;
      return Fill().then([this, out, min_bytes, max_bytes, done] {
        return Read(out, min_bytes, max_bytes, done);
      });
    }
    if (!out_.empty()) SendInBackground();
    return done;
  }

  // Resolves once everything in out_ now has been handed to the socket.
  kj::Promise<void> Send() {
    KJ_IF_MAYBE(e, write_error_) { return kj::cp(*e); }
    if (writing_) {
      // The write in progress picks out_ up when it is done.
      auto paf = kj::newPromiseAndFulfiller<void>();
      waiters_.add(kj::mv(paf.fulfiller));
      return kj::mv(paf.promise);
    }
    if (out_.empty()) return kj::READY_NOW;
    writing_ = true;
    return Drain().then(
        [this] {
          writing_ = false;
          for (auto& w : waiters_) w->fulfill();
          waiters_.clear();
        },
        [this](kj::Exception&& e) {
          writing_ = false;
          write_error_ = kj::cp(e);
          for (auto& w : waiters_) w->reject(kj::cp(e));
          waiters_.clear();
          kj::throwFatalException(kj::mv(e));
        });
  }

  // Writes out_ to the socket until it stays empty.
  kj::Promise<void> Drain() {
    if (out_.empty()) return kj::READY_NOW;
    std::swap(out_, inflight_);
    return inner_->write(inflight_.data(), inflight_.size()).then([this] {
      inflight_.clear();
      return Drain();
    });
  }

  void SendInBackground() {
    if (!writing_) background_.add(Send());
  }

  static int BioRead(BIO* b, char* out, int len) {
    auto* self = static_cast<TlsStream*>(BIO_get_data(b));
    BIO_clear_retry_flags(b);
    const size_t have = self->in_end_ - self->in_begin_;
    if (have == 0) {
      if (self->eof_) return 0;
      BIO_set_retry_read(b);
      return -1;
    }
    const size_t n = std::min(have, static_cast<size_t>(len));
    std::memcpy(out, self->in_.begin() + self->in_begin_, n);
    self->in_begin_ += n;
    return static_cast<int>(n);
  }

  static int BioWrite(BIO* b, const char* in, int len) {
    auto* self = static_cast<TlsStream*>(BIO_get_data(b));
    BIO_clear_retry_flags(b);
    self->out_.append(in, static_cast<size_t>(len));
    return len;
  }

  static long BioCtrl(BIO*, int cmd, long, void*) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }

  static const BIO_METHOD* BioMethod() {
    static const BIO_METHOD* const method = [] {
      BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "peerkv TLS stream");
      BIO_meth_set_read(m, BioRead);
      BIO_meth_set_write(m, BioWrite);
      BIO_meth_set_ctrl(m, BioCtrl);
      return m;
    }();
    return method;
  }

  // A background send's failure is kept in write_error_ and seen by the
  // next write; a read sees the socket's own failure.
  struct KeepErrors : public kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&&) override {}
  };

  kj::Own<kj::AsyncIoStream> inner_;
  SSL* ssl_ = nullptr;
  // Ciphertext read: bytes [in_begin_, in_end_) of in_ not yet given to
  // OpenSSL; eof_ once the socket has ended.
  kj::Array<kj::byte> in_;
  size_t in_begin_ = 0;
  size_t in_end_ = 0;
  bool eof_ = false;
  // Ciphertext to send: out_ waits, inflight_ is being written.
  std::string out_;
  std::string inflight_;
  bool writing_ = false;
  bool shutdown_ = false;
  kj::Maybe<kj::Exception> write_error_;
  kj::Vector<kj::Own<kj::PromiseFulfiller<void>>> waiters_;
  KeepErrors keep_errors_;
  kj::TaskSet background_{keep_errors_};
};

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
  // No TLS 1.3 session tickets: nothing resumes (a resumed session would
  // skip the certificate that PeerOf reads), and OpenSSL 3 makes each of
  // its two default tickets by encoding the session and decoding it back,
  // the peer's certificate with it: 12-20% of a reconnect's CPU
  // (bench/README.md, "TLS handshake and floors").
  SSL_CTX_set_num_tickets(ctx, 0);
  endpoint->timer_ = &timer;
  endpoint->handshake_timeout_ms_ = handshake_timeout_ms;
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

SSL_CTX* TlsEndpoint::Context() {
  return static_cast<SSL_CTX*>((*context_).*Get(ContextTag()));
}

namespace {
// The server side of a handshake over `stream` with `context`, done once
// it resolves; DISCONNECTED after `timeout_ms` if `timer` is not null. The
// chain drops the handshake (which uses the stream) before handing the
// stream on.
kj::Promise<kj::Own<TlsStream>> AcceptWithin(SSL_CTX* context, kj::Own<kj::AsyncIoStream> stream,
                                             kj::Timer* timer, int timeout_ms) {
  NoDelay(*stream);
  auto tls = kj::heap<TlsStream>(kj::mv(stream), context);
  kj::Promise<void> done = tls->Accept();
  if (timer != nullptr) {
    done = timer->afterDelay(timeout_ms * kj::MILLISECONDS)
               .then([]() -> kj::Promise<void> {
                 return KJ_EXCEPTION(DISCONNECTED, "timed out waiting for the client's TLS handshake");
               })
               .exclusiveJoin(kj::mv(done));
  }
  return done.then([tls = kj::mv(tls)]() mutable { return kj::mv(tls); });
}
}  // namespace

kj::Promise<kj::AuthenticatedStream> TlsEndpoint::Accept(kj::AuthenticatedStream stream) {
  return AcceptWithin(Context(), kj::mv(stream.stream), timer_, handshake_timeout_ms_)
      .then([inner = kj::mv(stream.peerIdentity)](kj::Own<TlsStream> tls) mutable {
        X509* cert = tls->PeerCertificate();
        return kj::AuthenticatedStream{kj::mv(tls), kj::heap<TlsPeer>(cert, kj::mv(inner))};
      });
}

kj::Promise<kj::AuthenticatedStream> TlsEndpoint::Connect(kj::AuthenticatedStream stream) {
  NoDelay(*stream.stream);
  auto tls = kj::heap<TlsStream>(kj::mv(stream.stream), Context());
  // The name is only SNI: the certificate is checked by key, not by name.
  kj::Promise<void> done = tls->Connect("peerkv");
  return done.then([tls = kj::mv(tls), inner = kj::mv(stream.peerIdentity)]() mutable {
    X509* cert = tls->PeerCertificate();
    return kj::AuthenticatedStream{kj::mv(tls), kj::heap<TlsPeer>(cert, kj::mv(inner))};
  });
}

absl::StatusOr<PeerCredentials> PeerOf(kj::PeerIdentity& identity) {
  X509* x = nullptr;
  if (auto* ours = dynamic_cast<TlsPeer*>(&identity)) {
    x = ours->cert();
  } else if (auto* tls = dynamic_cast<kj::TlsPeerIdentity*>(&identity);
             tls != nullptr && tls->hasCertificate()) {
    x = static_cast<X509*>(tls->*Get(PeerCertTag()));
  }
  if (x == nullptr) return absl::PermissionDeniedError("the peer showed no TLS certificate");
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

absl::StatusOr<FrontEndTls> MakeFrontEndTls(const TlsIdentity& identity,
                                            const std::vector<std::string>& names) {
  PEERKV_CHECK(identity.key != nullptr);
  if (names.empty()) return absl::InvalidArgumentError("the front ends' TLS names no host");
  PEERKV_ASSIGN_OR_RETURN(auto made, MakeCertificate(identity, names));
  const unsigned char* cert_der = reinterpret_cast<const unsigned char*>(made.first.data());
  X509Ptr cert(d2i_X509(nullptr, &cert_der, static_cast<long>(made.first.size())));
  const unsigned char* key_der = reinterpret_cast<const unsigned char*>(made.second.data());
  PkeyPtr key(d2i_AutoPrivateKey(nullptr, &key_der, static_cast<long>(made.second.size())));
  OPENSSL_cleanse(made.second.data(), made.second.size());
  std::shared_ptr<SSL_CTX> ctx(SSL_CTX_new(TLS_server_method()), SSL_CTX_free);
  if (cert == nullptr || key == nullptr || ctx == nullptr) {
    return absl::InternalError("the front ends' TLS context: " + OpensslError());
  }
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION);
  // Clients are authenticated by token (AUTH, a bearer token), not by
  // certificate: none is asked.
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (SSL_CTX_use_certificate(ctx.get(), cert.get()) != 1 ||
      SSL_CTX_use_PrivateKey(ctx.get(), key.get()) != 1) {
    return absl::InternalError("the front ends' TLS key: " + OpensslError());
  }
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(bio, cert.get());
  char* pem = nullptr;
  const long n = BIO_get_mem_data(bio, &pem);
  FrontEndTls out;
  out.certificate_pem.assign(pem, static_cast<size_t>(n));
  BIO_free(bio);
  out.context = std::move(ctx);
  return out;
}

kj::Promise<kj::Own<kj::AsyncIoStream>> AcceptFrontEndTls(ssl_ctx_st* context,
                                                         kj::Own<kj::AsyncIoStream> stream,
                                                         kj::Timer& timer, int timeout_ms) {
  return AcceptWithin(context, kj::mv(stream), &timer, timeout_ms)
      .then([](kj::Own<TlsStream> tls) -> kj::Own<kj::AsyncIoStream> { return kj::mv(tls); });
}

}  // namespace peerkv::rpc
