// rpc/server.cc: the public Server: starts the loop thread and the
// replication engine (on its own executor thread, its transport the
// PeerLinksBridge onto the loop's links), and stops them in order.
#include "rpc/server.h"

#include "absl/strings/str_format.h"
#include "auth/ids.h"
#include "common/log.h"
#include "kj/async-io.h"
#include "kj/async.h"
#include "rpc/server_loop.h"
#include "store/replica_id.h"

namespace peerkv::rpc {

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
  if (!options.tls.has_value() && !IsLoopbackAddress(options.listen)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "listen address '%s' is not loopback: TCP without TLS is only allowed on loopback",
        options.listen));
  }
  if (options.tls.has_value() && (options.tls->key == nullptr || !options.trust)) {
    return absl::InvalidArgumentError("TLS needs this server's key and whom it trusts");
  }
  // Peers refuse a hello whose replica id is not minted from the link's
  // device key (CheckReplicaClaim): say so here rather than at every dial.
  if (options.tls.has_value() && options.replicate &&
      !IsDerivedReplicaId(store->replica_id(), store->incarnation(),
                          options.tls->key->public_key().view())) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "the store's replica id %016x is not minted from the TLS device key %s: open the store "
        "with StoreOptions::replica_id_key set to that key",
        store->replica_id(), auth::DeviceId(options.tls->key->public_key())));
  }
  // Peers would refuse our hellos with a longer name (ValidatePeerInfo).
  if (options.replica_name.size() > replication::kMaxReplicaNameBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("replica name is %d bytes; the limit is %d", options.replica_name.size(),
                        replication::kMaxReplicaNameBytes));
  }
  for (const std::string& peer : options.replication.peers) {
    if (peer.rfind(':') == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrFormat("peer address '%s' must be HOST:PORT", peer));
    }
  }
  auto server = std::unique_ptr<Server>(new Server(store, std::move(options)));
  if (server->options_.replicate) {
    replication::ReplicatorOptions replication = server->options_.replication;
    replication.name = server->options_.replica_name;
    // A pulled batch must fit the messages this server's readers accept.
    replication.batch_bytes = static_cast<uint32_t>(std::min<size_t>(
        replication.batch_bytes, MaxMessageBytes(store->options().max_value_bytes) / 4));
    if (!replication.log) replication.log = [](const std::string& line) { LogLine(line); };
    server->executor_ = std::make_unique<replication::ThreadExecutor>();
    server->transport_ = std::make_unique<PeerLinksBridge>();
    server->replicator_ = std::make_unique<replication::Replicator>(
        store, server->executor_.get(), server->transport_.get(), std::move(replication));
  }
  server->thread_ = std::thread([s = server.get()] { s->Run(); });
  server->ready_.WaitForNotification();
  if (!server->start_status_.ok()) {
    server->thread_.join();
    server->replicator_.reset();
    server->executor_.reset();
    {
      absl::MutexLock lock(&server->stop_mu_);
      server->stopped_ = true;
    }
    return server->start_status_;
  }
  if (server->replicator_ != nullptr) server->replicator_->Start();
  return server;
}

void Server::Run() {
  try {
    kj::AsyncIoContext io = kj::setupAsyncIo();
    replication::Replicator* replicator = replicator_.get();
    ServerLoop loop(
        *store_, options_, io, replicator,
        [replicator] {
          return replicator != nullptr ? replicator->Statuses()
                                       : std::vector<replication::PeerStatus>{};
        },
        bytes_sent_);
    loop.set_replication_counters([replicator] {
      return replicator != nullptr ? replicator->Counters() : replication::ReplicatorCounters{};
    });
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
    std::vector<std::shared_ptr<void>> front_ends;
    for (const FrontEndFactory& start : options_.front_ends) {
      absl::StatusOr<std::shared_ptr<void>> front_end = start(loop, io.waitScope);
      if (!front_end.ok()) {
        front_ends.clear();
        start_status_ = front_end.status();
        ready_.Notify();
        return;
      }
      front_ends.push_back(std::move(*front_end));
    }
    if (transport_ != nullptr) transport_->Attach(kj::getCurrentThreadExecutor(), &loop.links());
    {
      absl::MutexLock lock(&loop_mu_);
      loop_executor_ = kj::getCurrentThreadExecutor().addRef();
      loop_ = &loop;
    }
    ready_.Notify();
    stop_requested.wait(io.waitScope);
    {
      absl::MutexLock lock(&loop_mu_);
      loop_executor_ = nullptr;
      loop_ = nullptr;
    }
    front_ends.clear();
    if (transport_ != nullptr) transport_->Detach();
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

std::vector<replication::PeerStatus> Server::PeerStatuses() const {
  return replicator_ != nullptr ? replicator_->Statuses() : std::vector<replication::PeerStatus>{};
}

replication::ReplicatorCounters Server::ReplicationCounters() const {
  return replicator_ != nullptr ? replicator_->Counters() : replication::ReplicatorCounters{};
}

uint64_t Server::BytesSent() const { return bytes_sent_.load(); }

absl::Status Server::SetTlsIdentity(const TlsIdentity& identity) {
  kj::Own<const kj::Executor> executor;
  ServerLoop* loop = nullptr;
  {
    absl::MutexLock lock(&loop_mu_);
    if (loop_ == nullptr) return absl::FailedPreconditionError("the server is not running");
    executor = loop_executor_->addRef();
    loop = loop_;
  }
  absl::Status status;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions(
                     [&] { executor->executeSync([&] { status = loop->ReplaceTls(identity); }); })) {
    // The loop ended meanwhile.
    return absl::FailedPreconditionError(
        absl::StrFormat("the server stopped: %s", e->getDescription().cStr()));
  }
  return status;
}

void Server::AddPeer(const std::string& address) {
  if (replicator_ != nullptr) replicator_->AddPeer(address);
}

void Server::Stop() {
  {
    absl::MutexLock lock(&stop_mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  // The engine first: from now on its tasks and callbacks do nothing, and
  // its executor drops whatever is posted to it (the loop may still post
  // link events until it ends). Then the loop. The objects go last, once no
  // thread can reach them.
  if (replicator_ != nullptr) replicator_->Stop();
  if (executor_ != nullptr) executor_->Stop();
  {
    absl::MutexLock lock(&stop_->mu);
    if (stop_->fulfiller.get() != nullptr) stop_->fulfiller->fulfill();
  }
  if (thread_.joinable()) thread_.join();
  executor_.reset();
  replicator_.reset();
  transport_.reset();
}

Server::~Server() { Stop(); }

}  // namespace peerkv::rpc
