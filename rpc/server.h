// rpc/server.h: serves a Store over Cap'n Proto RPC on one TCP port, to
// clients (Kv) and to peer replicas (Replica), and runs the replication
// engine that keeps this replica in sync with its peers. The server runs its
// own event loop on its own thread: reads are answered on that loop, writes
// go to the store's group-commit writer and are answered once durable; the
// engine runs on a thread of its own. No kj or capnp type appears here, so
// the CLI, tests and benchmarks can start servers without the RPC stack.
#ifndef PEERKV_RPC_SERVER_H_
#define PEERKV_RPC_SERVER_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "replication/executor.h"
#include "replication/replicator.h"
#include "store/store.h"

namespace peerkv::rpc {

struct ServerOptions {
  // HOST:PORT to listen on; port 0 picks a free port (see Server::address).
  std::string listen = "127.0.0.1:7700";
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
};

// Largest message a peer may send, sized from the value limit: one value
// at the limit, plus room for keys and framing (twice the value, plus 1 MiB).
size_t MaxMessageBytes(size_t max_value_bytes);

class Server {
 public:
  // Starts serving `store` (borrowed: it must outlive the server) and returns
  // once listening. Unavailable if the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<Server>> Start(Store* store,
                                                       ServerOptions options);
  // Stop(), then releases everything.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The address actually bound, e.g. "127.0.0.1:41873".
  std::string address() const;

  // Replication: the peers and their state, engine counters, and a peer to
  // dial from now on.
  std::vector<replication::PeerStatus> PeerStatuses() const;
  replication::ReplicatorCounters ReplicationCounters() const;
  void AddPeer(const std::string& address);
  // Bytes written to all sockets since start (clients and peers).
  uint64_t BytesSent() const;

  // Stops accepting connections, waits (up to shutdown_grace_ms) for
  // in-flight writes to become durable and their replies to be sent, closes
  // every connection and ends the loop thread. Idempotent.
  void Stop();

 private:
  struct StopSignal;
  class Transport;

  Server(Store* store, ServerOptions options);
  void Run();

  Store* const store_;
  const ServerOptions options_;
  std::thread thread_;
  absl::Notification ready_;
  absl::Status start_status_;  // written before ready_ is notified
  std::string address_;        // written before ready_ is notified
  std::unique_ptr<StopSignal> stop_;
  std::atomic<uint64_t> bytes_sent_{0};
  // Replication (absent when options_.replicate is false). Stop() stops the
  // engine and its executor before the loop, and frees them after it.
  std::unique_ptr<replication::ThreadExecutor> executor_;
  std::unique_ptr<Transport> transport_;
  std::unique_ptr<replication::Replicator> replicator_;
  absl::Mutex stop_mu_;
  bool stopped_ ABSL_GUARDED_BY(stop_mu_) = false;
};

}  // namespace peerkv::rpc

#endif  // PEERKV_RPC_SERVER_H_
