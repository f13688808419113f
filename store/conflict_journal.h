// store/conflict_journal.h: the conflict journal's byte layout and its
// in-memory mirror (README "Conflict journal"). The store's "conflicts"
// table holds, per keyspace in the order they were found, the values that
// lost to a concurrent write; Index mirrors it (per keyspace: entries,
// bytes, the next id, the count dropped over the bounds) so that bounds
// are kept without reading the table. Internal to store/.
#ifndef PEERKV_STORE_CONFLICT_JOURNAL_H_
#define PEERKV_STORE_CONFLICT_JOURNAL_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "store/types.h"
#include "store/version.h"

namespace peerkv::conflicts {

// Table key: keyspace, 0x00, id (8, big-endian): a keyspace's entries are
// adjacent, oldest first. Value: key-length(2) key flags(1) (bit 0: the
// loser is a tombstone) loser hlc(8) origin(8) winner hlc(8) origin(8)
// when_ms(8) loser-value.
std::string EncodeKey(std::string_view keyspace, uint64_t id);
absl::Status DecodeKey(std::string_view stored, std::string_view* keyspace, uint64_t* id);
std::string EncodeValue(const ConflictEntry& entry);
// DataLoss for bytes this code cannot have written.
absl::StatusOr<ConflictEntry> DecodeValue(std::string_view keyspace, std::string_view stored);
// What an entry counts for against the byte bound.
inline size_t EntryBytes(std::string_view key, std::string_view value) {
  return key.size() + value.size();
}

// Not thread-safe: the store guards it.
class Index {
 public:
  struct Entry {
    std::string key;
    Version loser;
    size_t bytes = 0;
  };
  struct Keyspace {
    // By id, oldest first.
    std::map<uint64_t, Entry> entries;
    size_t bytes = 0;
    uint64_t next_id = 1;
    uint64_t dropped = 0;

    // The id of the entry for this loser of `key`, or 0.
    uint64_t Find(std::string_view key, const Version& loser) const;
    void Add(uint64_t id, Entry entry);
    void Remove(uint64_t id);
  };

  // nullptr if the keyspace has no journal state.
  const Keyspace* Find(std::string_view keyspace) const;
  Keyspace& Get(std::string_view keyspace);
  void Replace(const std::string& keyspace, Keyspace state);
  const std::map<std::string, Keyspace, std::less<>>& keyspaces() const { return keyspaces_; }

 private:
  std::map<std::string, Keyspace, std::less<>> keyspaces_;
};

}  // namespace peerkv::conflicts

#endif  // PEERKV_STORE_CONFLICT_JOURNAL_H_
