// store/range_table.h: the stored levels of the range-fingerprint tree
// (store/range_fingerprint.h) in the store's "ranges" database: per
// keyspace its root and its kBuckets nodes at depth kStoredDepth, each as a
// Fingerprint. The writer aggregates a group commit's changes per bucket
// (Deltas) and adds them with one read-modify-write per touched bucket and
// per touched keyspace root, in the commit's own transaction. Internal to
// store/.
//
//   ranges  key:   keyspace 0x00                     (the root)
//                  keyspace 0x00 bucket(1, the top 8 position bits)
//           value: sum(32, little-endian) count(8)   (a Fingerprint)
//
// An entry whose count and sum are both zero is deleted, so a keyspace
// with no register has no entries.
#ifndef PEERKV_STORE_RANGE_TABLE_H_
#define PEERKV_STORE_RANGE_TABLE_H_

#include <lmdb.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "store/range_fingerprint.h"
#include "store/tables.h"

namespace peerkv::ranges {

// The depth the table keeps (besides the root). 16^2 = 256 buckets: a
// bucket of a 1,000,000-register keyspace holds about 4,000 registers.
// bench/README.md has the measurement behind the choice.
inline constexpr int kStoredDepth = 2;
inline constexpr int kBuckets = 1 << (rbsr::kBranchBits * kStoredDepth);
static_assert(kBuckets <= 256, "the bucket key is one byte");

inline uint32_t BucketOf(uint64_t position) {
  return static_cast<uint32_t>(position >> (64 - rbsr::kBranchBits * kStoredDepth));
}

std::string RootKey(std::string_view keyspace);
std::string BucketKey(std::string_view keyspace, uint32_t bucket);

inline constexpr size_t kFingerprintBytes = 32 + 8;
std::string EncodeFingerprint(const rbsr::Fingerprint& fingerprint);
// DataLoss unless 40 bytes.
absl::StatusOr<rbsr::Fingerprint> DecodeFingerprint(std::string_view stored);

// A change to a fingerprint: a sum modulo 2^256 and a signed count.
struct Delta {
  rbsr::Sum256 sum;
  int64_t count = 0;

  bool zero() const { return count == 0 && sum == rbsr::Sum256{}; }
  void Add(const Delta& other) {
    sum.Add(other.sum);
    count += other.count;
  }
  // `f` changed by this delta.
  rbsr::Fingerprint Applied(rbsr::Fingerprint f) const {
    f.sum.Add(sum);
    f.count += static_cast<uint64_t>(count);
    return f;
  }
};

// The changes one transaction makes to the table, per keyspace and bucket.
class Deltas {
 public:
  struct Keyspace {
    std::string name;
    absl::flat_hash_map<uint32_t, Delta> buckets;
    // What the root moves by: the buckets' sum (and any AddToRoot).
    Delta total;
  };

  // A register with `hash` at `position` of `keyspace` appeared or went.
  void Add(std::string_view keyspace, uint64_t position, const rbsr::Sum256& hash);
  void Remove(std::string_view keyspace, uint64_t position, const rbsr::Sum256& hash);
  // `delta` added to one bucket.
  void AddToBucket(std::string_view keyspace, uint32_t bucket, const Delta& delta);
  // `delta` added to the root alone (a root that disagrees with its
  // buckets: a damaged table).
  void AddToRoot(std::string_view keyspace, const Delta& delta);

  bool empty() const { return keyspaces_.empty(); }
  // In the order first touched.
  const std::vector<std::unique_ptr<Keyspace>>& keyspaces() const { return keyspaces_; }
  // The low 64 bits of the total sum: what StoreStats::fingerprint moves by.
  uint64_t FingerprintDelta() const;

 private:
  Keyspace& Find(std::string_view keyspace);

  absl::flat_hash_map<std::string, Keyspace*> index_;
  std::vector<std::unique_ptr<Keyspace>> keyspaces_;
  Keyspace* last_ = nullptr;
};

// Adds `deltas` to the table in `txn`: one read-modify-write per touched
// bucket and one per touched root.
absl::Status ApplyDeltas(MDB_txn* txn, MDB_dbi ranges, const Deltas& deltas);

// Every keyspace's root in name order: one seek per keyspace.
absl::StatusOr<std::vector<std::pair<std::string, rbsr::Fingerprint>>> ReadRoots(
    MDB_txn* txn, MDB_dbi ranges);

// A keyspace's stored root and buckets (zero where absent).
struct StoredLevels {
  rbsr::Fingerprint root;
  std::array<rbsr::Fingerprint, kBuckets> buckets{};
};
absl::StatusOr<StoredLevels> ReadLevels(MDB_txn* txn, MDB_dbi ranges,
                                        std::string_view keyspace);

// What the table should hold, computed from the records (their values read
// from the log) one keyspace at a time, against what it does hold: the
// deltas that would make it right, and the keyspaces that differ, in name
// order. O(records) reads and hashes; O(one keyspace's buckets) memory.
// Stops with Cancelled once `cancel` (if given) is set.
struct Diff {
  Deltas deltas;
  std::vector<std::string> differed;
  // The low 64 bits of the computed sum over every keyspace: what
  // StoreStats::fingerprint should be.
  uint64_t fingerprint = 0;
};
absl::StatusOr<Diff> DiffFromRecords(MDB_txn* txn, const tables::Dbis& dbis,
                                     const std::atomic<bool>* cancel = nullptr);

}  // namespace peerkv::ranges

#endif  // PEERKV_STORE_RANGE_TABLE_H_
