// store/version_test.cc: version ordering and hlc encoding.
#include "store/version.h"

#include "gtest/gtest.h"

namespace peerkv {
namespace {

TEST(VersionTest, HlcPartsRoundTrip) {
  const uint64_t hlc = MakeHlc(1'732'550'000'123, 7);
  EXPECT_EQ(HlcMillis(hlc), 1'732'550'000'123u);
  EXPECT_EQ(HlcLogical(hlc), 7u);
  EXPECT_EQ(HlcMillis(MakeHlc(kHlcMaxMillis, kHlcLogicalMask)), kHlcMaxMillis);
}

TEST(VersionTest, OrdersByHlcThenOrigin) {
  const Version a{MakeHlc(100, 0), 9};
  const Version b{MakeHlc(100, 1), 1};
  const Version c{MakeHlc(100, 1), 2};
  EXPECT_LT(a, b);  // the clock decides first
  EXPECT_LT(b, c);  // the origin breaks ties
  EXPECT_EQ(b, (Version{MakeHlc(100, 1), 1}));
  EXPECT_GT(c, a);
}

TEST(VersionTest, ValidityNeedsClockAndOrigin) {
  EXPECT_FALSE((Version{0, 1}).IsValid());
  EXPECT_FALSE((Version{1, 0}).IsValid());
  EXPECT_TRUE((Version{1, 1}).IsValid());
}

TEST(VersionTest, ToStringShowsMillisLogicalAndOrigin) {
  EXPECT_EQ((Version{MakeHlc(1'732'550'000'123, 7), 0xdeadbeef}).ToString(),
            "1732550000123.7@00000000deadbeef");
  EXPECT_EQ(ReplicaIdToString(0xabc), "0000000000000abc");
}

}  // namespace
}  // namespace peerkv
