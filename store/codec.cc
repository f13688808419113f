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
  out.reserve(keyspace.size() + 1 + key.size());
  out.append(keyspace);
  out.push_back('\0');
  out.append(key);
  return out;
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

void EncodeRecordValue(const Version& version, bool deleted, uint64_t seq,
                       std::string_view value, std::string* out) {
  PEERKV_CHECK(!deleted || value.empty());
  out->clear();
  out->reserve(kRecordHeaderBytes + value.size());
  out->push_back(static_cast<char>(kRecordFormat));
  out->push_back(static_cast<char>(deleted ? kFlagDeleted : 0));
  PutFixed64(out, version.hlc);
  PutFixed64(out, version.origin);
  PutFixed64(out, seq);
  out->append(value);
}

absl::StatusOr<RecordHeader> DecodeRecordHeader(std::string_view stored) {
  if (stored.size() < kRecordHeaderBytes) {
    return absl::DataLossError(absl::StrFormat(
        "stored record is %d bytes, shorter than its %d-byte header",
        stored.size(), kRecordHeaderBytes));
  }
  const uint8_t format = static_cast<uint8_t>(stored[0]);
  const uint8_t flags = static_cast<uint8_t>(stored[1]);
  if (format != kRecordFormat || (flags & ~kFlagDeleted) != 0) {
    return absl::DataLossError(absl::StrFormat(
        "stored record has format %d flags 0x%02x; expected format %d",
        format, flags, kRecordFormat));
  }
  RecordHeader header;
  header.deleted = (flags & kFlagDeleted) != 0;
  header.version.hlc = GetFixed64(stored.data() + 2);
  header.version.origin = GetFixed64(stored.data() + 10);
  header.seq = GetFixed64(stored.data() + 18);
  if (header.deleted && stored.size() != kRecordHeaderBytes) {
    return absl::DataLossError("stored tombstone carries value bytes");
  }
  if (!header.version.IsValid() || header.seq == 0) {
    return absl::DataLossError("stored record has a zero version or seq");
  }
  return header;
}

absl::StatusOr<Record> DecodeRecord(std::string_view record_key,
                                    std::string_view stored) {
  Record record;
  std::string_view keyspace, key;
  PEERKV_RETURN_IF_ERROR(SplitRecordKey(record_key, &keyspace, &key));
  PEERKV_ASSIGN_OR_RETURN(const RecordHeader header, DecodeRecordHeader(stored));
  record.keyspace = std::string(keyspace);
  record.key = std::string(key);
  record.version = header.version;
  record.deleted = header.deleted;
  record.seq = header.seq;
  record.value = std::string(RecordValueBytes(stored));
  return record;
}

}  // namespace peerkv::codec
