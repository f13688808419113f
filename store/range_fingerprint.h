// store/range_fingerprint.h: the fingerprints that range-based set
// reconciliation (replication/reconcile*) compares. Every register of a
// keyspace has a position in a 64-bit space (a stable hash of its key) and
// an item hash (SHA-256 of keyspace, key, version, tombstone flag and
// value). The space is cut into a 16-ary tree of nodes by position prefix;
// a node's fingerprint is the sum of its items' hashes modulo 2^256 and
// their count, so fingerprints add and subtract, equal sets have equal
// fingerprints whatever order they were written in, and making two
// different sets collide means finding SHA-256 sums that collide. The
// store keeps each keyspace's root and its 256 depth-2 nodes inside its
// write transaction (store/range_table.h; costs in store.h: one SHA-256
// per changed register, two for an overwrite, and at most 257 small
// read-modify-writes per keyspace per commit), and the roots in memory
// (Store::KeyspaceFingerprints, Store::OpenRangeView); this header is the
// vocabulary both sides share, with no LMDB in it.
//
// The store's side (store.h):
//   // Every keyspace that holds a register, with its root fingerprint, in
//   // name order: O(number of keyspaces), no scan.
//   absl::StatusOr<std::vector<std::pair<std::string, rbsr::Fingerprint>>>
//   KeyspaceFingerprints() const;
//   // A view of one keyspace (an unknown keyspace is an empty view).
//   absl::StatusOr<std::unique_ptr<rbsr::RangeView>> OpenRangeView(
//       std::string_view keyspace) const;
#ifndef PEERKV_STORE_RANGE_FINGERPRINT_H_
#define PEERKV_STORE_RANGE_FINGERPRINT_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "store/version.h"

namespace peerkv::rbsr {

// A node has 16 children: each level takes 4 more bits of the position.
inline constexpr int kBranchBits = 4;
inline constexpr int kBranching = 1 << kBranchBits;
// Depth 16 nodes hold one position each (64 bits / 4).
inline constexpr int kMaxDepth = 64 / kBranchBits;

// A 256-bit unsigned integer modulo 2^256, as four little-endian 64-bit
// limbs (limbs[0] is the least significant).
struct Sum256 {
  std::array<uint64_t, 4> limbs{};

  void Add(const Sum256& other) {
    unsigned __int128 carry = 0;
    for (int i = 0; i < 4; ++i) {
      carry += static_cast<unsigned __int128>(limbs[i]) + other.limbs[i];
      limbs[i] = static_cast<uint64_t>(carry);
      carry >>= 64;
    }
  }
  void Subtract(const Sum256& other) {
    uint64_t borrow = 0;
    for (int i = 0; i < 4; ++i) {
      const uint64_t a = limbs[i];
      const uint64_t b = other.limbs[i];
      const uint64_t d = a - b - borrow;
      borrow = (a < b || (a == b && borrow)) ? 1 : 0;
      limbs[i] = d;
    }
  }
  // The 32 bytes, little-endian (the wire and disk form).
  std::string ToBytes() const;
  // Refuses anything but 32 bytes.
  static absl::Status FromBytes(std::string_view bytes, Sum256& out);

  friend bool operator==(const Sum256&, const Sum256&) = default;
};

// The fingerprint of a set of items.
struct Fingerprint {
  Sum256 sum;
  uint64_t count = 0;

  void Add(const Sum256& item) {
    sum.Add(item);
    ++count;
  }
  void Remove(const Sum256& item) {
    sum.Subtract(item);
    --count;
  }
  void Add(const Fingerprint& other) {
    sum.Add(other.sum);
    count += other.count;
  }
  friend bool operator==(const Fingerprint&, const Fingerprint&) = default;
};

// A node of the tree: the positions whose top `depth * 4` bits equal
// `prefix` (prefix < 16^depth; depth 0 is the whole keyspace, prefix 0).
struct NodeId {
  uint8_t depth = 0;
  uint64_t prefix = 0;

  bool Valid() const;
  bool Contains(uint64_t position) const;
  // Child i (0..15); depth < kMaxDepth.
  NodeId Child(int i) const;
  friend bool operator==(const NodeId&, const NodeId&) = default;
};

// Where a key lies in the position space: a stable hash of the key alone
// (the same on every replica, whatever version it holds).
uint64_t KeyPosition(std::string_view key);

// SHA-256 over keyspace, key, version, tombstone flag and value, each
// length-prefixed, as a Sum256.
Sum256 ItemHash(std::string_view keyspace, std::string_view key, const Version& version,
                bool deleted, std::string_view value);

// One register as a reconcile session sees it.
struct RangeItem {
  uint64_t position = 0;
  std::string_view key;
  Version version;
  bool deleted = false;
  Sum256 hash;
};

// A read-only view of one keyspace's registers for the length of a
// reconcile session. It pins no LMDB transaction (so a long session does
// not hold up the store's writer): what it answers was read at open, and,
// the first time a session asks below the levels the store maintains, from
// one scan of the keyspace (O(registers of the keyspace), memory bounded by
// StoreOptions::max_range_view_bytes, ResourceExhausted beyond it). After
// that scan every answer, upper levels included, is from the scan's
// snapshot; before it, from the open's. So answers are consistent with one
// snapshot at a time, which may move forward once. Not thread-safe: one
// session uses it from one thread.
class RangeView {
 public:
  virtual ~RangeView() = default;
  // The fingerprint of `node`: O(1) for the levels the store maintains,
  // otherwise computed from the node's items.
  virtual absl::StatusOr<Fingerprint> FingerprintOf(const NodeId& node) = 0;
  // The items of `node`, in position order. The views die when `fn`
  // returns.
  virtual absl::Status ForEachItem(const NodeId& node,
                                   absl::FunctionRef<void(const RangeItem&)> fn) = 0;
};

}  // namespace peerkv::rbsr

#endif  // PEERKV_STORE_RANGE_FINGERPRINT_H_
