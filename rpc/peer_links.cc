// rpc/peer_links.cc: the replication links of one server loop: dialling a
// peer and saying hello, pulls and nudges with watermark deltas, keepalive
// pings, and closing or dropping links (see peer_links.h).
#include "rpc/peer_links.h"

#include <vector>

#include "absl/strings/str_format.h"
#include "capnp/rpc-twoparty.h"
#include "common/log.h"
#include "common/macros.h"
#include "kj/debug.h"
#include "kj/timer.h"
#include "replication/replicator.h"
#include "replication/serve.h"
#include "rpc/connection.h"
#include "rpc/convert.h"
#include "rpc/peer_convert.h"

namespace peerkv::rpc {
namespace {

constexpr auto kDialTimeout = 10 * kj::SECONDS;
// A link whose keepalive ping (or a nudge) is unanswered for this many
// keepalive intervals is dead (suspect, for a nudge).
constexpr int kKeepAliveMisses = 5;

}  // namespace

// A connection this server dialled to a peer.
struct PeerLinks::Outbound {
  Outbound(kj::Own<kj::AsyncIoStream> socket, const capnp::ReaderOptions& options,
           std::atomic<uint64_t>* bytes_sent)
      : link(kj::mv(socket), options, bytes_sent) {}
  GatewayConnection link;
};

PeerLinks::PeerLinks(kj::AsyncIoContext& io, const capnp::ReaderOptions& reader_options,
                     std::atomic<uint64_t>& bytes_sent, int keepalive_ms,
                     replication::LinkEvents* events,
                     std::function<replication::PeerInfo(uint64_t to)> local_info,
                     MakeBack make_back,
                     CloseConnection close_connection)
    : io_(io),
      reader_options_(reader_options),
      bytes_sent_(bytes_sent),
      keepalive_ms_(keepalive_ms),
      events_(events),
      local_info_(std::move(local_info)),
      make_back_(std::move(make_back)),
      close_connection_(std::move(close_connection)),
      tasks_(*this) {}

PeerLinks::~PeerLinks() noexcept(false) = default;

void PeerLinks::StartKeepAlive() { tasks_.add(KeepAlive()); }

// Pings every link each keepalive interval, one ping in flight per link. A
// half-open connection (one direction stalled by a middlebox, a peer whose
// machine vanished) closes nothing and answers nothing, and TCP keepalive
// would not see it where a proxy acks for the peer: a link whose ping stays
// unanswered for kKeepAliveMisses intervals is dropped, and its connection
// closed (the replicator redials one it dialled).
kj::Promise<void> PeerLinks::KeepAlive() {
  const auto interval = keepalive_ms_ * kj::MILLISECONDS;
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
          it->second.address, kKeepAliveMisses * keepalive_ms_);
      LogLine(absl::StrFormat("peerkv: %s; closing it", why));
      DropLink(link, absl::DeadlineExceededError(why));
      // An inbound link: close the client connection it came on (an
      // outbound one was closed by DropLink).
      if (connection_id != 0) close_connection_(connection_id);
    }
    return KeepAlive();
  });
}

void PeerLinks::Dial(const std::string& address, uint64_t expected, DialDone done) {
  using Connected = replication::Transport::Connected;
  const replication::LinkId id = next_link_++;
  const std::string context = absl::StrFormat("peer %s", address);
  // Who answered (set by a TLS dialer): the replica id its hello answer
  // names is bound to that device, as an inbound hello's is, what it
  // may read (a friend's device: PeerInfo::readable) follows from its role.
  auto answered_by = std::make_shared<std::optional<AuthenticatedPeer>>();
  auto dialled = dialer_ ? dialer_(address, answered_by)
                         : io_.provider->getNetwork().parseAddress(address).then(
                               [](kj::Own<kj::NetworkAddress> addr) {
                                 return addr->connect().attach(kj::mv(addr));
                               });
  auto work =
      dialled
          .then([this, id, address, expected, answered_by](kj::Own<kj::AsyncIoStream> stream) {
            std::shared_ptr<const replication::KeyspaceFilter> readable =
                readable_ ? readable_(*answered_by) : nullptr;
            auto outbound = kj::heap<Outbound>(kj::mv(stream), reader_options_, &bytes_sent_);
            auto replica = outbound->link.gateway().replicaRequest().send().getReplica();
            auto hello = replica.helloRequest();
            // Says what we hold of the replica we expect there (restore
            // evidence for it, checked before anything else).
            const replication::PeerInfo sent = local_info_(expected);
            ToWire(sent, hello.initInfo());
            hello.setBack(make_back_(address, id, readable, *answered_by));
            return hello.send().then(
                [this, id, replica, address, sent_ms = sent.physical_ms, answered_by, readable,
                 outbound = kj::mv(outbound)](auto response) mutable -> absl::StatusOr<Connected> {
                  absl::Status status = ResponseStatus(response);
                  if (!status.ok()) return status;
                  Connected connected{id, FromWire(response.getInfo()), sent_ms};
                  if (bind_replica_ && answered_by->has_value()) {
                    // Dropping `outbound` closes the connection.
                    PEERKV_RETURN_IF_ERROR(bind_replica_(connected.peer.replica_id,
                                                         connected.peer.incarnation,
                                                         (*answered_by)->device));
                  }
                  if (still_trusted_ && answered_by->has_value()) {
                    // A removal that arrived since the handshake: DropRefused
                    // ran before this link was listed.
                    absl::Status trusted = still_trusted_(**answered_by);
                    if (!trusted.ok()) {
                      return absl::PermissionDeniedError(absl::StrFormat(
                          "server at %s: %s", address, trusted.message()));
                    }
                  }
                  connected.peer.readable = readable;
                  Outbound& o = *outbound;
                  o.link.stream().CountAsPeer(connected.peer.replica_id);
                  links_[id] = LinkEntry{replica, 0, kj::mv(outbound)};
                  links_[id].address = address;
                  links_[id].friend_device = readable != nullptr;
                  links_[id].answered_by = *answered_by;
                  tasks_.add(o.link.onDisconnect().then([this, id] {
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
void PeerLinks::Pull(replication::LinkId link, const replication::PullRequest& pull,
                      PullDone done) {
  auto it = links_.find(link);
  if (it == links_.end()) {
    done(absl::UnavailableError("no such link (peer disconnected)"));
    return;
  }
  auto request = it->second.peer.pullRequest();
  ToWire(pull, request);
  const Watermarks delta = it->second.watermarks.Outgoing(pull.watermarks);
  ToWire(delta, request.initWatermarks(delta.size()));
  tasks_.add(
      request.send()
          .then(
              [this, link](auto response) -> absl::StatusOr<replication::PullResponse> {
                absl::Status status = ResponseStatus(response);
                if (!status.ok()) return status;
                PEERKV_ASSIGN_OR_RETURN(replication::PullResponse out, FromWire(response));
                auto entry = links_.find(link);
                if (entry == links_.end()) {
                  return absl::UnavailableError("link closed during the pull");
                }
                PEERKV_ASSIGN_OR_RETURN(
                    const Watermarks* theirs,
                    Incoming(entry->second.watermarks, "pull answer", response.getWatermarks()));
                out.watermarks = *theirs;
                return out;
              },
              [](kj::Exception&& e) -> absl::StatusOr<replication::PullResponse> {
                return FromKjException(e, "pull from peer");
              })
          .then([done = kj::mv(done)](absl::StatusOr<replication::PullResponse> r) mutable {
            done(std::move(r));
          }));
}

void PeerLinks::Snapshot(replication::LinkId link, const replication::SnapshotRequest& snapshot,
                         SnapshotDone done) {
  auto it = links_.find(link);
  if (it == links_.end()) {
    done(absl::UnavailableError("no such link (peer disconnected)"));
    return;
  }
  auto request = it->second.peer.snapshotRequest();
  ToWire(snapshot, request);
  tasks_.add(
      request.send()
          .then(
              [](auto response) -> absl::StatusOr<replication::SnapshotResponse> {
                absl::Status status = ResponseStatus(response);
                if (!status.ok()) return status;
                return FromWire(response);
              },
              [](kj::Exception&& e) -> absl::StatusOr<replication::SnapshotResponse> {
                return FromKjException(e, "snapshot from peer");
              })
          .then([done = kj::mv(done)](absl::StatusOr<replication::SnapshotResponse> r) mutable {
            done(std::move(r));
          }));
}

void PeerLinks::Reconcile(replication::LinkId link, std::string bytes, ReconcileDone done) {
  auto it = links_.find(link);
  if (it == links_.end()) {
    done(absl::UnavailableError("no such link (peer disconnected)"));
    return;
  }
  auto request = it->second.peer.reconcileRequest();
  request.setRequest(AsData(bytes));
  tasks_.add(request.send()
                 .then(
                     [](auto response) -> absl::StatusOr<std::string> {
                       absl::Status status = ResponseStatus(response);
                       if (!status.ok()) return status;
                       return ToString(response.getResponse());
                     },
                     [](kj::Exception&& e) -> absl::StatusOr<std::string> {
                       return FromKjException(e, "reconcile with peer");
                     })
                 .then([done = kj::mv(done)](absl::StatusOr<std::string> r) mutable {
                   done(std::move(r));
                 }));
}

void PeerLinks::Refuse(replication::LinkId link, const absl::Status& why) {
  // On a later turn: the refusal is answered first.
  tasks_.add(kj::evalLater([this, link, why] { DropLink(link, why); }));
}

void PeerLinks::Nudge(replication::LinkId link, const Watermarks& mine) {
  auto it = links_.find(link);
  if (it == links_.end()) return;
  auto request = it->second.peer.nudgeRequest();
  // Same direction, same delta state as our pulls on this link.
  const Watermarks delta = it->second.watermarks.Outgoing(mine);
  ToWire(delta, request.initWatermarks(delta.size()));
  // Fire and forget: a lost nudge only delays the next pull to a round. One
  // unanswered as long as a dead keepalive makes the link suspect, so the
  // engine's next requests take another link.
  const auto deadline = kKeepAliveMisses * keepalive_ms_ * kj::MILLISECONDS;
  tasks_.add(request.send()
                 .then([](auto&&) {}, [](kj::Exception&&) {})
                 .exclusiveJoin(io_.provider->getTimer().afterDelay(deadline).then([this, link] {
                   if (events_ != nullptr && links_.count(link) > 0) {
                     events_->OnLinkSuspect(
                         link, absl::DeadlineExceededError(absl::StrFormat(
                                   "no answer to a nudge within %d ms",
                                   kKeepAliveMisses * keepalive_ms_)));
                   }
                 })));
}

void PeerLinks::CloseLink(replication::LinkId link) {
  auto it = links_.find(link);
  if (it == links_.end()) return;
  kj::Own<Outbound> outbound = kj::mv(it->second.outbound);
  links_.erase(it);
  if (outbound.get() != nullptr) {
    // Destroyed on a later turn, not inside one of its own callbacks.
    tasks_.add(kj::evalLater([outbound = kj::mv(outbound)] {}));
  }
}

replication::LinkId PeerLinks::AddInbound(uint64_t connection_id, const std::string& address,
                                          wire::Replica::Client back, bool friend_device) {
  const replication::LinkId id = next_link_++;
  links_[id] = LinkEntry{kj::mv(back), connection_id, kj::Own<Outbound>()};
  links_[id].address = address;
  links_[id].friend_device = friend_device;
  return id;
}

bool PeerLinks::FriendLink(replication::LinkId link) const {
  auto it = links_.find(link);
  return it != links_.end() && it->second.friend_device;
}

size_t PeerLinks::InboundLinks(uint64_t connection_id) const {
  size_t n = 0;
  for (const auto& [link, entry] : links_) n += entry.connection_id == connection_id ? 1 : 0;
  return n;
}

void PeerLinks::DropConnection(uint64_t connection_id, const absl::Status& why) {
  std::vector<replication::LinkId> gone;
  for (const auto& [link, entry] : links_) {
    if (entry.connection_id == connection_id) gone.push_back(link);
  }
  for (replication::LinkId link : gone) DropLink(link, why);
}

void PeerLinks::DropRefused(const StillTrusted& check) {
  std::vector<std::pair<replication::LinkId, absl::Status>> refused;
  for (const auto& [link, entry] : links_) {
    if (entry.outbound.get() == nullptr || !entry.answered_by.has_value()) continue;
    absl::Status why = check(*entry.answered_by);
    if (!why.ok()) {
      refused.emplace_back(link, absl::PermissionDeniedError(absl::StrFormat(
                                     "server at %s: %s", entry.address, why.message())));
    }
  }
  for (const auto& [link, why] : refused) {
    LogLine(absl::StrFormat("peerkv: closed the link to peer at %s: %s", links_[link].address,
                            why.message()));
    DropLink(link, why);
  }
}

void PeerLinks::ForEachDialledPeer(
    const std::function<void(const AuthenticatedPeer&)>& fn) const {
  for (const auto& [link, entry] : links_) {
    if (entry.outbound.get() != nullptr && entry.answered_by.has_value()) fn(*entry.answered_by);
  }
}

void PeerLinks::DropLink(replication::LinkId link, const absl::Status& why) {
  if (links_.count(link) == 0) return;
  CloseLink(link);
  if (events_ != nullptr) events_->OnLinkDown(link, why);
}

void PeerLinks::taskFailed(kj::Exception&& e) {
  LogLine(absl::StrFormat("peerkv: server task failed: %s", e.getDescription().cStr()));
}

}  // namespace peerkv::rpc
