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

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "rpc/server_options.h"

namespace peerkv::http {

struct HttpOptions {
  // HOST:PORT; port 0 picks a free one (logged as "peerkv: HTTP on
  // http://HOST:PORT/"). Loopback only for now: the front end has no TLS
  // yet, and bearer tokens must not cross a network in clear text.
  std::string listen;
  // Serve without a token. Only on a loopback address.
  bool insecure_loopback = false;
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
};

// Whether HOST of "HOST:PORT" is a loopback address (127.0.0.0/8, ::1,
// localhost).
bool IsLoopback(const std::string& host_port);

// Checks `options` (the address is HOST:PORT and loopback; insecure
// only on loopback): InvalidArgument naming the flag otherwise.
absl::Status ValidateHttpOptions(const HttpOptions& options);

// The factory to put in rpc::ServerOptions::front_ends.
rpc::FrontEndFactory HttpFrontEnd(HttpOptions options);

}  // namespace peerkv::http

#endif  // PEERKV_HTTP_FRONT_END_H_
