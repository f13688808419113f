// replication/serve.h: the serving half of anti-entropy: answering a peer's
// pull from this replica's change log. Pure functions over a Store, used by
// the RPC server and by the simulation alike.
#ifndef PEERKV_REPLICATION_SERVE_H_
#define PEERKV_REPLICATION_SERVE_H_

#include "absl/status/statusor.h"
#include "replication/transport.h"
#include "store/store.h"

namespace peerkv::replication {

// Bounds applied to what a peer asks for.
inline constexpr uint32_t kMaxPullRecords = 10'000;
inline constexpr uint32_t kMaxPullBytes = 4 << 20;

// Changes of `store` after the requester's checkpoint, leaving out what the
// requester has (see ChangesFilter). If the checkpoint is of another
// incarnation of this store, or beyond its log, starts from seq 0. O(1)
// when the requester is up to date.
//
// `readable` (a friend's link, README "Filtered replication"): only records
// of the keyspaces it accepts, read through the store's change index (work
// proportional to them); no watermarks (they would claim versions of other
// keyspaces, and a friend holds only a subset); the store fingerprint is
// that of those keyspaces alone; for tombstone collection the requester's
// holdings are noted by its merged checkpoint (PullRequest::merged_seq,
// Store::NoteFriendHolds), not by watermarks (a friend never holds every
// keyspace).
// `reserved` (with `readable`): the records of reserved keyspaces it
// accepts travel too (the policies and groups the friend must enforce).
absl::StatusOr<PullResponse> ServePull(const Store& store, const PullRequest& request,
                                       const KeyspaceFilter* readable = nullptr,
                                       const ReservedRecordFilter* reserved = nullptr);

// Bounds of one snapshot page a server sends.
inline constexpr uint32_t kMaxSnapshotRecords = 65'536;
inline constexpr uint32_t kMaxSnapshotBytes = 16 << 20;

// A page of `store`'s registers for a snapshot (see SnapshotRequest): a new
// snapshot pins its point (watermarks, then max seq); a later page of a
// snapshot of another incarnation of this store, or of a point beyond its
// log, is refused with FailedPrecondition (the requester starts again).
// Bounds are lowered to kMaxSnapshotRecords and kMaxSnapshotBytes.
absl::StatusOr<SnapshotResponse> ServeSnapshot(const Store& store,
                                               const SnapshotRequest& request);

// Checks a peer's hello, whichever side dialled: a replica id and an
// incarnation (InvalidArgument), this replica's protocol version
// (FailedPrecondition), and a name of at most kMaxReplicaNameBytes
// (InvalidArgument naming the limit). The one check for both directions:
// the server applies it to the hellos it receives, the engine to the
// answers of the peers it dials and to inbound links.
absl::Status ValidatePeerInfo(const PeerInfo& info);

// Admission of a peer to replicate with: ValidatePeerInfo, and not this
// replica itself (`self`, FailedPrecondition: an address that leads back
// here, or a hello with our id). The one check the engine applies to the
// peers it dials and to inbound links, and the server to hellos.
absl::Status CheckPeer(const PeerInfo& info, uint64_t self);

// This replica's hello; `to` is the replica it goes to (0: not known yet),
// whose holdings it reports (see PeerInfo::held).
PeerInfo LocalInfo(const Store& store, const std::string& name, uint64_t to = 0);

}  // namespace peerkv::replication

#endif  // PEERKV_REPLICATION_SERVE_H_
