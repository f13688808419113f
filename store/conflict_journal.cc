// store/conflict_journal.cc: the conflict journal's layout and mirror.
#include "store/conflict_journal.h"

#include <utility>

#include "absl/strings/str_format.h"
#include "common/macros.h"
#include "store/codec.h"

namespace peerkv::conflicts {
namespace {

constexpr uint8_t kLoserDeleted = 0x01;
constexpr size_t kFixedValueBytes = 2 + 1 + 8 + 8 + 8 + 8 + 8;  // without the key

}  // namespace

std::string EncodeKey(std::string_view keyspace, uint64_t id) {
  std::string out;
  out.reserve(keyspace.size() + 1 + 8);
  out.append(keyspace);
  out.push_back('\0');
  codec::PutBigEndian64(&out, id);
  return out;
}

absl::Status DecodeKey(std::string_view stored, std::string_view* keyspace, uint64_t* id) {
  if (stored.size() < 1 + 1 + 8 || stored[stored.size() - 9] != '\0') {
    return absl::DataLossError(
        absl::StrFormat("conflict journal key of %d bytes is malformed", stored.size()));
  }
  *keyspace = stored.substr(0, stored.size() - 9);
  *id = codec::GetBigEndian64(stored.data() + stored.size() - 8);
  return absl::OkStatus();
}

std::string EncodeValue(const ConflictEntry& entry) {
  PEERKV_CHECK(entry.key.size() <= 0xffff);
  std::string out;
  out.reserve(kFixedValueBytes + entry.key.size() + entry.loser_value.size());
  out.push_back(static_cast<char>(entry.key.size() & 0xff));
  out.push_back(static_cast<char>(entry.key.size() >> 8));
  out.append(entry.key);
  out.push_back(static_cast<char>(entry.loser_deleted ? kLoserDeleted : 0));
  codec::PutFixed64(&out, entry.loser.hlc);
  codec::PutFixed64(&out, entry.loser.origin);
  codec::PutFixed64(&out, entry.winner.hlc);
  codec::PutFixed64(&out, entry.winner.origin);
  codec::PutFixed64(&out, static_cast<uint64_t>(entry.when_ms));
  out.append(entry.loser_value);
  return out;
}

absl::StatusOr<ConflictEntry> DecodeValue(std::string_view keyspace, std::string_view stored) {
  if (stored.size() < 2) {
    return absl::DataLossError("conflict journal entry is shorter than 2 bytes");
  }
  const size_t key_size = static_cast<unsigned char>(stored[0]) |
                          (static_cast<size_t>(static_cast<unsigned char>(stored[1])) << 8);
  if (kFixedValueBytes + key_size > stored.size()) {
    return absl::DataLossError(absl::StrFormat(
        "conflict journal entry of %d bytes claims a %d-byte key", stored.size(), key_size));
  }
  const char* p = stored.data() + 2 + key_size;
  const uint8_t flags = static_cast<uint8_t>(p[0]);
  if ((flags & ~kLoserDeleted) != 0) {
    return absl::DataLossError(
        absl::StrFormat("conflict journal entry has unknown flags 0x%02x", flags));
  }
  ConflictEntry entry;
  entry.keyspace = std::string(keyspace);
  entry.key = std::string(stored.substr(2, key_size));
  entry.loser_deleted = (flags & kLoserDeleted) != 0;
  entry.loser = Version{codec::GetFixed64(p + 1), codec::GetFixed64(p + 9)};
  entry.winner = Version{codec::GetFixed64(p + 17), codec::GetFixed64(p + 25)};
  entry.when_ms = static_cast<int64_t>(codec::GetFixed64(p + 33));
  entry.loser_value = std::string(stored.substr(kFixedValueBytes + key_size));
  if (!entry.loser.IsValid() || !entry.winner.IsValid() ||
      (entry.loser_deleted && !entry.loser_value.empty())) {
    return absl::DataLossError("conflict journal entry has a zero version or a tombstone value");
  }
  return entry;
}

uint64_t Index::Keyspace::Find(std::string_view key, const Version& loser) const {
  for (const auto& [id, entry] : entries) {
    if (entry.loser == loser && entry.key == key) return id;
  }
  return 0;
}

void Index::Keyspace::Add(uint64_t id, Entry entry) {
  bytes += entry.bytes;
  if (id >= next_id) next_id = id + 1;
  entries[id] = std::move(entry);
}

void Index::Keyspace::Remove(uint64_t id) {
  const auto it = entries.find(id);
  if (it == entries.end()) return;
  bytes -= it->second.bytes;
  entries.erase(it);
}

const Index::Keyspace* Index::Find(std::string_view keyspace) const {
  const auto it = keyspaces_.find(keyspace);
  return it == keyspaces_.end() ? nullptr : &it->second;
}

Index::Keyspace& Index::Get(std::string_view keyspace) {
  auto it = keyspaces_.find(keyspace);
  if (it == keyspaces_.end()) it = keyspaces_.emplace(std::string(keyspace), Keyspace{}).first;
  return it->second;
}

void Index::Replace(const std::string& keyspace, Keyspace state) {
  keyspaces_[keyspace] = std::move(state);
}

}  // namespace peerkv::conflicts
