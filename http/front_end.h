// http/front_end.h: the HTTP/JSON front end (kj-http) that a server hosts
// on its event loop beside Cap'n Proto RPC (rpc::ServerOptions::
// front_ends): the key-value API under /v1/, watches as server-sent
// events, GET /metrics (Prometheus text) and the status page at /. It
// goes through the same store calls as RPC. README "HTTP API" is the
// reference.
#ifndef PEERKV_HTTP_FRONT_END_H_
#define PEERKV_HTTP_FRONT_END_H_

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "rpc/server_options.h"

struct ssl_ctx_st;  // OpenSSL's SSL_CTX

namespace peerkv::rpc {
struct TlsIdentity;
}  // namespace peerkv::rpc

namespace peerkv::http {

struct HttpOptions {
  // HOST:PORT; port 0 picks a free one (logged as "peerkv: HTTP on
  // http://HOST:PORT/", or https://). A non-loopback address needs `tls`
  // and tokens: bearer tokens must not cross a network in clear text.
  std::string listen;
  // Serve without a token. Only on a loopback address.
  bool insecure_loopback = false;
  // HTTPS (--http-tls): a context from rpc::MakeFrontEndTls (the device's
  // key). Null: plaintext, loopback only.
  std::shared_ptr<ssl_ctx_st> tls;
  // Checks a bearer token and names its holder (auth::TokenStore::
  // Verifier()). Empty: every token is refused.
  std::function<absl::StatusOr<std::string>(std::string_view token)> verify_token;
  // Connections open at once; one more is answered 503 and closed.
  size_t max_connections = 1024;
  // A request's headers must arrive within this long of its first byte
  // (or of the connection opening); an idle keep-alive connection is
  // closed after idle_timeout_ms.
  int header_timeout_ms = 10'000;
  int idle_timeout_ms = 30'000;
  // A response (or a watch's next event) the client does not take within
  // this long closes its connection: slow readers cost a bounded buffer.
  int write_timeout_ms = 30'000;
  // Server-sent events: a comment line this often keeps proxies open and
  // finds clients that went away.
  int heartbeat_ms = 15'000;
  // Called (on the server's loop) with the bound HOST:PORT once listening;
  // for in-process tests. Empty: not called.
  std::function<void(const std::string& address)> on_listening;
};

// Whether HOST of "HOST:PORT" is a loopback address (127.0.0.0/8, ::1,
// localhost).
bool IsLoopback(const std::string& host_port);

// Checks `options` (the address is HOST:PORT; loopback unless TLS;
// insecure only on loopback): InvalidArgument naming the flag otherwise.
absl::Status ValidateHttpOptions(const HttpOptions& options);

// The front ends' TLS (--http-tls, --resp-tls; README "TLS for HTTP and
// RESP"): rpc::MakeFrontEndTls for `identity`, naming the hosts of
// `listens` (HOST:PORT; a wildcard host names every address of this
// machine's interfaces), localhost, 127.0.0.1, ::1 and this machine's host
// name. Its certificate is written to `pem_path` (0644): what clients pin.
absl::StatusOr<std::shared_ptr<ssl_ctx_st>> StartFrontEndTls(
    const rpc::TlsIdentity& identity, const std::vector<std::string>& listens,
    const std::string& pem_path);
// The names StartFrontEndTls puts in the certificate, sorted.
std::vector<std::string> FrontEndTlsNames(const std::vector<std::string>& listens);

// The factory to put in rpc::ServerOptions::front_ends.
rpc::FrontEndFactory HttpFrontEnd(HttpOptions options);

}  // namespace peerkv::http

#endif  // PEERKV_HTTP_FRONT_END_H_
