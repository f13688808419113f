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
#include "kj/async.h"
#include "replication/executor.h"
#include "replication/replicator.h"
#include "rpc/server_options.h"
#include "store/store.h"

namespace peerkv::rpc {

class PeerLinksBridge;  // the engine's transport (peer_links.h)
class ServerLoop;       // server_loop.h

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
  // Shows `identity` on the TLS links made from now on (a device whose
  // join completed gets its certificate without a restart). Waits for the
  // loop to take it. FailedPrecondition if the server has no TLS or is not
  // running; errors of making the TLS context.
  absl::Status SetTlsIdentity(const TlsIdentity& identity);

  // Stops accepting connections, waits (up to shutdown_grace_ms) for
  // in-flight writes to become durable and their replies to be sent, closes
  // every connection and ends the loop thread. Idempotent.
  void Stop();

 private:
  struct StopSignal;

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
  // The running loop, for SetTlsIdentity (null before it listens and once
  // it stops).
  absl::Mutex loop_mu_;
  kj::Own<const kj::Executor> loop_executor_ ABSL_GUARDED_BY(loop_mu_);
  ServerLoop* loop_ ABSL_GUARDED_BY(loop_mu_) = nullptr;
  // Replication (absent when options_.replicate is false). Stop() stops the
  // engine and its executor before the loop, and frees them after it.
  std::unique_ptr<replication::ThreadExecutor> executor_;
  std::unique_ptr<PeerLinksBridge> transport_;
  std::unique_ptr<replication::Replicator> replicator_;
  absl::Mutex stop_mu_;
  bool stopped_ ABSL_GUARDED_BY(stop_mu_) = false;
};

}  // namespace peerkv::rpc

#endif  // PEERKV_RPC_SERVER_H_
