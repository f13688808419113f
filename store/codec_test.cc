// store/codec_test.cc: stored bytes round-trip, and bytes this code cannot
// have written are reported as DataLoss rather than misread.
#include "store/codec.h"

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace peerkv::codec {
namespace {

using absl::StatusCode;

TEST(CodecTest, HeaderAndLogEntryMakeARecord) {
  const std::string key = RecordKey("mail", std::string("dr\0aft", 6));
  std::string header_bytes, log_bytes;
  EncodeRecordHeader(RecordHeader{Version{MakeHlc(123, 4), 99}, false, 17}, &header_bytes);
  ASSERT_EQ(header_bytes.size(), kRecordHeaderBytes);
  EncodeLogEntry(key, 42, "body", &log_bytes);
  absl::StatusOr<RecordHeader> header = DecodeRecordHeader(header_bytes);
  absl::StatusOr<LogEntry> entry = DecodeLogEntry(log_bytes);
  ASSERT_THAT(header, IsOk());
  ASSERT_THAT(entry, IsOk());
  EXPECT_EQ(entry->record_key, key);
  EXPECT_EQ(entry->source, 42u);
  absl::StatusOr<Record> record = MakeRecord(*header, *entry);
  ASSERT_THAT(record, IsOk());
  EXPECT_EQ(record->keyspace, "mail");
  EXPECT_EQ(record->key, std::string("dr\0aft", 6));
  EXPECT_EQ(record->version, (Version{MakeHlc(123, 4), 99}));
  EXPECT_FALSE(record->deleted);
  EXPECT_EQ(record->seq, 17u);
  EXPECT_EQ(record->value, "body");
}

TEST(CodecTest, TombstoneRoundTrip) {
  std::string stored;
  EncodeRecordHeader(RecordHeader{Version{7, 8}, true, 1}, &stored);
  absl::StatusOr<RecordHeader> header = DecodeRecordHeader(stored);
  ASSERT_THAT(header, IsOk());
  EXPECT_TRUE(header->deleted);
  // A tombstone whose log entry carries bytes is corrupt.
  EXPECT_THAT(MakeRecord(*header, LogEntry{RecordKey("ks", "k"), 0, "x"}),
              StatusIs(StatusCode::kDataLoss, "tombstone carries value bytes"));
}

TEST(CodecTest, RegisterHashDependsOnKeyVersionAndDeletion) {
  const std::string key = RecordKey("ks", "k");
  const uint64_t h = RegisterHash(key, Version{10, 1}, false);
  EXPECT_EQ(h, RegisterHash(key, Version{10, 1}, false));
  EXPECT_NE(h, RegisterHash(key, Version{11, 1}, false));
  EXPECT_NE(h, RegisterHash(key, Version{10, 2}, false));
  EXPECT_NE(h, RegisterHash(key, Version{10, 1}, true));
  EXPECT_NE(h, RegisterHash(RecordKey("ks", "j"), Version{10, 1}, false));
}

TEST(CodecTest, BigEndianKeysSortNumerically) {
  EXPECT_LT(BigEndian64(255), BigEndian64(256));
  EXPECT_LT(BigEndian64(1), BigEndian64(uint64_t{1} << 40));
  EXPECT_EQ(GetBigEndian64(BigEndian64(0x0102030405060708).data()),
            0x0102030405060708u);
}

TEST(CodecTest, CorruptBytesAreDataLoss) {
  std::string stored;
  EncodeRecordHeader(RecordHeader{Version{7, 8}, false, 1}, &stored);
  EXPECT_THAT(DecodeRecordHeader(stored.substr(0, 10)),
              StatusIs(StatusCode::kDataLoss, "header is 10 bytes; expected 25"));
  std::string bad_flags = stored;
  bad_flags[0] = 0x40;
  EXPECT_THAT(DecodeRecordHeader(bad_flags), StatusIs(StatusCode::kDataLoss, "unknown flags 0x40"));
  std::string zero_seq = stored;
  zero_seq.replace(17, 8, std::string(8, '\0'));
  EXPECT_THAT(DecodeRecordHeader(zero_seq), StatusIs(StatusCode::kDataLoss, "zero version or seq"));
  EXPECT_THAT(DecodeLogEntry("\x05"), StatusIs(StatusCode::kDataLoss, "shorter than 2 bytes"));
  EXPECT_THAT(DecodeLogEntry(std::string("\x09\x00ks", 4)),
              StatusIs(StatusCode::kDataLoss, "claims a 9-byte key"));
  EXPECT_THAT(DecodeLogEntry(std::string("\x02\x00ks\0\0\0\0\0\0\0\0", 12)),
              StatusIs(StatusCode::kDataLoss, "no keyspace separator"));
  std::string_view ks, key;
  EXPECT_THAT(SplitRecordKey("no-separator", &ks, &key), StatusIs(StatusCode::kDataLoss));
}

}  // namespace
}  // namespace peerkv::codec
