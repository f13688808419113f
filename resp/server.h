// resp/server.h: the RESP front end (`peerkv serve --resp-listen`): Redis
// clients and redis-benchmark talk to the store through it. It runs its own
// event loops (epoll, one thread each, all on one port through
// SO_REUSEPORT) beside the Cap'n Proto server, and reaches the store
// through the same calls: reads from the loop (GetView), writes through the
// group-commit writer, answered once durable. No kj: its loop is a plain
// epoll loop so that a GET costs one read, one LMDB lookup and one write.
#ifndef PEERKV_RESP_SERVER_H_
#define PEERKV_RESP_SERVER_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "resp/session.h"
#include "store/store.h"

struct ssl_ctx_st;  // OpenSSL's SSL_CTX

namespace peerkv::resp {

struct RespOptions {
  // HOST:PORT (IPv4 or [IPv6]); port 0 picks a free port (see address()).
  std::string listen = "127.0.0.1:6379";
  // TLS (--resp-tls): a context from rpc::MakeFrontEndTls (the device's
  // key); every connection is TLS, driven by OpenSSL on the loop. Null:
  // plaintext, which only a loopback address allows.
  std::shared_ptr<ssl_ctx_st> tls;
  // Serve without authentication. Only allowed on a loopback address;
  // without it every command but AUTH, HELLO, PING and QUIT answers
  // -NOAUTH until AUTH succeeds.
  bool insecure_loopback = false;
  // The keyspace of a new connection and of SELECT 0.
  std::string default_keyspace = "default";
  // Event loops (threads), 1..64.
  int threads = 1;
  // Checks AUTH tokens (`serve` passes auth::TokenStore::Verifier). Empty:
  // AUTH is refused, so only --resp-insecure-loopback serves anyone.
  Authenticator authenticate;
  std::function<bool(std::string_view keyspace)> is_strong;
  // Policies (SessionConfig::access): null checks nothing.
  std::shared_ptr<const auth::Access> access;
  auth::Principal user;
  std::function<std::vector<replication::PeerStatus>()> peer_statuses;
  std::string replica_name;
  // Open connections at most; one more is answered -ERR and closed.
  size_t max_connections = 10'000;
  // A connection part-way through a command for this long is closed
  // (slowloris); connections idle between commands are kept.
  int idle_timeout_ms = 60'000;
  // Replies queued for a client that does not read: beyond the soft limit
  // the connection's commands are not read any further until it drains
  // (its socket buffer and this bound its memory); one reply that would
  // push the queue beyond the hard limit closes the connection.
  size_t output_soft_limit = size_t{1} << 20;
  size_t output_hard_limit = size_t{128} << 20;
  // Writes one connection may have in flight (pipelined SETs) before its
  // further commands wait.
  size_t max_writes_in_flight = 1024;
  // How long Stop() waits for in-flight writes to be answered.
  int shutdown_grace_ms = 10'000;
  // Where connection errors are logged (one line each); empty: stderr.
  std::function<void(const std::string&)> log;
};

class RespServer {
 public:
  // Binds and starts the loops. InvalidArgument for bad options (an
  // unauthenticated non-loopback address among them), Unavailable if the
  // address cannot be bound.
  static absl::StatusOr<std::unique_ptr<RespServer>> Start(Store* store, RespOptions options);
  ~RespServer();
  RespServer(const RespServer&) = delete;
  RespServer& operator=(const RespServer&) = delete;

  // The bound address, e.g. "127.0.0.1:41873".
  std::string address() const { return config_.address; }
  const FrontEndStats& stats() const { return stats_; }
  // Stops accepting, answers in-flight writes (up to shutdown_grace_ms),
  // closes every connection and joins the loops. Idempotent.
  void Stop();

 private:
  class Loop;
  RespServer(Store* store, RespOptions options);

  Store* const store_;
  const RespOptions options_;
  SessionConfig config_;
  CursorTable cursors_;
  FrontEndStats stats_;
  std::atomic<uint64_t> next_id_{16};  // connection ids (below: the loops' own tags)
  std::vector<std::unique_ptr<Loop>> loops_;
  bool stopped_ = false;
};

// True if HOST of "HOST:PORT" is a loopback address (127.0.0.0/8, ::1,
// localhost).
bool IsLoopbackListen(std::string_view listen);

}  // namespace peerkv::resp

#endif  // PEERKV_RESP_SERVER_H_
