// consensus/etcd/http_client.h: a small blocking HTTP/1.1 client over POSIX
// sockets for etcd's v3 JSON gateway. Plain http:// to an IPv4 literal or a
// host name, keep-alive with a bounded pool of idle connections so concurrent
// callers each get their own, every socket operation bounded by the call's
// deadline with poll(). No kj: the ConsensusLog interface is blocking and
// STYLE.md keeps kj/capnp in rpc/. Thread-safe.
#ifndef PEERKV_CONSENSUS_ETCD_HTTP_CLIENT_H_
#define PEERKV_CONSENSUS_ETCD_HTTP_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace peerkv::consensus::etcd {

// "http://HOST:PORT" split, validated.
struct HttpUrl {
  std::string host;
  uint16_t port = 0;
  // The URL as given, for messages.
  std::string text;
};

// Parses "http://HOST:PORT" (a trailing '/' allowed, nothing else after the
// port). InvalidArgument naming the URL and what is wrong.
absl::StatusOr<HttpUrl> ParseHttpUrl(absl::string_view url);

struct HttpResponse {
  int status = 0;
  std::string body;
};

// Limits on what an answer may hold.
inline constexpr size_t kHttpMaxHeaderBytes = 64 << 10;
inline constexpr size_t kHttpMaxBodyBytes = size_t{64} << 20;
// Idle connections kept for reuse.
inline constexpr size_t kHttpMaxIdleConnections = 64;

struct HttpConnection;

class HttpClient {
 public:
  explicit HttpClient(HttpUrl url);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // POSTs `body` (application/json) to `path` and reads the whole answer by
  // `deadline`. Unavailable when the server cannot be reached or the
  // connection fails, DeadlineExceeded when `deadline` passes first. Internal when the answer is not HTTP/1.1 or
  // breaks a limit. `idempotent`: a request that failed on a reused
  // connection before any answer byte is retried once on a new one.
  // `sent` (optional): set once the whole request was handed to the socket,
  // so a failure after it may come after the server acted on the request;
  // left false when it failed before (the server cannot have acted on it).
  absl::StatusOr<HttpResponse> Post(absl::string_view path, absl::string_view body,
                                    absl::Time deadline, bool idempotent,
                                    bool* sent = nullptr);

  // POSTs `body` and feeds the (chunked or plain) body of the answer to
  // `on_data` as it arrives, until `on_data` returns false, the answer ends,
  // or `deadline` passes (then OK: the stream simply stopped). The
  // connection is not reused. Non-200 answers: Internal with the body.
  absl::Status Stream(absl::string_view path, absl::string_view body, absl::Time deadline,
                      const std::function<bool(absl::string_view)>& on_data);

  const HttpUrl& url() const { return url_; }

 private:
  absl::StatusOr<std::unique_ptr<HttpConnection>> Dial(absl::Time deadline);
  std::unique_ptr<HttpConnection> TakeIdle();
  void ReturnIdle(std::unique_ptr<HttpConnection> conn);

  const HttpUrl url_;
  absl::Mutex mu_;
  std::vector<std::unique_ptr<HttpConnection>> idle_ ABSL_GUARDED_BY(mu_);
};

}  // namespace peerkv::consensus::etcd

#endif  // PEERKV_CONSENSUS_ETCD_HTTP_CLIENT_H_
