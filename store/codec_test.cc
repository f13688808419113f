// store/codec_test.cc: stored bytes round-trip, and bytes this code cannot
// have written are reported as DataLoss rather than misread.
#include "store/codec.h"

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace peerkv::codec {
namespace {

using absl::StatusCode;

TEST(CodecTest, RecordRoundTrip) {
  const std::string key = RecordKey("mail", std::string("dr\0aft", 6));
  std::string stored;
  EncodeRecordValue(Version{MakeHlc(123, 4), 99}, false, 17, "body", &stored);
  ASSERT_EQ(stored.size(), kRecordHeaderBytes + 4);
  absl::StatusOr<Record> record = DecodeRecord(key, stored);
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
  EncodeRecordValue(Version{7, 8}, true, 1, "", &stored);
  absl::StatusOr<RecordHeader> header = DecodeRecordHeader(stored);
  ASSERT_THAT(header, IsOk());
  EXPECT_TRUE(header->deleted);
}

TEST(CodecTest, BigEndianKeysSortNumerically) {
  EXPECT_LT(BigEndian64(255), BigEndian64(256));
  EXPECT_LT(BigEndian64(1), BigEndian64(uint64_t{1} << 40));
  EXPECT_EQ(GetBigEndian64(BigEndian64(0x0102030405060708).data()),
            0x0102030405060708u);
}

TEST(CodecTest, CorruptBytesAreDataLoss) {
  std::string stored;
  EncodeRecordValue(Version{7, 8}, false, 1, "v", &stored);
  EXPECT_THAT(DecodeRecordHeader(stored.substr(0, 10)),
              StatusIs(StatusCode::kDataLoss, "shorter than its 26-byte header"));
  std::string bad_format = stored;
  bad_format[0] = 9;
  EXPECT_THAT(DecodeRecordHeader(bad_format), StatusIs(StatusCode::kDataLoss, "format 9"));
  std::string bad_flags = stored;
  bad_flags[1] = 0x40;
  EXPECT_THAT(DecodeRecordHeader(bad_flags), StatusIs(StatusCode::kDataLoss));
  std::string zero_seq;
  EncodeRecordValue(Version{7, 8}, false, 0, "v", &zero_seq);
  EXPECT_THAT(DecodeRecordHeader(zero_seq), StatusIs(StatusCode::kDataLoss, "zero version or seq"));
  std::string_view ks, key;
  EXPECT_THAT(SplitRecordKey("no-separator", &ks, &key), StatusIs(StatusCode::kDataLoss));
}

}  // namespace
}  // namespace peerkv::codec
