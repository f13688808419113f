// rpc/server_loop.cc: the loop thread's state: accepting connections,
// reader limits, commit notifications, graceful shutdown, and replication
// links (dialling peers, pulling from them, nudging them).
#include "rpc/server_loop.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "common/log.h"
#include "kj/debug.h"
#include "kj/timer.h"
#include "common/macros.h"
#include "replication/batch_codec.h"
#include "replication/serve.h"
#include "rpc/convert.h"

namespace peerkv::rpc {
namespace {

constexpr uint kNestingLimit = 16;
constexpr auto kDialTimeout = 10 * kj::SECONDS;
// After a failed accept: out of descriptors (or memory), wait for clients
// to leave; anything else, just do not spin.
constexpr auto kAcceptRetryWhenExhausted = 100 * kj::MILLISECONDS;
constexpr auto kAcceptRetry = 10 * kj::MILLISECONDS;
// A link whose keepalive ping (or a nudge) is unanswered for this many
// keepalive intervals is dead (suspect, for a nudge).
constexpr int kKeepAliveMisses = 5;

// EMFILE, ENFILE, ENOBUFS, ENOMEM: kj reports them as OVERLOADED.
bool OutOfResources(const kj::Exception& e) {
  const std::string text = e.getDescription().cStr();
  return e.getType() == kj::Exception::Type::OVERLOADED ||
         text.find(std::strerror(EMFILE)) != std::string::npos ||
         text.find(std::strerror(ENFILE)) != std::string::npos;
}

template <typename Response>
absl::Status ResponseStatus(Response& response) {
  return response.hasError() ? FromWire(response.getError()) : absl::OkStatus();
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
  Connection(ServerLoop& loop, uint64_t id, kj::Own<kj::AsyncIoStream> socket)
      : loop(loop),
        id(id),
        stream(kj::heap<BufferedStream>(kj::mv(socket), &loop.bytes_sent_)),
        peer(PeerAddress(*stream)),
        messages(*stream),
        network(messages, capnp::rpc::twoparty::Side::SERVER, loop.reader_options_),
        rpc(capnp::makeRpcServer(network, NewGateway(loop, peer, id))) {
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
  RecordingMessageStream messages;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
};

// A connection this server dialled to a peer.
struct ServerLoop::Outbound {
  Outbound(kj::Own<kj::AsyncIoStream> socket, const capnp::ReaderOptions& options,
           std::atomic<uint64_t>* bytes_sent)
      : stream(kj::heap<BufferedStream>(kj::mv(socket), bytes_sent)),
        network(*stream, capnp::rpc::twoparty::Side::CLIENT, options),
        rpc(capnp::makeRpcClient(network)) {
    capnp::MallocMessageBuilder message;
    auto vat = message.initRoot<capnp::rpc::twoparty::VatId>();
    vat.setSide(capnp::rpc::twoparty::Side::SERVER);
    gateway = rpc.bootstrap(vat).castAs<wire::Gateway>();
  }
  kj::Own<BufferedStream> stream;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
  wire::Gateway::Client gateway = nullptr;
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
      tasks_(*this) {
  reader_options_.traversalLimitInWords =
      MaxMessageBytes(store.options().max_value_bytes) / sizeof(capnp::word);
  reader_options_.nestingLimit = kNestingLimit;
  // A commit rings the loop only when it changed a watched keyspace.
  listener_id_ = store_.AddCommitListener([this](const Store::CommitInfo& info) {
    if (watch_hub_.OnCommit(info)) bell_.Ring();
  });
  watch_hub_.Start();
  tasks_.add(PumpCommits());
}

ServerLoop::~ServerLoop() noexcept(false) { store_.RemoveCommitListener(listener_id_); }

replication::PeerInfo ServerLoop::LocalInfo() const {
  return replication::LocalInfo(store_, options_.replica_name);
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
        if (events_ != nullptr) tasks_.add(KeepAlive());
        return bound_;
      });
}

kj::Promise<void> ServerLoop::AcceptLoop() {
  // kj's accept() calls accept4 at once and throws when it fails with EMFILE
  // (or any error but EAGAIN) instead of returning a broken promise. Called
  // from the continuation below, that throw broke the loop's own promise,
  // which nobody waits on: the server never accepted again, silently.
  // evalNow turns it into a broken promise that the error branch handles.
  return kj::evalNow([this] { return listener_->accept(); })
      .then(
          [this](kj::Own<kj::AsyncIoStream> stream) -> kj::Promise<void> {
            if (accept_failures_ > 0) {
              LogLine(absl::StrFormat("peerkv: accepting connections again after %d failed accepts",
                                      accept_failures_));
              accept_failures_ = 0;
              accept_error_logged_.clear();
            }
            KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] { AddConnection(kj::mv(stream)); })) {
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

// Pings every link each keepalive interval, one ping in flight per link. A
// half-open connection (one direction stalled by a middlebox, a peer whose
// machine vanished) closes nothing and answers nothing, and TCP keepalive
// would not see it where a proxy acks for the peer: a link whose ping stays
// unanswered for kKeepAliveMisses intervals is dropped, and its connection
// closed (the replicator redials one it dialled).
kj::Promise<void> ServerLoop::KeepAlive() {
  const auto interval = options_.keepalive_ms * kj::MILLISECONDS;
  return io_.provider->getTimer().afterDelay(interval).then([this, interval] {
    const kj::TimePoint now = io_.provider->getTimer().now();
    std::vector<replication::LinkId> dead;
    for (auto& [link, entry] : links_) {
      KJ_IF_MAYBE(sent, entry.ping_sent) {
        if (now - *sent >= kKeepAliveMisses * interval) dead.push_back(link);
        continue;
      }
      entry.ping_sent = now;
      const replication::LinkId id = link;
      auto answered = [this, id] {
        auto it = links_.find(id);
        if (it != links_.end()) it->second.ping_sent = nullptr;
      };
      tasks_.add(entry.peer.pingRequest().send().then(
          [answered](auto&&) { answered(); },
          // Any answer proves the link carries messages both ways (a peer
          // without ping says "unimplemented"); a broken connection is
          // seen by its own disconnect handler.
          [answered](kj::Exception&&) { answered(); }));
    }
    for (replication::LinkId link : dead) {
      auto it = links_.find(link);
      if (it == links_.end()) continue;
      const uint64_t connection_id = it->second.connection_id;
      const std::string why = absl::StrFormat(
          "peer at %s answered no keepalive within %d ms: link dead (half-open connection)",
          it->second.address, kKeepAliveMisses * options_.keepalive_ms);
      LogLine(absl::StrFormat("peerkv: %s; closing it", why));
      DropLink(link, absl::DeadlineExceededError(why));
      // An inbound link: close the client connection it came on (an
      // outbound one was closed by DropLink).
      auto c = connections_.find(connection_id);
      if (connection_id != 0 && c != connections_.end() && c->second->closer->isWaiting()) {
        c->second->closer->fulfill();
      }
    }
    return KeepAlive();
  });
}

void ServerLoop::AddConnection(kj::Own<kj::AsyncIoStream> stream) {
  const uint64_t id = next_connection_id_++;
  auto connection = kj::heap<Connection>(*this, id, kj::mv(stream));
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
                   std::vector<replication::LinkId> gone;
                   for (const auto& [link, entry] : links_) {
                     if (entry.connection_id == c.id) gone.push_back(link);
                   }
                   for (replication::LinkId link : gone) {
                     DropLink(link, absl::UnavailableError(
                                        absl::StrFormat("peer at %s disconnected", c.peer)));
                   }
                 })
                 .attach(kj::mv(connection)));
}

kj::Promise<void> ServerLoop::PumpCommits() {
  return bell_.Wait().then([this] {
    watch_hub_.Drain();
    return PumpCommits();
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

// --- Replication links -------------------------------------------------------

void ServerLoop::Dial(const std::string& address, DialDone done) {
  using Connected = replication::Transport::Connected;
  const replication::LinkId id = next_link_++;
  const std::string context = absl::StrFormat("peer %s", address);
  auto work =
      io_.provider->getNetwork()
          .parseAddress(address)
          .then([](kj::Own<kj::NetworkAddress> addr) { return addr->connect().attach(kj::mv(addr)); })
          .then([this, id, address](kj::Own<kj::AsyncIoStream> stream) {
            auto outbound = kj::heap<Outbound>(kj::mv(stream), reader_options_, &bytes_sent_);
            auto replica = outbound->gateway.replicaRequest().send().getReplica();
            auto hello = replica.helloRequest();
            const replication::PeerInfo me = LocalInfo();
            auto info = hello.initInfo();
            info.setReplicaId(me.replica_id);
            info.setIncarnation(me.incarnation);
            info.setProtocolVersion(me.protocol_version);
            info.setName(AsText(me.name));
            hello.setBack(NewReplica(*this, address, 0, id));
            return hello.send().then(
                [this, id, replica, address, outbound = kj::mv(outbound)](
                    auto response) mutable -> absl::StatusOr<Connected> {
                  absl::Status status = ResponseStatus(response);
                  if (!status.ok()) return status;
                  auto peer = response.getInfo();
                  Connected connected{
                      id, replication::PeerInfo{peer.getReplicaId(), peer.getIncarnation(),
                                                peer.getProtocolVersion(),
                                                ToString(peer.getName())}};
                  Outbound& o = *outbound;
                  links_[id] = LinkEntry{replica, 0, kj::mv(outbound)};
                  links_[id].address = address;
                  tasks_.add(o.network.onDisconnect().then([this, id] {
                    DropLink(id, absl::UnavailableError("connection to peer lost"));
                  }));
                  return connected;
                });
          })
          .catch_([context](kj::Exception&& e) -> absl::StatusOr<Connected> {
            return FromKjException(e, context);
          });
  auto timeout = io_.provider->getTimer().afterDelay(kDialTimeout).then(
      [context]() -> absl::StatusOr<Connected> {
        return absl::DeadlineExceededError(absl::StrFormat("%s: no answer within 10 s", context));
      });
  tasks_.add(work.exclusiveJoin(kj::mv(timeout))
                 .then([done = kj::mv(done)](absl::StatusOr<Connected> result) mutable {
                   done(std::move(result));
                 }));
}

void ServerLoop::Pull(replication::LinkId link, const replication::PullRequest& pull,
                      PullDone done) {
  auto it = links_.find(link);
  if (it == links_.end()) {
    done(absl::UnavailableError("no such link (peer disconnected)"));
    return;
  }
  auto request = it->second.peer.pullRequest();
  request.setRequester(pull.requester);
  request.setIncarnation(pull.incarnation);
  request.setAfterSeq(pull.after_seq);
  request.setMaxRecords(pull.max_records);
  request.setMaxBytes(pull.max_bytes);
  request.setMaxValueBytes(pull.max_value_bytes);
  const Watermarks delta = WatermarkDelta(pull.watermarks, &it->second.sent);
  ToWire(delta, request.initWatermarks(delta.size()));
  tasks_.add(
      request.send()
          .then(
              [this, link](auto response) -> absl::StatusOr<replication::PullResponse> {
                absl::Status status = ResponseStatus(response);
                if (!status.ok()) return status;
                replication::PullResponse out;
                out.replica_id = response.getReplicaId();
                out.incarnation = response.getIncarnation();
                out.from_seq = response.getFromSeq();
                out.last_seq = response.getLastSeq();
                out.max_seq = response.getMaxSeq();
                auto batch = response.getBatch();
                PEERKV_ASSIGN_OR_RETURN(
                    out.records,
                    replication::DecodeBatch(
                        std::string_view(reinterpret_cast<const char*>(batch.begin()), batch.size()),
                        replication::kMaxPullRecords));
                auto entry = links_.find(link);
                if (entry == links_.end()) {
                  return absl::UnavailableError("link closed during the pull");
                }
                if (response.getWatermarks().size() > kMaxWatermarks ||
                    entry->second.received.size() > kMaxWatermarks) {
                  return absl::InvalidArgumentError(absl::StrFormat(
                      "peer sent more than %d watermarks", kMaxWatermarks));
                }
                ApplyWatermarkDelta(FromWire(response.getWatermarks()), &entry->second.received);
                out.watermarks = entry->second.received;
                return out;
              },
              [](kj::Exception&& e) -> absl::StatusOr<replication::PullResponse> {
                return FromKjException(e, "pull from peer");
              })
          .then([done = kj::mv(done)](absl::StatusOr<replication::PullResponse> r) mutable {
            done(std::move(r));
          }));
}

void ServerLoop::Nudge(replication::LinkId link, const Watermarks& mine) {
  auto it = links_.find(link);
  if (it == links_.end()) return;
  auto request = it->second.peer.nudgeRequest();
  // Same direction, same delta state as our pulls on this link.
  const Watermarks delta = WatermarkDelta(mine, &it->second.sent);
  ToWire(delta, request.initWatermarks(delta.size()));
  // Fire and forget: a lost nudge only delays the next pull to a round. One
  // unanswered as long as a dead keepalive makes the link suspect, so the
  // engine's next requests take another link.
  const auto deadline = kKeepAliveMisses * options_.keepalive_ms * kj::MILLISECONDS;
  tasks_.add(request.send()
                 .then([](auto&&) {}, [](kj::Exception&&) {})
                 .exclusiveJoin(io_.provider->getTimer().afterDelay(deadline).then([this, link] {
                   if (events_ != nullptr && links_.count(link) > 0) {
                     events_->OnLinkSuspect(
                         link, absl::DeadlineExceededError(absl::StrFormat(
                                   "no answer to a nudge within %d ms",
                                   kKeepAliveMisses * options_.keepalive_ms)));
                   }
                 })));
}

void ServerLoop::CloseLink(replication::LinkId link) {
  auto it = links_.find(link);
  if (it == links_.end()) return;
  kj::Own<Outbound> outbound = kj::mv(it->second.outbound);
  links_.erase(it);
  if (outbound.get() != nullptr) {
    // Destroyed on a later turn, not inside one of its own callbacks.
    tasks_.add(kj::evalLater([outbound = kj::mv(outbound)] {}));
  }
}

replication::LinkId ServerLoop::AddInboundLink(uint64_t connection_id,
                                               wire::Replica::Client back) {
  const replication::LinkId id = next_link_++;
  links_[id] = LinkEntry{kj::mv(back), connection_id, kj::Own<Outbound>()};
  auto c = connections_.find(connection_id);
  links_[id].address = c != connections_.end() ? c->second->peer : "unknown";
  return id;
}

size_t ServerLoop::InboundLinks(uint64_t connection_id) const {
  size_t n = 0;
  for (const auto& [link, entry] : links_) n += entry.connection_id == connection_id ? 1 : 0;
  return n;
}

void ServerLoop::DropLink(replication::LinkId link, const absl::Status& why) {
  if (links_.count(link) == 0) return;
  CloseLink(link);
  if (events_ != nullptr) events_->OnLinkDown(link, why);
}

}  // namespace peerkv::rpc
