// rpc/client.cc: the blocking client. A Client owns a thread running a kj
// event loop that holds the connection; each call hops onto that loop with
// kj::Executor::executeSync and blocks until the server answers, the
// connection fails, or the timeout passes.
#include "rpc/client.h"

#include <atomic>
#include <thread>

#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "auth/ids.h"
#include "common/macros.h"
#include "kj/async-io.h"
#include "kj/timer.h"
#include "rpc/connection.h"
#include "rpc/convert.h"
#include "rpc/peerkv.capnp.h"
#include "rpc/tls.h"
#include "store/validation.h"

namespace peerkv::rpc {

// A TLS handshake to a server not finished within this long fails.
constexpr int kHandshakeTimeoutMs = 10'000;
namespace {

// Responses hold at most a scan page (16 MiB) or a watch batch; 64 MiB
// bounds what a misbehaving server can make us allocate.
constexpr size_t kClientMaxMessageBytes = size_t{64} << 20;
constexpr uint kNestingLimit = 16;

kj::Duration ToKj(absl::Duration d) {
  return absl::ToInt64Milliseconds(d) * kj::MILLISECONDS;
}

// A watch in progress, shared by the caller's thread (which waits on
// `done`) and the loop (which delivers changes and ends it).
struct WatchState {
  WatchCallback on_changes;
  absl::Notification done;
  absl::Status status;  // written before `done` is notified
  // The server's handle; dropping it cancels the watch.
  kj::Maybe<wire::WatchHandle::Client> handle;

  void Finish(absl::Status s) {
    if (done.HasBeenNotified()) return;
    status = std::move(s);
    handle = nullptr;
    done.Notify();
  }
};

class WatcherImpl final : public wire::Watcher::Server {
 public:
  explicit WatcherImpl(std::shared_ptr<WatchState> state) : state_(std::move(state)) {}

  kj::Promise<void> changes(ChangesContext context) override {
    if (state_->done.HasBeenNotified()) return kj::READY_NOW;
    auto params = context.getParams();
    std::vector<Record> records;
    records.reserve(params.getRecords().size());
    for (auto r : params.getRecords()) records.push_back(FromWire(r));
    if (!state_->on_changes(records, params.getLastSeq())) {
      // Drop the handle after this call returns, not inside it.
      return kj::evalLater([state = state_] { state->Finish(absl::OkStatus()); });
    }
    return kj::READY_NOW;
  }

  kj::Promise<void> failed(FailedContext context) override {
    absl::Status status = FromWire(context.getParams().getError());
    if (status.ok()) status = absl::UnknownError("the server ended the watch");
    return kj::evalLater([state = state_, status] { state->Finish(status); });
  }

 private:
  std::shared_ptr<WatchState> state_;
};

}  // namespace

class Client::Impl {
 public:
  explicit Impl(ClientOptions options) : options_(std::move(options)) {}

  ~Impl() {
    if (thread_.joinable()) {
      stop_->fulfill();
      thread_.join();
    }
  }

  const ClientOptions& options() const { return options_; }
  // A TLS handshake completed: a connection then closed by the server was
  // closed after it (see ClosedAfterHandshake).
  bool Handshaken() const { return handshaken_; }

  void Start() {
    thread_ = std::thread([this] { Run(); });
    ready_.WaitForNotification();
  }

  // Runs `fn` with the Kv capability on the loop thread and waits for its
  // result; connection failures and timeouts become statuses.
  template <typename T>
  absl::StatusOr<T> Call(std::string_view what,
                         kj::Function<kj::Promise<absl::StatusOr<T>>(wire::Kv::Client&)> fn) {
    const std::string context = absl::StrFormat("%s to peerkv server at %s", what, options_.address);
    return executor_->executeSync([&]() -> kj::Promise<absl::StatusOr<T>> {
      auto work = loop_->Kv()
                      .then([&fn](wire::Kv::Client kv) { return fn(kv); })
                      .catch_([this, &context](kj::Exception&& e) -> absl::StatusOr<T> {
                        if (e.getType() == kj::Exception::Type::DISCONNECTED) loop_->MarkBroken();
                        return FromKjException(e, context);
                      });
      auto timeout = loop_->io.provider->getTimer()
                         .afterDelay(ToKj(options_.timeout))
                         .then([this, &context]() -> absl::StatusOr<T> {
                           return absl::DeadlineExceededError(absl::StrFormat(
                               "%s: no answer within %s", context,
                               absl::FormatDuration(options_.timeout)));
                         });
      return work.exclusiveJoin(kj::mv(timeout));
    });
  }

  // Starts a watch on the loop thread; `state` is finished by the loop.
  absl::Status StartWatch(const WatchOptions& options, std::shared_ptr<WatchState> state) {
    absl::StatusOr<bool> started = Call<bool>(
        "watch", [&](wire::Kv::Client& kv) -> kj::Promise<absl::StatusOr<bool>> {
          auto request = kv.watchRequest();
          request.setKeyspace(AsText(options.keyspace));
          request.setPrefix(AsData(options.prefix));
          request.setFromSeq(options.from_seq);
          request.setWatcher(kj::heap<WatcherImpl>(state));
          return request.send().then([this, state](auto response) -> absl::StatusOr<bool> {
            PEERKV_RETURN_IF_ERROR(ResponseStatus(response));
            state->handle = response.getHandle();
            loop_->watches.push_back(state);
            return true;
          });
        });
    return started.status();
  }

 private:
  struct Connection {
    Connection(kj::Own<kj::AsyncIoStream> socket, const capnp::ReaderOptions& options)
        : link(kj::mv(socket), options), kv(link.gateway().kvRequest().send().getKv()) {}
    GatewayConnection link;
    wire::Kv::Client kv;
    bool broken = false;
  };

  // State that lives on the loop thread.
  struct Loop : private kj::TaskSet::ErrorHandler {
    Loop(kj::AsyncIoContext& io, const ClientOptions& options, std::atomic<bool>& handshaken)
        : io(io), options(options), handshaken_flag(&handshaken), tasks(*this) {
      reader_options.traversalLimitInWords = kClientMaxMessageBytes / sizeof(capnp::word);
      reader_options.nestingLimit = kNestingLimit;
      if (options.tls.has_value() && options.address.rfind("unix:", 0) != 0) {
        absl::StatusOr<std::unique_ptr<TlsEndpoint>> made =
            TlsEndpoint::Create(*options.tls, io.provider->getTimer(), kHandshakeTimeoutMs);
        if (made.ok()) {
          tls = std::move(*made);
        } else {
          tls_error = made.status();
        }
      }
    }

    // The Kv capability of a live connection, connecting first if needed.
    kj::Promise<wire::Kv::Client> Kv() {
      if (connection.get() != nullptr && !connection->broken) return connection->kv;
      if (!connecting) {
        connecting = true;
        pending = Connect().fork();
      }
      return pending.addBranch().then([this]() { return connection->kv; });
    }

    kj::Promise<void> Connect() {
      if (!tls_error.ok()) {
        connecting = false;
        return Refusal(tls_error);
      }
      TrustSource trust;
      if (options.server_user.has_value()) {
        trust = [user = *options.server_user]() -> absl::StatusOr<TrustView> {
          return TrustView{user, {}, {}};
        };
      }
      return DialAuthenticated(io.provider->getNetwork(), options.address, tls.get(),
                               std::move(trust))
          .then(
              [this](kj::Own<kj::AsyncIoStream> stream) {
                connecting = false;
                if (tls != nullptr) *handshaken_flag = true;
                FailWatches();
                connection = kj::heap<Connection>(kj::mv(stream), reader_options);
                Connection* c = connection.get();
                tasks.add(c->link.onDisconnect().then([this, c] {
                  if (connection.get() == c) MarkBroken();
                }));
              },
              [this](kj::Exception&& e) {
                connecting = false;
                kj::throwFatalException(kj::mv(e));
              });
    }

    void MarkBroken() {
      if (connection.get() != nullptr) connection->broken = true;
      FailWatches();
    }

    void FailWatches() {
      for (auto& w : watches) {
        w->Finish(absl::UnavailableError(absl::StrFormat(
            "watch: connection to peerkv server at %s lost", options.address)));
      }
      watches.clear();
    }

    void taskFailed(kj::Exception&& e) override { MarkBroken(); }

    kj::AsyncIoContext& io;
    const ClientOptions& options;
    // Set once a TLS handshake with the server completed.
    std::atomic<bool>* const handshaken_flag;
    std::unique_ptr<TlsEndpoint> tls;  // null: plaintext or unix:
    absl::Status tls_error;
    capnp::ReaderOptions reader_options;
    kj::Own<Connection> connection;
    bool connecting = false;
    kj::ForkedPromise<void> pending = nullptr;
    std::vector<std::shared_ptr<WatchState>> watches;
    kj::TaskSet tasks;
  };

  void Run() {
    kj::AsyncIoContext io = kj::setupAsyncIo();
    auto stop = kj::newPromiseAndCrossThreadFulfiller<void>();
    stop_ = kj::mv(stop.fulfiller);
    executor_ = kj::getCurrentThreadExecutor().addRef();
    {
      Loop loop(io, options_, handshaken_);
      loop_ = &loop;
      ready_.Notify();
      stop.promise.wait(io.waitScope);
      // Watches still waiting learn the client is going away.
      for (auto& w : loop.watches) w->Finish(absl::CancelledError("client closed"));
      loop.watches.clear();
      loop_ = nullptr;
    }
  }

  const ClientOptions options_;
  std::atomic<bool> handshaken_{false};
  std::thread thread_;
  absl::Notification ready_;
  kj::Own<const kj::Executor> executor_;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> stop_;
  Loop* loop_ = nullptr;  // only dereferenced on the loop thread
};

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

const ClientOptions& Client::options() const { return impl_->options(); }

namespace {
absl::Mutex default_tls_mu;
std::optional<TlsIdentity>* default_tls ABSL_GUARDED_BY(default_tls_mu) = nullptr;
std::optional<auth::PublicKey>* default_server_user ABSL_GUARDED_BY(default_tls_mu) = nullptr;
}  // namespace

void SetDefaultClientTls(TlsIdentity identity, auth::PublicKey server_user) {
  PEERKV_CHECK(identity.key != nullptr);
  absl::MutexLock lock(&default_tls_mu);
  if (default_tls == nullptr) {
    default_tls = new std::optional<TlsIdentity>();
    default_server_user = new std::optional<auth::PublicKey>();
  }
  *default_tls = std::move(identity);
  *default_server_user = server_user;
}

std::optional<std::pair<TlsIdentity, auth::PublicKey>> DefaultClientTls() {
  absl::MutexLock lock(&default_tls_mu);
  if (default_tls == nullptr || !default_tls->has_value()) return std::nullopt;
  return std::make_pair(**default_tls, **default_server_user);
}

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(ClientOptions options) {
  if (options.address.rfind(':') == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrFormat("server address '%s' must be HOST:PORT", options.address));
  }
  if (!options.tls.has_value()) {
    absl::MutexLock lock(&default_tls_mu);
    if (default_tls != nullptr) {
      options.tls = *default_tls;
      if (!options.server_user.has_value()) options.server_user = *default_server_user;
    }
  }
  if (options.tls.has_value() && (options.tls->key == nullptr || !options.server_user.has_value())) {
    return absl::InvalidArgumentError(
        "ClientOptions.tls needs a key and server_user (the user whose device the server is)");
  }
  auto impl = std::make_unique<Impl>(std::move(options));
  impl->Start();
  auto client = std::unique_ptr<Client>(new Client(std::move(impl)));
  // One round trip proves a peerkv server answers at that address: the
  // Gateway handing out Kv. Not `status`, whose answer grows with the
  // server's peers and may fail where puts and gets would not.
  absl::StatusOr<bool> answered = client->impl_->Call<bool>(
      "connect", [](wire::Kv::Client& kv) -> kj::Promise<absl::StatusOr<bool>> {
        return kv.whenResolved().then([]() -> absl::StatusOr<bool> { return true; });
      });
  if (!answered.ok()) {
    if (answered.status().code() == absl::StatusCode::kUnavailable &&
        client->impl_->Handshaken()) {
      return ClosedAfterHandshake(answered.status(), *client->impl_->options().tls);
    }
    return answered.status();
  }
  return client;
}

absl::StatusOr<Version> Client::Put(std::string_view keyspace, std::string_view key,
                                    std::string_view value) {
  // The server checks too; refusing here saves sending a value it would
  // refuse (or a message its reader limits would cut off).
  PEERKV_RETURN_IF_ERROR(ValidateValue(value, kMaxValueBytes));
  const std::string ks(keyspace);
  return impl_->Call<Version>(
      "put", [&](wire::Kv::Client& kv) -> kj::Promise<absl::StatusOr<Version>> {
        auto request = kv.putRequest();
        request.setKeyspace(AsText(ks));
        request.setKey(AsData(key));
        request.setValue(AsData(value));
        return request.send().then([](auto response) -> absl::StatusOr<Version> {
          PEERKV_RETURN_IF_ERROR(ResponseStatus(response));
          return FromWire(response.getVersion());
        });
      });
}

absl::StatusOr<Version> Client::Delete(std::string_view keyspace, std::string_view key) {
  const std::string ks(keyspace);
  return impl_->Call<Version>(
      "delete", [&](wire::Kv::Client& kv) -> kj::Promise<absl::StatusOr<Version>> {
        auto request = kv.deleteRequest();
        request.setKeyspace(AsText(ks));
        request.setKey(AsData(key));
        return request.send().then([](auto response) -> absl::StatusOr<Version> {
          PEERKV_RETURN_IF_ERROR(ResponseStatus(response));
          return FromWire(response.getVersion());
        });
      });
}

absl::StatusOr<std::optional<Record>> Client::Get(std::string_view keyspace,
                                                  std::string_view key) {
  const std::string ks(keyspace);
  return impl_->Call<std::optional<Record>>(
      "get", [&](wire::Kv::Client& kv) -> kj::Promise<absl::StatusOr<std::optional<Record>>> {
        auto request = kv.getRequest();
        request.setKeyspace(AsText(ks));
        request.setKey(AsData(key));
        return request.send().then(
            [](auto response) -> absl::StatusOr<std::optional<Record>> {
              PEERKV_RETURN_IF_ERROR(ResponseStatus(response));
              if (!response.getFound()) return std::optional<Record>();
              return std::optional<Record>(FromWire(response.getRecord()));
            });
      });
}

absl::StatusOr<Version> Client::WriteIf(std::string_view keyspace, std::string_view key,
                                        std::optional<std::string_view> value,
                                        const consensus::Precondition& condition) {
  if (value.has_value()) PEERKV_RETURN_IF_ERROR(ValidateValue(*value, kMaxValueBytes));
  const std::string ks(keyspace);
  return impl_->Call<Version>(
      "writeIf", [&](wire::Kv::Client& kv) -> kj::Promise<absl::StatusOr<Version>> {
        auto request = kv.writeIfRequest();
        ToWire(ks, key, value, request.initMutation());
        auto out = request.initCondition();
        switch (condition.kind) {
          case consensus::Precondition::Kind::kNone:
            out.setKind(0);
            break;
          case consensus::Precondition::Kind::kIfAbsent:
            out.setKind(1);
            break;
          case consensus::Precondition::Kind::kIfVersion:
            out.setKind(2);
            ToWire(condition.version, out.initVersion());
            break;
        }
        return request.send().then([](auto response) -> absl::StatusOr<Version> {
          PEERKV_RETURN_IF_ERROR(ResponseStatus(response));
          return FromWire(response.getVersion());
        });
      });
}

absl::StatusOr<StrongReadResult> Client::GetStrong(std::string_view keyspace,
                                                   std::string_view key, bool stale_ok) {
  const std::string ks(keyspace);
  return impl_->Call<StrongReadResult>(
      "getStrong",
      [&](wire::Kv::Client& kv) -> kj::Promise<absl::StatusOr<StrongReadResult>> {
        auto request = kv.getStrongRequest();
        request.setKeyspace(AsText(ks));
        request.setKey(AsData(key));
        request.setStaleOk(stale_ok);
        return request.send().then([](auto response) -> absl::StatusOr<StrongReadResult> {
          PEERKV_RETURN_IF_ERROR(ResponseStatus(response));
          StrongReadResult out;
          if (response.getFound()) out.record = FromWire(response.getRecord());
          out.stale = response.getStale();
          out.staleness_ms = response.getStalenessMs();
          return out;
        });
      });
}

absl::StatusOr<Version> Client::SetMode(std::string_view keyspace, std::string_view mode) {
  const std::string ks(keyspace);
  const std::string m(mode);
  return impl_->Call<Version>(
      "setMode", [&](wire::Kv::Client& kv) -> kj::Promise<absl::StatusOr<Version>> {
        auto request = kv.setModeRequest();
        request.setKeyspace(AsText(ks));
        request.setMode(AsText(m));
        return request.send().then([](auto response) -> absl::StatusOr<Version> {
          PEERKV_RETURN_IF_ERROR(ResponseStatus(response));
          return FromWire(response.getSince());
        });
      });
}

absl::StatusOr<std::vector<KeyspaceModeInfo>> Client::ListModes() {
  using Modes = std::vector<KeyspaceModeInfo>;
  return impl_->Call<Modes>(
      "listModes", [&](wire::Kv::Client& kv) -> kj::Promise<absl::StatusOr<Modes>> {
        return kv.listModesRequest().send().then([](auto response) -> absl::StatusOr<Modes> {
          PEERKV_RETURN_IF_ERROR(ResponseStatus(response));
          Modes out;
          for (auto m : response.getKeyspaces()) {
            out.push_back(KeyspaceModeInfo{ToString(m.getKeyspace()), m.getStrong(),
                                           FromWire(m.getSince()), m.getSwitches(),
                                           m.getRegisters()});
          }
          return out;
        });
      });
}

absl::StatusOr<ConflictList> Client::ListConflicts(std::string_view keyspace,
                                                   std::optional<std::string_view> key) {
  const std::string ks(keyspace);
  const std::optional<std::string> k =
      key.has_value() ? std::optional<std::string>(std::string(*key)) : std::nullopt;
  return impl_->Call<ConflictList>(
      "listConflicts", [&](wire::Kv::Client& kv) -> kj::Promise<absl::StatusOr<ConflictList>> {
        auto request = kv.listConflictsRequest();
        request.setKeyspace(AsText(ks));
        if (k.has_value()) {
          request.setKey(AsData(*k));
          request.setByKey(true);
        }
        return request.send().then([ks](auto response) -> absl::StatusOr<ConflictList> {
          PEERKV_RETURN_IF_ERROR(ResponseStatus(response));
          ConflictList out;
          for (auto e : response.getEntries()) out.entries.push_back(FromWire(ks, e));
          out.more = response.getMore();
          return out;
        });
      });
}

absl::StatusOr<Version> Client::RestoreConflict(std::string_view keyspace, std::string_view key,
                                                const Version& version) {
  const std::string ks(keyspace);
  const std::string k(key);
  return impl_->Call<Version>(
      "restoreConflict", [&](wire::Kv::Client& kv) -> kj::Promise<absl::StatusOr<Version>> {
        auto request = kv.restoreConflictRequest();
        request.setKeyspace(AsText(ks));
        request.setKey(AsData(k));
        ToWire(version, request.initVersion());
        return request.send().then([](auto response) -> absl::StatusOr<Version> {
          PEERKV_RETURN_IF_ERROR(ResponseStatus(response));
          return FromWire(response.getVersion());
        });
      });
}

absl::StatusOr<uint64_t> Client::ClearConflicts(std::string_view keyspace) {
  const std::string ks(keyspace);
  return impl_->Call<uint64_t>(
      "clearConflicts", [&](wire::Kv::Client& kv) -> kj::Promise<absl::StatusOr<uint64_t>> {
        auto request = kv.clearConflictsRequest();
        request.setKeyspace(AsText(ks));
        return request.send().then([](auto response) -> absl::StatusOr<uint64_t> {
          PEERKV_RETURN_IF_ERROR(ResponseStatus(response));
          return response.getCleared();
        });
      });
}

absl::StatusOr<ScanResult> Client::Scan(std::string_view keyspace, const ScanOptions& options) {
  const std::string ks(keyspace);
  if (options.limit == 0 || options.limit > kMaxScanLimit) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "scan limit is %d; it must be 1..%d", options.limit, kMaxScanLimit));
  }
  return impl_->Call<ScanResult>(
      "scan", [&](wire::Kv::Client& kv) -> kj::Promise<absl::StatusOr<ScanResult>> {
        auto request = kv.scanRequest();
        request.setKeyspace(AsText(ks));
        ToWire(options, request);
        return request.send().then([](auto response) -> absl::StatusOr<ScanResult> {
          PEERKV_RETURN_IF_ERROR(ResponseStatus(response));
          ScanResult result;
          for (auto r : response.getRecords()) result.records.push_back(FromWire(r));
          result.more = response.getMore();
          return result;
        });
      });
}

absl::StatusOr<std::vector<Version>> Client::WriteBatch(std::vector<Mutation> mutations) {
  for (const Mutation& m : mutations) {
    if (m.value.has_value()) PEERKV_RETURN_IF_ERROR(ValidateValue(*m.value, kMaxValueBytes));
  }
  return impl_->Call<std::vector<Version>>(
      "writeBatch",
      [&](wire::Kv::Client& kv) -> kj::Promise<absl::StatusOr<std::vector<Version>>> {
        auto request = kv.writeBatchRequest();
        auto list = request.initMutations(mutations.size());
        for (size_t i = 0; i < mutations.size(); ++i) ToWire(mutations[i], list[i]);
        return request.send().then([](auto response) -> absl::StatusOr<std::vector<Version>> {
          PEERKV_RETURN_IF_ERROR(ResponseStatus(response));
          std::vector<Version> versions;
          for (auto v : response.getVersions()) versions.push_back(FromWire(v));
          return versions;
        });
      });
}

absl::StatusOr<std::vector<absl::StatusOr<std::optional<Record>>>> Client::GetMany(
    const std::vector<KeyRef>& keys) {
  using Results = std::vector<absl::StatusOr<std::optional<Record>>>;
  return impl_->Call<Results>(
      "getMany", [&](wire::Kv::Client& kv) -> kj::Promise<absl::StatusOr<Results>> {
        auto request = kv.getManyRequest();
        auto list = request.initGets(keys.size());
        for (size_t i = 0; i < keys.size(); ++i) ToWire(keys[i].keyspace, keys[i].key, list[i]);
        return request.send().then([n = keys.size()](auto response) -> absl::StatusOr<Results> {
          PEERKV_RETURN_IF_ERROR(ResponseStatus(response));
          Results out;
          auto results = response.getResults();
          if (results.size() != n) {
            return absl::InternalError(absl::StrFormat(
                "getMany: %d answers to %d gets", results.size(), n));
          }
          for (auto r : results) out.push_back(FromWire(r));
          return out;
        });
      });
}

absl::StatusOr<std::vector<absl::StatusOr<Version>>> Client::PutMany(
    const std::vector<Mutation>& mutations) {
  using Results = std::vector<absl::StatusOr<Version>>;
  return impl_->Call<Results>(
      "putMany", [&](wire::Kv::Client& kv) -> kj::Promise<absl::StatusOr<Results>> {
        auto request = kv.putManyRequest();
        auto list = request.initMutations(mutations.size());
        for (size_t i = 0; i < mutations.size(); ++i) ToWire(mutations[i], list[i]);
        return request.send().then(
            [n = mutations.size()](auto response) -> absl::StatusOr<Results> {
              PEERKV_RETURN_IF_ERROR(ResponseStatus(response));
              Results out;
              auto results = response.getResults();
              if (results.size() != n) {
                return absl::InternalError(absl::StrFormat(
                    "putMany: %d answers to %d writes", results.size(), n));
              }
              for (auto r : results) out.push_back(FromWire(r));
              return out;
            });
      });
}

absl::StatusOr<ServerStatus> Client::Status() {
  return impl_->Call<ServerStatus>(
      "status", [](wire::Kv::Client& kv) -> kj::Promise<absl::StatusOr<ServerStatus>> {
        return kv.statusRequest().send().then([](auto response) -> absl::StatusOr<ServerStatus> {
          PEERKV_RETURN_IF_ERROR(ResponseStatus(response));
          return FromWire(response.getStatus());
        });
      });
}

absl::StatusOr<replication::ReconcileReport> Client::Reconcile(const std::string& peer) {
  return impl_->Call<replication::ReconcileReport>(
      "reconcile",
      [peer](wire::Kv::Client& kv) -> kj::Promise<absl::StatusOr<replication::ReconcileReport>> {
        auto request = kv.reconcileRequest();
        request.setPeer(AsText(peer));
        return request.send().then(
            [](auto response) -> absl::StatusOr<replication::ReconcileReport> {
              PEERKV_RETURN_IF_ERROR(ResponseStatus(response));
              return FromWire(response.getReport());
            });
      });
}

absl::StatusOr<uint64_t> Client::ForgetPeer(const std::string& peer) {
  return impl_->Call<uint64_t>(
      "forgetPeer", [peer](wire::Kv::Client& kv) -> kj::Promise<absl::StatusOr<uint64_t>> {
        auto request = kv.forgetPeerRequest();
        request.setPeer(AsText(peer));
        return request.send().then([](auto response) -> absl::StatusOr<uint64_t> {
          PEERKV_RETURN_IF_ERROR(ResponseStatus(response));
          return response.getReplicaId();
        });
      });
}

absl::StatusOr<CompactResult> Client::Compact(std::string_view keyspace) {
  const std::string ks(keyspace);
  return impl_->Call<CompactResult>(
      "compact", [ks](wire::Kv::Client& kv) -> kj::Promise<absl::StatusOr<CompactResult>> {
        auto request = kv.compactRequest();
        request.setKeyspace(AsText(ks));
        return request.send().then([](auto response) -> absl::StatusOr<CompactResult> {
          PEERKV_RETURN_IF_ERROR(ResponseStatus(response));
          return CompactResult{response.getTombstonesCollected(),
                               response.getLogEntriesCompacted(), response.getEntriesCopied(),
                               response.getPagesBefore(), response.getPagesAfter()};
        });
      });
}

namespace {

absl::StatusOr<std::vector<auth::Who>> WhoFromWire(capnp::List<capnp::Text>::Reader list) {
  std::vector<auth::Who> out;
  for (auto text : list) {
    PEERKV_ASSIGN_OR_RETURN(auth::Who who, auth::ParseWho(ToString(text), "server's WHO"));
    out.push_back(std::move(who));
  }
  return out;
}

void WhoToWire(const std::vector<auth::Who>& who, capnp::List<capnp::Text>::Builder list) {
  for (size_t i = 0; i < who.size(); ++i) {
    const std::string text = auth::FormatWho(who[i]);
    list.set(i, AsText(text));
  }
}

}  // namespace

absl::Status Client::SetPolicy(std::string_view keyspace, const std::vector<auth::Who>& readers,
                               const std::vector<auth::Who>& writers) {
  const std::string ks(keyspace);
  return impl_->Call<bool>(
                  "setPolicy",
                  [&](wire::Kv::Client& kv) -> kj::Promise<absl::StatusOr<bool>> {
                    auto request = kv.setPolicyRequest();
                    request.setKeyspace(AsText(ks));
                    WhoToWire(readers, request.initReaders(readers.size()));
                    WhoToWire(writers, request.initWriters(writers.size()));
                    return request.send().then([](auto response) -> absl::StatusOr<bool> {
                      PEERKV_RETURN_IF_ERROR(ResponseStatus(response));
                      return true;
                    });
                  })
      .status();
}

absl::StatusOr<auth::Policy> Client::GetPolicy(std::string_view keyspace) {
  const std::string ks(keyspace);
  return impl_->Call<auth::Policy>(
      "getPolicy", [&](wire::Kv::Client& kv) -> kj::Promise<absl::StatusOr<auth::Policy>> {
        auto request = kv.getPolicyRequest();
        request.setKeyspace(AsText(ks));
        return request.send().then([](auto response) -> absl::StatusOr<auth::Policy> {
          PEERKV_RETURN_IF_ERROR(ResponseStatus(response));
          auto p = response.getPolicy();
          auth::Policy out;
          PEERKV_ASSIGN_OR_RETURN(out.owner,
                                  auth::ParseUserId(ToString(p.getOwner()), "server's owner"));
          PEERKV_ASSIGN_OR_RETURN(out.readers, WhoFromWire(p.getReaders()));
          PEERKV_ASSIGN_OR_RETURN(out.writers, WhoFromWire(p.getWriters()));
          out.time_ms = p.getTimeMs();
          PEERKV_ASSIGN_OR_RETURN(out.modes,
                                  auth::ParsePolicyModes(ToString(p.getModes()), "server's modes"));
          return out;
        });
      });
}

absl::Status Client::CreateGroup(std::string_view name) {
  return CallGroupChange("create", name, {});
}
absl::Status Client::AddToGroup(std::string_view name, const std::vector<auth::Member>& members) {
  return CallGroupChange("add", name, members);
}
absl::Status Client::RemoveFromGroup(std::string_view name, const auth::Member& member) {
  return CallGroupChange("remove", name, {member});
}

absl::Status Client::CallGroupChange(std::string_view op, std::string_view name,
                                     const std::vector<auth::Member>& members) {
  const std::string op_text(op), group(name);
  return impl_->Call<bool>(
                  "groupChange",
                  [&](wire::Kv::Client& kv) -> kj::Promise<absl::StatusOr<bool>> {
                    auto request = kv.groupChangeRequest();
                    request.setOp(AsText(op_text));
                    request.setName(AsText(group));
                    auto list = request.initMembers(members.size());
                    for (size_t i = 0; i < members.size(); ++i) {
                      const std::string text = auth::FormatMember(members[i]);
                      list.set(i, AsText(text));
                    }
                    return request.send().then([](auto response) -> absl::StatusOr<bool> {
                      PEERKV_RETURN_IF_ERROR(ResponseStatus(response));
                      return true;
                    });
                  })
      .status();
}

absl::StatusOr<std::vector<auth::Group>> Client::ListGroups(std::optional<std::string_view> name) {
  const std::string group(name.value_or(""));
  using Groups = std::vector<auth::Group>;
  return impl_->Call<Groups>(
      "listGroups", [&](wire::Kv::Client& kv) -> kj::Promise<absl::StatusOr<Groups>> {
        auto request = kv.listGroupsRequest();
        request.setName(AsText(group));
        return request.send().then([](auto response) -> absl::StatusOr<Groups> {
          PEERKV_RETURN_IF_ERROR(ResponseStatus(response));
          Groups out;
          for (auto g : response.getGroups()) {
            auth::Group group;
            group.name = ToString(g.getName());
            group.time_ms = g.getTimeMs();
            for (auto m : g.getMembers()) {
              PEERKV_ASSIGN_OR_RETURN(auth::Member member,
                                      auth::ParseMember(ToString(m), "server's member"));
              group.members.push_back(std::move(member));
            }
            out.push_back(std::move(group));
          }
          return out;
        });
      });
}

absl::Status Client::Watch(const WatchOptions& options, WatchCallback on_changes) {
  auto state = std::make_shared<WatchState>();
  state->on_changes = std::move(on_changes);
  PEERKV_RETURN_IF_ERROR(impl_->StartWatch(options, state));
  state->done.WaitForNotification();
  return state->status;
}

}  // namespace peerkv::rpc
