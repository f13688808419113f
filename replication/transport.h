// replication/transport.h: what the replication engine needs from the
// network, as an interface: Cap'n Proto RPC over TCP implements it in rpc/,
// and the simulation implements it in memory with drops, delays,
// duplicates, reordering and partitions. No kj or capnp here.
#ifndef PEERKV_REPLICATION_TRANSPORT_H_
#define PEERKV_REPLICATION_TRANSPORT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "replication/status.h"
#include "store/range_fingerprint.h"
#include "store/types.h"
#include "store/version.h"

namespace peerkv::replication {

// Version of the replication protocol; peers that differ refuse each other.
inline constexpr uint32_t kProtocolVersion = 1;

// Longest human name a replica may give itself (--replica-name) or tell
// in its hello.
inline constexpr size_t kMaxReplicaNameBytes = 64;

// What a replica holds of another (replica_id): its checkpoint of that
// replica's log and its watermark for that origin. Zeros: nothing, or not
// told (a peer from before these fields).
struct HeldOf {
  uint64_t replica_id = 0;
  uint64_t incarnation = 0;
  uint64_t seq = 0;
  uint64_t watermark = 0;
  // The open nonce of the life the checkpoint was pulled from (see
  // PeerCheckpoint::nonce); 0: not told.
  uint64_t nonce = 0;
  friend bool operator==(const HeldOf&, const HeldOf&) = default;
};

// Evidence that this replica's data directory was restored from an older
// copy (replication/restore_guard.h).
struct Restored {
  // The id the evidence is about (a replica that forked since ignores it).
  uint64_t replica_id = 0;
  // This replica's writes logged after this seq were made since the
  // restored copy was opened (Store::Fork re-stamps them).
  uint64_t since_seq = 0;
  // Why, for the log.
  std::string why;
  // The highest version of this replica's id the evidence shows a peer
  // holds (its watermark for it; 0: none): the lost life's clock was at
  // least there, so the fork's re-stamps are stamped above it (Store::Fork).
  uint64_t clock_floor = 0;
};

// Which keyspaces a peer may read (auth::Access::MayRead for its user):
// set on a friend's link, whose every answer and request is restricted to
// them (README "Filtered replication"). Thread-safe; cheap per call.
using KeyspaceFilter = std::function<bool(std::string_view keyspace)>;
// Which records of the reserved keyspaces (peerkv.policies, peerkv.groups)
// a friend may read, record by record (auth::Access::MayReadRecord): the
// policies of the keyspaces it may read and the groups it is a member of,
// so it enforces them too.
using ReservedRecordFilter = std::function<bool(std::string_view keyspace, std::string_view key)>;

// Who a replica is, as told in the hello exchange.
struct PeerInfo {
  uint64_t replica_id = 0;
  uint64_t incarnation = 0;
  uint32_t protocol_version = kProtocolVersion;
  // Human name (--replica-name); may be empty; at most
  // kMaxReplicaNameBytes (see ValidatePeerInfo).
  std::string name;
  // Store::open_nonce(): tells two processes with one replica id apart (a
  // copied data directory). 0 from peers that predate it.
  uint64_t boot_nonce = 0;
  // What the sender holds of the receiver, when it knows who that is (the
  // answer to a hello always does): lets a restored replica see that a
  // peer holds writes of its own it lacks (replication/restore_guard.h).
  HeldOf held;
  // The sender's wall clock (uncorrected, ms since the epoch) as it sent
  // this hello or answer; 0: not told (older peers). The receiver
  // estimates the sender's clock offset from it (store/clock.h).
  int64_t physical_ms = 0;
  // Replica ids the sender knows were retired by forks (restored data
  // directories): its own former ids, and those it learned from its peers.
  // The receiver forgets its watermarks for them (Store::ForgetRetiredIds).
  // At most kMaxRetiredIdsInHello.
  std::vector<uint64_t> retired;
  // Not on the wire: set by the transport from the link's authenticated
  // identity. Non-null: the peer is a friend's device, and may read only
  // the keyspaces this accepts (null: an own device, or a link without
  // identities: everything).
  // It also makes the link a friend's to the merge gate, which checks its
  // records more strictly (MergeSource::kFriend, README "Signed records").
  std::shared_ptr<const KeyspaceFilter> readable;
};

inline constexpr size_t kMaxRetiredIdsInHello = 256;

// "Send me your changes after `after_seq` of `incarnation`."
struct PullRequest {
  // Who asks: the server leaves out what came from, or was written by, it.
  uint64_t requester = 0;
  // The requester's checkpoint for the server; a different incarnation than
  // the server's makes the server start from seq 0.
  uint64_t incarnation = 0;
  uint64_t after_seq = 0;
  // The server's open nonce when it served after_seq (PeerCheckpoint::
  // nonce): a nonce the server's directory never drew shows it lost the
  // log the checkpoint points into. 0: not known.
  uint64_t after_nonce = 0;
  uint32_t max_records = 1000;
  uint32_t max_bytes = 1 << 20;
  // The requester's value limit: larger values would be refused there (and
  // could exceed its message limits), so they are not sent. 0: no limit.
  uint64_t max_value_bytes = 0;
  // What the requester already holds (see Store::GetWatermarks): records
  // they cover are not sent.
  Watermarks watermarks;
  // The requester's checkpoint in this log that it has merged (of the same
  // incarnation as after_seq; 0: none, or not told): a pipelined request
  // asks after a page still merging, so after_seq may be one page ahead.
  // A friend's device is waited for by tombstone collection by it
  // (Store::NoteFriendHolds).
  uint64_t merged_seq = 0;
  // The requester's estimate of real time when it asked (ms,
  // Store::RealNowMillis); with `watermarks`, its acknowledgement for
  // tombstone collection, which then also measures a tombstone's age by
  // this reading (Store::NotePeerHolds). 0: not told (an older peer).
  int64_t physical_ms = 0;
};

struct PullResponse {
  uint64_t replica_id = 0;
  uint64_t incarnation = 0;
  // The server's open nonce (Store::open_nonce): kept with the checkpoint.
  uint64_t nonce = 0;
  // The seq the server actually started after (0 on an incarnation change).
  uint64_t from_seq = 0;
  std::vector<Record> records;
  // Resume point: the requester's new checkpoint.
  uint64_t last_seq = 0;
  // The server's current max seq: last_seq < max_seq means more to pull.
  uint64_t max_seq = 0;
  // The server's watermarks, read before its log: once the requester has
  // pulled up to max_seq it holds everything they cover, and may claim them.
  Watermarks watermarks;
  // When last_seq == max_seq: the server's whole-store fingerprint (the sum
  // of its keyspaces' roots, store/range_fingerprint.h), for the requester
  // to compare with its own; nullopt: not told.
  std::optional<rbsr::Fingerprint> store_fingerprint;
};

// "Send me a page of your registers after (after_keyspace, after_key)":
// snapshot bootstrap (README "Snapshot bootstrap"). The first request of a
// snapshot has incarnation 0; the answer pins the snapshot's point (the
// server's incarnation, max seq and watermarks), and every later request
// names it. A server whose incarnation is no longer the one named refuses
// (FailedPrecondition): the requester starts again.
struct SnapshotRequest {
  uint64_t requester = 0;
  // 0: a new snapshot. Else the incarnation and point of the snapshot
  // being continued.
  uint64_t incarnation = 0;
  uint64_t point_seq = 0;
  // The last register received (records-table order); empty keyspace:
  // from the first.
  std::string after_keyspace;
  std::string after_key;
  uint32_t max_records = 0;
  uint32_t max_bytes = 0;
  // As PullRequest::max_value_bytes.
  uint64_t max_value_bytes = 0;
};

struct SnapshotResponse {
  uint64_t replica_id = 0;
  uint64_t incarnation = 0;
  uint64_t nonce = 0;
  uint64_t point_seq = 0;
  // The server's watermarks, read before point_seq; told in the answer to
  // a new snapshot's first request only.
  Watermarks watermarks;
  // Registers after the requested one, in records-table order (keyspace,
  // then key), at most max_records.
  std::vector<Record> records;
  // How many records the server sent (a page that lost some is refused).
  uint64_t count = 0;
  // No register follows the last one.
  bool done = false;
};

// A transport-level connection to one peer; ids are never reused.
using LinkId = uint64_t;

// Events a transport reports to the engine; callable from any thread.
class LinkEvents {
 public:
  virtual ~LinkEvents() = default;
  // A peer connected to us and said hello (an inbound link).
  virtual void OnInboundLink(LinkId link, const PeerInfo& peer) = 0;
  // A link (inbound or outbound) broke.
  virtual void OnLinkDown(LinkId link, const absl::Status& why) = 0;
  // The peer on `link` has changes for us; `sender` are its watermarks
  // (empty if unknown): if ours cover them, it has nothing we lack.
  virtual void OnNudged(LinkId link, const Watermarks& sender) = 0;
  // A peer on `link` showed that this replica's data directory was
  // restored from an older copy (see replication/restore_guard.h); the
  // engine forks to a new replica id, unless it is no longer
  // evidence.replica_id (it forked already). Transports that answer pulls
  // call it.
  virtual void OnRestoreEvidence(LinkId link, const Restored& evidence) {}
  // Records the peer on `link` pushed (a reconcile session it ran) were
  // merged with `merged`: its refused and quarantined records count
  // against that peer, as from a pull. Transports that take pushes call it.
  virtual void OnPushMerged(LinkId link, const MergeResult& merged) {}
  // A request on `link` went unanswered too long (a nudge, say): the engine
  // prefers the peer's other links from now on. The link stays up until
  // OnLinkDown. Transports that cannot tell need not call it.
  virtual void OnLinkSuspect(LinkId link, const absl::Status& why) {}
  // An operator asks to reconcile with `peer` now (peerkv reconcile): see
  // Replicator::Reconcile. `done` may run on any thread.
  virtual void Reconcile(const std::string& peer,
                         absl::AnyInvocable<void(absl::StatusOr<ReconcileReport>)> done) {
    done(absl::UnimplementedError("this replica does not reconcile"));
  }
};

class Transport {
 public:
  virtual ~Transport() = default;

  struct Connected {
    LinkId link = 0;
    PeerInfo peer;
    // The physical_ms of the hello we sent (our wall clock as it left), so
    // the engine can time the round trip; 0: the engine uses the time it
    // asked to connect (a wider bound).
    int64_t hello_sent_ms = 0;
  };
  // Opens a link to the peer at `address` and exchanges hellos. Callbacks
  // may run on any thread.
  virtual void Connect(const std::string& address,
                       absl::AnyInvocable<void(absl::StatusOr<Connected>)> done) = 0;
  // As Connect, when the engine expects the peer at `address` to be
  // replica `expected` (the id it met there last; 0: not known): the
  // caller's hello may then say what it holds of it (PeerInfo::held), so a
  // restored peer sees the evidence before anything else is exchanged.
  // Transports that cannot put it in their hello ignore `expected`.
  virtual void ConnectExpecting(const std::string& address, uint64_t expected,
                                absl::AnyInvocable<void(absl::StatusOr<Connected>)> done) {
    Connect(address, std::move(done));
  }
  // Asks the peer on `link` for changes. `done` runs at most once; it may
  // never run if the transport loses the request (the engine times out).
  virtual void Pull(LinkId link, const PullRequest& request,
                    absl::AnyInvocable<void(absl::StatusOr<PullResponse>)> done) = 0;
  // Tells the peer on `link` that we have changes for it, with our
  // watermarks (fire and forget).
  virtual void Nudge(LinkId link, const Watermarks& mine) = 0;
  // Closes an outbound link (the engine no longer wants it).
  virtual void Close(LinkId link) = 0;
  // One round of a reconcile session (replication/reconcile.h) on `link`:
  // sends the encoded request, `done` gets the encoded answer (or the
  // peer's error). Like Pull, `done` may never run. Transports without it
  // answer Unimplemented.
  virtual void Reconcile(LinkId link, std::string request,
                         absl::AnyInvocable<void(absl::StatusOr<std::string>)> done) {
    done(absl::UnimplementedError("this transport does not reconcile"));
  }
  // One page of a snapshot (SnapshotRequest) from the peer on `link`. Like
  // Pull, `done` may never run. Transports without it answer Unimplemented
  // (the engine then pulls the log instead).
  virtual void Snapshot(LinkId link, const SnapshotRequest& request,
                        absl::AnyInvocable<void(absl::StatusOr<SnapshotResponse>)> done) {
    done(absl::UnimplementedError("this transport does not serve snapshots"));
  }
};

}  // namespace peerkv::replication

#endif  // PEERKV_REPLICATION_TRANSPORT_H_
