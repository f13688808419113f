// rpc/server_loop.cc: the loop thread's state: accepting connections,
// reader limits, commit notifications, writes and graceful shutdown. The
// replication links are in peer_links.cc.
#include "rpc/server_loop.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "auth/identity.h"
#include "common/log.h"
#include "common/macros.h"
#include "kj/debug.h"
#include "kj/timer.h"
#include "replication/serve.h"
#include "rpc/convert.h"
#include "auth/ids.h"

namespace peerkv::rpc {
namespace {

constexpr uint kNestingLimit = 16;
// After a failed accept: out of descriptors (or memory), wait for clients
// to leave; anything else, just do not spin.
constexpr auto kAcceptRetryWhenExhausted = 100 * kj::MILLISECONDS;
constexpr auto kAcceptRetry = 10 * kj::MILLISECONDS;
// Refused devices named once each; more than this many are logged through
// the rate-limited rejection log instead.
constexpr size_t kMaxRefusedLogged = 10'000;

// The longest the expiry timer waits before looking again: kj's timer is
// monotonic, so a wall clock set forward (or a machine that slept) is
// caught up with within this.
constexpr int64_t kMaxExpiryWaitMs = 3'600'000;

// EMFILE, ENFILE, ENOBUFS, ENOMEM: kj reports them as OVERLOADED.
bool OutOfResources(const kj::Exception& e) {
  const std::string text = e.getDescription().cStr();
  return e.getType() == kj::Exception::Type::OVERLOADED ||
         text.find(std::strerror(EMFILE)) != std::string::npos ||
         text.find(std::strerror(ENFILE)) != std::string::npos;
}

}  // namespace

std::string PeerAddress(kj::AsyncIoStream& stream) {
  sockaddr_storage addr;
  uint len = sizeof(addr);
  try {
    stream.getpeername(reinterpret_cast<sockaddr*>(&addr), &len);
  } catch (const kj::Exception&) {
    return "unknown";
  }
  char host[INET6_ADDRSTRLEN] = "?";
  if (addr.ss_family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(&addr);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
    return absl::StrFormat("%s:%d", host, ntohs(in->sin_port));
  }
  if (addr.ss_family == AF_INET6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&addr);
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
    return absl::StrFormat("[%s]:%d", host, ntohs(in6->sin6_port));
  }
  if (addr.ss_family == AF_UNIX) return "local";
  return "unknown";
}

kj::Promise<void> Bell::Wait() {
  absl::MutexLock lock(&mu_);
  if (rung_) {
    rung_ = false;
    return kj::READY_NOW;
  }
  auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
  fulfiller_ = kj::mv(paf.fulfiller);
  return kj::mv(paf.promise);
}

void Bell::Ring() {
  absl::MutexLock lock(&mu_);
  if (fulfiller_.get() != nullptr) {
    fulfiller_->fulfill();
    fulfiller_ = nullptr;
  } else {
    rung_ = true;
  }
}

kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> RecordingMessageStream::tryReadMessage(
    kj::ArrayPtr<kj::AutoCloseFd> fd_space, capnp::ReaderOptions options,
    kj::ArrayPtr<capnp::word> scratch) {
  return stream_.WhenWritable()
      .then([this, fd_space, options, scratch] {
        reading_ = true;
        return inner_.tryReadMessage(fd_space, options, scratch);
      })
      .then([this](kj::Maybe<capnp::MessageReaderAndFds> message) {
        reading_ = false;
        ++messages_;
        boundary_ = stream_.bytes_taken();
        return message;
      })
      .catch_([this](kj::Exception&& e) -> kj::Maybe<capnp::MessageReaderAndFds> {
        reading_ = false;
        // A peer that hangs up or resets is not refused; bytes that are not
        // a valid message, or a message over the limit, are.
        if (failure_.empty() && e.getType() != kj::Exception::Type::DISCONNECTED) {
          failure_ = e.getDescription().cStr();
        }
        kj::throwFatalException(kj::mv(e));
      });
}

// A client connection: its socket, its RPC system, and its bootstrap.
struct ServerLoop::Connection {
  Connection(ServerLoop& loop, uint64_t id, kj::Own<kj::AsyncIoStream> socket,
             std::optional<AuthenticatedPeer> identity)
      : loop(loop),
        id(id),
        stream(kj::heap<BufferedStream>(kj::mv(socket), &loop.bytes_sent_)),
        peer(PeerAddress(*stream)),
        identity(identity),
        messages(*stream),
        network(messages, capnp::rpc::twoparty::Side::SERVER, loop.reader_options_),
        rpc(capnp::makeRpcServer(network, NewGateway(loop, peer, id, identity))) {
    // Bound the requests a client may have in flight on this connection.
    rpc.setFlowLimit(2 * loop.reader_options_.traversalLimitInWords);
    loop.connections_[id] = this;
  }
  ~Connection() { loop.connections_.erase(id); }

  ServerLoop& loop;
  const uint64_t id;
  // Fulfilled to close the connection from the server's side.
  kj::Own<kj::PromiseFulfiller<void>> closer;
  const kj::TimePoint opened = loop.io_.provider->getTimer().now();
  // When the idle sweep first saw it part-way through a message.
  kj::Maybe<kj::TimePoint> mid_message_since;
  kj::Own<BufferedStream> stream;
  std::string peer;
  // The TLS peer (nullopt: local or plaintext), checked again when the
  // device or friend lists change.
  const std::optional<AuthenticatedPeer> identity;
  RecordingMessageStream messages;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
};

ServerLoop::ServerLoop(Store& store, const ServerOptions& options, kj::AsyncIoContext& io,
                       replication::LinkEvents* events,
                       std::function<std::vector<replication::PeerStatus>()> peer_statuses,
                       std::atomic<uint64_t>& bytes_sent)
    : store_(store),
      options_(options),
      io_(io),
      events_(events),
      peer_statuses_(std::move(peer_statuses)),
      watch_hub_(store, io.provider->getTimer()),
      bytes_sent_(bytes_sent),
      started_(absl::Now()),
      rejections_(absl::Milliseconds(options.rejection_log_interval_ms),
                  [](const std::string& line) { LogLine(line); }),
      tasks_(*this),
      peer_links_(
          io, reader_options_, bytes_sent, options.keepalive_ms, events,
          [this](uint64_t to) { return LocalInfo(to); },
          [this](const std::string& address, replication::LinkId link,
                 std::shared_ptr<const replication::KeyspaceFilter> readable,
                 const std::optional<AuthenticatedPeer>& answered_by) {
            // A friend's link: its pulls carry the policy and group records
            // it may read.
            std::shared_ptr<const replication::ReservedRecordFilter> reserved =
                readable != nullptr && answered_by.has_value() ? ReservedReadableBy(*answered_by)
                                                               : nullptr;
            return NewReplica(*this, address, 0, link, std::nullopt, std::move(readable),
                              std::move(reserved));
          },
          [this](uint64_t connection_id) {
            auto c = connections_.find(connection_id);
            if (c != connections_.end() && c->second->closer->isWaiting()) {
              c->second->closer->fulfill();
            }
          }) {
  reader_options_.traversalLimitInWords =
      MaxMessageBytes(store.options().max_value_bytes) / sizeof(capnp::word);
  reader_options_.nestingLimit = kNestingLimit;
  // A commit rings the loop only when it changed a watched keyspace, or
  // the device or friend lists (the links are then checked again).
  listener_id_ = store_.AddCommitListener([this](const Store::CommitInfo& info) {
    bool ring = watch_hub_.OnCommit(info);
    if (options_.trust && info.changes != nullptr) {
      for (const CommitChange& change : *info.changes) {
        if (change.keyspace == auth::kDevicesKeyspace ||
            change.keyspace == auth::kFriendsKeyspace) {
          trust_changed_ = true;
          ring = true;
          break;
        }
      }
    }
    if (ring) bell_.Ring();
  });
  watch_hub_.Start();
  tasks_.add(PumpCommits());
  if (options_.tls.has_value()) {
    absl::StatusOr<std::unique_ptr<TlsEndpoint>> tls = TlsEndpoint::Create(
        *options_.tls, io_.provider->getTimer(), options_.handshake_timeout_ms);
    if (!tls.ok()) KJ_FAIL_REQUIRE("TLS", std::string(tls.status().message()).c_str());
    tls_ = std::move(*tls);
  }
  // tls_ as it is at each dial: ReplaceTls may change it.
  peer_links_.set_dialer(
      [this](const std::string& address,
             std::shared_ptr<std::optional<AuthenticatedPeer>> peer) {
        return DialAuthenticated(io_.provider->getNetwork(), address, tls_.get(), options_.trust,
                                 std::move(peer), /*accept_friends=*/options_.access != nullptr);
      });
  peer_links_.set_readable([this](const std::optional<AuthenticatedPeer>& peer) {
    return peer.has_value() ? ReadableBy(*peer) : nullptr;
  });
  if (options_.trust) {
    peer_links_.set_still_trusted([this](const AuthenticatedPeer& peer) -> absl::Status {
      PEERKV_ASSIGN_OR_RETURN(const TrustView view, options_.trust());
      PEERKV_RETURN_IF_ERROR(Reauthorize(view, peer));
      // A dial answered: the link is listed once this returns, so its
      // expiry is watched from the next turn.
      tasks_.add(kj::evalLater([this] { ArmExpiryTimer(); }));
      return absl::OkStatus();
    });
  }
  peer_links_.set_bind_replica(
      [this](uint64_t replica_id, uint64_t incarnation, const auth::PublicKey& device) {
        return BindReplica(replica_id, incarnation, device);
      });
}

std::shared_ptr<const replication::ReservedRecordFilter> ServerLoop::ReservedReadableBy(
    const AuthenticatedPeer& peer) const {
  if (peer.role != PeerRole::kFriend) return nullptr;
  std::shared_ptr<const auth::Access> access = options_.access;
  const auth::Principal who{peer.user, /*local_user=*/false};
  return std::make_shared<const replication::ReservedRecordFilter>(
      [access, who](std::string_view keyspace, std::string_view key) {
        return access != nullptr && access->MayReadRecord(who, keyspace, key);
      });
}

std::shared_ptr<const replication::KeyspaceFilter> ServerLoop::ReadableBy(
    const AuthenticatedPeer& peer) const {
  if (peer.role != PeerRole::kFriend) return nullptr;
  std::shared_ptr<const auth::Access> access = options_.access;
  // Without an Access a friend's link is never made (the gateway and the
  // dialler refuse it); should one be, it may read nothing.
  const auth::Principal who{peer.user, /*local_user=*/false};
  return std::make_shared<const replication::KeyspaceFilter>(
      [access, who](std::string_view keyspace) {
        return access != nullptr && access->MayRead(who, keyspace);
      });
}

absl::Status ServerLoop::ReplaceTls(const TlsIdentity& identity) {
  if (tls_ == nullptr) {
    return absl::FailedPreconditionError("this server serves without TLS (--insecure-loopback)");
  }
  PEERKV_ASSIGN_OR_RETURN(
      std::unique_ptr<TlsEndpoint> fresh,
      TlsEndpoint::Create(identity, io_.provider->getTimer(), options_.handshake_timeout_ms));
  // Handshakes under way (and dials) still use the old one: it is kept.
  retired_tls_.push_back(std::move(tls_));
  tls_ = std::move(fresh);
  return absl::OkStatus();
}

void ServerLoop::CountAsPeer(uint64_t connection_id, uint64_t replica_id) {
  auto it = connections_.find(connection_id);
  if (it != connections_.end()) it->second->stream->CountAsPeer(replica_id);
}

absl::Status ServerLoop::BindReplica(uint64_t replica_id, uint64_t incarnation,
                                     const std::optional<auth::PublicKey>& device) {
  if (!device.has_value()) return absl::OkStatus();
  return CheckReplicaClaim(replica_id, incarnation, *device);
}

kj::Promise<void> ServerLoop::Handshake(kj::AuthenticatedStream stream) {
  const std::string from = PeerAddress(*stream.stream);
  return tls_->Accept(kj::mv(stream))
      .then(
          [this, from](kj::AuthenticatedStream s) {
            absl::StatusOr<AuthenticatedPeer> peer = AuthenticatePeer(*s.peerIdentity, options_.trust);
            if (!peer.ok()) {
              // A stranger is named once (so the user can add it); bad
              // certificates go through the rate-limited rejection log.
              absl::StatusOr<PeerCredentials> who = PeerOf(*s.peerIdentity);
              if (!who.ok()) {
                LogRejected(from, "tls", peer.status());
              } else if (refused_logged_.size() >= kMaxRefusedLogged) {
                // Made-up keys must not grow memory: past the bound, the
                // rate-limited log.
                LogRejected(from, "tls", peer.status());
              } else if (refused_logged_.insert(who->device).second) {
                LogLine(absl::StrFormat("peerkv: connection from %s: %s", from,
                                        peer.status().message()));
              }
              return;  // dropping the stream closes it
            }
            KJ_IF_MAYBE(e, kj::runCatchingExceptions(
                               [&] { AddConnection(kj::mv(s.stream), std::move(*peer)); })) {
              LogLine(absl::StrFormat("peerkv: dropped a new connection: %s",
                                      e->getDescription().cStr()));
            }
            ArmExpiryTimer();
          },
          [this, from](kj::Exception&& e) {
            LogRejected(from, "tls handshake",
                        absl::UnauthenticatedError(e.getDescription().cStr()));
          });
}

ServerLoop::~ServerLoop() noexcept(false) { store_.RemoveCommitListener(listener_id_); }

replication::PeerInfo ServerLoop::LocalInfo(uint64_t to) const {
  return replication::LocalInfo(store_, options_.replica_name, to);
}

kj::Promise<std::string> ServerLoop::Listen() {
  return io_.provider->getNetwork()
      .parseAddress(options_.listen)
      .then([this](kj::Own<kj::NetworkAddress> address) {
        listener_ = address->listen();
        const std::string host = options_.listen.substr(0, options_.listen.rfind(':'));
        bound_ = absl::StrFormat("%s:%d", host, listener_->getPort());
        accept_loop_ = AcceptLoop().eagerlyEvaluate(
            [](kj::Exception&& e) {
              LogLine(absl::StrFormat("peerkv: accept loop ended: %s",
                                      e.getDescription().cStr()));
            });
        tasks_.add(SweepIdle());
        if (events_ != nullptr) peer_links_.StartKeepAlive();
        if (options_.unix_socket.empty()) return kj::Promise<std::string>(bound_);
        // A file left by a server that died: the caller owns the path.
        ::unlink(options_.unix_socket.c_str());
        return io_.provider->getNetwork()
            .parseAddress("unix:" + options_.unix_socket)
            .then([this](kj::Own<kj::NetworkAddress> local) {
              unix_listener_ = local->listen();
              // Owner only; the credential check below closes the moment
              // between bind and chmod.
              KJ_SYSCALL(::chmod(options_.unix_socket.c_str(), 0600), options_.unix_socket);
              unix_accept_loop_ = UnixAcceptLoop().eagerlyEvaluate([](kj::Exception&& e) {
                LogLine(absl::StrFormat("peerkv: local socket accept loop ended: %s",
                                        e.getDescription().cStr()));
              });
              return bound_;
            });
      });
}

kj::Promise<void> ServerLoop::UnixAcceptLoop() {
  return kj::evalNow([this] { return unix_listener_->accept(); })
      .then(
          [this](kj::Own<kj::AsyncIoStream> stream) -> kj::Promise<void> {
            // The file's mode is the access check; the peer's uid is the
            // second one (a socket reached before the chmod, or a mode
            // someone widened).
            struct ucred cred {};
            socklen_t len = sizeof(cred);
            KJ_IF_MAYBE(fd, stream->getFd()) {
              if (::getsockopt(*fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) cred.uid = -1;
            } else {
              cred.uid = -1;
            }
            if (cred.uid != ::geteuid()) {
              LogLine(absl::StrFormat(
                  "peerkv: refused a local connection from uid %d (pid %d): only uid %d may "
                  "use %s",
                  static_cast<int>(cred.uid), static_cast<int>(cred.pid),
                  static_cast<int>(::geteuid()), options_.unix_socket));
              return UnixAcceptLoop();
            }
            KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] { AddConnection(kj::mv(stream)); })) {
              LogLine(absl::StrFormat("peerkv: dropped a new local connection: %s",
                                      e->getDescription().cStr()));
            }
            return UnixAcceptLoop();
          },
          [this](kj::Exception&& e) -> kj::Promise<void> {
            LogLine(absl::StrFormat("peerkv: local accept failed: %s; retrying",
                                    e.getDescription().cStr()));
            return io_.provider->getTimer()
                .afterDelay(100 * kj::MILLISECONDS)
                .then([this] { return UnixAcceptLoop(); });
          });
}

kj::Promise<void> ServerLoop::AcceptLoop() {
  // kj's accept() calls accept4 at once and throws when it fails with EMFILE
  // (or any error but EAGAIN) instead of returning a broken promise. Called
  // from the continuation below, that throw broke the loop's own promise,
  // which nobody waits on: the server never accepted again, silently.
  // evalNow turns it into a broken promise that the error branch handles.
  return kj::evalNow([this] { return listener_->acceptAuthenticated(); })
      .then(
          [this](kj::AuthenticatedStream accepted) -> kj::Promise<void> {
            if (accept_failures_ > 0) {
              LogLine(absl::StrFormat("peerkv: accepting connections again after %d failed accepts",
                                      accept_failures_));
              accept_failures_ = 0;
              accept_error_logged_.clear();
            }
            if (tls_ != nullptr) {
              // The handshake runs beside the accept loop (and times out).
              tasks_.add(Handshake(kj::mv(accepted)));
              return AcceptLoop();
            }
            KJ_IF_MAYBE(e, kj::runCatchingExceptions(
                               [&] { AddConnection(kj::mv(accepted.stream)); })) {
              LogLine(absl::StrFormat("peerkv: dropped a new connection: %s",
                                      e->getDescription().cStr()));
            }
            return AcceptLoop();
          },
          [this](kj::Exception&& e) { return AcceptFailed(kj::mv(e)); });
}

kj::Promise<void> ServerLoop::AcceptFailed(kj::Exception&& e) {
  ++accept_failures_;
  const bool exhausted = OutOfResources(e);
  const std::string why = e.getDescription().cStr();
  // Once per episode (and per kind of failure within it), not once per try.
  if (why != accept_error_logged_) {
    accept_error_logged_ = why;
    LogLine(absl::StrFormat("peerkv: accept failed: %s; %s", why,
                            exhausted ? "retrying every 100 ms until connections close"
                                      : "retrying"));
  }
  return io_.provider->getTimer()
      .afterDelay(exhausted ? kAcceptRetryWhenExhausted : kAcceptRetry)
      .then([this] { return AcceptLoop(); });
}

// Closes connections that have been part-way through a message (or have
// sent none) for longer than the idle timeout. Runs every quarter of it, so
// a connection goes between 1 and 1.5 timeouts after it stalled (1.25 for a
// first message, which is due from the moment the connection opened).
kj::Promise<void> ServerLoop::SweepIdle() {
  const auto timeout = options_.idle_timeout_ms * kj::MILLISECONDS;
  return io_.provider->getTimer().afterDelay(timeout / 4).then([this, timeout] {
    const kj::TimePoint now = io_.provider->getTimer().now();
    for (const auto& [id, c] : connections_) {
      if (!c->messages.MidMessage()) {
        c->mid_message_since = nullptr;
        continue;
      }
      if (c->mid_message_since == nullptr) {
        // The first message is due from the moment the connection opened.
        c->mid_message_since = c->messages.messages() == 0 ? c->opened : now;
      }
      const kj::TimePoint since = KJ_ASSERT_NONNULL(c->mid_message_since);
      if (now - since >= timeout && c->closer->isWaiting()) {
        LogLine(absl::StrFormat("peerkv: closed connection from %s: no complete message within %d ms",
                                c->peer, options_.idle_timeout_ms));
        c->closer->fulfill();
      }
    }
    return SweepIdle();
  });
}

void ServerLoop::AddConnection(kj::Own<kj::AsyncIoStream> stream,
                               std::optional<AuthenticatedPeer> peer) {
  const uint64_t id = next_connection_id_++;
  auto connection = kj::heap<Connection>(*this, id, kj::mv(stream), std::move(peer));
  Connection& c = *connection;
  auto closed = kj::newPromiseAndFulfiller<void>();
  c.closer = kj::mv(closed.fulfiller);
  tasks_.add(c.network.onDisconnect()
                 .exclusiveJoin(kj::mv(closed.promise))
                 .then([this, &c] {
                   if (!c.messages.failure().empty()) {
                     LogRejected(c.peer, "connection",
                                 absl::InvalidArgumentError(c.messages.failure()));
                   }
                   // Peers that said hello on this connection are gone.
                   peer_links_.DropConnection(
                       c.id,
                       absl::UnavailableError(absl::StrFormat("peer at %s disconnected", c.peer)));
                 })
                 .attach(kj::mv(connection)));
}

kj::Promise<void> ServerLoop::PumpCommits() {
  return bell_.Wait().then([this] {
    watch_hub_.Drain();
    if (trust_changed_.exchange(false)) RecheckPeers();
    return PumpCommits();
  });
}

void ServerLoop::RecheckPeers() {
  absl::StatusOr<TrustView> view = options_.trust();
  if (!view.ok()) {
    LogLine(absl::StrFormat(
        "peerkv: checking open links against the device and friend lists failed: reading "
        "them: %s; they are checked again at the next change",
        view.status().message()));
    return;
  }
  for (const auto& [id, c] : connections_) {
    if (!c->identity.has_value() || !c->closer->isWaiting()) continue;
    const absl::Status why = Reauthorize(*view, *c->identity);
    if (why.ok()) continue;
    LogLine(absl::StrFormat("peerkv: closed connection from %s: %s", c->peer, why.message()));
    c->closer->fulfill();  // the disconnect drops its inbound links
  }
  peer_links_.DropRefused(
      [&view](const AuthenticatedPeer& peer) { return Reauthorize(*view, peer); });
  ArmExpiryTimer();
}

void ServerLoop::ArmExpiryTimer() {
  if (!options_.trust) return;
  absl::StatusOr<TrustView> view = options_.trust();
  if (!view.ok()) {
    LogLine(absl::StrFormat(
        "peerkv: reading the device and friend lists failed: %s; open links whose certificate "
        "expires are closed at the next change of the lists",
        view.status().message()));
    return;
  }
  std::optional<int64_t> due;
  auto consider = [&](const AuthenticatedPeer& peer) {
    const std::optional<int64_t> at = RefusedAsExpiredAtMs(*view, peer);
    if (at.has_value() && (!due.has_value() || *at < *due)) due = at;
  };
  for (const auto& [id, c] : connections_) {
    if (c->identity.has_value() && c->closer->isWaiting()) consider(*c->identity);
  }
  peer_links_.ForEachDialledPeer(consider);
  if (due == expiry_armed_ms_) return;
  expiry_armed_ms_ = due;
  if (!due.has_value()) {
    expiry_timer_ = nullptr;
    return;
  }
  const int64_t now = view->now_ms != 0 ? view->now_ms : absl::ToUnixMillis(absl::Now());
  const int64_t wait_ms = std::clamp<int64_t>(*due - now, 1, kMaxExpiryWaitMs);
  expiry_timer_ =
      io_.provider->getTimer().afterDelay(wait_ms * kj::MILLISECONDS).then([this] {
        expiry_armed_ms_.reset();
        // On a later turn: RecheckPeers re-arms, replacing this promise.
        tasks_.add(kj::evalLater([this] { RecheckPeers(); }));
      }).eagerlyEvaluate([](kj::Exception&& e) {
        LogLine(absl::StrFormat("peerkv: the certificate expiry timer failed: %s",
                                e.getDescription().cStr()));
      });
}

kj::Promise<absl::StatusOr<std::vector<Version>>> ServerLoop::Write(
    std::vector<Mutation> mutations) {
  auto paf = kj::newPromiseAndCrossThreadFulfiller<absl::StatusOr<std::vector<Version>>>();
  ++in_flight_writes_;
  store_.WriteAsync(std::move(mutations),
                    [fulfiller = kj::mv(paf.fulfiller)](
                        absl::StatusOr<std::vector<Version>> result) mutable {
                      fulfiller->fulfill(kj::mv(result));
                    });
  return paf.promise.attach(kj::defer([this] { --in_flight_writes_; }));
}

kj::Promise<absl::StatusOr<MergeResult>> ServerLoop::Merge(std::vector<Record> records,
                                                           MergeSource from) {
  auto paf = kj::newPromiseAndCrossThreadFulfiller<absl::StatusOr<MergeResult>>();
  ++in_flight_writes_;
  store_.MergeAsync(
      std::move(records), std::nullopt,
      [fulfiller = kj::mv(paf.fulfiller)](absl::StatusOr<MergeResult> result) mutable {
        fulfiller->fulfill(kj::mv(result));
      },
      from);
  return paf.promise.attach(kj::defer([this] { --in_flight_writes_; }));
}

void ServerLoop::LogRejected(const std::string& peer, std::string_view method,
                             const absl::Status& status, uint64_t items) {
  if (rejections_.Rejected(absl::Now(), peer, method, status, items)) ScheduleRejectionFlush();
}

// One timer for all hosts: when it fires, hosts whose interval is over get
// their count logged; if others still count, it is set again.
void ServerLoop::ScheduleRejectionFlush() {
  if (rejection_flush_scheduled_) return;
  rejection_flush_scheduled_ = true;
  const int64_t ms = std::max<int64_t>(absl::ToInt64Milliseconds(rejections_.interval()), 1);
  tasks_.add(io_.provider->getTimer().afterDelay(ms * kj::MILLISECONDS).then([this] {
    rejection_flush_scheduled_ = false;
    if (rejections_.Flush(absl::Now(), /*all=*/false)) ScheduleRejectionFlush();
  }));
}

kj::Promise<void> ServerLoop::Shutdown() {
  accept_loop_ = nullptr;
  listener_ = nullptr;
  unix_accept_loop_ = nullptr;
  if (unix_listener_.get() != nullptr) {
    unix_listener_ = nullptr;
    ::unlink(options_.unix_socket.c_str());
  }
  auto deadline = io_.provider->getTimer().now() + options_.shutdown_grace_ms * kj::MILLISECONDS;
  return WaitUntil(deadline, [this] { return in_flight_writes_ == 0; }).then([this, deadline] {
    // Counted rejections are not lost with the loop.
    rejections_.Flush(absl::Now(), /*all=*/true);
    return WaitUntil(deadline, [this] {
      for (const auto& [id, c] : connections_) {
        if (c->network.getCurrentQueueSize() > 0 || c->stream->pending_bytes() > 0) return false;
      }
      return true;
    });
  });
}

// Waits until `done()` holds, checking each millisecond, or until the
// deadline. Only shutdown uses it: the quantities it watches (writes in
// flight, bytes queued on sockets) change without an event to await.
kj::Promise<void> ServerLoop::WaitUntil(kj::TimePoint deadline, kj::Function<bool()> done) {
  if (done() || io_.provider->getTimer().now() >= deadline) return kj::READY_NOW;
  return io_.provider->getTimer().afterDelay(1 * kj::MILLISECONDS).then(
      [this, deadline, done = kj::mv(done)]() mutable { return WaitUntil(deadline, kj::mv(done)); });
}

void ServerLoop::taskFailed(kj::Exception&& e) {
  LogLine(absl::StrFormat("peerkv: server task failed: %s", e.getDescription().cStr()));
}

}  // namespace peerkv::rpc
