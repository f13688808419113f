// rpc/server.cc: the Cap'n Proto server: accept loop, per-connection RPC
// systems with explicit reader limits, the Kv implementation, watches, and
// graceful shutdown. Everything here runs on the server's loop thread,
// except the store's write callbacks and commit listener, which reach the
// loop only through cross-thread fulfillers.
#include "rpc/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <map>
#include <vector>

#include "absl/strings/str_format.h"
#include "capnp/message.h"
#include "capnp/rpc-twoparty.h"
#include "capnp/serialize-async.h"
#include "common/log.h"
#include "common/macros.h"
#include "kj/async-io.h"
#include "kj/async.h"
#include "kj/timer.h"
#include "rpc/buffered_stream.h"
#include "rpc/convert.h"
#include "rpc/peerkv.capnp.h"
#include "store/validation.h"

namespace peerkv::rpc {

size_t MaxMessageBytes(size_t max_value_bytes) {
  return 2 * max_value_bytes + (size_t{1} << 20);
}

namespace {

constexpr uint kNestingLimit = 16;
constexpr size_t kWatchBatchRecords = 1000;
constexpr size_t kWatchBatchBytes = size_t{4} << 20;
constexpr uint32_t kDefaultScanLimit = 1000;

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

// Wakes the loop thread from any thread. Ring() never blocks; Wait()
// resolves after the next ring (at once if one came since the last Wait).
class Bell {
 public:
  kj::Promise<void> Wait() {
    absl::MutexLock lock(&mu_);
    if (rung_) {
      rung_ = false;
      return kj::READY_NOW;
    }
    auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
    fulfiller_ = kj::mv(paf.fulfiller);
    return kj::mv(paf.promise);
  }
  void Ring() {
    absl::MutexLock lock(&mu_);
    if (fulfiller_.get() != nullptr) {
      fulfiller_->fulfill();
      fulfiller_ = nullptr;
    } else {
      rung_ = true;
    }
  }

 private:
  absl::Mutex mu_;
  bool rung_ ABSL_GUARDED_BY(mu_) = false;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> fulfiller_ ABSL_GUARDED_BY(mu_);
};

// Wraps a connection's message stream to learn why a connection failed
// (garbage bytes, a message over the limit) so the server can log it.
class RecordingMessageStream final : public capnp::MessageStream {
 public:
  explicit RecordingMessageStream(kj::AsyncIoStream& stream) : inner_(stream) {}

  kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> tryReadMessage(
      kj::ArrayPtr<kj::AutoCloseFd> fd_space, capnp::ReaderOptions options,
      kj::ArrayPtr<capnp::word> scratch) override {
    return inner_.tryReadMessage(fd_space, options, scratch)
        .catch_([this](kj::Exception&& e) -> kj::Maybe<capnp::MessageReaderAndFds> {
          if (failure_.empty()) failure_ = e.getDescription().cStr();
          kj::throwFatalException(kj::mv(e));
        });
  }
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

 private:
  capnp::AsyncIoMessageStream inner_;
  std::string failure_;
};

}  // namespace

// The server's state on its loop thread.
class ServerLoop final : private kj::TaskSet::ErrorHandler {
 public:
  ServerLoop(Store& store, const ServerOptions& options, kj::AsyncIoContext& io)
      : store_(store), options_(options), io_(io), tasks_(*this),
        started_(absl::Now()) {
    reader_options_.traversalLimitInWords =
        MaxMessageBytes(store.options().max_value_bytes) / sizeof(capnp::word);
    reader_options_.nestingLimit = kNestingLimit;
    auto paf = kj::newPromiseAndFulfiller<void>();
    commit_fulfiller_ = kj::mv(paf.fulfiller);
    next_commit_ = paf.promise.fork();
    listener_id_ = store_.AddCommitListener([this](uint64_t) { bell_.Ring(); });
    tasks_.add(PumpCommits());
  }

  ~ServerLoop() { store_.RemoveCommitListener(listener_id_); }

  // Binds the listening socket; returns the bound address.
  kj::Promise<std::string> Listen() {
    return io_.provider->getNetwork()
        .parseAddress(options_.listen)
        .then([this](kj::Own<kj::NetworkAddress> address) {
          listener_ = address->listen();
          std::string host = options_.listen.substr(0, options_.listen.rfind(':'));
          bound_ = absl::StrFormat("%s:%d", host, listener_->getPort());
          accept_loop_ = AcceptLoop().eagerlyEvaluate(nullptr);
          return bound_;
        });
  }

  // Graceful stop: no new connections, in-flight writes answered, replies
  // flushed, then every connection closed.
  kj::Promise<void> Shutdown();

  Store& store() { return store_; }
  const ServerOptions& options() const { return options_; }
  absl::Time started() const { return started_; }
  size_t connections() const { return connections_.size(); }
  const std::string& bound() const { return bound_; }

  // Resolves after the next commit that changed records.
  kj::Promise<void> NextCommit() { return next_commit_.addBranch(); }

  // Submits a write to the store; resolves on this loop once durable.
  kj::Promise<absl::StatusOr<std::vector<Version>>> Write(std::vector<Mutation> mutations) {
    auto paf = kj::newPromiseAndCrossThreadFulfiller<absl::StatusOr<std::vector<Version>>>();
    ++in_flight_writes_;
    store_.WriteAsync(std::move(mutations),
                      [fulfiller = kj::mv(paf.fulfiller)](
                          absl::StatusOr<std::vector<Version>> result) mutable {
                        fulfiller->fulfill(kj::mv(result));
                      });
    return paf.promise.attach(kj::defer([this] { --in_flight_writes_; }));
  }

  void LogRejected(const std::string& peer, std::string_view method,
                   const absl::Status& status) {
    LogLine(absl::StrFormat("peerkv: rejected %s from %s: %s", method, peer,
                            std::string(status.message())));
  }

  void AddConnection(kj::Own<kj::AsyncIoStream> stream);

 private:
  struct Connection;
  friend struct Connection;

  kj::Promise<void> AcceptLoop() {
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

  kj::Promise<void> PumpCommits() {
    return bell_.Wait().then([this] {
      auto paf = kj::newPromiseAndFulfiller<void>();
      auto fired = kj::mv(commit_fulfiller_);
      commit_fulfiller_ = kj::mv(paf.fulfiller);
      next_commit_ = paf.promise.fork();
      fired->fulfill();
      return PumpCommits();
    });
  }

  // Waits until `done()` holds, checking each millisecond, or until the
  // deadline. Only shutdown uses it: the quantities it watches (writes in
  // flight, bytes queued on sockets) change without an event to await.
  kj::Promise<void> WaitUntil(kj::TimePoint deadline, kj::Function<bool()> done) {
    if (done() || io_.provider->getTimer().now() >= deadline) return kj::READY_NOW;
    return io_.provider->getTimer()
        .afterDelay(1 * kj::MILLISECONDS)
        .then([this, deadline, done = kj::mv(done)]() mutable {
          return WaitUntil(deadline, kj::mv(done));
        });
  }

  void taskFailed(kj::Exception&& e) override {
    LogLine(absl::StrFormat("peerkv: server task failed: %s", e.getDescription().cStr()));
  }

  Store& store_;
  const ServerOptions& options_;
  kj::AsyncIoContext& io_;
  capnp::ReaderOptions reader_options_;
  Bell bell_;
  int listener_id_ = 0;
  kj::Own<kj::PromiseFulfiller<void>> commit_fulfiller_;
  kj::ForkedPromise<void> next_commit_ = nullptr;
  kj::Own<kj::ConnectionReceiver> listener_;
  kj::Promise<void> accept_loop_ = nullptr;
  std::string bound_;
  std::vector<Connection*> connections_;
  size_t in_flight_writes_ = 0;
  bool stopping_ = false;
  kj::TaskSet tasks_;
  absl::Time started_;
};

namespace {

// One watch: reads the change log after its cursor and calls the watcher
// with matching records, one call in flight at a time. Dropping the handle
// (or the connection) destroys it and cancels the pump.
class WatchSession final : public wire::WatchHandle::Server {
 public:
  WatchSession(ServerLoop& loop, wire::Watcher::Client watcher, std::string keyspace,
               std::string prefix, uint64_t from_seq)
      : loop_(loop), watcher_(kj::mv(watcher)), keyspace_(std::move(keyspace)),
        prefix_(std::move(prefix)), cursor_(from_seq) {
    pump_ = Pump().eagerlyEvaluate([](kj::Exception&&) {
      // The watcher went away (client disconnected or dropped it): the
      // session ends; its handle is released with the connection.
    });
  }

 private:
  kj::Promise<void> Pump() {
    absl::StatusOr<Changes> changes =
        loop_.store().ChangesSince(cursor_, kWatchBatchRecords, kWatchBatchBytes);
    if (!changes.ok()) {
      LogLine(absl::StrFormat("peerkv: watch stopped: %s", changes.status().ToString()));
      return kj::READY_NOW;
    }
    std::vector<const Record*> matching;
    for (const Record& r : changes->records) {
      if (r.keyspace == keyspace_ && r.key.compare(0, prefix_.size(), prefix_) == 0) {
        matching.push_back(&r);
      }
    }
    const bool advanced = changes->last_seq > cursor_;
    cursor_ = changes->last_seq;
    if (matching.empty()) {
      if (advanced) return kj::evalLater([this] { return Pump(); });
      return loop_.NextCommit().then([this] { return Pump(); });
    }
    auto request = watcher_.changesRequest();
    auto list = request.initRecords(matching.size());
    for (size_t i = 0; i < matching.size(); ++i) ToWire(*matching[i], list[i]);
    request.setLastSeq(cursor_);
    return request.send().then([this](auto&&) { return Pump(); });
  }

  ServerLoop& loop_;
  wire::Watcher::Client watcher_;
  const std::string keyspace_;
  const std::string prefix_;
  uint64_t cursor_;
  kj::Promise<void> pump_ = nullptr;
};

class KvImpl final : public wire::Kv::Server {
 public:
  KvImpl(ServerLoop& loop, std::string peer) : loop_(loop), peer_(std::move(peer)) {}

  kj::Promise<void> get(GetContext context) override {
    auto params = context.getParams();
    auto keyspace = params.getKeyspace();
    auto key = params.getKey();
    // Copy the record straight from the store's map into the reply.
    absl::Status status = loop_.store().GetView(
        std::string_view(keyspace.cStr(), keyspace.size()),
        std::string_view(reinterpret_cast<const char*>(key.begin()), key.size()),
        [&context](const RecordView* view) {
          if (view == nullptr) return;
          auto results = context.getResults(capnp::MessageSize{
              (view->keyspace.size() + view->key.size() + view->value.size()) / 8 + 24, 0});
          results.setFound(true);
          auto record = results.initRecord();
          record.setKeyspace(capnp::Text::Reader(view->keyspace.data(), view->keyspace.size()));
          record.setKey(AsData(view->key));
          auto version = record.initVersion();
          version.setHlc(view->version.hlc);
          version.setOrigin(view->version.origin);
          record.setDeleted(view->deleted);
          record.setValue(AsData(view->value));
          record.setSeq(view->seq);
        });
    if (!status.ok()) Fail("get", status, context.getResults().initError());
    return kj::READY_NOW;
  }

  kj::Promise<void> put(PutContext context) override {
    auto params = context.getParams();
    std::vector<Mutation> batch;
    batch.push_back(Mutation{ToString(params.getKeyspace()), ToString(params.getKey()),
                             ToString(params.getValue())});
    return loop_.Write(std::move(batch))
        .then([this, context](absl::StatusOr<std::vector<Version>> versions) mutable {
          auto results = context.getResults(capnp::MessageSize{8, 0});
          if (!versions.ok()) return Fail("put", versions.status(), results.initError());
          ToWire(versions->front(), results.initVersion());
        });
  }

  kj::Promise<void> delete_(DeleteContext context) override {
    auto params = context.getParams();
    std::vector<Mutation> batch;
    batch.push_back(
        Mutation{ToString(params.getKeyspace()), ToString(params.getKey()), std::nullopt});
    return loop_.Write(std::move(batch))
        .then([this, context](absl::StatusOr<std::vector<Version>> versions) mutable {
          auto results = context.getResults(capnp::MessageSize{8, 0});
          if (!versions.ok()) return Fail("delete", versions.status(), results.initError());
          ToWire(versions->front(), results.initVersion());
        });
  }

  kj::Promise<void> scan(ScanContext context) override {
    auto params = context.getParams();
    ScanOptions options;
    options.prefix = ToString(params.getPrefix());
    options.start_after = ToString(params.getStartAfter());
    options.limit = params.getLimit() == 0 ? kDefaultScanLimit : params.getLimit();
    options.include_tombstones = params.getIncludeTombstones();
    absl::StatusOr<ScanResult> page =
        loop_.store().Scan(ToString(params.getKeyspace()), options);
    auto results = context.getResults();
    if (!page.ok()) {
      Fail("scan", page.status(), results.initError());
      return kj::READY_NOW;
    }
    auto list = results.initRecords(page->records.size());
    for (size_t i = 0; i < page->records.size(); ++i) ToWire(page->records[i], list[i]);
    results.setMore(page->more);
    return kj::READY_NOW;
  }

  kj::Promise<void> writeBatch(WriteBatchContext context) override {
    auto mutations = context.getParams().getMutations();
    std::vector<Mutation> batch;
    batch.reserve(mutations.size());
    for (auto m : mutations) {
      Mutation mutation{ToString(m.getKeyspace()), ToString(m.getKey()), std::nullopt};
      if (m.isPut()) mutation.value = ToString(m.getPut());
      batch.push_back(std::move(mutation));
    }
    return loop_.Write(std::move(batch))
        .then([this, context](absl::StatusOr<std::vector<Version>> versions) mutable {
          auto results = context.getResults();
          if (!versions.ok()) return Fail("writeBatch", versions.status(), results.initError());
          auto list = results.initVersions(versions->size());
          for (size_t i = 0; i < versions->size(); ++i) ToWire((*versions)[i], list[i]);
        });
  }

  kj::Promise<void> watch(WatchContext context) override {
    auto params = context.getParams();
    const std::string keyspace = ToString(params.getKeyspace());
    const std::string prefix = ToString(params.getPrefix());
    auto results = context.getResults();
    absl::Status valid = ValidateKeyspace(keyspace);
    if (valid.ok() && prefix.size() > kMaxKeyBytes) {
      valid = absl::InvalidArgumentError(absl::StrFormat(
          "prefix is %d bytes; the limit is %d", prefix.size(), kMaxKeyBytes));
    }
    if (!valid.ok()) {
      Fail("watch", valid, results.initError());
      return kj::READY_NOW;
    }
    results.setMaxSeq(loop_.store().max_seq());
    results.setHandle(kj::heap<WatchSession>(loop_, params.getWatcher(), keyspace, prefix,
                                             params.getFromSeq()));
    return kj::READY_NOW;
  }

  kj::Promise<void> status(StatusContext context) override {
    auto results = context.getResults();
    absl::StatusOr<StoreStats> stats = loop_.store().Stats();
    if (!stats.ok()) {
      Fail("status", stats.status(), results.initError());
      return kj::READY_NOW;
    }
    auto s = results.initStatus();
    s.setReplicaId(stats->replica_id);
    s.setIncarnation(stats->incarnation);
    s.setLiveRecords(stats->live_records);
    s.setTombstones(stats->tombstones);
    s.setMaxSeq(stats->max_seq);
    s.setUptimeMs(absl::ToInt64Milliseconds(absl::Now() - loop_.started()));
    s.setConnectedClients(loop_.connections());
    s.setReplicaName(AsText(loop_.options().replica_name));
    s.setDiskBytes(stats->disk_bytes);
    s.setDataDir(AsText(loop_.store().options().dir));
    s.setMaxValueBytes(loop_.store().options().max_value_bytes);
    return kj::READY_NOW;
  }

 private:
  void Fail(std::string_view method, const absl::Status& status, wire::Error::Builder error) {
    loop_.LogRejected(peer_, method, status);
    ToWire(status, error);
  }

  ServerLoop& loop_;
  const std::string peer_;
};

class GatewayImpl final : public wire::Gateway::Server {
 public:
  GatewayImpl(ServerLoop& loop, std::string peer) : loop_(loop), peer_(std::move(peer)) {}

  kj::Promise<void> kv(KvContext context) override {
    context.getResults().setKv(kj::heap<KvImpl>(loop_, peer_));
    return kj::READY_NOW;
  }

 private:
  ServerLoop& loop_;
  const std::string peer_;
};

}  // namespace

// A client connection: its socket, its RPC system, and its bootstrap.
struct ServerLoop::Connection {
  Connection(ServerLoop& loop, kj::Own<kj::AsyncIoStream> socket)
      : loop(loop),
        stream(kj::heap<BufferedStream>(kj::mv(socket))),
        peer(PeerAddress(*stream)),
        messages(*stream),
        network(messages, capnp::rpc::twoparty::Side::SERVER, loop.reader_options_),
        rpc(capnp::makeRpcServer(network, kj::heap<GatewayImpl>(loop, peer))) {
    // Bound the requests a client may have in flight on this connection.
    rpc.setFlowLimit(2 * loop.reader_options_.traversalLimitInWords);
    loop.connections_.push_back(this);
  }
  ~Connection() {
    auto& list = loop.connections_;
    list.erase(std::remove(list.begin(), list.end(), this), list.end());
  }

  ServerLoop& loop;
  kj::Own<BufferedStream> stream;
  std::string peer;
  RecordingMessageStream messages;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
};

void ServerLoop::AddConnection(kj::Own<kj::AsyncIoStream> stream) {
  auto connection = kj::heap<Connection>(*this, kj::mv(stream));
  Connection& c = *connection;
  tasks_.add(c.network.onDisconnect()
                 .then([&c] {
                   if (!c.messages.failure().empty()) {
                     LogLine(absl::StrFormat("peerkv: rejected connection from %s: %s", c.peer,
                                             c.messages.failure()));
                   }
                 })
                 .attach(kj::mv(connection)));
}

kj::Promise<void> ServerLoop::Shutdown() {
  stopping_ = true;
  accept_loop_ = nullptr;
  listener_ = nullptr;
  auto deadline = io_.provider->getTimer().now() +
                  options_.shutdown_grace_ms * kj::MILLISECONDS;
  return WaitUntil(deadline, [this] { return in_flight_writes_ == 0; })
      .then([this, deadline] {
        return WaitUntil(deadline, [this] {
          for (Connection* c : connections_) {
            if (c->network.getCurrentQueueSize() > 0 || c->stream->pending_bytes() > 0) {
          return false;
        }
          }
          return true;
        });
      });
}

struct Server::StopSignal {
  absl::Mutex mu;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> fulfiller ABSL_GUARDED_BY(mu);
};

Server::Server(Store* store, ServerOptions options)
    : store_(store), options_(std::move(options)), stop_(std::make_unique<StopSignal>()) {}

absl::StatusOr<std::unique_ptr<Server>> Server::Start(Store* store, ServerOptions options) {
  if (options.listen.rfind(':') == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "listen address '%s' must be HOST:PORT", options.listen));
  }
  auto server = std::unique_ptr<Server>(new Server(store, std::move(options)));
  server->thread_ = std::thread([s = server.get()] { s->Run(); });
  server->ready_.WaitForNotification();
  if (!server->start_status_.ok()) {
    server->thread_.join();
    {
      absl::MutexLock lock(&server->stop_mu_);
      server->stopped_ = true;
    }
    return server->start_status_;
  }
  return server;
}

void Server::Run() {
  try {
    kj::AsyncIoContext io = kj::setupAsyncIo();
    ServerLoop loop(*store_, options_, io);
    kj::Promise<void> stop_requested = nullptr;
    {
      auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
      absl::MutexLock lock(&stop_->mu);
      stop_->fulfiller = kj::mv(paf.fulfiller);
      stop_requested = kj::mv(paf.promise);
    }
    KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] { address_ = loop.Listen().wait(io.waitScope); })) {
      start_status_ = absl::UnavailableError(absl::StrFormat(
          "cannot listen on %s: %s", options_.listen, e->getDescription().cStr()));
      ready_.Notify();
      return;
    }
    ready_.Notify();
    stop_requested.wait(io.waitScope);
    loop.Shutdown().wait(io.waitScope);
  } catch (const kj::Exception& e) {
    LogLine(absl::StrFormat("peerkv: server loop failed: %s", e.getDescription().cStr()));
    if (!ready_.HasBeenNotified()) {
      start_status_ = absl::InternalError(e.getDescription().cStr());
      ready_.Notify();
    }
  }
}

std::string Server::address() const { return address_; }

void Server::Stop() {
  {
    absl::MutexLock lock(&stop_mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  {
    absl::MutexLock lock(&stop_->mu);
    if (stop_->fulfiller.get() != nullptr) stop_->fulfiller->fulfill();
  }
  if (thread_.joinable()) thread_.join();
}

Server::~Server() { Stop(); }

}  // namespace peerkv::rpc
