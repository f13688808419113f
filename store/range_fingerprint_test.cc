// store/range_fingerprint_test.cc: the reconcile vocabulary: 256-bit sums
// (carries, borrows, bytes), node arithmetic, and fixed vectors for the key
// position and the item hash (computed independently, with Python's
// hashlib and a transcription of the position hash), so that every machine
// and build agrees.
#include "store/range_fingerprint.h"

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace peerkv::rbsr {
namespace {

using absl::StatusCode;

constexpr uint64_t kAllOnes = ~uint64_t{0};

TEST(Sum256Test, AddCarriesAcrossLimbs) {
  Sum256 a;
  a.limbs = {kAllOnes, kAllOnes, 0, 0};
  Sum256 one;
  one.limbs = {1, 0, 0, 0};
  a.Add(one);
  EXPECT_EQ(a.limbs, (std::array<uint64_t, 4>{0, 0, 1, 0}));
}

TEST(Sum256Test, AddWrapsModulo2To256) {
  Sum256 a;
  a.limbs = {kAllOnes, kAllOnes, kAllOnes, kAllOnes};
  Sum256 one;
  one.limbs = {1, 0, 0, 0};
  a.Add(one);
  EXPECT_EQ(a, Sum256{});
}

TEST(Sum256Test, SubtractBorrowsAndUndoesAdd) {
  Sum256 zero;
  Sum256 one;
  one.limbs = {1, 0, 0, 0};
  zero.Subtract(one);
  EXPECT_EQ(zero.limbs, (std::array<uint64_t, 4>{kAllOnes, kAllOnes, kAllOnes, kAllOnes}));

  Sum256 x;
  x.limbs = {5, kAllOnes, 7, 1};
  Sum256 y;
  y.limbs = {kAllOnes, 3, kAllOnes, 9};
  Sum256 z = x;
  z.Add(y);
  z.Subtract(y);
  EXPECT_EQ(z, x);
  // A borrow arriving at a limb equal to the subtrahend's.
  Sum256 p;
  p.limbs = {0, 4, 0, 0};
  Sum256 q;
  q.limbs = {1, 4, 0, 0};
  p.Subtract(q);
  EXPECT_EQ(p.limbs, (std::array<uint64_t, 4>{kAllOnes, kAllOnes, kAllOnes, kAllOnes}));
}

TEST(Sum256Test, BytesRoundTripLittleEndian) {
  Sum256 x;
  x.limbs = {0x0807060504030201ULL, 2, 3, 0xff00000000000000ULL};
  const std::string bytes = x.ToBytes();
  ASSERT_EQ(bytes.size(), 32u);
  EXPECT_EQ(bytes[0], 0x01);
  EXPECT_EQ(bytes[7], 0x08);
  EXPECT_EQ(static_cast<unsigned char>(bytes[31]), 0xff);
  Sum256 back;
  ASSERT_THAT(Sum256::FromBytes(bytes, back), IsOk());
  EXPECT_EQ(back, x);
}

TEST(Sum256Test, FromBytesRefusesOtherLengths) {
  Sum256 out;
  EXPECT_THAT(Sum256::FromBytes(std::string(31, 'x'), out),
              StatusIs(StatusCode::kInvalidArgument, "32 bytes"));
  EXPECT_THAT(Sum256::FromBytes(std::string(33, 'x'), out),
              StatusIs(StatusCode::kInvalidArgument));
}

TEST(FingerprintTest, AddAndRemoveCount) {
  Fingerprint f;
  const Sum256 h = ItemHash("ks", "k", Version{1, 2}, false, "v");
  f.Add(h);
  f.Add(h);
  EXPECT_EQ(f.count, 2u);
  f.Remove(h);
  Fingerprint g;
  g.Add(h);
  EXPECT_EQ(f, g);
  Fingerprint sum;
  sum.Add(f);
  sum.Add(g);
  EXPECT_EQ(sum.count, 2u);
}

TEST(NodeIdTest, ValidBounds) {
  EXPECT_TRUE((NodeId{0, 0}).Valid());
  EXPECT_FALSE((NodeId{0, 1}).Valid());
  EXPECT_TRUE((NodeId{1, 15}).Valid());
  EXPECT_FALSE((NodeId{1, 16}).Valid());
  EXPECT_TRUE((NodeId{2, 255}).Valid());
  EXPECT_FALSE((NodeId{2, 256}).Valid());
  EXPECT_TRUE((NodeId{15, (uint64_t{1} << 60) - 1}).Valid());
  EXPECT_FALSE((NodeId{15, uint64_t{1} << 60}).Valid());
  EXPECT_TRUE((NodeId{16, kAllOnes}).Valid());
  EXPECT_FALSE((NodeId{17, 0}).Valid());
}

TEST(NodeIdTest, ContainsByTopBits) {
  const uint64_t p = 0xab12345678900000ULL;
  EXPECT_TRUE((NodeId{0, 0}).Contains(p));
  EXPECT_TRUE((NodeId{1, 0xa}).Contains(p));
  EXPECT_FALSE((NodeId{1, 0xb}).Contains(p));
  EXPECT_TRUE((NodeId{2, 0xab}).Contains(p));
  EXPECT_TRUE((NodeId{16, p}).Contains(p));
  EXPECT_FALSE((NodeId{16, p + 1}).Contains(p));
}

TEST(NodeIdTest, ChildrenPartitionTheParent) {
  const NodeId parent{3, 0x5a7};
  for (int i = 0; i < kBranching; ++i) {
    const NodeId child = parent.Child(i);
    EXPECT_EQ(child.depth, 4);
    EXPECT_EQ(child.prefix, (uint64_t{0x5a7} << 4) | i);
    EXPECT_TRUE(child.Valid());
  }
  const uint64_t p = 0x5a7c000000000000ULL;
  int containing = 0;
  for (int i = 0; i < kBranching; ++i) containing += parent.Child(i).Contains(p) ? 1 : 0;
  EXPECT_TRUE(parent.Contains(p));
  EXPECT_EQ(containing, 1);
  EXPECT_TRUE(parent.Child(0xc).Contains(p));
}

// Vectors from a Python transcription of KeyPosition (store/range_fingerprint.cc).
TEST(KeyPositionTest, FixedVectors) {
  EXPECT_EQ(KeyPosition(""), 0x32faa281e87a0961ULL);
  EXPECT_EQ(KeyPosition("a"), 0x82721db4a3afe3c2ULL);
  EXPECT_EQ(KeyPosition("user:42"), 0xbc068411a16df930ULL);
  EXPECT_EQ(KeyPosition("0123456789abcdef-long-key"), 0x75696dd8c229e3e7ULL);
}

// Vectors from Python's hashlib.sha256 over the documented layout.
TEST(ItemHashTest, FixedVectors) {
  const Version v{0x0001234500000007ULL, 0xdeadbeefULL};
  Sum256 live;
  live.limbs = {0xcc797bcdee40ff28ULL, 0xd6b60dc4b16b9df7ULL, 0xa522494a29a160b9ULL,
                0x023877e47da865dcULL};
  EXPECT_EQ(ItemHash("docs", "user:42", v, false, "hello"), live);
  Sum256 tombstone;
  tombstone.limbs = {0x42b59977c46a32caULL, 0x943de0ae7db55d50ULL, 0x5f4272787eccd57dULL,
                     0x8b83feb131af6f51ULL};
  EXPECT_EQ(ItemHash("docs", "user:42", v, true, ""), tombstone);
  // The largest valid keyspace and key (one buffer), and a key beyond the
  // limits (hashed piece by piece): the same layout either way.
  Sum256 largest;
  largest.limbs = {0x22e7acc986c8aac4ULL, 0xbfefac841317585eULL, 0xf5dd80910b81177eULL,
                   0x6c056551559249efULL};
  EXPECT_EQ(ItemHash(std::string(64, 'd'), std::string(400, 'k'), v, false,
                     std::string(100, 'v')),
            largest);
  Sum256 beyond;
  beyond.limbs = {0x8dea72d7bffd2aa4ULL, 0x4be0851616ec0ca1ULL, 0xb732e6b4031b46cbULL,
                  0xff89105577c95a19ULL};
  EXPECT_EQ(ItemHash("docs", std::string(1000, 'k'), v, false, "hello"), beyond);
}

TEST(ItemHashTest, EveryFieldCounts) {
  const Version v{100, 7};
  const Sum256 base = ItemHash("ks", "key", v, false, "value");
  EXPECT_NE(ItemHash("kt", "key", v, false, "value"), base);
  EXPECT_NE(ItemHash("ks", "kez", v, false, "value"), base);
  EXPECT_NE(ItemHash("ks", "key", Version{101, 7}, false, "value"), base);
  EXPECT_NE(ItemHash("ks", "key", Version{100, 8}, false, "value"), base);
  EXPECT_NE(ItemHash("ks", "key", v, true, "value"), base);
  EXPECT_NE(ItemHash("ks", "key", v, false, "valuf"), base);
  // Length prefixes: moving a byte between fields changes the hash.
  EXPECT_NE(ItemHash("ksk", "ey", v, false, "value"), base);
}

}  // namespace
}  // namespace peerkv::rbsr
