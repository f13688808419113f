// rpc/server_loop.cc: the loop thread's state: accepting connections,
// reader limits, commit notifications, graceful shutdown, and replication
// links (dialling peers, pulling from them, nudging them).
#include "rpc/server_loop.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

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
        return inner_.tryReadMessage(fd_space, options, scratch);
      })
      .catch_([this](kj::Exception&& e) -> kj::Maybe<capnp::MessageReaderAndFds> {
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
        accept_loop_ = AcceptLoop().eagerlyEvaluate(nullptr);
        return bound_;
      });
}

kj::Promise<void> ServerLoop::AcceptLoop() {
  return listener_->accept().then(
      [this](kj::Own<kj::AsyncIoStream> stream) {
        AddConnection(kj::mv(stream));
        return AcceptLoop();
      },
      [this](kj::Exception&& e) -> kj::Promise<void> {
        // Out of file descriptors, say: keep the port, try again shortly.
        LogLine(absl::StrFormat("peerkv: accept failed: %s", e.getDescription().cStr()));
        return io_.provider->getTimer().afterDelay(100 * kj::MILLISECONDS).then([this] {
          return AcceptLoop();
        });
      });
}

void ServerLoop::AddConnection(kj::Own<kj::AsyncIoStream> stream) {
  const uint64_t id = next_connection_id_++;
  auto connection = kj::heap<Connection>(*this, id, kj::mv(stream));
  Connection& c = *connection;
  tasks_.add(c.network.onDisconnect()
                 .then([this, &c] {
                   if (!c.messages.failure().empty()) {
                     LogLine(absl::StrFormat("peerkv: rejected connection from %s: %s", c.peer,
                                             c.messages.failure()));
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
                             const absl::Status& status) {
  LogLine(absl::StrFormat("peerkv: rejected %s from %s: %s", method, peer,
                          std::string(status.message())));
}

kj::Promise<void> ServerLoop::Shutdown() {
  accept_loop_ = nullptr;
  listener_ = nullptr;
  auto deadline = io_.provider->getTimer().now() + options_.shutdown_grace_ms * kj::MILLISECONDS;
  return WaitUntil(deadline, [this] { return in_flight_writes_ == 0; }).then([this, deadline] {
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
                [this, id, replica, outbound = kj::mv(outbound)](
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
  // Fire and forget: a lost nudge only delays the next pull to a round.
  tasks_.add(request.send().ignoreResult().catch_([](kj::Exception&&) {}));
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
  return id;
}

void ServerLoop::DropLink(replication::LinkId link, const absl::Status& why) {
  if (links_.count(link) == 0) return;
  CloseLink(link);
  if (events_ != nullptr) events_->OnLinkDown(link, why);
}

}  // namespace peerkv::rpc
