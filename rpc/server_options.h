// rpc/server_options.h: how a Server is configured (ServerOptions) and the
// message and reply limits derived from the value limit. Kept apart from
// rpc/server.h so the loop-side files (server_loop.h and the services) can
// read the options without including the public Server above them.
#ifndef PEERKV_RPC_SERVER_OPTIONS_H_
#define PEERKV_RPC_SERVER_OPTIONS_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

#include "auth/access.h"
#include "replication/replicator.h"
#include "rpc/peer_auth.h"

namespace peerkv::consensus {
class StrongKeyspaces;
}  // namespace peerkv::consensus

namespace kj {
class WaitScope;
}  // namespace kj

namespace peerkv::rpc {

class ServerLoop;

// A front end hosted on the server's loop beside RPC (http/, resp/):
// called on the loop thread once the RPC port listens; what it returns
// lives until the server stops (it is destroyed on the loop thread before
// the loop shuts down). An error fails Server::Start.
using FrontEndFactory =
    std::function<absl::StatusOr<std::shared_ptr<void>>(ServerLoop& loop, kj::WaitScope& wait)>;

struct ServerOptions {
  // HOST:PORT to listen on; port 0 picks a free port (see Server::address).
  std::string listen = "127.0.0.1:7700";
  // TLS 1.3 on the TCP listener and on every peer link this server dials
  // (rpc/peer_auth.h, rpc/tls.h): what this server presents, and whom it
  // trusts, read at each handshake. Without `tls` the listener and the
  // links are plaintext, which Start allows on a loopback address only
  // (in-process tests, benchmarks' baselines).
  std::optional<TlsIdentity> tls;
  TrustSource trust;
  // A TLS handshake not finished within this long is dropped.
  int handshake_timeout_ms = 10'000;
  // A Unix socket to listen on as well (a path; empty: none), for local
  // clients (the CLI with --data DIR). A file already there is replaced
  // (REQUIRES: the caller owns the path, e.g. holds its data directory's
  // lock); the socket is made owner-only (0600), a connection from another
  // user id (SO_PEERCRED) is closed and logged, and the file is removed at
  // shutdown. At most 107 bytes (sun_path); a longer path can be named
  // through /proc/self/fd/N/NAME.
  std::string unix_socket;
  // A human name for this replica, shown by status and in logs.
  std::string replica_name;
  // How long Stop() waits for in-flight writes and replies.
  int shutdown_grace_ms = 10'000;
  // A connection that has not sent a whole message within this long of
  // opening, or of the first bytes of a message, is closed (slowloris, and
  // idle sockets that would hold file descriptors). Connections waiting
  // between messages (a watch, a pooled client) are not affected.
  int idle_timeout_ms = 60'000;
  // Every replication link is pinged this often; a link whose ping stays
  // unanswered for 5 intervals is dead (a half-open connection): it is
  // closed, and redialled if this side dialled it.
  int keepalive_ms = 2'000;
  // Rejected requests are logged at most once per this interval per client
  // host; the others in it are counted in one line (see RejectionLog).
  int64_t rejection_log_interval_ms = 60'000;
  // Replicate with peers: dial `replication.peers`, accept peers that dial
  // in, gossip. (Its `name` is taken from replica_name.)
  bool replicate = true;
  replication::ReplicatorOptions replication;
  // Tests only: called on the thread that answers a reconcile round, just
  // before it reads the store (a test blocks it to show that the server
  // keeps answering everyone else meanwhile). Empty otherwise.
  std::function<void()> reconcile_serve_hook;

  // Strong keyspaces (consensus/strong_keyspaces.h): borrowed, must outlive
  // the server. nullptr: every keyspace is lww and the strong calls
  // (writeIf, setMode, ...) are refused with FailedPrecondition.
  consensus::StrongKeyspaces* strong = nullptr;

  // Front ends started with the server (see FrontEndFactory).
  std::vector<FrontEndFactory> front_ends;
  // Refuse peers' snapshot pages (Unimplemented: they pull the log
  // instead). Tests of the log pull and the benchmark's baseline set it.
  bool snapshot_disabled = false;

  // Access control (auth/access.h; `peerkv serve` gives an
  // auth::StoreAccess over the store): every Kv call is checked against it
  // for the connection's user (a friend's device acts as that friend; own
  // devices and local clients as the local user); a friend's device gets a
  // Replica restricted to the keyspaces MayRead(its user) allows (README
  // "Filtered replication"), and this server's links may dial friends'
  // servers. null: no checks, and a friend's device gets no Kv nor Replica.
  std::shared_ptr<const auth::Access> access;
  // The server's identity, borrowed, for setPolicy and groupChange (signed
  // with its user key). null: those calls fail with FailedPrecondition.
  const auth::Identity* identity = nullptr;
};

// Largest message a peer may send, sized from the value limit: one value
// at the limit, plus room for keys and framing (twice the value, plus 1 MiB).
inline size_t MaxMessageBytes(size_t max_value_bytes) {
  return 2 * max_value_bytes + (size_t{1} << 20);
}

// How many bytes of records one answer may carry. Cap'n Proto refuses to
// send a message larger than its own connection may receive, so answers
// (scan pages, getMany, watch batches, pulls) stay within half the message
// limit; one record more still fits.
inline size_t ReplyBudget(size_t max_value_bytes) { return MaxMessageBytes(max_value_bytes) / 2; }

// Items (records, results) one answer may list: each costs up to ~128 bytes
// of framing besides its data.
inline size_t ReplyItems(size_t max_value_bytes) { return ReplyBudget(max_value_bytes) / 256; }

}  // namespace peerkv::rpc

#endif  // PEERKV_RPC_SERVER_OPTIONS_H_
