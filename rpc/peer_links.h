// rpc/peer_links.h: the TCP replication transport on the server's loop
// thread: links to peers this server dialled (Dial, with hello) and links
// made by peers' hellos (AddInbound); pulls and nudges over them, with the
// per-link watermark delta state; keepalive pings that find half-open
// links; closing links; and PeerLinksBridge, the engine's Transport that
// hops from the engine's thread onto them. Identity and TLS on peer links
// go here.
// Internal to rpc/: PeerLinks runs on the loop thread.
#ifndef PEERKV_RPC_PEER_LINKS_H_
#define PEERKV_RPC_PEER_LINKS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "capnp/message.h"
#include "kj/async-io.h"
#include "replication/transport.h"
#include "replication/watermark_channel.h"
#include "rpc/peer_auth.h"
#include "rpc/peerkv.capnp.h"
#include "store/store.h"

namespace peerkv::rpc {

class PeerLinks final : private kj::TaskSet::ErrorHandler {
 public:
  // The Replica capability a dialled peer calls back on (link `link`, at
  // `address`).
  // `readable`: the dialled server is a friend's (see set_readable);
  // `answered_by`: the device it showed (nullopt without TLS).
  using MakeBack = std::function<kj::Own<wire::Replica::Server>(
      const std::string& address, replication::LinkId link,
      std::shared_ptr<const replication::KeyspaceFilter> readable,
      const std::optional<AuthenticatedPeer>& answered_by)>;
  // Closes client connection `connection_id` (an inbound link found dead).
  using CloseConnection = std::function<void(uint64_t connection_id)>;

  // `events` (the replicator) is called from this thread but must be
  // thread-safe; it is null when the server does not replicate. The
  // references must outlive this object.
  PeerLinks(kj::AsyncIoContext& io, const capnp::ReaderOptions& reader_options,
            std::atomic<uint64_t>& bytes_sent, int keepalive_ms,
            replication::LinkEvents* events,
            std::function<replication::PeerInfo(uint64_t to)> local_info, MakeBack make_back,
            CloseConnection close_connection);
  ~PeerLinks() noexcept(false);

  // Starts the keepalive pings (once the server listens).
  void StartKeepAlive();

  // How Dial connects (TLS and the check of the peer's key, rpc/tls.h);
  // `peer` is set to who answered. Unset: a plain connect.
  using Dialer = std::function<kj::Promise<kj::Own<kj::AsyncIoStream>>(
      const std::string& address, std::shared_ptr<std::optional<AuthenticatedPeer>> peer)>;
  void set_dialer(Dialer dialer) { dialer_ = std::move(dialer); }
  // Checks that replica id `replica_id` (with `incarnation`), which a
  // dialled peer answered hello with, is minted from `device`, the key it
  // showed; an error refuses the link (ServerLoop::BindReplica).
  using BindReplica = std::function<absl::Status(uint64_t replica_id, uint64_t incarnation,
                                                 const auth::PublicKey& device)>;
  void set_bind_replica(BindReplica bind) { bind_replica_ = std::move(bind); }
  // What the server that answered a dial may read (null: everything, an
  // own device): its link's PeerInfo::readable and the back capability's
  // filter. Unset: everything.
  using Readable = std::function<std::shared_ptr<const replication::KeyspaceFilter>(
      const std::optional<AuthenticatedPeer>& peer)>;
  void set_readable(Readable readable) { readable_ = std::move(readable); }
  // Whether the server that answered a dial is still let in now, checked
  // when its hello answer arrives (the device or friend lists may have
  // changed since the handshake: a removal that arrived meanwhile). An
  // error refuses the link. Unset: nothing is checked again.
  using StillTrusted = std::function<absl::Status(const AuthenticatedPeer& peer)>;
  void set_still_trusted(StillTrusted check) { still_trusted_ = std::move(check); }

  using DialDone = absl::AnyInvocable<void(absl::StatusOr<replication::Transport::Connected>)>;
  using PullDone = absl::AnyInvocable<void(absl::StatusOr<replication::PullResponse>)>;
  // Dials `address` and says hello. `expected`: the replica the engine met
  // there last (0: none known); our hello then says what we hold of it
  // (PeerInfo::held), so a restored peer sees the evidence in the hello,
  // before anything else is exchanged (Transport::ConnectExpecting).
  void Dial(const std::string& address, uint64_t expected, DialDone done);
  void Pull(replication::LinkId link, const replication::PullRequest& request, PullDone done);
  using SnapshotDone = absl::AnyInvocable<void(absl::StatusOr<replication::SnapshotResponse>)>;
  void Snapshot(replication::LinkId link, const replication::SnapshotRequest& request,
                SnapshotDone done);
  void Nudge(replication::LinkId link, const Watermarks& mine);
  using ReconcileDone = absl::AnyInvocable<void(absl::StatusOr<std::string>)>;
  void Reconcile(replication::LinkId link, std::string request, ReconcileDone done);
  void CloseLink(replication::LinkId link);
  // The peer on `link` sent what it must not (a reconcile message out of
  // bounds): the link is dropped on a later turn (the error is answered
  // first) and the engine told; the connection stays, but its Replica
  // refuses every further call (replica_service.cc).
  void Refuse(replication::LinkId link, const absl::Status& why);
  // A peer at `address` on connection `connection_id` said hello; `back`
  // reaches it.
  // `friend_device`: the peer is a friend's device (PeerInfo::readable is set).
  replication::LinkId AddInbound(uint64_t connection_id, const std::string& address,
                                 wire::Replica::Client back, bool friend_device = false);
  // Whether `link`'s authenticated peer is a friend's device (false for an
  // unknown link).
  bool FriendLink(replication::LinkId link) const;
  // Inbound links made by hellos on connection `connection_id`.
  size_t InboundLinks(uint64_t connection_id) const;
  // Client connection `connection_id` is gone: so are its inbound links.
  void DropConnection(uint64_t connection_id, const absl::Status& why);
  // Drops (closing their connections, logged, the engine told, so it
  // redials and the dial is checked afresh) the links this server dialled
  // whose server `check` refuses now: the device or friend lists changed (a
  // removal reached this replica). Inbound links go with their client
  // connections, which the server loop checks.
  void DropRefused(const StillTrusted& check);
  // Calls `fn` with who answered each link this server dialled over TLS.
  void ForEachDialledPeer(const std::function<void(const AuthenticatedPeer&)>& fn) const;
  replication::LinkEvents* events() { return events_; }

 private:
  Dialer dialer_;
  BindReplica bind_replica_;
  Readable readable_;
  StillTrusted still_trusted_;
  struct Outbound;
  struct LinkEntry {
    wire::Replica::Client peer = nullptr;
    uint64_t connection_id = 0;  // inbound links: the client connection
    kj::Own<Outbound> outbound;  // outbound links: the connection we dialled
    // Watermarks told to the peer in our pulls and nudges, and its
    // watermarks as its answers told us (the wire carries deltas).
    replication::WatermarkChannel watermarks;
    // The peer's address, for logs.
    std::string address;
    // When the keepalive ping now unanswered was sent.
    kj::Maybe<kj::TimePoint> ping_sent;
    // The peer authenticated as a friend's device (the merge gate's
    // MergeSource, README "Signed records").
    bool friend_device = false;
    // Outbound links over TLS: who answered the dial.
    std::optional<AuthenticatedPeer> answered_by;
  };

  kj::Promise<void> KeepAlive();
  void DropLink(replication::LinkId link, const absl::Status& why);
  void taskFailed(kj::Exception&& e) override;

  kj::AsyncIoContext& io_;
  const capnp::ReaderOptions& reader_options_;
  std::atomic<uint64_t>& bytes_sent_;
  const int keepalive_ms_;
  replication::LinkEvents* const events_;
  // Our hello to replica `to` (0: not known).
  const std::function<replication::PeerInfo(uint64_t to)> local_info_;
  const MakeBack make_back_;
  const CloseConnection close_connection_;
  std::map<replication::LinkId, LinkEntry> links_;
  replication::LinkId next_link_ = 1;
  kj::TaskSet tasks_;
};

// The replication engine's transport, called on the engine's thread: each
// call hops onto the loop with executeSync (which only starts the
// operation; the engine is called back when it completes) and runs on the
// attached PeerLinks. Between Detach and the next Attach calls are dropped
// (the engine times them out).
class PeerLinksBridge final : public replication::Transport {
 public:
  ~PeerLinksBridge() noexcept override { Detach(); }

  void Attach(const kj::Executor& executor, PeerLinks* links) {
    absl::MutexLock lock(&mu_);
    executor_ = executor.addRef();
    links_ = links;
  }
  void Detach() {
    absl::MutexLock lock(&mu_);
    executor_ = nullptr;
    links_ = nullptr;
  }

  void Connect(const std::string& address,
               absl::AnyInvocable<void(absl::StatusOr<Connected>)> done) override {
    OnLoop([&](PeerLinks& links) { links.Dial(address, 0, std::move(done)); });
  }
  void ConnectExpecting(const std::string& address, uint64_t expected,
                        absl::AnyInvocable<void(absl::StatusOr<Connected>)> done) override {
    OnLoop([&](PeerLinks& links) { links.Dial(address, expected, std::move(done)); });
  }
  void Pull(replication::LinkId link, const replication::PullRequest& request,
            absl::AnyInvocable<void(absl::StatusOr<replication::PullResponse>)> done) override {
    OnLoop([&](PeerLinks& links) { links.Pull(link, request, std::move(done)); });
  }
  void Snapshot(replication::LinkId link, const replication::SnapshotRequest& request,
                absl::AnyInvocable<void(absl::StatusOr<replication::SnapshotResponse>)> done)
      override {
    OnLoop([&](PeerLinks& links) { links.Snapshot(link, request, std::move(done)); });
  }
  void Nudge(replication::LinkId link, const Watermarks& mine) override {
    OnLoop([&](PeerLinks& links) { links.Nudge(link, mine); });
  }
  void Close(replication::LinkId link) override {
    OnLoop([&](PeerLinks& links) { links.CloseLink(link); });
  }
  void Reconcile(replication::LinkId link, std::string request,
                 absl::AnyInvocable<void(absl::StatusOr<std::string>)> done) override {
    OnLoop([&](PeerLinks& links) { links.Reconcile(link, std::move(request), std::move(done)); });
  }

 private:
  void OnLoop(absl::FunctionRef<void(PeerLinks&)> fn) {
    kj::Own<const kj::Executor> executor;
    PeerLinks* links;
    {
      absl::MutexLock lock(&mu_);
      if (executor_.get() == nullptr) return;  // stopping: the call is dropped
      executor = executor_->addRef();
      links = links_;
    }
    try {
      executor->executeSync([&] { fn(*links); });
    } catch (const kj::Exception&) {
      // The loop ended meanwhile; the engine times the call out.
    }
  }

  absl::Mutex mu_;
  kj::Own<const kj::Executor> executor_ ABSL_GUARDED_BY(mu_);
  PeerLinks* links_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace peerkv::rpc

#endif  // PEERKV_RPC_PEER_LINKS_H_
