// rpc/replica_service.cc: the Replica capability: hello (which makes an
// inbound replication link), pull (answered from the store's change log on
// the loop), nudge (passed to the replication engine), ping (keepalive) and
// reconcile (one round of replication/reconcile.h: decoded on the loop,
// answered on the server's worker thread, ServerLoop::OffLoop, because a
// round may scan a whole keyspace).
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "replication/reconcile.h"
#include "replication/restore_guard.h"
#include "replication/serve.h"
#include "rpc/convert.h"
#include "rpc/peer_convert.h"
#include "rpc/server_loop.h"

namespace peerkv::rpc {
namespace {

// Replication links one client connection may open with hello.
constexpr size_t kMaxHellosPerConnection = 1;

class ReplicaImpl final : public wire::Replica::Server {
 public:
  ReplicaImpl(ServerLoop& loop, std::string peer, uint64_t connection_id,
              replication::LinkId link, std::optional<auth::PublicKey> device,
              std::shared_ptr<const replication::KeyspaceFilter> readable,
              std::shared_ptr<const replication::ReservedRecordFilter> reserved)
      : loop_(loop),
        peer_(std::move(peer)),
        device_(std::move(device)),
        readable_(std::move(readable)),
        reserved_(std::move(reserved)),
        connection_id_(connection_id),
        link_(link) {}

  kj::Promise<void> hello(HelloContext context) override {
    auto params = context.getParams();
    auto results = context.getResults();
    auto info = params.getInfo();
    replication::PeerInfo peer = FromWire(info);
    // A friend's device: the engine restricts what it asks and adopts, and
    // the merge gate checks its records more strictly.
    peer.readable = readable_;
    absl::Status refused;
    if (refused_) {
      refused = RefusedLink();
    } else if (link_ != 0) {
      refused = absl::FailedPreconditionError("hello was already exchanged on this link");
    } else if (loop_.events() == nullptr) {
      refused = absl::FailedPreconditionError("this server does not replicate");
    } else if (loop_.links().InboundLinks(connection_id_) >= kMaxHellosPerConnection) {
      // A replica needs one link per connection; more would let one
      // connection fill the peer table with made-up replicas.
      refused = absl::ResourceExhaustedError(absl::StrFormat(
          "this connection already carries %d replication link; the limit is %d",
          kMaxHellosPerConnection, kMaxHellosPerConnection));
    } else {
      // A hello with our own id is either this replica dialling itself or a
      // clone (a copied directory): the engine tells them apart by the
      // open nonce and names a clone in the log (OnInboundLink).
      refused = peer.replica_id == loop_.store().replica_id()
                    ? replication::ValidatePeerInfo(peer)
                    : replication::CheckPeer(peer, loop_.store().replica_id());
      // The hello's replica id is the authenticated device's.
      if (refused.ok()) refused = loop_.BindReplica(peer.replica_id, peer.incarnation, device_);
    }
    if (!refused.ok()) {
      loop_.LogRejected(peer_, "hello", refused);
      ToWire(refused, results.initError());
      return kj::READY_NOW;
    }
    hello_replica_ = peer.replica_id;
    link_ = loop_.links().AddInbound(connection_id_, peer_, params.getBack(),
                                     peer.readable != nullptr);
    loop_.CountAsPeer(connection_id_, peer.replica_id);
    loop_.events()->OnInboundLink(link_, peer);
    ToWire(loop_.LocalInfo(peer.replica_id), results.initInfo());
    return kj::READY_NOW;
  }

  kj::Promise<void> pull(PullContext context) override {
    auto params = context.getParams();
    absl::Status refused;
    const Watermarks* theirs = nullptr;
    if (refused_) {
      refused = RefusedLink();
    } else if (link_ == 0) {
      refused = absl::FailedPreconditionError("pull before hello");
    } else {
      absl::StatusOr<const Watermarks*> told =
          Incoming(watermarks_, "pull", params.getWatermarks());
      if (told.ok()) {
        theirs = *told;
      } else {
        refused = told.status();
      }
    }
    if (!refused.ok()) {
      loop_.LogRejected(peer_, "pull", refused);
      ToWire(refused, context.getResults().initError());
      return kj::READY_NOW;
    }
    replication::PullRequest request = FromWire(params);
    if (device_.has_value() && request.requester != hello_replica_) {
      // The requester is the replica that said hello on this link.
      const absl::Status wrong = absl::PermissionDeniedError(absl::StrFormat(
          "pull names requester %016x; this link said hello as %016x", request.requester,
          hello_replica_));
      loop_.LogRejected(peer_, "pull", wrong);
      ToWire(wrong, context.getResults().initError());
      return kj::READY_NOW;
    }
    // Within what this server may send on this connection.
    request.max_bytes = static_cast<uint32_t>(
        std::min<size_t>(request.max_bytes, loop_.reply_budget()));
    request.watermarks = *theirs;
    auto results = context.getResults();
    // What an own device says it holds of us may show this data directory
    // was restored; a friend's device's claim never does (it could make
    // this replica fork at will: Replicator::RestoreEvidenceOf).
    const replication::HeldOf claim = replication::ClaimOfPull(loop_.store(), request);
    if (std::optional<replication::Restored> restored =
            readable_ == nullptr ? replication::RestoreEvidence(loop_.store(), claim)
                                 : std::nullopt) {
      // Nothing is served as the old id: the engine forks first.
      loop_.events()->OnRestoreEvidence(link_, *restored);
      ToWire(absl::FailedPreconditionError(absl::StrCat(
                 "this replica's data directory was restored from an older copy (", restored->why,
                 "); it forks to a new replica id: hello again")),
             results.initError());
      return kj::READY_NOW;
    }
    absl::StatusOr<replication::PullResponse> response =
        replication::ServePull(loop_.store(), request, readable_.get(), reserved_.get());
    if (!response.ok()) {
      loop_.LogRejected(peer_, "pull", response.status());
      ToWire(response.status(), results.initError());
      return kj::READY_NOW;
    }
    // The watermarks first, then the batch (ToWire), as before.
    const Watermarks delta = watermarks_.Outgoing(response->watermarks);
    ToWire(delta, results.initWatermarks(delta.size()));
    ToWire(*response, results);
    return kj::READY_NOW;
  }

  // A snapshot page (README "Snapshot bootstrap"), read on the loop like a
  // pull's page: one read transaction over at most a reply's worth.
  kj::Promise<void> snapshot(SnapshotContext context) override {
    absl::Status refused;
    if (refused_) {
      refused = RefusedLink();
    } else if (link_ == 0) {
      refused = absl::FailedPreconditionError("snapshot before hello");
    } else if (loop_.options().snapshot_disabled) {
      refused = absl::UnimplementedError("this server serves no snapshots (--snapshot-serve=false)");
    } else if (readable_ != nullptr) {
      // A page of every register, its watermarks and point seq would speak
      // of every keyspace: a friend's device pulls the (filtered) log.
      refused = absl::UnimplementedError(
          "this server serves no snapshots to a friend's device: pull the log");
    }
    absl::StatusOr<replication::SnapshotRequest> request =
        refused.ok() ? FromWire(context.getParams()) : refused;
    absl::StatusOr<replication::SnapshotResponse> response =
        absl::InternalError("snapshot request not served");
    if (request.ok()) {
      request->max_bytes =
          static_cast<uint32_t>(std::min<size_t>(request->max_bytes, loop_.reply_budget()));
      response = replication::ServeSnapshot(loop_.store(), *request);
    } else {
      response = request.status();
    }
    if (!response.ok()) {
      loop_.LogRejected(peer_, "snapshot", response.status());
      ToWire(response.status(), context.getResults().initError());
      return kj::READY_NOW;
    }
    ToWire(*response, context.getResults());
    return kj::READY_NOW;
  }

  kj::Promise<void> nudge(NudgeContext context) override {
    if (link_ == 0 || refused_ || loop_.events() == nullptr) return kj::READY_NOW;
    absl::StatusOr<const Watermarks*> theirs =
        Incoming(watermarks_, "nudge", context.getParams().getWatermarks());
    // Too many to trust or keep: pull anyway, remember nothing.
    loop_.events()->OnNudged(link_, theirs.ok() ? **theirs : Watermarks{});
    return kj::READY_NOW;
  }

  // The answer is the point (see ServerLoop::KeepAlive).
  kj::Promise<void> ping(PingContext) override { return kj::READY_NOW; }

  kj::Promise<void> reconcile(ReconcileContext context) override {
    if (link_ == 0 || refused_) {
      const absl::Status refused =
          refused_ ? RefusedLink() : absl::FailedPreconditionError("reconcile before hello");
      loop_.LogRejected(peer_, "reconcile", refused);
      ToWire(refused, context.getResults().initError());
      return kj::READY_NOW;
    }
    absl::StatusOr<replication::ReconcileRequest> request =
        replication::DecodeReconcileRequest(View(context.getParams().getRequest()),
                                            kMaxValueBytes);
    if (!request.ok()) {
      // Out of bounds: refused, and this link (only) is closed.
      loop_.LogRejected(peer_, "reconcile", request.status());
      ToWire(request.status(), context.getResults().initError());
      loop_.links().Refuse(link_, request.status());
      refused_ = true;
      return kj::READY_NOW;
    }
    if (reconcile_busy_) {
      // The initiator waits for each answer before it asks again; a peer
      // that does not would queue scans on the worker.
      const absl::Status busy = absl::ResourceExhaustedError(
          "a reconcile round is already being answered on this link; the limit is 1");
      loop_.LogRejected(peer_, "reconcile", busy);
      ToWire(busy, context.getResults().initError());
      return kj::READY_NOW;
    }
    reconcile_busy_ = true;
    // Values this store cannot hold: skipped, as a pull would not send them.
    replication::DropValuesOverLimit(request->push, loop_.store().options().max_value_bytes);
    if (readable_ != nullptr) {
      // A friend's push of a keyspace it may not read is dropped unmerged:
      // whether it won would tell it what is stored there (and it may not
      // write it: writers read).
      std::erase_if(request->push,
                    [&](const Record& r) { return !(*readable_)(r.keyspace); });
    }
    kj::Promise<void> answered = nullptr;
    if (request->push.empty()) {
      answered = AnswerReconcile(context, std::move(*request), MergeResult{});
    } else {
      std::vector<Record> push = std::move(request->push);
      request->push.clear();
      // Kept to remember what the merge refuses (RefusedMemory).
      std::vector<Record> offered = push;
      // A dialled peer pushes on the link's back capability: the link
      // knows who it is (PeerLinks::FriendLink).
      const MergeSource from = readable_ != nullptr || loop_.links().FriendLink(link_)
                                   ? MergeSource::kFriend
                                   : MergeSource::kOwnDevice;
      answered = loop_.Merge(std::move(push), from)
                     .then([this, context, request = std::move(*request),
                            offered = std::move(offered), from](
                               absl::StatusOr<MergeResult> merged) mutable -> kj::Promise<void> {
                       if (!merged.ok()) {
                         loop_.LogRejected(peer_, "reconcile", merged.status());
                         ToWire(merged.status(), context.getResults().initError());
                         return kj::READY_NOW;
                       }
                       if (from == MergeSource::kFriend) {
                         refused_memory_->NoteWithStaleTombstones(offered, *merged);
                       } else {
                         refused_memory_->Note(offered, *merged);
                       }
                       if (loop_.events() != nullptr) loop_.events()->OnPushMerged(link_, *merged);
                       return AnswerReconcile(context, std::move(request), *merged);
                     });
    }
    return answered.attach(kj::defer([this] { reconcile_busy_ = false; }));
  }

 private:
  // Answers `request` on the server's worker thread (ServerLoop::OffLoop):
  // the first question below the store's stored levels scans and hashes
  // the whole keyspace, which must not stop this loop answering everyone
  // else. The source is shared with the job, so that a link closed
  // meanwhile leaves it nothing dangling.
  kj::Promise<void> AnswerReconcile(ReconcileContext context,
                                    replication::ReconcileRequest request, MergeResult pushed) {
    // Kept for the rounds of a session (the view it caches spares each
    // round a scan of the keyspace), dropped once a compare finds nothing.
    if (reconcile_source_ == nullptr) {
      reconcile_source_ = replication::StoreReconcileSource(loop_.store());
      if (readable_ != nullptr) {
        // Only what a friend's device may read: ranges, fingerprints and
        // items of other keyspaces are those of an empty keyspace.
        reconcile_source_ = std::make_shared<Owning>(std::move(reconcile_source_), readable_);
      }
      // As if it held what it refused of this peer's pushes on this link,
      // so that the initiator does not push them again every pass.
      reconcile_source_ =
          std::make_shared<WithRefused>(std::move(reconcile_source_), refused_memory_);
    }
    const bool compare = request.compare;
    return loop_
        .OffLoop<absl::StatusOr<replication::ReconcileResponse>>(
            [source = reconcile_source_, request = std::move(request),
             budget = loop_.reply_budget(), hook = loop_.options().reconcile_serve_hook]() {
              if (hook) hook();
              return replication::ServeReconcile(*source, request, budget);
            })
        .then([this, context, compare, pushed](
                  absl::StatusOr<replication::ReconcileResponse> response) mutable {
          if (!response.ok() || (compare && response->differing.empty())) {
            reconcile_source_.reset();
          }
          auto results = context.getResults();
          if (!response.ok()) {
            loop_.LogRejected(peer_, "reconcile", response.status());
            ToWire(response.status(), results.initError());
            return;
          }
          response->push_won = pushed.won;
          response->push_refused = pushed.refused.size();
          results.setResponse(AsData(replication::EncodeReconcileResponse(*response)));
        });
  }

  static absl::Status RefusedLink() {
    return absl::FailedPreconditionError(
        "this link was closed after a request out of bounds; connect again");
  }

  // A filtered source that owns what it filters.
  class Owning final : public replication::ReconcileSource {
   public:
    Owning(std::shared_ptr<replication::ReconcileSource> inner,
           std::shared_ptr<const replication::KeyspaceFilter> readable)
        : inner_(std::move(inner)),
          filtered_(replication::FilteredReconcileSource(*inner_, std::move(readable))) {}
    absl::StatusOr<std::vector<replication::KeyspaceRoot>> Roots() override {
      return filtered_->Roots();
    }
    absl::StatusOr<std::unique_ptr<rbsr::RangeView>> View(std::string_view keyspace) override {
      return filtered_->View(keyspace);
    }
    absl::StatusOr<std::optional<Record>> Get(std::string_view keyspace,
                                              std::string_view key) override {
      return filtered_->Get(keyspace, key);
    }
    bool Reconciles(std::string_view keyspace) const override {
      return filtered_->Reconciles(keyspace);
    }

   private:
    const std::shared_ptr<replication::ReconcileSource> inner_;
    const std::unique_ptr<replication::ReconcileSource> filtered_;
  };

  // replication::RefusedOverlay over a source it owns.
  class WithRefused final : public replication::ReconcileSource {
   public:
    WithRefused(std::shared_ptr<replication::ReconcileSource> inner,
                std::shared_ptr<const replication::RefusedMemory> memory)
        : inner_(std::move(inner)),
          memory_(std::move(memory)),
          overlay_(replication::RefusedOverlay(*inner_, *memory_)) {}
    absl::StatusOr<std::vector<replication::KeyspaceRoot>> Roots() override {
      return overlay_->Roots();
    }
    absl::StatusOr<std::unique_ptr<rbsr::RangeView>> View(std::string_view keyspace) override {
      return overlay_->View(keyspace);
    }
    absl::StatusOr<std::optional<Record>> Get(std::string_view keyspace,
                                              std::string_view key) override {
      return overlay_->Get(keyspace, key);
    }
    bool Reconciles(std::string_view keyspace) const override {
      return overlay_->Reconciles(keyspace);
    }

   private:
    const std::shared_ptr<replication::ReconcileSource> inner_;
    const std::shared_ptr<const replication::RefusedMemory> memory_;
    const std::unique_ptr<replication::ReconcileSource> overlay_;
  };

  ServerLoop& loop_;
  const std::string peer_;
  // The TLS peer's device (nullopt: local or plaintext) and its hello id.
  const std::optional<auth::PublicKey> device_;
  // A friend's device: what it may read (null: everything).
  const std::shared_ptr<const replication::KeyspaceFilter> readable_;
  // And the policy and group records it may read (they travel in pulls).
  const std::shared_ptr<const replication::ReservedRecordFilter> reserved_;
  uint64_t hello_replica_ = 0;
  const uint64_t connection_id_;
  replication::LinkId link_;
  // A request out of bounds closed the link: nothing more is served here.
  bool refused_ = false;
  // Used by one job at a time on the worker thread (reconcile_busy_).
  std::shared_ptr<replication::ReconcileSource> reconcile_source_;
  bool reconcile_busy_ = false;
  // What this server refused of the peer's reconcile pushes on this link
  // (changed on the loop between rounds, read by the round on the worker).
  const std::shared_ptr<replication::RefusedMemory> refused_memory_ =
      std::make_shared<replication::RefusedMemory>();
  // The caller's watermarks as its pulls and nudges told us, and ours as
  // our answers told it: the wire carries deltas (see peerkv.capnp).
  WatermarkChannel watermarks_;
};

}  // namespace

kj::Own<wire::Replica::Server> NewReplica(
    ServerLoop& loop, std::string peer, uint64_t connection_id, replication::LinkId link,
    std::optional<auth::PublicKey> device,
    std::shared_ptr<const replication::KeyspaceFilter> readable,
    std::shared_ptr<const replication::ReservedRecordFilter> reserved) {
  return kj::heap<ReplicaImpl>(loop, std::move(peer), connection_id, link, std::move(device),
                               std::move(readable), std::move(reserved));
}

}  // namespace peerkv::rpc
