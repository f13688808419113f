// rpc/server_loop.h: the server's state on its event-loop thread: the
// listening socket, client connections with their reader limits, commit
// notifications for watches, in-flight write accounting for graceful
// shutdown, and the replication links (PeerLinks, see peer_links.h).
// Internal to rpc/: everything here runs on the loop thread.
#ifndef PEERKV_RPC_SERVER_LOOP_H_
#define PEERKV_RPC_SERVER_LOOP_H_

#include <atomic>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "capnp/message.h"
#include "capnp/rpc-twoparty.h"
#include "kj/async-io.h"
#include "replication/executor.h"
#include "replication/replicator.h"
#include "replication/transport.h"
#include "rpc/buffered_stream.h"
#include "rpc/peer_links.h"
#include "rpc/peerkv.capnp.h"
#include "rpc/rejection_log.h"
#include "rpc/server_options.h"
#include "rpc/tls.h"
#include "rpc/watch_hub.h"
#include "store/store.h"

namespace peerkv::rpc {

// "ip:port" of the other end of a socket.
std::string PeerAddress(kj::AsyncIoStream& stream);

// Wakes the loop thread from any thread. Ring() never blocks; Wait()
// resolves after the next ring (at once if one came since the last Wait).
class Bell {
 public:
  kj::Promise<void> Wait();
  void Ring();

 private:
  absl::Mutex mu_;
  bool rung_ ABSL_GUARDED_BY(mu_) = false;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> fulfiller_ ABSL_GUARDED_BY(mu_);
};

// Wraps a connection's message stream to learn why a connection failed
// (garbage bytes, a message over the limit) so the server can log it.
class RecordingMessageStream final : public capnp::MessageStream {
 public:
  // Reads only while `stream` has room to write the answers (see
  // BufferedStream::WhenWritable).
  explicit RecordingMessageStream(BufferedStream& stream) : stream_(stream), inner_(stream) {}
  kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> tryReadMessage(
      kj::ArrayPtr<kj::AutoCloseFd> fd_space, capnp::ReaderOptions options,
      kj::ArrayPtr<capnp::word> scratch) override;
  kj::Promise<void> writeMessage(kj::ArrayPtr<const int> fds,
                                 kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments)
      override {
    return inner_.writeMessage(fds, segments);
  }
  kj::Promise<void> writeMessages(
      kj::ArrayPtr<kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>>> messages) override {
    return inner_.writeMessages(messages);
  }
  kj::Maybe<int> getSendBufferSize() override { return inner_.getSendBufferSize(); }
  kj::Promise<void> end() override { return inner_.end(); }

  // Why reading failed; empty if it did not.
  const std::string& failure() const { return failure_; }
  // True while the server waits for the rest of a message: the first one
  // of the connection, or one whose first bytes have arrived. False while
  // it is not reading (the RPC system's flow limit, a full send buffer) or
  // waits for a next message that has not begun.
  // Whole messages read so far.
  uint64_t messages() const { return messages_; }
  bool MidMessage() const {
    return reading_ && (messages_ == 0 || stream_.bytes_in() > boundary_);
  }

 private:
  BufferedStream& stream_;
  capnp::AsyncIoMessageStream inner_;
  std::string failure_;
  bool reading_ = false;
  uint64_t messages_ = 0;
  // stream_.bytes_taken() when the last whole message was read.
  uint64_t boundary_ = 0;
};

class ServerLoop final : private kj::TaskSet::ErrorHandler {
 public:
  // `events` (the replicator) and `peer_statuses` are called from this
  // thread but must be thread-safe; both may be null/empty when the server
  // does not replicate.
  ServerLoop(Store& store, const ServerOptions& options, kj::AsyncIoContext& io,
             replication::LinkEvents* events,
             std::function<std::vector<replication::PeerStatus>()> peer_statuses,
             std::atomic<uint64_t>& bytes_sent);
  ~ServerLoop() noexcept(false);

  // Binds the listening socket (and the Unix socket, if any); resolves to
  // the bound TCP address.
  kj::Promise<std::string> Listen();
  // Graceful stop: no new connections, in-flight writes answered, replies
  // flushed; then every connection is closed with the loop.
  kj::Promise<void> Shutdown();

  Store& store() { return store_; }
  // The loop's I/O (front ends listen through it).
  kj::AsyncIoContext& io() { return io_; }
  const ServerOptions& options() const { return options_; }
  // What a friend's device `peer` may read (options().access); null for an
  // own device.
  std::shared_ptr<const replication::KeyspaceFilter> ReadableBy(
      const AuthenticatedPeer& peer) const;
  // Which policy and group records it may read (MayReadRecord); null for
  // an own device.
  std::shared_ptr<const replication::ReservedRecordFilter> ReservedReadableBy(
      const AuthenticatedPeer& peer) const;
  absl::Time started() const { return started_; }
  size_t connections() const { return connections_.size(); }
  std::vector<replication::PeerStatus> PeerStatuses() const {
    return peer_statuses_ ? peer_statuses_() : std::vector<replication::PeerStatus>{};
  }
  // The replication engine's counters, for status (zeros without one).
  void set_replication_counters(std::function<replication::ReplicatorCounters()> counters) {
    replication_counters_ = std::move(counters);
  }
  replication::ReplicatorCounters ReplicationCounters() const {
    return replication_counters_ ? replication_counters_() : replication::ReplicatorCounters{};
  }
  // This replica's hello; `to`: the peer it answers (0 when dialling), whose
  // holdings it reports (replication::PeerInfo::held).
  replication::PeerInfo LocalInfo(uint64_t to = 0) const;

  // The watches' change index and wake-ups, fed by every commit.
  WatchHub& watch_hub() { return watch_hub_; }
  // Submits a write to the store; resolves on this loop once durable.
  kj::Promise<absl::StatusOr<std::vector<Version>>> Write(std::vector<Mutation> mutations);
  // Merges a peer's records (a reconcile push); resolves on this loop once
  // durable.
  kj::Promise<absl::StatusOr<MergeResult>> Merge(std::vector<Record> records,
                                                 MergeSource from = MergeSource::kOwnDevice);
  // Runs `work` on the server's worker thread, off this loop, and resolves
  // on this loop with what it returned: for work whose length grows with
  // the store (a reconcile round below the stored levels scans and hashes
  // a whole keyspace, about 1.5 s at 1,000,000 records), so that the loop
  // keeps answering every other call meanwhile. `work` must touch nothing
  // but thread-safe state (the store) and what it owns. Jobs run one at a
  // time, in order; those still queued when the loop goes are dropped
  // (their promises break), the one running finishes first.
  template <typename T>
  kj::Promise<T> OffLoop(absl::AnyInvocable<T()> work) {
    auto paf = kj::newPromiseAndCrossThreadFulfiller<T>();
    worker_.Post([work = std::move(work), fulfiller = kj::mv(paf.fulfiller)]() mutable {
      fulfiller->fulfill(work());
    });
    return kj::mv(paf.promise);
  }
  // Logs a refused request (`items` refused parts of one call), at most
  // one line per client host per rejection_log_interval_ms plus one line
  // counting the rest (see RejectionLog).
  void LogRejected(const std::string& peer, std::string_view method, const absl::Status& status,
                   uint64_t items = 1);

  // The replication links (dialled peers and peers that said hello).
  PeerLinks& links() { return peer_links_; }
  replication::LinkEvents* events() { return events_; }

  // Largest value this server accepts, and what its readers allow.
  const capnp::ReaderOptions& reader_options() const { return reader_options_; }

  // The reply limits of this server's value limit (see server_options.h).
  size_t reply_budget() const { return ReplyBudget(store_.options().max_value_bytes); }
  size_t reply_items() const { return ReplyItems(store_.options().max_value_bytes); }

  // Bytes this server has written to all its sockets (clients and peers).
  std::atomic<uint64_t>& bytes_sent() { return bytes_sent_; }

  // Client connection `connection_id` carries the link of peer
  // `replica_id` (its hello): its bytes are counted as that peer's
  // (BufferedStream::CountAsPeer).
  void CountAsPeer(uint64_t connection_id, uint64_t replica_id);

  // Binds replica id `replica_id` to `device`, the authenticated device of
  // the link that says hello with it (either way: the peer that dialled us,
  // or the peer we dialled answering): the id must be minted from the
  // device's key with `incarnation` (CheckReplicaClaim), which needs no
  // memory of earlier links, so a restored data directory refuses a lie as
  // a fresh one does. (nullopt: a local or plaintext link, trusted as this
  // user's own.)
  absl::Status BindReplica(uint64_t replica_id, uint64_t incarnation,
                           const std::optional<auth::PublicKey>& device);

  // Shows `identity` on every TLS link made from now on (accepted or
  // dialled); links already made keep theirs. FailedPrecondition on a
  // server without TLS.
  absl::Status ReplaceTls(const TlsIdentity& identity);

 private:
  struct Connection;

  void AddConnection(kj::Own<kj::AsyncIoStream> stream,
                     std::optional<AuthenticatedPeer> peer = std::nullopt);
  kj::Promise<void> Handshake(kj::AuthenticatedStream stream);
  kj::Promise<void> AcceptLoop();
  // Accepts on the Unix socket (options_.unix_socket), from this user only.
  kj::Promise<void> UnixAcceptLoop();
  kj::Promise<void> AcceptFailed(kj::Exception&& e);
  kj::Promise<void> SweepIdle();
  kj::Promise<void> PumpCommits();
  // The device or friend lists changed, or a link's certificate expired
  // (ArmExpiryTimer): every TLS connection and dialled link is authorized
  // again against them, and those now refused (a removed device, a removed
  // friend's, an expired certificate) are closed and logged.
  void RecheckPeers();
  // Sets the expiry timer for the earliest moment an open TLS connection
  // or dialled link is refused as expired (RefusedAsExpiredAtMs), at the
  // trust source's clock: it runs RecheckPeers then, and sets itself
  // again. Called as links open and after each recheck; a link that went
  // meanwhile only makes it fire early, harmlessly.
  void ArmExpiryTimer();
  kj::Promise<void> WaitUntil(kj::TimePoint deadline, kj::Function<bool()> done);
  void ScheduleRejectionFlush();
  void taskFailed(kj::Exception&& e) override;

  Store& store_;
  const ServerOptions& options_;
  kj::AsyncIoContext& io_;
  replication::LinkEvents* const events_;
  const std::function<std::vector<replication::PeerStatus>()> peer_statuses_;
  std::function<replication::ReplicatorCounters()> replication_counters_;
  capnp::ReaderOptions reader_options_;
  Bell bell_;
  // Set (with a ring) by a commit that changed the device or friend lists.
  std::atomic<bool> trust_changed_{false};
  WatchHub watch_hub_;
  int listener_id_ = 0;
  kj::Own<kj::ConnectionReceiver> listener_;
  std::unique_ptr<TlsEndpoint> tls_;  // null: plaintext (loopback only)
  // Replaced endpoints (ReplaceTls: once, when a join completes), kept for
  // the handshakes that began with them.
  std::vector<std::unique_ptr<TlsEndpoint>> retired_tls_;
  // Devices refused since start: each is logged once.
  std::set<auth::PublicKey> refused_logged_;
  kj::Promise<void> accept_loop_ = nullptr;
  kj::Own<kj::ConnectionReceiver> unix_listener_;
  kj::Promise<void> unix_accept_loop_ = nullptr;
  // Failed accepts since the last one that succeeded, and the last failure
  // logged: an episode (EMFILE while the table is full) is logged once.
  uint64_t accept_failures_ = 0;
  std::string accept_error_logged_;
  std::string bound_;
  std::map<uint64_t, Connection*> connections_;
  uint64_t next_connection_id_ = 1;
  size_t in_flight_writes_ = 0;
  std::atomic<uint64_t>& bytes_sent_;
  absl::Time started_;
  RejectionLog rejections_;
  bool rejection_flush_scheduled_ = false;
  kj::TaskSet tasks_;
  // ArmExpiryTimer's timer (replaced to re-arm it) and when it fires (Unix
  // ms, the trust source's clock; nullopt: not armed).
  kj::Promise<void> expiry_timer_ = nullptr;
  std::optional<int64_t> expiry_armed_ms_;
  // Last but one, so destroyed early: the links hold capabilities into the
  // connections that tasks_ owns, and are dropped while those still exist.
  PeerLinks peer_links_;
  // The thread OffLoop runs work on. Last, so destroyed (stopped and
  // joined) first: no job outlives the loop's state.
  replication::ThreadExecutor worker_;
};

// The bootstrap of a client connection (see gateway.cc).
// `identity`: the TLS peer (nullopt: a local or plaintext connection,
// which gets everything, as an own device does). A friend's device gets
// neither Kv nor Replica yet.
kj::Own<wire::Gateway::Server> NewGateway(ServerLoop& loop, std::string peer,
                                          uint64_t connection_id,
                                          std::optional<AuthenticatedPeer> identity = std::nullopt);
// The Kv capability (see kv_service.cc). Its watches share the
// connection's `watch_window`.
// Every call is checked with options().access (if set) for `who`.
kj::Own<wire::Kv::Server> NewKv(ServerLoop& loop, std::string peer,
                                kj::Own<WatchWindow> watch_window, auth::Principal who = {});
// A Replica capability (see replica_service.cc). `link` is 0 for the one a
// connection's Gateway hands out (its link is made by hello), and the link
// id for the one passed as `back` when dialling out.
// `readable` (a friend's device; null: everything): every answer is
// restricted to the keyspaces it accepts (README "Filtered replication").
// A filtered link is a friend's to the merge gate too; `reserved`: the
// policy and group records its pulls carry.
kj::Own<wire::Replica::Server> NewReplica(
    ServerLoop& loop, std::string peer, uint64_t connection_id, replication::LinkId link,
    std::optional<auth::PublicKey> device = std::nullopt,
    std::shared_ptr<const replication::KeyspaceFilter> readable = nullptr,
    std::shared_ptr<const replication::ReservedRecordFilter> reserved = nullptr);

}  // namespace peerkv::rpc

#endif  // PEERKV_RPC_SERVER_LOOP_H_
