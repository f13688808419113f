// store/codec.h: the byte layout of everything the store keeps in LMDB.
// Fixed-width integers are little-endian in values and big-endian in keys
// (so that LMDB's byte order is numeric order). Decoders check sizes and
// report DataLoss for bytes that cannot have been written by this code.
// Internal to store/.
//
//   records  key:   keyspace 0x00 doc-id
//            value: format(1) flags(1) hlc(8) origin(8) seq(8) value-bytes
//   log      key:   seq (8, big-endian)
//            value: records key
//   peers    key:   peer replica id (8, big-endian)
//            value: incarnation(8) seq(8)
//   meta     key:   name; value: per name, see store.cc
#ifndef PEERKV_STORE_CODEC_H_
#define PEERKV_STORE_CODEC_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "store/version.h"

namespace peerkv::codec {

inline constexpr uint8_t kRecordFormat = 1;
inline constexpr uint8_t kFlagDeleted = 0x01;
inline constexpr size_t kRecordHeaderBytes = 1 + 1 + 8 + 8 + 8;

// The fixed part of a stored record.
struct RecordHeader {
  Version version;
  bool deleted = false;
  uint64_t seq = 0;
};

void PutFixed64(std::string* out, uint64_t v);
uint64_t GetFixed64(const char* p);
void PutBigEndian64(std::string* out, uint64_t v);
uint64_t GetBigEndian64(const char* p);
std::string BigEndian64(uint64_t v);

std::string RecordKey(std::string_view keyspace, std::string_view key);
// Splits a records key into keyspace and doc id (views into `record_key`).
absl::Status SplitRecordKey(std::string_view record_key,
                            std::string_view* keyspace, std::string_view* key);

// Appends the stored form of a record to `out` (cleared first).
void EncodeRecordValue(const Version& version, bool deleted, uint64_t seq,
                       std::string_view value, std::string* out);
absl::StatusOr<RecordHeader> DecodeRecordHeader(std::string_view stored);
// The value bytes after the header. REQUIRES: DecodeRecordHeader succeeded.
inline std::string_view RecordValueBytes(std::string_view stored) {
  return stored.substr(kRecordHeaderBytes);
}
// A full Record from a records key and value.
absl::StatusOr<Record> DecodeRecord(std::string_view record_key,
                                    std::string_view stored);

}  // namespace peerkv::codec

#endif  // PEERKV_STORE_CODEC_H_
