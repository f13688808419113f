// store/codec.cc: encoding and checked decoding of stored bytes.
#include "store/codec.h"

#include <cstring>

#include "absl/strings/str_format.h"
#include "common/macros.h"

namespace peerkv::codec {

void PutFixed64(std::string* out, uint64_t v) {
  char buf[8];
  for (int i = 0; i < 8; ++i) buf[i] = static_cast<char>(v >> (8 * i));
  out->append(buf, 8);
}

uint64_t GetFixed64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

void PutBigEndian64(std::string* out, uint64_t v) {
  char buf[8];
  for (int i = 0; i < 8; ++i) buf[i] = static_cast<char>(v >> (56 - 8 * i));
  out->append(buf, 8);
}

uint64_t GetBigEndian64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

std::string BigEndian64(uint64_t v) {
  std::string out;
  PutBigEndian64(&out, v);
  return out;
}

std::string RecordKey(std::string_view keyspace, std::string_view key) {
  std::string out;
  AppendRecordKey(keyspace, key, &out);
  return out;
}

void AppendRecordKey(std::string_view keyspace, std::string_view key, std::string* out) {
  out->clear();
  out->reserve(keyspace.size() + 1 + key.size());
  out->append(keyspace);
  out->push_back('\0');
  out->append(key);
}

StackRecordKey::StackRecordKey(std::string_view keyspace, std::string_view key) {
  PEERKV_CHECK(keyspace.size() <= kMaxKeyspaceBytes && key.size() <= kMaxKeyBytes);
  std::memcpy(buffer_, keyspace.data(), keyspace.size());
  buffer_[keyspace.size()] = '\0';
  std::memcpy(buffer_ + keyspace.size() + 1, key.data(), key.size());
  size_ = keyspace.size() + 1 + key.size();
}

absl::StatusOr<uint64_t> DecodeLogKey(std::string_view stored) {
  if (stored.size() != 8) return absl::DataLossError("log key is not 8 bytes");
  return GetBigEndian64(stored.data());
}

absl::Status SplitRecordKey(std::string_view record_key,
                            std::string_view* keyspace, std::string_view* key) {
  const size_t zero = record_key.find('\0');
  if (zero == std::string_view::npos || zero == 0 ||
      zero + 1 >= record_key.size()) {
    return absl::DataLossError(absl::StrFormat(
        "stored record key of %d bytes has no keyspace separator",
        record_key.size()));
  }
  *keyspace = record_key.substr(0, zero);
  *key = record_key.substr(zero + 1);
  return absl::OkStatus();
}

void EncodeRecordHeader(const RecordHeader& header, std::string* out) {
  PEERKV_CHECK(header.version.IsValid() && header.seq != 0);
  out->clear();
  out->push_back(static_cast<char>(header.deleted ? kFlagDeleted : 0));
  PutFixed64(out, header.version.hlc);
  PutFixed64(out, header.version.origin);
  PutFixed64(out, header.seq);
}

absl::StatusOr<RecordHeader> DecodeRecordHeader(std::string_view stored) {
  if (stored.size() != kRecordHeaderBytes) {
    return absl::DataLossError(absl::StrFormat(
        "stored record header is %d bytes; expected %d", stored.size(),
        kRecordHeaderBytes));
  }
  const uint8_t flags = static_cast<uint8_t>(stored[0]);
  if ((flags & ~kFlagDeleted) != 0) {
    return absl::DataLossError(
        absl::StrFormat("stored record header has unknown flags 0x%02x", flags));
  }
  RecordHeader header;
  header.deleted = (flags & kFlagDeleted) != 0;
  header.version.hlc = GetFixed64(stored.data() + 1);
  header.version.origin = GetFixed64(stored.data() + 9);
  header.seq = GetFixed64(stored.data() + 17);
  if (!header.version.IsValid() || header.seq == 0) {
    return absl::DataLossError("stored record has a zero version or seq");
  }
  return header;
}

// Bit 15 of the key length: a causal mark follows the source. Record keys
// are at most kMaxKeyspaceBytes + 1 + kMaxKeyBytes bytes, far below it.
constexpr size_t kLogMarkBit = 0x8000;
// Bit 14: a signature follows (after the mark, if any): length(2), bytes.
constexpr size_t kLogSignatureBit = 0x4000;
constexpr size_t kLogKeyMask = kLogSignatureBit - 1;
static_assert(kMaxKeyspaceBytes + 1 + kMaxKeyBytes < kLogSignatureBit);
static_assert(kMaxSignatureBytes <= 0xffff);

void EncodeLogEntry(std::string_view record_key, uint64_t source, std::string_view value,
                    std::string* out, const std::optional<Version>& replaces,
                    std::string_view signature) {
  PEERKV_CHECK(record_key.size() <= kLogKeyMask && signature.size() <= kMaxSignatureBytes);
  out->clear();
  out->reserve(2 + record_key.size() + 8 + 16 + 2 + signature.size() + value.size());
  const size_t length = record_key.size() | (replaces.has_value() ? kLogMarkBit : 0) |
                        (signature.empty() ? 0 : kLogSignatureBit);
  out->push_back(static_cast<char>(length & 0xff));
  out->push_back(static_cast<char>(length >> 8));
  out->append(record_key);
  PutFixed64(out, source);
  if (replaces.has_value()) {
    PutFixed64(out, replaces->hlc);
    PutFixed64(out, replaces->origin);
  }
  if (!signature.empty()) {
    out->push_back(static_cast<char>(signature.size() & 0xff));
    out->push_back(static_cast<char>(signature.size() >> 8));
    out->append(signature);
  }
  out->append(value);
}

absl::StatusOr<LogEntry> DecodeLogEntry(std::string_view stored) {
  if (stored.size() < 2) {
    return absl::DataLossError("stored log entry is shorter than 2 bytes");
  }
  const size_t length = static_cast<unsigned char>(stored[0]) |
                        (static_cast<size_t>(static_cast<unsigned char>(stored[1])) << 8);
  const bool marked = (length & kLogMarkBit) != 0;
  const bool signed_entry = (length & kLogSignatureBit) != 0;
  const size_t key_size = length & kLogKeyMask;
  size_t fixed = 2 + key_size + 8 + (marked ? 16 : 0);
  if (fixed + (signed_entry ? 2 : 0) > stored.size()) {
    return absl::DataLossError(absl::StrFormat(
        "stored log entry of %d bytes claims a %d-byte key%s", stored.size(), key_size,
        marked ? " and a causal mark" : ""));
  }
  LogEntry entry;
  entry.record_key = stored.substr(2, key_size);
  entry.source = GetFixed64(stored.data() + 2 + key_size);
  if (marked) {
    entry.replaces = Version{GetFixed64(stored.data() + 2 + key_size + 8),
                             GetFixed64(stored.data() + 2 + key_size + 16)};
  }
  if (signed_entry) {
    const size_t signature_size =
        static_cast<unsigned char>(stored[fixed]) |
        (static_cast<size_t>(static_cast<unsigned char>(stored[fixed + 1])) << 8);
    if (signature_size == 0 || signature_size > kMaxSignatureBytes ||
        fixed + 2 + signature_size > stored.size()) {
      return absl::DataLossError(absl::StrFormat(
          "stored log entry of %d bytes claims a %d-byte signature (limit %d)", stored.size(),
          signature_size, kMaxSignatureBytes));
    }
    entry.signature = stored.substr(fixed + 2, signature_size);
    fixed += 2 + signature_size;
  }
  entry.value = stored.substr(fixed);
  std::string_view keyspace, key;
  PEERKV_RETURN_IF_ERROR(SplitRecordKey(entry.record_key, &keyspace, &key));
  return entry;
}

std::string EncodeMetaU64(uint64_t value) {
  std::string out;
  PutFixed64(&out, value);
  return out;
}

absl::StatusOr<uint64_t> DecodeMetaU64(std::string_view stored, std::string_view name) {
  if (stored.size() != 8) {
    return absl::DataLossError(
        absl::StrFormat("meta %s is %d bytes; expected 8", name, stored.size()));
  }
  return GetFixed64(stored.data());
}

std::string EncodeMetaState(const MetaState& state) {
  std::string out;
  out.reserve(kMetaStateBytes);
  PutFixed64(&out, state.clock_mark);
  PutFixed64(&out, state.max_seq);
  PutFixed64(&out, state.live_records);
  PutFixed64(&out, state.tombstones);
  PutFixed64(&out, state.fingerprint);
  PEERKV_CHECK(out.size() == kMetaStateBytes);
  return out;
}

absl::StatusOr<MetaState> DecodeMetaState(std::string_view stored) {
  if (stored.size() != kMetaStateBytes) {
    return absl::DataLossError(absl::StrFormat(
        "meta state is %d bytes; expected %d", stored.size(), kMetaStateBytes));
  }
  const char* p = stored.data();
  MetaState state;
  state.clock_mark = GetFixed64(p);
  state.max_seq = GetFixed64(p + 8);
  state.live_records = GetFixed64(p + 16);
  state.tombstones = GetFixed64(p + 24);
  state.fingerprint = GetFixed64(p + 32);
  return state;
}

std::string EncodeCheckpoint(const PeerCheckpoint& checkpoint) {
  std::string out;
  out.reserve(kCheckpointBytes);
  PutFixed64(&out, checkpoint.incarnation);
  PutFixed64(&out, checkpoint.seq);
  PutFixed64(&out, checkpoint.nonce);
  return out;
}

absl::StatusOr<PeerCheckpoint> DecodeCheckpoint(std::string_view stored, uint64_t peer_id) {
  if (stored.size() != kCheckpointBytes && stored.size() != kCheckpointBytesWithoutNonce) {
    return absl::DataLossError(absl::StrFormat(
        "checkpoint of peer %s is %d bytes; expected %d (or %d)", ReplicaIdToString(peer_id),
        stored.size(), kCheckpointBytes, kCheckpointBytesWithoutNonce));
  }
  PeerCheckpoint checkpoint{GetFixed64(stored.data()), GetFixed64(stored.data() + 8)};
  if (stored.size() == kCheckpointBytes) checkpoint.nonce = GetFixed64(stored.data() + 16);
  return checkpoint;
}

std::string EncodeWatermarks(const Watermarks& watermarks) {
  std::string out;
  out.reserve(watermarks.size() * kWatermarkBytes);
  for (const auto& [origin, hlc] : watermarks) {
    PutFixed64(&out, origin);
    PutFixed64(&out, hlc);
  }
  return out;
}

absl::StatusOr<Watermarks> DecodeWatermarks(std::string_view stored) {
  if (stored.size() % kWatermarkBytes != 0) {
    return absl::DataLossError(absl::StrFormat(
        "meta watermarks is %d bytes; expected a multiple of %d", stored.size(),
        kWatermarkBytes));
  }
  Watermarks watermarks;
  for (size_t i = 0; i < stored.size(); i += kWatermarkBytes) {
    // Later pairs win, as they always have when loading (the encoder never
    // writes an origin twice).
    watermarks[GetFixed64(stored.data() + i)] = GetFixed64(stored.data() + i + 8);
  }
  return watermarks;
}

std::string EncodeBootstrapMarker(const BootstrapMarker& marker) {
  std::string out;
  for (uint64_t v : {marker.peer_id, marker.incarnation, marker.nonce, marker.point_seq,
                     marker.records}) {
    PutFixed64(&out, v);
  }
  PutFixed64(&out, marker.after_keyspace.size());
  out.append(marker.after_keyspace);
  PutFixed64(&out, marker.after_key.size());
  out.append(marker.after_key);
  out.append(EncodeWatermarks(marker.watermarks));
  return out;
}

absl::StatusOr<BootstrapMarker> DecodeBootstrapMarker(std::string_view stored) {
  const auto short_of = [&](size_t need) {
    return absl::DataLossError(absl::StrFormat(
        "meta bootstrap is %d bytes; it needs at least %d", stored.size(), need));
  };
  size_t at = 0;
  const auto u64 = [&](uint64_t* v) -> bool {
    if (stored.size() - at < 8) return false;
    *v = GetFixed64(stored.data() + at);
    at += 8;
    return true;
  };
  const auto bytes = [&](std::string* out) -> bool {
    uint64_t n = 0;
    if (!u64(&n) || stored.size() - at < n) return false;
    out->assign(stored.substr(at, n));
    at += n;
    return true;
  };
  BootstrapMarker m;
  if (!u64(&m.peer_id) || !u64(&m.incarnation) || !u64(&m.nonce) || !u64(&m.point_seq) ||
      !u64(&m.records) || !bytes(&m.after_keyspace) || !bytes(&m.after_key)) {
    return short_of(at + 8);
  }
  PEERKV_ASSIGN_OR_RETURN(m.watermarks, DecodeWatermarks(stored.substr(at)));
  return m;
}

absl::StatusOr<Record> MakeRecord(const RecordHeader& header, const LogEntry& entry) {
  std::string_view keyspace, key;
  PEERKV_RETURN_IF_ERROR(SplitRecordKey(entry.record_key, &keyspace, &key));
  if (header.deleted && !entry.value.empty()) {
    return absl::DataLossError("stored tombstone carries value bytes");
  }
  Record record;
  record.keyspace = std::string(keyspace);
  record.key = std::string(key);
  record.version = header.version;
  record.deleted = header.deleted;
  record.seq = header.seq;
  record.value = std::string(entry.value);
  record.replaces = entry.replaces;
  record.signature = std::string(entry.signature);
  return record;
}

}  // namespace peerkv::codec
