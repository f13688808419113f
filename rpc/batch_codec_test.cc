// rpc/batch_codec_test.cc: record batches round-trip, and bytes
// from a peer that do not parse are refused with a reason, never misread.
#include "rpc/batch_codec.h"

#include <algorithm>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace peerkv::rpc {
namespace {

using absl::StatusCode;

std::vector<Record> Sample() {
  return {
      Record{"contacts", "bob", Version{MakeHlc(100, 1), 7}, false, "Bob <bob@x>", 3},
      Record{"contacts", std::string("k\0ey", 4), Version{MakeHlc(101, 0), 8}, true, "", 300},
      Record{"mail", std::string(400, 'k'), Version{~uint64_t{0}, 9}, false, std::string(70000, 'v'),
             uint64_t{1} << 40},
  };
}

TEST(BatchCodecTest, RoundTrips) {
  const std::vector<Record> records = Sample();
  absl::StatusOr<std::vector<Record>> decoded = DecodeBatch(EncodeBatch(records), 100);
  ASSERT_THAT(decoded, IsOk());
  EXPECT_EQ(*decoded, records);
  EXPECT_THAT(DecodeBatch("", 100), IsOk());
}

// The count a sender states sizes the room made at once, never beyond what
// the bytes can hold; the records are what the bytes say.
TEST(BatchCodecTest, AStatedCountOnlySizesTheRoom) {
  const std::vector<Record> records = {Record{"k", "a", Version{1, 1}, false, "x", 1},
                                       Record{"k", "b", Version{2, 1}, false, "y", 2},
                                       Record{"k", "c", Version{3, 1}, true, "", 3}};
  const std::string bytes = EncodeBatch(records);
  for (size_t stated : {size_t{0}, size_t{1}, size_t{3}, size_t{1} << 40}) {
    absl::StatusOr<std::vector<Record>> decoded = DecodeBatch(bytes, 65'536, stated);
    ASSERT_THAT(decoded, IsOk()) << "stated " << stated;
    EXPECT_EQ(*decoded, records) << "stated " << stated;
  }
  // A count far beyond what the bytes hold reserves only what they can.
  absl::StatusOr<std::vector<Record>> decoded = DecodeBatch(bytes, 65'536, size_t{1} << 40);
  ASSERT_THAT(decoded, IsOk());
  EXPECT_LE(decoded->capacity(), std::max<size_t>(records.size(), bytes.size() / 20));
}

TEST(BatchCodecTest, CausalMarksRoundTrip) {
  std::vector<Record> records = Sample();
  records[0].replaces = Version{MakeHlc(99, 0), 7};
  records[1].replaces = Version{};  // replaced nothing: not the same as unknown
  absl::StatusOr<std::vector<Record>> decoded = DecodeBatch(EncodeBatch(records), 100);
  ASSERT_THAT(decoded, IsOk());
  EXPECT_EQ(*decoded, records);
  EXPECT_EQ((*decoded)[2].replaces, std::nullopt);
  // A mark cut short is refused.
  const std::string bytes = EncodeBatch({records[0]});
  EXPECT_THAT(DecodeBatch(bytes.substr(0, 1 + 8 + 1 + 3 + 1 + 16 + 8), 100),
              StatusIs(StatusCode::kInvalidArgument, "causal mark runs past the end"));
}

// Record::signature (README "Signed records"): carried, tombstones' too;
// an empty or oversized one is refused naming the limit.
TEST(BatchCodecTest, SignaturesRoundTrip) {
  std::vector<Record> records = {
      Record{"ks", "a", Version{10, 1}, false, "v", 3, Version{9, 1}, "SIG-A"},
      Record{"ks", "b", Version{11, 1}, true, "", 4, std::nullopt, "SIG-B"},
      Record{"ks", "c", Version{12, 1}, false, "w", 5}};
  absl::StatusOr<std::vector<Record>> back = DecodeBatch(EncodeBatch(records), 10);
  ASSERT_THAT(back, IsOk());
  EXPECT_EQ(*back, records);
  records = {Record{"ks", "a", Version{10, 1}, false, "v", 3, std::nullopt,
                    std::string(513, 's')}};
  EXPECT_THAT(DecodeBatch(EncodeBatch(records), 10),
              StatusIs(absl::StatusCode::kInvalidArgument, "it must be 1..512 bytes"));
}

TEST(BatchCodecTest, IsCompact) {
  std::vector<Record> records;
  for (int i = 0; i < 100; ++i) {
    records.push_back(Record{"bench", "key-000000" + std::to_string(i), Version{MakeHlc(5, 0), 1},
                             false, std::string(100, 'v'), static_cast<uint64_t>(i)});
  }
  const size_t payload = 100 * (5 + 12 + 100 + 16);
  // A dozen bytes of framing per record at most.
  EXPECT_LT(EncodeBatch(records).size(), payload + 100 * 12);
}

TEST(BatchCodecTest, RefusesTruncatedAndMalformedBytes) {
  const std::string bytes = EncodeBatch(Sample());
  for (size_t cut : {size_t{1}, size_t{9}, size_t{20}, bytes.size() - 1}) {
    EXPECT_THAT(DecodeBatch(bytes.substr(0, cut), 100),
                StatusIs(StatusCode::kInvalidArgument, "runs past the end"))
        << "cut at " << cut;
  }
  EXPECT_THAT(DecodeBatch(std::string("\0", 1), 100),
              StatusIs(StatusCode::kInvalidArgument, "repeats a keyspace it never gave"));
  std::string bad_flags = EncodeBatch({Record{"k", "a", Version{1, 1}, false, "", 1}});
  bad_flags[4] = 0x7f;  // 1+1 keyspace, 1+1 key, then flags
  EXPECT_THAT(DecodeBatch(bad_flags, 100), StatusIs(StatusCode::kInvalidArgument, "unknown flags 0x7f"));
  EXPECT_THAT(DecodeBatch(bytes, 2), StatusIs(StatusCode::kInvalidArgument, "more than 2 records"));
  // A length claiming more than the whole message.
  EXPECT_THAT(DecodeBatch(std::string("\xff\xff\xff\xff\x0f", 5), 100),
              StatusIs(StatusCode::kInvalidArgument, "keyspace runs past the end"));
}

}  // namespace
}  // namespace peerkv::rpc
