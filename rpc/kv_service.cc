// rpc/kv_service.cc: the Kv capability: reads answered on the loop
// straight from the store, writes answered once durable, watches that
// stream their keyspace's changes to a client's callback with one call in
// flight and a bounded number of bytes per connection.
#include <vector>

#include "absl/strings/str_format.h"
#include "auth/access_check.h"
#include "auth/ids.h"
#include "auth/policy.h"
#include "common/log.h"
#include "common/macros.h"
#include "consensus/strong_keyspaces.h"
#include "rpc/call_metrics.h"
#include "rpc/convert.h"
#include "rpc/server_loop.h"
#include "kj/debug.h"
#include "kj/vector.h"
#include "store/store.h"
#include "store/validation.h"

namespace peerkv::rpc {
namespace {

constexpr size_t kWatchBatchRecords = 1000;
constexpr uint32_t kDefaultScanLimit = 1000;

// One watch: reads its keyspace's changes after its cursor (see WatchHub)
// and calls the watcher with them, one call in flight at a time, each
// batch no larger than what its connection's window has free (see
// WatchWindow). Dropping the handle (or the connection) destroys it and
// cancels the pump.
class WatchSession final : public wire::WatchHandle::Server {
 public:
  WatchSession(ServerLoop& loop, kj::Own<WatchWindow> window, wire::Watcher::Client watcher,
               const std::string& keyspace, std::string prefix, uint64_t from_seq,
               auth::Principal who)
      : who_(who),
        keyspace_(keyspace),
        loop_(loop),
        window_(kj::mv(window)),
        watcher_(kj::mv(watcher)),
        subscription_(loop.watch_hub().Subscribe(keyspace, std::move(prefix))),
        cursor_(from_seq) {
    pump_ = Pump().eagerlyEvaluate([](kj::Exception&&) {
      // The watcher went away (client disconnected or dropped it): the
      // session ends; its handle is released with the connection.
    });
  }

  ~WatchSession() noexcept(false) {
    pump_ = nullptr;
    window_->Leave(this);
    window_->Release(charged_);
    loop_.watch_hub().WatchEnded();
  }

 private:
  // Waits for this watch's turn on the connection, then takes one step.
  kj::Promise<void> Pump() {
    return window_->Enter(this, whole_).then([this] {
      KJ_DEFER(window_->Leave(this));
      return Step();
    });
  }

  // Never calls Pump() synchronously: the turn ends when Step returns.
  kj::Promise<void> Step() {
    // A revocation ends the watch: nothing written after it is sent.
    const auth::Access* access = loop_.options().access.get();
    if (absl::Status allowed = auth::CheckRead(access, who_, keyspace_); !allowed.ok()) {
      auto request = watcher_.failedRequest();
      ToWire(allowed, request.initError());
      return request.send().ignoreResult();
    }
    const size_t room = std::min(window_->Room(), loop_.reply_budget());
    absl::StatusOr<Changes> changes =
        loop_.watch_hub().Read(*subscription_, cursor_, kWatchBatchRecords, room);
    if (!changes.ok()) {
      // Tell the client rather than go quiet: its Watch() ends with this.
      LogLine(absl::StrFormat("peerkv: watch stopped: %s", changes.status().ToString()));
      auto request = watcher_.failedRequest();
      ToWire(changes.status(), request.initError());
      return request.send().ignoreResult();
    }
    if (changes->records.empty()) {
      const bool advanced = changes->last_seq > cursor_;
      cursor_ = changes->last_seq;
      if (advanced) return kj::evalLater([this] { return Pump(); });
      return loop_.watch_hub().NextChange(*subscription_).then([this] { return Pump(); });
    }
    auto request = watcher_.changesRequest();
    auto list = request.initRecords(changes->records.size());
    for (size_t i = 0; i < changes->records.size(); ++i) ToWire(changes->records[i], list[i]);
    request.setLastSeq(changes->last_seq);
    const size_t bytes = request.totalSize().wordCount * sizeof(capnp::word);
    if (bytes > room && !window_->Idle()) {
      // One record larger than the free room: it goes alone, once nothing
      // else of this connection is in flight. Read again then.
      whole_ = true;
      return kj::evalLater([this] { return Pump(); });
    }
    whole_ = false;
    cursor_ = changes->last_seq;
    window_->Charge(bytes);
    charged_ = bytes;
    return request.send().then(
        [this](auto&&) {
          Uncharge();
          return Pump();
        },
        [this](kj::Exception&& e) -> kj::Promise<void> {
          Uncharge();
          return kj::mv(e);
        });
  }

  void Uncharge() {
    window_->Release(charged_);
    charged_ = 0;
  }

  const auth::Principal who_;
  const std::string keyspace_;
  ServerLoop& loop_;
  kj::Own<WatchWindow> window_;
  wire::Watcher::Client watcher_;
  std::unique_ptr<WatchHub::Subscription> subscription_;
  uint64_t cursor_;
  // Bytes of the call in flight, counted in the window.
  size_t charged_ = 0;
  // Waiting for the whole window (a record larger than the free room).
  bool whole_ = false;
  kj::Promise<void> pump_ = nullptr;
};

class KvImpl final : public wire::Kv::Server {
 public:
  KvImpl(ServerLoop& loop, std::string peer, kj::Own<WatchWindow> watch_window,
         auth::Principal who)
      : loop_(loop),
        peer_(std::move(peer)),
        watch_window_(kj::mv(watch_window)),
        who_(who),
        access_(loop.options().access.get()) {}

  // Every call counted and timed by method and outcome (rpc/call_metrics.h),
  // before its answer is sent.
  DispatchCallResult dispatchCall(
      uint64_t interface_id, uint16_t method_id,
      capnp::CallContext<capnp::AnyPointer, capnp::AnyPointer> context) override {
    const absl::Time start = absl::Now();
    DispatchCallResult call = wire::Kv::Server::dispatchCall(interface_id, method_id, context);
    call.promise = call.promise.then(
        [method_id, context, start]() mutable -> kj::Promise<void> {
          CountKvCall(method_id, context.getResults(), start);
          return kj::READY_NOW;
        },
        [method_id, start](kj::Exception&& e) -> kj::Promise<void> {
          CountKvCallException(method_id, start);
          return kj::mv(e);
        });
    return call;
  }

  kj::Promise<void> get(GetContext context) override {
    auto params = context.getParams();
    auto keyspace = params.getKeyspace();
    auto key = params.getKey();
    if (absl::Status allowed = MayRead(View(keyspace)); !allowed.ok()) {
      Fail("get", allowed, context.getResults().initError());
      return kj::READY_NOW;
    }
    if (strong() != nullptr && strong()->IsStrong(View(keyspace))) {
      // Linearizable: through the consensus service, on a worker.
      return StrongRead(ToString(keyspace), ToString(key), false)
          .then([this, context](absl::StatusOr<consensus::StrongRead> read) mutable {
            auto results = context.getResults();
            if (!read.ok()) return Fail("get", read.status(), results.initError());
            if (!read->record.has_value()) return;
            results.setFound(true);
            ToWire(*read->record, results.initRecord());
          });
    }
    // Copy the record straight from the store's map into the reply.
    absl::Status status = loop_.store().GetView(
        View(keyspace), View(key),
        [&context](const RecordView* view) {
          if (view == nullptr) return;
          auto results = context.getResults(capnp::MessageSize{
              (view->keyspace.size() + view->key.size() + view->value.size()) / 8 + 24, 0});
          results.setFound(true);
          ToWire(*view, results.initRecord());
        });
    if (!status.ok()) Fail("get", status, context.getResults().initError());
    return kj::READY_NOW;
  }

  kj::Promise<void> put(PutContext context) override {
    std::vector<Mutation> batch;
    batch.push_back(FromWire(context.getParams()));
    if (absl::Status allowed = MayWrite(batch.front().keyspace); !allowed.ok()) {
      Fail("put", allowed, context.getResults(capnp::MessageSize{8, 0}).initError());
      return kj::READY_NOW;
    }
    if (IsStrongOrReserved(batch.front())) {
      return StrongWrite(std::move(batch.front()), consensus::Precondition{})
          .then([this, context](absl::StatusOr<Version> version) mutable {
            auto results = context.getResults(capnp::MessageSize{8, 0});
            if (!version.ok()) return Fail("put", version.status(), results.initError());
            ToWire(*version, results.initVersion());
          });
    }
    return loop_.Write(std::move(batch))
        .then([this, context](absl::StatusOr<std::vector<Version>> versions) mutable {
          auto results = context.getResults(capnp::MessageSize{8, 0});
          if (!versions.ok()) return Fail("put", versions.status(), results.initError());
          ToWire(versions->front(), results.initVersion());
        });
  }

  kj::Promise<void> delete_(DeleteContext context) override {
    std::vector<Mutation> batch;
    batch.push_back(FromWire(context.getParams()));
    if (absl::Status allowed = MayWrite(batch.front().keyspace); !allowed.ok()) {
      Fail("delete", allowed, context.getResults(capnp::MessageSize{8, 0}).initError());
      return kj::READY_NOW;
    }
    if (IsStrongOrReserved(batch.front())) {
      return StrongWrite(std::move(batch.front()), consensus::Precondition{})
          .then([this, context](absl::StatusOr<Version> version) mutable {
            auto results = context.getResults(capnp::MessageSize{8, 0});
            if (!version.ok()) return Fail("delete", version.status(), results.initError());
            ToWire(*version, results.initVersion());
          });
    }
    return loop_.Write(std::move(batch))
        .then([this, context](absl::StatusOr<std::vector<Version>> versions) mutable {
          auto results = context.getResults(capnp::MessageSize{8, 0});
          if (!versions.ok()) return Fail("delete", versions.status(), results.initError());
          ToWire(versions->front(), results.initVersion());
        });
  }

  kj::Promise<void> scan(ScanContext context) override {
    auto params = context.getParams();
    if (absl::Status allowed = MayRead(View(params.getKeyspace())); !allowed.ok()) {
      Fail("scan", allowed, context.getResults().initError());
      return kj::READY_NOW;
    }
    ScanOptions options = FromWire(params);
    if (options.limit == 0) options.limit = kDefaultScanLimit;
    options.max_bytes = loop_.reply_budget() / 2;
    options.limit = std::min<size_t>(options.limit, loop_.reply_items());
    absl::StatusOr<ScanResult> page =
        loop_.store().Scan(View(params.getKeyspace()), options);
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
    for (auto m : mutations) batch.push_back(FromWire(m));
    for (const Mutation& m : batch) {
      if (absl::Status allowed = MayWrite(m.keyspace); !allowed.ok()) {
        Fail("writeBatch", allowed, context.getResults().initError());
        return kj::READY_NOW;
      }
      if (IsStrongOrReserved(m)) {
        Fail("writeBatch", BatchRefusal(m), context.getResults().initError());
        return kj::READY_NOW;
      }
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
    if (absl::Status allowed = MayRead(keyspace); !allowed.ok()) {
      Fail("watch", allowed, results.initError());
      return kj::READY_NOW;
    }
    results.setMaxSeq(loop_.store().max_seq());
    results.setHandle(kj::heap<WatchSession>(loop_, kj::addRef(*watch_window_),
                                             params.getWatcher(), keyspace, prefix,
                                             params.getFromSeq(), who_));
    return kj::READY_NOW;
  }

  kj::Promise<void> getMany(GetManyContext context) override {
    auto gets = context.getParams().getGets();
    if (gets.size() > loop_.reply_items()) {
      Fail("getMany",
           absl::InvalidArgumentError(absl::StrFormat(
               "getMany carries %d gets; the limit is %d", gets.size(), loop_.reply_items())),
           context.getResults().initError());
      return kj::READY_NOW;
    }
    auto results = context.getResults().initResults(gets.size());
    // The answer must fit in what the server may send: every result's
    // framing is reserved up front, values fill the rest, and gets past
    // that are refused (they can be asked again).
    const size_t budget = loop_.reply_budget();
    size_t bytes = gets.size() * 128;
    uint64_t refused = 0;
    absl::Status first_refusal;
    for (size_t i = 0; i < gets.size(); ++i) {
      if (bytes >= budget) {
        ToWire(absl::ResourceExhaustedError("answer full; ask again"), results[i].initError());
        continue;
      }
      auto keyspace = gets[i].getKeyspace();
      auto key = gets[i].getKey();
      auto out = results[i];
      if (absl::Status allowed = MayRead(View(keyspace)); !allowed.ok()) {
        if (refused++ == 0) first_refusal = allowed;
        ToWire(allowed, out.initError());
        continue;
      }
      absl::Status status = loop_.store().GetView(
          View(keyspace), View(key),
          [&out, &bytes, budget](const RecordView* view) {
            if (view == nullptr) return;
            const size_t size = view->keyspace.size() + view->key.size() + view->value.size();
            if (bytes + size > budget) {
              bytes = budget;
              ToWire(absl::ResourceExhaustedError("answer full; ask again"), out.initError());
              return;
            }
            bytes += size;
            out.setFound(true);
            ToWire(*view, out.initRecord());
          });
      if (!status.ok()) {
        if (refused++ == 0) first_refusal = status;
        ToWire(status, out.initError());
      }
    }
    // One log line for the call, not one per refused get.
    if (refused > 0) loop_.LogRejected(peer_, "getMany", first_refusal, refused);
    return kj::READY_NOW;
  }

  kj::Promise<void> putMany(PutManyContext context) override {
    auto mutations = context.getParams().getMutations();
    if (mutations.size() > loop_.reply_items()) {
      Fail("putMany",
           absl::InvalidArgumentError(absl::StrFormat("putMany carries %d writes; the limit is %d",
                                                      mutations.size(), loop_.reply_items())),
           context.getResults().initError());
      return kj::READY_NOW;
    }
    // Each write stands alone: the invalid ones are answered at once, the
    // valid ones go to the store together (one durable commit).
    std::vector<Mutation> valid;
    std::vector<uint32_t> slots;
    uint64_t invalid = 0;
    absl::Status first_invalid;
    auto results = context.getResults().initResults(mutations.size());
    for (uint32_t i = 0; i < mutations.size(); ++i) {
      Mutation mutation = FromWire(mutations[i]);
      absl::Status ok = ValidateMutation(mutation, loop_.store().options().max_value_bytes);
      if (ok.ok()) ok = MayWrite(mutation.keyspace);
      if (ok.ok() && IsStrongOrReserved(mutation)) ok = BatchRefusal(mutation);
      if (!ok.ok()) {
        if (invalid++ == 0) first_invalid = ok;
        ToWire(ok, results[i].initError());
        continue;
      }
      valid.push_back(std::move(mutation));
      slots.push_back(i);
    }
    // One log line for the call, not one per invalid write.
    if (invalid > 0) loop_.LogRejected(peer_, "putMany", first_invalid, invalid);
    if (valid.empty()) return kj::READY_NOW;
    // The store takes at most kMaxBatchRecords per write call.
    kj::Vector<kj::Promise<void>> chunks;
    for (size_t begin = 0; begin < valid.size(); begin += kMaxBatchRecords) {
      const size_t end = std::min(valid.size(), begin + kMaxBatchRecords);
      std::vector<Mutation> chunk(std::make_move_iterator(valid.begin() + begin),
                                  std::make_move_iterator(valid.begin() + end));
      std::vector<uint32_t> chunk_slots(slots.begin() + begin, slots.begin() + end);
      chunks.add(loop_.Write(std::move(chunk))
                     .then([this, context, chunk_slots = std::move(chunk_slots)](
                               absl::StatusOr<std::vector<Version>> versions) mutable {
                       auto results = context.getResults().getResults();
                       if (!versions.ok()) {
                         loop_.LogRejected(peer_, "putMany", versions.status(),
                                           chunk_slots.size());
                       }
                       for (size_t j = 0; j < chunk_slots.size(); ++j) {
                         if (versions.ok()) {
                           ToWire((*versions)[j], results[chunk_slots[j]].initVersion());
                         } else {
                           ToWire(versions.status(), results[chunk_slots[j]].initError());
                         }
                       }
                     }));
    }
    return kj::joinPromises(chunks.releaseAsArray());
  }

  kj::Promise<void> reconcile(ReconcileContext context) override {
    if (absl::Status allowed = LocalOnly("reconcile"); !allowed.ok()) {
      Fail("reconcile", allowed, context.getResults().initError());
      return kj::READY_NOW;
    }
    const std::string peer = ToString(context.getParams().getPeer());
    if (loop_.events() == nullptr) {
      Fail("reconcile", absl::FailedPreconditionError("this server does not replicate"),
           context.getResults().initError());
      return kj::READY_NOW;
    }
    if (peer.empty() || peer.size() > 256) {
      Fail("reconcile",
           absl::InvalidArgumentError(absl::StrFormat(
               "peer is %d bytes; give a name, address or replica id of 1..256", peer.size())),
           context.getResults().initError());
      return kj::READY_NOW;
    }
    auto paf = kj::newPromiseAndCrossThreadFulfiller<absl::StatusOr<replication::ReconcileReport>>();
    loop_.events()->Reconcile(
        peer, [fulfiller = kj::mv(paf.fulfiller)](
                  absl::StatusOr<replication::ReconcileReport> report) mutable {
          fulfiller->fulfill(kj::mv(report));
        });
    return paf.promise.then(
        [this, context](absl::StatusOr<replication::ReconcileReport> report) mutable {
          auto results = context.getResults();
          if (!report.ok()) return Fail("reconcile", report.status(), results.initError());
          ToWire(*report, results.initReport());
        });
  }

  kj::Promise<void> forgetPeer(ForgetPeerContext context) override {
    if (absl::Status allowed = LocalOnly("forgetPeer"); !allowed.ok()) {
      Fail("forgetPeer", allowed, context.getResults().initError());
      return kj::READY_NOW;
    }
    const std::string peer = ToString(context.getParams().getPeer());
    auto results = context.getResults();
    if (peer.empty() || peer.size() > 256) {
      Fail("forgetPeer",
           absl::InvalidArgumentError(absl::StrFormat(
               "peer is %d bytes; give a name, address or replica id of 1..256", peer.size())),
           results.initError());
      return kj::READY_NOW;
    }
    // A peer linked now (or known to the engine) by name, address or id; or
    // any replica id, linked or not (a peer gone since this server started).
    uint64_t id = 0;
    for (const PeerStatus& p : loop_.PeerStatuses()) {
      if ((!p.name.empty() && p.name == peer) || (!p.address.empty() && p.address == peer) ||
          (p.replica_id != 0 && ReplicaIdToString(p.replica_id) == peer)) {
        id = p.replica_id;
      }
    }
    uint64_t parsed = 0;
    if (id == 0 && absl::SimpleHexAtoi(peer, &parsed) && ReplicaIdToString(parsed) == peer) {
      id = parsed;
    }
    if (id == 0) {
      Fail("forgetPeer",
           absl::NotFoundError(absl::StrFormat(
               "no peer named '%s' (give a name, address or replica id as status shows it)",
               peer)),
           results.initError());
      return kj::READY_NOW;
    }
    // A commit on the store's writer: off the loop, like the journal calls.
    Store* store = &loop_.store();
    return loop_.OffLoop<absl::Status>([store, id] { return store->ForgetPeer(id); })
        .then([this, context, id](absl::Status forgotten) mutable {
          auto results = context.getResults();
          if (!forgotten.ok()) return Fail("forgetPeer", forgotten, results.initError());
          results.setReplicaId(id);
        });
  }

  kj::Promise<void> compact(CompactContext context) override {
    if (absl::Status allowed = LocalOnly("compact"); !allowed.ok()) {
      Fail("compact", allowed, context.getResults().initError());
      return kj::READY_NOW;
    }
    // Store::Compact validates the keyspace. A pass and a repack, each step
    // a commit on the store's writer: off the loop, like forgetPeer.
    std::string keyspace = ToString(context.getParams().getKeyspace());
    Store* store = &loop_.store();
    return loop_
        .OffLoop<absl::StatusOr<CompactResult>>(
            [store, keyspace = std::move(keyspace)] { return store->Compact(keyspace); })
        .then([this, context](absl::StatusOr<CompactResult> done) mutable {
          auto results = context.getResults();
          if (!done.ok()) return Fail("compact", done.status(), results.initError());
          results.setTombstonesCollected(done->tombstones_collected);
          results.setLogEntriesCompacted(done->log_entries_compacted);
          results.setEntriesCopied(done->entries_copied);
          results.setPagesBefore(done->pages_before);
          results.setPagesAfter(done->pages_after);
        });
  }

  kj::Promise<void> status(StatusContext context) override {
    if (absl::Status allowed = LocalOnly("status"); !allowed.ok()) {
      Fail("status", allowed, context.getResults().initError());
      return kj::READY_NOW;
    }
    auto results = context.getResults();
    absl::StatusOr<StoreStats> stats = loop_.store().Stats();
    if (!stats.ok()) {
      Fail("status", stats.status(), results.initError());
      return kj::READY_NOW;
    }
    ServerStatus s;
    static_cast<StoreStats&>(s) = *stats;
    s.replica_name = loop_.options().replica_name;
    s.data_dir = loop_.store().options().dir;
    s.max_value_bytes = loop_.store().options().max_value_bytes;
    s.uptime_ms = absl::ToInt64Milliseconds(absl::Now() - loop_.started());
    s.connected_clients = loop_.connections();
    s.clones_refused = loop_.ReplicationCounters().clones_refused;
    std::vector<PeerStatus> peers = loop_.PeerStatuses();
    // The answer must stay within what this server may send, however many
    // peers there are and whatever they said: list peers while they fit
    // (with room for the fixed fields and framing), count the rest.
    const size_t budget = loop_.reply_budget();
    size_t bytes = 4096 + s.data_dir.size() + s.replica_name.size();
    size_t listed = 0;
    for (; listed < peers.size(); ++listed) {
      const PeerStatus& p = peers[listed];
      const size_t size = 128 + p.name.size() + p.address.size() + p.last_error.size();
      if (bytes + size > budget) break;
      bytes += size;
    }
    s.peers_omitted = static_cast<uint32_t>(peers.size() - listed);
    peers.resize(listed);
    s.peers = std::move(peers);
    ToWire(s, results.initStatus());
    return kj::READY_NOW;
  }

  kj::Promise<void> writeIf(WriteIfContext context) override {
    auto params = context.getParams();
    Mutation mutation = FromWire(params.getMutation());
    consensus::Precondition precondition;
    if (absl::Status allowed = MayWrite(mutation.keyspace); !allowed.ok()) {
      Fail("writeIf", allowed, context.getResults().initError());
      return kj::READY_NOW;
    }
    auto condition = params.getCondition();
    switch (condition.getKind()) {
      case 0:
        break;
      case 1:
        precondition.kind = consensus::Precondition::Kind::kIfAbsent;
        break;
      case 2:
        precondition.kind = consensus::Precondition::Kind::kIfVersion;
        precondition.version = FromWire(condition.getVersion());
        break;
      default:
        Fail("writeIf",
             absl::InvalidArgumentError(absl::StrFormat(
                 "condition.kind is %d; it must be 0 (none), 1 (if absent) or 2 (if version)",
                 condition.getKind())),
             context.getResults().initError());
        return kj::READY_NOW;
    }
    if (precondition.kind == consensus::Precondition::Kind::kIfVersion &&
        !precondition.version.IsValid()) {
      Fail("writeIf",
           absl::InvalidArgumentError("condition.version must have a non-zero clock and origin"),
           context.getResults().initError());
      return kj::READY_NOW;
    }
    return StrongWrite(std::move(mutation), precondition)
        .then([this, context](absl::StatusOr<Version> version) mutable {
          auto results = context.getResults(capnp::MessageSize{8, 0});
          if (!version.ok()) return Fail("writeIf", version.status(), results.initError());
          ToWire(*version, results.initVersion());
        });
  }

  kj::Promise<void> getStrong(GetStrongContext context) override {
    auto params = context.getParams();
    if (absl::Status allowed = MayRead(View(params.getKeyspace())); !allowed.ok()) {
      Fail("getStrong", allowed, context.getResults().initError());
      return kj::READY_NOW;
    }
    return StrongRead(ToString(params.getKeyspace()), ToString(params.getKey()),
                      params.getStaleOk())
        .then([this, context](absl::StatusOr<consensus::StrongRead> read) mutable {
          auto results = context.getResults();
          if (!read.ok()) return Fail("getStrong", read.status(), results.initError());
          results.setStale(read->stale);
          results.setStalenessMs(read->staleness == absl::InfiniteDuration()
                                     ? -1
                                     : absl::ToInt64Milliseconds(read->staleness));
          if (!read->record.has_value()) return;
          results.setFound(true);
          ToWire(*read->record, results.initRecord());
        });
  }

  kj::Promise<void> setMode(SetModeContext context) override {
    if (absl::Status allowed = LocalOnly("setMode"); !allowed.ok()) {
      Fail("setMode", allowed, context.getResults().initError());
      return kj::READY_NOW;
    }
    auto params = context.getParams();
    const std::string keyspace = ToString(params.getKeyspace());
    // The mode belongs to the keyspace's owner (README "Strong keyspaces").
    if (absl::Status owner = MaySwitchMode(keyspace); !owner.ok()) {
      Fail("setMode", owner, context.getResults().initError());
      return kj::READY_NOW;
    }
    absl::StatusOr<consensus::Mode> mode = consensus::ParseMode(ToString(params.getMode()), "mode");
    if (!mode.ok() || strong() == nullptr) {
      Fail("setMode", mode.ok() ? NoStrong() : mode.status(), context.getResults().initError());
      return kj::READY_NOW;
    }
    consensus::StrongKeyspaces* layer = strong();
    return OnWorker<Version>([layer, keyspace, mode = *mode] {
             return layer->SetMode(keyspace, mode);
           })
        .then([this, context](absl::StatusOr<Version> since) mutable {
          auto results = context.getResults(capnp::MessageSize{8, 0});
          if (!since.ok()) return Fail("setMode", since.status(), results.initError());
          ToWire(*since, results.initSince());
        });
  }

  kj::Promise<void> listModes(ListModesContext context) override {
    if (absl::Status allowed = LocalOnly("listModes"); !allowed.ok()) {
      Fail("listModes", allowed, context.getResults().initError());
      return kj::READY_NOW;
    }
    auto results = context.getResults();
    if (strong() == nullptr) {
      Fail("listModes", NoStrong(), results.initError());
      return kj::READY_NOW;
    }
    absl::StatusOr<std::vector<consensus::KeyspaceMode>> modes = strong()->List();
    if (!modes.ok()) {
      Fail("listModes", modes.status(), results.initError());
      return kj::READY_NOW;
    }
    const size_t n = std::min(modes->size(), loop_.reply_items());
    auto list = results.initKeyspaces(n);
    for (size_t i = 0; i < n; ++i) {
      const consensus::KeyspaceMode& m = (*modes)[i];
      list[i].setKeyspace(AsText(m.keyspace));
      list[i].setStrong(m.mode == consensus::Mode::kStrong);
      ToWire(m.since, list[i].initSince());
      list[i].setSwitches(m.switches);
      list[i].setRegisters(m.registers);
    }
    return kj::READY_NOW;
  }

  kj::Promise<void> listConflicts(ListConflictsContext context) override {
    auto params = context.getParams();
    const std::string keyspace = ToString(params.getKeyspace());
    if (absl::Status allowed = MayRead(keyspace); !allowed.ok()) {
      Fail("listConflicts", allowed, context.getResults().initError());
      return kj::READY_NOW;
    }
    std::optional<std::string> key;
    if (params.getByKey()) key = ToString(params.getKey());
    absl::StatusOr<ConflictList> list = loop_.store().ListConflicts(keyspace, key);
    auto results = context.getResults();
    if (!list.ok()) {
      Fail("listConflicts", list.status(), results.initError());
      return kj::READY_NOW;
    }
    // Within this server's reply limits: the oldest that fit.
    const size_t budget = loop_.reply_budget() / 2;
    size_t n = 0, bytes = 0;
    for (; n < list->entries.size() && n < loop_.reply_items(); ++n) {
      const ConflictEntry& e = list->entries[n];
      const size_t entry_bytes = e.key.size() + e.loser_value.size() + 64;
      if (n > 0 && bytes + entry_bytes > budget) break;
      bytes += entry_bytes;
    }
    auto entries = results.initEntries(n);
    for (size_t i = 0; i < n; ++i) ToWire(list->entries[i], entries[i]);
    results.setMore(list->more || n < list->entries.size());
    return kj::READY_NOW;
  }

  kj::Promise<void> restoreConflict(RestoreConflictContext context) override {
    auto params = context.getParams();
    std::string keyspace = ToString(params.getKeyspace());
    std::string key = ToString(params.getKey());
    const Version version = FromWire(params.getVersion());
    if (absl::Status allowed = MayWrite(keyspace); !allowed.ok()) {
      Fail("restoreConflict", allowed, context.getResults().initError());
      return kj::READY_NOW;
    }
    Store* store = &loop_.store();
    // A write and a journal change: waits for the store's writer, so off
    // the loop.
    return loop_
        .OffLoop<absl::StatusOr<Version>>(
            [store, keyspace = std::move(keyspace), key = std::move(key), version] {
              return store->RestoreConflict(keyspace, key, version);
            })
        .then([this, context](absl::StatusOr<Version> restored) mutable {
          auto results = context.getResults(capnp::MessageSize{8, 0});
          if (!restored.ok()) {
            return Fail("restoreConflict", restored.status(), results.initError());
          }
          ToWire(*restored, results.initVersion());
        });
  }

  kj::Promise<void> clearConflicts(ClearConflictsContext context) override {
    std::string keyspace = ToString(context.getParams().getKeyspace());
    if (absl::Status allowed = MayWrite(keyspace); !allowed.ok()) {
      Fail("clearConflicts", allowed, context.getResults().initError());
      return kj::READY_NOW;
    }
    Store* store = &loop_.store();
    return loop_
        .OffLoop<absl::StatusOr<uint64_t>>(
            [store, keyspace = std::move(keyspace)] { return store->ClearConflicts(keyspace); })
        .then([this, context](absl::StatusOr<uint64_t> cleared) mutable {
          auto results = context.getResults(capnp::MessageSize{8, 0});
          if (!cleared.ok()) return Fail("clearConflicts", cleared.status(), results.initError());
          results.setCleared(*cleared);
        });
  }

  // Groups and policies: done off the loop (they wait for the writer),
  // with the server's user key; only for the local user.
  kj::Promise<void> setPolicy(SetPolicyContext context) override {
    auto params = context.getParams();
    std::string keyspace = ToString(params.getKeyspace());
    std::vector<auth::Who> readers, writers;
    absl::Status parsed = LocalOnly("setPolicy");
    if (parsed.ok()) parsed = ParseWhoList(params.getReaders(), "--read", readers);
    if (parsed.ok()) parsed = ParseWhoList(params.getWriters(), "--write", writers);
    if (parsed.ok()) parsed = NeedIdentity();
    if (!parsed.ok()) {
      Fail("setPolicy", parsed, context.getResults().initError());
      return kj::READY_NOW;
    }
    const auth::Identity* identity = loop_.options().identity;
    Store* store = &loop_.store();
    return loop_
        .OffLoop<absl::Status>([identity, store, keyspace = std::move(keyspace),
                                readers = std::move(readers),
                                writers = std::move(writers)]() mutable {
          return auth::SetPolicy(*identity, *store, keyspace, std::move(readers),
                                 std::move(writers), absl::ToUnixMillis(absl::Now()));
        })
        .then([this, context](absl::Status done) mutable {
          if (!done.ok()) Fail("setPolicy", done, context.getResults().initError());
        });
  }

  kj::Promise<void> getPolicy(GetPolicyContext context) override {
    const std::string keyspace = ToString(context.getParams().getKeyspace());
    auto results = context.getResults();
    if (absl::Status allowed = MayRead(keyspace); !allowed.ok()) {
      Fail("getPolicy", allowed, results.initError());
      return kj::READY_NOW;
    }
    absl::StatusOr<auth::Policy> policy = auth::GetPolicy(loop_.store(), keyspace);
    if (!policy.ok()) {
      Fail("getPolicy", policy.status(), results.initError());
      return kj::READY_NOW;
    }
    auto out = results.initPolicy();
    const std::string owner = auth::UserId(policy->owner);
    out.setOwner(AsText(owner));
    WhoToWire(policy->readers, out.initReaders(policy->readers.size()));
    WhoToWire(policy->writers, out.initWriters(policy->writers.size()));
    out.setTimeMs(policy->time_ms);
    const std::string modes = auth::FormatPolicyModes(policy->modes);
    out.setModes(AsText(modes));
    return kj::READY_NOW;
  }

  kj::Promise<void> groupChange(GroupChangeContext context) override {
    auto params = context.getParams();
    const std::string op = ToString(params.getOp());
    std::string name = ToString(params.getName());
    std::vector<auth::Member> members;
    absl::Status parsed = LocalOnly("groupChange");
    if (parsed.ok()) parsed = NeedIdentity();
    if (parsed.ok() && params.getMembers().size() > auth::kMaxGroupMembers) {
      parsed = absl::InvalidArgumentError(absl::StrFormat(
          "groupChange carries %d members; the limit is %d", params.getMembers().size(),
          auth::kMaxGroupMembers));
    }
    for (auto m : params.getMembers()) {
      if (!parsed.ok()) break;
      absl::StatusOr<auth::Member> member = auth::ParseMember(View(m), "USER_ID");
      if (!member.ok()) {
        parsed = member.status();
      } else {
        members.push_back(std::move(*member));
      }
    }
    if (parsed.ok()) {
      const size_t n = members.size();
      if (op == "create" && n != 0) {
        parsed = absl::InvalidArgumentError("group create takes no members");
      } else if (op == "add" && n == 0) {
        parsed = absl::InvalidArgumentError("group add needs at least one USER_ID");
      } else if (op == "remove" && n != 1) {
        parsed = absl::InvalidArgumentError("group remove takes exactly one USER_ID");
      } else if (op != "create" && op != "add" && op != "remove") {
        parsed = absl::InvalidArgumentError(absl::StrFormat(
            "op is '%s'; it must be create, add or remove", op.substr(0, 32)));
      }
    }
    if (!parsed.ok()) {
      Fail("groupChange", parsed, context.getResults().initError());
      return kj::READY_NOW;
    }
    const auth::Identity* identity = loop_.options().identity;
    Store* store = &loop_.store();
    return loop_
        .OffLoop<absl::Status>([identity, store, op, name = std::move(name),
                                members = std::move(members)] {
          const int64_t now = absl::ToUnixMillis(absl::Now());
          if (op == "create") return auth::CreateGroup(*identity, *store, name, now);
          if (op == "add") return auth::AddToGroup(*identity, *store, name, members, now);
          return auth::RemoveFromGroup(*identity, *store, name, members.front(), now);
        })
        .then([this, context](absl::Status done) mutable {
          if (!done.ok()) Fail("groupChange", done, context.getResults().initError());
        });
  }

  kj::Promise<void> listGroups(ListGroupsContext context) override {
    const std::string name = ToString(context.getParams().getName());
    auto results = context.getResults();
    absl::Status allowed = LocalOnly("listGroups");
    if (allowed.ok()) allowed = NeedIdentity();
    if (!allowed.ok()) {
      Fail("listGroups", allowed, results.initError());
      return kj::READY_NOW;
    }
    absl::StatusOr<std::vector<auth::Group>> groups =
        auth::ListGroups(*loop_.options().identity, loop_.store(),
                         name.empty() ? std::nullopt : std::optional<std::string_view>(name));
    if (!groups.ok()) {
      Fail("listGroups", groups.status(), results.initError());
      return kj::READY_NOW;
    }
    auto list = results.initGroups(groups->size());
    for (size_t i = 0; i < groups->size(); ++i) {
      const auth::Group& g = (*groups)[i];
      list[i].setName(AsText(g.name));
      list[i].setTimeMs(g.time_ms);
      auto members = list[i].initMembers(g.members.size());
      for (size_t j = 0; j < g.members.size(); ++j) {
        const std::string text = auth::FormatMember(g.members[j]);
        members.set(j, AsText(text));
      }
    }
    return kj::READY_NOW;
  }

 private:
  consensus::StrongKeyspaces* strong() const { return loop_.options().strong; }

  // Access checks (README "Groups and policies"). A refused read says the
  // same whether or not the keyspace exists; names that fail validation
  // are answered by the validation (it reveals nothing held here).
  // (auth/access_check.h: the same checks as the HTTP and RESP front ends.)
  absl::Status MayRead(std::string_view keyspace) const {
    return auth::CheckRead(access_, who_, keyspace);
  }
  absl::Status MayWrite(std::string_view keyspace) const {
    return auth::CheckWrite(access_, who_, keyspace);
  }
  // Calls that show or change more than one keyspace: the local user's.
  absl::Status LocalOnly(std::string_view method) const {
    if (access_ == nullptr || who_.local_user) return absl::OkStatus();
    return absl::PermissionDeniedError(absl::StrFormat(
        "user %s may not call %s: it is for the owner's devices", auth::UserId(who_.user),
        method));
  }
  // Only the owner of a keyspace (the signer of its policy; without a
  // policy, the local user) may switch its mode.
  absl::Status MaySwitchMode(std::string_view keyspace) const {
    if (access_ == nullptr) return absl::OkStatus();
    std::optional<auth::PublicKey> owner = access_->OwnerOf(keyspace);
    if (!owner.has_value() || *owner == who_.user) return absl::OkStatus();
    return absl::PermissionDeniedError(absl::StrFormat(
        "keyspace '%s' is owned by user %s (its policy is signed by that user); only its "
        "owner may switch its mode, and user %s is not its owner",
        keyspace, auth::UserId(*owner), auth::UserId(who_.user)));
  }
  absl::Status NeedIdentity() const {
    if (loop_.options().identity != nullptr) return absl::OkStatus();
    return absl::FailedPreconditionError(
        "this server has no identity to sign policies and groups with (start it with "
        "`peerkv serve`)");
  }
  static absl::Status ParseWhoList(capnp::List<capnp::Text>::Reader list, std::string_view what,
                                   std::vector<auth::Who>& out) {
    if (list.size() > auth::kMaxPolicyEntries) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s is given %d times; the limit is %d", what, list.size(), auth::kMaxPolicyEntries));
    }
    for (auto text : list) {
      PEERKV_ASSIGN_OR_RETURN(auth::Who who, auth::ParseWho(View(text), what));
      out.push_back(std::move(who));
    }
    return absl::OkStatus();
  }
  static void WhoToWire(const std::vector<auth::Who>& who,
                        capnp::List<capnp::Text>::Builder list) {
    for (size_t i = 0; i < who.size(); ++i) {
      const std::string text = auth::FormatWho(who[i]);
      list.set(i, AsText(text));
    }
  }

  static absl::Status NoStrong() {
    return absl::FailedPreconditionError(
        "this server has no strong keyspaces (it was not started by `peerkv serve`)");
  }

  bool IsStrongOrReserved(const Mutation& m) const {
    return strong() != nullptr &&
           (consensus::IsReservedKeyspace(m.keyspace) || strong()->IsStrong(m.keyspace));
  }

  absl::Status BatchRefusal(const Mutation& m) const {
    if (consensus::IsReservedKeyspace(m.keyspace)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "keyspace '%s' is reserved (names starting with '%s' are the system's own)",
          m.keyspace, consensus::kReservedPrefix));
    }
    return absl::FailedPreconditionError(absl::StrFormat(
        "keyspace '%s' is strong: batches cannot hold strong writes; write them one by one "
        "(put/del)",
        m.keyspace));
  }

  // Runs `fn` on a strong-keyspace worker (it blocks on the consensus
  // service) and answers on this loop.
  template <typename T>
  kj::Promise<absl::StatusOr<T>> OnWorker(absl::AnyInvocable<absl::StatusOr<T>()> fn) {
    auto paf = kj::newPromiseAndCrossThreadFulfiller<absl::StatusOr<T>>();
    struct Task {
      kj::Own<kj::CrossThreadPromiseFulfiller<absl::StatusOr<T>>> fulfiller;
      absl::AnyInvocable<absl::StatusOr<T>()> fn;
    };
    auto task = std::make_shared<Task>(Task{kj::mv(paf.fulfiller), std::move(fn)});
    if (!strong()->Submit([task] { task->fulfiller->fulfill(task->fn()); })) {
      return absl::StatusOr<T>(absl::ResourceExhaustedError(
          "too many strong-keyspace calls wait for the consensus service; try again"));
    }
    return kj::mv(paf.promise);
  }

  kj::Promise<absl::StatusOr<Version>> StrongWrite(Mutation mutation,
                                                   consensus::Precondition precondition) {
    if (strong() == nullptr) return absl::StatusOr<Version>(NoStrong());
    consensus::StrongKeyspaces* layer = strong();
    return OnWorker<Version>([layer, mutation = std::move(mutation), precondition] {
      return layer->Write(mutation, precondition);
    });
  }

  kj::Promise<absl::StatusOr<consensus::StrongRead>> StrongRead(std::string keyspace,
                                                                std::string key, bool stale_ok) {
    if (strong() == nullptr) {
      return absl::StatusOr<consensus::StrongRead>(NoStrong());
    }
    consensus::StrongKeyspaces* layer = strong();
    return OnWorker<consensus::StrongRead>(
        [layer, keyspace = std::move(keyspace), key = std::move(key), stale_ok] {
          return layer->Read(keyspace, key, stale_ok);
        });
  }

  void Fail(std::string_view method, const absl::Status& status, wire::Error::Builder error) {
    loop_.LogRejected(peer_, method, status);
    ToWire(status, error);
  }

  ServerLoop& loop_;
  const std::string peer_;
  kj::Own<WatchWindow> watch_window_;
  const auth::Principal who_;
  const auth::Access* const access_;  // null: no checks
};

}  // namespace

kj::Own<wire::Kv::Server> NewKv(ServerLoop& loop, std::string peer,
                                kj::Own<WatchWindow> watch_window, auth::Principal who) {
  return kj::heap<KvImpl>(loop, std::move(peer), kj::mv(watch_window), who);
}

}  // namespace peerkv::rpc
