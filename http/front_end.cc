// http/front_end.cc: the HTTP front end on the server's loop: its own
// accept loop (a connection limit, answered 503 past it), kj's HttpServer
// per connection (header and idle timeouts), the routes of README "HTTP
// API", and server-sent-event watches fed by the server's WatchHub, one
// batch in flight per connection.
#include "http/front_end.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <unistd.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "auth/access_check.h"
#include "common/files.h"
#include "common/log.h"
#include "common/macros.h"
#include "common/metrics.h"
#include "consensus/strong_keyspaces.h"
#include "http/encoding.h"
#include "http/metrics_text.h"
#include "http/status_page.h"
#include "kj/async-io.h"
#include "kj/compat/http.h"
#include "kj/debug.h"
#include "rpc/server_loop.h"
#include "rpc/tls.h"
#include "rpc/watch_hub.h"
#include "store/validation.h"

namespace peerkv::http {
namespace {

// Bytes of watch events one read produces (a record larger goes alone).
constexpr size_t kSseBatchBytes = size_t{64} << 10;
constexpr size_t kSseBatchRecords = 1000;
constexpr size_t kDefaultScanLimit = 100;
constexpr size_t kMaxScanLimit = 1000;
// Bytes of records one scan page may carry.
constexpr size_t kScanPageBytes = size_t{4} << 20;

std::string_view View(kj::StringPtr s) { return std::string_view(s.cStr(), s.size()); }
absl::string_view A(std::string_view s) { return absl::string_view(s.data(), s.size()); }

const char* StatusText(int code) {
  switch (code) {
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 412: return "Precondition Failed";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Internal Server Error";
  }
}

class FrontEnd;

class Service final : public kj::HttpService {
 public:
  explicit Service(FrontEnd& front_end) : front_end_(front_end) {}
  kj::Promise<void> request(kj::HttpMethod method, kj::StringPtr url,
                            const kj::HttpHeaders& headers, kj::AsyncInputStream& body,
                            Response& response) override;

 private:
  FrontEnd& front_end_;
};

// Reads a request body of at most `limit` bytes: false if it is longer.
struct BodyReader {
  BodyReader(kj::AsyncInputStream& in, size_t limit) : in(in), limit(limit) {}
  kj::Promise<bool> Read() {
    return in.tryRead(buffer, 1, sizeof(buffer)).then([this](size_t n) -> kj::Promise<bool> {
      if (n == 0) return true;
      if (data.size() + n > limit) return false;
      data.append(reinterpret_cast<const char*>(buffer), n);
      return Read();
    });
  }
  kj::AsyncInputStream& in;
  const size_t limit;
  std::string data;
  kj::byte buffer[16384];
};

class FrontEnd final : public kj::HttpServerErrorHandler, private kj::TaskSet::ErrorHandler {
 public:
  FrontEnd(rpc::ServerLoop& loop, HttpOptions options)
      : loop_(loop),
        options_(std::move(options)),
        who_(auth::LocalPrincipal(loop.options().identity)),
        access_(loop.options().access.get()),
        timer_(loop.io().provider->getTimer()),
        service_(*this),
        tasks_(*this) {
    kj::HttpHeaderTable::Builder builder;
    authorization_ = builder.add("Authorization");
    last_event_id_ = builder.add("Last-Event-ID");
    table_ = builder.build();
    kj::HttpServerSettings settings;
    settings.headerTimeout = options_.header_timeout_ms * kj::MILLISECONDS;
    settings.pipelineTimeout = options_.idle_timeout_ms * kj::MILLISECONDS;
    settings.errorHandler = *this;
    server_ = kj::heap<kj::HttpServer>(timer_, *table_, service_, settings);
  }

  ~FrontEnd() noexcept(false) { accept_loop_ = nullptr; }

  kj::Promise<std::string> Listen() {
    return loop_.io().provider->getNetwork().parseAddress(options_.listen).then(
        [this](kj::Own<kj::NetworkAddress> address) {
          listener_ = address->listen();
          const std::string host = options_.listen.substr(0, options_.listen.rfind(':'));
          bound_ = absl::StrFormat("%s:%d", host, listener_->getPort());
          accept_loop_ = AcceptLoop().eagerlyEvaluate([](kj::Exception&& e) {
            LogLine(absl::StrFormat("peerkv: HTTP accept loop ended: %s",
                                    e.getDescription().cStr()));
          });
          return bound_;
        });
  }

  kj::Promise<void> Handle(kj::HttpMethod method, kj::StringPtr url,
                           const kj::HttpHeaders& headers, kj::AsyncInputStream& body,
                           kj::HttpService::Response& response);

  // kj::HttpServerErrorHandler: malformed requests (bad method, headers
  // too large...) get a JSON error, then the connection closes.
  kj::Promise<void> handleClientProtocolError(kj::HttpHeaders::ProtocolError error,
                                              kj::HttpService::Response& response) override {
    Count("invalid", error.statusCode);
    const absl::Status status = absl::InvalidArgumentError(
        absl::StrFormat("malformed request: %s", View(error.description)));
    return SendJson(response, error.statusCode, ErrorJson(status));
  }
  kj::Promise<void> handleApplicationError(kj::Exception exception,
                                           kj::Maybe<kj::HttpService::Response&> response) override {
    if (exception.getType() == kj::Exception::Type::DISCONNECTED) return kj::READY_NOW;
    // Almost always the client's framing (a bad chunk size, headers over
    // kj's 128 KiB, an unknown transfer coding): logged at most once per
    // interval with a count (RejectionLog), never the client's bytes in full.
    std::string what = exception.getDescription().cStr();
    if (what.size() > 160) what.resize(160);
    if (!IsUtf8(what)) what = "(not UTF-8)";
    const absl::Status status =
        absl::InvalidArgumentError(absl::StrFormat("malformed request: %s", what));
    loop_.LogRejected("http", "request", status);
    KJ_IF_MAYBE(r, response) {
      Count("invalid", 400);
      return SendJson(*r, 400, ErrorJson(status));
    }
    return kj::READY_NOW;
  }

 private:
  struct Request;

  void taskFailed(kj::Exception&& e) override {
    if (e.getType() != kj::Exception::Type::DISCONNECTED) {
      LogLine(absl::StrFormat("peerkv: HTTP connection failed: %s", e.getDescription().cStr()));
    }
  }

  kj::Promise<void> AcceptLoop() {
    return listener_->accept().then(
        [this](kj::Own<kj::AsyncIoStream> stream) -> kj::Promise<void> {
          if (open_ >= options_.max_connections) {
            metrics::Global().http_connections_refused.Add();
            // One log line per 10 s at most, with the count since the last.
            ++refused_unlogged_;
            const absl::Time now = absl::Now();
            if (now - refusal_logged_ >= absl::Seconds(10)) {
              LogLine(absl::StrFormat(
                  "peerkv: HTTP refused %d connection(s): %d open, the limit is %d "
                  "(--http-max-connections)",
                  refused_unlogged_, open_, options_.max_connections));
              refused_unlogged_ = 0;
              refusal_logged_ = now;
            }
            static constexpr char kFull[] =
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                "Connection: close\r\nContent-Length: 93\r\n\r\n"
                "{\"error\":{\"code\":\"UNAVAILABLE\",\"message\":\"too many connections; try again "
                "later\"}}\n\n\n\n";
            auto& s = *stream;
            tasks_.add(s.write(kFull, sizeof(kFull) - 1)
                           .attach(kj::mv(stream))
                           .exclusiveJoin(timer_.afterDelay(1 * kj::SECONDS)));
          } else {
            ++open_;
            kj::Promise<kj::Own<kj::AsyncIoStream>> ready = nullptr;
            if (options_.tls == nullptr) {
              ready = kj::mv(stream);
            } else {
              // HTTPS: the handshake within the header timeout; a client
              // that does not speak TLS is closed (logged once per interval).
              ready = rpc::AcceptFrontEndTls(options_.tls.get(), kj::mv(stream), timer_,
                                             options_.header_timeout_ms)
                          .catch_([this](kj::Exception&& e) -> kj::Own<kj::AsyncIoStream> {
                            if (e.getType() != kj::Exception::Type::DISCONNECTED) {
                              loop_.LogRejected(
                                  "http", "TLS handshake",
                                  absl::UnavailableError(absl::StrFormat(
                                      "TLS handshake failed (a client without TLS on the "
                                      "--http-tls port?): %s",
                                      e.getDescription().cStr())));
                            }
                            kj::throwFatalException(
                                KJ_EXCEPTION(DISCONNECTED, "TLS handshake failed"));
                          });
            }
            tasks_.add(ready
                           .then([this](kj::Own<kj::AsyncIoStream> s) {
                             return server_->listenHttp(kj::mv(s));
                           })
                           .attach(kj::defer([this] { --open_; })));
          }
          return AcceptLoop();
        },
        [this](kj::Exception&& e) -> kj::Promise<void> {
          // EMFILE and the like: log once per episode, and try again shortly.
          if (!accept_failing_) {
            LogLine(absl::StrFormat("peerkv: HTTP accept failed: %s", e.getDescription().cStr()));
          }
          accept_failing_ = true;
          return timer_.afterDelay(100 * kj::MILLISECONDS).then([this] {
            accept_failing_ = false;
            return AcceptLoop();
          });
        });
  }

  void AddCors(kj::HttpHeaders& h) {
    // Bearer tokens, not cookies: any origin may call, as any client may.
    h.add("Access-Control-Allow-Origin", "*");
    h.add("Access-Control-Expose-Headers", "X-Peerkv-Version, X-Peerkv-Seq");
  }

  kj::Promise<void> WithDeadline(kj::Promise<void> write) {
    return write.exclusiveJoin(
        timer_.afterDelay(options_.write_timeout_ms * kj::MILLISECONDS)
            .then([]() -> kj::Promise<void> {
              return KJ_EXCEPTION(DISCONNECTED, "client did not read the response in time");
            }));
  }

  kj::Promise<void> Send(kj::HttpService::Response& response, int code,
                         kj::StringPtr content_type, std::string body,
                         const std::vector<std::pair<std::string, std::string>>& extra = {}) {
    kj::HttpHeaders h(*table_);
    h.set(kj::HttpHeaderId::CONTENT_TYPE, content_type);
    AddCors(h);
    for (const auto& [name, value] : extra) h.add(kj::str(name.c_str()), kj::str(value.c_str()));
    auto owned = kj::heap<std::string>(std::move(body));
    auto stream = response.send(code, StatusText(code), h, uint64_t{owned->size()});
    if (owned->empty()) return kj::READY_NOW;
    auto write = stream->write(owned->data(), owned->size());
    return WithDeadline(write.attach(kj::mv(stream), kj::mv(owned)));
  }

  kj::Promise<void> SendJson(kj::HttpService::Response& response, int code, std::string body) {
    return Send(response, code, "application/json", std::move(body));
  }

  kj::Promise<void> SendError(kj::HttpService::Response& response, const absl::Status& status,
                              int code = 0) {
    if (code == 0) code = HttpCode(status.code());
    std::vector<std::pair<std::string, std::string>> extra;
    if (code == 401) extra.emplace_back("WWW-Authenticate", "Bearer realm=\"peerkv\"");
    return Send(response, code, "application/json", ErrorJson(status), extra);
  }

  void Count(std::string_view op, int code) {
    metrics::Global()
        .requests.Get({"http", std::string(op), absl::StrCat(code)})
        .Add();
  }
  void Observe(std::string_view op, absl::Time start) {
    metrics::Global()
        .request_seconds.Get({"http", std::string(op)})
        .Observe(absl::ToDoubleSeconds(absl::Now() - start));
  }

  absl::StatusOr<std::string> Authenticate(const kj::HttpHeaders& headers, const Target& target) {
    if (options_.insecure_loopback) return std::string("insecure-loopback");
    std::string token;
    KJ_IF_MAYBE(value, headers.get(authorization_)) {
      std::string_view v = View(*value);
      if (v.substr(0, 7) != "Bearer ") {
        return absl::UnauthenticatedError("the Authorization header must be 'Bearer TOKEN'");
      }
      token = std::string(v.substr(7));
    } else if (auto it = target.query.find("access_token"); it != target.query.end()) {
      token = it->second;  // EventSource cannot set headers
    } else {
      return absl::UnauthenticatedError(
          "give 'Authorization: Bearer TOKEN' (make one with: peerkv token create NAME)");
    }
    if (!options_.verify_token) return absl::UnauthenticatedError("this server accepts no tokens");
    return options_.verify_token(token);
  }

  // Strong and reserved keyspaces go through consensus (RPC and the CLI).
  absl::Status CheckPlainKeyspace(std::string_view keyspace) const {
    PEERKV_RETURN_IF_ERROR(ValidateKeyspace(keyspace));
    consensus::StrongKeyspaces* strong = loop_.options().strong;
    if (strong != nullptr && strong->IsStrong(keyspace)) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "keyspace '%s' is strong: the HTTP API serves lww keyspaces only; use the CLI or RPC",
          keyspace));
    }
    if (strong != nullptr && IsReservedKeyspace(keyspace)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("keyspace '%s' is reserved (the system's own)", keyspace));
    }
    return absl::OkStatus();
  }

  // The access check, then CheckPlainKeyspace: a keyspace the user may not
  // read (write) is refused as such, whatever else it is.
  absl::Status MayRead(std::string_view keyspace) const {
    PEERKV_RETURN_IF_ERROR(auth::CheckRead(access_, who_, keyspace));
    return CheckPlainKeyspace(keyspace);
  }
  absl::Status MayWrite(std::string_view keyspace) const {
    PEERKV_RETURN_IF_ERROR(auth::CheckWrite(access_, who_, keyspace));
    return CheckPlainKeyspace(keyspace);
  }

  // These resolve to the HTTP status code they answered with.
  kj::Promise<int> Get(const Target& t, kj::HttpService::Response& response);
  kj::Promise<int> Write(std::vector<Mutation> batch, bool single,
                         kj::HttpService::Response& response);
  kj::Promise<int> Scan(const Target& t, kj::HttpService::Response& response);
  kj::Promise<void> Watch(const Target& t, const kj::HttpHeaders& headers,
                          kj::HttpService::Response& response);
  std::string StatusJson();
  std::string Metrics();

  rpc::ServerLoop& loop_;
  const HttpOptions options_;
  // Every request acts for the local user (a bearer token is the local
  // user's, as is a loopback client without one), checked against the
  // keyspace's policy as the RPC client API checks it (auth/access_check.h).
  const auth::Principal who_;
  const auth::Access* const access_;  // null: no checks (--no-access-checks)
  kj::Timer& timer_;
  kj::HttpHeaderId authorization_ = kj::HttpHeaderId::HOST;
  kj::HttpHeaderId last_event_id_ = kj::HttpHeaderId::HOST;
  kj::Own<kj::HttpHeaderTable> table_;
  Service service_;
  kj::Own<kj::HttpServer> server_;
  kj::Own<kj::ConnectionReceiver> listener_;
  std::string bound_;
  size_t open_ = 0;
  uint64_t refused_unlogged_ = 0;
  absl::Time refusal_logged_ = absl::InfinitePast();
  bool accept_failing_ = false;
  kj::Promise<void> accept_loop_ = nullptr;
  // Last: the connections go first.
  kj::TaskSet tasks_;

  friend class SseWatch;
};

kj::Promise<void> Service::request(kj::HttpMethod method, kj::StringPtr url,
                                   const kj::HttpHeaders& headers, kj::AsyncInputStream& body,
                                   Response& response) {
  return front_end_.Handle(method, url, headers, body, response);
}

std::string OpName(Route route, kj::HttpMethod method) {
  switch (route) {
    case Route::kPage: return "page";
    case Route::kMetrics: return "metrics";
    case Route::kStatus: return "status";
    case Route::kScan: return "scan";
    case Route::kBatch: return "batch";
    case Route::kWatch: return "watch";
    case Route::kRecord:
      return method == kj::HttpMethod::PUT      ? "put"
             : method == kj::HttpMethod::DELETE ? "delete"
                                                : "get";
    default: return "other";
  }
}

kj::Promise<void> FrontEnd::Handle(kj::HttpMethod method, kj::StringPtr url,
                                   const kj::HttpHeaders& headers, kj::AsyncInputStream& body,
                                   kj::HttpService::Response& response) {
  const absl::Time start = absl::Now();
  absl::StatusOr<Target> parsed = ParseTarget(View(url));
  if (method == kj::HttpMethod::OPTIONS) {
    // CORS preflight: any origin, the methods and headers the API uses.
    Count("preflight", 204);
    kj::HttpHeaders h(*table_);
    AddCors(h);
    h.add("Access-Control-Allow-Methods", "GET, PUT, DELETE, POST, OPTIONS");
    h.add("Access-Control-Allow-Headers", "Authorization, Content-Type, Last-Event-ID");
    h.add("Access-Control-Max-Age", "600");
    response.send(204, "No Content", h, uint64_t{0});
    return kj::READY_NOW;
  }
  if (!parsed.ok()) {
    Count("invalid", 400);
    return SendError(response, parsed.status());
  }
  const Target& t = *parsed;
  const std::string op = OpName(t.route, method);
  // Counted when answered: `code` is set by the route.
  auto code = kj::heap<int>(0);
  int& code_ref = *code;
  auto finish = kj::defer([this, op, start, code = kj::mv(code)] {
    Count(op, *code == 0 ? 499 : *code);
    if (op != "watch") Observe(op, start);
  });
  auto answer = [&](kj::Promise<void> p, int c) {
    code_ref = c;
    return p.attach(kj::mv(finish));
  };
  auto fail = [&](const absl::Status& status, int c = 0) {
    const int http_code = c != 0 ? c : HttpCode(status.code());
    return answer(SendError(response, status, http_code), http_code);
  };

  const bool get = method == kj::HttpMethod::GET || method == kj::HttpMethod::HEAD;
  auto allowed = [&](const char* methods) {
    return answer(Send(response, 405, "application/json",
                       ErrorJson(absl::InvalidArgumentError(absl::StrFormat(
                           "method %s is not allowed here; allowed: %s",
                           kj::str(method).cStr(), methods))),
                       {{"Allow", methods}}),
                  405);
  };

  if (t.route == Route::kNotFound) {
    return fail(absl::NotFoundError(absl::StrFormat(
        "no such resource '%s' (see README \"HTTP API\")",
        std::string(View(url).substr(0, 200)))));
  }
  if (t.route == Route::kPage) {
    if (!get) return allowed("GET");
    return answer(Send(response, 200, "text/html; charset=utf-8", std::string(kStatusPage)), 200);
  }
  absl::StatusOr<std::string> who = Authenticate(headers, t);
  if (!who.ok()) return fail(who.status(), 401);

  switch (t.route) {
    case Route::kMetrics:
      if (!get) return allowed("GET");
      return answer(Send(response, 200, "text/plain; version=0.0.4; charset=utf-8", Metrics()),
                    200);
    case Route::kStatus:
      if (!get) return allowed("GET");
      return answer(SendJson(response, 200, StatusJson()), 200);
    case Route::kScan:
      if (!get) return allowed("GET");
      return Scan(t, response).then([&code_ref](int c) { code_ref = c; }).attach(kj::mv(finish));
    case Route::kWatch:
      if (!get) return allowed("GET");
      code_ref = 200;
      return Watch(t, headers, response).attach(kj::mv(finish));
    case Route::kRecord: {
      if (get) {
        return Get(t, response).then([&code_ref](int c) { code_ref = c; }).attach(kj::mv(finish));
      }
      if (method == kj::HttpMethod::DELETE) {
        std::vector<Mutation> batch{Mutation{t.keyspace, t.key, std::nullopt}};
        absl::Status ok = MayWrite(t.keyspace);
        if (!ok.ok()) return fail(ok);
        return Write(std::move(batch), true, response)
            .then([&code_ref](int c) { code_ref = c; })
            .attach(kj::mv(finish));
      }
      if (method != kj::HttpMethod::PUT) return allowed("GET, PUT, DELETE");
      absl::Status ok = MayWrite(t.keyspace);
      if (ok.ok()) ok = ValidateKey(t.key);
      if (!ok.ok()) return fail(ok);
      const size_t limit = loop_.store().options().max_value_bytes;
      KJ_IF_MAYBE(length, body.tryGetLength()) {
        if (*length > limit) {
          return fail(absl::InvalidArgumentError(absl::StrFormat(
                          "the value (body) is %d bytes; the limit is %d", *length, limit)),
                      413);
        }
      }
      auto reader = kj::heap<BodyReader>(body, limit);
      auto& r = *reader;
      return r.Read()
          .then([this, &r, &response, t](bool fits) -> kj::Promise<int> {
            if (!fits) {
              return SendError(response,
                               absl::InvalidArgumentError(absl::StrFormat(
                                   "the value (body) is over the limit of %d bytes", r.limit)),
                               413)
                  .then([] { return 413; });
            }
            std::vector<Mutation> batch{Mutation{t.keyspace, t.key, std::move(r.data)}};
            return Write(std::move(batch), true, response);
          })
          .then([&code_ref](int c) { code_ref = c; })
          .attach(kj::mv(reader), kj::mv(finish));
    }
    case Route::kBatch: {
      if (method != kj::HttpMethod::POST) return allowed("POST");
      const size_t limit = rpc::MaxMessageBytes(loop_.store().options().max_value_bytes);
      KJ_IF_MAYBE(length, body.tryGetLength()) {
        if (*length > limit) {
          return fail(absl::InvalidArgumentError(absl::StrFormat(
                          "the batch body is %d bytes; the limit is %d", *length, limit)),
                      413);
        }
      }
      auto reader = kj::heap<BodyReader>(body, limit);
      auto& r = *reader;
      return r.Read()
          .then([this, &r, &response](bool fits) -> kj::Promise<int> {
            if (!fits) {
              return SendError(response,
                               absl::InvalidArgumentError(absl::StrFormat(
                                   "the batch body is over the limit of %d bytes", r.limit)),
                               413)
                  .then([] { return 413; });
            }
            absl::StatusOr<std::vector<Mutation>> batch = ParseBatch(r.data, kMaxBatchRecords);
            absl::Status ok = batch.status();
            if (ok.ok()) {
              for (const Mutation& m : *batch) {
                ok = MayWrite(m.keyspace);
                if (!ok.ok()) break;
              }
            }
            if (!ok.ok()) {
              const int c = HttpCode(ok.code());
              return SendError(response, ok).then([c] { return c; });
            }
            return Write(std::move(*batch), false, response);
          })
          .then([&code_ref](int c) { code_ref = c; })
          .attach(kj::mv(reader), kj::mv(finish));
    }
    default:
      return fail(absl::NotFoundError("no such resource"));
  }
}

kj::Promise<int> FrontEnd::Get(const Target& t, kj::HttpService::Response& response) {
  absl::Status ok = MayRead(t.keyspace);
  if (!ok.ok()) {
    const int c = HttpCode(ok.code());
    return SendError(response, ok).then([c] { return c; });
  }
  bool found = false;
  std::string value;
  Version version;
  uint64_t seq = 0;
  absl::Status status = loop_.store().GetView(t.keyspace, t.key, [&](const RecordView* view) {
    if (view == nullptr || view->deleted) return;
    found = true;
    value.assign(view->value.data(), view->value.size());
    version = view->version;
    seq = view->seq;
  });
  if (status.ok() && !found) {
    status = absl::NotFoundError(absl::StrFormat("no key '%s' in keyspace '%s'",
                                                 IsUtf8(t.key) ? t.key : PercentEncode(t.key),
                                                 t.keyspace));
  }
  if (!status.ok()) {
    const int c = HttpCode(status.code());
    return SendError(response, status).then([c] { return c; });
  }
  return Send(response, 200, "application/octet-stream", std::move(value),
              {{"X-Peerkv-Version", version.ToString()}, {"X-Peerkv-Seq", absl::StrCat(seq)}})
      .then([] { return 200; });
}

kj::Promise<int> FrontEnd::Write(std::vector<Mutation> batch, bool single,
                                  kj::HttpService::Response& response) {
  const size_t limit = loop_.store().options().max_value_bytes;
  for (size_t i = 0; i < batch.size(); ++i) {
    absl::Status ok = ValidateMutation(batch[i], limit);
    if (!ok.ok()) {
      if (!single) ok = absl::Status(ok.code(), absl::StrFormat("writes[%d]: %s", i, ok.message()));
      const int c = HttpCode(ok.code());
      return SendError(response, ok).then([c] { return c; });
    }
  }
  return loop_.Write(std::move(batch))
      .then([this, single, &response](absl::StatusOr<std::vector<Version>> versions)
                -> kj::Promise<int> {
        if (!versions.ok()) {
          const int c = HttpCode(versions.status().code());
          return SendError(response, versions.status()).then([c] { return c; });
        }
        std::string out;
        if (single) {
          out = absl::StrFormat("{\"version\":\"%s\"}\n", versions->front().ToString());
        } else {
          out = "{\"versions\":[";
          for (size_t i = 0; i < versions->size(); ++i) {
            if (i > 0) out.push_back(',');
            absl::StrAppendFormat(&out, "\"%s\"", (*versions)[i].ToString());
          }
          out += "]}\n";
        }
        return SendJson(response, 200, std::move(out)).then([] { return 200; });
      });
}

kj::Promise<int> FrontEnd::Scan(const Target& t, kj::HttpService::Response& response) {
  auto refuse = [&](const absl::Status& status) {
    const int c = HttpCode(status.code());
    return SendError(response, status).then([c] { return c; });
  };
  absl::Status ok = MayRead(t.keyspace);
  if (!ok.ok()) return refuse(ok);
  ScanOptions options;
  options.limit = kDefaultScanLimit;
  options.max_bytes = kScanPageBytes;
  for (const auto& [name, value] : t.query) {
    if (name == "prefix") {
      options.prefix = value;
    } else if (name == "after") {
      options.start_after = value;
    } else if (name == "after_b64") {
      absl::StatusOr<std::string> after = Unbase64(value, "after_b64");
      if (!after.ok()) return refuse(after.status());
      options.start_after = std::move(*after);
    } else if (name == "limit") {
      size_t limit = 0;
      if (!absl::SimpleAtoi(A(value), &limit) || limit < 1 || limit > kMaxScanLimit) {
        return refuse(absl::InvalidArgumentError(
            absl::StrFormat("limit must be 1..%d, not '%s'", kMaxScanLimit, value)));
      }
      options.limit = limit;
    } else if (name != "access_token") {
      return refuse(absl::InvalidArgumentError(absl::StrFormat(
          "unknown query parameter '%s' (scan takes prefix, after, after_b64, limit)", name)));
    }
  }
  if (options.prefix.size() > kMaxKeyBytes || options.start_after.size() > kMaxKeyBytes) {
    return refuse(absl::InvalidArgumentError(
        absl::StrFormat("prefix and after are at most %d bytes", kMaxKeyBytes)));
  }
  absl::StatusOr<ScanResult> page = loop_.store().Scan(t.keyspace, options);
  if (!page.ok()) return refuse(page.status());
  std::string out = "{\"records\":[";
  for (size_t i = 0; i < page->records.size(); ++i) {
    const Record& r = page->records[i];
    if (i > 0) out.push_back(',');
    AppendRecordJson(out, r.keyspace, r.key, r.version, r.deleted, r.value, r.seq);
  }
  absl::StrAppendFormat(&out, "],\"more\":%s", page->more ? "true" : "false");
  if (page->more && !page->records.empty()) {
    out.push_back(',');
    AppendBytesField(out, "next_after", page->records.back().key);
  }
  out += "}\n";
  return SendJson(response, 200, std::move(out)).then([] { return 200; });
}

// One server-sent-event watch: reads its keyspace's changes after its
// cursor and writes them as events, one write in flight; waits for the
// next change (or sends a heartbeat) when there is none.
class SseWatch {
 public:
  SseWatch(FrontEnd& fe, kj::Own<kj::AsyncOutputStream> out, const std::string& keyspace,
           std::string prefix, uint64_t cursor)
      : fe_(fe),
        out_(kj::mv(out)),
        keyspace_(keyspace),
        subscription_(fe.loop_.watch_hub().Subscribe(keyspace, std::move(prefix))),
        cursor_(cursor) {}
  ~SseWatch() {
    subscription_.reset();
    fe_.loop_.watch_hub().WatchEnded();
  }

  kj::Promise<void> Start() {
    return Write(absl::StrFormat("retry: 1000\n: watching from seq %d\n\n", cursor_))
        .then([this] { return Pump(); });
  }

 private:
  kj::Promise<void> Write(std::string text) {
    text_ = std::move(text);
    return fe_.WithDeadline(out_->write(text_.data(), text_.size()));
  }

  kj::Promise<void> Pump() {
    // A revocation ends the watch (as RPC's): nothing written after it is
    // sent.
    if (absl::Status allowed = auth::CheckRead(fe_.access_, fe_.who_, keyspace_); !allowed.ok()) {
      return Write("event: error\ndata: " + ErrorJson(allowed) + "\n");
    }
    absl::StatusOr<Changes> changes =
        fe_.loop_.watch_hub().Read(*subscription_, cursor_, kSseBatchRecords, kSseBatchBytes);
    if (!changes.ok()) {
      return Write("event: error\ndata: " + ErrorJson(changes.status()) + "\n");
    }
    if (changes->records.empty()) {
      const bool advanced = changes->last_seq > cursor_;
      cursor_ = changes->last_seq;
      if (advanced) return kj::evalLater([this] { return Pump(); });
      return fe_.loop_.watch_hub()
          .NextChange(*subscription_)
          .exclusiveJoin(fe_.timer_.afterDelay(fe_.options_.heartbeat_ms * kj::MILLISECONDS)
                             .then([this] { return Write(": heartbeat\n\n"); }))
          .then([this] { return Pump(); });
    }
    std::string text;
    for (const Record& r : changes->records) {
      absl::StrAppendFormat(&text, "id: %d\ndata: ", r.seq);
      AppendRecordJson(text, r.keyspace, r.key, r.version, r.deleted, r.value, r.seq);
      text += "\n\n";
    }
    metrics::Global().sse_events.Add(changes->records.size());
    cursor_ = changes->last_seq;
    return Write(std::move(text)).then([this] { return Pump(); });
  }

  FrontEnd& fe_;
  kj::Own<kj::AsyncOutputStream> out_;
  const std::string keyspace_;
  std::unique_ptr<rpc::WatchHub::Subscription> subscription_;
  uint64_t cursor_;
  std::string text_;  // the write in flight
};

kj::Promise<void> FrontEnd::Watch(const Target& t, const kj::HttpHeaders& headers,
                                  kj::HttpService::Response& response) {
  absl::Status ok = MayRead(t.keyspace);
  uint64_t from = loop_.store().max_seq();
  std::string prefix;
  for (const auto& [name, value] : t.query) {
    if (!ok.ok()) break;
    if (name == "prefix") {
      prefix = value;
      if (prefix.size() > kMaxKeyBytes) {
        ok = absl::InvalidArgumentError(
            absl::StrFormat("prefix is %d bytes; the limit is %d", prefix.size(), kMaxKeyBytes));
      }
    } else if (name == "from_seq") {
      if (!absl::SimpleAtoi(A(value), &from)) {
        ok = absl::InvalidArgumentError(
            absl::StrFormat("from_seq must be a number, not '%s'", value));
      }
    } else if (name != "access_token") {
      ok = absl::InvalidArgumentError(absl::StrFormat(
          "unknown query parameter '%s' (watch takes prefix, from_seq)", name));
    }
  }
  KJ_IF_MAYBE(last, headers.get(last_event_id_)) {
    // A reconnecting EventSource: resume after the last event it saw.
    if (ok.ok() && !absl::SimpleAtoi(A(View(*last)), &from)) {
      ok = absl::InvalidArgumentError("Last-Event-ID must be a seq (a number)");
    }
  }
  if (!ok.ok()) return SendError(response, ok);
  kj::HttpHeaders h(*table_);
  h.set(kj::HttpHeaderId::CONTENT_TYPE, "text/event-stream");
  h.add("Cache-Control", "no-cache");
  AddCors(h);
  auto watch = kj::heap<SseWatch>(*this, response.send(200, "OK", h), t.keyspace, prefix, from);
  auto& w = *watch;
  return w.Start().attach(kj::mv(watch));
}

std::string FrontEnd::StatusJson() {
  absl::StatusOr<StoreStats> stats = loop_.store().Stats();
  std::string out = "{\"replica\":{";
  out += "\"name\":";
  AppendJsonString(out, loop_.options().replica_name);
  if (stats.ok()) {
    absl::StrAppendFormat(&out,
                          ",\"replica_id\":\"%016x\",\"incarnation\":%d,\"live_records\":%d,"
                          "\"tombstones\":%d,\"max_seq\":%d,\"log_entries\":%d,\"disk_bytes\":%d,"
                          "\"map_bytes\":%d,\"commits\":%d,\"fingerprint\":\"%016x\","
                          "\"quarantine_records\":%d,\"clock_peers\":%d,\"clock_offset_ms\":%d,"
                          "\"clock_correction_ms\":%d",
                          stats->replica_id, stats->incarnation, stats->live_records,
                          stats->tombstones, stats->max_seq, stats->log_entries, stats->disk_bytes,
                          stats->map_bytes, stats->commits, stats->fingerprint,
                          stats->quarantine_records, stats->clock_peers, stats->clock_offset_ms,
                          stats->clock_correction_ms);
  }
  out += ",\"data_dir\":";
  AppendJsonString(out, IsUtf8(loop_.store().options().dir) ? loop_.store().options().dir : "?");
  absl::StrAppendFormat(&out,
                        ",\"max_value_bytes\":%d,\"uptime_ms\":%d,\"rpc_connections\":%d,"
                        "\"http_connections\":%d,\"clones_refused\":%d},\"peers\":[",
                        loop_.store().options().max_value_bytes,
                        absl::ToInt64Milliseconds(absl::Now() - loop_.started()),
                        loop_.connections(), open_, loop_.ReplicationCounters().clones_refused);
  const absl::Time now = absl::Now();
  bool first = true;
  for (const replication::PeerStatus& p : loop_.PeerStatuses()) {
    if (!first) out.push_back(',');
    first = false;
    out += "{\"name\":";
    AppendJsonString(out, IsUtf8(p.name) ? p.name : "?");
    out += ",\"address\":";
    AppendJsonString(out, IsUtf8(p.address) ? p.address : "?");
    absl::StrAppendFormat(&out,
                          ",\"replica_id\":\"%016x\",\"inbound\":%s,\"reachable\":%s,"
                          "\"behind\":%d,\"checkpoint_seq\":%d,\"refused\":%d,\"links\":%d,"
                          "\"dead_links\":%d",
                          p.replica_id, p.inbound ? "true" : "false",
                          p.reachable ? "true" : "false", p.behind, p.checkpoint_seq, p.refused,
                          p.links, p.dead_links);
    if (p.last_exchange != absl::InfinitePast()) {
      absl::StrAppendFormat(&out, ",\"last_exchange_ms_ago\":%d",
                            absl::ToInt64Milliseconds(now - p.last_exchange));
    } else {
      out += ",\"last_exchange_ms_ago\":null";
    }
    if (p.clock_known) absl::StrAppendFormat(&out, ",\"clock_offset_ms\":%d", p.clock_offset_ms);
    out += ",\"last_error\":";
    AppendJsonString(out, IsUtf8(p.last_error) ? p.last_error : "?");
    out.push_back('}');
  }
  out += "]}\n";
  return out;
}

std::string FrontEnd::Metrics() {
  MetricsInput in;
  absl::StatusOr<StoreStats> stats = loop_.store().Stats();
  if (stats.ok()) in.stats = *stats;
  in.peers = loop_.PeerStatuses();
  in.uptime_seconds = absl::ToDoubleSeconds(absl::Now() - loop_.started());
  in.rpc_connections = loop_.connections();
  in.http_connections = open_;
  in.bytes_sent = loop_.bytes_sent().load();
  in.now = absl::Now();
  return RenderMetrics(metrics::Global(), in);
}

}  // namespace

bool IsLoopback(const std::string& host_port) {
  const size_t colon = host_port.rfind(':');
  std::string host = host_port.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

absl::Status ValidateHttpOptions(const HttpOptions& options) {
  const size_t colon = options.listen.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == options.listen.size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--http-listen '%s' must be HOST:PORT", options.listen));
  }
  if (!IsLoopback(options.listen) && options.insecure_loopback) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--http-insecure-loopback serves without tokens, so only on a loopback address "
        "(127.0.0.1, ::1, localhost); --http-listen %s is not a loopback address",
        options.listen));
  }
  if (!IsLoopback(options.listen) && options.tls == nullptr) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--http-listen %s is not a loopback address: bearer tokens must not cross a network "
        "in clear text, so add --http-tls (HTTPS with this device's certificate) or listen on "
        "loopback (127.0.0.1, ::1, localhost)",
        options.listen));
  }
  if (options.max_connections == 0) {
    return absl::InvalidArgumentError("--http-max-connections must be at least 1");
  }
  return absl::OkStatus();
}

std::vector<std::string> FrontEndTlsNames(const std::vector<std::string>& listens) {
  std::set<std::string> names = {"localhost", "127.0.0.1", "::1"};
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) == 0 && host[0] != '\0') names.insert(host);
  for (const std::string& listen : listens) {
    std::string h = listen.substr(0, listen.rfind(':'));
    if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
    if (h.empty() || h == "0.0.0.0" || h == "::" || h == "*") {
      ifaddrs* addresses = nullptr;
      if (getifaddrs(&addresses) != 0) continue;
      for (ifaddrs* a = addresses; a != nullptr; a = a->ifa_next) {
        if (a->ifa_addr == nullptr) continue;
        char text[INET6_ADDRSTRLEN] = {};
        if (a->ifa_addr->sa_family == AF_INET) {
          inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr, text,
                    sizeof(text));
        } else if (a->ifa_addr->sa_family == AF_INET6) {
          const auto* v6 = reinterpret_cast<sockaddr_in6*>(a->ifa_addr);
          if (IN6_IS_ADDR_LINKLOCAL(&v6->sin6_addr)) continue;  // needs a scope: not nameable
          inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof(text));
        } else {
          continue;
        }
        names.insert(text);
      }
      freeifaddrs(addresses);
    } else {
      names.insert(h);
    }
  }
  return std::vector<std::string>(names.begin(), names.end());
}

absl::StatusOr<std::shared_ptr<ssl_ctx_st>> StartFrontEndTls(
    const rpc::TlsIdentity& identity, const std::vector<std::string>& listens,
    const std::string& pem_path) {
  PEERKV_ASSIGN_OR_RETURN(rpc::FrontEndTls tls,
                          rpc::MakeFrontEndTls(identity, FrontEndTlsNames(listens)));
  if (absl::Status written = ReplaceFile(pem_path, tls.certificate_pem, 0644); !written.ok()) {
    return absl::UnavailableError(absl::StrFormat("cannot write the front ends' certificate %s: %s",
                                                  pem_path, written.message()));
  }
  return tls.context;
}

rpc::FrontEndFactory HttpFrontEnd(HttpOptions options) {
  return [options = std::move(options)](
             rpc::ServerLoop& loop, kj::WaitScope& wait) -> absl::StatusOr<std::shared_ptr<void>> {
    PEERKV_RETURN_IF_ERROR(ValidateHttpOptions(options));
    auto front_end = std::make_shared<FrontEnd>(loop, options);
    std::string bound;
    KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] { bound = front_end->Listen().wait(wait); })) {
      return absl::UnavailableError(absl::StrFormat("cannot listen on %s (--http-listen): %s",
                                                    options.listen, e->getDescription().cStr()));
    }
    if (options.on_listening) options.on_listening(bound);
    LogLine(absl::StrFormat("peerkv: HTTP on %s://%s/%s", options.tls ? "https" : "http", bound,
                            options.insecure_loopback ? " (no tokens: --http-insecure-loopback)"
                                                      : ""));
    return std::shared_ptr<void>(front_end);
  };
}

}  // namespace peerkv::http
