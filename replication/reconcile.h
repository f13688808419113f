// replication/reconcile.h: range-based set reconciliation between two
// replicas (Meyer's RBSR, as in Negentropy), over the 16-ary fingerprint
// tree of store/range_fingerprint.h. No kj or capnp here: the messages are
// plain structs with a compact byte codec (they travel as one Data field of
// Replica.reconcile), so that the wire cost of a child fingerprint is its
// two bytes and nothing else.
//
// The exchange. The initiator drives a session of rounds; the responder is
// stateless (every round opens a fresh view of its store).
//   1. Compare: the initiator sends every keyspace's root fingerprint (32
//      bytes of SHA-256 sum and a count). The responder answers with its own
//      root of each keyspace whose root differs (or that only one side has),
//      each followed by the expansion of that root. Equal roots: the session
//      ends after this one round (in sync: O(number of keyspaces)).
//   2. Descend, two levels a round: the initiator sends each node whose
//      fingerprint differed with its own 16 children's fingerprints; the
//      responder compares them with its children and answers a bit mask of
//      the differing ones and, for each, its expansion. An expansion of a
//      node holding at most kLeafItems registers (or at the deepest level)
//      is its items: keys, versions and truncated item hashes, no values;
//      of a bigger one, its 16 children's fingerprints. Child fingerprints
//      are truncated to kChildFingerprintBytes bytes of the sum, at an
//      offset that depends on the pass; deep in the tree, where most
//      children are empty, an occupancy mask replaces the empty ones
//      (SparseChildren). The initiator compares expanded children with its
//      own and sends the differing ones (with their children) next round;
//      it compares items with its own: the keys newer on the responder are
//      fetched, and what the initiator holds newer (or the responder
//      lacks) is pushed to the responder, which merges it (Store::Merge,
//      the normal merge: validation, skew bound, LWW) before answering.
//      Fetched records are merged here through the same Store::Merge.
//   3. Verify: once nothing is left to descend, the last fetch and push
//      travel with a roots-only compare (verify_only). The initiator
//      merges what it fetched, then compares its roots with the
//      responder's: equal roots prove the repair (full 32-byte sums);
//      still different (a truncated fingerprint collided, or writes came
//      in meanwhile), the next pass compares and descends again with other
//      bytes of the sums, up to kMaxPasses.
// So a session repairing d registers in n costs about 2 + log16(n) rounds,
// and a differing register's value crosses once, from the side that holds
// it newer (before, a leaf came with the responder's value even where it
// was the older one: about half of the values sent).
//
// Why push rather than nudging the peer to reconcile with us: the initiator
// already knows exactly which records the peer lacks, so sending them costs
// their bytes alone; a reverse session would pay the whole descent again.
// The responder merges pushed records with Store::Merge, which validates
// them and refuses clocks too far ahead as a pull's merge does, and which
// refuses a whole batch over kMaxBatchRecords: a request pushes at most
// ReconcileLimits::max_push_records (that limit) and the rest goes in the
// next rounds.
//
// Bad input. Every message is decoded with limits (DecodeReconcileRequest,
// DecodeReconcileResponse): an absurd count, depth, prefix, keyspace, key,
// value or trailing byte is InvalidArgument naming the field and the
// limit; the transport closes that link. A responder's answer must match
// what was asked (one expansion per differing root and answered node,
// items inside their node, fetched records of the keys asked for).
// Sessions are bounded in rounds and time (ReconcileLimits).
#ifndef PEERKV_REPLICATION_RECONCILE_H_
#define PEERKV_REPLICATION_RECONCILE_H_

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "replication/status.h"
#include "replication/transport.h"
#include "store/range_fingerprint.h"
#include "store/types.h"
#include "store/version.h"

namespace peerkv {
class Store;
}  // namespace peerkv

namespace peerkv::replication {

// Format of the encoded messages; a different one is refused.
inline constexpr uint8_t kReconcileFormat = 2;
// A node of at most this many registers is answered with its items (one:
// a leaf of two would often carry a value that does not differ), and so is
// a node of at most kDeepLeafItems below the depth where a node holds one
// register on average (log16 of the keyspace's count, plus one): there,
// more than one is a rare crowd, not worth another round.
inline constexpr uint64_t kLeafItems = 1;
inline constexpr uint64_t kDeepLeafItems = 4;
// Bytes of a child fingerprint's sum on the wire: two, or three in a round
// that asks about more than kWideAbove nodes (with many nodes, two bytes
// would let a differing child pass for equal about once per 40,000
// comparisons, costing a pass). At most 4.
inline constexpr int kChildFingerprintBytes = 2;
inline constexpr int kWideChildFingerprintBytes = 3;
inline constexpr size_t kWideAbove = 1024;
// Passes of one session: each takes other bytes of the sums (4 a pass).
inline constexpr int kMaxPasses = 4;

// What one message may carry or make the other side do.
inline constexpr size_t kMaxReconcileKeyspaces = 1024;  // keyspaces named
inline constexpr size_t kMaxReconcileNodes = 16384;     // nodes to expand
inline constexpr size_t kMaxReconcileFetch = 20'000;    // keys to fetch
inline constexpr size_t kMaxReconcileRecords = 20'000;  // records an answer carries
// Records a request pushes: at most kMaxBatchRecords, what one Store::Merge
// takes (the decoder refuses more).
inline constexpr size_t kMaxReconcileMessageBytes = size_t{16} << 20;

struct ReconcileLimits {
  // Rounds (request and answer) of one session.
  int max_rounds = 64;
  // Wall time of one session.
  absl::Duration max_time = absl::Seconds(60);
  // Bytes of pushed records per request, and of an answer the initiator
  // asks for (the responder lowers it to its own reply budget).
  size_t max_message_bytes = size_t{4} << 20;
  // Records pushed per request: what the responder merges in one
  // Store::Merge call, which refuses a bigger batch whole ("merge batch
  // has N records; the limit is 10000"). More wait for the next rounds.
  size_t max_push_records = kMaxBatchRecords;
  // Nodes asked for per round.
  size_t max_nodes = kMaxReconcileNodes;
};

struct KeyspaceRoot {
  std::string keyspace;
  rbsr::Fingerprint fingerprint;
  friend bool operator==(const KeyspaceRoot&, const KeyspaceRoot&) = default;
};

struct NodeRef {
  std::string keyspace;
  rbsr::NodeId node;
  // In a request: the sender's 16 children's truncated sums (the responder
  // answers the differing children), or empty (it answers the node).
  std::vector<uint32_t> children;
  // Which children hold registers (bit i: child i), when the sender says
  // (SparseChildren): the sums of empty ones then take no bytes.
  std::optional<uint16_t> occupied;
  friend bool operator==(const NodeRef&, const NodeRef&) = default;
};

struct KeyRef {
  std::string keyspace;
  std::string key;
  friend bool operator==(const KeyRef&, const KeyRef&) = default;
};

struct ReconcileRequest {
  // Which bytes of the sums child fingerprints take (from pass * 4), and
  // how many (1..4), here and in the answer.
  uint8_t pass = 0;
  uint8_t width = kChildFingerprintBytes;
  // Compare these roots (the initiator's, every keyspace it holds); the
  // answer's `differing` lists the responder's side of those that differ,
  // each with the expansion of its root unless `verify_only`: the last
  // round of a pass, whose answer the initiator compares with its own
  // roots once it merged the records fetched in the same round.
  bool compare = false;
  bool verify_only = false;
  std::vector<KeyspaceRoot> roots;
  // Nodes to expand, in order.
  std::vector<NodeRef> expand;
  // Records to send with their values, in order.
  std::vector<KeyRef> fetch;
  // Records the responder lacks (or holds older): it merges them first.
  std::vector<Record> push;
  // Bytes the answer may hold (0: the responder's own budget).
  uint64_t max_answer_bytes = 0;
  friend bool operator==(const ReconcileRequest&, const ReconcileRequest&) = default;
};

// A node as the responder answered it.
struct Expansion {
  // What the responder sends for a leaf is kItemKeys: keys, versions and
  // truncated item hashes, no values (the initiator fetches the values it
  // lacks in the last round, so a register newer on the initiator costs no
  // value on the wire). kItems and kItemsWithoutValues are still read.
  enum class Kind : uint8_t {
    kChildren = 0,
    kItems = 1,
    kItemsWithoutValues = 2,
    kItemKeys = 3,
  };
  Kind kind = Kind::kChildren;
  // kChildren: the 16 children's truncated sums, and which hold registers
  // when told (as NodeRef::occupied).
  std::vector<uint32_t> children;
  std::optional<uint16_t> occupied;
  // kItem*: the node's registers in position order (keyspace left empty;
  // values only for kItems).
  std::vector<Record> items;
  // kItemKeys: each item's hash truncated as a child fingerprint (the
  // answer's width, the request's pass), to tell equal versions with
  // different values (clones) from equal registers.
  std::vector<uint32_t> hashes;
  friend bool operator==(const Expansion&, const Expansion&) = default;
};

struct ReconcileResponse {
  // The request's width: bytes of each child fingerprint.
  uint8_t width = kChildFingerprintBytes;
  // The responder's roots of the keyspaces that differ (when asked to
  // compare), in name order.
  std::vector<KeyspaceRoot> differing;
  // One per differing root (its root node; none for a verify_only
  // request), then for each answered node of
  // the request's `expand`, in order: one per set bit of its mask (the
  // differing children, in index order) if it came with children, else
  // one (the node itself).
  std::vector<Expansion> expansions;
  // How many of `expand` were answered (a prefix; ask the rest again), and
  // for each, the children that differ (bit i: child i).
  uint64_t expanded = 0;
  std::vector<uint16_t> masks;
  // The records of a prefix of `fetch`, in order; nullopt: not held.
  // Keyspace and key are left empty (they are the request's).
  std::vector<std::optional<Record>> fetched;
  // What merging `push` did.
  uint64_t push_won = 0;
  uint64_t push_refused = 0;
  friend bool operator==(const ReconcileResponse&, const ReconcileResponse&) = default;
};

std::string EncodeReconcileRequest(const ReconcileRequest& request);
std::string EncodeReconcileResponse(const ReconcileResponse& response);
// InvalidArgument naming the field and the limit for anything out of
// bounds; `value_limit` bounds pushed and answered values. Replicas decode
// with the protocol's kMaxValueBytes, not their own (maybe lower) value
// limit: a peer does not know that limit, so a larger value is no fault of
// the link; DropValuesOverLimit then leaves it out before the merge.
absl::StatusOr<ReconcileRequest> DecodeReconcileRequest(std::string_view bytes,
                                                        size_t value_limit);
absl::StatusOr<ReconcileResponse> DecodeReconcileResponse(std::string_view bytes,
                                                          size_t value_limit);

// Removes from `records` those whose value is over `value_limit` (this
// store could not hold them; a pull never sends them, see
// PullRequest::max_value_bytes) and returns how many it removed.
size_t DropValuesOverLimit(std::vector<Record>& records, size_t value_limit);

// The `width` bytes of a sum a child fingerprint takes in `pass`.
uint32_t TruncatedSum(const rbsr::Sum256& sum, int pass, int width);

// The occupancy to send with 16 children of which `occupied` hold
// registers: the mask when leaving the empty ones' sums out (2 bytes for
// the mask) is cheaper, nullopt when sending all 16 sums is. Deep in the
// tree most children are empty (a node at the depth of one register on
// average has one or two).
std::optional<uint16_t> SparseChildren(uint16_t occupied, int width);

// What a session reads of one replica: the store (StoreReconcileSource)
// or, in tests, a fake.
class ReconcileSource {
 public:
  virtual ~ReconcileSource() = default;
  // Every keyspace holding a register, in name order.
  virtual absl::StatusOr<std::vector<KeyspaceRoot>> Roots() = 0;
  virtual absl::StatusOr<std::unique_ptr<rbsr::RangeView>> View(std::string_view keyspace) = 0;
  virtual absl::StatusOr<std::optional<Record>> Get(std::string_view keyspace,
                                                    std::string_view key) = 0;
  // Whether this side reconciles `keyspace` with the peer at all (a
  // friend's link: only what the peer may read here). A session covers the
  // keyspaces both sides reconcile: a root the other side names or answers
  // for a keyspace this side does not reconcile counts as equal, so that
  // two sides whose policies disagree (one has not merged a revocation the
  // other has) still end in sync over what they share, instead of one
  // pushing or fetching forever what the other will not take or show.
  virtual bool Reconciles(std::string_view keyspace) const {
    (void)keyspace;
    return true;
  }
};

// The sum of every keyspace's root fingerprint: equal on two stores that
// hold the same registers (O(number of keyspaces)).
absl::StatusOr<rbsr::Fingerprint> StoreFingerprint(const Store& store);
// The sum over the keyspaces `readable` accepts (a friend's link).
absl::StatusOr<rbsr::Fingerprint> StoreFingerprint(const Store& store,
                                                   const KeyspaceFilter& readable);

// A ReconcileSource over a Store (borrowed). It keeps the last view it
// opened while the store commits nothing (one view: keep the source for
// the rounds of a session, not longer). Not thread-safe.
std::unique_ptr<ReconcileSource> StoreReconcileSource(const Store& store);
// `inner` (borrowed) as a friend's link may see it: only the keyspaces
// `readable` accepts are listed; any other is an empty keyspace (its view
// is empty, its keys absent), exactly as one that does not exist, so an
// answer neither reveals nor confirms it.
std::unique_ptr<ReconcileSource> FilteredReconcileSource(
    ReconcileSource& inner, std::shared_ptr<const KeyspaceFilter> readable);

// What a replica refused of a peer's records in reconciliation (Store::Merge
// listed them as refused: the merge gate's bad signature or non-writer, a
// validation rule): the register as the peer holds it. A session that
// found one would fetch it (or be pushed it) again every pass and every
// session, the refusal counted each time, and never end in sync. So the
// refusing side remembers it (RefusedMemory, for as long as the peer's
// link lasts: the initiator's per peer, the responder's per link) and
// reconciles as if it held that register (RefusedOverlay): its fingerprints
// then agree with the peer's, the record is neither fetched nor pushed
// again, and the session ends in sync. A newer version of the key on
// either side makes the entry moot (the overlay shows a register only
// while it is newer than the one held); a record refused under a policy
// that later allows it is fetched again once the link reconnects.
// Not thread-safe.
class RefusedMemory {
 public:
  // Entries kept; the oldest is forgotten beyond it (a session then
  // fetches it once more).
  static constexpr size_t kMaxEntries = 4096;

  // The records of `offered` (as sent, with values) that `merged` lists
  // as refused for good: not quarantined, and not refused for want of
  // room (ResourceExhausted) or a store that was unavailable.
  void Note(const std::vector<Record>& offered, const MergeResult& merged);
  // And the old tombstones `merged` dropped as stale (their key's newer
  // tombstone was collected here): on a friend's link only. A friend's
  // device never collects this user's tombstones (none of its watermarks
  // covers them), so it keeps its copy for good, and every session with
  // it ended "roots still differ" over the keys collected here. An own
  // device collects its copy in time: remembered, it would show as held
  // here once gone there.
  void NoteWithStaleTombstones(const std::vector<Record>& offered, const MergeResult& merged);
  size_t size() const { return order_.size(); }
  bool empty() const { return order_.empty(); }
  void Clear();

  struct Entry {
    Version version;
    bool deleted = false;
    rbsr::Sum256 hash;
  };
  // keyspace -> key -> entry.
  const std::map<std::string, std::map<std::string, Entry, std::less<>>, std::less<>>& entries()
      const {
    return entries_;
  }

 private:
  void Remember(const std::vector<Record>& offered, const std::vector<RefusedRecord>& refusals);

  std::map<std::string, std::map<std::string, Entry, std::less<>>, std::less<>> entries_;
  std::deque<std::pair<std::string, std::string>> order_;
};

// `inner` (borrowed) as if it held each register `memory` (borrowed)
// remembers wherever that one is newer than what `inner` holds: roots and
// views include it (in place of the older register held), Get answers
// what is really held. Reconciles is `inner`'s.
std::unique_ptr<ReconcileSource> RefusedOverlay(ReconcileSource& inner,
                                                const RefusedMemory& memory);

// The responder's side of one round, after it merged `request.push`
// (whose counts it fills in itself). `max_bytes` bounds the answer.
absl::StatusOr<ReconcileResponse> ServeReconcile(ReconcileSource& source,
                                                 const ReconcileRequest& request,
                                                 size_t max_bytes);

// The initiator's side: call Next() for the request to send (nullopt when
// done), send it, and give the answer to OnResponse, which returns the
// records to merge here (Store::Merge) before the next Next(). Tell it what
// the merge did with NoteMerged. Single-threaded.
class ReconcileSession {
 public:
  ReconcileSession(ReconcileSource& local, ReconcileLimits limits = {},
                   absl::Time now = absl::Now());

  absl::StatusOr<std::optional<ReconcileRequest>> Next(absl::Time now = absl::Now());
  // The encoded size of what was received counts into the report. `now` is
  // read from the same clock as the constructor's (the report's time).
  absl::StatusOr<std::vector<Record>> OnResponse(const ReconcileResponse& response,
                                                 size_t encoded_bytes = 0,
                                                 absl::Time now = absl::Now());
  void NoteMerged(uint64_t won, uint64_t refused);
  void NoteSent(size_t encoded_bytes) { report_.bytes_sent += encoded_bytes; }

  const ReconcileReport& report() const { return report_; }
  bool done() const { return done_; }

 private:
  KeyspaceDiff& Diff(const std::string& keyspace);
  absl::Status TakeExpansion(rbsr::RangeView& view, const NodeRef& ref,
                             const Expansion& expansion, std::vector<Record>& merge);
  absl::StatusOr<rbsr::RangeView*> LocalView(const std::string& keyspace);
  // OnResponse after the answer was checked and roots of keyspaces not
  // reconciled here were dropped.
  absl::StatusOr<std::vector<Record>> TakeResponse(const ReconcileResponse& response,
                                                   absl::Time now);

  ReconcileSource& local_;
  const ReconcileLimits limits_;
  const absl::Time start_;
  ReconcileReport report_;
  bool done_ = false;
  int pass_ = 0;
  // Compares sent (the first is round 1; later ones verify).
  int compares_ = 0;
  // What the last request asked, to check the answer against.
  std::optional<ReconcileRequest> sent_;
  std::deque<NodeRef> expand_;
  std::deque<KeyRef> fetch_;
  std::deque<Record> push_;
  // A verify_only compare was answered with differing roots (or with
  // records to merge): Next() compares the local roots, after the merge,
  // with what the responder holds (verify_theirs_, and for keyspaces not
  // listed there the roots we sent, verify_sent_).
  bool verify_pending_ = false;
  std::vector<KeyspaceRoot> verify_theirs_;
  std::vector<KeyspaceRoot> verify_sent_;
  // The last verify failed: the next request is a full compare (new pass).
  bool full_compare_next_ = false;
  // Local views opened while taking one answer (closed after it).
  std::vector<std::pair<std::string, std::unique_ptr<rbsr::RangeView>>> views_;
};

}  // namespace peerkv::replication

#endif  // PEERKV_REPLICATION_RECONCILE_H_
