// store/quarantine.h: records whose clock is too far ahead of ours, kept
// aside (see README "Quarantine"). The store's "quarantine" table holds
// them, keyed by hlc first so that the earliest due comes first; Index is
// its in-memory mirror (counts, bytes, the earliest hlc per origin for the
// watermark cap, the status summary). Internal to store/.
#ifndef PEERKV_STORE_QUARANTINE_H_
#define PEERKV_STORE_QUARANTINE_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "store/types.h"
#include "store/version.h"
#include "store/watermarks.h"

namespace peerkv::quarantine {

// Table key: hlc and origin (big-endian), then the records key (keyspace,
// NUL, key). Value: one flags byte (bit 0: a tombstone; bit 1: a signature
// follows, its length (2, little-endian) and bytes: Record::signature),
// then the value.
std::string EncodeKey(const Record& record);
std::string EncodeValue(const Record& record);
// A table entry back to its record, checked as a remote record is
// (`max_value_bytes`). InvalidArgument or DataLoss names what is wrong.
absl::StatusOr<Record> Decode(std::string_view key, std::string_view value,
                              size_t max_value_bytes);
// What an entry counts for against the byte bound.
inline size_t EntryBytes(std::string_view key, std::string_view value) {
  return key.size() + value.size();
}

// The table's entries as the bounds, the cap and status need them. Not
// thread-safe: the store guards it.
class Index {
 public:
  struct Entry {
    uint64_t origin = 0;
    uint64_t hlc = 0;
    size_t bytes = 0;
  };

  bool Contains(const std::string& key) const { return entries_.count(key) > 0; }
  // REQUIRES: not contained.
  void Add(const std::string& key, const Entry& entry);
  // No-op if not contained.
  void Remove(const std::string& key);

  size_t records() const { return entries_.size(); }
  size_t bytes() const { return bytes_; }
  // Smallest hlc held of `origin`; nullopt if none.
  std::optional<uint64_t> MinHlcOf(uint64_t origin) const;
  // Lowers each claim to just below the smallest hlc quarantined of its
  // origin: a watermark must never cover a record we do not hold.
  void Cap(Watermarks& claims) const;
  // Keys in hlc order (earliest due first).
  const std::map<std::string, Entry>& entries() const { return entries_; }
  // Per origin: how many, and from when to when they become mergeable
  // (hlc's millis minus `max_skew_ms`); at most `limit` origins, those due
  // first.
  std::vector<QuarantinedOrigin> Summary(int64_t max_skew_ms, size_t limit) const;
  size_t origins() const { return by_origin_.size(); }

 private:
  std::map<std::string, Entry> entries_;
  std::map<uint64_t, std::multiset<uint64_t>> by_origin_;
  size_t bytes_ = 0;
};

}  // namespace peerkv::quarantine

#endif  // PEERKV_STORE_QUARANTINE_H_
