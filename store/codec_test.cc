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

TEST(CodecTest, LogEntriesCarryAnOptionalCausalMark) {
  const std::string key = RecordKey("ks", "k");
  std::string bytes;
  EncodeLogEntry(key, 42, "body", &bytes, Version{MakeHlc(5, 1), 9});
  absl::StatusOr<LogEntry> entry = DecodeLogEntry(bytes);
  ASSERT_THAT(entry, IsOk());
  EXPECT_EQ(entry->record_key, key);
  EXPECT_EQ(entry->source, 42u);
  EXPECT_EQ(entry->value, "body");
  EXPECT_EQ(entry->replaces, std::optional<Version>(Version{MakeHlc(5, 1), 9}));
  EncodeLogEntry(key, 42, "body", &bytes, Version{});
  entry = DecodeLogEntry(bytes);
  ASSERT_THAT(entry, IsOk());
  EXPECT_EQ(entry->replaces, std::optional<Version>(Version{}));
  // Without one (format 3 entries): nullopt.
  EncodeLogEntry(key, 42, "body", &bytes);
  entry = DecodeLogEntry(bytes);
  ASSERT_THAT(entry, IsOk());
  EXPECT_EQ(entry->replaces, std::nullopt);
  // A mark cut short.
  EncodeLogEntry(key, 42, "", &bytes, Version{1, 1});
  EXPECT_THAT(DecodeLogEntry(bytes.substr(0, bytes.size() - 1)),
              StatusIs(absl::StatusCode::kDataLoss, "and a causal mark"));
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

TEST(CodecTest, MetaStateRoundTripsInItsLayout) {
  const MetaState state{MakeHlc(1000, 3), 42, 7, 2, 0xfeedfacecafebeefULL};
  const std::string stored = EncodeMetaState(state);
  ASSERT_EQ(stored.size(), kMetaStateBytes);
  // The layout block: clock_mark, max_seq, live_records, tombstones,
  // fingerprint, 8 bytes each, little-endian.
  EXPECT_EQ(GetFixed64(stored.data()), state.clock_mark);
  EXPECT_EQ(GetFixed64(stored.data() + 8), 42u);
  EXPECT_EQ(GetFixed64(stored.data() + 16), 7u);
  EXPECT_EQ(GetFixed64(stored.data() + 24), 2u);
  EXPECT_EQ(GetFixed64(stored.data() + 32), state.fingerprint);
  absl::StatusOr<MetaState> decoded = DecodeMetaState(stored);
  ASSERT_THAT(decoded, IsOk());
  EXPECT_EQ(*decoded, state);
  EXPECT_THAT(DecodeMetaState(stored.substr(0, 39)),
              StatusIs(StatusCode::kDataLoss, "meta state is 39 bytes; expected 40"));
  EXPECT_THAT(DecodeMetaState(stored + "x"),
              StatusIs(StatusCode::kDataLoss, "meta state is 41 bytes; expected 40"));
}

TEST(CodecTest, MetaU64RoundTripsAndNamesItsEntry) {
  const std::string stored = EncodeMetaU64(0x0102030405060708ULL);
  ASSERT_EQ(stored.size(), 8u);
  EXPECT_EQ(stored[0], '\x08');  // little-endian
  absl::StatusOr<uint64_t> decoded = DecodeMetaU64(stored, "format");
  ASSERT_THAT(decoded, IsOk());
  EXPECT_EQ(*decoded, 0x0102030405060708ULL);
  EXPECT_THAT(DecodeMetaU64("abc", "replica_id"),
              StatusIs(StatusCode::kDataLoss, "meta replica_id is 3 bytes; expected 8"));
}

TEST(CodecTest, CheckpointRoundTripsInItsLayout) {
  const PeerCheckpoint checkpoint{0x1122334455667788ULL, 99, 0xabcdef};
  const std::string stored = EncodeCheckpoint(checkpoint);
  ASSERT_EQ(stored.size(), kCheckpointBytes);
  EXPECT_EQ(GetFixed64(stored.data()), checkpoint.incarnation);
  EXPECT_EQ(GetFixed64(stored.data() + 8), 99u);
  EXPECT_EQ(GetFixed64(stored.data() + 16), 0xabcdefu);
  absl::StatusOr<PeerCheckpoint> decoded = DecodeCheckpoint(stored, 5);
  ASSERT_THAT(decoded, IsOk());
  EXPECT_EQ(*decoded, checkpoint);
  // Written before the nonce: read with nonce 0 (not known).
  absl::StatusOr<PeerCheckpoint> old = DecodeCheckpoint(stored.substr(0, 16), 5);
  ASSERT_THAT(old, IsOk());
  EXPECT_EQ(*old, (PeerCheckpoint{0x1122334455667788ULL, 99, 0}));
  EXPECT_THAT(DecodeCheckpoint(stored.substr(0, 8), 5),
              StatusIs(StatusCode::kDataLoss, "is 8 bytes; expected 24 (or 16)"));
  EXPECT_THAT(DecodeCheckpoint("", 5), StatusIs(StatusCode::kDataLoss));
}

TEST(CodecTest, WatermarksRoundTripInOriginOrder) {
  Watermarks watermarks;
  watermarks[9] = 100;
  watermarks[2] = 300;
  watermarks[uint64_t{1} << 63] = 1;
  const std::string stored = EncodeWatermarks(watermarks);
  ASSERT_EQ(stored.size(), 3 * kWatermarkBytes);
  EXPECT_EQ(GetFixed64(stored.data()), 2u);
  EXPECT_EQ(GetFixed64(stored.data() + 8), 300u);
  absl::StatusOr<Watermarks> decoded = DecodeWatermarks(stored);
  ASSERT_THAT(decoded, IsOk());
  EXPECT_EQ(*decoded, watermarks);
  absl::StatusOr<Watermarks> none = DecodeWatermarks("");
  ASSERT_THAT(none, IsOk());
  EXPECT_TRUE(none->empty());
  EXPECT_THAT(DecodeWatermarks(stored.substr(0, 20)),
              StatusIs(StatusCode::kDataLoss, "20 bytes; expected a multiple of 16"));
}

}  // namespace
}  // namespace peerkv::codec
