// store/range_table.cc: the "ranges" database: encoding, per-commit deltas
// and their read-modify-write, and the recomputation from the records that
// upgrades and scrubs it.
#include "store/range_table.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "common/macros.h"
#include "store/codec.h"
#include "store/lmdb_util.h"

namespace peerkv::ranges {
namespace {

using lmdb::Val;
using lmdb::View;

// `to` - `from`, as a delta.
Delta Difference(const rbsr::Fingerprint& to, const rbsr::Fingerprint& from) {
  Delta d{to.sum, static_cast<int64_t>(to.count - from.count)};
  d.sum.Subtract(from.sum);
  return d;
}

// Adds `delta` to the entry under `key` (absent: zero); deletes it when it
// becomes zero.
absl::Status AddToEntry(MDB_cursor* cursor, const std::string& key, const Delta& delta) {
  if (delta.zero()) return absl::OkStatus();
  MDB_val k = Val(key), v;
  rbsr::Fingerprint f;
  int rc = mdb_cursor_get(cursor, &k, &v, MDB_SET_KEY);
  const bool found = rc == MDB_SUCCESS;
  if (found) {
    PEERKV_ASSIGN_OR_RETURN(f, DecodeFingerprint(View(v)));
  } else if (rc != MDB_NOTFOUND) {
    return lmdb::Error(rc, "read range fingerprint");
  }
  f = delta.Applied(f);
  if (f.count == 0 && f.sum == rbsr::Sum256{}) {
    if (!found) return absl::OkStatus();
    return lmdb::Error(mdb_cursor_del(cursor, 0), "delete range fingerprint");
  }
  const std::string value = EncodeFingerprint(f);
  MDB_val nv = Val(value);
  k = Val(key);
  return lmdb::Error(mdb_cursor_put(cursor, &k, &nv, found ? MDB_CURRENT : 0),
                     "write range fingerprint");
}

}  // namespace

std::string RootKey(std::string_view keyspace) {
  std::string key(keyspace);
  key.push_back('\0');
  return key;
}

std::string BucketKey(std::string_view keyspace, uint32_t bucket) {
  std::string key = RootKey(keyspace);
  key.push_back(static_cast<char>(bucket));
  return key;
}

std::string EncodeFingerprint(const rbsr::Fingerprint& fingerprint) {
  std::string out = fingerprint.sum.ToBytes();
  codec::PutFixed64(&out, fingerprint.count);
  return out;
}

absl::StatusOr<rbsr::Fingerprint> DecodeFingerprint(std::string_view stored) {
  if (stored.size() != kFingerprintBytes) {
    return absl::DataLossError(absl::StrFormat(
        "stored range fingerprint is %d bytes, not %d", stored.size(), kFingerprintBytes));
  }
  rbsr::Fingerprint f;
  PEERKV_RETURN_IF_ERROR(rbsr::Sum256::FromBytes(stored.substr(0, 32), f.sum));
  f.count = codec::GetFixed64(stored.data() + 32);
  return f;
}

Deltas::Keyspace& Deltas::Find(std::string_view keyspace) {
  // A group's records come sorted by keyspace: mostly the last one again.
  if (last_ != nullptr && last_->name == keyspace) return *last_;
  auto it = index_.find(std::string(keyspace));
  if (it == index_.end()) {
    keyspaces_.push_back(std::make_unique<Keyspace>());
    keyspaces_.back()->name = std::string(keyspace);
    it = index_.emplace(keyspaces_.back()->name, keyspaces_.back().get()).first;
  }
  last_ = it->second;
  return *last_;
}

void Deltas::Add(std::string_view keyspace, uint64_t position, const rbsr::Sum256& hash) {
  AddToBucket(keyspace, BucketOf(position), Delta{hash, 1});
}

void Deltas::Remove(std::string_view keyspace, uint64_t position, const rbsr::Sum256& hash) {
  Delta d{rbsr::Sum256{}, -1};
  d.sum.Subtract(hash);
  AddToBucket(keyspace, BucketOf(position), d);
}

void Deltas::AddToBucket(std::string_view keyspace, uint32_t bucket, const Delta& delta) {
  Keyspace& ks = Find(keyspace);
  ks.buckets[bucket].Add(delta);
  ks.total.Add(delta);
}

void Deltas::AddToRoot(std::string_view keyspace, const Delta& delta) {
  Find(keyspace).total.Add(delta);
}

uint64_t Deltas::FingerprintDelta() const {
  uint64_t low = 0;
  for (const auto& ks : keyspaces_) low += ks->total.sum.limbs[0];
  return low;
}

absl::Status ApplyDeltas(MDB_txn* txn, MDB_dbi ranges, const Deltas& deltas) {
  lmdb::Cursor cursor;
  PEERKV_RETURN_IF_ERROR(cursor.Open(txn, ranges));
  std::vector<uint32_t> touched;
  for (const auto& ks : deltas.keyspaces()) {
    PEERKV_RETURN_IF_ERROR(AddToEntry(cursor.get(), RootKey(ks->name), ks->total));
    // In key order: neighbouring buckets share the table's pages.
    touched.clear();
    for (const auto& [bucket, delta] : ks->buckets) touched.push_back(bucket);
    std::sort(touched.begin(), touched.end());
    std::string key = BucketKey(ks->name, 0);
    for (uint32_t bucket : touched) {
      key.back() = static_cast<char>(bucket);
      PEERKV_RETURN_IF_ERROR(AddToEntry(cursor.get(), key, ks->buckets.at(bucket)));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::pair<std::string, rbsr::Fingerprint>>> ReadRoots(
    MDB_txn* txn, MDB_dbi ranges) {
  std::vector<std::pair<std::string, rbsr::Fingerprint>> out;
  lmdb::Cursor cursor;
  PEERKV_RETURN_IF_ERROR(cursor.Open(txn, ranges));
  MDB_val k, v;
  int rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_FIRST);
  std::string next;
  while (rc == MDB_SUCCESS) {
    const std::string_view key = View(k);
    const size_t end = key.find('\0');
    if (end == std::string_view::npos) {
      return absl::DataLossError("range fingerprint key without a keyspace terminator");
    }
    rbsr::Fingerprint root;
    if (end + 1 == key.size()) {
      PEERKV_ASSIGN_OR_RETURN(root, DecodeFingerprint(View(v)));
    }  // else: buckets without a root (only a damaged table): a zero root
    out.emplace_back(std::string(key.substr(0, end)), root);
    // The next keyspace: past every key that starts with this one's 0x00.
    next = out.back().first;
    next.push_back('\x01');
    k = Val(next);
    rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_SET_RANGE);
  }
  if (rc != MDB_NOTFOUND) return lmdb::Error(rc, "read range roots");
  return out;
}

absl::StatusOr<StoredLevels> ReadLevels(MDB_txn* txn, MDB_dbi ranges,
                                        std::string_view keyspace) {
  StoredLevels out;
  lmdb::Cursor cursor;
  PEERKV_RETURN_IF_ERROR(cursor.Open(txn, ranges));
  const std::string root_key = RootKey(keyspace);
  MDB_val k = Val(root_key), v;
  int rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_SET_RANGE);
  while (rc == MDB_SUCCESS) {
    const std::string_view key = View(k);
    if (!key.starts_with(root_key)) break;
    PEERKV_ASSIGN_OR_RETURN(const rbsr::Fingerprint f, DecodeFingerprint(View(v)));
    if (key.size() == root_key.size()) {
      out.root = f;
    } else if (key.size() == root_key.size() + 1 &&
               static_cast<unsigned char>(key.back()) < kBuckets) {
      out.buckets[static_cast<unsigned char>(key.back())] = f;
    } else {
      return absl::DataLossError(absl::StrFormat(
          "range fingerprint key of keyspace %s is %d bytes", keyspace, key.size()));
    }
    rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_NEXT);
  }
  if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) return lmdb::Error(rc, "read range levels");
  return out;
}

namespace {

// Adds to `diff` what makes the stored levels of `keyspace` equal
// `computed`.
absl::Status DiffKeyspace(MDB_txn* txn, MDB_dbi ranges, const std::string& keyspace,
                          const StoredLevels& computed, Diff* diff) {
  PEERKV_ASSIGN_OR_RETURN(const StoredLevels stored, ReadLevels(txn, ranges, keyspace));
  bool differs = false;
  Delta buckets_total;
  for (int b = 0; b < kBuckets; ++b) {
    if (computed.buckets[b] == stored.buckets[b]) continue;
    const Delta d = Difference(computed.buckets[b], stored.buckets[b]);
    diff->deltas.AddToBucket(keyspace, b, d);
    buckets_total.Add(d);
    differs = true;
  }
  // The root moves with its buckets' deltas; whatever else it is off by
  // (a root that disagrees with its own buckets) is added to it alone.
  const rbsr::Fingerprint root_after = buckets_total.Applied(stored.root);
  if (!(root_after == computed.root)) {
    diff->deltas.AddToRoot(keyspace, Difference(computed.root, root_after));
    differs = true;
  }
  if (differs) diff->differed.push_back(keyspace);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Diff> DiffFromRecords(MDB_txn* txn, const tables::Dbis& dbis,
                                     const std::atomic<bool>* cancel) {
  Diff diff;
  PEERKV_ASSIGN_OR_RETURN(const auto stored_roots, ReadRoots(txn, dbis.ranges));
  size_t next_stored = 0;
  // Keyspaces the table has and the records do not: all of it is stale.
  auto stale_before = [&](std::string_view keyspace) -> absl::Status {
    while (next_stored < stored_roots.size() &&
           (keyspace.empty() || stored_roots[next_stored].first < keyspace)) {
      PEERKV_RETURN_IF_ERROR(
          DiffKeyspace(txn, dbis.ranges, stored_roots[next_stored].first, StoredLevels{}, &diff));
      ++next_stored;
    }
    if (next_stored < stored_roots.size() && stored_roots[next_stored].first == keyspace) {
      ++next_stored;
    }
    return absl::OkStatus();
  };

  lmdb::Cursor cursor;
  PEERKV_RETURN_IF_ERROR(cursor.Open(txn, dbis.records));
  std::string current;
  StoredLevels computed;
  MDB_val k, v;
  int rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_FIRST);
  for (uint64_t n = 0; rc == MDB_SUCCESS; ++n) {
    if (cancel != nullptr && (n & 1023) == 0 && cancel->load()) {
      return absl::CancelledError("range fingerprint recomputation stopped: store closing");
    }
    const std::string_view record_key = View(k);
    std::string_view keyspace, key;
    PEERKV_RETURN_IF_ERROR(codec::SplitRecordKey(record_key, &keyspace, &key));
    if (keyspace != current) {
      if (!current.empty()) {
        PEERKV_RETURN_IF_ERROR(DiffKeyspace(txn, dbis.ranges, current, computed, &diff));
      }
      current = std::string(keyspace);
      computed = StoredLevels{};
      PEERKV_RETURN_IF_ERROR(stale_before(current));
    }
    PEERKV_ASSIGN_OR_RETURN(const codec::RecordHeader header,
                            codec::DecodeRecordHeader(View(v)));
    PEERKV_ASSIGN_OR_RETURN(const std::string_view value,
                            tables::ReadValue(txn, dbis.log, record_key, header.seq));
    const rbsr::Sum256 hash =
        rbsr::ItemHash(keyspace, key, header.version, header.deleted, value);
    computed.root.Add(hash);
    diff.fingerprint += hash.limbs[0];
    computed.buckets[BucketOf(rbsr::KeyPosition(key))].Add(hash);
    rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_NEXT);
  }
  if (rc != MDB_NOTFOUND) return lmdb::Error(rc, "read records for range fingerprints");
  if (!current.empty()) {
    PEERKV_RETURN_IF_ERROR(DiffKeyspace(txn, dbis.ranges, current, computed, &diff));
  }
  PEERKV_RETURN_IF_ERROR(stale_before(""));
  std::sort(diff.differed.begin(), diff.differed.end());
  return diff;
}

}  // namespace peerkv::ranges
